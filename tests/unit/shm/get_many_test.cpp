// reader::get_many: the same results as `get` key by key on every table kind,
// in batches of any length (groups of keys whose misses overlap, and a
// remainder), while the index grows, and through a reader inherited by a
// fork() child.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::numbered;
using testing::test_options;

const std::vector<table_spec> kTables = {{"set", table_kind::set, 16},
                                         {"bag", table_kind::bag, 16},
                                         {"ord", table_kind::ordered_set, 16}};

writer make_writer(const store_options& o) {
  auto w = writer::create(o, kTables);
  if (!w) throw slither::error(w.error());
  return std::move(*w);
}

/// A value of one of the forms blocks take: compact (small encoded), full
/// (a large encoded value, an ndarray).
Value value_for(int i) {
  switch (i % 4) {
    case 0:
      return Value(i);
    case 1:
      return Value(Bytes{std::string(5000 + i % 7, static_cast<char>('a' + i % 26))});
    case 2: {
      ndarray a = ndarray::zeros(dtype::i32, {3});
      reinterpret_cast<std::int32_t*>(a.mutable_data())[1] = i;
      return Value(std::move(a));
    }
    default:
      return Value(numbered("v", static_cast<std::uint64_t>(i)));
  }
}

/// Present keys and absent ones, shuffled, as views into `names`.
std::vector<std::string_view> mixed_keys(std::vector<std::string>& names, int present) {
  names.clear();
  for (int i = 0; i < present; ++i) names.push_back(numbered("k", static_cast<std::uint64_t>(i)));
  for (int i = 0; i < present / 3 + 5; ++i) names.push_back(numbered("missing", i));
  std::mt19937 rng(5);
  std::shuffle(names.begin(), names.end(), rng);
  return {names.begin(), names.end()};
}

/// get_many of `keys` equals `get` of each, in both forms; returns the number of keys found.
int expect_same_as_get(const reader& r, std::string_view table,
                       std::span<const std::string_view> keys) {
  auto many = r.get_many(table, keys);
  EXPECT_TRUE(many) << many.error().message;
  if (!many) return 0;
  EXPECT_EQ(many->size(), keys.size());
  int found = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto one = r.get(table, keys[i]);
    EXPECT_TRUE(one) << one.error().message;
    EXPECT_EQ((*many)[i], *one) << table << " key " << keys[i];
    found += one->has_value();
  }
  std::vector<std::size_t> order;
  auto visited = r.get_many(table, keys, [&](std::size_t i, const reader::scanned* e) {
    order.push_back(i);
    auto v = r.get_view(table, keys[i]).value();
    EXPECT_EQ(e != nullptr, v.has_value()) << keys[i];
    if (e == nullptr || !v) return true;
    EXPECT_EQ(e->key, keys[i]);
    EXPECT_EQ(e->version, v->version());
    EXPECT_EQ(e->is_ndarray, v->is_ndarray());
    EXPECT_TRUE(std::ranges::equal(e->bytes, v->bytes())) << keys[i];
    EXPECT_EQ(e->value(), v->value());
    return true;
  });
  EXPECT_TRUE(visited) << visited.error().message;
  EXPECT_EQ(order.size(), keys.size());
  EXPECT_TRUE(std::ranges::is_sorted(order));
  return found;
}

TEST(GetMany, ReadsWhatGetReadsOnEveryTableKind) {
  writer w = make_writer(test_options("gmkinds"));
  constexpr int n = 203;  // groups of keys and a remainder
  for (int i = 0; i < n; ++i) {
    const std::string k = numbered("k", static_cast<std::uint64_t>(i));
    for (const char* t : {"set", "ord"}) ASSERT_TRUE(w.put(t, k, value_for(i)));
    // A bag of 1 to 3 values: get reads the oldest.
    for (int j = 0; j <= i % 3; ++j) ASSERT_TRUE(w.put("bag", k, value_for(i + j)));
  }
  std::vector<std::string> names;
  const auto keys = mixed_keys(names, n);
  for (const char* t : {"set", "bag", "ord"}) {
    EXPECT_EQ(expect_same_as_get(w.read(), t, keys), n) << t;
  }
  // Empty batches, a batch of one, a key asked twice.
  EXPECT_TRUE(w.read().get_many("set", {}).value().empty());
  const std::vector<std::string_view> twice = {"k7", "k7"};
  EXPECT_EQ(w.read().get_many("set", twice).value(),
            (std::vector<std::optional<Value>>{value_for(7), value_for(7)}));
}

TEST(GetMany, ReportsAnUnknownTableAndAMovedFromReader) {
  const auto o = test_options("gmerrors");
  writer w = make_writer(o);
  const std::vector<std::string_view> keys = {"a"};
  EXPECT_EQ(w.read().get_many("nope", keys).error().code, errc::not_found);
  auto r = reader::attach(o.ns, o.name).value();
  reader moved = std::move(r);
  EXPECT_EQ(r.get_many("set", keys).error().code, errc::invalid_argument);  // NOLINT: moved from
  EXPECT_TRUE(moved.get_many("set", keys));
}

TEST(GetMany, StopsWhenTheCallbackSaysSo) {
  writer w = make_writer(test_options("gmstop"));
  std::vector<std::string> names;
  const auto keys = mixed_keys(names, 40);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(w.put("set", numbered("k", i), i));
  std::size_t calls = 0;
  auto r = w.read().get_many("set", keys,
                             [&](std::size_t, const reader::scanned*) { return ++calls < 11; });
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(calls, 11u);
}

// The index grows (and migrates a few slots per put) while keys go in: the
// batch must find keys in both arrays, as `get` does, at every step.
TEST(GetMany, FindsEveryKeyWhileTheIndexGrows) {
  writer w = make_writer(test_options("gmgrow"));
  const int n = static_cast<int>(testing::scaled(4000, 1500));
  std::vector<std::string> names;
  std::vector<std::string_view> keys;
  for (int i = 0; i < n; ++i) {
    names.push_back(numbered("k", static_cast<std::uint64_t>(i)));
    ASSERT_TRUE(w.put("set", names.back(), i));
    if (i % 37 != 0) continue;
    keys.assign(names.begin(), names.end());
    auto got = w.read().get_many("set", keys);
    ASSERT_TRUE(got) << got.error().message;
    for (int j = 0; j <= i; ++j) ASSERT_EQ((*got)[j], std::optional<Value>(j)) << "after " << i;
  }
}

TEST(GetMany, WorksThroughAReaderInheritedByAForkChild) {
  const auto o = test_options("gmfork");
  writer w = make_writer(o);
  auto r = reader::attach(o.ns, o.name).value();
  std::vector<std::string> names;
  const auto keys = mixed_keys(names, 100);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(w.put("bag", numbered("k", i), value_for(i)));
  const auto expected = r.get_many("bag", keys).value();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto got = r.get_many("bag", keys);
    ::_exit(got && *got == expected ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(r.get_many("bag", keys).value(), expected);
}

}  // namespace
}  // namespace slither::shm
