// What a reader keeps of a store it attached to: the read-only mappings of
// its segments, its registry slot, and the lookups every read is made of.
// Shared by the `reader` and every view it hands out, so views outlive the
// `reader` safely.
//
// Every lookup checks what it reads against the mapped bytes (references,
// block sizes, index capacities, bag chains): a corrupted segment gives an
// error, never an out-of-bounds read, a loop or an exception.
#pragma once

#include <sys/types.h>

#include <algorithm>
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
#include "registry.hpp"
#include "segment.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::detail {

/// A block found by a reader: its reference and its address.
struct located {
  std::uint64_t ref = null_ref;
  const entry_block* e = nullptr;
};

/// What a lookup of one key found: its block (`e` set), no block (`e` and
/// `ref` null), or a block it could not read (`e` null, `ref` the reference
/// that failed `reader_core::entry`). Two words, returned in registers: a
/// `result<located>` goes through memory, and the caller's load of it stalls
/// on the callee's stores on every read.
struct probed {
  std::uint64_t ref = null_ref;
  const entry_block* e = nullptr;

  bool unreadable() const noexcept { return e == nullptr && ref != null_ref; }
  /// The block found (`e` null if absent); only when not `unreadable()`.
  located at() const noexcept { return {ref, e}; }
};

/// Lanes of a slot that threads keep between reads (epoch.hpp); the rest are taken per read.
inline constexpr unsigned kept_lanes = 4;
static_assert(kept_lanes < lanes_per_reader, "some lanes must be left to take per read");

struct reader_core final : fork_aware, std::enable_shared_from_this<reader_core> {
  std::string ns;
  std::string name;
  std::string label;
  uid_t owner_uid = 0;  ///< every object mapped must belong to this user
  std::uint64_t incarnation = 0;
  std::uint64_t hash_seed = 0;
  const store_header* header = nullptr;
  // What this reader knows of the table directory: entries [0, tables_known)
  // are copied from it and never change (the writer never renames or reuses
  // an entry). A name not found there sends the reader back to the directory
  // (`refresh_tables`), so tables created after attach are found.
  std::array<std::string, max_tables> table_names;
  std::array<table_kind, max_tables> table_kinds{};
  std::atomic<std::uint32_t> tables_known{0};
  std::mutex tables_mutex;  // only taken to copy new directory entries

  std::array<std::atomic<const std::byte*>, max_segments> bases{};
  std::array<std::atomic<std::uint64_t>, max_segments> sizes{};
  std::mutex map_mutex;  // only taken to map a segment for the first time
  std::array<mapping, max_segments> regions;
  // Each mapped segment's descriptor (set before its base is published) and
  // the bytes memory backed of it when last looked at (`backed_bytes`).
  std::array<unique_fd, max_segments> segment_fds;
  std::array<std::atomic<std::uint64_t>, max_segments> backed{};

  // The registry and this reader's slot in it. `slot` is null only in a fork
  // child that had nothing to protect at fork time, until its first read.
  mapping registry;
  reader_slot* slots = nullptr;
  std::uint64_t slot_count = 0;
  dev_t registry_dev = 0;
  ino_t registry_ino = 0;
  unique_fd registry_fd;  // its own open file description: the slot's lock lives on it
  std::atomic<reader_slot*> slot{nullptr};
  slot_claim claim;
  std::mutex claim_mutex;

  // The announce (epoch.hpp). `fast_fences`: the store's writer issues
  // membarrier before it scans lanes and this process is registered for it,
  // so lane stores need no fence. `lane_keeper[k]`: the thread_token of the
  // thread that keeps lane k between reads, 0 if none.
  bool fast_fences = false;
  std::array<std::atomic<std::uintptr_t>, kept_lanes> lane_keeper{};
  /// Makes lane k this thread's until it exits, if one is free (epoch.cpp).
  std::optional<unsigned> keep_lane(std::uintptr_t me) noexcept;

  // A process-private copy of the slot's holds. After fork() the child's copy
  // says exactly which holds its inherited views own, whatever the parent
  // does to its slot meanwhile.
  std::array<std::atomic<std::uint64_t>, holds_per_reader> private_holds{};
  std::mutex overflow_mutex;
  std::multiset<std::uint64_t> overflow_epochs;

  // fork() (registry.cpp): between before_fork and after_fork_*, `forking` is
  // set and new views wait for it to clear, so a view either existed when
  // the child's slot was filled or never reaches the child.
  std::atomic<std::uint32_t> forking{0};
  // Forks whose child could not get a slot of its own and shares ours: holds,
  // pins and lanes taken before such a fork are never released by this
  // process, and the slot is left to the sweep once both processes are gone.
  std::atomic<std::uint64_t> shared_forks{0};
  // False in a child that shares its parent's slot: reads are refused there.
  bool usable = true;
  unique_fd child_fd;
  slot_claim child_claim;
  bool child_shares = false;

  reader_core() = default;
  reader_core(const reader_core&) = delete;
  reader_core& operator=(const reader_core&) = delete;
  ~reader_core();

  void before_fork() noexcept override;
  void after_fork_parent() noexcept override;
  void after_fork_child() noexcept override;

  /// This process's slot, claiming one first in a fork child that has none yet.
  result<reader_slot*> current_slot() {
    if (reader_slot* s = slot.load(std::memory_order_acquire)) return s;
    return claim_lazily();
  }
  result<reader_slot*> claim_lazily();
  /// Blocks while a fork() of this process is filling a slot for its child.
  void wait_for_fork() const noexcept;

  /// Whether directory entry `i` is a live (not dropped) table.
  bool table_live(std::uint32_t i) const noexcept {
    return header->tables[i].kind.load(std::memory_order_acquire) != dropped_kind;
  }
  /// Copies directory entries the writer added since the last call. False
  /// if the directory is corrupt (a count past `max_tables`, an unknown kind).
  bool refresh_tables() noexcept;
  /// The directory entry of the live table `table`, looking at the directory
  /// again if it is not among those known.
  std::optional<std::uint32_t> table_index(std::string_view table) noexcept {
    std::uint32_t known = tables_known.load(std::memory_order_acquire);
    for (std::uint32_t i = 0; i < known; ++i) {
      if (table_names[i] == table && table_live(i)) return i;
    }
    if (!refresh_tables()) return std::nullopt;
    const std::uint32_t now = tables_known.load(std::memory_order_acquire);
    for (std::uint32_t i = known; i < now; ++i) {
      if (table_names[i] == table && table_live(i)) return i;
    }
    return std::nullopt;
  }
  /// Names of the live tables, in the order they were created.
  std::vector<std::string> live_tables() noexcept;

  error_info unknown_table(std::string_view table) const;
  error_info inherited() const;
  error_info unreadable(std::uint64_t ref) const;
  error_info corrupt(std::uint64_t ref, std::string_view what) const;

  /// Maps segment `n` on first use; nullptr if it cannot be mapped. Never
  /// inlined: once per segment, not part of any read's common path.
  [[gnu::noinline]] const std::byte* map_segment(std::uint32_t n) noexcept;

  /// The bytes of the segments the store header lists that this reader could
  /// map (mapping them now if need be) that memory backs, as seen when last
  /// looked at; `look_again` looks now (one fstat per segment). What the
  /// store really holds, whatever its header claims and however long a
  /// sparse segment is made: bounds a walk over shared structures (a
  /// B+tree's, btree.cpp). Blocks are written only into backed pages, so a
  /// fresh look counts every block published before it.
  std::uint64_t backed_bytes(bool look_again) noexcept {
    const std::uint64_t count = std::min<std::uint64_t>(
        header->segment_count.load(std::memory_order_acquire), max_segments);
    std::uint64_t total = 0;  // at most 64 segments of 2^48 bytes: no overflow
    for (std::uint32_t i = 0; i < count; ++i) {
      if (bases[i].load(std::memory_order_acquire) != nullptr || map_segment(i) != nullptr) {
        if (look_again) look_at_backing(i);
        total += backed[i].load(std::memory_order_relaxed);
      }
    }
    return total;
  }
  /// Updates `backed[n]` from segment `n`'s allocated blocks (it is mapped).
  [[gnu::noinline]] void look_at_backing(std::uint32_t n) noexcept;

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

  /// The entry block at `ref` if its header describes a block that fits in
  /// its segment, with key, shape and value inside it; else nullptr. The
  /// layout is the block's first byte: anything but the two known ones is damage.
  const entry_block* entry(std::uint64_t ref) noexcept {
    // Blocks are granule-aligned: a reference that is not (from a damaged
    // chain or leaf) is never read through, a misaligned access being undefined.
    if ((ref & (block_granule - 1)) != 0) return nullptr;
    const std::byte* p = resolve(ref, sizeof(compact_entry));
    if (p == nullptr) return nullptr;
    const auto* b = reinterpret_cast<const entry_block*>(p);
    switch (layout_of(b)) {
      case entry_layout::compact:
        return resolve(ref, compact_bytes(compact_word(b))) != nullptr ? b : nullptr;
      case entry_layout::full:
        break;
      default:
        return nullptr;
    }
    const auto* e = reinterpret_cast<const entry_header*>(resolve(ref, sizeof(entry_header)));
    if (e == nullptr || e->block_bytes < sizeof(entry_header) ||
        resolve(ref, e->block_bytes) == nullptr || e->value_offset > e->block_bytes ||
        e->value_bytes > e->block_bytes - e->value_offset ||
        shape_offset(e->key_bytes) + e->ndim * 8ull > e->value_offset ||
        (e->format != static_cast<std::uint8_t>(value_format::encoded) &&
         e->format != static_cast<std::uint8_t>(value_format::ndarray))) {
      return nullptr;
    }
    return b;
  }

  /// The index block at `ref` if its header and slots fit in its segment; else nullptr.
  const index_header* index_at(std::uint64_t ref) noexcept {
    if ((ref & (block_granule - 1)) != 0) return nullptr;
    const auto* ix = reinterpret_cast<const index_header*>(resolve(ref, sizeof(index_header)));
    if (ix == nullptr || ix->capacity == 0 || (ix->capacity & (ix->capacity - 1)) != 0 ||
        ix->capacity > max_index_capacity || resolve(ref, index_bytes(ix->capacity)) == nullptr) {
      return nullptr;
    }
    return ix;
  }

  /// The current index of `table`; call inside an epoch.
  const index_header* index(std::uint32_t table) noexcept {
    const std::uint64_t root = header->tables[table].root.load(std::memory_order_seq_cst);
    if (root == null_ref) return nullptr;  // dropped meanwhile
    return index_at(root);
  }

  /// The newest block of `key` in array `ix` alone, comparing keys only at
  /// slots >= `from` (those below are frozen: layout.hpp).
  probed probe(const index_header* ix, std::uint64_t hash, std::string_view key,
               std::uint64_t from) noexcept {
    const auto* slots_ = reinterpret_cast<const shared_u64*>(ix + 1);
    const std::uint64_t mask = ix->capacity - 1;
    for (std::uint64_t i = hash & mask, n = 0; n <= mask; i = (i + 1) & mask, ++n) {
      const std::uint64_t s = slots_[i].load(std::memory_order_seq_cst);
      if (s == null_ref) break;
      if (!slot_has_entry(s) || !slot_tag_matches(s, hash) || i < from) continue;
      const std::uint64_t r = slot_ref(s);
      // Header, key and a small value fill the block's first cache lines
      // (a compact block may straddle two): fetch them together rather than
      // one miss after another.
      if (const std::byte* p = resolve(r, sizeof(compact_entry))) {
        __builtin_prefetch(p + 64);
        __builtin_prefetch(p + 128);
      }
      const entry_block* e = entry(r);
      if (e == nullptr) return probed{r, nullptr};
      // The tag matched: the key decides (a compact block keeps no hash).
      if (key_of(e) == key) return probed{r, e};
    }
    return probed{};
  }

  /// The newest block of `key` in the table whose current index is `ix`, in
  /// the array it is moving from too while it grows; inside an epoch.
  probed find(const index_header* ix, std::uint64_t hash, std::string_view key) noexcept {
    // Before the probe: a null `old` read later could follow a move we missed.
    const std::uint64_t old = ix->old.load(std::memory_order_seq_cst);
    const probed found = probe(ix, hash, key, 0);
    if (found.e != nullptr || found.unreadable() || old == null_ref) [[likely]]
      return found;
    return find_moving(ix, old, hash, key);
  }
  /// `find`'s second half while `ix` grows out of `old` (index.cpp).
  probed find_moving(const index_header* ix, std::uint64_t old, std::uint64_t hash,
                     std::string_view key) noexcept;

  /// The blocks of a bag chain, oldest first (one block for a set). Each
  /// block must count one value fewer than the one before it, down to 1, so
  /// a chain that loops or lies about its length is an error.
  result<std::vector<located>> chain(located head);
  /// The first (oldest) value's block of the key found at `head`, in O(1):
  /// the head references it (`entry_header::first`).
  result<located> first(located head);

  /// Pins `epoch` for a view that found no free hold.
  void pin_overflow(std::uint64_t epoch);
  void unpin_overflow(std::uint64_t epoch) noexcept;
};

}  // namespace slither::shm::detail
