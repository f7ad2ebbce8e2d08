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
//
// Lanes. The first `kept_lanes` lanes of a slot are kept by threads between
// reads (the first threads of the process to read through this reader, until
// they exit): only its keeper writes such a lane, so announcing is a store,
// not a read-modify-write. The other lanes are taken per read with a
// compare-and-swap, by threads beyond those, and waited for when all are busy.
//
// The announce, and why the writer never frees what a read can still see.
// The writer unlinks a block (a store into an index slot or a table root),
// later advances `global_epoch` (a release store), then scans every lane and
// frees blocks retired before the oldest epoch announced. A reader loads
// `global_epoch` (acquire), stores it in its lane, and only then loads index
// slots. What must hold: if the scan does not see the lane, the reader's index
// loads see every unlink that preceded the scan, so it cannot reach a block
// the scan frees; and if the scan sees epoch e, e was loaded after (acquire)
// the writer's store of e, which follows the unlink of every block retired
// before e, so again the reader's later loads cannot reach those blocks.
// The first half needs the lane store ordered before the reader's later loads
// against the writer's scan (store-load order), which a plain store does not
// give. Two ways, chosen per store and per reader, agreeing through the store
// header (`store_header::fences`, set by the writer before the store is ready):
//  - full (fence_mode::full, or a reader that could not register): the lane
//    store is seq_cst (an xchg or a locked CAS), and so are the writer's epoch
//    store and lane loads: in the single total order, either the scan's load
//    precedes the lane store (and then the unlink, earlier still, precedes the
//    reader's seq_cst index loads) or it reads the lane.
//  - asymmetric (fence_mode::membarrier and this process registered with
//    MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED): the reader stores its lane
//    relaxed, with only a compiler fence before its loads; the writer calls
//    membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) after the epoch store and
//    before the scan. That call returns only after every running thread of
//    every registered process has executed a full barrier (and threads not
//    running are between context switches, which are barriers), at a point B
//    of its program. A lane store before B is visible to the scan; a lane
//    store after B has the reader's index loads after B too, and they see
//    every unlink, which the syscall's own barrier ordered before B. If the
//    call fails, the writer frees nothing in that reclaim.
// Lane stores of a reader in full mode are fenced on their own, so one store
// can have readers of both kinds. A reader decides at attach (and again in a
// fork child, which registers anew); the writer decides at creation, by
// issuing one GLOBAL_EXPEDITED barrier. Per-read lanes are always taken with a
// seq_cst compare-and-swap, which is a full barrier, so they are right in
// either mode. ThreadSanitizer cannot see membarrier: in a TSan build the
// writer never offers it, and every announce takes the full path.
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

/// This thread as the keeper of lanes: its thread pointer (the address of
/// its thread control block, what glibc's pthread_self returns), unique among
/// the live threads of the process and the same in a fork child's only
/// thread. One register read: pthread_self is a call into libc, and a
/// thread_local costs a call in a shared library such as the Python extension.
inline std::uintptr_t thread_token() noexcept {
  return reinterpret_cast<std::uintptr_t>(__builtin_thread_pointer());
}

/// Registers this process for the writer's barriers
/// (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED): whether its readers of a store
/// in fence_mode::membarrier may announce with plain stores. Always false in
/// a ThreadSanitizer build.
bool register_for_writer_barriers() noexcept;

/// The fence mode a new store offers: membarrier if this process can issue
/// MEMBARRIER_CMD_GLOBAL_EXPEDITED (it issues one to find out), else full.
fence_mode writer_fence_mode() noexcept;

/// The writer's barrier before a scan of the lanes; false if it failed
/// (then the scan must free nothing).
bool writer_barrier() noexcept;

/// A lane this thread holds in some reader's slot.
struct lane_use {
  const reader_core* core;
  unsigned lane;
  std::uint64_t epoch;
};

/// The per-read lanes this thread holds, innermost last. Reads nest (a
/// `for_each` callback calling `get` on the same reader): a nested read reuses
/// its thread's lane rather than waiting for another, which would wait
/// forever once every lane is held by a thread doing the same. (A kept lane
/// needs no such record: it is busy exactly when this thread is inside a read.)
struct lane_stack {
  static constexpr unsigned capacity = 16;  // distinct readers nested in one thread
  lane_use uses[capacity];
  unsigned depth;
};
// Constant-initialized: no guard on the read path.
inline thread_local lane_stack active_lanes{};

/// The lane (and its epoch) this thread holds in `core`'s slot `slot`, if it
/// is inside a read of it.
inline std::optional<lane_use> active_lane(const reader_core& core,
                                           const reader_slot* slot) noexcept {
  const std::uintptr_t me = thread_token();
  for (unsigned k = 0; k < kept_lanes; ++k) {
    if (core.lane_keeper[k].load(std::memory_order_relaxed) != me) continue;
    const std::uint64_t e = slot ? slot->lanes[k].load(std::memory_order_relaxed) : 0;
    if (e != 0) return lane_use{&core, k, e};
  }
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
  // Inline wherever a read starts and ends (the compiler would rather call
  // them): two calls were a tenth of a Python `get`.
  [[gnu::always_inline]] epoch_guard(reader_core& core, reader_slot* slot) noexcept : core_(core) {
    const std::uintptr_t me = thread_token();
    for (unsigned k = 0; k < kept_lanes; ++k) {
      if (core.lane_keeper[k].load(std::memory_order_relaxed) == me) [[likely]] {
        announce_kept(slot, k);
        return;
      }
    }
    start_unkept(slot, me);
  }
  [[gnu::always_inline]] ~epoch_guard() {
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
  /// The read on lane `k`, which this thread keeps (see the file comment for
  /// why a plain store is enough in asymmetric mode).
  [[gnu::always_inline]] void announce_kept(reader_slot* slot, unsigned k) noexcept {
    lane_ = k;
    auto& lane = slot->lanes[k];
    // Only this thread writes its kept lane: busy means it is inside a read already.
    if (const std::uint64_t outer = lane.load(std::memory_order_relaxed); outer != 0) {
      nested_ = true;
      epoch_ = outer;
      return;
    }
    forks_ = core_.shared_forks.load(std::memory_order_relaxed);
    // Epochs start at 1; a 0 here is a corrupted header, still a valid announce.
    if (core_.fast_fences) [[likely]] {
      epoch_ =
          std::max<std::uint64_t>(core_.header->global_epoch.load(std::memory_order_acquire), 1);
      lane.store(epoch_, std::memory_order_relaxed);
      // The compiler keeps the index loads after the store; the writer's
      // membarrier orders them for the CPU.
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      epoch_ =
          std::max<std::uint64_t>(core_.header->global_epoch.load(std::memory_order_seq_cst), 1);
      lane.store(epoch_, std::memory_order_seq_cst);
    }
  }
  /// A thread without a kept lane here: nested in a read of its own, or
  /// keeps a lane now, or takes one for this read (epoch.cpp).
  void start_unkept(reader_slot* slot, std::uintptr_t me) noexcept;

  bool try_lane(reader_slot* slot, unsigned k) noexcept {
    std::uint64_t idle = 0;
    const std::uint64_t e =
        std::max<std::uint64_t>(core_.header->global_epoch.load(std::memory_order_seq_cst), 1);
    // A seq_cst RMW, a full barrier: right whatever the store's fence mode.
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
  /// Tries every per-read lane, waiting (yielding) while all are taken (epoch.cpp).
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
  const detail::entry_block* entry = nullptr;
  int hold = -1;  // -1: pinned by `overflow_epoch` instead
  std::uint64_t overflow_epoch = 0;
  std::uint64_t forks = 0;  // core->shared_forks when this view was made

  /// Call inside a read (the epoch `epoch`) that found the block `ref` at `e`.
  state(std::shared_ptr<detail::reader_core> c, const detail::entry_block* e, std::uint64_t ref,
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
