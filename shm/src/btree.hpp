// The B+tree of an ordered table (layout.hpp): its node format, the checks a
// reader applies to the nodes and slots it reads, and the reader's cursor. The
// writer's half (rebuilding the nodes a batch of changes touches) is in
// btree_write.cpp; the reader's (cursor, scan) in btree.cpp.
//
// A node is one immutable block: a btree_node header, `count` btree_slots,
// then the slots' keys. A leaf (level 0) slot references the entry block of
// its key; an internal slot references a child one level down, and its key is
// the smallest key of that child's subtree. Keys are sorted bytewise within a
// node and across its children. Every node but the root holds at least
// `btree_min_fill` slots, or `btree_node_target / 4` bytes, after a change
// (an underflowing node merges with a neighbour).
//
// Inline values: a leaf slot whose value is small (encoded, at most
// `btree_inline_max` bytes) carries a copy of it, so that a scan reads leaves
// only, never the entry blocks. Such a slot's `ref` is not a reference but
// `inline_slot(offset, size)`: bit 0 set (entry blocks are 64-byte aligned,
// so it is otherwise 0), the value's size in bits 1..31 and, in the high 32
// bits, the offset in the node of its record: the entry's version (8 bytes,
// unaligned) then the value's encoded bytes. A node is laid out header,
// slots, keys (packed, in slot order), records (in slot order), so a seek's
// binary search reads a few packed lines and a scan one sequential run. The
// entry block stays what the hash index and views use; the copy is immutable
// like the node that holds it.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

#include "layout.hpp"
#include "reader_core.hpp"
#include "slither/core/error.hpp"
#include "slither/core/function_ref.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::detail {

inline constexpr std::uint32_t btree_magic = 0x324e5442;  // "BTN2": leaves with inline values
inline constexpr std::uint32_t btree_max_fanout = 64;
inline constexpr std::uint32_t btree_min_fill = btree_max_fanout / 4;
/// Levels a reader follows at most: 64^24 keys, far beyond any store; a
/// corrupt tree deeper than this is an error, never a long walk.
inline constexpr std::uint32_t btree_max_depth = 24;
/// Largest value (its encoded bytes) a leaf slot carries inline.
inline constexpr std::uint64_t btree_inline_max = 256;
/// Set in a leaf slot's `ref` when it describes an inline record.
inline constexpr std::uint64_t btree_inline_flag = 1;
/// An inline record's header: the version.
inline constexpr std::uint64_t btree_inline_header = 8;

constexpr std::uint64_t inline_slot(std::uint64_t offset, std::uint64_t size) noexcept {
  return offset << 32 | size << 1 | btree_inline_flag;
}
constexpr std::uint64_t inline_offset(std::uint64_t ref) noexcept {
  return ref >> 32;
}
constexpr std::uint64_t inline_size(std::uint64_t ref) noexcept {
  return (ref & 0xffffffffu) >> 1;
}
/// The size a node is split to stay under (slots, keys and inline records),
/// unless it holds fewer than two slots: a node copied by every change to
/// it stays cheap to copy, as a page of LMDB does.
inline constexpr std::uint64_t btree_node_target = 8192;

struct btree_node {
  std::uint32_t magic;
  std::uint16_t level;  ///< 0 for a leaf; a child is always one level down
  std::uint16_t count;  ///< slots, 1..btree_max_fanout
  std::uint64_t block_bytes;
  /// In the root: keys in the tree, which bounds a reader's walk (a corrupt
  /// tree whose nodes share children ends in an error, not a long walk).
  std::uint64_t entries;
  /// Where the keys end (and inline records start): a hint for prefetching
  /// the slots and keys together, never trusted as a bound.
  std::uint64_t keys_end;
  std::uint64_t reserved[4];
};
static_assert(std::is_standard_layout_v<btree_node> && sizeof(btree_node) == 64);

struct btree_slot {
  /// Leaf: the entry block, with `btree_inline_flag` if an inline record
  /// follows the key; internal: the child node.
  std::uint64_t ref;
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

/// A node as a reader checked it (`tree_node`): its header's sizes, read
/// once, which each slot's key and inline record are checked against when
/// the slot is used. A seek reads a few slots of each node it passes, so it
/// checks those, not all of them (a node's full check cost more than the
/// rest of a seek).
///
/// Its fields have no initializers: a cursor holds `btree_max_depth` of
/// them and fills one per level it reaches (zeroing them all cost a tenth of
/// a short scan).
struct checked_node {
  const btree_node* node;
  std::uint64_t bytes;    ///< the block's size
  std::uint32_t count;    ///< slots, 1..btree_max_fanout
  std::uint32_t keys_at;  ///< where the slots end: keys and records lie past it
  std::uint32_t level;

  const btree_slot* slots() const noexcept { return slots_of(node); }
  /// Whether `len` bytes at `at` lie inside the node, past its slots.
  bool inside(std::uint64_t at, std::uint64_t len) const noexcept {
    return at >= keys_at && at <= bytes && len <= bytes - at;
  }
  /// Slot `i`'s key (i < count), if it lies inside the node.
  bool key(unsigned i, std::string_view& out) const noexcept {
    const btree_slot& s = slots()[i];
    const std::uint64_t at = s.key_offset, len = s.key_bytes;
    out = {reinterpret_cast<const char*>(node) + at, len};
    return inside(at, len);
  }
};

/// Whether the node at `ref` has the header of a node of `level` (magic,
/// level, count, size) and its block lies in mapped memory; if so `out`
/// describes it. Its slots are checked as they are used (`checked_node`).
/// Asks the cache for its slots and keys first.
bool tree_node(reader_core& c, std::uint64_t ref, unsigned level, checked_node& out) noexcept;

/// A position in a B+tree, read inside one epoch: the nodes from the root down
/// to a leaf and the slot taken in each. A scan walks the slots of `leaf()`
/// itself and moves to the next leaf when it has read them all. A move
/// returns whether it found a key; one that meets a corrupt or unreadable
/// node returns false and leaves the error in `error()`. A tree whose root
/// is null is empty.
class tree_cursor {
 public:
  explicit tree_cursor(reader_core& c) noexcept : c_(c) {}

  /// The first key >= `key` (the first key for an empty `key`).
  bool seek_ge(std::uint64_t root, std::string_view key);
  /// The last key < `key` (the last key for an empty `key`).
  bool seek_lt(std::uint64_t root, std::string_view key);
  /// The first slot of the next leaf.
  bool next_leaf();
  /// The last slot of the previous leaf.
  bool prev_leaf();
  /// Why the last move returned false, if not for lack of keys.
  std::optional<error_info>& error() noexcept { return error_; }
  /// The current leaf, its reference and the slot in it.
  const checked_node& leaf() const noexcept { return path_[depth_ - 1].node; }
  std::uint64_t leaf_ref() const noexcept { return path_[depth_ - 1].ref; }
  unsigned slot() const noexcept { return path_[depth_ - 1].slot; }
  /// Asks the cache for the first lines of the leaf after (before, if
  /// `reverse`) the current one, so that moving to it does not wait.
  void prefetch_neighbour(bool reverse) noexcept;

 private:
  struct frame {
    checked_node node;
    std::uint64_t ref;
    unsigned slot;
  };
  /// Loads the root (its level bounds the walk) into path_[0].
  bool start(std::uint64_t root);
  /// Pushes the child of the last frame's chosen slot, at `slot` (or at its
  /// last slot if `last`).
  bool push_child(bool last);
  /// Descends from the last frame's chosen slot down to a leaf, taking the
  /// first (or last) slot of each node below.
  bool descend(bool last);
  /// The first slot of `f`'s node whose key is >= `key` (> `key` if `after`), or
  /// its count if none; false (an error recorded) if a key it compares lies
  /// outside the node.
  bool search(const frame& f, std::string_view key, bool after, unsigned& pos);
  /// Moves to the leaf after (or before) the current one.
  bool step_leaf(bool back);
  /// Counts a leaf's keys against the root's: a walk never reads more.
  bool charge(const checked_node& leaf);
  /// Records that the node at `ref` is not one (returns false).
  bool bad(std::uint64_t ref);
  /// Records that the node at `ref` has a slot pointing outside it (returns false).
  bool bad_slot(std::uint64_t ref);
  bool failed(error_info e);

  reader_core& c_;
  frame path_[btree_max_depth];
  unsigned depth_ = 0;
  std::uint64_t steps_left_ = 0;
  std::uint64_t root_ = null_ref;
  std::optional<error_info> error_;
};

/// Calls `visit` for each entry of `range` in the tree at `root` (null: an
/// empty tree), in order, until it returns false; inside an epoch. With
/// `values` false only keys are read: `bytes`, `version` and `entry` stay
/// empty, and neither inline records nor entry blocks are touched. An inline
/// value comes with a null `entry`; any other with its checked entry block.
result<void> scan_tree(reader_core& c, std::uint64_t root, const reader::key_range& range,
                       bool values, function_ref<bool(const reader::scanned&)> visit);

}  // namespace slither::shm::detail
