// Per-thread caches of freed small blocks (see pool.hpp).
#include "slither/core/pool.hpp"

#include <array>
#include <cstdint>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLITHER_POOL_DISABLED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SLITHER_POOL_DISABLED 1
#endif

namespace slither {
namespace {

constexpr std::size_t granule = 16;
constexpr std::size_t classes = pool_max_block / granule;

struct free_block {
  free_block* next;
};

struct cache {
  free_block* head[classes] = {};
  std::uint32_t count[classes] = {};
};

// Plain thread_locals stay usable after the owner below is destroyed at
// thread exit, so a block freed later (by another thread-local's destructor)
// simply goes back to operator delete.
thread_local cache* current = nullptr;
thread_local bool finished = false;

struct cache_owner {
  cache c;
  ~cache_owner() {
    current = nullptr;
    finished = true;
    for (auto* head : c.head) {
      while (head != nullptr) {
        free_block* next = head->next;
        ::operator delete(head);
        head = next;
      }
    }
  }
};

// Unused where SLITHER_POOL_DISABLED (sanitizer builds) sends every block to
// operator new, so that the sanitizers see each one.
[[maybe_unused]] cache* this_thread() noexcept {
  if (current != nullptr || finished) return current;
  thread_local cache_owner owner;
  current = &owner.c;
  return current;
}

constexpr std::size_t class_of(std::size_t bytes) noexcept {
  return (bytes - 1) / granule;
}

// Blocks kept per class, computed once: a division on every free would cost
// more than the rest of it.
constexpr auto caps = [] {
  std::array<std::uint32_t, classes> out{};
  for (std::size_t cls = 0; cls < classes; ++cls) {
    out[cls] = static_cast<std::uint32_t>(pool_cached_bytes / ((cls + 1) * granule));
  }
  return out;
}();

}  // namespace

void* pool_allocate(std::size_t bytes) {
#ifndef SLITHER_POOL_DISABLED
  if (bytes != 0 && bytes <= pool_max_block) {
    const std::size_t cls = class_of(bytes);
    if (cache* c = this_thread(); c != nullptr && c->head[cls] != nullptr) {
      free_block* b = c->head[cls];
      c->head[cls] = b->next;
      --c->count[cls];
      return b;
    }
    return ::operator new((cls + 1) * granule);
  }
#endif
  return ::operator new(bytes);
}

void pool_deallocate(void* p, std::size_t bytes) noexcept {
#ifndef SLITHER_POOL_DISABLED
  if (bytes != 0 && bytes <= pool_max_block) {
    const std::size_t cls = class_of(bytes);
    if (cache* c = this_thread(); c != nullptr && c->count[cls] < caps[cls]) {
      auto* b = static_cast<free_block*>(p);
      b->next = c->head[cls];
      c->head[cls] = b;
      ++c->count[cls];
      return;
    }
  }
#else
  (void)bytes;
#endif
  ::operator delete(p);
}

}  // namespace slither
