// A table's index growing incrementally (index.hpp): lookups, scans and
// every kind of write while its entries move from the old array to the new.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "layout.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::numbered;
using testing::test_options;

/// The first words of an index header (layout.hpp).
struct index_words {
  std::uint64_t capacity, keys, values, old, migrated;
};
static_assert(offsetof(detail::index_header, migrated) == offsetof(index_words, migrated));

/// Reads table `t`'s index header straight from the segments.
index_words index_of(const store_options& o, std::uint32_t t) {
  auto read_at = [&](std::uint64_t ref, void* out, std::size_t bytes) {
    const std::string seg = segment_name(o.ns, o.name, detail::ref_segment(ref));
    const int fd = ::shm_open(seg.c_str(), O_RDONLY, 0);
    if (fd < 0) throw std::runtime_error("cannot open " + seg);
    const auto n = ::pread(fd, out, bytes, static_cast<off_t>(detail::ref_offset(ref)));
    ::close(fd);
    if (n != static_cast<ssize_t>(bytes)) throw std::runtime_error("short read of " + seg);
  };
  std::uint64_t root = 0;
  read_at(detail::store_header_offset + offsetof(detail::store_header, tables) +
              t * sizeof(detail::table_entry) + offsetof(detail::table_entry, root),
          &root, sizeof root);
  index_words ix{};
  read_at(root, &ix, sizeof ix);
  return ix;
}

/// Whether table `t`'s index is growing (moving out of an older array) right now.
bool growing(const store_options& o, std::uint32_t t) {
  return index_of(o, t).old != detail::null_ref;
}

/// Every key the reader finds by `for_each`, `keys` and `get`, checked against `oracle`.
void expect_matches(const reader& r, const std::string& table,
                    const std::map<std::string, std::string>& oracle) {
  std::map<std::string, int> seen;
  ASSERT_TRUE(r.for_each(table, [&](std::string_view k, const view& v) {
                 ++seen[std::string(k)];
                 auto it = oracle.find(std::string(k));
                 EXPECT_TRUE(it != oracle.end() && v.value().as<std::string>() == it->second)
                     << "key " << k;
                 return true;
               }).has_value());
  EXPECT_EQ(seen.size(), oracle.size());
  for (const auto& [k, n] : seen) EXPECT_EQ(n, 1) << "for_each saw " << k << " " << n << " times";
  auto keys = r.keys(table).value();
  EXPECT_EQ(keys.size(), oracle.size());
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), oracle.size());
  EXPECT_EQ(r.size(table).value(), oracle.size());
  for (const auto& [k, v] : oracle) {
    auto got = r.get(table, k).value();
    ASSERT_TRUE(got.has_value()) << "missing " << k;
    EXPECT_EQ(got->as<std::string>(), v);
  }
}

TEST(IndexGrowth, SurvivesSeveralMigrationsAgainstAnOracle) {
  auto o = test_options("idxoracle");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  std::map<std::string, std::string> oracle;
  std::mt19937_64 rng(11);
  int checked_while_growing = 0;
  bool checked_this_growth = false;
  const std::uint64_t ops = testing::scaled(40000, 8000);
  for (std::uint64_t i = 0; i < ops; ++i) {
    const std::uint64_t pick = rng() % 10;
    const std::string key = numbered("k", rng() % (ops / 2));
    if (pick < 7) {
      const std::string value = numbered("v", i);
      w.put("kv", key, value).value();
      oracle[key] = value;
    } else {
      EXPECT_EQ(w.erase("kv", key).value(), oracle.erase(key) == 1);
    }
    auto got = r.get("kv", key).value();
    ASSERT_EQ(got.has_value(), oracle.contains(key)) << key << " after op " << i;
    if (got) {
      ASSERT_EQ(got->as<std::string>(), oracle[key]);
    }
    // Once in every migration, the whole table.
    if (!growing(o, 0)) {
      checked_this_growth = false;
    } else if (!checked_this_growth) {
      checked_this_growth = true;
      ++checked_while_growing;
      expect_matches(r, "kv", oracle);
    }
  }
  EXPECT_GE(checked_while_growing, 3) << "the checks should meet several migrations";
  expect_matches(r, "kv", oracle);
}

TEST(IndexGrowth, BagChainsMoveWhole) {
  auto o = test_options("idxbag");
  std::vector<table_spec> tables = {{"log", table_kind::bag, 8}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  std::map<std::string, std::vector<std::int64_t>> oracle;
  std::mt19937_64 rng(5);
  int checked_while_growing = 0;
  bool checked_this_growth = false;
  for (std::int64_t i = 0; i < 6000; ++i) {
    const std::string key = numbered("b", rng() % 2000);
    w.put("log", key, Value(i)).value();
    oracle[key].push_back(i);
    if (!growing(o, 0)) {
      checked_this_growth = false;
    } else if (!checked_this_growth) {
      checked_this_growth = true;
      ++checked_while_growing;
      for (const auto& [k, vs] : oracle) {
        auto all = r.get_all("log", k).value();
        ASSERT_EQ(all.size(), vs.size()) << k;
        for (std::size_t j = 0; j < vs.size(); ++j) ASSERT_EQ(all[j].as<std::int64_t>(), vs[j]);
        ASSERT_EQ(r.get("log", k).value()->as<std::int64_t>(), vs.front());
      }
    }
  }
  EXPECT_GE(checked_while_growing, 2);
  std::size_t values = 0;
  for (const auto& [k, vs] : oracle) values += vs.size();
  EXPECT_EQ(r.size("log").value(), values);
}

/// Fills `table` until its index is growing; returns the keys put.
std::map<std::string, std::string> fill_until_growing(writer& w, const store_options& o,
                                                      std::uint32_t t, const std::string& table) {
  std::map<std::string, std::string> oracle;
  for (std::uint64_t i = 0; i < 100000; ++i) {
    const std::string key = numbered("f", i);
    w.put(table, key, numbered("v", i)).value();
    oracle[key] = numbered("v", i);
    if (i > 1000 && growing(o, t)) return oracle;
  }
  throw std::runtime_error("the index never grew");
}

TEST(IndexGrowth, ForEachDuringAMigrationSeesEveryKeyOnceWhileTheWriterMovesOn) {
  auto o = test_options("idxscan");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  auto oracle = fill_until_growing(w, o, 0, "kv");
  std::map<std::string, int> seen;
  std::uint64_t n = 0;
  // Inside the scan the writer updates keys (the old array's in place, the
  // new one's there), adds keys and so moves slots on: past the end of this
  // migration and through the next ones.
  ASSERT_TRUE(r.for_each("kv", [&](std::string_view k, const view&) {
                 ++seen[std::string(k)];
                 for (int j = 0; j < 8; ++j, ++n) {
                   w.put("kv", numbered("f", (n * 7919) % oracle.size()), "updated").value();
                   w.put("kv", numbered("new", n), "x").value();
                 }
                 return true;
               }).has_value());
  EXPECT_FALSE(growing(o, 0) && n < oracle.size()) << "the scan should outlast the migration";
  for (const auto& [k, v] : oracle) EXPECT_EQ(seen[k], 1) << k;
  for (const auto& [k, c] : seen) EXPECT_EQ(c, 1) << k;
}

TEST(IndexGrowth, ClearReloadDropAndAtomicBatchesDuringAMigration) {
  auto o = test_options("idxwrites");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  const std::uint64_t empty_bytes = w.stats().bytes_used;  // one empty index

  // Erase every key mid-migration, then clear: nothing leaks.
  auto oracle = fill_until_growing(w, o, 0, "kv");
  for (const auto& [k, v] : oracle) ASSERT_TRUE(w.erase("kv", k).value());
  expect_matches(r, "kv", {});
  oracle = fill_until_growing(w, o, 0, "kv");
  ASSERT_TRUE(w.clear("kv").has_value());
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_used, empty_bytes);
  expect_matches(r, "kv", {});

  // Past 11/16 full the next growth's array is made ready: a clear gives it back too.
  fill_until_growing(w, o, 0, "kv");
  w.reclaim();  // finishes the migration
  ASSERT_FALSE(growing(o, 0));
  const std::uint64_t capacity = index_of(o, 0).capacity;
  for (std::uint64_t i = 0; r.size("kv").value() * 16 <= capacity * 11 + 16; ++i) {
    w.put("kv", numbered("half", i), "x").value();
  }
  ASSERT_FALSE(growing(o, 0));
  ASSERT_TRUE(w.clear("kv").has_value());
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_used, empty_bytes);

  // An atomic batch mid-migration sees the keys of both arrays.
  oracle = fill_until_growing(w, o, 0, "kv");
  std::vector<std::pair<std::string, Value>> batch;
  for (int i = 0; i < 100; ++i) {
    batch.emplace_back(numbered("f", i * 3), "batched");
    oracle[numbered("f", i * 3)] = "batched";
  }
  ASSERT_TRUE(w.put_many("kv", batch, batch_publish::at_once).has_value());
  expect_matches(r, "kv", oracle);

  // Reload mid-migration.
  oracle = fill_until_growing(w, o, 0, "kv");
  ASSERT_TRUE(
      w.reload("kv", [](loader& l) -> result<void> { return l.put("only", "one"); }).has_value());
  expect_matches(r, "kv", {{"only", "one"}});

  // Drop a run-time table mid-migration: its bytes all come back.
  w.reclaim();
  const std::uint64_t before = w.stats().bytes_used;
  ASSERT_TRUE(w.create_table({"tmp", table_kind::set, 8}).has_value());
  fill_until_growing(w, o, 1, "tmp");
  ASSERT_TRUE(w.drop_table("tmp").has_value());
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_used, before);
}

TEST(IndexGrowth, TheTimerFinishesAMigrationWithoutWrites) {
  auto o = test_options("idxtimer");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  auto oracle = fill_until_growing(w, o, 0, "kv");
  w.reclaim();
  EXPECT_FALSE(growing(o, 0));
  expect_matches(r, "kv", oracle);
}

}  // namespace
}  // namespace slither::shm
