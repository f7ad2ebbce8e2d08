// A set table at scale: 10^5 keys against 10^7, in the same run.
//
// Two stores, one set table each, filled with keys like "user:00001234" (13
// bytes) and 32-byte bytes values, one `put` at a time (as a broker applies
// single writes). Then a reader attached on its own gets keys from each
// (`reader::get`, a decoded copy, as store.get.cxx measures).
//
// What store_get_1e5 and store_get_1e7 measure, the same way for both: one
// `get` of a present key per iteration, the keys visited in a random order,
// a permutation of every key of the table (so the 10^7 loop touches the
// whole table, not a sample that a large last-level cache could hold); the
// loop wraps around after n gets. The keys are laid out in visiting order in
// one buffer, 16 bytes apart, so reading the next key is a sequential read,
// not a miss, and the loop allocates nothing but what `get` itself returns
// (a Value owning a copy of the 32 bytes: the same in both). At 10^7 keys the
// index (2^24 slots, 128 MiB) is not growing when measured: it last grew at
// 6.3 million keys, and that migration ended a million puts later.
//
// What store_get_many_1e5 and store_get_many_1e7 measure: the same keys in
// the same order, read 64 at a time with `reader::get_many` (decoded copies
// too), reported per key. The batch overlaps the misses of several keys,
// which one `get` after another cannot: see shm/src/get_many.hpp.
//
// What flat_get_1e5 and flat_get_1e7 measure (the reference for the two
// above): the same keys, values and order against the simplest hash table
// that could hold them, one 64-byte record per key in private memory, read
// without locks, epochs or checks (`flat_table`). Its 10^7-against-10^5 ratio
// is what the hardware allows a get that must read memory once per key.
//
// memory_chase_* (reference figures for this machine, same run): one
// dependent load per iteration, through every cache line of a region of
// private memory in a random cyclic order: over 1 GiB on 4 KiB pages (a DRAM
// miss plus a page walk: what each of a 10^7 get's two dependent misses,
// slot then entry, costs), over 1 GiB on 2 MiB transparent huge pages where
// the kernel grants them (the DRAM miss with few page walks), and over 8 MiB
// on 4 KiB pages (about the 10^5 table's entries: last-level cache hits). A
// 10^7 get cannot come closer to the 10^5 one than about two of the first
// (or second) figures minus two of the third.
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
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "slither/shm/store.hpp"

namespace {

using namespace slither;
using namespace slither::shm;

constexpr std::size_t kSmall = 100000;
constexpr std::size_t kLarge = 10000000;
constexpr std::size_t kValueBytes = 32;
// Bytes between two keys in a get loop's buffer (keys are 13 bytes).
constexpr std::size_t kKeyStride = 16;

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

/// Every key of a table of `n`, kKeyStride apart, in a random order (the
/// same for every table of `n` keys): the order a get loop visits them.
std::vector<char> probe_buffer(std::size_t n) {
  std::mt19937_64 rng(7);
  std::vector<std::uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<char> probes(n * kKeyStride, '\0');
  for (std::size_t i = 0; i < n; ++i) {
    const std::string k = key_of(order[i]);
    std::copy(k.begin(), k.end(), probes.begin() + static_cast<std::ptrdiff_t>(i * kKeyStride));
  }
  return probes;
}

/// One store with one set table of `n` keys, and what was measured filling it.
struct filled_store {
  std::optional<writer> w;
  std::optional<reader> r;
  std::vector<char> probes;  // every key, kKeyStride apart, in the order a get loop visits them
  std::size_t keys = 0;
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
    probes = probe_buffer(n);
    keys = n;
  }

  std::string_view probe(std::size_t i) const { return {probes.data() + i * kKeyStride, 13}; }
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
    auto v = s.r->get("kv", s.probe(i));
    if (!v || !*v) state.SkipWithError("a get missed a key");
    benchmark::DoNotOptimize(v);
    if (++i == s.keys) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void store_get_1e5(benchmark::State& state) {
  get_loop(state, small_store());
}
void store_get_1e7(benchmark::State& state) {
  get_loop(state, large_store());
}

/// Keys per `get_many` call in the batch loops.
constexpr std::size_t kBatch = 64;

// The same keys in the same order as get_loop, read `kBatch` at a time with
// `get_many` (decoded copies, as `get` returns). An iteration is one key,
// with every kBatch-th one making the call for the next kBatch keys, so the
// figure is ns per key, comparable with get_loop's.
void get_many_loop(benchmark::State& state, filled_store& s) {
  std::vector<std::string_view> keys(s.keys);
  for (std::size_t i = 0; i < s.keys; ++i) keys[i] = s.probe(i);
  std::vector<std::optional<Value>> got;
  std::size_t next = 0, at = 0;
  for (auto _ : state) {
    if (at == got.size()) {
      const std::size_t n = std::min(kBatch, s.keys - next);
      auto r = s.r->get_many("kv", std::span(keys).subspan(next, n));
      if (!r) {
        state.SkipWithError("get_many failed");
        break;
      }
      got = std::move(*r);
      at = 0;
      next = next + n == s.keys ? 0 : next + n;
    }
    if (!got[at]) state.SkipWithError("a get_many missed a key");
    benchmark::DoNotOptimize(got[at++]);
  }
  state.SetItemsProcessed(state.iterations());
}

void store_get_many_1e5(benchmark::State& state) {
  get_many_loop(state, small_store());
}
void store_get_many_1e7(benchmark::State& state) {
  get_many_loop(state, large_store());
}

/// The floor for any hash table on this machine: an open-addressing array
/// of 64-byte records in private memory on 4 KiB pages (as a default
/// /dev/shm gives), each record holding its key and its 32-byte value, at
/// most 2/3 full. A get hashes the key and reads one record (one cache line,
/// so one miss where the table outgrows the caches), then copies the value
/// out, as `reader::get` does. No locks, no epochs, no validation, no
/// indirection: what is left is the memory hierarchy.
class flat_table {
 public:
  explicit flat_table(std::size_t n)
      : capacity_(std::bit_ceil(n + n / 2)), bytes_(capacity_ * sizeof(record)) {
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("cannot map the flat table");
    ::madvise(p, bytes_, MADV_NOHUGEPAGE);
    slots_ = static_cast<record*>(p);
    for (std::size_t i = 0; i < n; ++i) insert(key_of(i), value_of(i));
    probes_ = probe_buffer(n);
    keys_ = n;
  }
  ~flat_table() { ::munmap(slots_, bytes_); }
  flat_table(const flat_table&) = delete;
  flat_table& operator=(const flat_table&) = delete;

  std::optional<std::string> get(std::string_view key) const {
    const std::uint64_t h = hash_of(key);
    for (std::size_t i = h & (capacity_ - 1);; i = (i + 1) & (capacity_ - 1)) {
      const record& r = slots_[i];
      if (r.hash == 0) return std::nullopt;
      if (r.hash == h && std::string_view(r.key, r.key_len) == key)
        return std::string(r.value, kValueBytes);
    }
  }
  std::string_view probe(std::size_t i) const { return {probes_.data() + i * kKeyStride, 13}; }
  std::size_t keys() const { return keys_; }

 private:
  struct alignas(64) record {
    std::uint64_t hash;  // 0: an empty slot
    char key[23];
    std::uint8_t key_len;
    char value[kValueBytes];
  };
  static_assert(sizeof(record) == 64);

  static std::uint64_t hash_of(std::string_view key) {
    return std::hash<std::string_view>{}(key) | 1;
  }
  void insert(std::string_view key, std::string_view value) {
    const std::uint64_t h = hash_of(key);
    std::size_t i = h & (capacity_ - 1);
    while (slots_[i].hash != 0) i = (i + 1) & (capacity_ - 1);
    record& r = slots_[i];
    r.hash = h;
    std::copy(key.begin(), key.end(), r.key);
    r.key_len = static_cast<std::uint8_t>(key.size());
    std::copy(value.begin(), value.end(), r.value);
  }

  std::size_t capacity_;
  std::size_t bytes_;
  record* slots_ = nullptr;
  std::vector<char> probes_;
  std::size_t keys_ = 0;
};

void flat_get_loop(benchmark::State& state, std::size_t n) {
  // One table at a time (the 10^7 one is 1 GiB), kept across repetitions.
  static std::unique_ptr<flat_table> t;
  if (!t || t->keys() != n) {
    t.reset();
    t = std::make_unique<flat_table>(n);
  }
  std::size_t i = 0;
  for (auto _ : state) {
    auto v = t->get(t->probe(i));
    if (!v) state.SkipWithError("a flat-table get missed a key");
    benchmark::DoNotOptimize(v);
    if (++i == n) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void flat_get_1e5(benchmark::State& state) {
  flat_get_loop(state, kSmall);
}
void flat_get_1e7(benchmark::State& state) {
  flat_get_loop(state, kLarge);
}

// The fill happens once, before the first repetition; every repetition
// reports its figures.
void store_fill_1e7(benchmark::State& state) {
  filled_store& s = large_store();
  std::size_t n = 0;
  for (auto _ : state) benchmark::DoNotOptimize(n += s.keys);
  state.counters["put_max_pause_ms"] = s.max_pause_ms;
  state.counters["bytes_per_entry"] = s.bytes_per_entry;
}

/// A random cyclic chain through every cache line of `bytes` bytes of
/// private memory, each line holding the address of the next.
struct chase {
  void* base = nullptr;
  std::size_t bytes = 0;
  bool huge = false;
  void** start = nullptr;

  chase(std::size_t n, bool huge_pages) : bytes(n), huge(huge_pages) {
    base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::runtime_error("cannot map memory to chase through");
    // Whatever the system's default: 4 KiB pages, or huge ones where granted.
    ::madvise(base, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    const std::size_t lines = bytes / 64;
    std::vector<std::uint32_t> order(lines);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(11);
    std::shuffle(order.begin(), order.end(), rng);
    auto* b = static_cast<char*>(base);
    auto at = [&](std::size_t line) { return reinterpret_cast<void**>(b + line * 64); };
    for (std::size_t i = 0; i < lines; ++i) *at(order[i]) = at(order[(i + 1) % lines]);
    start = at(order[0]);
  }
  ~chase() { ::munmap(base, bytes); }
  chase(const chase&) = delete;
  chase& operator=(const chase&) = delete;
};

void chase_loop(benchmark::State& state, std::size_t bytes, bool huge) {
  // One chain at a time (1 GiB each), kept across repetitions.
  static std::unique_ptr<chase> c;
  if (!c || c->bytes != bytes || c->huge != huge) {
    c.reset();
    c = std::make_unique<chase>(bytes, huge);
  }
  void** p = c->start;
  for (auto _ : state) {
    p = static_cast<void**>(*p);
    benchmark::DoNotOptimize(p);
  }
}

void memory_chase_4k(benchmark::State& state) {
  chase_loop(state, std::size_t{1} << 30, false);
}
void memory_chase_2m(benchmark::State& state) {
  chase_loop(state, std::size_t{1} << 30, true);
}
void memory_chase_8m(benchmark::State& state) {
  chase_loop(state, std::size_t{8} << 20, false);
}

}  // namespace

BENCHMARK(store_fill_1e7)->Iterations(1);
BENCHMARK(store_get_1e5);
BENCHMARK(store_get_1e7);
BENCHMARK(store_get_many_1e5);
BENCHMARK(store_get_many_1e7);
BENCHMARK(flat_get_1e5);
BENCHMARK(flat_get_1e7);
BENCHMARK(memory_chase_8m);
BENCHMARK(memory_chase_4k);
BENCHMARK(memory_chase_2m);

BENCHMARK_MAIN();
