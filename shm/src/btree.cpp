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
  const btree_slot* s = slots_of(n);
  // Without early exits: every node a scan meets runs this, and it vectorizes.
  bool outside = false;
  for (unsigned i = 0; i < n->count; ++i) {
    const std::uint64_t at = s[i].key_offset;
    outside |= (at < keys_at) | (at + s[i].key_bytes > bytes);
  }
  return outside ? nullptr : n;
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
  return true;
}

bool tree_cursor::descend(bool last) {
  for (;;) {
    const frame& f = path_[depth_ - 1];
    if (f.node->level == 0) return true;
    const std::uint64_t child = slots_of(f.node)[f.slot].ref;
    const btree_node* n = tree_node(c_, child, f.node->level - 1u);
    if (n == nullptr) return bad(child);
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
      f.slot = n->count - 1u;
      return next();
    }
    f.slot = lo == 0 ? 0 : lo - 1;
    const std::uint64_t child = slots_of(n)[f.slot].ref;
    const btree_node* c = tree_node(c_, child, n->level - 1u);
    if (c == nullptr) return bad(child);
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
      f.slot = 0;
      return prev();
    }
    f.slot = lo == 0 ? 0 : lo - 1;
    const std::uint64_t child = slots_of(n)[f.slot].ref;
    const btree_node* c = tree_node(c_, child, n->level - 1u);
    if (c == nullptr) return bad(child);
    path_[depth_++] = frame{c, child, 0};
  }
}

bool tree_cursor::next() {
  if (depth_ == 0) return false;
  if (steps_left_ == 0) {
    return failed(c_.corrupt(root_, "a B+tree holds more keys than its root says"));
  }
  --steps_left_;
  unsigned d = depth_ - 1;
  if (++path_[d].slot < path_[d].node->count) return true;
  while (d > 0) {
    --d;
    if (path_[d].slot + 1u < path_[d].node->count) {
      ++path_[d].slot;
      depth_ = d + 1;
      return descend(false);
    }
  }
  depth_ = 0;
  return false;
}

bool tree_cursor::prev() {
  if (depth_ == 0) return false;
  if (steps_left_ == 0) {
    return failed(c_.corrupt(root_, "a B+tree holds more keys than its root says"));
  }
  --steps_left_;
  unsigned d = depth_ - 1;
  if (path_[d].slot > 0) {
    --path_[d].slot;
    return true;
  }
  while (d > 0) {
    --d;
    if (path_[d].slot > 0) {
      --path_[d].slot;
      depth_ = d + 1;
      return descend(true);
    }
  }
  depth_ = 0;
  return false;
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

namespace {

/// The child of an internal node (items) whose subtree would hold `key`.
std::size_t child_for(const std::vector<tree_item>& items, std::string_view key) {
  const auto it =
      std::upper_bound(items.begin(), items.end(), key,
                       [](std::string_view k, const tree_item& i) { return k < i.key; });
  return it == items.begin() ? 0 : static_cast<std::size_t>(it - items.begin()) - 1;
}

}  // namespace

const btree_node* writer::impl::node(std::uint64_t ref) noexcept {
  return reinterpret_cast<const btree_node*>(ptr(ref));
}

std::vector<tree_item> writer::impl::node_items(std::uint64_t ref) {
  const btree_node* n = node(ref);
  std::vector<tree_item> items;
  items.reserve(n->count + 1u);
  for (unsigned i = 0; i < n->count; ++i)
    items.push_back(tree_item{std::string(slot_key(n, i)), slots_of(n)[i].ref});
  return items;
}

void writer::impl::replace_node(std::uint64_t ref) {
  const std::uint64_t bytes = node(ref)->block_bytes;
  if (const auto it = tree_fresh.find(ref); it != tree_fresh.end()) {
    tree_fresh.erase(it);
    release(ref, bytes);  // written since the last publish: no reader saw it
  } else {
    tree_replaced.push_back(detail::block{ref, bytes});
  }
}

result<std::vector<tree_item>> writer::impl::write_nodes(unsigned level,
                                                         std::span<const tree_item> items) {
  // As few nodes as the fanout allows, filled evenly: a split leaves two
  // halves, a merge of two small neighbours one node.
  const std::size_t parts =
      (items.size() + detail::btree_max_fanout - 1) / detail::btree_max_fanout;
  std::vector<tree_item> out;
  out.reserve(parts);
  for (std::size_t p = 0, begin = 0; p < parts; ++p) {
    const std::size_t end = items.size() * (p + 1) / parts;
    std::uint64_t bytes = sizeof(btree_node) + (end - begin) * sizeof(btree_slot);
    for (std::size_t i = begin; i < end; ++i) bytes += items[i].key.size();
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
    std::uint64_t at = sizeof(btree_node) + (end - begin) * sizeof(btree_slot);
    for (std::size_t i = begin; i < end; ++i) {
      const std::string& k = items[i].key;
      slots[i - begin] = btree_slot{items[i].ref, static_cast<std::uint32_t>(at),
                                    static_cast<std::uint32_t>(k.size())};
      std::memcpy(p0 + at, k.data(), k.size());
      at += k.size();
    }
    out.push_back(tree_item{items[begin].key, b->ref});
    begin = end;
  }
  return out;
}

result<std::vector<tree_item>> writer::impl::tree_modify(std::uint64_t ref, std::string_view key,
                                                         std::uint64_t entry, bool& changed,
                                                         std::int64_t& added) {
  const unsigned level = node(ref)->level;
  std::vector<tree_item> items = node_items(ref);
  if (level == 0) {
    auto it = std::lower_bound(items.begin(), items.end(), key,
                               [](const tree_item& i, std::string_view k) { return i.key < k; });
    const bool found = it != items.end() && it->key == key;
    if (entry == detail::null_ref) {
      if (!found) return items;
      items.erase(it);
      added = -1;
    } else if (found) {
      it->ref = entry;
    } else {
      items.insert(it, tree_item{std::string(key), entry});
      added = 1;
    }
    changed = true;
    replace_node(ref);
    return items;
  }
  const std::size_t i = child_for(items, key);
  auto child = tree_modify(items[i].ref, key, entry, changed, added);
  if (!child) return std::move(child).error();
  if (!changed) return items;
  std::vector<tree_item> below = std::move(*child);
  std::size_t first = i, replaced = 1;
  if (below.size() < detail::btree_min_fill && items.size() > 1) {
    // Underflow: merge with a neighbour (split again evenly if too large).
    const std::size_t j = i + 1 < items.size() ? i + 1 : i - 1;
    std::vector<tree_item> sibling = node_items(items[j].ref);
    if (j > i) {
      below.insert(below.end(), std::make_move_iterator(sibling.begin()),
                   std::make_move_iterator(sibling.end()));
    } else {
      sibling.insert(sibling.end(), std::make_move_iterator(below.begin()),
                     std::make_move_iterator(below.end()));
      below = std::move(sibling);
    }
    replace_node(items[j].ref);
    first = std::min(i, j);
    replaced = 2;
  }
  auto written = write_nodes(level - 1, below);
  if (!written) return std::move(written).error();
  items.erase(items.begin() + static_cast<std::ptrdiff_t>(first),
              items.begin() + static_cast<std::ptrdiff_t>(first + replaced));
  items.insert(items.begin() + static_cast<std::ptrdiff_t>(first),
               std::make_move_iterator(written->begin()), std::make_move_iterator(written->end()));
  replace_node(ref);
  return items;
}

result<bool> writer::impl::tree_apply(table_state& t, std::string_view key, std::uint64_t entry) {
  bool changed = false;
  std::int64_t added = 0;
  unsigned level = 0;
  std::vector<tree_item> items;
  if (t.tree_root == detail::null_ref) {
    if (entry == detail::null_ref) return false;
    items.push_back(tree_item{std::string(key), entry});
    changed = true;
    added = 1;
  } else {
    level = node(t.tree_root)->level;
    auto r = tree_modify(t.tree_root, key, entry, changed, added);
    if (!r) return std::move(r).error();
    if (!changed) return false;
    items = std::move(*r);
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
