// The writer's allocator: best fit over free extents, coalesced with their
// neighbours, across every size; new segments sized by the request that
// needs them; free pages handed back to the system.
//
// Its metadata is private to the writer (the only process that allocates, and
// a new writer never adopts an old store's contents): the free extents by
// address (to coalesce) and by size (to fit), and the holes, page ranges of
// free extents whose memory was handed back.
//
// Freed space is not unlinked: readers map segments lazily and keep them
// mapped, so a segment number re-created after an unlink could alias a stale
// mapping. Instead the pages of large free extents are punched out of their
// segment (FALLOC_FL_PUNCH_HOLE): /dev/shm gets the memory back, every
// mapping stays valid (no reader reads free space), and an empty trailing
// segment costs one page. Pages are reserved again (fallocate) before a hole
// is reused, so a store into the segment never faults for lack of space.
//
// Blocks are only given back through `free`, which the writer calls for
// blocks readers never saw or once epoch reclamation says no reader can see
// them (epoch.cpp).
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "layout.hpp"
#include "segment.hpp"
#include "slither/core/error.hpp"

namespace slither::shm::detail {

/// The size a request of `bytes` is rounded to: 8-byte steps (the block
/// granule) up to 4 KiB, so a small entry wastes at most 7 bytes, then 64
/// steps per power of two (at most 1.6% more than asked: free extents are
/// split and merged, so classes need not be coarse for reuse).
/// Deterministic, so a block's size can be recomputed from what was asked
/// (index blocks and compact entries are freed that way).
inline std::uint64_t size_class(std::uint64_t bytes) noexcept {
  const std::uint64_t n =
      align_up(std::max<std::uint64_t>(bytes, 2 * block_granule), block_granule);
  if (n <= 4096) return n;
  return align_up(n, std::bit_floor(n) / 64);
}

/// A data segment as its writer maps it (read-write).
struct writer_segment {
  unique_fd fd;  // to reserve and punch pages
  mapping map;
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
};

/// An allocated block: its reference and its size (`size_class` of the request).
struct block {
  std::uint64_t ref;
  std::uint64_t bytes;
};

/// Where a store's segments come from and where its freed blocks go.
class allocator {
 public:
  /// Free runs of at least this many whole pages are handed back to the system.
  static constexpr std::uint64_t punch_min_bytes = std::uint64_t{64} << 10;
  /// Pages are reserved again in runs of at least this much, so that a run
  /// of small allocations out of a hole makes one system call, not one each.
  static constexpr std::uint64_t reserve_chunk_bytes = std::uint64_t{256} << 10;
  /// A new segment is at least half the store's size so far, at most this
  /// much (unless a request needs more): its unused pages are holes, so the
  /// size only bounds how many segments a store needs.
  static constexpr std::uint64_t max_growth_bytes = std::uint64_t{1} << 30;

  /// What new segments are named after and stamped with.
  void init(std::string ns, std::string name, std::string label, std::uint64_t incarnation,
            std::uint64_t initial_segment_bytes);
  /// Once segment 0 holds the store header, new segments are announced in it.
  void announce_in(store_header* header) noexcept { header_ = header; }

  /// Adds a segment with room for at least `payload_bytes` (whose pages are
  /// reserved unless `reserve_payload` is false).
  result<void> add_segment(std::uint64_t payload_bytes, bool reserve_payload = true);
  /// A block of `size_class(bytes)` bytes: the smallest free extent that
  /// fits, else a new segment. Errors: `no_space`.
  result<block> allocate(std::uint64_t bytes) { return allocate(bytes, true); }
  /// A block like `allocate`'s whose pages are not reserved yet: each part
  /// must go through `reserve_part` before it is touched. For a large block
  /// made ready a little at a time (a growing index's next array), so that
  /// reserving it is never one long pause.
  result<block> allocate_unreserved(std::uint64_t bytes) { return allocate(bytes, false); }
  /// Reserves the pages of [at, at + bytes), part of an `allocate_unreserved` block.
  result<void> reserve_part(std::uint64_t at, std::uint64_t bytes) {
    return holes_.empty() ? result<void>{} : reserve(at, bytes);
  }
  /// Makes the block (`ref`, `bytes` as `allocate` returned it) free,
  /// merged with free neighbours.
  void free(std::uint64_t ref, std::uint64_t bytes);

  std::byte* ptr(std::uint64_t ref) noexcept {
    return segments_[ref_segment(ref)].base + ref_offset(ref);
  }
  const std::vector<writer_segment>& segments() const noexcept { return segments_; }
  /// Names of the segments this allocator created.
  const std::vector<std::string>& created() const noexcept { return created_; }
  /// Unmaps every segment (the objects stay until unlinked).
  void unmap() noexcept { segments_.clear(); }

  /// Bytes in free extents (reusable now).
  std::uint64_t free_bytes() const noexcept { return free_total_; }
  /// Bytes of the segments backed by memory: their size minus the holes.
  std::uint64_t resident_bytes() const noexcept;
  /// The largest free extent (for tests and stats).
  std::uint64_t largest_free() const noexcept {
    return free_by_size_.empty() ? 0 : free_by_size_.rbegin()->first;
  }

 private:
  result<block> allocate(std::uint64_t bytes, bool reserve_pages);
  /// Reserves the holes' pages around [at, at + bytes) again.
  result<void> reserve(std::uint64_t at, std::uint64_t bytes);
  /// Hands back the whole free pages of [start, start + bytes), part of a free extent.
  void punch(std::uint64_t start, std::uint64_t bytes);
  void add_hole(std::uint64_t start, std::uint64_t bytes);
  void add_free(std::uint64_t start, std::uint64_t bytes);

  std::string ns_, name_, label_;
  std::uint64_t incarnation_ = 0;
  std::uint64_t initial_segment_bytes_ = 0;
  bool fault_in_huge_ = false;  // shm_huge_on_advice(): reserve through the mapping first
  store_header* header_ = nullptr;
  std::vector<writer_segment> segments_;
  std::vector<std::string> created_;
  std::map<std::uint64_t, std::uint64_t> free_by_ref_;              // ref -> bytes
  std::set<std::pair<std::uint64_t, std::uint64_t>> free_by_size_;  // (bytes, ref)
  std::map<std::uint64_t, std::uint64_t> holes_;                    // ref -> bytes, page-aligned
  std::uint64_t free_total_ = 0;
  std::uint64_t hole_total_ = 0;
  std::uint64_t segment_total_ = 0;
};

}  // namespace slither::shm::detail
