// Large writes in place through a broker: reserve, fill, commit; only the
// reserving client may finish a reservation; one never committed (its client
// died) is freed when its lease ends.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "broker_fixture.hpp"
#include "slither/core/telemetry.hpp"
#include "slither/shm/detail/sys.hpp"
#include "slither/shm/store.hpp"

namespace slither {
namespace {

using test_support::BrokerTest;
using namespace std::chrono_literals;

ndarray ramp(std::uint64_t n) {
  auto a = ndarray::zeros(dtype::f32, {n / 4, 4});
  auto f = a.mutable_values<float>();
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(i);
  return a;
}

std::uint64_t bytes_used(client& c) {
  auto st = c.stats().value();
  return static_cast<std::uint64_t>((*st.find("stores"))["main"]["bytes_used"].as<std::int64_t>());
}

TEST_F(BrokerTest, PutInPlaceIsSeenByReadersLikeAPut) {
  start();
  auto c = connect();
  const ndarray a = ramp(std::uint64_t{2} << 20);
  const auto v = c.put_in_place("main", "kv", "arr", a).value();
  EXPECT_GT(v, 0u);
  auto r = shm::reader::attach(ns_, "main").value();
  const auto got = r.get("kv", "arr").value();
  ASSERT_TRUE(got && got->is_ndarray());
  EXPECT_TRUE(std::ranges::equal(got->as<ndarray>().shape(), a.shape()));
  EXPECT_EQ(got->as<ndarray>().values<float>()[123456], 123456.0f);
  // Replaced by a later one, in place or not.
  ASSERT_TRUE(c.put_in_place("main", "kv", "arr", ramp(4096)));
  EXPECT_EQ(r.get("kv", "arr").value()->as<ndarray>().shape()[0], 1024u);
}

TEST_F(BrokerTest, ACommitRunsOnTheWriterThreadNeverOnTheServingOne) {
  // A commit that replaces a large value frees the old block's pages (tens
  // of milliseconds for 256 MiB): run inline on the serving thread, every
  // other client's request would wait for it. A reservation always runs on
  // the writer thread, so the commit must run on that same thread, even
  // when the writer is idle (when a small write would run inline).
  start();
  std::mutex mutex;
  std::vector<std::pair<std::string, std::thread::id>> seen;
  auto handler = telemetry::attach(
      "slither.store.write.start", [&](std::string_view, const Map&, const Map& meta) {
        const auto op = meta.find("op");
        if (op == meta.end() || !op->second.is_string()) return;
        std::lock_guard lock(mutex);
        seen.emplace_back(op->second.as<std::string>(), std::this_thread::get_id());
      });
  auto c = connect();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.put_in_place("main", "kv", "arr", ramp(1 << 20)));
  handler.detach();
  std::lock_guard lock(mutex);
  std::thread::id writer;
  int commits = 0;
  for (const auto& [op, thread] : seen) {
    if (op == "put_reserve") writer = thread;
  }
  for (const auto& [op, thread] : seen) {
    if (op != "put_commit") continue;
    ++commits;
    EXPECT_EQ(thread, writer) << "a commit ran off the writer thread";
  }
  EXPECT_EQ(commits, 3);
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 4096) & 0xff);
  return s;
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

TEST_F(BrokerTest, BytesPutInPlaceAreStoredAsAPutStoresThem) {
  start();
  auto c = connect();
  auto r = shm::reader::attach(ns_, "main").value();
  // Around the varint's length steps (1, 2, 3 bytes) and a page.
  for (const std::size_t n :
       {std::size_t{0}, std::size_t{1}, std::size_t{127}, std::size_t{128}, std::size_t{4096},
        std::size_t{16383}, std::size_t{16384}, (std::size_t{3} << 20) + 5}) {
    SCOPED_TRACE(n);
    const std::string data = pattern(n);
    ASSERT_TRUE(c.put_bytes_in_place("main", "kv", "in-place", bytes_of(data)));
    ASSERT_TRUE(c.put("main", "kv", "socket", Value(Bytes{data})));
    const auto mine = r.get_view("kv", "in-place").value();
    const auto theirs = r.get_view("kv", "socket").value();
    ASSERT_TRUE(mine && theirs);
    EXPECT_FALSE(mine->is_ndarray());
    const auto a = mine->bytes();
    const auto b = theirs->bytes();
    ASSERT_EQ(a.size(), b.size());
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << "the stored encodings differ";
    EXPECT_EQ(r.get("kv", "in-place").value(), std::optional(Value(Bytes{data})));
  }
}

TEST_F(BrokerTest, ReadersNeverSeeAnUnsealedBytesBlock) {
  start();
  auto c = connect();
  auto reader = shm::reader::attach(ns_, "main").value();
  ASSERT_TRUE(c.put("main", "kv", "k", Value(Bytes{"old"})));
  auto r = c.reserve_put_bytes("main", "kv", "k", 8192).value();
  EXPECT_EQ(r.bytes, 8192u);
  EXPECT_EQ(r.offset % 4096, 0u);
  // Filled but not committed: readers still see the old value.
  const int fd = ::shm_open(r.object.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, r.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   static_cast<off_t>(r.offset));
  ::close(fd);
  ASSERT_NE(p, MAP_FAILED);
  std::memset(p, 'x', r.bytes);
  ::munmap(p, r.map_bytes);
  EXPECT_EQ(reader.get("kv", "k").value(), std::optional(Value(Bytes{"old"})));
  ASSERT_TRUE(c.commit_put("main", r.id));
  EXPECT_EQ(reader.get("kv", "k").value(), std::optional(Value(Bytes{std::string(8192, 'x')})));
}

TEST_F(BrokerTest, ABytesBlockWhoseHeaderWasOverwrittenIsNotPublished) {
  start();
  auto c = connect();
  auto r = c.reserve_put_bytes("main", "kv", "k", 4096).value();
  // The encoding's header sits just below the client's pages: a process that
  // maps the page before them and changes it damages the block.
  const int fd = ::shm_open(r.object.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   static_cast<off_t>(r.offset - 4096));
  ::close(fd);
  ASSERT_NE(p, MAP_FAILED);
  static_cast<unsigned char*>(p)[4095] ^= 0xff;  // the length's last byte
  ::munmap(p, 4096);
  EXPECT_EQ(c.commit_put("main", r.id).error().code, errc::decode_error);
  EXPECT_FALSE(shm::reader::attach(ns_, "main").value().contains("kv", "k").value());
}

TEST_F(BrokerTest, BadBytesReservationsAreRefused) {
  auto o = options();
  o.stores[0].options.max_value_bytes = 1 << 20;
  start(std::move(o));
  ASSERT_TRUE(broker_->start());
  auto c = connect();
  EXPECT_EQ(c.reserve_put_bytes("main", "kv", "k", 1 << 20).error().code, errc::limit_exceeded);
  EXPECT_EQ(c.reserve_put_bytes("main", "nope", "k", 16).error().code, errc::not_found);
  EXPECT_EQ(c.reserve_put_bytes("main", "kv", std::string(5000, 'k'), 16).error().code,
            errc::limit_exceeded);
}

TEST_F(BrokerTest, OnlyTheReservingClientFinishesAReservation) {
  start();
  auto mine = connect();
  auto other = connect();
  const std::uint64_t shape[] = {1024};
  auto r = mine.reserve_put("main", "kv", "x", dtype::f64, shape).value();
  EXPECT_EQ(r.bytes, 8192u);
  EXPECT_EQ(r.offset % 4096, 0u);
  EXPECT_EQ(other.commit_put("main", r.id).error().code, errc::not_found);
  EXPECT_EQ(other.abort_put("main", r.id).error().code, errc::not_found);
  auto reader = shm::reader::attach(ns_, "main").value();
  EXPECT_FALSE(reader.contains("kv", "x").value());
  ASSERT_TRUE(mine.commit_put("main", r.id));
  EXPECT_TRUE(reader.contains("kv", "x").value());
  EXPECT_EQ(mine.commit_put("main", r.id).error().code, errc::not_found);
  // Given up: nothing published, nothing held.
  const std::uint64_t before = bytes_used(mine);
  auto r2 = mine.reserve_put("main", "kv", "y", dtype::u8, shape).value();
  ASSERT_TRUE(mine.abort_put("main", r2.id));
  EXPECT_EQ(bytes_used(mine), before);
  EXPECT_FALSE(reader.contains("kv", "y").value());
}

TEST_F(BrokerTest, BadReservationsAreRefused) {
  start();
  auto c = connect();
  const std::uint64_t shape[] = {16};
  EXPECT_EQ(c.reserve_put("main", "kv", "x", static_cast<dtype>(99), shape).error().code,
            errc::invalid_argument);
  EXPECT_EQ(c.reserve_put("main", "nope", "x", dtype::u8, shape).error().code, errc::not_found);
  EXPECT_EQ(c.reserve_put("nope", "kv", "x", dtype::u8, shape).error().code, errc::not_found);
  const std::uint64_t huge[] = {std::uint64_t{1} << 62, 4};
  EXPECT_EQ(c.reserve_put("main", "kv", "x", dtype::f32, huge).error().code, errc::limit_exceeded);
  EXPECT_EQ(c.commit_put("main", 0).error().code, errc::invalid_argument);
  EXPECT_EQ(c.commit_put("main", 77).error().code, errc::not_found);
}

// A punch that does not return until the test lets it (or 20 s pass, so
// that a broker that waits for it fails the test rather than hanging it).
std::atomic<int> punches_entered{0};
std::atomic<bool> punches_released{false};

int held_punch(int fd, off_t at, off_t n) {
  ++punches_entered;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!punches_released && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  return ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, n) == 0 ? 0 : errno;
}

TEST_F(BrokerTest, PingsAndWritesAreAnsweredWhileFreedPagesAreHandedBack) {
  // Handing a large block's pages back (a punch of 256 MiB takes tens of
  // milliseconds) once ran on whichever thread freed it: the writer thread
  // (every write behind it waited) or, for a small write run inline, the
  // serving thread (every request waited). Here a punch never ends until
  // released: the broker must answer meanwhile.
  auto& calls = shm::detail::sys();
  const auto saved = calls;
  punches_entered = 0;
  punches_released = false;
  calls.punch_hole = held_punch;
  start();
  auto c = connect(3s);
  ASSERT_TRUE(c.put("main", "kv", "big", Value(Bytes{std::string(std::size_t{600} << 10, 'b')})));
  ASSERT_TRUE(c.put("main", "kv", "big", Value(1)));  // frees the large block (reclaim timer)
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (punches_entered == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_GT(punches_entered, 0) << "the freed block's pages were never handed back";
  EXPECT_TRUE(c.ping());
  for (int i = 0; i < 100; ++i) {  // some inline on the serving thread, some on the writer
    ASSERT_TRUE(c.put("main", "kv", "small", Value(i))) << i;
  }
  auto st = c.stats();
  ASSERT_TRUE(st);
  EXPECT_EQ(punches_entered, 1) << "one punch in progress, none other started";
  punches_released = true;
  broker_->stop();  // joins the trimmer before the real call is put back
  calls = saved;
}

TEST_F(BrokerTest, AClientThatDiesBeforeItsCommitLeaksNothing) {
#if defined(__SANITIZE_THREAD__)
  // The forked child of this multi-threaded process (the broker runs in it)
  // starts ZeroMQ threads, which TSan refuses ("starting new threads after
  // multi-threaded fork is not supported"). ASan and Release run this one.
  GTEST_SKIP() << "fork of a multi-threaded process under TSan";
#endif
  // A short lease, as a config file sets it.
  const auto toml = std::filesystem::temp_directory_path() / ("slither-" + ns_ + ".toml");
  std::ofstream(toml) << "[broker]\nlarge_write_lease_ms = 200\n";
  auto cfg = load_config(toml);
  std::filesystem::remove(toml);
  ASSERT_TRUE(cfg) << cfg.error().message;
  auto o = options();
  o.large_write_lease = cfg->large_write_lease;
  start(std::move(o));
  ASSERT_TRUE(broker_->start());
  auto c = connect();
  const std::uint64_t before = bytes_used(c);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    client_options co;
    co.runtime_dir = dir_;
    co.ns = ns_;
    auto cc = client::connect(co);
    const std::uint64_t shape[] = {std::uint64_t{4} << 20};
    const auto r = cc ? cc->reserve_put("main", "kv", "orphan", dtype::u8, shape)
                      : result<put_reservation>(fail(errc::unavailable, "no broker"));
    ::_exit(r && r->lease == 200ms ? 0 : 1);  // dies without committing
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_GT(bytes_used(c), before + (std::uint64_t{4} << 20));
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (bytes_used(c) != before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(bytes_used(c), before);
  EXPECT_FALSE(shm::reader::attach(ns_, "main").value().contains("kv", "orphan").value());
}

}  // namespace
}  // namespace slither
