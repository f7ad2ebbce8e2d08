// The writer's half of the ordered tables' B+tree (btree.hpp): copy-on-write
// updates. A write copies the nodes on the path it changes (merging or
// splitting them as they under- or overflow) into new blocks; the replaced
// ones are retired when the new root is published, and nodes written and
// replaced again before that are given back at once, so a batch leaves no
// garbage behind. The reader's half is in btree.cpp.
#include <algorithm>
#include <cstring>
#include <new>

#include "btree.hpp"
#include "writer_impl.hpp"

namespace slither::shm {

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
  const detail::entry_block* e = entry(entry_ref);
  const std::span<const std::byte> value = detail::value_of(e);
  const bool inl = detail::format_of(e) == detail::value_format::encoded &&
                   value.size() <= detail::btree_inline_max;
  if (inl != ((old_ref & detail::btree_inline_flag) != 0) ||
      (inl && detail::inline_size(old_ref) != value.size())) {
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
      const std::uint64_t version = detail::version_of(e);
      std::memcpy(record, &version, sizeof version);
      std::memcpy(record + detail::btree_inline_header, value.data(), value.size());
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
