// Multi-process tests of the Store: real reader and writer processes (fork),
// real SIGKILLs, real read-only mappings.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "process_test_util.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using namespace std::chrono_literals;
using testing::scaled;
using testing::shared_block;
using testing::shared_state;
using testing::spawn;
using testing::test_options;
using testing::wait_for;
using testing::wait_until;

/// A reader process that rereads random keys and verifies every value it sees.
int checksum_reader(const store_options& o, std::uint64_t keys, shared_state* st, unsigned seed) {
  auto r = reader::attach(o.ns, o.name);
  if (!r) return 2;
  std::mt19937_64 rng(seed);
  st->ready.fetch_add(1);
  std::uint64_t n = 0;
  while (st->stop.load(std::memory_order_relaxed) == 0) {
    const std::uint64_t k = rng() % keys;
    const std::string key = std::to_string(k);
    bool ok;
    if (n % 2 == 0) {
      auto v = r->get("kv", key);
      ok = v && *v && testing::verify(k, **v);
    } else {
      auto v = r->get_view("kv", key);
      ok = v && *v && testing::verify(k, (*v)->value());
    }
    if (!ok) st->bad.fetch_add(1);
    ++n;
  }
  st->reads.fetch_add(n);
  return 0;
}

TEST(StoreProcesses, TornReadHunt) {
  auto o = test_options("torn");
  o.initial_segment_bytes = 1 << 20;
  const std::uint64_t keys = scaled(100000, 10000);
  const std::uint64_t writes = scaled(1100000, 100000);
  std::vector<table_spec> tables = {{"kv", table_kind::set, keys}};
  auto w = writer::create(o, tables).value();
  for (std::uint64_t k = 0; k < keys; ++k) {
    ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, 0)));
  }
  shared_block st;
  std::vector<pid_t> children;
  for (unsigned i = 0; i < 2; ++i) {
    children.push_back(spawn([&, i] { return checksum_reader(o, keys, st.get(), i + 1); }));
  }
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 2; }));
  std::mt19937_64 rng(42);
  for (std::uint64_t i = 0; i < writes; ++i) {
    const std::uint64_t k = rng() % keys;
    ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, i + 1)));
  }
  st->stop = 1;
  for (pid_t c : children) EXPECT_EQ(wait_for(c), 0);
  EXPECT_EQ(st->bad.load(), 0u);
  EXPECT_GT(st->reads.load(), 1000u);
  std::printf("%llu verified reads during %llu writes\n",
              static_cast<unsigned long long>(st->reads.load()),
              static_cast<unsigned long long>(writes));
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
  EXPECT_EQ(w.stats().readers, 1u);
}

TEST(StoreProcesses, FiveHundredReaderProcessesAttachAtOnce) {
  constexpr unsigned readers = 520;
  auto o = test_options("many");
  o.max_readers = 1024;  // past the default 256
  std::vector<table_spec> tables = {{"kv", table_kind::set, 16}};
  auto w = writer::create(o, tables).value();
  ASSERT_TRUE(w.put("kv", "k", testing::checked_value(7, 0)));
  shared_block st;
  // Children wait on a pipe, not a timer: closing its write end releases them all.
  int release[2];
  ASSERT_EQ(::pipe(release), 0);
  std::vector<pid_t> children;
  for (unsigned i = 0; i < readers; ++i) {
    children.push_back(spawn([&] {
      ::close(release[1]);
      auto r = reader::attach(o.ns, o.name);
      if (!r) return 2;
      auto v = r->get("kv", "k");
      if (!v || !*v || !testing::verify(7, **v)) return 3;
      st->ready.fetch_add(1);
      char c;
      while (::read(release[0], &c, 1) < 0 && errno == EINTR) {
      }
      return 0;
    }));
    ASSERT_GT(children.back(), 0) << "fork " << i;
  }
  ::close(release[0]);
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == readers; }))
      << st->ready.load() << " of " << readers << " attached";
  EXPECT_EQ(w.stats().readers, readers + 1);  // and the writer's own
  // Writes and reclamation go on with every slot in use.
  ASSERT_TRUE(w.put("kv", "k", testing::checked_value(7, 1)));
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
  ::close(release[1]);
  for (pid_t c : children) EXPECT_EQ(wait_for(c), 0);
  w.reclaim();
  EXPECT_EQ(w.stats().readers, 1u);
}

TEST(StoreProcesses, DeadReaderSlotIsReclaimed) {
  auto o = test_options("dead");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 1024}};
  auto w = writer::create(o, tables).value();
  for (int k = 0; k < 100; ++k)
    ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, 0)));
  shared_block st;
  // The child holds views and dies inside a read (its epoch lane still set).
  const pid_t child = spawn([&] {
    auto r = reader::attach(o.ns, o.name);
    if (!r) return 2;
    std::vector<view> held;
    for (int k = 0; k < 10; ++k) held.push_back(*r->get_view("kv", std::to_string(k)).value());
    (void)r->for_each("kv", [&](std::string_view, const view&) {
      st->ready = 1;
      for (;;) ::pause();
      return true;
    });
    return 3;
  });
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  EXPECT_EQ(w.stats().readers, 2u);
  for (int round = 1; round <= 20; ++round) {
    for (int k = 0; k < 100; ++k)
      ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, round)));
  }
  w.reclaim();
  EXPECT_GT(w.stats().bytes_retired, 20u * 90 * 64);  // the pinned epoch keeps everything
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  // Not reaped yet: the child may be a zombie, which must count as dead too.
  ASSERT_TRUE(wait_until([&] {
    w.reclaim();
    return w.stats().readers == 1;
  }));
  for (int k = 0; k < 100; ++k)
    ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, 99)));
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
  EXPECT_EQ(wait_for(child), 128 + SIGKILL);
}

TEST(StoreProcesses, LongLivedViewHoldsOnlyItsBlock) {
  auto o = test_options("longview");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 4096}};
  auto w = writer::create(o, tables).value();
  auto big = ndarray::zeros(dtype::u8, {4 << 20});
  auto bytes = big.mutable_values<std::uint8_t>();
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 7);
  ASSERT_TRUE(w.put("kv", "big", big));
  const std::uint64_t keys = 1000;
  for (std::uint64_t k = 0; k < keys; ++k)
    ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, 0)));
  shared_block st;
  const pid_t child = spawn([&] {
    auto r = reader::attach(o.ns, o.name);
    if (!r) return 2;
    ndarray a = r->get_view("kv", "big").value()->array();
    const std::byte* where = a.data();
    st->ready = 1;
    while (st->phase.load() < 2) std::this_thread::sleep_for(1ms);
    if (a.data() != where) return 4;
    const auto seen = a.values<std::uint8_t>();
    for (std::size_t i = 0; i < seen.size(); ++i) {
      if (seen[i] != static_cast<std::uint8_t>(i * 7)) return 5;
    }
    return 0;
  });
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  ASSERT_TRUE(w.put("kv", "big", 0));  // retire the held block
  std::uint64_t max_retired = 0;
  const std::uint64_t rounds = scaled(200, 30);
  for (std::uint64_t round = 1; round <= rounds; ++round) {
    for (std::uint64_t k = 0; k < keys; ++k)
      ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, round)));
    max_retired = std::max(max_retired, w.stats().bytes_retired);
  }
  // The held block (4 MiB in a size class at most 1/8 larger) plus, between
  // reclaims, a bounded batch of small blocks, however many writes there were.
  const std::uint64_t held = (std::uint64_t{4} << 20) * 9 / 8;
  EXPECT_LT(max_retired, held + (64 << 10));
  w.reclaim();
  EXPECT_LE(w.stats().bytes_retired, held);
  EXPECT_GE(w.stats().bytes_retired, std::uint64_t{4} << 20);
  // The view survives a reload and a clear of its table.
  ASSERT_TRUE(w.reload("kv", [](loader& l) -> result<void> { return l.put("fresh", 1); }));
  ASSERT_TRUE(w.clear("kv"));
  st->phase = 2;
  EXPECT_EQ(wait_for(child), 0);
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

TEST(StoreProcesses, GrowthUnderReadsPastOneGiB) {
  auto o = test_options("growth");
  o.initial_segment_bytes = 64 << 10;  // tiny first segment
  o.max_value_bytes = std::uint64_t{1} << 30;
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  const std::uint64_t value_bytes = 64 << 10;
  const std::uint64_t count = scaled(17500, 1500);  // 17500 * 64 KiB > 1 GiB
  shared_block st;
  std::vector<pid_t> children;
  for (unsigned i = 0; i < 2; ++i) {
    children.push_back(spawn([&, i] {
      auto r = reader::attach(o.ns, o.name);
      if (!r) return 2;
      std::mt19937_64 rng(i);
      st->ready.fetch_add(1);
      std::uint64_t n = 0;
      while (st->stop.load() == 0) {
        const std::uint64_t acked = st->acked.load();
        if (acked == 0) continue;
        const std::uint64_t k = (n % 4 == 0) ? acked - 1 : rng() % acked;  // newest or any
        auto v = r->get_view("kv", std::to_string(k));
        if (!v || !*v || !(*v)->is_ndarray()) {
          st->bad.fetch_add(1);
        } else {
          const auto a = (*v)->array().values<std::uint8_t>();
          std::uint64_t tag;
          std::memcpy(&tag, a.data(), sizeof(tag));
          if (a.size() != value_bytes || tag != k ||
              a.back() != static_cast<std::uint8_t>(k % 251)) {
            st->bad.fetch_add(1);
          }
        }
        ++n;
      }
      st->reads.fetch_add(n);
      return 0;
    }));
  }
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 2; }));
  auto a = ndarray::zeros(dtype::u8, {value_bytes});
  for (std::uint64_t k = 0; k < count; ++k) {
    auto values = a.mutable_values<std::uint8_t>();
    std::memcpy(values.data(), &k, sizeof(k));
    std::memset(values.data() + 8, static_cast<int>(k % 251), value_bytes - 8);
    auto put = w.put("kv", std::to_string(k), a);
    ASSERT_TRUE(put) << put.error().message;
    st->acked = k + 1;
  }
  st->stop = 1;
  for (pid_t c : children) EXPECT_EQ(wait_for(c), 0);
  EXPECT_EQ(st->bad.load(), 0u);
  EXPECT_GT(st->reads.load(), 100u);
  const auto s = w.stats();
  EXPECT_GT(s.segments, 10u);
  if (count == 17500) {
    EXPECT_GT(s.bytes_used, std::uint64_t{1} << 30);
    EXPECT_GT(s.segment_bytes, std::uint64_t{1} << 30);
  }
  for (std::uint64_t k = 0; k < count; k += 97) {
    EXPECT_TRUE(w.read().contains("kv", std::to_string(k)).value()) << k;
  }
  EXPECT_EQ(w.read().size("kv").value(), count);
}

TEST(StoreProcesses, ReloadIsAtomicForReaders) {
  auto o = test_options("reload");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 512}};
  auto w = writer::create(o, tables).value();
  const int keys = 500;
  auto fill_gen = [&](std::int64_t gen) {
    return [gen](loader& l) -> result<void> {
      for (int k = 0; k < keys; ++k) {
        if (auto r = l.put(testing::numbered("k", k), gen); !r) return r;
      }
      return {};
    };
  };
  ASSERT_TRUE(w.reload("kv", fill_gen(0)));
  shared_block st;
  std::vector<pid_t> children;
  for (unsigned i = 0; i < 2; ++i) {
    children.push_back(spawn([&] {
      auto r = reader::attach(o.ns, o.name);
      if (!r) return 2;
      st->ready.fetch_add(1);
      std::uint64_t n = 0;
      while (st->stop.load() == 0) {
        std::int64_t first = -1;
        int seen = 0;
        bool mixed = false;
        auto ok = r->for_each("kv", [&](std::string_view, const view& v) {
          const std::int64_t gen = v.value().as<std::int64_t>();
          if (first < 0) first = gen;
          mixed |= gen != first;
          ++seen;
          return true;
        });
        if (!ok || mixed || seen != keys || r->size("kv").value() != keys) st->bad.fetch_add(1);
        ++n;
      }
      st->reads.fetch_add(n);
      return 0;
    }));
  }
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 2; }));
  const std::int64_t reloads = scaled(400, 60);
  for (std::int64_t gen = 1; gen <= reloads; ++gen) ASSERT_TRUE(w.reload("kv", fill_gen(gen)));
  st->stop = 1;
  for (pid_t c : children) EXPECT_EQ(wait_for(c), 0);
  EXPECT_EQ(st->bad.load(), 0u);
  EXPECT_GT(st->reads.load(), 10u);
  EXPECT_EQ(w.read().get("kv", "k7").value(), std::optional<Value>(reloads));
}

TEST(StoreProcesses, ReadersCannotWriteThroughTheirMapping) {
  auto o = test_options("rdonly");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 16}};
  auto w = writer::create(o, tables).value();
  ASSERT_TRUE(w.put("kv", "k", Value(Bytes{"original"})));
  const pid_t child = spawn([&] {
    auto r = reader::attach(o.ns, o.name);
    if (!r) return 2;
    auto v = r->get_view("kv", "k").value();
    // Sanitizers catch SIGSEGV and exit(1); we want the kernel's verdict.
    ::signal(SIGSEGV, SIG_DFL);
    ::signal(SIGBUS, SIG_DFL);
    auto* p = const_cast<std::byte*>(v->bytes().data());
    *reinterpret_cast<volatile std::byte*>(p) = std::byte{0x42};  // must fault
    return 0;
  });
  const int rc = wait_for(child);
  EXPECT_TRUE(rc == 128 + SIGSEGV || rc == 128 + SIGBUS) << "child ended with " << rc;
  EXPECT_EQ(w.read().get("kv", "k").value(), std::optional<Value>(Bytes{"original"}));
}

TEST(StoreProcesses, KilledWriterIsDetectedAndItsSegmentsReplaced) {
  auto o = test_options("stale");
  o.initial_segment_bytes = 64 << 10;
  std::vector<table_spec> tables = {{"kv", table_kind::set, 16}};
  shared_block st;
  const pid_t child = spawn([&] {
    auto w = writer::create(o, tables);
    if (!w) return 2;
    for (int k = 0; k < 50; ++k) {  // several segments
      if (!w->put("kv", std::to_string(k), Value(Bytes{std::string(20000, 'x')}))) return 3;
    }
    st->ready = w->stats().segments;
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_until([&] { return st->ready.load() != 0; }));
  const std::uint64_t old_segments = st->ready.load();
  ASSERT_GE(old_segments, 3u);
  auto before = reader::attach(o.ns, o.name);
  ASSERT_TRUE(before);
  EXPECT_EQ(writer::create(o, tables).error().code, errc::already_exists);
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  EXPECT_EQ(wait_for(child), 128 + SIGKILL);

  auto gone = reader::attach(o.ns, o.name);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::writer_gone);
  EXPECT_NE(gone.error().message.find("gone"), std::string::npos);
  // An existing reader keeps its mappings.
  EXPECT_TRUE(before->contains("kv", "0").value());

  auto w = writer::create(o, tables);
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(w->stats().segments, 1u);
  for (std::uint64_t n = 1; n < old_segments; ++n) {
    const int fd = ::shm_open(segment_name(o.ns, o.name, n).c_str(), O_RDONLY, 0);
    EXPECT_LT(fd, 0) << "stale segment " << n << " still exists";
    if (fd >= 0) ::close(fd);
  }
  EXPECT_FALSE(w->read().contains("kv", "0").value());
  ASSERT_TRUE(w->put("kv", "new", 1));
  auto after = reader::attach(o.ns, o.name);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->get("kv", "new").value(), std::optional<Value>(1));
}

TEST(StoreProcesses, ForkedChildReadsThroughItsOwnSlotAndLeavesTheParentsStoreAlone) {
  auto o = test_options("fork");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 16}};
  auto w = writer::create(o, tables).value();
  ASSERT_TRUE(w.put("kv", "k", Value(Bytes{std::string(1000, 'a')})));
  auto r = reader::attach(o.ns, o.name).value();
  std::optional<view> v = *r.get_view("kv", "k").value();
  const pid_t child = spawn([&] {
    if (w.put("kv", "k", 1).error().code != errc::invalid_argument) return 4;
    w.close();                          // an inherited writer must not unlink the parent's store
    auto inherited = r.get("kv", "k");  // through a registry slot of the child's own
    if (!inherited || *inherited != Value(Bytes{std::string(1000, 'a')})) return 2;
    v.reset();  // drops the child's copy; the parent's hold must stay
    auto own = reader::attach(o.ns, o.name);
    if (!own || !own->contains("kv", "k").value()) return 3;
    return 0;
  });
  EXPECT_EQ(wait_for(child), 0);
  EXPECT_TRUE(reader::attach(o.ns, o.name));
  ASSERT_TRUE(w.put("kv", "k", Value(Bytes{std::string(1000, 'b')})));
  w.reclaim();
  EXPECT_GE(w.stats().bytes_retired, 1000u);  // still held by the parent's view
  EXPECT_EQ(v->value(), Value(Bytes{std::string(1000, 'a')}));
  v.reset();
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

}  // namespace
}  // namespace slither::shm
