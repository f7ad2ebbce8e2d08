// Reads of many keys in one epoch, their memory misses overlapped: the
// lookup half of `reader::get_many`.
//
// A lookup in a large table makes two dependent misses, the index slot then
// the entry block, each costing a DRAM access (and, on 4 KiB pages, a page
// walk): hundreds of nanoseconds, while the work around them (hash, probe,
// key compare, decode) takes a fraction of that. One lookup after another,
// the CPU cannot reach the next lookup's misses while it waits on this one's.
// A batch can: it hashes a group of keys and asks for their slot lines, then
// asks for each key's candidate block, and only then probes, so the misses of
// a whole group are in flight together and each costs about what one does.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "layout.hpp"
#include "reader_core.hpp"
#include "slither/core/error.hpp"
#include "slither/core/function_ref.hpp"

namespace slither::shm::detail {

/// Keys whose misses `find_many` overlaps: their slot lines are asked for
/// together, then their blocks. About as many misses as a core keeps in
/// flight (10 to 16 line-fill buffers); on the benchmark VM (store.get_many.1e7
/// in tests/bench/store/bench_scale.cpp) 16 beat both 8 and 32.
inline constexpr std::size_t find_many_group = 16;

/// For each of `keys` in turn, the block of its first value (a bag's oldest;
/// the entry itself in a set) in the table whose current index is `ix`,
/// passed to `visit(i, at)` with `at.e` null if the key is absent; `visit`
/// returns whether to go on. The same lookups and checks as `find` then
/// `first`: a damaged block ends the batch with that error (the keys before
/// it were visited). Inside an epoch.
result<void> find_many(reader_core& c, const index_header* ix,
                       std::span<const std::string_view> keys,
                       function_ref<bool(std::size_t, located)> visit);

}  // namespace slither::shm::detail
