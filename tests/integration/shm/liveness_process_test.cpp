// Reader liveness across real processes: a reader is declared dead only when
// its registry lock is gone (exit, SIGKILL, exec), never because the writer
// cannot tell, and the writer's sweep keeps the registry from filling up.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

#include "process_test_util.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using namespace std::chrono_literals;
using testing::is_pattern;
using testing::pattern;
using testing::shared_block;
using testing::spawn;
using testing::test_options;
using testing::wait_for;
using testing::wait_until;

constexpr std::uint64_t kBig = 256 << 10;
const std::vector<table_spec> kTables = {{"kv", table_kind::set, 64}};

store_options big_options(const std::string& what) {
  auto o = test_options(what);
  o.initial_segment_bytes = 16 << 20;  // no new segment (no new descriptor) needed later
  return o;
}

/// Retires "big" and rewrites other keys with blocks of its size class, so
/// that a freed "big" would be reused and its bytes overwritten. Only arrays,
/// stored raw: the encoder's streams are checked by UBSan's vptr check, which
/// needs descriptors the descriptor test does not leave.
void churn(writer& w, std::uint64_t rounds = 8) {
  w.put("kv", "big", pattern(0, 64)).value();
  for (std::uint64_t i = 0; i < rounds; ++i) {
    w.put("kv", "churn" + std::to_string(i % 2), pattern(100 + i, kBig)).value();
    w.reclaim();
  }
}

/// The state letter of a process ('R', 'S', 'Z', ...) from /proc, or 0.
char proc_state(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() ? 0 : line[paren + 2];
}

std::string proc_comm(pid_t pid) {
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name;
}

TEST(Liveness, AWriterOutOfDescriptorsNeverClearsALiveReader) {
  const auto o = big_options("nofile");
  shared_block st;
  const pid_t writer_pid = spawn([&] {
    auto w = writer::create(o, kTables);
    if (!w) return 2;
    w->put("kv", "big", pattern(1, kBig)).value();
    st->ready = 1;
    while (st->phase.load() < 1) std::this_thread::sleep_for(1ms);
    // Every descriptor taken: the liveness check must not need one. (The
    // same calls once before, so that UBSan's vptr checks, which need a
    // descriptor, have seen these types already; the replaced value's free
    // and `trim` start the page trimmer's thread, a type of its own.)
    w->put("kv", "warm", pattern(2, kBig)).value();
    w->put("kv", "warm", pattern(3, kBig)).value();
    w->reclaim();
    w->trim();
    (void)w->stats();
    struct rlimit rl {};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 64;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return 3;
    std::vector<int> filler;
    filler.reserve(64);
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) filler.push_back(fd);
    if (errno != EMFILE) return 4;
    churn(*w);
    st->acked = w->stats().readers;
    for (int fd : filler) ::close(fd);
    st->phase = 2;
    while (st->stop.load() == 0) std::this_thread::sleep_for(1ms);
    return 0;
  });
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  const pid_t reader_pid = spawn([&] {
    auto r = reader::attach(o.ns, o.name);
    if (!r) return 2;
    const ndarray a = r->get_view("kv", "big").value()->array();
    st->reads = 1;
    while (st->phase.load() < 2) std::this_thread::sleep_for(1ms);
    return is_pattern(1, a) ? 0 : 5;
  });
  ASSERT_TRUE(wait_until([&] { return st->reads.load() == 1; }));
  st->phase = 1;
  ASSERT_TRUE(wait_until([&] { return st->phase.load() == 2; }));
  EXPECT_EQ(wait_for(reader_pid), 0) << "the live reader's view changed under it";
  EXPECT_EQ(st->acked.load(), 2u) << "the writer cleared a live reader's slot";
  st->stop = 1;
  EXPECT_EQ(wait_for(writer_pid), 0);
}

testing::shared_state* leader_state = nullptr;
ndarray* leader_array = nullptr;

TEST(Liveness, AReaderWhoseMainThreadExitedIsAlive) {
  const auto o = big_options("leader");
  auto w = writer::create(o, kTables).value();
  w.put("kv", "big", pattern(1, kBig)).value();
  shared_block st;
  leader_state = st.get();
  // Not `spawn`, nor pthread_exit (which unwinds through gtest's handlers):
  // the main thread leaves with the raw exit system call, nothing else runs.
  const pid_t reader_pid = testing::track(::fork());
  if (reader_pid == 0) {
    auto r = reader::attach(o.ns, o.name);
    if (!r) ::_exit(2);
    auto v = r->get_view("kv", "big");
    if (!v || !*v) ::_exit(3);
    leader_array = new ndarray((*v)->array());
    new reader(std::move(*r));  // kept for the process's life
    pthread_t t;
    ::pthread_create(
        &t, nullptr,
        [](void*) -> void* {
          while (leader_state->phase.load() < 2) std::this_thread::sleep_for(1ms);
          ::_exit(is_pattern(1, *leader_array) ? 0 : 5);
        },
        nullptr);
    leader_state->ready = 1;
    ::syscall(SYS_exit, 0);  // the process lives on in `t`; its leader is a zombie
  }
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  ASSERT_TRUE(wait_until([&] { return proc_state(reader_pid) == 'Z'; }, 10s))
      << "the reader's main thread did not exit";
  churn(w);
  EXPECT_EQ(w.stats().readers, 2u) << "a reader with a zombie leader was cleared";
  st->phase = 2;
  EXPECT_EQ(wait_for(reader_pid), 0) << "the live reader's view changed under it";
}

TEST(Liveness, AReaderThatExecsLosesItsSlotEvenInTheMiddleOfARead) {
  const auto o = big_options("exec");
  auto w = writer::create(o, kTables).value();
  w.put("kv", "big", pattern(1, kBig)).value();
  for (int k = 0; k < 10; ++k) w.put("kv", std::to_string(k), k).value();
  shared_block st;
  const pid_t reader_pid = spawn([&] {
    auto r = reader::attach(o.ns, o.name);
    if (!r) return 2;
    auto v = r->get_view("kv", "big");  // held across the exec
    if (!v || !*v) return 4;
    std::thread([&] {
      (void)r->for_each("kv", [&](std::string_view, const view&) {
        st->ready = 1;  // inside a read: its epoch lane is set
        for (;;) ::pause();
        return true;
      });
    }).detach();
    while (st->ready.load() == 0) std::this_thread::sleep_for(1ms);
    ::execlp("sleep", "sleep", "60", static_cast<char*>(nullptr));
    return 3;
  });
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  ASSERT_TRUE(wait_until([&] { return proc_comm(reader_pid) == "sleep"; }, 10s));
  // Same pid, same start time, but the reader is gone: its lock went with the exec.
  churn(w);
  for (int k = 0; k < 10; ++k) w.put("kv", std::to_string(k), k + 100).value();
  EXPECT_TRUE(wait_until(
      [&] {
        w.reclaim();
        return w.stats().readers == 1 && w.stats().bytes_retired == 0;
      },
      30s))
      << "readers " << w.stats().readers << ", retired bytes " << w.stats().bytes_retired;
  ::kill(reader_pid, SIGKILL);
  EXPECT_EQ(wait_for(reader_pid), 128 + SIGKILL);
}

/// Readers that attach, take a view and are SIGKILLed, `n` times; `reclaim`
/// is called after each when `sweep` is set.
void crash_readers(writer& w, const store_options& o, int n, bool sweep) {
  shared_block st;
  for (int i = 0; i < n; ++i) {
    st->ready = 0;
    const pid_t child = spawn([&] {
      auto r = reader::attach(o.ns, o.name);
      if (!r) return 2;
      auto v = r->get_view("kv", "big").value();
      st->ready = 1;
      for (;;) ::pause();
    });
    ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; })) << "reader " << i;
    ::kill(child, SIGKILL);
    ASSERT_EQ(wait_for(child), 128 + SIGKILL);
    if (sweep) w.reclaim();
  }
}

TEST(Liveness, AStoreWhoseReadersKeepCrashingNeverFillsItsRegistry) {
  auto o = big_options("crashers");
  o.max_readers = 4;  // the writer's own reader takes one
  auto w = writer::create(o, kTables).value();
  w.put("kv", "big", pattern(1, kBig)).value();
  // Load once, read forever: no writes, only the timer's reclaim.
  crash_readers(w, o, 30, true);
  EXPECT_EQ(w.stats().readers, 1u);
  auto r = reader::attach(o.ns, o.name);
  ASSERT_TRUE(r) << r.error().message;
  churn(w);
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u) << "a dead reader's hold survived";
}

TEST(Liveness, NewReadersTakeOverTheSlotsOfDeadOnesWithoutASweep) {
  auto o = big_options("takeover");
  o.max_readers = 4;
  auto w = writer::create(o, kTables).value();
  w.put("kv", "big", pattern(1, kBig)).value();
  crash_readers(w, o, 20, false);
  auto r = reader::attach(o.ns, o.name);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->contains("kv", "big").value());
}

// Readers attach, hold views and detach as fast as they can, in several
// processes, while the writer rewrites and sweeps as fast as it can: no live
// reader's view ever changes, however slots change hands.
TEST(Liveness, SlotsChangingHandsDuringSweepsNeverLoseALiveReadersHolds) {
  auto o = big_options("churnslots");
  o.max_readers = 4;  // few slots: they change hands all the time
  auto w = writer::create(o, kTables).value();
  const int keys = 4;
  for (int k = 0; k < keys; ++k) w.put("kv", std::to_string(k), pattern(k, 4096)).value();
  shared_block st;
  std::vector<pid_t> children;
  for (int c = 0; c < 3; ++c) {
    children.push_back(spawn([&, c] {
      std::uint64_t n = 0;
      while (st->stop.load() == 0) {
        auto r = reader::attach(o.ns, o.name);
        if (!r) continue;  // all slots taken for a moment
        const int k = static_cast<int>((n + c) % keys);
        auto v = r->get_view("kv", std::to_string(k));
        if (!v || !*v) {
          st->bad.fetch_add(1);
          continue;
        }
        const ndarray a = (*v)->array();
        const std::uint64_t seed =
            a.values<std::uint8_t>()[0] / 13;  // pattern(seed): v[0] = seed*13
        for (int i = 0; i < 20; ++i) {
          if (!is_pattern(seed, a)) st->bad.fetch_add(1);
        }
        ++n;
      }
      st->reads.fetch_add(n);
      return 0;
    }));
  }
  const std::uint64_t rounds = testing::scaled(3000, 300);
  for (std::uint64_t i = 0; i < rounds; ++i) {
    const int k = static_cast<int>(i % keys);
    w.put("kv", std::to_string(k), pattern(k + keys * (i % 3), 4096)).value();
    w.reclaim();
  }
  st->stop = 1;
  for (pid_t c : children) EXPECT_EQ(wait_for(c), 0);
  EXPECT_EQ(st->bad.load(), 0u);
  EXPECT_GT(st->reads.load(), 10u);
}

}  // namespace
}  // namespace slither::shm
