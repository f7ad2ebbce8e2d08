// The reader's half of the ordered tables' B+tree (btree.hpp): the checked
// cursor and the range scan. The writer's half is in btree_write.cpp.
#include "btree.hpp"

#include <algorithm>
#include <cstring>

namespace slither::shm::detail {

// ---------------------------------------------------------------------------
// Reader side

namespace {
error_info slot_outside(reader_core& c, std::uint64_t ref) {
  return c.corrupt(ref, "a B+tree node's slot points outside the node");
}
}  // namespace

bool tree_node(reader_core& c, std::uint64_t ref, unsigned level, checked_node& out) noexcept {
  // Blocks are `block_granule`-aligned: any other reference (an inline
  // slot's word in an internal node among them) is not a node.
  if ((ref & (block_granule - 1)) != 0) return false;
  const auto* n = reinterpret_cast<const btree_node*>(c.resolve(ref, sizeof(btree_node)));
  if (n == nullptr) return false;
  const std::uint32_t magic = n->magic, count = n->count;
  const std::uint64_t bytes = n->block_bytes;
  if (magic != btree_magic || n->level != level || count == 0 || count > btree_max_fanout) {
    return false;
  }
  const auto keys_at =
      static_cast<std::uint32_t>(sizeof(btree_node) + std::uint64_t{count} * sizeof(btree_slot));
  if (bytes < keys_at || c.resolve(ref, bytes) == nullptr) return false;
  // Slots and keys at once, not one miss per step of a binary search.
  const auto* p = reinterpret_cast<const char*>(n);
  const std::uint64_t hint = std::min({n->keys_end, bytes, std::uint64_t{4096}});
  for (std::uint64_t at = 64; at < hint; at += 64) __builtin_prefetch(p + at);
  // Field by field: a cursor reads them back one by one, and a copied
  // struct (one wide load over several narrow stores) would stall store forwarding.
  out.node = n;
  out.bytes = bytes;
  out.count = count;
  out.keys_at = keys_at;
  out.level = level;
  return true;
}

bool tree_cursor::failed(error_info e) {
  error_ = std::move(e);
  depth_ = 0;
  return false;
}

bool tree_cursor::bad(std::uint64_t ref) {
  return failed(c_.corrupt(ref, "not a B+tree node where the tree expects one"));
}

bool tree_cursor::bad_slot(std::uint64_t ref) {
  return failed(slot_outside(c_, ref));
}

bool tree_cursor::start(std::uint64_t root) {
  depth_ = 0;
  root_ = root;
  if (root == null_ref) return false;
  if ((root & (block_granule - 1)) != 0) return bad(root);  // before reading its level
  const auto* head = reinterpret_cast<const btree_node*>(c_.resolve(root, sizeof(btree_node)));
  if (head == nullptr) return failed(c_.unreadable(root));
  const unsigned level = head->level;
  if (level >= btree_max_depth) return bad(root);
  frame& f = path_[0];
  if (!tree_node(c_, root, level, f.node)) return bad(root);
  // A tree cannot hold more keys than its segments' memory holds slots: the
  // segments as mapped and backed, not as the header says nor as long as a
  // sparse segment is (a walk bounded by either could run for years through
  // nodes that share children). Pages backed since they were last looked
  // at are looked for before the root is refused.
  const std::uint64_t entries = f.node.node->entries;
  if (entries > c_.backed_bytes(false) / sizeof(btree_slot) &&
      entries > c_.backed_bytes(true) / sizeof(btree_slot)) {
    return failed(c_.corrupt(root, "a B+tree root claims more keys than the store can hold"));
  }
  steps_left_ = entries;
  f.ref = root;
  f.slot = 0;
  depth_ = 1;
  return level > 0 || charge(f.node);
}

bool tree_cursor::charge(const checked_node& leaf) {
  if (steps_left_ < leaf.count) {
    return failed(c_.corrupt(root_, "a B+tree holds more keys than its root says"));
  }
  steps_left_ -= leaf.count;
  return true;
}

bool tree_cursor::push_child(bool last) {
  const frame& f = path_[depth_ - 1];
  const std::uint64_t child = f.node.slots()[f.slot].ref;
  const unsigned level = f.node.level - 1u;
  frame& below = path_[depth_];
  if (!tree_node(c_, child, level, below.node)) return bad(child);
  if (level == 0 && !charge(below.node)) return false;
  below.ref = child;
  below.slot = last ? below.node.count - 1u : 0u;
  ++depth_;
  return true;
}

bool tree_cursor::descend(bool last) {
  while (path_[depth_ - 1].node.level != 0) {
    if (!push_child(last)) return false;
  }
  return true;
}

/// `a` against `b`, bytewise, as string_view::compare: eight bytes at a
/// time, inline. A seek compares a few short keys per node, and a call into
/// memcmp per comparison cost as much as the comparisons.
int compare_keys(std::string_view a, std::string_view b) noexcept {
  const std::size_t n = std::min(a.size(), b.size());
  auto differ = [](const char* p, const char* q, int& out) {
    std::uint64_t x, y;
    std::memcpy(&x, p, 8);
    std::memcpy(&y, q, 8);
    x = __builtin_bswap64(x);
    y = __builtin_bswap64(y);
    out = (x > y) - (x < y);
    return x != y;
  };
  int out = 0;
  if (n >= 8) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      if (differ(a.data() + i, b.data() + i, out)) return out;
    }
    // The tail as the last eight bytes: those before it are equal.
    if (i < n && differ(a.data() + n - 8, b.data() + n - 8, out)) return out;
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const auto x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
      if (x != y) return x < y ? -1 : 1;
    }
  }
  return (a.size() > b.size()) - (a.size() < b.size());
}

bool tree_cursor::search(const frame& f, std::string_view key, bool after, unsigned& pos) {
  // Without a branch on each comparison's outcome (half of them would be
  // mispredicted): the next probe is chosen by conditional moves.
  unsigned base = 0, len = f.node.count;
  while (len > 0) {
    const unsigned half = len / 2;
    std::string_view k;
    if (!f.node.key(base + half, k)) return bad_slot(f.ref);
    const int cmp = compare_keys(k, key);
    const bool before = after ? cmp <= 0 : cmp < 0;  // slot base + half goes before `key`
    base = before ? base + half + 1 : base;
    len = before ? len - half - 1 : half;
  }
  pos = base;
  return true;
}

bool tree_cursor::seek_ge(std::uint64_t root, std::string_view key) {
  if (!start(root)) return false;
  for (;;) {
    frame& f = path_[depth_ - 1];
    const bool leaf = f.node.level == 0;
    // The first slot whose key is >= key (leaf), or the last child whose
    // smallest key is <= key (internal).
    unsigned pos = 0;
    if (!key.empty() && !search(f, key, !leaf, pos)) return false;
    if (leaf) {
      if (pos < f.node.count) {
        f.slot = pos;
        return true;
      }
      return next_leaf();
    }
    f.slot = pos == 0 ? 0 : pos - 1;
    if (!push_child(false)) return false;
  }
}

bool tree_cursor::seek_lt(std::uint64_t root, std::string_view key) {
  if (!start(root)) return false;
  for (;;) {
    frame& f = path_[depth_ - 1];
    unsigned pos = f.node.count;  // an empty key: past the end
    if (!key.empty() && !search(f, key, false, pos)) return false;
    // `pos` slots have keys < key: take the last of them.
    if (f.node.level == 0) {
      if (pos > 0) {
        f.slot = pos - 1;
        return true;
      }
      return prev_leaf();
    }
    f.slot = pos == 0 ? 0 : pos - 1;
    if (!push_child(false)) return false;
  }
}

bool tree_cursor::step_leaf(bool back) {
  if (depth_ == 0) return false;
  for (unsigned d = depth_ - 1; d > 0;) {
    --d;
    frame& f = path_[d];
    if (back ? f.slot > 0 : f.slot + 1u < f.node.count) {
      f.slot = back ? f.slot - 1u : f.slot + 1u;
      depth_ = d + 1;
      return descend(back);
    }
  }
  depth_ = 0;
  return false;
}

bool tree_cursor::next_leaf() {
  return step_leaf(false);
}

bool tree_cursor::prev_leaf() {
  return step_leaf(true);
}

void tree_cursor::prefetch_neighbour(bool reverse) noexcept {
  if (depth_ < 2) return;
  const frame& parent = path_[depth_ - 2];
  if (reverse ? parent.slot == 0 : parent.slot + 1u >= parent.node.count) return;
  const std::uint64_t ref = parent.node.slots()[reverse ? parent.slot - 1u : parent.slot + 1u].ref;
  if (const std::byte* p = c_.resolve(ref, sizeof(btree_node))) {
    __builtin_prefetch(p);
    __builtin_prefetch(p + 64);
    __builtin_prefetch(p + 128);
    __builtin_prefetch(p + 192);
  }
}

namespace {

/// `scan_tree`'s walk from the cursor's position, compiled once per
/// direction and per kind of scan (keys only, or values too), so the loop
/// over a leaf's slots carries no test of either.
template <bool values, bool reverse>
result<void> walk_leaves(reader_core& c, tree_cursor& cur, bool ok, std::size_t left,
                         std::string_view stop, function_ref<bool(const reader::scanned&)> visit) {
  reader::scanned s;
  while (ok && left > 0) {
    // Field by field, into locals the visitor cannot change.
    const checked_node& leaf = cur.leaf();
    const btree_node* node = leaf.node;
    const unsigned count = leaf.count;
    const std::uint64_t keys_at = leaf.keys_at, bytes = leaf.bytes;
    const btree_slot* slots = slots_of(node);
    const auto* base = reinterpret_cast<const char*>(node);
    auto inside = [&](std::uint64_t at, std::uint64_t len) {
      return at >= keys_at && at <= bytes && len <= bytes - at;
    };
    cur.prefetch_neighbour(reverse);
    // No software prefetch of the records: the hardware streams them in as
    // the walk reads them in order, and asking for all of a leaf's at once
    // (up to 75 lines) cost more than it saved, the first loads queueing
    // behind the rest (range100 about 8% slower with it).
    // Only a leaf that reaches the bound needs its keys compared with it.
    bool bounded = false;
    if (!stop.empty()) {
      std::string_view edge;
      if (!leaf.key(reverse ? 0 : count - 1u, edge)) return slot_outside(c, cur.leaf_ref());
      bounded = reverse ? edge < stop : edge >= stop;
    }
    for (unsigned i = cur.slot();;) {
      const btree_slot& slot = slots[i];
      const std::uint64_t ref = slot.ref, key_at = slot.key_offset, key_bytes = slot.key_bytes;
      if (!inside(key_at, key_bytes)) return slot_outside(c, cur.leaf_ref());
      s.key = {base + key_at, key_bytes};
      if (bounded && (reverse ? s.key < stop : s.key >= stop)) return {};
      if (values) {
        if ((ref & btree_inline_flag) != 0) {
          const std::uint64_t at = inline_offset(ref), size = inline_size(ref);
          if (!inside(at, btree_inline_header + size)) return slot_outside(c, cur.leaf_ref());
          // Straight into the result: a copied temporary would stall store forwarding.
          std::memcpy(&s.version, base + at, sizeof s.version);
          s.bytes = {reinterpret_cast<const std::byte*>(base) + at + btree_inline_header, size};
          s.is_ndarray = false;
          s.entry = nullptr;
        } else {
          const entry_block* e = c.entry(ref);
          if (e == nullptr) return c.unreadable(ref);
          // The leaf's key is the one returned; a block of another size is not its entry.
          if (key_of(e).size() != s.key.size()) {
            return c.corrupt(ref, "its key is not the one the B+tree says");
          }
          s.is_ndarray = format_of(e) == value_format::ndarray;
          if (s.is_ndarray) {
            if (auto valid = check_value(e); !valid) return std::move(valid).error();
          }
          s.bytes = value_of(e);
          s.version = version_of(e);
          s.entry = e;
        }
      }
      if (!visit(s) || --left == 0) return {};
      if (reverse ? i-- == 0 : ++i == count) break;
    }
    ok = reverse ? cur.prev_leaf() : cur.next_leaf();
  }
  if (cur.error()) return std::move(*cur.error());
  return {};
}

}  // namespace

result<void> scan_tree(reader_core& c, std::uint64_t root, const reader::key_range& range,
                       bool values, function_ref<bool(const reader::scanned&)> visit) {
  tree_cursor cur(c);
  // Where the scan stops: hi going forward, lo going back (empty: no bound).
  if (range.reverse) {
    const bool ok = cur.seek_lt(root, range.hi);
    return values ? walk_leaves<true, true>(c, cur, ok, range.limit, range.lo, visit)
                  : walk_leaves<false, true>(c, cur, ok, range.limit, range.lo, visit);
  }
  const bool ok = cur.seek_ge(root, range.lo);
  return values ? walk_leaves<true, false>(c, cur, ok, range.limit, range.hi, visit)
                : walk_leaves<false, false>(c, cur, ok, range.limit, range.hi, visit);
}

}  // namespace slither::shm::detail
