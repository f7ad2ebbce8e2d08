// Reclamation, both halves. Readers announce the global epoch in a lane of
// their registry slot while they read (`epoch_guard`) and keep the blocks of
// live views in the slot's holds (`view::state`); the writer retires replaced
// blocks tagged with its epoch and frees those older than every announced
// epoch that no view holds (`writer::impl::reclaim`, epoch.cpp), after
// clearing the slots of readers that are gone (registry.hpp).
//
// If a reader process holds more views than its slot has holds, the extra
// views pin the epoch they were created in (overflow_epoch) instead, which
// delays reclamation of blocks retired after it until they are dropped, but
// never loses a hold.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "layout.hpp"
#include "reader_core.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::detail {

inline unsigned thread_hint() noexcept {
  thread_local const unsigned hint =
      static_cast<unsigned>(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  return hint;
}

/// A lane this thread holds in some reader's slot.
struct lane_use {
  const reader_core* core;
  unsigned lane;
  std::uint64_t epoch;
};

/// The lanes this thread holds, innermost last. Reads nest (a `for_each`
/// callback calling `get` on the same reader): a nested read reuses its
/// thread's lane rather than waiting for another, which would wait forever
/// once every lane is held by a thread doing the same.
struct lane_stack {
  static constexpr unsigned capacity = 16;  // distinct readers nested in one thread
  lane_use uses[capacity];
  unsigned depth;
};
// Constant-initialized: no guard on the read path.
inline thread_local lane_stack active_lanes{};

/// The lane (and its epoch) this thread holds in `core`'s slot, if it is inside a read of it.
inline std::optional<lane_use> active_lane(const reader_core& core) noexcept {
  const lane_stack& st = active_lanes;
  for (unsigned i = st.depth; i-- > 0;) {
    if (st.uses[i].core == &core) return st.uses[i];
  }
  return std::nullopt;
}

/// Announces the current global epoch in one of the slot's lanes for the
/// duration of a read, so the writer frees nothing this read might see. A
/// read nested in another read of the same reader on this thread shares the
/// outer read's lane and epoch.
class epoch_guard {
 public:
  epoch_guard(reader_core& core, reader_slot* slot) noexcept : core_(core) {
    if (active_lanes.depth != 0) {
      if (const auto outer = active_lane(core)) {
        nested_ = true;
        lane_ = outer->lane;
        epoch_ = outer->epoch;
        return;
      }
    }
    forks_ = core.shared_forks.load(std::memory_order_relaxed);
    // Most reads find their thread's usual lane idle: try it inline.
    if (!try_lane(slot, thread_hint() % lanes_per_reader)) claim_any_lane(slot);
  }
  ~epoch_guard() {
    if (nested_) return;
    if (pushed_) --active_lanes.depth;  // guards end in reverse order of their start
    // A fork whose child shares our slot happened during this read: the
    // child may still be reading under this lane, so it stays.
    if (core_.shared_forks.load(std::memory_order_relaxed) != forks_) return;
    // Through `core_.slot`: a fork child that took over this read owns a copy of the lane.
    core_.slot.load(std::memory_order_relaxed)->lanes[lane_].store(0, std::memory_order_release);
  }
  epoch_guard(const epoch_guard&) = delete;
  epoch_guard& operator=(const epoch_guard&) = delete;

  std::uint64_t epoch() const noexcept { return epoch_; }

 private:
  bool try_lane(reader_slot* slot, unsigned k) noexcept {
    std::uint64_t idle = 0;
    // Epochs start at 1; a 0 here is a corrupted header, still a valid claim.
    const std::uint64_t e =
        std::max<std::uint64_t>(core_.header->global_epoch.load(std::memory_order_seq_cst), 1);
    // A seq_cst RMW: the writer's seq_cst scan sees this lane, or our later
    // seq_cst index loads see every unlink that preceded its scan.
    if (!slot->lanes[k].compare_exchange_strong(idle, e, std::memory_order_seq_cst)) return false;
    lane_ = k;
    epoch_ = e;
    lane_stack& st = active_lanes;
    if (st.depth < lane_stack::capacity) {
      st.uses[st.depth++] = lane_use{&core_, k, e};
      pushed_ = true;
    }
    return true;
  }
  /// Tries every lane, waiting (yielding) while all are taken (epoch.cpp).
  void claim_any_lane(reader_slot* slot) noexcept;

  reader_core& core_;
  unsigned lane_ = 0;
  std::uint64_t epoch_ = 0;
  std::uint64_t forks_ = 0;
  bool nested_ = false;
  bool pushed_ = false;
};

}  // namespace slither::shm::detail

namespace slither::shm {

/// A view's hold on its block: a hold in the registry slot (mirrored in the
/// process's private copy), or, if all are taken, the epoch it was created
/// in, pinned in the slot's overflow_epoch.
struct SLITHER_SHM_NO_EXPORT view::state {
  std::shared_ptr<detail::reader_core> core;
  const detail::entry_header* entry = nullptr;
  int hold = -1;  // -1: pinned by `overflow_epoch` instead
  std::uint64_t overflow_epoch = 0;
  std::uint64_t forks = 0;  // core->shared_forks when this view was made

  /// Call inside a read (the epoch `epoch`) that found the block `ref` at `e`.
  state(std::shared_ptr<detail::reader_core> c, const detail::entry_header* e, std::uint64_t ref,
        std::uint64_t epoch)
      : core(std::move(c)), entry(e), forks(core->shared_forks.load(std::memory_order_relaxed)) {
    detail::reader_slot* slot = core->slot.load(std::memory_order_relaxed);
    const unsigned hint = detail::thread_hint();
    for (unsigned i = 0; i < detail::holds_per_reader; ++i) {
      const unsigned k = (hint + i) % detail::holds_per_reader;
      auto& h = slot->holds[k];
      std::uint64_t free_hold = 0;
      if (h.load(std::memory_order_relaxed) == 0 &&
          h.compare_exchange_strong(free_hold, ref, std::memory_order_seq_cst)) {
        // The hold, then a look for a fork in progress (both seq_cst,
        // against before_fork's store of `forking` and its read of the
        // holds): either the fork copies this hold into the child's slot, or
        // this view waits for the fork to end and so never exists in the child.
        core->private_holds[k].store(ref, std::memory_order_relaxed);
        if (core->forking.load(std::memory_order_seq_cst) != 0) core->wait_for_fork();
        hold = static_cast<int>(k);
        return;
      }
    }
    overflow_epoch = epoch;
    core->pin_overflow(epoch);
  }
  ~state() {
    // Taken before a fork whose child shares our slot: the child may still use it.
    if (core->shared_forks.load(std::memory_order_relaxed) != forks) return;
    if (hold >= 0) {
      core->private_holds[static_cast<unsigned>(hold)].store(0, std::memory_order_relaxed);
      core->slot.load(std::memory_order_relaxed)
          ->holds[static_cast<unsigned>(hold)]
          .store(0, std::memory_order_release);
    } else {
      core->unpin_overflow(overflow_epoch);
    }
  }
  state(const state&) = delete;
  state& operator=(const state&) = delete;
};

}  // namespace slither::shm

namespace slither::shm::detail {

/// Makes a view of a block; call inside the epoch that found it.
inline view make_view(const std::shared_ptr<reader_core>& core, located at,
                      const epoch_guard& guard) {
  return view(std::shared_ptr<const view::state>(
      std::make_shared<view::state>(core, at.e, at.ref, guard.epoch())));
}

}  // namespace slither::shm::detail
