// A table's hash index while it grows, both halves: readers that look keys
// up in, or scan, an index moving out of its previous array, and the writer
// that moves that array's entries a few slots per write. The rules they
// follow are in layout.hpp ("Growth").
#pragma once

#include <cstdint>

#include "layout.hpp"
#include "reader_core.hpp"
#include "slither/core/error.hpp"
#include "slither/core/function_ref.hpp"

namespace slither::shm::detail {

/// Slots of the previous array each write moves. A growth starts when the
/// array is 3/4 full and doubles it, so at least two slots per insert
/// finish a migration before the next growth is due; more finish it sooner
/// (lookups of keys not yet moved probe two arrays) at a bounded cost per write.
inline constexpr std::uint64_t migrate_slots_per_write = 8;
/// Bytes of the next growth's array made ready per write once the index is
/// 11/16 full (so it costs memory only until the growth, at 3/4): it takes
/// 16 bytes per slot of the current array in 1/16 of them, at least 256
/// bytes per insert; so it is ready long before.
inline constexpr std::uint64_t spare_bytes_per_write = 4096;
/// A table's index is made at once, when it is created, cleared or
/// reloaded, only up to `store_options::index_bytes_at_once` (1 MiB of
/// slots by default, reserved and zeroed in well under a millisecond). A
/// capacity that asks for more starts with that much; its own array (the
/// "asked" array) is then made ready like a spare, a slice at a time
/// (`spare_bytes_per_write` per insert, `spare_slice_bytes` per step of the
/// writer's timer), and moved into like a growth once ready. So no write
/// waits while gigabytes of index are reserved: the table is usable at once
/// and grows as usual (beside the asked array) if keys come faster than it
/// is made ready.
///
/// Bytes of an asked array each step of the writer's timer makes ready:
/// one reserve (fallocate) and zeroing of this much takes tens of microseconds.
inline constexpr std::uint64_t spare_slice_bytes = std::uint64_t{256} << 10;

/// Visits the head block of every key in the table whose current index is
/// `ix`, also while it grows: a key present throughout is visited exactly
/// once. `visit` returns whether to go on. Inside an epoch.
result<void> scan_index(reader_core& c, const index_header* ix, function_ref<bool(located)> visit);

}  // namespace slither::shm::detail
