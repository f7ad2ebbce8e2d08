// A per-thread cache of freed small blocks, for the storage of `List`s and
// `Map`s (their allocator is part of their type, hence public).
//
// Decoding a batch builds many small maps and frees them together later; the
// general-purpose allocator keeps only a handful of freed blocks of one size
// per thread, so most of those would take its slow path. Here each thread
// keeps up to `pool_cached_bytes` of freed blocks per size class and reuses
// them first. A block may be freed by another thread than the one that
// allocated it (it joins that thread's cache). Under AddressSanitizer every
// block goes straight to operator new/delete, so use-after-free stays visible.
#pragma once

#include <cstddef>
#include <new>

#include "slither/core/export.hpp"

namespace slither {

/// Blocks up to this size are cached; larger ones go to operator new/delete.
inline constexpr std::size_t pool_max_block = 1024;
/// Most bytes of freed blocks one thread keeps per size class.
inline constexpr std::size_t pool_cached_bytes = std::size_t{32} << 10;

/// A block of at least `bytes` bytes, aligned for any object of up to 16 bytes.
SLITHER_CORE_EXPORT void* pool_allocate(std::size_t bytes);
/// Returns a block from `pool_allocate(bytes)`.
SLITHER_CORE_EXPORT void pool_deallocate(void* p, std::size_t bytes) noexcept;

/// A stateless allocator over `pool_allocate`; all instances are equal.
template <class T>
struct pool_allocator {
  using value_type = T;

  pool_allocator() noexcept = default;
  template <class U>
  pool_allocator(const pool_allocator<U>&) noexcept {}  // NOLINT: rebinding is implicit

  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= 16, "pool_allocator serves objects aligned to at most 16 bytes");
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(pool_allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { pool_deallocate(p, n * sizeof(T)); }

  template <class U>
  friend bool operator==(const pool_allocator&, const pool_allocator<U>&) noexcept {
    return true;
  }
};

}  // namespace slither
