// The B+tree of an ordered table (layout.hpp): its node format, the checks a
// reader applies to every node it visits, and the reader's cursor. The
// writer's half (copying the path a write changes) is in btree.cpp.
//
// A node is one immutable block: a btree_node header, `count` btree_slots,
// then the slots' keys. A leaf (level 0) slot references the entry block of
// its key; an internal slot references a child one level down, and its key is
// the smallest key of that child's subtree. Keys are sorted bytewise within a
// node and across its children. Every node but the root holds at least
// `btree_min_fill` slots after a delete (underflow merges with a neighbour).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "layout.hpp"
#include "reader_core.hpp"
#include "slither/core/error.hpp"

namespace slither::shm::detail {

inline constexpr std::uint32_t btree_magic = 0x314e5442;  // "BTN1"
inline constexpr std::uint32_t btree_max_fanout = 64;
inline constexpr std::uint32_t btree_min_fill = btree_max_fanout / 4;
/// Levels a reader follows at most: 64^24 keys, far beyond any store; a
/// corrupt tree deeper than this is an error, never a long walk.
inline constexpr std::uint32_t btree_max_depth = 24;

struct btree_node {
  std::uint32_t magic;
  std::uint16_t level;  ///< 0 for a leaf; a child is always one level down
  std::uint16_t count;  ///< slots, 1..btree_max_fanout
  std::uint64_t block_bytes;
  /// In the root: keys in the tree, which bounds a reader's walk (a corrupt
  /// tree whose nodes share children ends in an error, not a long walk).
  std::uint64_t entries;
  std::uint64_t reserved[5];
};
static_assert(std::is_standard_layout_v<btree_node> && sizeof(btree_node) == 64);

struct btree_slot {
  std::uint64_t ref;         ///< leaf: entry block; internal: child node
  std::uint32_t key_offset;  ///< from the node's start
  std::uint32_t key_bytes;
};
static_assert(std::is_standard_layout_v<btree_slot> && sizeof(btree_slot) == 16);

inline const btree_slot* slots_of(const btree_node* n) noexcept {
  return reinterpret_cast<const btree_slot*>(n + 1);
}

inline std::string_view slot_key(const btree_node* n, unsigned i) noexcept {
  const btree_slot& s = slots_of(n)[i];
  return {reinterpret_cast<const char*>(n) + s.key_offset, s.key_bytes};
}

/// The node at `ref` if it is a well-formed node of `level` (magic, count,
/// size, every key inside the block) in mapped memory; else nullptr.
const btree_node* tree_node(reader_core& c, std::uint64_t ref, unsigned level) noexcept;

/// A position in a B+tree, read inside one epoch: the nodes from the root down
/// to a leaf and the slot taken in each. A move returns whether it found a
/// key; one that meets a corrupt or unreadable node returns false and leaves
/// the error in `error()`. A tree whose root is null is empty.
class tree_cursor {
 public:
  explicit tree_cursor(reader_core& c) noexcept : c_(c) {}

  /// The first key >= `key` (the first key for an empty `key`).
  bool seek_ge(std::uint64_t root, std::string_view key);
  /// The last key < `key` (the last key for an empty `key`).
  bool seek_lt(std::uint64_t root, std::string_view key);
  /// The next key.
  bool next();
  /// The previous key.
  bool prev();
  /// Why the last move returned false, if not for lack of keys.
  std::optional<error_info>& error() noexcept { return error_; }

  std::string_view key() const noexcept { return slot_key(leaf(), path_[depth_ - 1].slot); }
  /// The entry block of the current key.
  std::uint64_t ref() const noexcept { return slots_of(leaf())[path_[depth_ - 1].slot].ref; }
  /// The entry block `ahead` keys on (back if `reverse`) in the current leaf,
  /// or null past its end: for prefetching.
  std::uint64_t ref_ahead(unsigned ahead, bool reverse) const noexcept {
    const frame& f = path_[depth_ - 1];
    if (reverse) return f.slot >= ahead ? slots_of(f.node)[f.slot - ahead].ref : null_ref;
    return f.slot + ahead < f.node->count ? slots_of(f.node)[f.slot + ahead].ref : null_ref;
  }

 private:
  struct frame {
    const btree_node* node;
    std::uint64_t ref;
    unsigned slot;
  };
  const btree_node* leaf() const noexcept { return path_[depth_ - 1].node; }
  /// Loads the root (its level bounds the walk) into path_[0].
  bool start(std::uint64_t root);
  /// Descends from the last frame's chosen slot down to a leaf, taking the
  /// first (or last) slot of each node below.
  bool descend(bool last);
  /// Records that the node at `ref` is not one (returns false).
  bool bad(std::uint64_t ref);
  bool failed(error_info e);

  reader_core& c_;
  frame path_[btree_max_depth];
  unsigned depth_ = 0;
  std::uint64_t steps_left_ = 0;
  std::uint64_t root_ = null_ref;
  std::optional<error_info> error_;
};

}  // namespace slither::shm::detail
