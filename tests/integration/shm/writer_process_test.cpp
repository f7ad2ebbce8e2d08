// Writer exclusivity and writer liveness across real processes: writers that
// start together, writers killed with children alive, stores replaced under
// readers still attached to them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <string>
#include <vector>

#include "process_test_util.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using namespace std::chrono_literals;
using testing::shared_block;
using testing::spawn;
using testing::test_options;
using testing::wait_for;
using testing::wait_until;

const std::vector<table_spec> kTables = {{"kv", table_kind::set, 16}};

bool object_exists(const std::string& name) {
  const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

TEST(WriterProcesses, WritersStartingTogetherNeverUnlinkEachOthersStore) {
  constexpr int kWriters = 4;
  const int rounds = static_cast<int>(testing::scaled(20, 5));
  for (int round = 0; round < rounds; ++round) {
    auto o = test_options("together");
    o.initial_segment_bytes = 4 << 20;  // a slower create: a wider window
    shared_block st;
    std::vector<pid_t> children;
    for (int i = 0; i < kWriters; ++i) {
      children.push_back(spawn([&] {
        st->ready.fetch_add(1);
        while (st->ready.load() < kWriters) {
        }
        auto w = writer::create(o, kTables);
        st->reads.fetch_add(1);  // decided
        if (!w) return w.error().code == errc::already_exists ? 10 : 11;
        if (!w->put("kv", "owner", static_cast<std::int64_t>(::getpid()))) return 12;
        while (st->stop.load() == 0) std::this_thread::sleep_for(1ms);
        // Still intact after the others gave up: nobody unlinked any of it.
        auto r = reader::attach(o.ns, o.name);
        if (!r || r->incarnation() != w->incarnation()) return 13;
        if (r->get("kv", "owner").value() != std::optional<Value>(::getpid())) return 14;
        return 0;
      }));
    }
    ASSERT_TRUE(wait_until([&] { return st->reads.load() == kWriters; })) << "round " << round;
    std::this_thread::sleep_for(5ms);  // let a loser's clean-up, if any, run
    st->stop = 1;
    int winners = 0, refused = 0;
    for (pid_t c : children) {
      const int code = wait_for(c);
      winners += code == 0;
      refused += code == 10;
      EXPECT_TRUE(code == 0 || code == 10) << "round " << round << ": a writer ended with " << code;
    }
    EXPECT_EQ(winners, 1) << "round " << round;
    EXPECT_EQ(refused, kWriters - 1) << "round " << round;
  }
}

TEST(WriterProcesses, ReplacingADeadWritersStoreClosesItForItsReaders) {
  const auto o = test_options("replaced");
  shared_block st;
  const pid_t child = spawn([&] {
    auto w = writer::create(o, kTables);
    if (!w) return 2;
    w->put("kv", "k", "old").value();
    st->ready = 1;
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  auto old = reader::attach(o.ns, o.name).value();
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_for(child), 128 + SIGKILL);
  EXPECT_FALSE(old.store_closed()) << "nobody has replaced it yet";
  auto w = writer::create(o, kTables);
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_TRUE(old.store_closed())
      << "readers of the dead writer's store must learn it was replaced";
  EXPECT_EQ(old.get("kv", "k").value(), std::optional<Value>("old"));  // over the old mapping
  EXPECT_NE(old.incarnation(), w->incarnation());
}

TEST(WriterProcesses, AKilledWritersChildrenDoNotKeepItAlive) {
  const auto o = test_options("orphans");
  shared_block st;
  const pid_t child = spawn([&] {
    auto w = writer::create(o, kTables);
    if (!w) return 2;
    // A child that outlives the writer (a spawned worker, say) inherits its
    // descriptors; the writer's lock must still die with the writer.
    if (::fork() == 0) {
      st->phase = 1;  // past fork(), and so past its fork handlers
      // Not our child once its parent is killed: it ends on `stop`, or on its own.
      for (int i = 0; i < 60000 && st->stop.load() == 0; ++i) {
        std::this_thread::sleep_for(1ms);
      }
      ::_exit(0);
    }
    st->ready = 1;
    for (;;) ::pause();
  });
  struct stop_grandchild {
    testing::shared_state* st;
    ~stop_grandchild() { st->stop = 1; }
  } stop{st.get()};
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1 && st->phase.load() == 1; }));
  auto before = reader::attach(o.ns, o.name);
  ASSERT_TRUE(before) << before.error().message;
  EXPECT_EQ(writer::create(o, kTables).error().code, errc::already_exists);
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_for(child), 128 + SIGKILL);
  auto gone = reader::attach(o.ns, o.name);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::writer_gone) << gone.error().message;
  auto w = writer::create(o, kTables);
  EXPECT_TRUE(w) << w.error().message;
}

TEST(WriterProcesses, AFailedCreateRemovesOnlyWhatItMade) {
  const auto o = test_options("failed");
  auto w = writer::create(o, kTables).value();
  w.put("kv", "k", 1).value();
  const pid_t child = spawn([&] {
    auto second = writer::create(o, kTables);  // refused: must touch nothing
    return !second && second.error().code == errc::already_exists ? 0 : 1;
  });
  EXPECT_EQ(wait_for(child), 0);
  EXPECT_TRUE(object_exists(segment_name(o.ns, o.name, 0)));
  EXPECT_TRUE(object_exists(registry_name(o.ns, o.name)));
  EXPECT_TRUE(object_exists(lock_name(o.ns, o.name)));
  auto r = reader::attach(o.ns, o.name);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->get("kv", "k").value(), std::optional<Value>(1));
  w.close();
  EXPECT_FALSE(object_exists(segment_name(o.ns, o.name, 0)));
  EXPECT_FALSE(object_exists(registry_name(o.ns, o.name)));
  EXPECT_FALSE(object_exists(lock_name(o.ns, o.name)));
}

}  // namespace
}  // namespace slither::shm
