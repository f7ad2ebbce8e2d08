// The entry block and index formats (see layout.hpp): how keys are hashed,
// where a block's key, shape and value sit, and how a stored value decodes.
#pragma once

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstdint>
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

inline std::string_view key_of(const entry_header* e) noexcept {
  return {reinterpret_cast<const char*>(e + 1), e->key_bytes};
}

inline std::span<const std::byte> value_of(const entry_header* e) noexcept {
  return {reinterpret_cast<const std::byte*>(e) + e->value_offset, e->value_bytes};
}

inline std::uint64_t shape_offset(std::uint64_t key_bytes) noexcept {
  return align_up(sizeof(entry_header) + key_bytes, 8);
}

/// The ndarray shape stored in a block, in place (8-byte aligned in it).
std::span<const std::uint64_t> shape_of(const entry_header* e) noexcept;

/// Checks that a block's value is what its format says. For an ndarray: a
/// known dtype, a 64-byte aligned value, and a shape whose byte size
/// (computed with overflow checks) is exactly the value's size. The block's
/// placement (key, shape and value inside it) is `reader_core::entry`'s check.
result<void> check_value(const entry_header* e);

/// A decoded copy of a block's value (`check_value` included).
result<Value> decode_entry(const entry_header* e);

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
