// The reader registry, both sides: how a reader claims and gives up a slot,
// and how the writer finds the slots of readers that are gone.
//
// Liveness is judged only on positive evidence. A reader holds an OFD write
// lock on its slot's bytes of the registry (ofd_lock.hpp) from before it
// claims the slot until after it has freed it. The writer declares a slot
// dead only if its owner word says `owned`, no lock is held on it, and the
// owner word is still the one it read before testing the lock, which it
// checks by claiming the slot for clearing with a compare-and-swap. Each
// claim takes a new generation in the owner word, so a slot freed and
// claimed again meanwhile never matches. A failed lock test counts as alive.
#pragma once

#include <cstdint>
#include <optional>

#include "layout.hpp"

namespace slither::shm::detail {

/// A slot a reader has claimed: where it is and the owner word it wrote.
struct slot_claim {
  reader_slot* slot = nullptr;
  std::uint32_t index = 0;
  std::uint64_t owner = 0;
};

/// Claims a slot for the reader whose registry descriptor (its own open file
/// description) is `fd`: the first one, from 0, that is free, or whose owner
/// is gone (its lock can be taken), leaving that slot's lock held through
/// `fd`. nullopt if every slot is taken.
std::optional<slot_claim> claim_slot(int fd, reader_slot* slots, std::uint64_t count,
                                     std::uint64_t pid) noexcept;

/// Frees a claimed slot after zeroing it, unless it is no longer this claim's
/// (then nothing is touched). Closing the descriptor afterwards drops the lock.
void release_slot(const slot_claim& claim) noexcept;

/// The writer's sweep: frees the slots of readers that are gone, zeroing
/// their epochs and holds. `fd` is the writer's own registry descriptor.
/// Returns how many slots it freed.
std::uint32_t sweep_dead_readers(int fd, reader_slot* slots, std::uint64_t count) noexcept;

/// Zeroes a slot's pid, lanes, holds and overflow epoch (not its owner word).
void zero_slot(reader_slot& s) noexcept;

}  // namespace slither::shm::detail
