// The entry block formats (block.hpp): which entries get the compact layout,
// what a small entry costs, and that what the compact layout changed
// (8-byte blocks, hashes not kept) leaves arrays aligned and bags whole.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "block.hpp"
#include "layout.hpp"
#include "segment.hpp"
#include "shm_test_util.hpp"
#include "slither/core/codec.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

const std::vector<table_spec> kTables = {{"kv", table_kind::set, 16},
                                         {"log", table_kind::bag, 16},
                                         {"ord", table_kind::ordered_set, 16}};

/// The block `key` references in `table`, found through a read-write mapping of segment 0.
struct block_finder {
  store_options o;
  testing::raw_object seg0{segment_name(o.ns, o.name, 0)};

  explicit block_finder(store_options opts) : o(std::move(opts)) {}
  const detail::entry_block* block(std::uint32_t table, std::string_view key) const {
    const auto* h = seg0.at<detail::store_header>(detail::store_header_offset);
    const std::uint64_t root = h->tables[table].root.load();
    const auto* ix = seg0.at<detail::index_header>(detail::ref_offset(root));
    const auto* slots = reinterpret_cast<const detail::shared_u64*>(ix + 1);
    for (std::uint64_t i = 0; i < ix->capacity; ++i) {
      const std::uint64_t s = slots[i].load();
      if (!detail::slot_has_entry(s)) continue;
      const auto* b = seg0.at<detail::entry_block>(detail::ref_offset(detail::slot_ref(s)));
      if (detail::key_of(b) == key) return b;
    }
    ADD_FAILURE() << "no key " << key;
    return nullptr;
  }
};

TEST(EntryBlock, SmallSetValuesAreCompactEverythingElseIsFull) {
  store_options o = testing::test_options("blocks");
  o.initial_segment_bytes = 1 << 20;
  auto w = writer::create(o, kTables).value();
  const std::string long_key(detail::compact_max_key + 1, 'k');
  // The largest bytes value whose encoding fits a compact block, and one more byte.
  std::size_t limit = detail::compact_max_value;
  while (encoded_size(Value(Bytes{std::string(limit, 'x')})) > detail::compact_max_value) --limit;
  w.put("kv", "small", Bytes{std::string(32, 'x')}).value();
  w.put("kv", "limit", Bytes{std::string(limit, 'x')}).value();
  w.put("kv", "large", Bytes{std::string(limit + 1, 'x')}).value();
  w.put("kv", long_key, 1).value();
  w.put("kv", "array", ndarray::zeros(dtype::f32, {2})).value();
  w.put("log", "small", 1).value();
  w.put("ord", "small", 1).value();
  block_finder f(o);
  using detail::entry_layout;
  EXPECT_EQ(detail::layout_of(f.block(0, "small")), entry_layout::compact);
  ASSERT_EQ(detail::value_of(f.block(0, "limit")).size(), detail::compact_max_value);
  EXPECT_EQ(detail::layout_of(f.block(0, "limit")), entry_layout::compact);
  EXPECT_EQ(detail::layout_of(f.block(0, "large")), entry_layout::full);
  EXPECT_EQ(detail::layout_of(f.block(0, long_key)), entry_layout::full);
  EXPECT_EQ(detail::layout_of(f.block(0, "array")), entry_layout::full);
  EXPECT_EQ(detail::layout_of(f.block(1, "small")), entry_layout::full) << "a bag chains blocks";
  EXPECT_EQ(detail::layout_of(f.block(2, "small")), entry_layout::compact);

  const reader& r = w.read();
  EXPECT_EQ(r.get("kv", "small").value(), Value(Bytes{std::string(32, 'x')}));
  EXPECT_EQ(r.get("kv", "limit").value(), Value(Bytes{std::string(limit, 'x')}));
  EXPECT_EQ(r.get("kv", "large").value(), Value(Bytes{std::string(limit + 1, 'x')}));
  EXPECT_EQ(r.get("kv", long_key).value(), Value(1));
  EXPECT_EQ(r.range("ord").value().size(), 1u);
}

TEST(EntryBlock, CompactHeadersKeepTheirVersions) {
  auto w = writer::create(testing::test_options("blockver"), kTables).value();
  const std::uint64_t v1 = w.put("kv", "k", 1).value();
  const std::uint64_t v2 = w.put("ord", "k", 1).value();
  EXPECT_EQ(w.read().get_view("kv", "k").value()->version(), v1);
  EXPECT_EQ(w.read().get_view("ord", "k").value()->version(), v2);
  EXPECT_FALSE(w.compare_and_set("kv", "k", v1 + 100, 2));
  const std::uint64_t v3 = w.compare_and_set("kv", "k", v1, 2).value();
  EXPECT_GT(v3, v2);
  EXPECT_EQ(w.read().get_view("kv", "k").value()->version(), v3);
}

TEST(EntryBlock, FitsCompactAtItsLimitsOnly) {
  EXPECT_TRUE(detail::fits_compact(255, 4095, detail::compact_version_limit - 1));
  EXPECT_FALSE(detail::fits_compact(256, 1, 1));
  EXPECT_FALSE(detail::fits_compact(1, 4096, 1));
  EXPECT_FALSE(detail::fits_compact(1, 1, detail::compact_version_limit));
  // The word holds exactly what was written, the version in its top 40 bits.
  alignas(8) std::byte block[sizeof(detail::entry_header)]{};  // room for either header
  detail::write_compact(block, "key", 4);
  auto* e = reinterpret_cast<detail::entry_block*>(block);
  detail::set_version(e, detail::compact_version_limit - 1);
  EXPECT_EQ(detail::layout_of(e), detail::entry_layout::compact);
  EXPECT_EQ(detail::key_of(e), "key");
  EXPECT_EQ(detail::value_of(e).size(), 4u);
  EXPECT_EQ(detail::version_of(e), detail::compact_version_limit - 1);
}

// Blocks are 8-byte aligned now: an array's elements must still start on a
// 64-byte boundary whatever its block's offset.
TEST(EntryBlock, ArraysStayAlignedInEightByteBlocks) {
  auto w = writer::create(testing::test_options("blockalign"), kTables).value();
  for (int i = 0; i < 24; ++i) {
    const std::string key(static_cast<std::size_t>(i + 1), 'a');
    w.put("kv", key, ndarray::zeros(dtype::u8, {static_cast<std::uint64_t>(i)})).value();
    w.put("kv", key + "-s", std::string(static_cast<std::size_t>(i), 's')).value();
  }
  for (int i = 0; i < 24; ++i) {
    const std::string key(static_cast<std::size_t>(i + 1), 'a');
    auto v = w.read().get_view("kv", key).value();
    ASSERT_TRUE(v && v->is_ndarray()) << key;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v->bytes().data()) % ndarray::alignment, 0u) << key;
    EXPECT_EQ(v->array().nbytes(), static_cast<std::size_t>(i));
  }
}

// The figure of issue 11: at most 32 bytes per entry beyond key and value
// (here 2,500 keys, under 11/16 of the index's 4,096 slots, as 10^7 keys
// are of 2^24: the index costs about as much per key).
TEST(EntryBlock, ASmallEntryCostsAtMost32BytesBeyondKeyAndValue) {
  store_options o = testing::test_options("blockcost");
  o.initial_segment_bytes = 1 << 20;
  const std::vector<table_spec> tables = {{"kv", table_kind::set, 0}};
  auto w = writer::create(o, tables).value();
  constexpr int n = 2500;
  std::uint64_t payload = 0;
  for (int i = 0; i < n; ++i) {
    char key[32];
    std::snprintf(key, sizeof key, "user:%08d", i);
    w.put("kv", key, Bytes{std::string(32, static_cast<char>(i))}).value();
    payload += std::string_view(key).size() + 32;
  }
  w.reclaim();
  const double per_entry = static_cast<double>(w.stats().bytes_used - payload) / n;
  EXPECT_LE(per_entry, 32.0);
  // 8 bytes of header, 2 of encoding, 1 of rounding, 8/0.61 of index slots.
  EXPECT_GE(per_entry, 11.0);
}

}  // namespace
}  // namespace slither::shm
