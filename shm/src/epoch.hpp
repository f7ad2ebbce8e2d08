// Reclamation, both halves. Readers announce the global epoch in a lane of
// their registry slot while they read (`epoch_guard`) and keep the blocks of
// live views in the slot's holds (`view::state`); the writer retires replaced
// blocks tagged with its epoch and frees those older than every announced
// epoch that no view holds (`writer::impl::reclaim`, epoch.cpp).
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

/// Announces the current global epoch in one of the slot's lanes for the
/// duration of a read, so the writer frees nothing this read might see.
class epoch_guard {
 public:
  explicit epoch_guard(reader_core& core) noexcept {
    const unsigned hint = thread_hint();
    for (;;) {
      for (unsigned i = 0; i < lanes_per_reader; ++i) {
        auto& lane = core.slot->lanes[(hint + i) % lanes_per_reader];
        std::uint64_t idle = 0;
        const std::uint64_t e = core.header->global_epoch.load(std::memory_order_seq_cst);
        // A seq_cst RMW: the writer's seq_cst scan sees this lane, or our
        // later seq_cst index loads see every unlink that preceded its scan.
        if (lane.compare_exchange_strong(idle, e, std::memory_order_seq_cst)) {
          lane_ = &lane;
          epoch_ = e;
          return;
        }
      }
      std::this_thread::yield();  // more reading threads than lanes: wait for one
    }
  }
  ~epoch_guard() { lane_->store(0, std::memory_order_release); }
  epoch_guard(const epoch_guard&) = delete;
  epoch_guard& operator=(const epoch_guard&) = delete;

  std::uint64_t epoch() const noexcept { return epoch_; }

 private:
  shared_u64* lane_ = nullptr;
  std::uint64_t epoch_ = 0;
};

}  // namespace slither::shm::detail

namespace slither::shm {

/// A view's hold on its block: a hold in the registry slot, or (if all are
/// taken) the epoch it was created in, pinned in the slot's overflow_epoch.
struct view::state {
  std::shared_ptr<detail::reader_core> core;
  const detail::entry_header* entry = nullptr;
  detail::shared_u64* hold = nullptr;  // null: pinned by `overflow_epoch` instead
  std::uint64_t overflow_epoch = 0;

  state(std::shared_ptr<detail::reader_core> c, const detail::entry_header* e, std::uint64_t ref,
        std::uint64_t epoch)
      : core(std::move(c)), entry(e) {
    auto& holds = core->slot->holds;
    const unsigned hint = detail::thread_hint();
    for (unsigned i = 0; i < detail::holds_per_reader; ++i) {
      auto& h = holds[(hint + i) % detail::holds_per_reader];
      std::uint64_t free_hold = 0;
      if (h.load(std::memory_order_relaxed) == 0 &&
          h.compare_exchange_strong(free_hold, ref, std::memory_order_seq_cst)) {
        hold = &h;
        return;
      }
    }
    overflow_epoch = epoch;
    core->pin_overflow(epoch);
  }
  ~state() {
    if (!core->owned()) return;  // an inherited copy: the parent still holds the block
    if (hold != nullptr) {
      hold->store(0, std::memory_order_release);
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
