// Ordered tables (kind ordered_set): the B+tree behind range, first, last
// and sorted keys, checked against std::map; a forked reader scanning while
// the writer mutates; reclamation of replaced nodes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "btree.hpp"
#include "layout.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::test_options;

const std::vector<table_spec> kTables = {{"ord", table_kind::ordered_set, 16},
                                         {"kv", table_kind::set, 16},
                                         {"log", table_kind::bag, 16}};

writer make_writer(const store_options& o) {
  auto w = writer::create(o, kTables);
  if (!w) throw slither::error(w.error());
  return std::move(*w);
}

/// `a` then `b`, appended piecewise (GCC 12 warns falsely, -Wrestrict, on "literal" + std::string).
std::string cat(std::string a, std::string_view b) {
  a += b;
  return a;
}

/// Keys that sort like their numbers: "k000042".
std::string key_of(std::uint64_t i) {
  const std::string n = std::to_string(i);
  std::string k = "k";
  k.append(n.size() < 6 ? 6 - n.size() : 0, '0');
  return cat(k, n);
}

using entries = std::vector<std::pair<std::string, Value>>;

/// The oracle's answer to range(lo, hi, limit, reverse).
entries expected(const std::map<std::string, std::int64_t>& m, const std::string& lo,
                 const std::string& hi, std::size_t limit, bool reverse) {
  entries out;
  auto begin = lo.empty() ? m.begin() : m.lower_bound(lo);
  auto end = hi.empty() ? m.end() : m.lower_bound(hi);
  if (begin != m.end() && !hi.empty() && begin->first >= hi) return out;
  if (!reverse) {
    for (auto it = begin; it != end && out.size() < limit; ++it)
      out.emplace_back(it->first, it->second);
  } else {
    for (auto it = end; it != begin && out.size() < limit;) {
      --it;
      out.emplace_back(it->first, it->second);
    }
  }
  return out;
}

TEST(Ordered, RangeFirstLastAndKeysInOrder) {
  auto w = make_writer(test_options("ord-basic"));
  const reader& r = w.read();
  EXPECT_EQ(r.first("ord").value(), std::nullopt);
  EXPECT_EQ(r.last("ord").value(), std::nullopt);
  EXPECT_TRUE(r.range("ord").value().empty());
  // Inserted out of order; "" and bytes above 0x7f are keys like any other.
  for (const char* k : {"b", "a", "ab", "", "c", "\xff", "aa"})
    ASSERT_TRUE(w.put("ord", k, cat("v", k)));
  const entries all = r.range("ord").value();
  std::vector<std::string> order;
  for (const auto& [k, v] : all) order.push_back(k);
  EXPECT_EQ(order, (std::vector<std::string>{"", "a", "aa", "ab", "b", "c", "\xff"}));
  EXPECT_EQ(all[2].second, Value("vaa"));
  EXPECT_EQ(r.first("ord").value()->first, "");
  EXPECT_EQ(r.last("ord").value()->first, "\xff");
  EXPECT_EQ(r.keys("ord", "a").value(), (std::vector<std::string>{"a", "aa", "ab"}));
  // [lo, hi), limit and reverse.
  auto keys = [](const entries& e) {
    std::vector<std::string> k;
    for (const auto& p : e) k.push_back(p.first);
    return k;
  };
  EXPECT_EQ(keys(r.range("ord", "aa", "b").value()), (std::vector<std::string>{"aa", "ab"}));
  EXPECT_EQ(keys(r.range("ord", "a", "c", 2, true).value()), (std::vector<std::string>{"b", "ab"}));
  EXPECT_EQ(keys(r.range("ord", "ab0", {}, 1).value()), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(r.range("ord", "d", "e").value().empty());
  EXPECT_TRUE(r.range("ord", "b", "a").value().empty());
  EXPECT_TRUE(r.range("ord", {}, {}, 0).value().empty());
  // Replacing a value keeps one key; erasing removes it from the order.
  ASSERT_TRUE(w.put("ord", "a", "new"));
  ASSERT_TRUE(w.erase("ord", "b").value());
  EXPECT_FALSE(w.erase("ord", "b").value());
  EXPECT_EQ(keys(r.range("ord", "a", "c").value()), (std::vector<std::string>{"a", "aa", "ab"}));
  EXPECT_EQ(r.range("ord", "a", "aa").value()[0].second, Value("new"));
  EXPECT_EQ(r.size("ord").value(), 6u);
  EXPECT_EQ(r.get("ord", "a").value(), std::optional<Value>("new"));
}

TEST(Ordered, OtherKindsRefuseRangeNamingTableAndKind) {
  auto w = make_writer(test_options("ord-kind"));
  ASSERT_TRUE(w.put("kv", "x", 1));
  for (const char* table : {"kv", "log"}) {
    auto e = w.read().range(table);
    ASSERT_FALSE(e);
    EXPECT_EQ(e.error().code, errc::invalid_argument);
    EXPECT_NE(e.error().message.find(cat(cat("'", table), "'")), std::string::npos);
    EXPECT_NE(e.error().message.find(table == std::string("kv") ? "a set" : "a bag"),
              std::string::npos)
        << e.error().message;
    EXPECT_EQ(w.read().first(table).error().code, errc::invalid_argument);
    EXPECT_EQ(w.read().last(table).error().code, errc::invalid_argument);
  }
  EXPECT_EQ(w.read().range("nope").error().code, errc::not_found);
  // keys() still works on other kinds (unordered).
  EXPECT_EQ(w.read().keys("kv").value(), (std::vector<std::string>{"x"}));
}

TEST(Ordered, RandomOpsMatchAStdMap) {
  auto w = make_writer(test_options("ord-oracle"));
  const reader& r = w.read();
  std::map<std::string, std::int64_t> oracle;
  std::mt19937_64 rng(42);
  const std::uint64_t ops = testing::scaled(20000, 3000);
  const std::uint64_t space = 3000;  // keys reused: replaces, erases, splits and merges
  for (std::uint64_t i = 0; i < ops; ++i) {
    const std::string k = key_of(rng() % space);
    switch (rng() % 8) {
      case 0:
      case 1: {
        EXPECT_EQ(w.erase("ord", k).value(), oracle.erase(k) == 1);
        break;
      }
      case 2: {  // a batch
        std::vector<std::pair<std::string, Value>> batch;
        for (int j = 0; j < 20; ++j) {
          const std::string bk = key_of(rng() % space);
          batch.emplace_back(bk, static_cast<std::int64_t>(i * 100 + j));
          oracle[bk] = static_cast<std::int64_t>(i * 100 + j);
        }
        ASSERT_TRUE(w.put_many("ord", batch));
        break;
      }
      default:
        ASSERT_TRUE(w.put("ord", k, static_cast<std::int64_t>(i)));
        oracle[k] = static_cast<std::int64_t>(i);
    }
    if (i % 500 == 0 || i + 1 == ops) {
      ASSERT_EQ(r.range("ord").value(), expected(oracle, {}, {}, SIZE_MAX, false)) << "op " << i;
      for (int q = 0; q < 20; ++q) {
        std::string lo = rng() % 4 == 0 ? "" : key_of(rng() % space);
        std::string hi = rng() % 4 == 0 ? "" : key_of(rng() % space);
        if (rng() % 2 == 0) lo += "5";  // bounds between keys too
        const std::size_t limit = rng() % 3 == 0 ? SIZE_MAX : rng() % 150;
        const bool reverse = rng() % 2 == 0;
        ASSERT_EQ(r.range("ord", lo, hi, limit, reverse).value(),
                  expected(oracle, lo, hi, limit, reverse))
            << "op " << i << " [" << lo << ", " << hi << ") limit " << limit << " reverse "
            << reverse;
      }
      EXPECT_EQ(r.size("ord").value(), oracle.size());
    }
  }
  std::vector<std::string> prefixed;
  for (const auto& [k, v] : oracle)
    if (k.starts_with("k0012")) prefixed.push_back(k);
  EXPECT_EQ(r.keys("ord", "k0012").value(), prefixed);
}

// Seeks compare keys eight bytes at a time: keys of every length from 1 to
// 24 bytes (so every tail length), sharing long prefixes, with bytes above
// 0x7f (compared unsigned), and bounds that are prefixes of keys, all sorted
// as std::map sorts them.
TEST(Ordered, SeeksOrderBinaryKeysOfEveryLengthAsStdMap) {
  auto w = make_writer(test_options("ord-binary"));
  const reader& r = w.read();
  std::map<std::string, std::int64_t> oracle;
  std::mt19937_64 rng(11);
  const std::string alphabet(
      "\x00\x01\x7f\x80\xfe\xff"
      "ab",
      8);
  auto random_key = [&] {
    std::string k(1 + rng() % 24, '\0');
    // A long shared start, then a few bytes that differ: ties in whole words.
    const std::size_t shared = rng() % (k.size() + 1);
    for (std::size_t j = 0; j < k.size(); ++j)
      k[j] = j < shared ? 'p' : alphabet[rng() % alphabet.size()];
    return k;
  };
  std::vector<std::pair<std::string, Value>> batch;
  for (std::int64_t i = 0; i < 3000; ++i) {
    std::string k = random_key();
    oracle[k] = i;
    batch.emplace_back(std::move(k), i);
  }
  // Applied in order: of a key given twice the last wins, as in the oracle.
  for (std::size_t at = 0; at < batch.size(); at += 500) {
    ASSERT_TRUE(w.put_many("ord", std::span(batch).subspan(at, 500)));
  }
  for (int q = 0; q < 300; ++q) {
    std::string lo = random_key(), hi = random_key();
    if (q % 3 == 0) {
      // A bound that is a key, or a proper prefix of one.
      auto it = oracle.lower_bound(lo);
      if (it != oracle.end()) lo = it->first.substr(0, it->first.size() - (q % 2));
    }
    if (hi < lo) std::swap(lo, hi);  // `expected` walks from lo to hi
    const bool reverse = q % 2 == 1;
    const std::size_t limit = 1 + rng() % 40;
    ASSERT_EQ(r.range("ord", lo, hi, limit, reverse).value(),
              expected(oracle, lo, hi, limit, reverse))
        << "query " << q;
  }
}

/// The leaves of the ordered table "ord" (table 0) of the store of `o`, read
/// through a mapping of its first segment: their slot counts, in key order.
std::vector<unsigned> leaf_counts(const store_options& o) {
  const std::string seg = segment_name(o.ns, o.name, 0);
  const int fd = ::shm_open(seg.c_str(), O_RDONLY, 0);
  EXPECT_GE(fd, 0);
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  const auto size = static_cast<std::size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  EXPECT_NE(map, MAP_FAILED);
  const auto* base = static_cast<const std::byte*>(map);
  const auto* hdr =
      reinterpret_cast<const detail::store_header*>(base + detail::store_header_offset);
  std::vector<unsigned> counts;
  auto walk = [&](auto&& self, std::uint64_t ref) -> void {
    if (detail::ref_segment(ref) != 0) {
      ADD_FAILURE() << "a test store fits its first segment";
      return;
    }
    const auto* n = reinterpret_cast<const detail::btree_node*>(base + detail::ref_offset(ref));
    if (n->level == 0) {
      counts.push_back(n->count);
      return;
    }
    for (unsigned i = 0; i < n->count; ++i) self(self, detail::slots_of(n)[i].ref);
  };
  if (const std::uint64_t root = hdr->tree_roots[0].load(); root != detail::null_ref)
    walk(walk, root);
  ::munmap(map, size);
  return counts;
}

// put_many applies a batch to the tree in one pass: checked against std::map
// with batches that split leaves and internal nodes, keys given twice in a
// batch (the last wins, as in the hash index), and erases between batches
// that make nodes merge. The versions a scan reads from the leaves are the
// entries' own.
TEST(Ordered, BatchesMatchAStdMap) {
  auto o = test_options("ord-batch");
  o.initial_segment_bytes = std::uint64_t{64} << 20;
  auto w = make_writer(o);
  const reader& r = w.read();
  std::map<std::string, std::int64_t> oracle;
  std::mt19937_64 rng(11);
  const int rounds = static_cast<int>(testing::scaled(30, 10));
  std::int64_t stamp = 0;
  for (int round = 0; round < rounds; ++round) {
    std::vector<std::pair<std::string, Value>> batch;
    const std::uint64_t n = rng() % 3 == 0 ? 1 + rng() % 4 : rng() % 3000;
    const std::uint64_t start = rng() % 20000;
    const bool sequential = rng() % 2 == 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::string k = key_of(sequential ? start + i : rng() % 20000);
      batch.emplace_back(k, ++stamp);
      // Some keys twice in a batch: the later value is the one kept.
      if (rng() % 10 == 0) batch.emplace_back(k, ++stamp);
    }
    std::shuffle(batch.begin(), batch.end(), rng);
    for (const auto& [k, v] : batch) oracle[k] = v.as<std::int64_t>();
    ASSERT_TRUE(w.put_many("ord", batch));
    // Erases, single and in runs: leaves and internal nodes underflow.
    const std::uint64_t erases = rng() % 4 == 0 ? rng() % 2000 : rng() % 50;
    const std::uint64_t from = rng() % 20000;
    for (std::uint64_t i = 0; i < erases; ++i) {
      const std::string k = key_of(rng() % 2 == 0 ? from + i : rng() % 20000);
      EXPECT_EQ(w.erase("ord", k).value(), oracle.erase(k) == 1);
    }
    ASSERT_EQ(r.range("ord").value(), expected(oracle, {}, {}, SIZE_MAX, false))
        << "round " << round;
    ASSERT_EQ(r.range("ord", {}, {}, SIZE_MAX, true).value(),
              expected(oracle, {}, {}, SIZE_MAX, true));
    EXPECT_EQ(r.size("ord").value(), oracle.size());
  }
  std::size_t checked = 0;
  ASSERT_TRUE(r.scan("ord", {}, [&](const reader::scanned& s) {
    const auto v = r.get_view("ord", s.key).value();
    EXPECT_TRUE(v.has_value());
    if (v) {
      EXPECT_EQ(s.version, v->version()) << s.key;
    }
    ++checked;
    return true;
  }));
  EXPECT_EQ(checked, oracle.size());
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

// An atomic put_many on an ordered table: its tree and its index each switch
// once, so a scan and a get_many each see one round's values in every key;
// a batch that fails changes neither.
TEST(Ordered, AnAtomicBatchIsSeenWholeByScansAndGets) {
  const auto o = test_options("ord-atomic");
  auto w = make_writer(o);
  constexpr int kKeys = 300;  // several leaves
  std::vector<std::string> names;
  for (int i = 0; i < kKeys; ++i) names.push_back(key_of(i * 3));
  const std::vector<std::string_view> views(names.begin(), names.end());
  auto round_batch = [&](std::int64_t round) {
    std::vector<std::pair<std::string, Value>> b;
    for (const std::string& k : names) b.emplace_back(k, round);
    return b;
  };
  ASSERT_TRUE(w.put_many("ord", round_batch(0), batch_publish::at_once));
  std::atomic<bool> done{false};
  std::atomic<int> torn{0}, reads{0};
  std::thread reader_thread([&] {
    auto r = reader::attach(o.ns, o.name);
    if (!r) {
      ADD_FAILURE() << r.error().message;
      reads = 1 << 30;
      return;
    }
    while (!done.load()) {
      std::optional<Value> first;
      int seen = 0;
      auto scanned = r->scan("ord", {}, [&](const reader::scanned& s) {
        const Value v = s.value();
        if (!first) first = v;
        if (v != *first) ++torn;
        ++seen;
        return true;
      });
      if (!scanned || seen != kKeys) ++torn;
      auto got = r->get_many("ord", views);
      if (!got) {
        ++torn;
        break;
      }
      for (const auto& v : *got) {
        if (!v || *v != (*got)[0]) ++torn;
      }
      ++reads;
    }
    reads = 1 << 30;
  });
  const int rounds = static_cast<int>(testing::scaled(200, 30));
  for (int round = 1; round <= rounds; ++round) {
    ASSERT_TRUE(w.put_many("ord", round_batch(round), batch_publish::at_once));
  }
  const int before = reads.load();
  while (reads.load() < before + 5) std::this_thread::yield();
  done = true;
  reader_thread.join();
  EXPECT_EQ(torn.load(), 0);

  // A failing batch (a key over the limit) changes neither tree nor index.
  std::vector<std::pair<std::string, Value>> bad = {{key_of(1), 1}, {std::string(300, 'x'), 2}};
  ASSERT_FALSE(w.put_many("ord", bad, batch_publish::at_once));
  EXPECT_EQ(w.read().range("ord").value().size(), static_cast<std::size_t>(kKeys));
  EXPECT_EQ(w.read().get("ord", key_of(1)).value(), std::nullopt);
  // Keys given twice: the last wins in the tree as in the index.
  std::vector<std::pair<std::string, Value>> twice = {{"a", 1}, {"a", 2}};
  ASSERT_TRUE(w.put_many("ord", twice, batch_publish::at_once));
  EXPECT_EQ(w.read().first("ord").value()->second, Value(std::int64_t(2)));
  EXPECT_EQ(w.read().get("ord", "a").value(), std::optional<Value>(std::int64_t(2)));
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

// A sorted batch into an empty table fills its leaves (as LMDB's appends
// do): each leaf is written once, packed evenly, not split in halves key by
// key. Half-full leaves would double what a scan reads.
TEST(Ordered, ASortedBatchFillsItsLeaves) {
  auto o = test_options("ord-fill");
  o.initial_segment_bytes = std::uint64_t{64} << 20;
  auto w = make_writer(o);
  std::vector<std::pair<std::string, Value>> batch;
  const std::uint64_t n = 20000;
  for (std::uint64_t i = 0; i < n; ++i) batch.emplace_back(key_of(i), static_cast<std::int64_t>(i));
  ASSERT_TRUE(w.put_many("ord", batch));
  const std::vector<unsigned> counts = leaf_counts(o);
  ASSERT_FALSE(counts.empty());
  std::uint64_t total = 0;
  for (unsigned c : counts) total += c;
  EXPECT_EQ(total, n);
  EXPECT_GE(static_cast<double>(total) / static_cast<double>(counts.size()),
            0.9 * detail::btree_max_fanout)
      << counts.size() << " leaves";
  // Appending in sorted batches keeps them full too.
  for (std::uint64_t at = n; at < 2 * n; at += 1000) {
    std::vector<std::pair<std::string, Value>> more;
    for (std::uint64_t i = at; i < at + 1000; ++i)
      more.emplace_back(key_of(i), static_cast<std::int64_t>(i));
    ASSERT_TRUE(w.put_many("ord", more));
  }
  const std::vector<unsigned> after = leaf_counts(o);
  EXPECT_GE(static_cast<double>(2 * n) / static_cast<double>(after.size()),
            0.8 * detail::btree_max_fanout)
      << after.size() << " leaves";
  EXPECT_EQ(w.read().range("ord", key_of(n - 5), {}, 10).value().back().first, key_of(n + 4));
}

TEST(Ordered, AHundredThousandKeysThenDeletesGiveTheirNodesBack) {
  auto w = make_writer(test_options("ord-many"));
  // The same writes to a set table: what the hash index and entries take.
  auto plain = make_writer(test_options("ord-many-set"));
  const reader& r = w.read();
  const std::uint64_t n = testing::scaled(100000, 10000);
  std::vector<std::uint64_t> order(n);
  for (std::uint64_t i = 0; i < n; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  for (std::size_t at = 0; at < n; at += 1000) {
    std::vector<std::pair<std::string, Value>> batch;
    for (std::size_t i = at; i < std::min<std::size_t>(n, at + 1000); ++i)
      batch.emplace_back(key_of(order[i]), static_cast<std::int64_t>(order[i]));
    ASSERT_TRUE(w.put_many("ord", batch));
    ASSERT_TRUE(plain.put_many("kv", batch));
  }
  ASSERT_EQ(r.size("ord").value(), n);
  std::uint64_t expect = 0;
  bool sorted = true;
  ASSERT_TRUE(r.scan("ord", {}, [&](const reader::scanned& s) {
    sorted = sorted && s.key == key_of(expect) && s.value() == Value(std::int64_t(expect));
    ++expect;
    return true;
  }));
  EXPECT_TRUE(sorted);
  EXPECT_EQ(expect, n);
  const auto mid = r.range("ord", key_of(n / 2), {}, 100).value();
  ASSERT_EQ(mid.size(), 100u);
  EXPECT_EQ(mid.back().first, key_of(n / 2 + 99));
  const auto back = r.range("ord", {}, key_of(n / 2), 100, true).value();
  ASSERT_EQ(back.size(), 100u);
  EXPECT_EQ(back.front().first, key_of(n / 2 - 1));
  EXPECT_EQ(back.back().first, key_of(n / 2 - 100));

  // Delete all but 10 keys: underflowing nodes merge, so what stays is about
  // one leaf (plus entries), not a spine of near-empty nodes.
  for (std::uint64_t i = 0; i < n - 10; ++i) {
    ASSERT_TRUE(w.erase("ord", key_of(order[i])).value());
    ASSERT_TRUE(plain.erase("kv", key_of(order[i])).value());
  }
  w.reclaim();
  EXPECT_EQ(r.range("ord").value().size(), 10u);
  EXPECT_EQ(w.stats().bytes_retired, 0u);
  // Ten keys in one leaf; unmerged, they would sit in ten leaves under a spine.
  const std::uint64_t tree_bytes = w.stats().bytes_used - plain.stats().bytes_used;
  EXPECT_GT(tree_bytes, 0u);
  EXPECT_LE(tree_bytes, 1024u) << "nodes of deleted keys were not merged away";
}

// A put that replaces a value by one of the same size in its leaf (inline
// and as long, or both in entry blocks) copies the path and patches it; any
// other goes the general way. Both give what std::map says, with the
// versions of the entries, and leave no garbage behind.
TEST(Ordered, ReplacingValuesInPlaceOrNotMatchesAStdMap) {
  auto w = make_writer(test_options("ord-patch"));
  const reader& r = w.read();
  std::map<std::string, std::string> oracle;
  auto value_of = [](std::size_t bytes, int round) {
    return std::string(bytes, static_cast<char>('a' + round));
  };
  std::vector<std::pair<std::string, Value>> batch;
  for (int i = 0; i < 2000; ++i) {
    oracle[key_of(i)] = value_of(64, 0);
    batch.emplace_back(key_of(i), Bytes{oracle[key_of(i)]});
  }
  ASSERT_TRUE(w.put_many("ord", batch));
  w.reclaim();
  const std::uint64_t used = w.stats().bytes_used;
  std::mt19937_64 rng(5);
  // Rounds of: same size inline (patched), larger than inline (general, then
  // patched entry to entry), back to inline (general), odd sizes (general).
  const std::size_t sizes[] = {64, 64, 2000, 3000, 64, 65, 64};
  for (int round = 1; round <= 7; ++round) {
    const std::size_t bytes = sizes[round - 1];
    for (int n = 0; n < 300; ++n) {
      const std::string k = key_of(rng() % 2000);
      oracle[k] = value_of(bytes, round);
      ASSERT_TRUE(w.put("ord", k, Bytes{oracle[k]}));
    }
    auto it = oracle.begin();
    bool same = true;
    ASSERT_TRUE(r.scan("ord", {}, [&](const reader::scanned& s) {
      const auto view = r.get_view("ord", s.key).value();
      same = same && it != oracle.end() && s.key == it->first &&
             s.value() == Value(Bytes{it->second}) && s.version == view->version();
      ++it;
      return true;
    }));
    EXPECT_TRUE(same) << "round " << round;
    EXPECT_EQ(it, oracle.end());
    w.reclaim();
    EXPECT_EQ(w.stats().bytes_retired, 0u);
    // Replaced in place: nodes and entries of the same sizes as before.
    if (round <= 2) {
      EXPECT_EQ(w.stats().bytes_used, used) << "round " << round;
    }
  }
}

TEST(Ordered, ClearReloadUpdateAndCompareAndSetKeepTheOrder) {
  auto w = make_writer(test_options("ord-reload"));
  const reader& r = w.read();
  for (int i = 0; i < 500; ++i) ASSERT_TRUE(w.put("ord", key_of(i), i));
  ASSERT_TRUE(w.clear("ord"));
  EXPECT_EQ(r.first("ord").value(), std::nullopt);
  ASSERT_TRUE(w.put("ord", "z", 1));
  ASSERT_TRUE(w.reload("ord", [](loader& l) -> result<void> {
    for (int i = 300; i-- > 0;) {
      if (auto p = l.put(key_of(i), i); !p) return p;
    }
    return {};
  }));
  EXPECT_EQ(r.size("ord").value(), 300u);
  EXPECT_EQ(r.first("ord").value()->first, key_of(0));
  EXPECT_EQ(r.last("ord").value()->first, key_of(299));
  // A failed reload leaves the tree as it was.
  EXPECT_FALSE(w.reload("ord", [](loader& l) -> result<void> {
    (void)l.put("a", 1);
    return fail(errc::invalid_argument, "no");
  }));
  EXPECT_EQ(r.first("ord").value()->first, key_of(0));
  ASSERT_TRUE(w.update("ord", key_of(5), [](const std::optional<Value>& v) {
    return Value(v->as<std::int64_t>() + 1000);
  }));
  const std::uint64_t version = r.get_view("ord", key_of(7)).value()->version();
  ASSERT_TRUE(w.compare_and_set("ord", key_of(7), version, 77));
  const auto part = r.range("ord", key_of(5), key_of(8)).value();
  ASSERT_EQ(part.size(), 3u);
  EXPECT_EQ(part[0].second, Value(std::int64_t(1005)));
  EXPECT_EQ(part[2].second, Value(std::int64_t(77)));
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

// A scan holds its epoch: nodes and entries the writer replaces meanwhile stay
// readable (the scan sees its snapshot), and are freed once it ends.
TEST(Ordered, ReplacedNodesRetireUntilTheScanLeaves) {
  auto w = make_writer(test_options("ord-reclaim"));
  const reader& r = w.read();
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(w.put("ord", key_of(i), i));
  w.reclaim();
  ASSERT_EQ(w.stats().bytes_retired, 0u);
  int seen = 0;
  bool snapshot = true;
  std::uint64_t retired_during = 0;
  ASSERT_TRUE(r.scan("ord", {}, [&](const reader::scanned& s) {
    if (seen == 10) {
      for (int i = 0; i < 2000; i += 3) {
        EXPECT_TRUE(w.put("ord", key_of(i), -1));
        EXPECT_TRUE(w.erase("ord", key_of(i + 1)));
      }
      w.reclaim();
      retired_during = w.stats().bytes_retired;
    }
    snapshot = snapshot && s.key == key_of(seen) && s.value() == Value(std::int64_t(seen));
    ++seen;
    return true;
  }));
  EXPECT_EQ(seen, 2000);
  EXPECT_TRUE(snapshot);
  EXPECT_GT(retired_during, 0u);
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
  EXPECT_EQ(r.range("ord", {}, {}, 3).value(), (entries{{key_of(0), Value(std::int64_t(-1))},
                                                        {key_of(2), Value(std::int64_t(2))},
                                                        {key_of(3), Value(std::int64_t(-1))}}));
}

// A damaged tree (root, levels, counts) gives errors, never a crash or a
// walk longer than the store.
TEST(Ordered, CorruptTreesGiveErrorsNotCrashes) {
  const auto o = test_options("ord-corrupt");
  auto w = make_writer(o);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(w.put("ord", key_of(i), i));  // two levels
  const std::string seg = segment_name(o.ns, o.name, 0);
  const int fd = ::shm_open(seg.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  const auto size = static_cast<std::size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);
  auto* base = static_cast<std::byte*>(map);
  auto* hdr = reinterpret_cast<detail::store_header*>(base + detail::store_header_offset);
  const std::uint64_t root = hdr->tree_roots[0].load();
  ASSERT_EQ(detail::ref_segment(root), 0u);
  auto* node = reinterpret_cast<detail::btree_node*>(base + detail::ref_offset(root));
  ASSERT_EQ(node->level, 1u);
  const reader& r = w.read();
  auto fails = [&](const char* what) {
    auto all = r.range("ord");
    EXPECT_FALSE(all) << what;
    auto back = r.range("ord", {}, {}, SIZE_MAX, true);
    EXPECT_FALSE(back) << what;
  };
  hdr->tree_roots[0].store(detail::make_ref(0, 64));  // the store header
  fails("root in the header");
  hdr->tree_roots[0].store(detail::make_ref(0, size - 8));
  fails("root at the segment's end");
  hdr->tree_roots[0].store(root);
  node->level = 0;  // its children read as entries
  fails("root level 0");
  node->level = detail::btree_max_depth;
  fails("root too deep");
  node->level = 1;
  const std::uint64_t entries = node->entries;
  node->entries = 50;  // fewer keys than the tree holds: the walk stops
  fails("root count too low");
  node->entries = ~std::uint64_t{0};
  fails("root count beyond the store");
  node->entries = entries;
  // A seek reads an internal node's keys (a scan from either end walks past them).
  auto seek_fails = [&](const char* what) {
    EXPECT_FALSE(r.range("ord", key_of(5))) << what;
    EXPECT_FALSE(r.range("ord", {}, key_of(5), SIZE_MAX, true)) << what;
  };
  const std::uint32_t offset = detail::slots_of(node)[1].key_offset;
  const_cast<detail::btree_slot*>(detail::slots_of(node))[1].key_offset = 1u << 30;
  seek_fails("a key outside its node");
  const_cast<detail::btree_slot*>(detail::slots_of(node))[1].key_offset = 8;
  seek_fails("a key over its node's header");
  const_cast<detail::btree_slot*>(detail::slots_of(node))[1].key_offset = offset;
  auto* root_slot = const_cast<detail::btree_slot*>(detail::slots_of(node));
  const std::uint64_t child = root_slot[1].ref;
  root_slot[1].ref = detail::inline_slot(node->keys_end, 1);
  fails("an inline slot in an internal node");
  root_slot[1].ref = child;

  // A leaf's inline records: each must lie inside its node, after the slots.
  ASSERT_EQ(detail::ref_segment(child), 0u);
  auto* leaf = reinterpret_cast<detail::btree_node*>(base + detail::ref_offset(child));
  ASSERT_EQ(leaf->level, 0u);
  auto* leaf_slot = const_cast<detail::btree_slot*>(detail::slots_of(leaf)) + 2;
  const std::uint64_t record = leaf_slot->ref;
  ASSERT_NE(record & detail::btree_inline_flag, 0u) << "small values are inline";
  const std::uint64_t value_size = detail::inline_size(record);
  leaf_slot->ref =
      detail::inline_slot(detail::inline_offset(record), value_size + leaf->block_bytes);
  fails("an inline value longer than its node");
  leaf_slot->ref = detail::inline_slot(std::uint64_t{1} << 31, value_size);
  fails("an inline record past its node's end");
  leaf_slot->ref = detail::inline_slot(64, value_size);
  fails("an inline record over the node's slots");
  leaf_slot->ref = detail::inline_slot(leaf->block_bytes - value_size - 7, value_size);
  fails("an inline record one byte too long");
  leaf_slot->ref = record;
  // A leaf's keys: each checked as the scan reaches it.
  const std::uint32_t leaf_key = leaf_slot->key_offset;
  leaf_slot->key_offset = static_cast<std::uint32_t>(leaf->block_bytes);
  fails("a leaf's key past its node's end");
  leaf_slot->key_offset = 8;
  fails("a leaf's key over its node's header");
  leaf_slot->key_offset = leaf_key;
  // keys_end is a hint only: a wrong one changes nothing.
  const std::uint64_t keys_end = leaf->keys_end;
  leaf->keys_end = ~std::uint64_t{0};
  ASSERT_EQ(r.range("ord").value().size(), 200u);
  leaf->keys_end = keys_end;
  ASSERT_EQ(r.range("ord").value().size(), 200u);
  // A scan reads the tree alone: a damaged hash index fails keyed reads
  // only, and a scan is not made to check (or pay for) what it never reads.
  const std::uint64_t index_root = hdr->tables[0].root.load();
  ASSERT_EQ(detail::ref_segment(index_root), 0u);
  auto* ix = reinterpret_cast<detail::index_header*>(base + detail::ref_offset(index_root));
  const std::uint64_t capacity = ix->capacity;
  ix->capacity = 3;
  EXPECT_FALSE(r.get("ord", key_of(5)));
  EXPECT_EQ(r.range("ord").value().size(), 200u);
  ix->capacity = capacity;
  EXPECT_TRUE(r.get("ord", key_of(5)).value());
  ::munmap(map, size);
}

// A reader process scans while the writer rewrites the table: every scan is
// sorted and one snapshot (each round rewrites all "g" keys in one batch, so a
// scan sees one round's value in all of them), while inserts and erases of
// other keys split and merge nodes around them.
TEST(Ordered, ForkedReaderScansConsistentSnapshotsWhileTheWriterMutates) {
  const auto o = test_options("ord-fork");
  auto w = make_writer(o);
  constexpr int kGroup = 300;
  auto group_batch = [](std::int64_t round) {
    std::vector<std::pair<std::string, Value>> b;
    for (int i = 0; i < kGroup; ++i) b.emplace_back(cat("g", key_of(i * 7)), round);
    return b;
  };
  ASSERT_TRUE(w.put_many("ord", group_batch(0)));
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(ready[0]);
    auto r = reader::attach(o.ns, o.name);
    if (!r) ::_exit(2);
    (void)!::write(ready[1], "x", 1);
    const int scans = static_cast<int>(testing::scaled(400, 60));
    for (int s = 0; s < scans; ++s) {
      std::string prev;
      bool first = true;
      int group = 0;
      std::int64_t round = -1;
      bool ok = true;
      auto done = r->scan("ord", {}, [&](const reader::scanned& e) {
        if (!first && !(prev < e.key)) ok = false;
        first = false;
        prev = std::string(e.key);
        if (e.key.starts_with("g")) {
          const std::int64_t v = e.value().as<std::int64_t>();
          if (round == -1) round = v;
          if (v != round) ok = false;
          ++group;
        }
        return true;
      });
      if (!done) ::_exit(4);
      if (!ok) ::_exit(3);
      if (group != kGroup) ::_exit(5);
    }
    ::_exit(0);
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  std::mt19937_64 rng(3);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (std::int64_t round = 1;; ++round) {
    if (::waitpid(child, &status, WNOHANG) != 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      FAIL() << "the reader did not finish its scans in 120 s";
    }
    ASSERT_TRUE(w.put_many("ord", group_batch(round)));
    for (int i = 0; i < 40; ++i) {
      const std::string k = cat("h", key_of(rng() % 2000));
      if (rng() % 2 == 0) {
        ASSERT_TRUE(w.put("ord", k, round));
      } else {
        ASSERT_TRUE(w.erase("ord", k));
      }
    }
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: attach, 3: unsorted or torn scan, 4: scan error, "
                                       "5: missing keys";
  w.reclaim();
}

}  // namespace
}  // namespace slither::shm
