// What a reader process keeps of a store it attached to: the read-only
// mappings of its segments, its registry slot, and the lookups every read
// is made of. Shared by the `reader` and every view it hands out, so views
// outlive the `reader` safely.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "block.hpp"
#include "layout.hpp"
#include "process.hpp"
#include "segment.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::detail {

/// A block found by a reader: its reference and its address.
struct located {
  std::uint64_t ref = null_ref;
  const entry_header* e = nullptr;
};

struct reader_core {
  std::string ns;
  std::string name;
  std::string label;
  std::uint64_t incarnation = 0;
  const store_header* header = nullptr;
  std::vector<std::string> table_names;
  std::vector<table_kind> table_kinds;

  std::array<std::atomic<const std::byte*>, max_segments> bases{};
  std::array<std::atomic<std::uint64_t>, max_segments> sizes{};
  std::mutex map_mutex;  // only taken to map a segment for the first time
  std::array<std::unique_ptr<bip::mapped_region>, max_segments> regions;

  bip::mapped_region registry;
  reader_slot* slot = nullptr;
  std::uint64_t generation = 0;  // fork_generation() of the attaching process

  std::mutex overflow_mutex;
  std::multiset<std::uint64_t> overflow_epochs;

  reader_core() = default;
  reader_core(const reader_core&) = delete;
  reader_core& operator=(const reader_core&) = delete;
  ~reader_core();

  /// False in a child process that inherited this reader through fork(): the
  /// slot belongs to the parent, which must keep its epochs and holds.
  bool owned() const noexcept { return generation == fork_generation(); }

  std::optional<std::uint32_t> table_index(std::string_view table) const noexcept {
    for (std::uint32_t i = 0; i < table_names.size(); ++i) {
      if (table_names[i] == table) return i;
    }
    return std::nullopt;
  }

  error_info unknown_table(std::string_view table) const;
  error_info inherited() const;
  error_info unreadable(std::uint64_t ref) const;

  /// Maps segment `n` on first use; nullptr if it cannot be mapped.
  const std::byte* map_segment(std::uint32_t n) noexcept;

  /// The address of `bytes` bytes at `ref`, or nullptr if they are not readable.
  const std::byte* resolve(std::uint64_t ref, std::uint64_t bytes) noexcept {
    const std::uint32_t seg = ref_segment(ref);
    if (seg >= max_segments) return nullptr;
    const std::byte* base = bases[seg].load(std::memory_order_acquire);
    if (base == nullptr && (base = map_segment(seg)) == nullptr) return nullptr;
    const std::uint64_t off = ref_offset(ref);
    const std::uint64_t size = sizes[seg].load(std::memory_order_relaxed);
    if (off > size || bytes > size - off) return nullptr;
    return base + off;
  }

  const entry_header* entry(std::uint64_t ref) noexcept {
    const auto* e = reinterpret_cast<const entry_header*>(resolve(ref, sizeof(entry_header)));
    if (e == nullptr || resolve(ref, e->block_bytes) == nullptr ||
        e->value_offset > e->block_bytes || e->value_bytes > e->block_bytes - e->value_offset ||
        shape_offset(e->key_bytes) + e->ndim * 8ull > e->value_offset) {
      return nullptr;
    }
    return e;
  }

  /// The current index of `table`; call inside an epoch.
  const index_header* index(std::uint32_t table) noexcept {
    const std::uint64_t root = header->tables[table].root.load(std::memory_order_seq_cst);
    const auto* ix = reinterpret_cast<const index_header*>(resolve(root, sizeof(index_header)));
    if (ix == nullptr || ix->capacity == 0 || (ix->capacity & (ix->capacity - 1)) != 0 ||
        ix->capacity > max_index_capacity || resolve(root, index_bytes(ix->capacity)) == nullptr) {
      return nullptr;
    }
    return ix;
  }

  /// The newest block of `key` in index `ix` (`e` null if absent); inside an epoch.
  result<located> find(const index_header* ix, std::uint64_t hash, std::string_view key) {
    const auto* slots = reinterpret_cast<const shared_u64*>(ix + 1);
    const std::uint64_t mask = ix->capacity - 1;
    for (std::uint64_t i = hash & mask, n = 0; n <= mask; i = (i + 1) & mask, ++n) {
      const std::uint64_t s = slots[i].load(std::memory_order_seq_cst);
      if (s == null_ref) break;
      if (!slot_has_entry(s) || !slot_tag_matches(s, hash)) continue;
      const std::uint64_t r = slot_ref(s);
      // Header, key and a small value fill the block's first three cache
      // lines: fetch them together rather than one miss after another.
      if (const std::byte* p = resolve(r, sizeof(entry_header))) {
        __builtin_prefetch(p + 64);
        __builtin_prefetch(p + 128);
      }
      const entry_header* e = entry(r);
      if (e == nullptr) return unreadable(r);
      if (e->hash == hash && key_of(e) == key) return located{r, e};
    }
    return located{};
  }

  /// The blocks of a bag chain, oldest first (one block for a set).
  result<std::vector<located>> chain(located head);
  /// The first (oldest) value's block of the key found at `head`.
  result<located> first(located head);

  /// Pins `epoch` for a view that found no free hold.
  void pin_overflow(std::uint64_t epoch);
  void unpin_overflow(std::uint64_t epoch) noexcept;
};

}  // namespace slither::shm::detail
