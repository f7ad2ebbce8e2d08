// Readers on damaged segments: every read returns an error, never crashes,
// loops, throws or allocates what a corrupted count asks for. The damage is
// done through a read-write mapping, as a buggy or hostile process of the
// store's user could.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <limits>

#include "block.hpp"
#include "btree.hpp"
#include "layout.hpp"
#include "segment.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using detail::entry_header;
using detail::index_header;
using detail::store_header;

const std::vector<table_spec> kTables = {{"kv", table_kind::set, 16},
                                         {"log", table_kind::bag, 16},
                                         {"ord", table_kind::ordered_set, 16}};

/// A store with one set, one bag, an (empty) ordered table and an array, and
/// a read-write view of its segment 0.
struct damaged_store {
  store_options o = testing::test_options("corrupt");
  writer w = writer::create(o, kTables).value();
  testing::raw_object seg0{segment_name(o.ns, o.name, 0)};

  damaged_store() {
    w.put("kv", "plain", "text").value();
    w.put("kv", "nd", ndarray::zeros(dtype::f32, {4, 4})).value();
    for (int i = 0; i < 3; ++i) w.put("log", "k", i).value();
  }
  store_header* header() const { return seg0.at<store_header>(detail::store_header_offset); }
  index_header* index(std::uint32_t table) const {
    const std::uint64_t root = header()->tables[table].root.load();
    EXPECT_EQ(detail::ref_segment(root), 0u) << "the test store fits in segment 0";
    return seg0.at<index_header>(detail::ref_offset(root));
  }
  /// The slot of `key` in `table`.
  detail::shared_u64* slot(std::uint32_t table, std::string_view key) const {
    index_header* ix = index(table);
    auto* slots = reinterpret_cast<detail::shared_u64*>(ix + 1);
    for (std::uint64_t i = 0; i < ix->capacity; ++i) {
      const std::uint64_t s = slots[i].load();
      if (!detail::slot_has_entry(s)) continue;
      const auto* b = seg0.at<detail::entry_block>(detail::ref_offset(detail::slot_ref(s)));
      if (detail::key_of(b) == key) return &slots[i];
    }
    ADD_FAILURE() << "no key " << key;
    return nullptr;
  }
  /// The newest block of `key` in `table`.
  detail::entry_block* block(std::uint32_t table, std::string_view key) const {
    return seg0.at<detail::entry_block>(
        detail::ref_offset(detail::slot_ref(slot(table, key)->load())));
  }
  /// The newest block of `key` in `table`, which has the full header.
  entry_header* entry(std::uint32_t table, std::string_view key) const {
    entry_header* e = detail::full_of(block(table, key));
    EXPECT_NE(e, nullptr) << "key " << key << " has a compact block";
    return e;
  }
  std::uint64_t ref_of(const void* e) const {
    return detail::make_ref(
        0, static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(e) - seg0.data()));
  }
  /// Room to forge blocks in: the value bytes of a large entry of "kv"
  /// (written on first use), 64-byte aligned, `bytes` long.
  std::byte* scratch(std::size_t bytes = 16 << 10) {
    if (scratch_ == nullptr) {
      w.put("kv", "scratch", Bytes{std::string(bytes + 128, '\xa5')}).value();
      entry_header* e = entry(0, "scratch");
      const std::uint64_t at = ref_of(e) + e->value_offset;
      scratch_ = seg0.data() + (at + 63) / 64 * 64;
    }
    return scratch_;
  }
  /// A copy of `block`'s `bytes` at `misalign` bytes past a 64-byte boundary of
  /// the scratch area (after `skip` bytes of it): a block that reads as valid
  /// wherever it starts.
  std::uint64_t misaligned_copy(const void* block, std::uint64_t bytes, std::uint64_t skip,
                                std::uint64_t misalign = 4) {
    std::byte* at = scratch() + skip + misalign;
    std::memcpy(at, block, bytes);
    return ref_of(at);
  }

 private:
  std::byte* scratch_ = nullptr;
};

/// Every read of `table` (and of `key` in it) fails cleanly.
void expect_every_read_fails(const reader& r, std::string_view table, std::string_view key) {
  EXPECT_FALSE(r.get(table, key));
  EXPECT_FALSE(r.get_all(table, key));
  EXPECT_FALSE(r.get_view(table, key));
  EXPECT_FALSE(r.peek(table, key, [](std::span<const std::byte>) {}));
  if (const auto number = r.table_number(table)) {
    EXPECT_FALSE(r.peek(
        *number, key, [](void*, std::span<const std::byte>) noexcept {}, nullptr));
  }
  EXPECT_FALSE(r.for_each(table, [](std::string_view, const view&) { return true; }));
}

/// Every read that walks the chain of `key` in `table` fails cleanly (`get`,
/// `get_view` and `peek` read only the oldest block, through the head's `first`).
void expect_chain_reads_fail(const reader& r, std::string_view table, std::string_view key) {
  EXPECT_FALSE(r.get_all(table, key));
  EXPECT_FALSE(r.for_each(table, [](std::string_view, const view&) { return true; }));
}

TEST(Corruption, ABagChainThatLoopsIsAnError) {
  damaged_store s;
  entry_header* newest = s.entry(1, "k");
  newest->next = s.ref_of(newest);  // points at itself, count unchanged
  auto r = reader::attach(s.o.ns, s.o.name).value();
  expect_chain_reads_fail(r, "log", "k");
  auto all = r.get_all("log", "k");
  ASSERT_FALSE(all);
  EXPECT_EQ(all.error().code, errc::layout_mismatch);
  EXPECT_NE(all.error().message.find("bag chain"), std::string::npos) << all.error().message;
  newest->next = s.ref_of(newest);
  newest->count = 1u << 20;  // a loop that also claims a long chain
  expect_chain_reads_fail(r, "log", "k");
}

TEST(Corruption, AHugeCountIsNeverReserved) {
  damaged_store s;
  s.entry(0, "nd")->count = std::numeric_limits<std::uint32_t>::max() / 2;
  s.entry(1, "k")->count = std::numeric_limits<std::uint32_t>::max() / 2;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  EXPECT_FALSE(r.get_all("kv", "nd"));
  EXPECT_FALSE(r.for_each("kv", [](std::string_view, const view&) { return true; }));
  expect_chain_reads_fail(r, "log", "k");
}

TEST(Corruption, ABagWhoseFirstIsNotItsChainEndIsAnError) {
  damaged_store s;
  entry_header* newest = s.entry(1, "k");
  auto r = reader::attach(s.o.ns, s.o.name).value();
  ASSERT_EQ(r.get("log", "k").value(), Value(0));
  const std::uint64_t good = newest->first;
  for (const std::uint64_t bad : {
           s.ref_of(newest),                 // not a chain's end (count 3)
           s.ref_of(s.block(0, "plain")),    // a chain's end (compact), of another key
           detail::make_ref(0, 1ull << 40),  // outside the segment
       }) {
    newest->first = bad;
    EXPECT_FALSE(r.get("log", "k"));
    EXPECT_FALSE(r.get_view("log", "k"));
    EXPECT_FALSE(r.peek("log", "k", [](std::span<const std::byte>) {}));
    EXPECT_EQ(r.get_all("log", "k").value().size(), 3u);  // the chain itself is intact
  }
  newest->first = good;
  EXPECT_EQ(r.get("log", "k").value(), Value(0));
}

TEST(Corruption, AnNdarrayShapeLargerThanItsBlockIsAnError) {
  damaged_store s;
  entry_header* e = s.entry(0, "nd");
  auto* shape = reinterpret_cast<std::uint64_t*>(reinterpret_cast<std::byte*>(e) +
                                                 detail::align_up(sizeof(entry_header) + 2, 8));
  auto r = reader::attach(s.o.ns, s.o.name).value();
  ASSERT_TRUE(r.get_view("kv", "nd").value()->array().nbytes() == 64);
  for (std::uint64_t bad : {std::uint64_t{5}, std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
    shape[0] = bad;
    auto v = r.get_view("kv", "nd");
    ASSERT_FALSE(v) << "shape " << bad;
    EXPECT_EQ(v.error().code, errc::decode_error);
    EXPECT_FALSE(r.get("kv", "nd"));
    EXPECT_FALSE(r.for_each("kv", [](std::string_view, const view&) { return true; }));
  }
  shape[0] = 4;
  e->dtype = 200;
  EXPECT_FALSE(r.get_view("kv", "nd"));
  e->dtype = static_cast<std::uint8_t>(dtype::f32);
  e->ndim = 40;
  EXPECT_FALSE(r.get_view("kv", "nd"));
}

TEST(Corruption, IndexesAndReferencesOutOfRangeAreErrors) {
  damaged_store s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  index_header* ix = s.index(0);
  const std::uint64_t capacity = ix->capacity;
  for (std::uint64_t bad :
       {std::uint64_t{0}, std::uint64_t{3}, std::uint64_t{1} << 30, std::uint64_t{1} << 62}) {
    ix->capacity = bad;
    expect_every_read_fails(r, "kv", "plain");
    EXPECT_FALSE(r.keys("kv"));
    EXPECT_FALSE(r.size("kv"));
  }
  ix->capacity = capacity;
  ASSERT_TRUE(r.get("kv", "plain").value());

  // A slot that points past its segment, or into a segment that does not exist.
  auto* slots = reinterpret_cast<detail::shared_u64*>(ix + 1);
  for (std::uint64_t i = 0; i < capacity; ++i) {
    const std::uint64_t v = slots[i].load();
    if (detail::slot_has_entry(v)) {
      slots[i].store(detail::make_ref(0, s.seg0.size() - 64) | (v & ~detail::slot_ref_mask));
    }
  }
  EXPECT_FALSE(r.for_each("kv", [](std::string_view, const view&) { return true; }));
  EXPECT_FALSE(r.keys("kv"));
  for (std::uint64_t i = 0; i < capacity; ++i) {
    const std::uint64_t v = slots[i].load();
    if (detail::slot_has_entry(v)) {
      slots[i].store(detail::make_ref(40, 4096) | (v & ~detail::slot_ref_mask));
    }
  }
  EXPECT_FALSE(r.for_each("kv", [](std::string_view, const view&) { return true; }));
  s.header()->tables[0].root.store(detail::make_ref(0, s.seg0.size()));
  expect_every_read_fails(r, "kv", "plain");
}

TEST(Corruption, ACompactBlockThatClaimsBytesPastItsSegmentIsAnError) {
  damaged_store s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  ASSERT_EQ(detail::layout_of(s.block(0, "plain")), detail::entry_layout::compact);
  // A compact header in the segment's last bytes whose key and value
  // lengths reach past its end; the slot of "plain" references it.
  const std::uint64_t at = s.seg0.size() - 16;
  detail::write_compact(s.seg0.data() + at, "plain", detail::compact_max_value);
  detail::shared_u64* slot = s.slot(0, "plain");
  const std::uint64_t good = slot->load();
  slot->store(detail::make_ref(0, at) | (good & ~detail::slot_ref_mask));
  expect_every_read_fails(r, "kv", "plain");
  EXPECT_EQ(r.get("kv", "plain").error().code, errc::io_error);
  EXPECT_FALSE(r.keys("kv"));
  slot->store(good);
  EXPECT_EQ(r.get("kv", "plain").value(), Value("text"));
}

TEST(Corruption, AnUnknownEntryLayoutIsAnError) {
  damaged_store s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  for (const char* key : {"plain", "nd"}) {
    auto* first = reinterpret_cast<std::uint8_t*>(s.block(0, key));
    const std::uint8_t good = *first;
    for (const std::uint8_t bad : {0, 3, 15}) {
      *first = static_cast<std::uint8_t>((good & 0xf0) | bad);
      expect_every_read_fails(r, "kv", key);
      EXPECT_FALSE(r.keys("kv"));
    }
    *first = good;
    EXPECT_TRUE(r.get("kv", key).value()) << key;
  }
}

TEST(Corruption, ACompactValueWhoseLengthLiesIsADecodeError) {
  damaged_store s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  auto* word = reinterpret_cast<std::uint64_t*>(s.block(0, "plain"));
  const std::uint64_t good = *word;
  for (const std::uint64_t bytes : {std::uint64_t{0}, std::uint64_t{3}, std::uint64_t{200}}) {
    *word = (good & ~(detail::compact_max_value << detail::compact_value_shift)) |
            bytes << detail::compact_value_shift;
    auto v = r.get("kv", "plain");
    ASSERT_FALSE(v) << bytes << " bytes";
    EXPECT_EQ(v.error().code, errc::decode_error);
  }
  *word = good;
  EXPECT_EQ(r.get("kv", "plain").value(), Value("text"));
}

// A damaged block among good ones fails the batch with the error `get` of
// its key reports; the keys before it were visited, none after.
TEST(Corruption, AGetManyThatMeetsADamagedBlockFailsAsGetDoes) {
  damaged_store s;
  for (int i = 0; i < 20; ++i) s.w.put("kv", testing::numbered("k", i), i).value();
  auto r = reader::attach(s.o.ns, s.o.name).value();
  std::vector<std::string> names;
  for (int i = 0; i < 20; ++i) names.push_back(testing::numbered("k", i));
  names.insert(names.begin() + 11, "nd");
  const std::vector<std::string_view> keys(names.begin(), names.end());
  ASSERT_TRUE(r.get_many("kv", keys));

  entry_header* e = s.entry(0, "nd");
  auto* first = reinterpret_cast<std::uint8_t*>(e);
  const std::uint8_t layout = *first;
  auto expect_batch_fails = [&](errc code) {
    const auto one = r.get("kv", "nd");
    ASSERT_FALSE(one);
    EXPECT_EQ(one.error().code, code);
    const auto many = r.get_many("kv", keys);
    ASSERT_FALSE(many);
    EXPECT_EQ(many.error().code, code);
    EXPECT_EQ(many.error().message, one.error().message);
    std::size_t visited = 0;
    const auto seen = r.get_many("kv", keys, [&](std::size_t i, const reader::scanned*) {
      EXPECT_EQ(i, visited++);
      return true;
    });
    ASSERT_FALSE(seen);
    EXPECT_EQ(seen.error().code, code);
    EXPECT_EQ(visited, 11u);
  };
  *first = static_cast<std::uint8_t>((layout & 0xf0) | 3);  // an unknown layout
  expect_batch_fails(errc::io_error);
  *first = layout;
  e->dtype = 200;  // an ndarray of no known dtype
  expect_batch_fails(errc::decode_error);
  e->dtype = static_cast<std::uint8_t>(dtype::f32);
  EXPECT_TRUE(r.get_many("kv", keys));

  entry_header* bag = s.entry(1, "k");
  bag->first = s.ref_of(bag);  // a bag whose oldest value is not its chain's end
  const std::vector<std::string_view> in_bag = {"absent", "k"};
  const auto many = r.get_many("log", in_bag);
  ASSERT_FALSE(many);
  EXPECT_EQ(many.error().code, errc::layout_mismatch);
}

TEST(Corruption, AHeaderWithAnUnknownTableKindIsRefused) {
  damaged_store s;
  s.header()->tables[1].kind = 77;
  auto r = reader::attach(s.o.ns, s.o.name);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::layout_mismatch);
}

// References are 8-byte aligned: a misaligned one is damage even when the
// bytes it points at read as a valid block (a copy of the real one), and is
// never dereferenced (a misaligned access is undefined behaviour).
TEST(Corruption, AMisalignedBagReferenceIsAnError) {
  damaged_store s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  entry_header* newest = s.entry(1, "k");
  auto* middle = s.seg0.at<entry_header>(detail::ref_offset(newest->next));
  auto* oldest = s.seg0.at<entry_header>(detail::ref_offset(newest->first));
  ASSERT_EQ(middle->count, 2u);
  ASSERT_EQ(oldest->count, 1u);
  const std::uint64_t next = newest->next, first = newest->first;
  for (const std::uint64_t misalign : {1, 2, 4}) {
    newest->first = s.misaligned_copy(oldest, oldest->block_bytes, 0, misalign);
    EXPECT_FALSE(r.get("log", "k")) << misalign;
    EXPECT_FALSE(r.get_view("log", "k")) << misalign;
    EXPECT_FALSE(r.peek("log", "k", [](std::span<const std::byte>) {})) << misalign;
    newest->first = first;
    newest->next = s.misaligned_copy(middle, middle->block_bytes, 1024, misalign);
    expect_chain_reads_fail(r, "log", "k");
    newest->next = next;
  }
  EXPECT_EQ(r.get_all("log", "k").value().size(), 3u);
  // The same for a table's index.
  const std::uint64_t root = s.header()->tables[0].root.load();
  s.header()->tables[0].root.store(
      s.misaligned_copy(s.index(0), detail::index_bytes(s.index(0)->capacity), 2048));
  expect_every_read_fails(r, "kv", "plain");
  s.header()->tables[0].root.store(root);
  EXPECT_EQ(r.get("kv", "plain").value(), Value("text"));
}

// A chain's counts must fall by one per block down to 1: a head that claims
// fewer or more values than its chain holds, a link out of the segment or
// into one that does not exist, is an error.
TEST(Corruption, ABagChainWhoseCountsOrLinksLieIsAnError) {
  damaged_store s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  entry_header* newest = s.entry(1, "k");
  const std::uint32_t count = newest->count;
  ASSERT_EQ(count, 3u);
  for (const std::uint32_t lie : {0u, 1u, 2u, 4u, UINT32_MAX}) {
    newest->count = lie;
    expect_chain_reads_fail(r, "log", "k");
  }
  newest->count = count;
  const std::uint64_t next = newest->next, first = newest->first;
  for (const std::uint64_t bad :
       {detail::make_ref(0, s.seg0.size() - 8), detail::make_ref(0, s.seg0.size() + 64),
        detail::make_ref(9, 64), detail::make_ref(0xffff, 64)}) {
    newest->next = bad;
    expect_chain_reads_fail(r, "log", "k");
    newest->first = bad;
    EXPECT_FALSE(r.get("log", "k"));
    newest->first = detail::null_ref;
    EXPECT_FALSE(r.get("log", "k"));
    newest->next = next;
    newest->first = first;
  }
  EXPECT_EQ(r.get("log", "k").value(), Value(0));
  EXPECT_EQ(r.get_all("log", "k").value().size(), 3u);
}

// ---------------------------------------------------------------------------
// Ordered tables: B+tree nodes

using detail::btree_node;
using detail::btree_slot;

/// `damaged_store` whose ordered table holds 200 keys "o1000".."o1199" (a
/// root of level 1 over a few leaves, values inline) and "wide", whose value
/// is too large to be inline: its leaf references its (compact) entry block.
struct damaged_tree : damaged_store {
  damaged_tree() {
    for (int i = 0; i < 200; ++i) w.put("ord", testing::numbered("o", 1000 + i), i).value();
    w.put("ord", "wide", Bytes{std::string(1000, 'w')}).value();
  }
  std::uint64_t root_ref() const { return header()->tree_roots[2].load(); }
  btree_node* node(std::uint64_t ref) const {
    EXPECT_EQ(detail::ref_segment(ref), 0u) << "the test store fits in segment 0";
    return seg0.at<btree_node>(detail::ref_offset(ref));
  }
  btree_node* root() const { return node(root_ref()); }
  static btree_slot* slots(btree_node* n) { return reinterpret_cast<btree_slot*>(n + 1); }
  static std::string key(const btree_node* n, unsigned i) {
    return std::string(detail::slot_key(n, i));
  }
  /// A node of `level` forged at `at` (8-byte aligned), one slot per (key,
  /// reference), its keys after the slots; its reference.
  std::uint64_t forge(std::byte* at, unsigned level,
                      const std::vector<std::pair<std::string, std::uint64_t>>& children,
                      std::uint64_t entries) const {
    auto* n = reinterpret_cast<btree_node*>(at);
    std::uint64_t end = sizeof(btree_node) + children.size() * sizeof(btree_slot);
    for (std::size_t i = 0; i < children.size(); ++i) {
      const auto& [k, ref] = children[i];
      slots(n)[i] = {ref, static_cast<std::uint32_t>(end), static_cast<std::uint32_t>(k.size())};
      std::memcpy(at + end, k.data(), k.size());
      end += k.size();
    }
    *n = {detail::btree_magic,
          static_cast<std::uint16_t>(level),
          static_cast<std::uint16_t>(children.size()),
          (end + 7) / 8 * 8,
          entries,
          end,
          {}};
    return ref_of(at);
  }
};

/// Every read of "ord" that walks the whole tree, or seeks to `key`, fails
/// cleanly: an error, not a crash, a loop or a wrong answer.
void expect_tree_reads_fail(const reader& r, const std::string& key, const std::string& what) {
  EXPECT_FALSE(r.range("ord")) << what;
  EXPECT_FALSE(r.range("ord", {}, {}, SIZE_MAX, true)) << what;
  EXPECT_FALSE(r.range("ord", key, {}, 3)) << what;
  EXPECT_FALSE(r.range("ord", {}, key + '\0', 3, true)) << what;
  EXPECT_FALSE(r.keys("ord")) << what;
  EXPECT_FALSE(r.keys("ord", key)) << what;
  for (const bool reverse : {false, true}) {
    EXPECT_FALSE(r.scan("ord", {{}, {}, SIZE_MAX, reverse}, [](const reader::scanned&) {
      return true;
    })) << what;
  }
}

/// The tree reads back whole, in order.
void expect_tree_intact(const reader& r) {
  const auto all = r.range("ord");
  ASSERT_TRUE(all) << all.error().message;
  ASSERT_EQ(all->size(), 201u);
  EXPECT_EQ(all->front().first, "o1000");
  EXPECT_EQ(all->back().first, "wide");
  EXPECT_EQ(r.last("ord").value()->second, Value(Bytes{std::string(1000, 'w')}));
}

TEST(Corruption, ATreeRootThatIsNotANodeIsAnError) {
  damaged_tree s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  expect_tree_intact(r);
  const std::uint64_t root = s.root_ref();
  const std::vector<std::pair<std::uint64_t, std::string>> bad = {
      {root + 4, "misaligned"},
      {root + 1, "misaligned, odd"},
      {s.misaligned_copy(s.root(), s.root()->block_bytes, 0), "a misaligned copy of the root"},
      {s.header()->tables[2].root.load(), "the table's index"},
      {s.ref_of(s.entry(0, "nd")), "an entry block"},
      {detail::make_ref(0, s.seg0.size() - 8), "the segment's last bytes"},
      {detail::make_ref(0, s.seg0.size() + 64), "past the segment"},
      {detail::make_ref(9, 64), "a segment that does not exist"},
  };
  for (const auto& [ref, what] : bad) {
    s.header()->tree_roots[2].store(ref);
    expect_tree_reads_fail(r, "o1100", what);
    EXPECT_FALSE(r.first("ord")) << what;
    EXPECT_FALSE(r.last("ord")) << what;
  }
  s.header()->tree_roots[2].store(root);
  expect_tree_intact(r);
}

// A child reference must be a node one level down: anything else (outside
// the segment, misaligned, the node itself, an entry or index block) is an
// error, whichever end of the tree it is at.
TEST(Corruption, ATreeChildThatIsNotANodeBelowIsAnError) {
  damaged_tree s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  btree_node* root = s.root();
  ASSERT_EQ(root->level, 1u);
  ASSERT_GE(root->count, 3u);
  for (const unsigned i : {0u, root->count - 1u}) {
    btree_slot& slot = damaged_tree::slots(root)[i];
    const std::uint64_t child = slot.ref;
    const std::string key = damaged_tree::key(root, i);
    const std::vector<std::pair<std::uint64_t, std::string>> bad = {
        {detail::make_ref(0, s.seg0.size() - 32), "the segment's last bytes"},
        {detail::make_ref(0, s.seg0.size() + 4096), "past the segment"},
        {detail::make_ref(9, 64), "a segment that does not exist"},
        {detail::make_ref(0xffff, 64), "segment 65535"},
        {child + 4, "misaligned"},
        {s.misaligned_copy(s.node(child), s.node(child)->block_bytes, 0), "a misaligned copy"},
        {s.root_ref(), "the node itself"},
        {s.header()->tables[2].root.load(), "the table's index"},
        {s.ref_of(s.entry(0, "nd")), "an entry block"},
        {detail::null_ref, "null"},
    };
    for (const auto& [ref, what] : bad) {
      slot.ref = ref;
      expect_tree_reads_fail(r, key, what + " at slot " + std::to_string(i));
      EXPECT_FALSE(i == 0 ? r.first("ord") : r.last("ord")) << what;
    }
    slot.ref = child;
  }
  expect_tree_intact(r);
}

// A node's count must fit both the fanout and its block; a node's block must
// lie in its segment.
TEST(Corruption, ATreeNodeWhoseCountOrSizeLiesIsAnError) {
  damaged_tree s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  btree_node* root = s.root();
  btree_node* leaf = s.node(damaged_tree::slots(root)[1].ref);
  const std::string key = damaged_tree::key(root, 1);
  for (btree_node* n : {root, leaf}) {
    const std::string which = n == root ? "root: " : "leaf: ";
    const std::uint16_t count = n->count;
    const std::uint64_t bytes = n->block_bytes;
    for (const std::uint16_t lie : {0, 65, 0xffff}) {
      n->count = lie;
      expect_tree_reads_fail(r, key, which + "count " + std::to_string(lie));
    }
    // Slots that run past the block's end.
    n->count = static_cast<std::uint16_t>((bytes - sizeof(btree_node)) / sizeof(btree_slot) + 1);
    if (n->count <= detail::btree_max_fanout) expect_tree_reads_fail(r, key, which + "slots past");
    n->count = count;
    for (const std::uint64_t lie : {std::uint64_t{0}, std::uint64_t{63}, s.seg0.size(),
                                    std::uint64_t{1} << 62, ~std::uint64_t{0}}) {
      n->block_bytes = lie;
      expect_tree_reads_fail(r, key, which + "block_bytes " + std::to_string(lie));
    }
    n->block_bytes = bytes;
  }
  expect_tree_intact(r);
}

// Keys are checked against their node as they are read: a key that runs past
// it (or over its slots) fails the read that reaches it. A seek reads
// internal keys, a scan leaf keys.
TEST(Corruption, ATreeKeyThatRunsPastItsNodeIsAnError) {
  damaged_tree s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  btree_node* root = s.root();
  btree_node* leaf = s.node(damaged_tree::slots(root)[0].ref);
  const std::string key = damaged_tree::key(root, 1);
  for (btree_node* n : {root, leaf}) {
    const std::uint64_t bytes = n->block_bytes;
    const std::vector<std::pair<std::uint32_t, std::uint32_t>> bad = {
        {static_cast<std::uint32_t>(bytes - 2), 3},  // one byte too long
        {static_cast<std::uint32_t>(bytes), 1},
        {UINT32_MAX - 8, 32},  // offset + length wraps in 32 bits
        {64, 8},               // over the slots
        {0, 4},                // over the header
        {static_cast<std::uint32_t>(n->keys_end), UINT32_MAX},
    };
    std::vector<btree_slot> good(damaged_tree::slots(n), damaged_tree::slots(n) + n->count);
    for (const auto& [offset, length] : bad) {
      const std::string what = (n == root ? "root" : "leaf") + std::string(" key at ") +
                               std::to_string(offset) + "+" + std::to_string(length);
      // Every slot: a binary search may read any of them.
      for (unsigned i = 0; i < n->count; ++i) {
        damaged_tree::slots(n)[i].key_offset = offset;
        damaged_tree::slots(n)[i].key_bytes = length;
      }
      if (n == root) {
        EXPECT_FALSE(r.range("ord", key, {}, 3)) << what;
        EXPECT_FALSE(r.range("ord", {}, key, 3, true)) << what;
        EXPECT_FALSE(r.keys("ord", key)) << what;
      } else {
        expect_tree_reads_fail(r, "o1000", what);
        EXPECT_FALSE(r.first("ord")) << what;
      }
      std::copy(good.begin(), good.end(), damaged_tree::slots(n));
    }
  }
  expect_tree_intact(r);
}

// Keys out of order give wrong answers, never a crash or an endless walk:
// every read ends, with an error or at most the keys the tree holds.
TEST(Corruption, ATreeWithKeysOutOfOrderStillEndsEveryRead) {
  damaged_tree s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  btree_node* root = s.root();
  btree_node* leaf = s.node(damaged_tree::slots(root)[1].ref);
  for (btree_node* n : {root, leaf}) {
    btree_slot* slot = damaged_tree::slots(n);
    std::vector<btree_slot> good(slot, slot + n->count);
    for (unsigned i = 0; i < n->count; ++i) {  // keys reversed, references kept
      slot[i].key_offset = good[n->count - 1 - i].key_offset;
      slot[i].key_bytes = good[n->count - 1 - i].key_bytes;
    }
    auto ends = [&](const auto& got, const char* what) {
      if (got) {
        EXPECT_LE(got->size(), 201u) << what;
      }
    };
    for (const bool reverse : {false, true}) {
      for (const char* lo : {"", "o1050", "o1100", "o1150", "p"}) {
        ends(r.range("ord", lo, {}, SIZE_MAX, reverse), lo);
        ends(r.range("ord", {}, lo, 10, reverse), lo);
        ends(r.range("ord", lo, "o1120", 5, reverse), lo);
        ends(r.keys("ord", lo), lo);
      }
    }
    (void)r.first("ord");
    (void)r.last("ord");
    std::copy(good.begin(), good.end(), slot);
  }
  expect_tree_intact(r);
}

// Nodes that share children (a DAG, which a cycle through a lower level
// would be) or point back up: the levels must fall by one per step, and a
// walk never visits more keys than the root claims, nor the root claim more
// than the reader's mapped segments could hold, whatever the store header says.
TEST(Corruption, ATreeThatLoopsOrSharesNodesEndsInAnError) {
  damaged_tree s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  const std::uint64_t root = s.root_ref(), leaf = damaged_tree::slots(s.root())[0].ref;
  const std::string first = damaged_tree::key(s.root(), 0);
  std::byte* at = s.scratch();

  // A node whose child points back at it (its parent).
  const std::uint64_t top = s.ref_of(at), mid = s.ref_of(at + 1024);
  s.forge(at + 1024, 1, {{first, leaf}, {"o2", top}}, 0);
  s.forge(at, 2, {{first, mid}}, 100);
  s.header()->tree_roots[2].store(top);
  expect_tree_reads_fail(r, "o2", "a child pointing at its parent");

  // Five levels of 64 slots that all reference the same node: 64^5 paths to
  // one leaf.
  std::uint64_t below = leaf;
  std::vector<std::pair<std::string, std::uint64_t>> wide;
  for (unsigned level = 1; level <= 5; ++level) {
    wide.assign(detail::btree_max_fanout, {first, below});
    below = s.forge(at + 2048 * level, level, wide, 0);
  }
  auto* dag = s.node(below);
  s.header()->tree_roots[2].store(below);
  auto visits = [&](const char* what) {
    std::uint64_t n = 0;
    const auto scanned = r.scan("ord", {}, [&](const reader::scanned&) { return ++n < 2000000; });
    EXPECT_FALSE(scanned) << what << ": " << n << " entries visited";
    return n;
  };
  dag->entries = 201;
  EXPECT_LE(visits("as many keys as the real tree"), 201u);
  dag->entries = 60000;
  EXPECT_LE(visits("more keys, within the segment's room"), 60000u);
  // A header that claims segments far larger than those mapped: a bound
  // taken from it would let the walk run for years.
  detail::store_header* h = s.header();
  const std::uint64_t segments = h->segment_count.load();
  ASSERT_EQ(segments, 1u);
  h->segment_count.store(3);
  h->segment_bytes[1].store(std::uint64_t{1} << 60);
  h->segment_bytes[2].store(std::uint64_t{1} << 59);
  dag->entries = std::uint64_t{1} << 40;
  EXPECT_EQ(visits("a root that claims 2^40 keys"), 0u);
  h->segment_count.store(segments);
  h->segment_bytes[1].store(0);
  h->segment_bytes[2].store(0);
  s.header()->tree_roots[2].store(root);
  expect_tree_intact(r);
}

// A segment made terabytes long by ftruncate costs its writer no memory: the
// bound on a root's key count comes from the memory the segments really
// hold, not from their sizes, so nodes that share children still end in an
// error at once.
TEST(Corruption, ASparseSegmentDoesNotLoosenTheTreeBound) {
  damaged_tree s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  const std::uint64_t root = s.root_ref(), leaf = damaged_tree::slots(s.root())[0].ref;
  const std::string first = damaged_tree::key(s.root(), 0);
  std::uint64_t below = leaf;
  std::vector<std::pair<std::string, std::uint64_t>> wide;
  for (unsigned level = 1; level <= 5; ++level) {
    wide.assign(detail::btree_max_fanout, {first, below});
    below = s.forge(s.scratch() + 2048 * level, level, wide, 0);
  }
  {
    // Segment 1, forged: 1 TiB long, one page of it written (its header).
    const std::uint64_t sparse = std::uint64_t{1} << 40;
    const std::string name = segment_name(s.o.ns, s.o.name, 1);
    const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0) << name;
    struct unlink_at_end {
      std::string name;
      int fd;
      ~unlink_at_end() {
        ::close(fd);
        ::shm_unlink(name.c_str());
      }
    } cleanup{name, fd};
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(sparse)), 0);
    const detail::segment_header sh{detail::store_magic,
                                    detail::layout_version,
                                    s.seg0.at<detail::segment_header>(0)->incarnation,
                                    1,
                                    sparse,
                                    {}};
    ASSERT_EQ(::pwrite(fd, &sh, sizeof(sh), 0), static_cast<ssize_t>(sizeof(sh)));
    detail::store_header* h = s.header();
    ASSERT_EQ(h->segment_count.load(), 1u);
    h->segment_bytes[1].store(sparse);
    h->segment_count.store(2);
    // 2^34 keys: within what 1 TiB of slots could hold, far past what the
    // store's memory holds.
    s.node(below)->entries = std::uint64_t{1} << 34;
    s.header()->tree_roots[2].store(below);
    std::uint64_t n = 0;
    const auto scanned = r.scan("ord", {}, [&](const reader::scanned&) { return ++n < 2000000; });
    ASSERT_FALSE(scanned) << n << " entries visited";
    EXPECT_EQ(n, 0u);
    EXPECT_NE(scanned.error().message.find("more keys than the store can hold"), std::string::npos)
        << scanned.error().message;
    s.header()->tree_roots[2].store(root);
    h->segment_count.store(1);
    h->segment_bytes[1].store(0);
  }
  expect_tree_intact(r);
}

// The bound's other side: keys written after a reader mapped a segment, into
// pages that were holes then, read whole (the bound looks at the segments
// again before it refuses a root).
TEST(Corruption, ATreeGrownIntoPagesBackedSinceAttachReadsWhole) {
  store_options o = testing::test_options("backed");
  o.initial_segment_bytes = std::uint64_t{64} << 20;  // mostly a hole at first
  const std::vector<table_spec> tables = {{"ord", table_kind::ordered_set, 16}};
  writer w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  EXPECT_TRUE(r.keys("ord").value().empty());
  for (int i = 0; i < 50000; ++i) w.put("ord", testing::numbered("k", 100000 + i), i).value();
  const auto all = r.keys("ord");
  ASSERT_TRUE(all) << all.error().message;
  EXPECT_EQ(all->size(), 50000u);
  EXPECT_EQ(r.range("ord", {}, {}, SIZE_MAX, true).value().size(), 50000u);
}

// A leaf's reference to an entry block is checked like any other: a
// misaligned one fails the read even where its bytes would read as the entry.
TEST(Corruption, AMisalignedLeafReferenceIsAnError) {
  damaged_tree s;
  auto r = reader::attach(s.o.ns, s.o.name).value();
  btree_node* root = s.root();
  btree_node* leaf = s.node(damaged_tree::slots(root)[root->count - 1u].ref);
  btree_slot& slot = damaged_tree::slots(leaf)[leaf->count - 1u];
  ASSERT_EQ(damaged_tree::key(leaf, leaf->count - 1u), "wide");
  const std::uint64_t good = slot.ref;
  ASSERT_EQ(good & detail::btree_inline_flag, 0u) << "a large value is not inline";
  const auto* e = s.seg0.at<detail::entry_block>(detail::ref_offset(good));
  ASSERT_EQ(detail::layout_of(e), detail::entry_layout::compact);
  const std::uint64_t bytes = detail::compact_bytes(detail::compact_word(e));
  for (const std::uint64_t misalign : {2, 4, 6}) {
    slot.ref = s.misaligned_copy(e, bytes, 0, misalign);
    EXPECT_FALSE(r.range("ord", "wide")) << misalign;
    EXPECT_FALSE(r.last("ord")) << misalign;
    EXPECT_FALSE(r.range("ord", {}, {}, SIZE_MAX, true)) << misalign;
    EXPECT_EQ(r.keys("ord").value().size(), 201u) << "a scan of keys reads no entry block";
  }
  slot.ref = good;
  expect_tree_intact(r);
}

}  // namespace
}  // namespace slither::shm
