// Reclamation, both halves: the reader's overflow pins (its epoch lanes and
// holds are inline in epoch.hpp) and the writer's retire list and reclaim.
#include "epoch.hpp"

#include <linux/membarrier.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "slither/shm/detail/sys.hpp"

#include "registry.hpp"
#include "writer_impl.hpp"

namespace slither::shm {

namespace {
constexpr std::uint64_t reclaim_every_retires = 64;
constexpr std::uint64_t reclaim_every_bytes = std::uint64_t{4} << 20;
// How often a reclaim that writes trigger also looks for dead readers.
constexpr auto liveness_interval = std::chrono::milliseconds(250);
}  // namespace

// ---------------------------------------------------------------------------
// Reader side

#if defined(__SANITIZE_THREAD__)
constexpr bool tsan_build = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool tsan_build = true;
#else
constexpr bool tsan_build = false;
#endif
#else
constexpr bool tsan_build = false;
#endif

bool detail::register_for_writer_barriers() noexcept {
  if (tsan_build) return false;
  return sys().membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0) == 0;
}

detail::fence_mode detail::writer_fence_mode() noexcept {
  if (tsan_build) return fence_mode::full;
  return writer_barrier() ? fence_mode::membarrier : fence_mode::full;
}

bool detail::writer_barrier() noexcept {
  return sys().membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0) == 0;
}

namespace {

// The lanes this thread keeps, given back when it exits. Touched only when a
// thread starts keeping a lane, never on the read path.
struct kept_by_thread {
  std::vector<std::pair<std::weak_ptr<detail::reader_core>, unsigned>> lanes;
  kept_by_thread() = default;
  kept_by_thread(const kept_by_thread&) = delete;
  kept_by_thread& operator=(const kept_by_thread&) = delete;
  ~kept_by_thread() {
    const std::uintptr_t me = detail::thread_token();
    for (auto& [weak, k] : lanes) {
      if (auto core = weak.lock()) {
        std::uintptr_t mine = me;
        core->lane_keeper[k].compare_exchange_strong(mine, 0, std::memory_order_release);
      }
    }
  }
};

}  // namespace

std::optional<unsigned> detail::reader_core::keep_lane(std::uintptr_t me) noexcept {
  for (unsigned k = 0; k < kept_lanes; ++k) {
    std::uintptr_t free_lane = 0;
    if (lane_keeper[k].load(std::memory_order_relaxed) != 0 ||
        !lane_keeper[k].compare_exchange_strong(free_lane, me, std::memory_order_acquire)) {
      continue;
    }
    try {
      thread_local kept_by_thread kept;
      // Readers closed meanwhile: their entries go before one is added.
      std::erase_if(kept.lanes, [](const auto& e) { return e.first.expired(); });
      kept.lanes.emplace_back(weak_from_this(), k);
      return k;
    } catch (...) {  // no memory to remember it: give it back, read on a per-read lane
      lane_keeper[k].store(0, std::memory_order_release);
      return std::nullopt;
    }
  }
  return std::nullopt;
}

void detail::epoch_guard::start_unkept(reader_slot* slot, std::uintptr_t me) noexcept {
  if (active_lanes.depth != 0) {
    if (const auto outer = active_lane(core_, slot)) {
      nested_ = true;
      lane_ = outer->lane;
      epoch_ = outer->epoch;
      return;
    }
  }
  if (const auto k = core_.keep_lane(me)) {
    announce_kept(slot, *k);
    return;
  }
  forks_ = core_.shared_forks.load(std::memory_order_relaxed);
  // Most reads find their thread's usual lane idle: try it inline.
  constexpr unsigned per_read = lanes_per_reader - kept_lanes;
  if (!try_lane(slot, kept_lanes + thread_hint() % per_read)) claim_any_lane(slot);
}

void detail::epoch_guard::claim_any_lane(reader_slot* slot) noexcept {
  constexpr unsigned per_read = lanes_per_reader - kept_lanes;
  const unsigned hint = thread_hint();
  for (;;) {
    for (unsigned i = 1; i <= per_read; ++i) {
      if (try_lane(slot, kept_lanes + (hint + i) % per_read)) return;
    }
    std::this_thread::yield();  // more reading threads than lanes: wait for one
  }
}

void detail::reader_core::pin_overflow(std::uint64_t epoch) {
  std::lock_guard lock(overflow_mutex);
  overflow_epochs.insert(epoch);
  slot.load(std::memory_order_relaxed)
      ->overflow_epoch.store(*overflow_epochs.begin(), std::memory_order_seq_cst);
}

void detail::reader_core::unpin_overflow(std::uint64_t epoch) noexcept {
  std::lock_guard lock(overflow_mutex);
  overflow_epochs.erase(overflow_epochs.find(epoch));
  slot.load(std::memory_order_relaxed)
      ->overflow_epoch.store(overflow_epochs.empty() ? 0 : *overflow_epochs.begin(),
                             std::memory_order_seq_cst);
}

// ---------------------------------------------------------------------------
// Writer side

void writer::impl::retire(std::uint64_t ref, std::uint64_t bytes) {
  retired.push_back({ref, bytes, epoch});
  bytes_used -= bytes;
  bytes_retired += bytes;
  ++retires_since_reclaim;
  retired_bytes_since_reclaim += bytes;
}

reclaim_report writer::impl::reclaim(bool check_liveness) {
  reclaim_report report = free_retired(check_liveness);
  // What this and earlier frees left to hand back, off this thread.
  alloc.trim(std::chrono::steady_clock::now());
  return report;
}

reclaim_report writer::impl::free_retired(bool check_liveness) {
  reclaim_report report;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_liveness_check >= liveness_interval) check_liveness = true;
  if (check_liveness) {
    last_liveness_check = now;
    report.readers_cleared =
        detail::sweep_dead_readers(registry_fd.get(), reader_slots, options.max_readers);
  }
  retires_since_reclaim = 0;
  retired_bytes_since_reclaim = 0;
  if (retired.empty()) {  // what a timer finds most of the time
    bytes_pinned = 0;
    oldest_epoch_pid = 0;
    return report;
  }

  // Every retired block was unlinked before this epoch store, and readers
  // claim their slot with a seq_cst RMW and announce as epoch.hpp says:
  // either we see a reader's slot and lane, or that reader cannot reach any
  // block retired so far.
  ++epoch;
  header->global_epoch.store(epoch, std::memory_order_seq_cst);
  if (header->fences == static_cast<std::uint64_t>(detail::fence_mode::membarrier) &&
      !detail::writer_barrier()) {
    // Readers' plain lane stores may not be visible yet: free nothing now.
    bytes_pinned = bytes_retired;
    return report;
  }
  std::uint64_t oldest = epoch;
  std::uint64_t oldest_pid = 0;
  held.clear();
  for (std::uint64_t i = 0; i < options.max_readers; ++i) {
    detail::reader_slot& s = reader_slots[i];
    if (detail::owner_state(s.owner.load(std::memory_order_seq_cst)) == detail::slot_state::free) {
      continue;  // zeroed before it was freed
    }
    std::uint64_t slot_oldest = UINT64_MAX;
    for (const auto& lane : s.lanes) {
      const std::uint64_t e = lane.load(std::memory_order_seq_cst);
      if (e != 0) slot_oldest = std::min(slot_oldest, e);
    }
    if (const std::uint64_t e = s.overflow_epoch.load(std::memory_order_seq_cst); e != 0) {
      slot_oldest = std::min(slot_oldest, e);
    }
    if (slot_oldest < oldest) {
      oldest = slot_oldest;
      oldest_pid = s.pid.load(std::memory_order_relaxed);
    }
    for (const auto& h : s.holds) {
      if (const std::uint64_t r = h.load(std::memory_order_acquire); r != 0) held.push_back(r);
    }
  }
  std::sort(held.begin(), held.end());

  std::erase_if(retired, [&](const detail::retired_block& r) {
    if (r.epoch >= oldest || std::binary_search(held.begin(), held.end(), r.ref)) return false;
    alloc.free(r.ref, r.bytes);
    bytes_retired -= r.bytes;
    report.bytes_freed += r.bytes;
    return true;
  });
  bytes_pinned = bytes_retired;
  oldest_epoch_pid = oldest_pid;
  return report;
}

void writer::impl::maybe_reclaim() {
  if (retires_since_reclaim >= reclaim_every_retires ||
      retired_bytes_since_reclaim >= reclaim_every_bytes) {
    reclaim(false);
  }
}

}  // namespace slither::shm
