// Readers on damaged segments: every read returns an error, never crashes,
// loops, throws or allocates what a corrupted count asks for. The damage is
// done through a read-write mapping, as a buggy or hostile process of the
// store's user could.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "block.hpp"
#include "layout.hpp"
#include "segment.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using detail::entry_header;
using detail::index_header;
using detail::store_header;

const std::vector<table_spec> kTables = {{"kv", table_kind::set, 16}, {"log", table_kind::bag, 16}};

/// A store with one set, one bag and an array, and a read-write view of its segment 0.
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

}  // namespace
}  // namespace slither::shm
