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
// Punching is slow (tens of milliseconds for 256 MiB) and is not the
// writer's to wait for: `free` only notes what to punch, `trim` (at each
// reclaim) takes those runs out of the free lists and hands them to a
// background thread at idle priority (trimmer.hpp), and they come back as
// free holes when it is done. A freed block of `linger_min_bytes` or more
// keeps its pages for `linger_time` first (at most `linger_max_bytes` of
// such blocks at once): a large value replaced again and again then reuses
// the pages of the one before instead of punching them and having the next
// writer fault in (and the kernel zero) as many fresh ones.
//
// Blocks are only given back through `free`, which the writer calls for
// blocks readers never saw or once epoch reclamation says no reader can see
// them (epoch.cpp).
#pragma once

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "layout.hpp"
#include "segment.hpp"
#include "slither/core/error.hpp"
#include "trimmer.hpp"

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
  /// A freed block this large keeps its pages for `linger_time` before they
  /// are handed back, in case a block of its size is asked for again.
  static constexpr std::uint64_t linger_min_bytes = std::uint64_t{1} << 20;
  static constexpr std::chrono::milliseconds linger_time{2000};
  /// At most this much lingers at once; past it the oldest is handed back.
  static constexpr std::uint64_t linger_max_bytes = std::uint64_t{1} << 30;

  using clock = std::chrono::steady_clock;

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
    return holes_.empty() ? result<void>{} : reserve(at, bytes, at + bytes);
  }
  /// Pages of an `allocate_unreserved` block that another process was to
  /// back itself (a client faulting a large write's pages in,
  /// MADV_POPULATE_WRITE), in part, whole or not at all: those it backed
  /// stop counting as holes, so that the block's free hands them back; those
  /// it did not stay holes, so that whatever reuses them reserves them
  /// first. Only pages counted as holes are looked at (mincore, which answers
  /// from the page cache): none for a value written over pages a freed one
  /// left. Page-aligned [at, at + bytes).
  void note_backed(std::uint64_t at, std::uint64_t bytes);
  /// Whether any page of [at, at + bytes) counts as a hole.
  bool has_holes(std::uint64_t at, std::uint64_t bytes) const;
  /// `note_backed`, then reserves (fallocate) the pages the other process
  /// left holes (it skipped them, or died), so that no reader of the block
  /// can fault for lack of space. Errors: `no_space` (the pages not reserved
  /// still count as holes).
  result<void> adopt_backed(std::uint64_t at, std::uint64_t bytes);
  /// Makes the block (`ref`, `bytes` as `allocate` returned it) free,
  /// merged with free neighbours (or, if small, kept whole for the next
  /// request of its size: see `quick_max_bytes`); its pages are handed
  /// back by a later `trim`.
  void free(std::uint64_t ref, std::uint64_t bytes);
  /// Hands the pages of free runs noted by `free` to the background trimmer:
  /// those due by `now` (a lingering block's after `linger_time`), the
  /// oldest lingering ones past `linger_max_bytes`, or, with `everything`,
  /// all. Takes back what the trimmer has finished.
  void trim(clock::time_point now, bool everything = false);
  /// `trim` of everything, then waits until the trimmer is done (tests, and
  /// callers that want /dev/shm's figure to be final).
  void trim_now();
  /// Takes back the runs the trimmer has finished (as free holes); never blocks.
  void collect_trimmed();

  /// Freed blocks up to this size are kept whole, by size, for the next
  /// request of that size (a B+tree node or an entry replaced by every
  /// write): a push and a pop instead of four searches of the extent trees.
  /// At most `quick_max_total` bytes (and 1/256 of the resident bytes) are
  /// kept so; beyond, blocks are merged as usual, and a request larger
  /// than any quick block, or that only the largest extent fits, merges
  /// them all first, so free space still coalesces when sizes drift.
  static constexpr std::uint64_t quick_max_bytes = std::uint64_t{16} << 10;
  static constexpr std::uint64_t quick_max_total = std::uint64_t{4} << 20;

  std::byte* ptr(std::uint64_t ref) noexcept {
    return segments_[ref_segment(ref)].base + ref_offset(ref);
  }
  const std::vector<writer_segment>& segments() const noexcept { return segments_; }
  /// Names of the segments this allocator created.
  const std::vector<std::string>& created() const noexcept { return created_; }
  /// Stops the trimmer and unmaps every segment (the objects stay until unlinked).
  void unmap() noexcept {
    trimmer_.reset();
    segments_.clear();
  }

  /// Bytes in free extents (reusable now, or once the trimmer gives them back).
  std::uint64_t free_bytes() const noexcept { return free_total_; }
  /// Of `free_bytes`, those out of the free lists while the trimmer punches them.
  std::uint64_t trimming_bytes() const noexcept { return trimming_total_; }
  /// Bytes of the segments backed by memory: their size minus the holes.
  std::uint64_t resident_bytes() const noexcept;
  /// The largest free extent (for tests and stats).
  std::uint64_t largest_free() const noexcept {
    return free_by_size_.empty() ? 0 : free_by_size_.rbegin()->first;
  }

 private:
  result<block> allocate(std::uint64_t bytes, bool reserve_pages);
  /// Reserves the holes' pages around [at, at + bytes) again, and beyond it
  /// up to `limit` (the end of the free extent it is taken from).
  result<void> reserve(std::uint64_t at, std::uint64_t bytes, std::uint64_t limit);
  /// Takes the whole free pages of [from, to) not yet holes out of the free
  /// lists and submits them to the trimmer.
  void quarantine(std::uint64_t from, std::uint64_t to);
  /// Puts [start, start + bytes) in the free lists, merged with its
  /// neighbours; returns the merged extent.
  std::pair<std::uint64_t, std::uint64_t> insert_free(std::uint64_t start, std::uint64_t bytes);
  void add_hole(std::uint64_t start, std::uint64_t bytes);
  /// [at, at + bytes) no longer counts as holes.
  void forget_holes(std::uint64_t at, std::uint64_t bytes);
  void add_free(std::uint64_t start, std::uint64_t bytes);
  /// Gives the quick lists' blocks to the extent trees (`release`).
  void drain_quick();
  /// Puts a free block (counted in free_total_ already) into the extent
  /// trees, merged with its free neighbours, and notes its pages for `trim`.
  void release(std::uint64_t ref, std::uint64_t bytes);

  /// Pages of a freed extent to hand back once `due`.
  struct trim_request {
    std::uint64_t from, to;
    clock::time_point due;
    bool lingers;
  };
  /// A run out of the free lists while the trimmer punches its slices.
  struct trimming {
    std::uint64_t start, bytes, slices;
  };

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
  // Whole free blocks by size class (`quick_max_bytes`); their bytes count
  // in free_total_ too. Vectors keep their capacity: no allocation per use.
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> quick_;
  std::uint64_t quick_total_ = 0;
  std::uint64_t free_total_ = 0;
  std::uint64_t hole_total_ = 0;
  std::uint64_t segment_total_ = 0;
  std::vector<trim_request> trim_requests_;     // in the order of their frees
  std::map<std::uint64_t, trimming> trimming_;  // by trim_job::tag
  std::uint64_t trimming_total_ = 0;
  std::uint64_t next_tag_ = 0;
  // Declared after the segments, whose descriptors its jobs use: it goes first.
  std::unique_ptr<trimmer> trimmer_;
};

}  // namespace slither::shm::detail
