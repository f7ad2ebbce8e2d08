// Reclamation, both halves: the reader's overflow pins (its epoch lanes and
// holds are inline in epoch.hpp) and the writer's retire list and reclaim.
#include "epoch.hpp"

#include <algorithm>
#include <chrono>

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

void detail::epoch_guard::claim_any_lane(reader_slot* slot) noexcept {
  const unsigned hint = thread_hint();
  for (;;) {
    for (unsigned i = 1; i <= lanes_per_reader; ++i) {
      if (try_lane(slot, (hint + i) % lanes_per_reader)) return;
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

  // Every retired block was unlinked by a seq_cst store (a slot or a table
  // root) before the seq_cst loads below, and readers claim their slot and
  // then a lane with seq_cst RMWs before their seq_cst index loads: either
  // we see a reader's slot and lane, or that reader cannot reach any block
  // retired so far.
  ++epoch;
  header->global_epoch.store(epoch, std::memory_order_seq_cst);
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
