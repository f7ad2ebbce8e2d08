// A set table at scale: 10^5 keys against 10^7, in the same run.
//
// Two stores, one set table each, filled with keys like "user:00001234" (13
// bytes) and 32-byte bytes values, one `put` at a time (as a broker applies
// single writes). Then a reader attached on its own gets keys in a random
// order from each (`reader::get`, a decoded copy, as store.get.cxx measures).
// The keys a get loop visits are laid out in visiting order, so fetching the
// next key is not itself a cache miss.
//
// Figures (counters of store_fill_1e7, set once per run):
// - put_max_pause_ms: the longest single `put` while filling to 10^7 keys,
//   in CPU time of the writing thread (its own work, page faults included;
//   not the time a loaded machine gave other processes). Index growth is
//   what it watches: a growth that rebuilt the whole array in one put
//   stalled that put for a second at 10^7 keys;
// - bytes_per_entry: the writer's `stats().bytes_used` after the fill and a
//   reclaim (every allocated block readers can reach: entry blocks at their
//   allocated size, the index array; not free space in the segments, not
//   segment headers), minus Σ(key bytes + value bytes) where a value's bytes
//   are the 32 bytes the user put, not their encoding, divided by the number
//   of keys. So it counts entry headers, the encoding's tag and length,
//   alignment and size-class padding, and the index slots.
#include <benchmark/benchmark.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "slither/shm/store.hpp"

namespace {

using namespace slither;
using namespace slither::shm;

constexpr std::size_t kSmall = 100000;
constexpr std::size_t kLarge = 10000000;
constexpr std::size_t kValueBytes = 32;
// Keys a get loop cycles through: all of the small table (shuffled), a random
// sample of the large one.
constexpr std::size_t kProbes = std::size_t{1} << 20;

std::string key_of(std::size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "user:%08zu", i);
  return buf;
}

std::string value_of(std::size_t i) {
  std::string v(kValueBytes, '\0');
  for (std::size_t j = 0; j < v.size(); ++j) v[j] = static_cast<char>((i * 131 + j) & 0xff);
  return v;
}

/// CPU time of the calling thread: a put's pause without the time the
/// scheduler gave other processes (on a loaded machine, several ms at a time).
std::int64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

/// One store with one set table of `n` keys, and what was measured filling it.
struct filled_store {
  std::optional<writer> w;
  std::optional<reader> r;
  std::vector<std::string> probes;  // keys in the order a get loop visits them
  double max_pause_ms = 0;
  double bytes_per_entry = 0;

  filled_store(const char* name, std::size_t n) {
    store_options o;
    o.ns = "bench";  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on "literal" + string
    o.ns += std::to_string(::getpid());
    o.name = name;
    o.initial_segment_bytes = std::uint64_t{64} << 20;
    std::vector<table_spec> tables = {{"kv", table_kind::set, 0}};
    w.emplace(writer::create(o, tables).value());
    std::uint64_t payload = 0;
    std::int64_t worst_ns = 0;
    Value v(Bytes{value_of(0)});
    for (std::size_t i = 0; i < n; ++i) {
      const std::string k = key_of(i);
      v.as_mut<Bytes>().data = value_of(i);
      const std::int64_t start = thread_cpu_ns();
      w->put("kv", k, v).value();
      worst_ns = std::max(worst_ns, thread_cpu_ns() - start);
      payload += k.size() + kValueBytes;
    }
    w->reclaim();
    max_pause_ms = static_cast<double>(worst_ns) / 1e6;
    bytes_per_entry = static_cast<double>(w->stats().bytes_used - payload) / static_cast<double>(n);
    r.emplace(reader::attach(o.ns, o.name).value());

    std::mt19937_64 rng(7);
    if (n <= kProbes) {
      std::vector<std::size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      for (std::size_t i : order) probes.push_back(key_of(i));
    } else {
      std::uniform_int_distribution<std::size_t> pick(0, n - 1);
      for (std::size_t i = 0; i < kProbes; ++i) probes.push_back(key_of(pick(rng)));
    }
  }
};

filled_store& small_store() {
  static filled_store s("scale5", kSmall);
  return s;
}
filled_store& large_store() {
  static filled_store s("scale7", kLarge);
  return s;
}

void get_loop(benchmark::State& state, filled_store& s) {
  std::size_t i = 0;
  for (auto _ : state) {
    auto v = s.r->get("kv", s.probes[i]);
    if (!v || !*v) state.SkipWithError("a get missed a key");
    benchmark::DoNotOptimize(v);
    if (++i == s.probes.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void store_get_1e5(benchmark::State& state) {
  get_loop(state, small_store());
}
void store_get_1e7(benchmark::State& state) {
  get_loop(state, large_store());
}

// The fill happens once, before the first repetition; every repetition
// reports its figures.
void store_fill_1e7(benchmark::State& state) {
  filled_store& s = large_store();
  std::size_t n = 0;
  for (auto _ : state) benchmark::DoNotOptimize(n += s.probes.size());
  state.counters["put_max_pause_ms"] = s.max_pause_ms;
  state.counters["bytes_per_entry"] = s.bytes_per_entry;
}

}  // namespace

BENCHMARK(store_fill_1e7)->Iterations(1);
BENCHMARK(store_get_1e5);
BENCHMARK(store_get_1e7);

BENCHMARK_MAIN();
