// Store benchmarks, side by side with LMDB and an in-process unordered_map.
//
// get: 64-byte values under 100k keys, looked up in a fixed random order by a
// reader attached on its own (read-only mappings, its own registry slot).
// LMDB gets the same keys and values, read with mdb_get inside one read
// transaction; its environment lives in /dev/shm with MDB_NOSYNC, so neither
// side touches a disk. Our get returns a decoded copy (a slither::Value); the
// unordered_map get copies the std::string value; mdb_get returns a pointer.
//
// Ordered tables: the same keys and values in an ordered_set table. A point
// read in place (`peek`, as mdb_get returns a pointer; the decoded `get` is
// reported too) against mdb_get; a 100-key range scan (our `scan`, in place, against an
// LMDB cursor's MDB_SET_RANGE then MDB_NEXT, both touching each key and value)
// from a random start; single puts, each visible on return (ours) against
// one committed write transaction per put (LMDB).
//
// churn: a store of its own with 1 GiB of live values, 64 B to 64 KiB, whose
// size mix drifts from round to round (small values, then large, then back),
// every key rewritten (or erased, as the mix needs fewer keys) in each of 10
// rounds, reclaimed after each. `shm_per_live` is the most /dev/shm held by
// its segments (their pages, st_blocks) after any round, once the free pages
// are handed back (`writer::trim`), over the live key and value bytes then.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "slither/shm/store.hpp"

namespace {

using namespace slither;
using namespace slither::shm;

constexpr std::size_t kKeys = 100000;
constexpr std::size_t kValueBytes = 64;
constexpr std::size_t kBatch = 1000;
/// Keys a range scan reads.
constexpr std::size_t kRange = 100;

void check_mdb(int rc, const char* what) {
  if (rc != MDB_SUCCESS) throw std::runtime_error(std::string(what) + ": " + mdb_strerror(rc));
}

std::string value_bytes(std::size_t i) {
  std::string v(kValueBytes, '\0');
  for (std::size_t j = 0; j < v.size(); ++j) v[j] = static_cast<char>((i * 131 + j) & 0xff);
  return v;
}

/// Everything the benchmarks share, built once.
struct bench_env {
  std::vector<std::string> keys;
  std::vector<std::size_t> order;  // random permutation of key indices
  // keys[order[i]], laid out in access order so that fetching the next key
  // is not itself a cache miss that every benchmark would pay.
  std::vector<std::string> shuffled;
  // Where the i-th range scan starts: a random key with kRange keys after it,
  // in access order too (looked up through `order`, each start was a miss
  // that both range benchmarks paid on top of the scan).
  std::vector<std::string> range_starts;
  std::vector<std::string> values;
  std::optional<writer> w;
  std::optional<reader> r;
  std::unordered_map<std::string, std::string> umap;
  std::filesystem::path lmdb_dir;
  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;

  bench_env() {
    keys.reserve(kKeys);
    for (std::size_t i = 0; i < kKeys; ++i) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "key:%08zu", i);
      keys.emplace_back(buf);
      values.push_back(value_bytes(i));
    }
    order.resize(kKeys);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
    for (std::size_t i : order) shuffled.push_back(keys[i]);
    for (std::size_t i : order) range_starts.push_back(keys[i % (kKeys - kRange)]);

    store_options o;
    o.ns = "bench";  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on "literal" + string
    o.ns += std::to_string(::getpid());
    o.name = "store";
    o.initial_segment_bytes = std::uint64_t{256} << 20;
    std::vector<table_spec> tables = {{"kv", table_kind::set, kKeys},
                                      {"ord", table_kind::ordered_set, kKeys}};
    w.emplace(writer::create(o, tables).value());
    for (std::size_t i = 0; i < kKeys; ++i) w->put("kv", keys[i], Value(Bytes{values[i]})).value();
    for (std::size_t i = 0; i < kKeys; i += kBatch) {
      std::vector<std::pair<std::string, Value>> batch;
      for (std::size_t j = i; j < i + kBatch; ++j) batch.emplace_back(keys[j], Bytes{values[j]});
      w->put_many("ord", batch).value();
    }
    w->put("kv", "nd1k", ndarray::zeros(dtype::u8, {1024})).value();
    w->put("kv", "nd64m", ndarray::zeros(dtype::u8, {std::uint64_t{64} << 20})).value();
    r.emplace(reader::attach(o.ns, o.name).value());

    for (std::size_t i = 0; i < kKeys; ++i) umap.emplace(keys[i], values[i]);

    char dir[] = "/dev/shm/slither-bench-lmdb-XXXXXX";
    if (::mkdtemp(dir) == nullptr) throw std::runtime_error("mkdtemp failed");
    lmdb_dir = dir;
    check_mdb(mdb_env_create(&env), "mdb_env_create");
    check_mdb(mdb_env_set_mapsize(env, std::size_t{2} << 30), "mdb_env_set_mapsize");
    check_mdb(mdb_env_open(env, dir, MDB_NOSYNC | MDB_NOMETASYNC, 0600), "mdb_env_open");
    MDB_txn* txn = nullptr;
    check_mdb(mdb_txn_begin(env, nullptr, 0, &txn), "mdb_txn_begin");
    check_mdb(mdb_dbi_open(txn, nullptr, 0, &dbi), "mdb_dbi_open");
    for (std::size_t i = 0; i < kKeys; ++i) {
      MDB_val k{keys[i].size(), keys[i].data()};
      MDB_val v{values[i].size(), values[i].data()};
      check_mdb(mdb_put(txn, dbi, &k, &v, 0), "mdb_put");
    }
    check_mdb(mdb_txn_commit(txn), "mdb_txn_commit");
  }

  ~bench_env() {
    r.reset();
    w.reset();  // closes the store: unlinks its segments
    if (env != nullptr) mdb_env_close(env);
    std::error_code ec;
    std::filesystem::remove_all(lmdb_dir, ec);
  }
};

bench_env& env() {
  static bench_env e;
  return e;
}

void store_get(benchmark::State& state) {
  auto& e = env();
  std::size_t i = 0;
  for (auto _ : state) {
    auto v = e.r->get("kv", e.shuffled[i]);
    benchmark::DoNotOptimize(v);
    if (++i == kKeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void lmdb_get(benchmark::State& state) {
  auto& e = env();
  MDB_txn* txn = nullptr;
  check_mdb(mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
  std::size_t i = 0;
  for (auto _ : state) {
    const std::string& key = e.shuffled[i];
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    MDB_val v;
    if (mdb_get(txn, e.dbi, &k, &v) != MDB_SUCCESS) state.SkipWithError("mdb_get missed a key");
    benchmark::DoNotOptimize(v.mv_data);
    if (++i == kKeys) i = 0;
  }
  mdb_txn_abort(txn);
  state.SetItemsProcessed(state.iterations());
}

void umap_get(benchmark::State& state) {
  auto& e = env();
  std::size_t i = 0;
  for (auto _ : state) {
    auto it = e.umap.find(e.shuffled[i]);
    std::string copy = it->second;
    benchmark::DoNotOptimize(copy);
    if (++i == kKeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void store_view(benchmark::State& state, const char* key) {
  auto& e = env();
  for (auto _ : state) {
    auto v = e.r->get_view("kv", key);
    ndarray a = (*v)->array();
    benchmark::DoNotOptimize(a.data());
  }
  state.SetItemsProcessed(state.iterations());
}
void store_view_1k(benchmark::State& state) {
  store_view(state, "nd1k");
}
void store_view_64m(benchmark::State& state) {
  store_view(state, "nd64m");
}

void store_put(benchmark::State& state) {
  auto& e = env();
  std::vector<Value> vals;
  for (std::size_t j = 0; j < 16; ++j) vals.emplace_back(Bytes{value_bytes(j + 1)});
  std::size_t i = 0;
  for (auto _ : state) {
    auto v = e.w->put("kv", e.shuffled[i], vals[i & 15]);
    benchmark::DoNotOptimize(v);
    if (++i == kKeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

std::vector<std::vector<std::pair<std::string, Value>>> make_batches() {
  auto& e = env();
  std::vector<std::vector<std::pair<std::string, Value>>> batches(kKeys / kBatch);
  for (std::size_t i = 0; i < kKeys; ++i) {
    batches[i / kBatch].emplace_back(e.shuffled[i], Value(Bytes{value_bytes(i + 3)}));
  }
  return batches;
}

void store_put_many(benchmark::State& state) {
  auto& e = env();
  const auto batches = make_batches();
  std::size_t b = 0;
  for (auto _ : state) {
    e.w->put_many("kv", batches[b]).value();
    if (++b == batches.size()) b = 0;
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

void lmdb_put_batched(benchmark::State& state) {
  auto& e = env();
  std::size_t i = 0;
  for (auto _ : state) {
    MDB_txn* txn = nullptr;
    check_mdb(mdb_txn_begin(e.env, nullptr, 0, &txn), "mdb_txn_begin");
    for (std::size_t n = 0; n < kBatch; ++n) {
      const std::string& key = e.shuffled[i];
      const std::string& value = e.values[(i + 3) % kKeys];
      MDB_val k{key.size(), const_cast<char*>(key.data())};
      MDB_val v{value.size(), const_cast<char*>(value.data())};
      check_mdb(mdb_put(txn, e.dbi, &k, &v, 0), "mdb_put");
      if (++i == kKeys) i = 0;
    }
    check_mdb(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// In place, as mdb_get returns a pointer: the value's stored bytes, no decoded copy.
void store_ordered_peek(benchmark::State& state) {
  auto& e = env();
  std::size_t i = 0, bytes = 0;
  for (auto _ : state) {
    e.r->peek("ord", e.shuffled[i],
              [&](std::span<const std::byte> v) { bytes += static_cast<std::size_t>(v[0]); })
        .value();
    if (++i == kKeys) i = 0;
  }
  benchmark::DoNotOptimize(bytes);
  state.SetItemsProcessed(state.iterations());
}

void store_ordered_get(benchmark::State& state) {
  auto& e = env();
  std::size_t i = 0;
  for (auto _ : state) {
    auto v = e.r->get("ord", e.shuffled[i]);
    benchmark::DoNotOptimize(v);
    if (++i == kKeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void store_range100(benchmark::State& state) {
  auto& e = env();
  std::size_t i = 0;
  for (auto _ : state) {
    std::size_t n = 0, bytes = 0;
    e.r->scan("ord", reader::key_range{e.range_starts[i], {}, kRange, false},
              [&](const reader::scanned& s) {
                bytes += s.key.size() + static_cast<std::size_t>(s.bytes[0]);
                ++n;
                return true;
              })
        .value();
    if (n != kRange) state.SkipWithError("a range scan missed keys");
    benchmark::DoNotOptimize(bytes);
    if (++i == kKeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations() * kRange);
}

void lmdb_range100(benchmark::State& state) {
  auto& e = env();
  MDB_txn* txn = nullptr;
  check_mdb(mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
  MDB_cursor* cur = nullptr;
  check_mdb(mdb_cursor_open(txn, e.dbi, &cur), "mdb_cursor_open");
  std::size_t i = 0;
  for (auto _ : state) {
    const std::string& start = e.range_starts[i];
    MDB_val k{start.size(), const_cast<char*>(start.data())};
    MDB_val v;
    std::size_t n = 0, bytes = 0;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == MDB_SUCCESS && n < kRange;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      bytes +=
          k.mv_size + static_cast<std::size_t>(static_cast<const unsigned char*>(v.mv_data)[0]);
      ++n;
    }
    if (n != kRange) state.SkipWithError("a range scan missed keys");
    benchmark::DoNotOptimize(bytes);
    if (++i == kKeys) i = 0;
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  state.SetItemsProcessed(state.iterations() * kRange);
}

void store_ordered_put(benchmark::State& state) {
  auto& e = env();
  std::vector<Value> vals;
  for (std::size_t j = 0; j < 16; ++j) vals.emplace_back(Bytes{value_bytes(j + 1)});
  std::size_t i = 0;
  for (auto _ : state) {
    auto v = e.w->put("ord", e.shuffled[i], vals[i & 15]);
    benchmark::DoNotOptimize(v);
    if (++i == kKeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void lmdb_put(benchmark::State& state) {
  auto& e = env();
  std::size_t i = 0;
  for (auto _ : state) {
    MDB_txn* txn = nullptr;
    check_mdb(mdb_txn_begin(e.env, nullptr, 0, &txn), "mdb_txn_begin");
    const std::string& key = e.shuffled[i];
    const std::string& value = e.values[(i + 1) % kKeys];
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    MDB_val v{value.size(), const_cast<char*>(value.data())};
    check_mdb(mdb_put(txn, e.dbi, &k, &v, 0), "mdb_put");
    check_mdb(mdb_txn_commit(txn), "mdb_txn_commit");
    if (++i == kKeys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void store_ordered_put_many(benchmark::State& state) {
  auto& e = env();
  const auto batches = make_batches();
  std::size_t b = 0;
  for (auto _ : state) {
    e.w->put_many("ord", batches[b]).value();
    if (++b == batches.size()) b = 0;
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

/// Bytes the segments of a store take in /dev/shm (pages, not sizes).
std::uint64_t shm_pages_bytes(const store_options& o, std::uint64_t segments) {
  std::uint64_t total = 0;
  for (std::uint32_t n = 0; n < segments; ++n) {
    const int fd = ::shm_open(segment_name(o.ns, o.name, n).c_str(), O_RDONLY, 0);
    if (fd < 0) continue;
    struct stat st {};
    if (::fstat(fd, &st) == 0) total += static_cast<std::uint64_t>(st.st_blocks) * 512;
    ::close(fd);
  }
  return total;
}

void store_churn(benchmark::State& state) {
  constexpr std::uint64_t live_target = std::uint64_t{1} << 30;
  constexpr int rounds = 10;
  store_options o;
  o.ns = "bench";  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on "literal" + string
  o.ns += std::to_string(::getpid());
  o.name = "churn";
  o.max_value_bytes = std::uint64_t{1} << 20;
  std::vector<table_spec> tables = {{"kv", table_kind::set, 1 << 16}};
  std::mt19937_64 rng(42);
  double worst = 0;
  std::uint64_t puts = 0;
  double seconds = 0;
  for (auto _ : state) {
    auto w = writer::create(o, tables).value();
    std::vector<std::uint32_t> sizes;  // of each key's value; 0 = absent
    std::uint64_t live = 0;
    std::string payload(64 << 10, 'c');
    for (int round = 0; round < rounds; ++round) {
      // log2 of the sizes: uniform over 4 octaves whose start drifts 6 -> 12 -> 6.
      const double lo = 6.0 + 6.0 * (1.0 - std::abs(round - 4.5) / 4.5);
      std::uniform_real_distribution<double> octave(lo, std::min(lo + 4.0, 16.0));
      const double mean = (std::exp2(std::min(lo + 4.0, 16.0)) - std::exp2(lo)) /
                          (std::log(2.0) * (std::min(lo + 4.0, 16.0) - lo));
      const auto keys = static_cast<std::size_t>(static_cast<double>(live_target) / mean);
      const auto start = std::chrono::steady_clock::now();
      if (sizes.size() < keys) sizes.resize(keys, 0);
      for (std::size_t k = 0; k < sizes.size(); ++k) {
        std::string key = "k";
        key += std::to_string(k);
        if (sizes[k] != 0) live -= sizes[k] + key.size();
        if (k >= keys) {
          if (sizes[k] != 0) w.erase("kv", key).value();
          sizes[k] = 0;
          continue;
        }
        const auto n = static_cast<std::uint32_t>(std::exp2(octave(rng)));
        payload[0] = static_cast<char>(round);
        w.put("kv", key, Value(Bytes{payload.substr(0, n)})).value();
        sizes[k] = n;
        live += n + key.size();
        ++puts;
      }
      w.reclaim();
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      w.trim();  // what the background trimmer hands back a moment later anyway
      const auto st = w.stats();
      worst = std::max(
          worst, static_cast<double>(shm_pages_bytes(o, st.segments)) / static_cast<double>(live));
    }
  }
  state.counters["shm_per_live"] = worst;
  state.counters["puts_per_second"] = static_cast<double>(puts) / seconds;
}

}  // namespace

// One run: its figure is a ratio of sizes, not a time, and a run takes a minute.
BENCHMARK(store_churn)->Iterations(1)->Repetitions(1)->Unit(benchmark::kSecond);
BENCHMARK(store_get);
BENCHMARK(lmdb_get);
BENCHMARK(umap_get);
BENCHMARK(store_view_1k);
BENCHMARK(store_view_64m);
BENCHMARK(store_put);
BENCHMARK(store_put_many);
BENCHMARK(lmdb_put_batched);
BENCHMARK(store_ordered_get);
BENCHMARK(store_ordered_peek);
BENCHMARK(store_range100);
BENCHMARK(lmdb_range100);
BENCHMARK(store_ordered_put);
BENCHMARK(lmdb_put);
BENCHMARK(store_ordered_put_many);

BENCHMARK_MAIN();
