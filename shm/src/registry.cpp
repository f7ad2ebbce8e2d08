#include "registry.hpp"

#include "ofd_lock.hpp"

namespace slither::shm::detail {

void zero_slot(reader_slot& s) noexcept {
  for (auto& h : s.holds) h.store(0, std::memory_order_relaxed);
  for (auto& l : s.lanes) l.store(0, std::memory_order_relaxed);
  s.overflow_epoch.store(0, std::memory_order_relaxed);
  s.pid.store(0, std::memory_order_relaxed);
}

std::optional<slot_claim> claim_slot(int fd, reader_slot* slots, std::uint64_t count,
                                     std::uint64_t pid) noexcept {
  for (std::uint64_t i = 0; i < count; ++i) {
    reader_slot& s = slots[i];
    if (owner_state(s.owner.load(std::memory_order_acquire)) == slot_state::clearing) continue;
    // The lock first: once we hold it, no live reader owns this slot (a
    // reader takes it before claiming and drops it only after freeing).
    if (ofd_try_lock(fd, slot_offset(i), sizeof(reader_slot)) != 0) continue;
    const std::uint64_t seen = s.owner.load(std::memory_order_acquire);
    const slot_state state = owner_state(seen);
    const std::uint64_t mine = owner_word(owner_generation(seen) + 1, slot_state::owned);
    // `owned` with the lock ours: its owner is gone and no sweep has freed it
    // yet; take it over. `clearing`: the writer is freeing it, leave it.
    std::uint64_t expected = seen;
    if (state == slot_state::clearing ||
        // seq_cst: ordered before this reader's lane claims, against the
        // writer's seq_cst scan, which skips free slots (epoch.cpp).
        !s.owner.compare_exchange_strong(expected, mine, std::memory_order_seq_cst)) {
      ofd_unlock(fd, slot_offset(i), sizeof(reader_slot));
      continue;
    }
    if (state == slot_state::owned) zero_slot(s);  // the dead owner's epochs and holds
    s.pid.store(pid, std::memory_order_relaxed);
    return slot_claim{&s, static_cast<std::uint32_t>(i), mine};
  }
  return std::nullopt;
}

void release_slot(const slot_claim& claim) noexcept {
  if (claim.slot == nullptr) return;
  std::uint64_t expected = claim.owner;
  const std::uint64_t clearing = owner_word(owner_generation(claim.owner), slot_state::clearing);
  // Only while it is still ours: if it changed hands, its contents are someone else's.
  if (!claim.slot->owner.compare_exchange_strong(expected, clearing, std::memory_order_acq_rel)) {
    return;
  }
  zero_slot(*claim.slot);
  claim.slot->owner.store(owner_word(owner_generation(claim.owner), slot_state::free),
                          std::memory_order_release);
}

std::uint32_t sweep_dead_readers(int fd, reader_slot* slots, std::uint64_t count) noexcept {
  std::uint32_t freed = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    reader_slot& s = slots[i];
    std::uint64_t seen = s.owner.load(std::memory_order_acquire);
    if (owner_state(seen) != slot_state::owned) continue;
    if (ofd_test(fd, slot_offset(i), sizeof(reader_slot)) != lock_seen::free) continue;
    const std::uint64_t generation = owner_generation(seen);
    if (!s.owner.compare_exchange_strong(seen, owner_word(generation, slot_state::clearing),
                                         std::memory_order_acq_rel)) {
      continue;  // freed, or claimed again, since we read it: not the dead owner's any more
    }
    zero_slot(s);
    s.owner.store(owner_word(generation, slot_state::free), std::memory_order_release);
    ++freed;
  }
  return freed;
}

}  // namespace slither::shm::detail
