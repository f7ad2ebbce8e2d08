// A table's index growing incrementally (index.hpp): lookups, scans and
// every kind of write while its entries move from the old array to the new.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/statvfs.h>

#include <bit>
#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "block.hpp"
#include "index.hpp"
#include "layout.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/detail/sys.hpp"
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
  // The timer's steps finish the migration (one step of 2 ms does on a
  // Release build; a sanitizer's may take a few).
  for (int i = 0; i < 100 && growing(o, 0); ++i) w.reclaim();
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
  for (int i = 0; i < 100 && growing(o, 0); ++i) w.reclaim();  // no write in between
  EXPECT_FALSE(growing(o, 0));
  expect_matches(r, "kv", oracle);
}

// A capacity whose index is larger than `index_bytes_at_once` (index.hpp):
// the table starts small and reaches the asked index in slices.

TEST(IndexAskedCapacity, AGigabyteIndexIsNotMadeAtOnceButInSlicesBetweenShortSteps) {
  auto o = test_options("idxhuge");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  using clock = std::chrono::steady_clock;
  clock::duration longest{};
  auto step = [&](auto&& fn) {
    const auto t0 = clock::now();
    fn();
    longest = std::max(longest, clock::now() - t0);
  };
  const std::uint64_t resident = w.stats().bytes_resident;
  // 2^26 keys ask for 2^27 slots: 1 GiB of index.
  constexpr std::uint64_t capacity = std::uint64_t{1} << 26;
  step([&] { w.create_table({"big", table_kind::set, capacity}).value(); });
  EXPECT_EQ(index_of(o, 1).capacity, std::uint64_t{1} << 17) << "1 MiB of slots at once";
  EXPECT_LT(w.stats().bytes_resident, resident + (std::uint64_t{8} << 20));
  for (std::uint64_t i = 0; i < 100; ++i) {
    step([&] { w.put("big", numbered("k", i), numbered("v", i)).value(); });
  }
  const std::uint64_t after_puts = w.stats().bytes_resident;
  for (int i = 0; i < 4; ++i) step([&] { w.reclaim(); });
  // The timer's steps went on making the asked index ready: at least a slice
  // (256 KiB) each, a few MiB each on a Release build.
  EXPECT_GE(w.stats().bytes_resident, after_puts + 4 * detail::spare_slice_bytes);
  EXPECT_LT(w.stats().bytes_resident, resident + (std::uint64_t{256} << 20));
  EXPECT_EQ(index_of(o, 1).capacity, std::uint64_t{1} << 17) << "published only once ready";
  EXPECT_LT(longest, std::chrono::milliseconds(50))
      << "the writer's longest step took "
      << std::chrono::duration_cast<std::chrono::microseconds>(longest).count() << " us";
  for (std::uint64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(r.get("big", numbered("k", i)).value(), std::optional<Value>(numbered("v", i)));
  }
  // Dropped before it is ready: its asked index goes back too.
  const std::uint64_t used_before = w.stats().bytes_used;
  ASSERT_TRUE(w.drop_table("big").has_value());
  w.reclaim();
  EXPECT_LT(w.stats().bytes_used + (std::uint64_t{1} << 30), used_before);
}

TEST(IndexAskedCapacity, IsReachedWhileKeysComeAndTheTableGrowsBesideItMeanwhile) {
  auto o = test_options("idxasked");
  o.index_bytes_at_once = 8192;  // 1024 slots at once
  // 2^18 keys ask for 2^19 slots (4 MiB): 1 MiB made ready per 256 inserts.
  constexpr std::uint64_t asked = std::uint64_t{1} << 19;
  std::vector<table_spec> tables = {{"kv", table_kind::set, asked / 2}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  ASSERT_EQ(index_of(o, 0).capacity, 1024u);
  // Past 768 keys the table grows as usual (not ready yet, the asked index
  // stays aside), then moves into the asked one once it is ready.
  std::map<std::string, std::string> oracle;
  std::set<std::uint64_t> capacities;
  for (std::uint64_t i = 0; i < 4000 && !(index_of(o, 0).capacity == asked && !growing(o, 0));
       ++i) {
    const std::string key = numbered("k", i);
    w.put("kv", key, numbered("v", i)).value();
    oracle[key] = numbered("v", i);
    capacities.insert(index_of(o, 0).capacity);
    ASSERT_EQ(r.get("kv", key).value(), std::optional<Value>(oracle[key]));
    if (growing(o, 0) && i % 64 == 0) expect_matches(r, "kv", oracle);
  }
  EXPECT_EQ(capacities, (std::set<std::uint64_t>{1024, 2048, asked}));
  EXPECT_FALSE(growing(o, 0));
  expect_matches(r, "kv", oracle);

  // A clear starts small again; the timer alone reaches the asked index.
  ASSERT_TRUE(w.clear("kv").has_value());
  EXPECT_EQ(index_of(o, 0).capacity, 1024u);
  for (int i = 0; i < 100 && index_of(o, 0).capacity < asked; ++i) w.reclaim();
  EXPECT_EQ(index_of(o, 0).capacity, asked);
  // So does a reload, also of more keys than the first index holds.
  ASSERT_TRUE(w.reload("kv", [&](loader& l) -> result<void> {
                 for (const auto& [k, v] : oracle) {
                   if (auto p = l.put(k, v); !p) return p;
                 }
                 return {};
               }).has_value());
  EXPECT_LT(index_of(o, 0).capacity, asked);
  for (int i = 0; i < 100 && (index_of(o, 0).capacity < asked || growing(o, 0)); ++i) w.reclaim();
  EXPECT_EQ(index_of(o, 0).capacity, asked);
  expect_matches(r, "kv", oracle);
}

TEST(IndexAskedCapacity, ATableThatFindsNoRoomForItKeepsItsIndexAndGrowsAsUsual) {
  auto o = test_options("idxgiveup");
  o.index_bytes_at_once = 8192;
  std::vector<table_spec> tables = {{"kv", table_kind::set, std::uint64_t{1} << 18}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  auto& calls = detail::sys();
  static int (*real)(int, off_t, off_t) = nullptr;
  real = calls.fallocate;
  // Full for the 4 MiB segment the asked index needs (segment 0 has 1 MiB).
  calls.fallocate = [](int fd, off_t offset, off_t length) {
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > (off_t{2} << 20)) return ENOSPC;
    return real(fd, offset, length);
  };
  auto put = w.put("kv", "first", "1");
  w.reclaim();
  calls.fallocate = real;
  ASSERT_TRUE(put.has_value()) << put.error().message;
  std::map<std::string, std::string> oracle{{"first", "1"}};
  for (std::uint64_t i = 0; i < 3000; ++i) {
    const std::string key = numbered("k", i);
    w.put("kv", key, numbered("v", i)).value();
    oracle[key] = numbered("v", i);
  }
  w.reclaim();
  EXPECT_EQ(index_of(o, 0).capacity, 4096u) << "grown as usual, from 1024 slots";
  expect_matches(r, "kv", oracle);
}

// A table that gave its asked index up for want of room asks for it again
// when cleared or reloaded ("start again the same way"), /dev/shm having room
// by then: it had forgotten the capacity it was created with.
TEST(IndexAskedCapacity, AClearOrReloadAfterNoRoomAsksForTheCapacityAgain) {
  auto o = test_options("idxagain");
  o.index_bytes_at_once = 8192;
  // 2^18 keys ask for 2^19 slots (4 MiB).
  constexpr std::uint64_t asked = std::uint64_t{1} << 19;
  std::vector<table_spec> tables = {{"cleared", table_kind::set, asked / 2},
                                    {"reloaded", table_kind::set, asked / 2}};
  auto w = writer::create(o, tables).value();
  auto& calls = detail::sys();
  static int (*real)(int, off_t, off_t) = nullptr;
  real = calls.fallocate;
  calls.fallocate = [](int fd, off_t offset, off_t length) {
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > (off_t{2} << 20)) return ENOSPC;
    return real(fd, offset, length);
  };
  auto put = w.put("cleared", "first", "1");
  auto other = w.put("reloaded", "first", "1");
  w.reclaim();
  calls.fallocate = real;
  ASSERT_TRUE(put.has_value()) << put.error().message;
  ASSERT_TRUE(other.has_value()) << other.error().message;
  ASSERT_FALSE(w.growing()) << "the asked indexes were not given up";
  ASSERT_EQ(index_of(o, 0).capacity, 1024u);
  ASSERT_EQ(index_of(o, 1).capacity, 1024u);

  ASSERT_TRUE(w.clear("cleared").has_value());
  ASSERT_TRUE(w.reload("reloaded", [](loader& l) { return l.put("k", "v"); }).has_value());
  for (int i = 0; i < 100 && w.growing(); ++i) w.reclaim();
  EXPECT_EQ(index_of(o, 0).capacity, asked) << "after a clear";
  EXPECT_EQ(index_of(o, 1).capacity, asked) << "after a reload";
}

TEST(IndexAskedCapacity, ACreateIsRefusedWhenDevShmHasNoRoomOrTheCapacityIsOverTheLimit) {
  auto o = test_options("idxroom");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  auto& calls = detail::sys();
  const auto real = calls.fstatvfs;
  calls.fstatvfs = [](int, struct statvfs* out) {
    std::memset(out, 0, sizeof(*out));
    out->f_frsize = 4096;
    out->f_bavail = 1024;  // 4 MiB
    return 0;
  };
  // 2^20 keys ask for 2^21 slots: 16 MiB and a header.
  auto big = w.create_table({"big", table_kind::set, std::uint64_t{1} << 20});
  auto small = w.create_table({"small", table_kind::set, 1000});
  calls.fstatvfs = real;
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, errc::no_space);
  const std::string& msg = big.error().message;
  EXPECT_NE(msg.find("'big'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1048576 keys"), std::string::npos) << msg;
  // Appended piecewise: GCC 12 warns falsely (-Wrestrict) on std::string + "literal".
  std::string needed = std::to_string(detail::index_bytes(std::uint64_t{1} << 21));
  needed += " bytes";
  EXPECT_NE(msg.find(needed), std::string::npos) << msg;
  EXPECT_NE(msg.find("4194304 free"), std::string::npos) << msg;
  EXPECT_TRUE(small.has_value()) << "a small index is made at once";
  EXPECT_EQ(w.read().tables(), (std::vector<std::string>{"kv", "small"}));

  auto over = w.create_table({"over", table_kind::set, (std::uint64_t{1} << 32) + 1});
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, errc::invalid_argument);
  EXPECT_NE(over.error().message.find("4294967297"), std::string::npos) << over.error().message;
  EXPECT_NE(over.error().message.find("4294967296"), std::string::npos) << over.error().message;

  o.index_bytes_at_once = 64;
  auto bad = writer::create(o, tables);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_NE(bad.error().message.find("index_bytes_at_once 64"), std::string::npos);
}

// Puts, erases and batches of both kinds while the table grows beside its
// asked index, moves into it and migrates: every read agrees at every step.
TEST(IndexAskedCapacity, WritesOfEveryKindWhileTheAskedIndexIsMadeReady) {
  auto o = test_options("idxhost");
  o.index_bytes_at_once = 128;  // 16 slots at once
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  // 2^20 keys ask for 2^21 slots (16 MiB): 64 of grow's slices.
  w.create_table({"big", table_kind::set, std::uint64_t{1} << 20}).value();
  std::map<std::string, std::string> oracle;
  std::mt19937 rng(7);
  std::set<std::uint64_t> capacities;
  auto key = [&] { return numbered("k", rng() % 6000); };
  for (int step = 0; step < 8000; ++step) {
    const unsigned op = rng() % 20;
    std::vector<std::string> touched;
    if (op < 12) {
      const std::string k = key();
      const std::string v = numbered("v", step);
      w.put("big", k, v).value();
      oracle[k] = v;
      touched.push_back(k);
    } else if (op < 17) {
      const std::string k = key();
      EXPECT_EQ(w.erase("big", k).value(), oracle.erase(k) == 1);
      touched.push_back(k);
    } else {
      std::vector<std::pair<std::string, Value>> batch;
      const std::size_t n = op == 19 && rng() % 50 == 0 ? 3000 : 40;
      for (std::size_t i = 0; i < n; ++i) {
        const std::string k = key();
        const std::string v = numbered("b", step * 10000 + static_cast<int>(i));
        batch.emplace_back(k, Value(v));
        oracle[k] = v;
        touched.push_back(k);
      }
      w.put_many("big", batch, op == 17 ? batch_publish::per_entry : batch_publish::at_once)
          .value();
    }
    if (step % 40 == 0) w.grow(std::chrono::microseconds(30));
    capacities.insert(index_of(o, 1).capacity);
    for (int i = 0; i < 16; ++i) touched.push_back(key());  // and keys written before
    for (const auto& k : touched) {
      auto it = oracle.find(k);
      auto got = r.get("big", k).value();
      if (it == oracle.end()) {
        ASSERT_FALSE(got) << "step " << step << " key " << k;
      } else {
        ASSERT_EQ(got, std::optional<Value>(it->second)) << "step " << step << " key " << k;
      }
    }
    if (step % 500 == 0) expect_matches(r, "big", oracle);
  }
  for (int i = 0; i < 10000 && w.growing(); ++i) w.grow(std::chrono::milliseconds(1));
  EXPECT_FALSE(w.growing());
  expect_matches(r, "big", oracle);
  EXPECT_EQ(index_of(o, 1).capacity, std::uint64_t{1} << 21);
  EXPECT_GT(capacities.size(), 3u) << "the table did not grow beside its asked index";
}

// Capacities at the edges: 0 and a small one give the smallest index, made
// at once, one past 2^16 is made in slices, 2^32 needs more than 64 GiB of
// /dev/shm, and past 2^32 is refused.
TEST(IndexAskedCapacity, CapacitiesAtTheEdges) {
  auto o = test_options("idxedge");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  std::uint32_t n = 1;
  for (const std::uint64_t cap :
       {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{2}, std::uint64_t{3}, std::uint64_t{7},
        std::uint64_t{8}, std::uint64_t{9}, std::uint64_t{65535}, std::uint64_t{65536},
        std::uint64_t{65537}, std::uint64_t{1} << 20}) {
    const std::string name = "t" + std::to_string(cap);
    auto c = w.create_table({name, table_kind::set, cap});
    ASSERT_TRUE(c) << cap << ": " << c.error().message;
    const std::uint64_t slots = std::bit_ceil(std::max<std::uint64_t>(16, cap * 2));
    EXPECT_EQ(index_of(o, n).capacity, std::min<std::uint64_t>(slots, 1 << 17)) << cap;
    for (std::uint64_t i = 0; i < 40; ++i) w.put(name, numbered("k", i), "v").value();
    for (int i = 0; i < 2000 && w.growing(); ++i) w.grow(std::chrono::milliseconds(1));
    EXPECT_EQ(index_of(o, n).capacity, std::max<std::uint64_t>(slots, 64)) << cap;  // 40 keys: 64
    for (std::uint64_t i = 0; i < 40; ++i) EXPECT_TRUE(r.get(name, numbered("k", i)).value());
    ++n;
  }
  auto& calls = detail::sys();
  const auto real = calls.fstatvfs;
  calls.fstatvfs = [](int, struct statvfs* out) {
    std::memset(out, 0, sizeof(*out));
    out->f_frsize = 4096;
    out->f_bavail = std::uint64_t{1} << 24;  // 64 GiB
    return 0;
  };
  auto max = w.create_table({"max", table_kind::set, std::uint64_t{1} << 32});
  calls.fstatvfs = real;
  ASSERT_FALSE(max);
  EXPECT_EQ(max.error().code, errc::no_space) << max.error().message;
  EXPECT_NE(max.error().message.find("68719476800 bytes"), std::string::npos)
      << max.error().message;
  for (const std::uint64_t cap :
       {(std::uint64_t{1} << 32) + 1, std::uint64_t{1} << 40, UINT64_MAX}) {
    auto c = w.create_table({"x", table_kind::set, cap});
    ASSERT_FALSE(c) << cap;
    EXPECT_EQ(c.error().code, errc::invalid_argument) << cap;
    EXPECT_NE(c.error().message.find(std::to_string(cap)), std::string::npos) << c.error().message;
  }
}
}  // namespace
}  // namespace slither::shm
