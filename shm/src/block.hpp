// The entry block and index formats (see layout.hpp): how keys are hashed,
// where a block's key, shape and value sit, and how a stored value decodes.
#pragma once

// XXH3 compiled into every caller (its header carries the implementation):
// a lookup hashes a short key in a few instructions, where a call into the
// shared libxxhash costs as much as the hash. The same function, so the same
// hashes as the library's.
#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL
#endif
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "layout.hpp"
#include "segment.hpp"
#include "slither/core/error.hpp"
#include "slither/core/value.hpp"

namespace slither::shm::detail {

inline constexpr std::uint64_t min_index_capacity = 16;
inline constexpr std::uint64_t max_index_capacity = std::uint64_t{1} << 40;

/// The key hash: XXH3 seeded with the store's random `hash_seed`, so keys
/// chosen to collide in one store do not collide in another.
inline std::uint64_t hash_key(std::uint64_t seed, std::string_view key) noexcept {
  return XXH3_64bits_withSeed(key.data(), key.size(), seed);
}

/// An entry block of either layout (layout.hpp): only its address is known
/// until its first byte says which. Readers get one from
/// `reader_core::entry`, which checks that what its header describes lies
/// inside the block's segment; the accessors below trust that.
struct entry_block;

inline entry_layout layout_of(const entry_block* e) noexcept {
  return static_cast<entry_layout>(*reinterpret_cast<const std::uint8_t*>(e) & 15);
}
inline std::uint64_t compact_word(const entry_block* e) noexcept {
  return reinterpret_cast<const compact_entry*>(e)->word;
}
/// The full header of `e`, or nullptr if it is compact.
inline const entry_header* full_of(const entry_block* e) noexcept {
  return layout_of(e) == entry_layout::compact ? nullptr : reinterpret_cast<const entry_header*>(e);
}
inline entry_header* full_of(entry_block* e) noexcept {
  return layout_of(e) == entry_layout::compact ? nullptr : reinterpret_cast<entry_header*>(e);
}
inline std::uint64_t compact_key_bytes(std::uint64_t word) noexcept {
  return word >> compact_key_shift & compact_max_key;
}
inline std::uint64_t compact_value_bytes(std::uint64_t word) noexcept {
  return word >> compact_value_shift & compact_max_value;
}

inline std::string_view key_of(const entry_block* e) noexcept {
  const auto* p = reinterpret_cast<const char*>(e);
  if (const entry_header* f = full_of(e)) return {p + sizeof(entry_header), f->key_bytes};
  return {p + sizeof(compact_entry), compact_key_bytes(compact_word(e))};
}

inline std::span<const std::byte> value_of(const entry_block* e) noexcept {
  const auto* p = reinterpret_cast<const std::byte*>(e);
  if (const entry_header* f = full_of(e)) return {p + f->value_offset, f->value_bytes};
  const std::uint64_t w = compact_word(e);
  return {p + sizeof(compact_entry) + compact_key_bytes(w), compact_value_bytes(w)};
}

inline std::uint64_t version_of(const entry_block* e) noexcept {
  if (const entry_header* f = full_of(e)) return f->version;
  return compact_word(e) >> compact_version_shift;
}

inline value_format format_of(const entry_block* e) noexcept {
  if (const entry_header* f = full_of(e)) return static_cast<value_format>(f->format);
  return value_format::encoded;
}

/// Values in the bag chain from `e` (1 in a set).
inline std::uint64_t count_of(const entry_block* e) noexcept {
  const entry_header* f = full_of(e);
  return f != nullptr ? f->count : 1;
}
/// Bag: the block of the previous value; else null.
inline std::uint64_t next_of(const entry_block* e) noexcept {
  const entry_header* f = full_of(e);
  return f != nullptr ? f->next : null_ref;
}
/// Bag: the block of the chain's oldest value; null in a set and a chain of one.
inline std::uint64_t first_of(const entry_block* e) noexcept {
  const entry_header* f = full_of(e);
  return f != nullptr ? f->first : null_ref;
}

/// The bytes a block of `e`'s layout takes before its allocation's rounding:
/// what a reader checks lies inside the segment. Compact only (a full
/// header says its `block_bytes`).
inline std::uint64_t compact_bytes(std::uint64_t word) noexcept {
  return sizeof(compact_entry) + compact_key_bytes(word) + compact_value_bytes(word);
}

/// Whether a key and encoded value of these sizes, at this version, fit a
/// compact block (the table must be a set or an ordered set).
inline bool fits_compact(std::uint64_t key_bytes, std::uint64_t value_bytes,
                         std::uint64_t version) noexcept {
  return key_bytes <= compact_max_key && value_bytes <= compact_max_value &&
         version < compact_version_limit;
}
/// Writes a compact block's header and key at `p` (room for
/// `sizeof(compact_entry) + key + value_bytes`); the value goes after the key.
inline void write_compact(std::byte* p, std::string_view key, std::uint64_t value_bytes) noexcept {
  const compact_entry h{static_cast<std::uint64_t>(entry_layout::compact) |
                        key.size() << compact_key_shift | value_bytes << compact_value_shift};
  std::memcpy(p, &h, sizeof h);
  std::memcpy(p + sizeof h, key.data(), key.size());
}
/// Sets the version of a block readers cannot see yet. A compact block's
/// must be below `compact_version_limit` (`fits_compact` said so).
inline void set_version(entry_block* e, std::uint64_t version) noexcept {
  if (entry_header* f = full_of(e)) {
    f->version = version;
    return;
  }
  auto* h = reinterpret_cast<compact_entry*>(e);
  h->word = (h->word & ((std::uint64_t{1} << compact_version_shift) - 1)) |
            version << compact_version_shift;
}

inline std::uint64_t shape_offset(std::uint64_t key_bytes) noexcept {
  return align_up(sizeof(entry_header) + key_bytes, 8);
}

/// The ndarray shape stored in a full block, in place (8-byte aligned in it).
std::span<const std::uint64_t> shape_of(const entry_header* e) noexcept;

/// Checks that a block's value is what its format says. For an ndarray: a
/// known dtype, elements 64-byte aligned in memory, and a shape whose byte
/// size (computed with overflow checks) is exactly the value's size. The
/// block's placement (key, shape and value inside it) is `reader_core::entry`'s check.
result<void> check_value(const entry_block* e);

/// A decoded copy of a block's value (`check_value` included).
result<Value> decode_entry(const entry_block* e);

inline std::uint64_t index_bytes(std::uint64_t capacity) noexcept {
  return sizeof(index_header) + capacity * sizeof(shared_u64);
}

/// Slots of a new table's index: at most half full at its initial capacity.
inline std::uint64_t initial_slots(std::uint64_t initial_capacity) noexcept {
  return std::bit_ceil(std::max(min_index_capacity, initial_capacity * 2));
}

/// A key quoted for an error message: printable, escaped, cut at 64 characters.
std::string printable(std::string_view key);

}  // namespace slither::shm::detail
