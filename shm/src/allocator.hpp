// The writer's allocator: blocks in size classes, from per-class free lists,
// else from a bump pointer at the end of the newest segment, else from a new
// segment (each at least twice as large as the one before).
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "layout.hpp"
#include "segment.hpp"
#include "slither/core/error.hpp"

namespace slither::shm::detail {

/// Blocks are allocated in size classes so freed blocks are reused exactly:
/// 64-byte steps up to 4 KiB, then 8 classes per power of two.
inline std::uint64_t size_class(std::uint64_t bytes) noexcept {
  const std::uint64_t n = align_up(std::max<std::uint64_t>(bytes, 64), 64);
  if (n <= 4096) return n;
  return align_up(n, std::bit_floor(n) / 8);
}

/// A data segment as its writer maps it (read-write).
struct writer_segment {
  mapping map;
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
  std::uint64_t bump = 0;  // next free offset
};

/// An allocated block: its reference and its size class.
struct block {
  std::uint64_t ref;
  std::uint64_t bytes;  // size class
};

/// Where a store's segments come from and where its freed blocks go. Freed
/// blocks are reused only for the same class (no coalescing); the tail of a
/// full segment is left unused.
class allocator {
 public:
  /// What new segments are named after and stamped with.
  void init(std::string ns, std::string name, std::string label, std::uint64_t incarnation,
            std::uint64_t initial_segment_bytes);
  /// Once segment 0 holds the store header, new segments are announced in it.
  void announce_in(store_header* header) noexcept { header_ = header; }

  /// Adds a segment with room for at least `payload_bytes`.
  result<void> add_segment(std::uint64_t payload_bytes);
  /// A block of at least `bytes` bytes. Inline: a batch of puts allocates once per entry.
  result<block> allocate(std::uint64_t bytes) {
    const std::uint64_t cls = size_class(bytes);
    if (auto it = free_lists_.find(cls); it != free_lists_.end() && !it->second.empty()) {
      const std::uint64_t ref = it->second.back();
      it->second.pop_back();
      return block{ref, cls};
    }
    if (segments_.back().bytes - segments_.back().bump < cls) {
      if (auto r = add_segment(cls); !r) return std::move(r).error();
    }
    writer_segment& seg = segments_.back();
    const std::uint64_t ref = make_ref(static_cast<std::uint32_t>(segments_.size() - 1), seg.bump);
    seg.bump += cls;
    return block{ref, cls};
  }
  /// Makes a block of class `bytes` available again.
  void free(std::uint64_t ref, std::uint64_t bytes) { free_lists_[bytes].push_back(ref); }

  std::byte* ptr(std::uint64_t ref) noexcept {
    return segments_[ref_segment(ref)].base + ref_offset(ref);
  }
  const std::vector<writer_segment>& segments() const noexcept { return segments_; }
  /// Names of the segments this allocator created.
  const std::vector<std::string>& created() const noexcept { return created_; }
  /// Unmaps every segment (the objects stay until unlinked).
  void unmap() noexcept { segments_.clear(); }

 private:
  std::string ns_, name_, label_;
  std::uint64_t incarnation_ = 0;
  std::uint64_t initial_segment_bytes_ = 0;
  store_header* header_ = nullptr;
  std::vector<writer_segment> segments_;
  std::vector<std::string> created_;
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> free_lists_;
};

}  // namespace slither::shm::detail
