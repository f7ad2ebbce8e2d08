// Both halves of the ordered tables' B+tree (btree.hpp): the reader's checked
// cursor, and the writer's copy-on-write updates. A write copies the nodes
// on the path it changes (merging or splitting them as they under- or
// overflow) into new blocks; the replaced ones are retired when the new root
// is published, and nodes written and replaced again before that are given
// back at once, so a batch leaves no garbage behind.
#include "btree.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include "writer_impl.hpp"

namespace slither::shm {

namespace detail {

// ---------------------------------------------------------------------------
// Reader side

namespace {
error_info slot_outside(reader_core& c, std::uint64_t ref) {
  return c.corrupt(ref, "a B+tree node's slot points outside the node");
}
}  // namespace

bool tree_node(reader_core& c, std::uint64_t ref, unsigned level, checked_node& out) noexcept {
  // Blocks are 64-byte aligned: any other reference (an inline slot's word
  // in an internal node among them) is not a node.
  if ((ref & (block_alignment - 1)) != 0) return false;
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
  const auto* head = reinterpret_cast<const btree_node*>(c_.resolve(root, sizeof(btree_node)));
  if (head == nullptr) return failed(c_.unreadable(root));
  const unsigned level = head->level;
  if (level >= btree_max_depth) return bad(root);
  frame& f = path_[0];
  if (!tree_node(c_, root, level, f.node)) return bad(root);
  // A tree cannot hold more keys than its segments hold slots.
  std::uint64_t mapped = 0;
  const std::uint64_t segments = std::min<std::uint64_t>(
      c_.header->segment_count.load(std::memory_order_acquire), max_segments);
  for (std::uint64_t i = 0; i < segments; ++i)
    mapped += c_.header->segment_bytes[i].load(std::memory_order_relaxed);
  const std::uint64_t entries = f.node.node->entries;
  if (entries > mapped / sizeof(btree_slot)) {
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
    if (values) {
      // Records follow one another in slot order: ask for all those this
      // leaf will give at once, rather than meet them one miss at a time.
      const unsigned from = cur.slot();
      const auto ahead = static_cast<unsigned>(
          std::min<std::size_t>(left - 1, reverse ? from : count - 1u - from));
      const unsigned first = reverse ? from - ahead : from, last = reverse ? from : from + ahead;
      const std::uint64_t lo = slots[first].ref, hi = slots[last].ref;
      if ((lo & hi & btree_inline_flag) != 0) {
        const std::uint64_t end =
            std::min(bytes, inline_offset(hi) + btree_inline_header + inline_size(hi));
        for (std::uint64_t at = inline_offset(lo) & ~std::uint64_t{63}; at < end; at += 64)
          __builtin_prefetch(base + at);
      }
    }
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
          const entry_header* e = c.entry(ref);
          if (e == nullptr) return c.unreadable(ref);
          // The leaf's key is the one returned; a block of another size is not its entry.
          if (e->key_bytes != s.key.size()) {
            return c.corrupt(ref, "its key is not the one the B+tree says");
          }
          s.is_ndarray = e->format == static_cast<std::uint8_t>(value_format::ndarray);
          if (s.is_ndarray) {
            if (auto valid = check_value(e); !valid) return std::move(valid).error();
          }
          s.bytes = value_of(e);
          s.version = e->version;
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

}  // namespace detail

// ---------------------------------------------------------------------------
// Writer side

using detail::btree_node;
using detail::btree_slot;
using detail::entry_header;
using detail::slot_key;
using detail::slots_of;
using detail::table_state;
using detail::tree_item;
using detail::tree_op;

const btree_node* writer::impl::node(std::uint64_t ref) noexcept {
  return reinterpret_cast<const btree_node*>(ptr(ref));
}

std::vector<tree_item> writer::impl::node_items(std::uint64_t ref) {
  const btree_node* n = node(ref);
  std::vector<tree_item> items;
  items.reserve(n->count + 1u);
  const auto* base = reinterpret_cast<const std::byte*>(n);
  for (unsigned i = 0; i < n->count; ++i) {
    const std::uint64_t r = slots_of(n)[i].ref;
    const bool inl = (r & detail::btree_inline_flag) != 0;
    items.push_back(tree_item{slot_key(n, i), r, inl ? base + detail::inline_offset(r) : nullptr});
  }
  return items;
}

void writer::impl::replace_node(std::uint64_t ref) {
  const std::uint64_t bytes = node(ref)->block_bytes;
  if (const auto it = tree_fresh.find(ref); it != tree_fresh.end()) {
    tree_fresh.erase(it);
    tree_dead.push_back(detail::block{ref, bytes});  // no reader saw it: freed after the change
  } else {
    tree_replaced.push_back(detail::block{ref, bytes});
  }
}

void writer::impl::release_dead() noexcept {
  for (const detail::block& b : tree_dead) release(b.ref, b.bytes);
  tree_dead.clear();
}

bool writer::impl::inline_value(unsigned level, const tree_item& item, std::uint64_t& version,
                                std::span<const std::byte>& bytes) noexcept {
  if (level != 0) return false;
  if (item.record != nullptr) {
    std::memcpy(&version, item.record, sizeof version);
    bytes = {item.record + detail::btree_inline_header, detail::inline_size(item.ref)};
    return true;
  }
  const entry_header* e = entry(item.ref);
  if (e->format != static_cast<std::uint8_t>(detail::value_format::encoded) ||
      e->value_bytes > detail::btree_inline_max) {
    return false;
  }
  version = e->version;
  bytes = detail::value_of(e);
  return true;
}

std::uint64_t writer::impl::item_bytes(unsigned level, const tree_item& item) noexcept {
  std::uint64_t bytes = sizeof(btree_slot) + item.key.size();
  std::uint64_t version;
  std::span<const std::byte> value;
  if (inline_value(level, item, version, value))
    bytes += detail::btree_inline_header + value.size();
  return bytes;
}

std::uint64_t writer::impl::node_bytes(std::span<const tree_item> items, unsigned level) noexcept {
  std::uint64_t total = 0;
  for (const tree_item& i : items) total += item_bytes(level, i);
  return total;
}

result<std::vector<tree_item>> writer::impl::write_nodes(unsigned level,
                                                         std::span<const tree_item> items) {
  // Each item's size in a node and, in a leaf, its inline value: looked up once.
  struct copy {
    std::uint64_t version = 0;
    std::span<const std::byte> value;
    const std::byte* record = nullptr;  ///< version then value, side by side in a node
    bool present = false;
  };
  std::vector<copy> copies(level == 0 ? items.size() : 0);
  std::vector<std::uint64_t> sizes(items.size());
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    sizes[i] = sizeof(btree_slot) + items[i].key.size();
    if (level == 0) {
      copy& c = copies[i];
      if (items[i].record != nullptr) {
        // Its size is in its slot word: the record itself is first read by
        // the copy below, one sequential run per source node.
        c.present = true;
        c.record = items[i].record;
        c.value = {c.record + detail::btree_inline_header, detail::inline_size(items[i].ref)};
      } else {
        c.present = inline_value(level, items[i], c.version, c.value);
      }
      if (c.present) sizes[i] += detail::btree_inline_header + c.value.size();
    }
    total += sizes[i];
  }
  // As few nodes as the fanout and the size target allow, split evenly by
  // count: a split leaves two halves, a merge of two small neighbours one node.
  const std::size_t parts = std::min<std::size_t>(
      items.size(), std::max<std::uint64_t>(
                        (items.size() + detail::btree_max_fanout - 1) / detail::btree_max_fanout,
                        (total + detail::btree_node_target - 1) / detail::btree_node_target));
  std::vector<tree_item> out;
  out.reserve(parts);
  for (std::size_t p = 0, begin = 0; p < parts; ++p) {
    const std::size_t end = items.size() * (p + 1) / parts;
    std::uint64_t bytes = sizeof(btree_node);
    for (std::size_t i = begin; i < end; ++i) bytes += sizes[i];
    auto b = allocate(bytes);
    if (!b) {
      for (const tree_item& done : out) replace_node(done.ref);
      return std::move(b).error();
    }
    tree_fresh.emplace(b->ref, b->bytes);
    std::byte* p0 = ptr(b->ref);
    auto* n = new (p0) btree_node{};
    n->magic = detail::btree_magic;
    n->level = static_cast<std::uint16_t>(level);
    n->count = static_cast<std::uint16_t>(end - begin);
    n->block_bytes = b->bytes;
    auto* slots = reinterpret_cast<btree_slot*>(n + 1);
    // Header, slots, keys, then the inline records, each in slot order.
    // Items copied from one node lie side by side there, keys and records
    // alike: each such run is copied with one memcpy, not one per item.
    std::uint64_t at = sizeof(btree_node) + (end - begin) * sizeof(btree_slot);
    for (std::size_t i = begin; i < end;) {
      const char* from = items[i].key.data();
      std::uint64_t run = 0;
      std::size_t j = i;
      for (; j < end && items[j].key.data() == from + run; ++j) {
        const std::string_view k = items[j].key;
        slots[j - begin] = btree_slot{items[j].ref, static_cast<std::uint32_t>(at + run),
                                      static_cast<std::uint32_t>(k.size())};
        run += k.size();
      }
      std::memcpy(p0 + at, from, run);
      at += run;
      i = j;
    }
    n->keys_end = at;
    for (std::size_t i = begin; level == 0 && i < end;) {
      const copy& c = copies[i];
      if (!c.present) {  // the slot keeps the entry's reference
        ++i;
        continue;
      }
      if (c.record == nullptr) {  // from an entry block: version and value apart
        std::memcpy(p0 + at, &c.version, sizeof c.version);
        std::memcpy(p0 + at + detail::btree_inline_header, c.value.data(), c.value.size());
        slots[i - begin].ref = detail::inline_slot(at, c.value.size());
        at += detail::btree_inline_header + c.value.size();
        ++i;
        continue;
      }
      const std::byte* from = c.record;
      std::uint64_t run = 0;
      std::size_t j = i;
      for (; j < end && copies[j].present && copies[j].record == from + run; ++j) {
        const std::uint64_t size = copies[j].value.size();
        slots[j - begin].ref = detail::inline_slot(at + run, size);
        run += detail::btree_inline_header + size;
      }
      std::memcpy(p0 + at, from, run);
      at += run;
      i = j;
    }
    out.push_back(tree_item{items[begin].key, b->ref});
    begin = end;
  }
  return out;
}

bool writer::impl::underfull(std::span<const tree_item> items, unsigned level) noexcept {
  return items.size() < detail::btree_min_fill &&
         node_bytes(items, level) < detail::btree_node_target / 4;
}

result<bool> writer::impl::tree_update(std::uint64_t ref, std::span<const tree_op> ops,
                                       std::vector<tree_item>& out, std::int64_t& added) {
  const unsigned level = node(ref)->level;
  std::vector<tree_item> old = node_items(ref);
  bool changed = false;
  if (level == 0) {
    // Merge the sorted changes into the sorted slots.
    out.clear();
    out.reserve(old.size() + ops.size());
    std::size_t i = 0;
    for (const tree_op& op : ops) {
      while (i < old.size() && old[i].key < op.key) out.push_back(std::move(old[i++]));
      const bool found = i < old.size() && old[i].key == op.key;
      if (found) ++i;
      if (op.entry != detail::null_ref) {
        out.push_back(tree_item{op.key, op.entry});
        added += found ? 0 : 1;
        changed = true;
      } else if (found) {
        --added;
        changed = true;
      }
    }
    if (!changed) return false;
    while (i < old.size()) out.push_back(std::move(old[i++]));
    replace_node(ref);
    return true;
  }
  // Each child gets the changes in its key range. The changed children of a
  // run of neighbours are written together, evenly, as few nodes as their
  // items need; a run that would underflow takes in a neighbour first.
  const unsigned below = level - 1;
  std::vector<tree_item> items;  // the new slots of this node
  items.reserve(old.size() + 1);
  std::vector<tree_item> run;  // slots (of level `below`) of a run of changed children
  bool in_run = false;
  // Writes the run; `right` is the unchanged child after it, if any (the
  // run may take it in, and then says so).
  auto flush = [&](tree_item* right) -> result<bool> {
    in_run = false;
    bool took_right = false;
    if (!run.empty() && underfull(run, below)) {
      if (!items.empty()) {
        std::vector<tree_item> left = node_items(items.back().ref);
        replace_node(items.back().ref);
        items.pop_back();
        left.insert(left.end(), std::make_move_iterator(run.begin()),
                    std::make_move_iterator(run.end()));
        run = std::move(left);
      } else if (right != nullptr) {
        std::vector<tree_item> next = node_items(right->ref);
        replace_node(right->ref);
        run.insert(run.end(), std::make_move_iterator(next.begin()),
                   std::make_move_iterator(next.end()));
        took_right = true;
      }
    }
    auto written = write_nodes(below, run);
    run.clear();
    if (!written) return std::move(written).error();
    items.insert(items.end(), std::make_move_iterator(written->begin()),
                 std::make_move_iterator(written->end()));
    return took_right;
  };
  auto at = ops.begin();
  std::vector<tree_item> child;
  for (std::size_t j = 0; j < old.size(); ++j) {
    const auto end =
        j + 1 < old.size()
            ? std::lower_bound(at, ops.end(), old[j + 1].key,
                               [](const tree_op& op, std::string_view k) { return op.key < k; })
            : ops.end();
    bool touched = false;
    if (at != end) {
      auto r = tree_update(old[j].ref, {at, end}, child, added);
      if (!r) return std::move(r).error();
      touched = *r;
    }
    at = end;
    if (touched) {
      changed = true;
      in_run = true;
      run.insert(run.end(), std::make_move_iterator(child.begin()),
                 std::make_move_iterator(child.end()));
      continue;
    }
    if (in_run) {
      auto took = flush(&old[j]);
      if (!took) return std::move(took).error();
      if (*took) continue;
    }
    items.push_back(std::move(old[j]));
  }
  if (!changed) return false;
  if (in_run) {
    if (auto took = flush(nullptr); !took) return std::move(took).error();
  }
  replace_node(ref);
  out = std::move(items);
  return true;
}

result<bool> writer::impl::tree_apply(table_state& t, std::span<const tree_op> ops) {
  struct end_of_change {
    writer::impl& w;
    ~end_of_change() { w.release_dead(); }
  } end{*this};
  std::int64_t added = 0;
  unsigned level = 0;
  std::vector<tree_item> items;
  if (t.tree_root == detail::null_ref) {
    for (const tree_op& op : ops) {
      if (op.entry != detail::null_ref) items.push_back(tree_item{op.key, op.entry});
    }
    if (items.empty()) return false;
    added = static_cast<std::int64_t>(items.size());
  } else {
    level = node(t.tree_root)->level;
    auto r = tree_update(t.tree_root, ops, items, added);
    if (!r) return std::move(r).error();
    if (!*r) return false;
  }
  std::uint64_t root = detail::null_ref;
  if (!items.empty()) {
    auto written = write_nodes(level, items);
    if (!written) return std::move(written).error();
    while (written->size() > 1) {
      written = write_nodes(++level, *written);
      if (!written) return std::move(written).error();
    }
    root = written->front().ref;
    // A root with one child is that child (written in this change, so not yet seen).
    while (node(root)->level > 0 && node(root)->count == 1) {
      const std::uint64_t child = slots_of(node(root))[0].ref;
      replace_node(root);
      root = child;
    }
  }
  t.tree_root = root;
  t.tree_keys = static_cast<std::uint64_t>(static_cast<std::int64_t>(t.tree_keys) + added);
  // The root was written in this change: readers see its count with it.
  if (root != detail::null_ref) reinterpret_cast<btree_node*>(ptr(root))->entries = t.tree_keys;
  return true;
}

result<bool> writer::impl::tree_patch(table_state& t, std::string_view key,
                                      std::uint64_t entry_ref) {
  if (t.tree_root == detail::null_ref || entry_ref == detail::null_ref) return false;
  struct step {
    std::uint64_t ref;
    unsigned slot;
  };
  step path[detail::btree_max_depth];
  unsigned depth = 0;
  for (std::uint64_t ref = t.tree_root;;) {
    const btree_node* n = node(ref);
    const bool leaf = n->level == 0;
    // The key's slot (leaf), or the last child whose smallest key is <= key.
    unsigned lo = 0, hi = n->count;
    while (lo < hi) {
      const unsigned mid = (lo + hi) / 2;
      const std::string_view k = slot_key(n, mid);
      if (leaf ? k < key : k <= key) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    if (leaf) {
      if (lo == n->count || slot_key(n, lo) != key) return false;  // an insert
      path[depth++] = step{ref, lo};
      break;
    }
    const unsigned s = lo == 0 ? 0 : lo - 1;
    path[depth++] = step{ref, s};
    ref = slots_of(n)[s].ref;
  }
  // The new value must take the old one's place exactly: both inline and of
  // one size, or both in their entry blocks.
  const std::uint64_t old_ref = slots_of(node(path[depth - 1].ref))[path[depth - 1].slot].ref;
  const entry_header* e = entry(entry_ref);
  const bool inl = e->format == static_cast<std::uint8_t>(detail::value_format::encoded) &&
                   e->value_bytes <= detail::btree_inline_max;
  if (inl != ((old_ref & detail::btree_inline_flag) != 0) ||
      (inl && detail::inline_size(old_ref) != e->value_bytes)) {
    return false;
  }
  // Every block first, so that a failure changes nothing.
  detail::block fresh[detail::btree_max_depth];
  for (unsigned d = 0; d < depth; ++d) {
    auto b = allocate(node(path[d].ref)->block_bytes);
    if (!b) {
      for (unsigned j = 0; j < d; ++j) release(fresh[j].ref, fresh[j].bytes);
      return std::move(b).error();
    }
    fresh[d] = *b;
  }
  std::uint64_t child = detail::null_ref;
  for (unsigned d = depth; d-- > 0;) {
    const btree_node* old = node(path[d].ref);
    std::byte* p = ptr(fresh[d].ref);
    // size_class is idempotent: the copy's block is as large as the original's.
    std::memcpy(p, old, std::min(old->block_bytes, fresh[d].bytes));
    auto* n = reinterpret_cast<btree_node*>(p);
    n->block_bytes = fresh[d].bytes;
    btree_slot& slot = reinterpret_cast<btree_slot*>(n + 1)[path[d].slot];
    if (d + 1 < depth) {
      slot.ref = child;
    } else if (inl) {
      std::byte* record = p + detail::inline_offset(old_ref);
      std::memcpy(record, &e->version, sizeof e->version);
      std::memcpy(record + detail::btree_inline_header, detail::value_of(e).data(), e->value_bytes);
    } else {
      slot.ref = entry_ref;
    }
    tree_fresh.emplace(fresh[d].ref, fresh[d].bytes);
    replace_node(path[d].ref);
    child = fresh[d].ref;
  }
  release_dead();
  t.tree_root = child;
  reinterpret_cast<btree_node*>(ptr(child))->entries = t.tree_keys;
  return true;
}

result<bool> writer::impl::tree_apply(table_state& t, std::string_view key, std::uint64_t entry) {
  if (auto patched = tree_patch(t, key, entry); !patched || *patched) return patched;
  const tree_op op{key, entry};
  return tree_apply(t, std::span<const tree_op>(&op, 1));
}

result<bool> writer::impl::tree_put_many(table_state& t,
                                         std::span<const std::pair<std::string, Value>> entries,
                                         std::span<const detail::block> built) {
  std::vector<tree_op> ops(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) ops[i] = tree_op{entries[i].first, built[i].ref};
  // Sorted, and of a key given twice the last only, as the hash index keeps it.
  std::stable_sort(ops.begin(), ops.end(),
                   [](const tree_op& a, const tree_op& b) { return a.key < b.key; });
  std::size_t kept = 0;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (i + 1 < ops.size() && ops[i + 1].key == ops[i].key) continue;
    ops[kept++] = ops[i];
  }
  ops.resize(kept);
  return tree_apply(t, ops);
}

}  // namespace slither::shm

namespace slither::shm {

void writer::impl::tree_commit(table_state& t) {
  if (t.published) header->tree_roots[t.index].store(t.tree_root, std::memory_order_seq_cst);
  for (const detail::block& b : tree_replaced) dispose(t, b.ref, b.bytes);
  tree_replaced.clear();
  tree_fresh.clear();
  t.tree_committed = t.tree_root;
  t.tree_committed_keys = t.tree_keys;
}

void writer::impl::tree_abort(table_state& t) {
  for (const auto& [ref, bytes] : tree_fresh) release(ref, bytes);
  tree_fresh.clear();
  tree_replaced.clear();
  t.tree_root = t.tree_committed;
  t.tree_keys = t.tree_committed_keys;
}

void writer::impl::dispose_tree(const table_state& t, std::uint64_t root) {
  if (root == detail::null_ref) return;
  const btree_node* n = node(root);
  if (n->level > 0) {
    for (unsigned i = 0; i < n->count; ++i) dispose_tree(t, slots_of(n)[i].ref);
  }
  dispose(t, root, n->block_bytes);
}

}  // namespace slither::shm
