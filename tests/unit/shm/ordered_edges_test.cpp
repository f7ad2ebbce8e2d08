// The edges of the reads issue 11 added, as a hostile caller would probe
// them: empty and inverted ranges, bounds longer than any key, keys of
// 0x00 and 0xff bytes and of the maximum length, batches that name a key
// twice, get_many with keys no table can hold, and the figures of empty,
// new and dropped tables.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using namespace std::string_literals;
using testing::test_options;

const std::vector<table_spec> kEdgeTables = {{"ord", table_kind::ordered_set, 16},
                                             {"set", table_kind::set, 16},
                                             {"bag", table_kind::bag, 16}};

writer edge_writer(const store_options& o) {
  auto w = writer::create(o, kEdgeTables);
  if (!w) throw slither::error(w.error());
  return std::move(*w);
}

using Entries = std::vector<std::pair<std::string, Value>>;

std::vector<std::string> keys_of(const Entries& e) {
  std::vector<std::string> k;
  for (const auto& p : e) k.push_back(p.first);
  return k;
}

TEST(OrderedEdges, EmptyTablesAndDegenerateRanges) {
  auto w = edge_writer(test_options("edge-empty"));
  const reader& r = w.read();
  for (bool reverse : {false, true}) {
    EXPECT_TRUE(r.range("ord", {}, {}, SIZE_MAX, reverse).value().empty());
    EXPECT_TRUE(r.range("ord", "a", "b", 0, reverse).value().empty());
  }
  EXPECT_TRUE(r.keys("ord", "a").value().empty());
  EXPECT_EQ(r.key_count("ord").value(), 0u);

  for (const char* k : {"a", "b", "c"}) ASSERT_TRUE(w.put("ord", k, k));
  for (bool reverse : {false, true}) {
    // [x, x) is empty whichever way it is read; so are lo > hi and limit 0.
    EXPECT_TRUE(r.range("ord", "b", "b", SIZE_MAX, reverse).value().empty()) << reverse;
    EXPECT_TRUE(r.range("ord", "c", "a", SIZE_MAX, reverse).value().empty()) << reverse;
    EXPECT_TRUE(r.range("ord", {}, {}, 0, reverse).value().empty()) << reverse;
    // "b\0" is the first key after "b": [b, b\0) holds b alone.
    EXPECT_EQ(keys_of(r.range("ord", "b", "b\0"s, SIZE_MAX, reverse).value()),
              (std::vector<std::string>{"b"}))
        << reverse;
  }
  EXPECT_EQ(keys_of(r.range("ord", {}, {}, 1, true).value()), (std::vector<std::string>{"c"}));

  // Erased down to nothing, cleared, reloaded empty: no ends.
  for (const char* k : {"a", "b", "c"}) ASSERT_TRUE(w.erase("ord", k).value());
  EXPECT_EQ(r.first("ord").value(), std::nullopt);
  EXPECT_EQ(r.last("ord").value(), std::nullopt);
  ASSERT_TRUE(w.put("ord", "x", 1));
  ASSERT_TRUE(w.clear("ord"));
  EXPECT_EQ(r.first("ord").value(), std::nullopt);
  ASSERT_TRUE(w.put("ord", "x", 1));
  ASSERT_TRUE(w.reload("ord", [](loader&) -> result<void> { return {}; }));
  EXPECT_EQ(r.last("ord").value(), std::nullopt);
  EXPECT_EQ(r.key_count("ord").value(), 0u);
}

TEST(OrderedEdges, ZeroAndFFBytesAndTheLongestKeysSortBytewise) {
  const auto o = test_options("edge-bytes");  // max_key_bytes 256
  auto w = edge_writer(o);
  const reader& r = w.read();
  const std::string longest_ff(o.max_key_bytes, '\xff');
  const std::string longest_00(o.max_key_bytes, '\0');
  const std::vector<std::string> sorted = {""s,     "\0"s,     longest_00, "\0\xff"s,
                                           "a"s,    "a\0"s,    "a\0\0"s,   "a\x01"s,
                                           "\xff"s, "\xff\0"s, longest_ff};
  for (auto it = sorted.rbegin(); it != sorted.rend(); ++it) ASSERT_TRUE(w.put("ord", *it, 1));
  EXPECT_EQ(r.keys("ord").value(), sorted);
  EXPECT_EQ(r.first("ord").value()->first, "");
  EXPECT_EQ(r.last("ord").value()->first, longest_ff);
  EXPECT_EQ(r.keys("ord", "\xff"s).value(),
            (std::vector<std::string>{"\xff"s, "\xff\0"s, longest_ff}));
  EXPECT_EQ(r.keys("ord", "a\0"s).value(), (std::vector<std::string>{"a\0"s, "a\0\0"s}));
  // Bounds longer than any key a table may hold are bounds, not keys.
  const std::string beyond(o.max_key_bytes + 100, '\xff');
  EXPECT_EQ(keys_of(r.range("ord", longest_ff, beyond).value()),
            (std::vector<std::string>{longest_ff}));
  EXPECT_TRUE(r.range("ord", beyond, {}).value().empty());
  EXPECT_EQ(
      keys_of(r.range("ord", {}, std::string(o.max_key_bytes + 1, '\0'), SIZE_MAX, true).value()),
      (std::vector<std::string>{longest_00, "\0"s, ""s}));
  EXPECT_TRUE(r.keys("ord", beyond).value().empty());
  // A key one byte over the limit is refused by name and changes nothing.
  const auto over = w.put("ord", std::string(o.max_key_bytes + 1, 'k'), 1);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, errc::limit_exceeded);
  EXPECT_EQ(r.key_count("ord").value(), sorted.size());
}

TEST(OrderedEdges, ABatchThatNamesAKeyTwiceKeepsItOnceWithTheLastValue) {
  for (auto publish : {batch_publish::per_entry, batch_publish::at_once}) {
    auto w = edge_writer(test_options("edge-dup"));
    const reader& r = w.read();
    const Entries batch = {{"b", 1}, {"a", 2}, {"b", 3}, {"a", 4}, {"c", 5}};
    ASSERT_TRUE(w.put_many("ord", batch, publish));
    ASSERT_TRUE(w.put_many("set", batch, publish));
    ASSERT_TRUE(w.put_many("bag", batch, publish));
    for (const char* t : {"ord", "set"}) {
      EXPECT_EQ(r.key_count(t).value(), 3u) << t;
      EXPECT_EQ(r.size(t).value(), 3u) << t;
      EXPECT_EQ(r.get(t, "a").value(), std::optional<Value>(4)) << t;
      EXPECT_EQ(r.get(t, "b").value(), std::optional<Value>(3)) << t;
    }
    // A bag keeps every value, its oldest first.
    EXPECT_EQ(r.key_count("bag").value(), 3u);
    EXPECT_EQ(r.size("bag").value(), 5u);
    EXPECT_EQ(r.get("bag", "a").value(), std::optional<Value>(2));
    EXPECT_EQ(r.get_all("bag", "b").value(), (std::vector<Value>{1, 3}));
    EXPECT_EQ(r.range("ord").value(), (Entries{{"a", 4}, {"b", 3}, {"c", 5}}));
    EXPECT_EQ(w.stats().entries, 11u);
    // And again over keys already present.
    ASSERT_TRUE(w.put_many("ord", Entries{{"a", 6}, {"a", 7}}, publish));
    EXPECT_EQ(r.range("ord").value(), (Entries{{"a", 7}, {"b", 3}, {"c", 5}}));
    EXPECT_EQ(r.size("ord").value(), 3u);
  }
}

TEST(OrderedEdges, AReloadThatNamesAKeyTwiceKeepsItOnce) {
  auto w = edge_writer(test_options("edge-reload"));
  const reader& r = w.read();
  ASSERT_TRUE(w.put("ord", "old", 0));
  ASSERT_TRUE(w.reload("ord", [](loader& l) -> result<void> {
    for (const auto& [k, v] : Entries{{"z", 1}, {"a", 2}, {"z", 3}}) {
      if (auto p = l.put(k, v); !p) return p;
    }
    return {};
  }));
  EXPECT_EQ(r.range("ord").value(), (Entries{{"a", 2}, {"z", 3}}));
  EXPECT_EQ(r.size("ord").value(), 2u);
  EXPECT_EQ(r.get("ord", "z").value(), std::optional<Value>(3));
  EXPECT_EQ(w.stats().entries, 2u);
}

TEST(OrderedEdges, GetManyWithKeysNoTableCanHoldMatchesGet) {
  const auto o = test_options("edge-getmany");
  auto w = edge_writer(o);
  const reader& r = w.read();
  const std::string longest(o.max_key_bytes, 'k');
  for (const char* t : {"ord", "set", "bag"}) ASSERT_TRUE(w.put(t, longest, 9));
  const std::string over(o.max_key_bytes + 1, 'k');
  const std::string huge(1 << 20, 'k');
  const std::vector<std::string_view> keys = {over, longest, huge, "", longest, "\0\xff"};
  for (const char* t : {"ord", "set", "bag"}) {
    auto many = r.get_many(t, keys);
    ASSERT_TRUE(many) << t << ": " << many.error().message;
    ASSERT_EQ(many->size(), keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      auto one = r.get(t, keys[i]);
      ASSERT_TRUE(one) << t << " key " << i << ": " << one.error().message;
      EXPECT_EQ((*many)[i], *one) << t << " key " << i;
    }
    EXPECT_EQ((*many)[1], std::optional<Value>(9));
    EXPECT_EQ((*many)[4], std::optional<Value>(9));
  }
}

TEST(OrderedEdges, StatsAndCountsOfEmptyNewAndDroppedTables) {
  const auto o = test_options("edge-stats");
  auto w = edge_writer(o);
  const reader& r = w.read();
  EXPECT_EQ(w.stats().entries, 0u);
  ASSERT_TRUE(w.create_table({"fresh", table_kind::ordered_set, 8}));
  EXPECT_EQ(w.stats().entries, 0u);
  EXPECT_EQ(r.key_count("fresh").value(), 0u);
  EXPECT_EQ(r.first("fresh").value(), std::nullopt);
  ASSERT_TRUE(w.put_many("fresh", Entries{{"a", 1}, {"b", 2}}));
  ASSERT_TRUE(w.put("bag", "k", 1));
  ASSERT_TRUE(w.put("bag", "k", 2));
  EXPECT_EQ(w.stats().entries, 4u);  // a bag counts values
  EXPECT_EQ(r.key_count("bag").value(), 1u);
  const auto used = w.stats().bytes_used;
  ASSERT_TRUE(w.drop_table("fresh"));
  EXPECT_EQ(w.stats().entries, 2u);
  EXPECT_LT(w.stats().bytes_used, used);
  EXPECT_EQ(r.tables(), (std::vector<std::string>{"ord", "set", "bag"}));
  auto expect_gone = [](const auto& read) {
    ASSERT_FALSE(read) << "a dropped table was read";
    EXPECT_EQ(read.error().code, errc::not_found);
    EXPECT_NE(read.error().message.find("'fresh'"), std::string::npos) << read.error().message;
  };
  expect_gone(r.key_count("fresh"));
  expect_gone(r.size("fresh"));
  expect_gone(r.first("fresh"));
  expect_gone(r.range("fresh"));
  const std::vector<std::string_view> keys = {"a"};
  EXPECT_EQ(r.get_many("fresh", keys).error().code, errc::not_found);
}

}  // namespace
}  // namespace slither::shm
