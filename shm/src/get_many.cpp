// Batched lookups with overlapped misses (get_many.hpp).
#include "get_many.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include "block.hpp"

namespace slither::shm::detail {

namespace {

/// Slots past the home slot that the prefetch stage looks at for a
/// candidate: longer probes are rare, and `find` walks them all anyway.
constexpr std::uint64_t prefetch_probe = 8;

/// Asks for the lines of the first block in `hash`'s probe sequence whose
/// tag matches, the block `find` will compare the key with first. Only a
/// hint: nothing read here is trusted, `find` reads it all again.
void prefetch_candidate(reader_core& c, const shared_u64* slots, std::uint64_t mask,
                        std::uint64_t hash) noexcept {
  for (std::uint64_t i = hash & mask, n = 0; n <= mask && n < prefetch_probe;
       i = (i + 1) & mask, ++n) {
    const std::uint64_t s = slots[i].load(std::memory_order_relaxed);
    if (s == null_ref) return;
    if (!slot_has_entry(s) || !slot_tag_matches(s, hash)) continue;
    if (const std::byte* p = c.resolve(slot_ref(s), sizeof(compact_entry))) {
      // Header, key and a small value; a block may straddle two lines.
      __builtin_prefetch(p);
      __builtin_prefetch(p + 64);
    }
    return;
  }
}

}  // namespace

result<void> find_many(reader_core& c, const index_header* ix,
                       std::span<const std::string_view> keys,
                       function_ref<bool(std::size_t, located)> visit) {
  const auto* slots = reinterpret_cast<const shared_u64*>(ix + 1);
  const std::uint64_t mask = ix->capacity - 1;
  std::array<std::uint64_t, find_many_group> hashes{};
  std::array<located, find_many_group> found{};
  for (std::size_t base = 0; base < keys.size(); base += find_many_group) {
    const std::size_t n = std::min(find_many_group, keys.size() - base);
    for (std::size_t i = 0; i < n; ++i) {
      hashes[i] = hash_key(c.hash_seed, keys[base + i]);
      __builtin_prefetch(&slots[hashes[i] & mask]);
    }
    for (std::size_t i = 0; i < n; ++i) prefetch_candidate(c, slots, mask, hashes[i]);
    // The lookups proper, on lines that are arriving or in cache by now. A
    // damaged block ends the batch once the keys before it are visited.
    std::optional<error_info> failed;
    std::size_t good = 0;
    for (; good < n; ++good) {
      const probed f = c.find(ix, hashes[good], keys[base + good]);
      if (f.unreadable()) {
        failed = c.unreadable(f.ref);
        break;
      }
      found[good] = f.at();
      // A bag's head references its oldest block: one more miss to overlap.
      if (f.e != nullptr && next_of(f.e) != null_ref) {
        if (const std::byte* p = c.resolve(first_of(f.e), sizeof(compact_entry))) {
          __builtin_prefetch(p);
          __builtin_prefetch(p + 64);
        }
      }
    }
    for (std::size_t i = 0; i < good; ++i) {
      located at = found[i];
      if (at.e != nullptr) {
        auto first = c.first(at);
        if (!first) return std::move(first).error();
        at = *first;
      }
      if (!visit(base + i, at)) return {};
    }
    if (failed) return std::move(*failed);
  }
  return {};
}

}  // namespace slither::shm::detail
