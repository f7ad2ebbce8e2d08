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

const btree_node* tree_node(reader_core& c, std::uint64_t ref, unsigned level) noexcept {
  const auto* n = reinterpret_cast<const btree_node*>(c.resolve(ref, sizeof(btree_node)));
  if (n == nullptr || n->magic != btree_magic || n->level != level || n->count == 0 ||
      n->count > btree_max_fanout) {
    return nullptr;
  }
  const std::uint64_t keys_at = sizeof(btree_node) + std::uint64_t{n->count} * sizeof(btree_slot);
  const std::uint64_t bytes = n->block_bytes;
  if (bytes < keys_at || c.resolve(ref, bytes) == nullptr) return nullptr;
  // Slots and keys at once, not one miss per step of a binary search.
  const auto* p = reinterpret_cast<const char*>(n);
  const std::uint64_t hint = std::min({n->keys_end, bytes, std::uint64_t{4096}});
  for (std::uint64_t at = 64; at < hint; at += 64) __builtin_prefetch(p + at);
  const btree_slot* s = slots_of(n);
  // Without early exits: every node a scan meets runs this, and it vectorizes.
  bool outside = false;
  for (unsigned i = 0; i < n->count; ++i) {
    const std::uint64_t at = s[i].key_offset;
    outside |= (at < keys_at) | (at + s[i].key_bytes > bytes);
    const std::uint64_t r = s[i].ref;
    const std::uint64_t inl = r & btree_inline_flag;
    const std::uint64_t rec = inline_offset(r);
    outside |=
        (inl != 0) & ((rec < keys_at) | (rec + btree_inline_header + inline_size(r) > bytes));
  }
  // An inline slot in an internal node would be followed as a child.
  bool misplaced = false;
  if (level > 0) {
    for (unsigned i = 0; i < n->count; ++i) misplaced |= (s[i].ref & btree_inline_flag) != 0;
  }
  return outside || misplaced ? nullptr : n;
}

bool tree_cursor::failed(error_info e) {
  error_ = std::move(e);
  depth_ = 0;
  return false;
}

bool tree_cursor::bad(std::uint64_t ref) {
  return failed(c_.corrupt(ref, "not a B+tree node where the tree expects one"));
}

bool tree_cursor::start(std::uint64_t root) {
  depth_ = 0;
  root_ = root;
  if (root == null_ref) return false;
  const auto* head = reinterpret_cast<const btree_node*>(c_.resolve(root, sizeof(btree_node)));
  if (head == nullptr) return failed(c_.unreadable(root));
  const unsigned level = head->level;
  if (level >= btree_max_depth) return bad(root);
  const btree_node* n = tree_node(c_, root, level);
  if (n == nullptr) return bad(root);
  // A tree cannot hold more keys than its segments hold slots.
  std::uint64_t mapped = 0;
  const std::uint64_t segments = std::min<std::uint64_t>(
      c_.header->segment_count.load(std::memory_order_acquire), max_segments);
  for (std::uint64_t i = 0; i < segments; ++i)
    mapped += c_.header->segment_bytes[i].load(std::memory_order_relaxed);
  if (n->entries > mapped / sizeof(btree_slot)) {
    return failed(c_.corrupt(root, "a B+tree root claims more keys than the store can hold"));
  }
  steps_left_ = n->entries;
  path_[0] = frame{n, root, 0};
  depth_ = 1;
  return level > 0 || charge(n);
}

bool tree_cursor::charge(const btree_node* leaf) {
  if (steps_left_ < leaf->count) {
    return failed(c_.corrupt(root_, "a B+tree holds more keys than its root says"));
  }
  steps_left_ -= leaf->count;
  return true;
}

bool tree_cursor::descend(bool last) {
  for (;;) {
    const frame& f = path_[depth_ - 1];
    if (f.node->level == 0) return true;
    const std::uint64_t child = slots_of(f.node)[f.slot].ref;
    const btree_node* n = tree_node(c_, child, f.node->level - 1u);
    if (n == nullptr) return bad(child);
    if (n->level == 0 && !charge(n)) return false;
    path_[depth_++] = frame{n, child, last ? n->count - 1u : 0u};
  }
}

bool tree_cursor::seek_ge(std::uint64_t root, std::string_view key) {
  if (!start(root)) return false;
  for (;;) {
    frame& f = path_[depth_ - 1];
    const btree_node* n = f.node;
    // The first slot whose key is >= key (leaf), or the last child whose
    // smallest key is <= key (internal).
    unsigned lo = 0, hi = n->count;
    while (lo < hi) {
      const unsigned mid = (lo + hi) / 2;
      if (n->level == 0 ? slot_key(n, mid) < key : slot_key(n, mid) <= key) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    if (n->level == 0) {
      if (lo < n->count) {
        f.slot = lo;
        return true;
      }
      return next_leaf();
    }
    f.slot = lo == 0 ? 0 : lo - 1;
    const std::uint64_t child = slots_of(n)[f.slot].ref;
    const btree_node* c = tree_node(c_, child, n->level - 1u);
    if (c == nullptr) return bad(child);
    if (c->level == 0 && !charge(c)) return false;
    path_[depth_++] = frame{c, child, 0};
  }
}

bool tree_cursor::seek_lt(std::uint64_t root, std::string_view key) {
  if (!start(root)) return false;
  for (;;) {
    frame& f = path_[depth_ - 1];
    const btree_node* n = f.node;
    unsigned lo = n->count;  // an empty key: past the end
    if (!key.empty()) {
      lo = 0;
      unsigned hi = n->count;
      while (lo < hi) {
        const unsigned mid = (lo + hi) / 2;
        if (slot_key(n, mid) < key) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
    }
    // `lo` slots have keys < key: take the last of them.
    if (n->level == 0) {
      if (lo > 0) {
        f.slot = lo - 1;
        return true;
      }
      return prev_leaf();
    }
    f.slot = lo == 0 ? 0 : lo - 1;
    const std::uint64_t child = slots_of(n)[f.slot].ref;
    const btree_node* c = tree_node(c_, child, n->level - 1u);
    if (c == nullptr) return bad(child);
    if (c->level == 0 && !charge(c)) return false;
    path_[depth_++] = frame{c, child, 0};
  }
}

bool tree_cursor::step_leaf(bool back) {
  if (depth_ == 0) return false;
  for (unsigned d = depth_ - 1; d > 0;) {
    --d;
    frame& f = path_[d];
    if (back ? f.slot > 0 : f.slot + 1u < f.node->count) {
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
  if (reverse ? parent.slot == 0 : parent.slot + 1u >= parent.node->count) return;
  const std::uint64_t ref =
      slots_of(parent.node)[reverse ? parent.slot - 1u : parent.slot + 1u].ref;
  if (const std::byte* p = c_.resolve(ref, sizeof(btree_node))) {
    __builtin_prefetch(p);
    __builtin_prefetch(p + 64);
    __builtin_prefetch(p + 128);
    __builtin_prefetch(p + 192);
  }
}

result<void> scan_tree(reader_core& c, std::uint64_t root, const reader::key_range& range,
                       bool values, function_ref<bool(const reader::scanned&)> visit) {
  const bool reverse = range.reverse;
  tree_cursor cur(c);
  bool ok = reverse ? cur.seek_lt(root, range.hi) : cur.seek_ge(root, range.lo);
  std::size_t left = range.limit;
  // Where the scan stops: hi going forward, lo going back (empty: no bound).
  const std::string_view stop = reverse ? range.lo : range.hi;
  while (ok && left > 0) {
    const btree_node* leaf = cur.leaf();
    const unsigned count = leaf->count;
    const btree_slot* slots = slots_of(leaf);
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
        const auto* p = reinterpret_cast<const char*>(leaf);
        const std::uint64_t end = inline_offset(hi) + btree_inline_header + inline_size(hi);
        for (std::uint64_t at = inline_offset(lo) & ~std::uint64_t{63}; at < end; at += 64)
          __builtin_prefetch(p + at);
      }
    }
    // Only a leaf that reaches the bound needs its keys compared with it.
    const bool bounded =
        !stop.empty() && (reverse ? slot_key(leaf, 0) < stop : slot_key(leaf, count - 1u) >= stop);
    for (unsigned i = cur.slot();;) {
      reader::scanned s;
      s.key = slot_key(leaf, i);
      if (bounded && (reverse ? s.key < stop : s.key >= stop)) return {};
      if (values) {
        const std::uint64_t ref = slots[i].ref;
        if ((ref & btree_inline_flag) != 0) {
          inline_record(leaf, ref, s.version, s.bytes);
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

}  // namespace detail

// ---------------------------------------------------------------------------
// Writer side

using detail::btree_node;
using detail::btree_slot;
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
    items.push_back(
        tree_item{std::string(slot_key(n, i)), r, inl ? base + detail::inline_offset(r) : nullptr});
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
  const detail::entry_block* e = entry(item.ref);
  if (detail::format_of(e) != detail::value_format::encoded ||
      detail::value_of(e).size() > detail::btree_inline_max) {
    return false;
  }
  version = detail::version_of(e);
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
    bool present = false;
  };
  std::vector<copy> copies(level == 0 ? items.size() : 0);
  std::vector<std::uint64_t> sizes(items.size());
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    sizes[i] = sizeof(btree_slot) + items[i].key.size();
    if (level == 0) {
      copy& c = copies[i];
      c.present = inline_value(level, items[i], c.version, c.value);
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
    std::uint64_t at = sizeof(btree_node) + (end - begin) * sizeof(btree_slot);
    for (std::size_t i = begin; i < end; ++i) {
      const std::string& k = items[i].key;
      std::memcpy(p0 + at, k.data(), k.size());
      slots[i - begin] = btree_slot{items[i].ref, static_cast<std::uint32_t>(at),
                                    static_cast<std::uint32_t>(k.size())};
      at += k.size();
    }
    n->keys_end = at;
    for (std::size_t i = begin; level == 0 && i < end; ++i) {
      const copy& c = copies[i];
      if (!c.present) continue;  // the slot keeps the entry's reference
      std::memcpy(p0 + at, &c.version, sizeof c.version);
      std::memcpy(p0 + at + detail::btree_inline_header, c.value.data(), c.value.size());
      slots[i - begin].ref = detail::inline_slot(at, c.value.size());
      at += detail::btree_inline_header + c.value.size();
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
        out.push_back(tree_item{std::string(op.key), op.entry});
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
                               [](const tree_op& op, const std::string& k) { return op.key < k; })
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
      if (op.entry != detail::null_ref) items.push_back(tree_item{std::string(op.key), op.entry});
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

result<bool> writer::impl::tree_apply(table_state& t, std::string_view key, std::uint64_t entry) {
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
