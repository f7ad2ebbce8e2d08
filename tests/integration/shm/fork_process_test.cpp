// Views and readers inherited through fork(): the multiprocessing pattern of
// a global array over a store. A child never reads freed memory, whatever
// its parent does after the fork, and the parent's death stays visible.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <optional>
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

/// Retires "big" and reuses its size class, so that a freed "big" is overwritten.
void churn(writer& w) {
  w.put("kv", "big", 0).value();
  for (std::uint64_t i = 0; i < 8; ++i) {
    w.put("kv", "churn" + std::to_string(i % 2), pattern(100 + i, kBig)).value();
    w.reclaim();
  }
}

TEST(Fork, AChildsInheritedViewOutlivesTheParentsCopy) {
  auto o = test_options("inherit");
  o.initial_segment_bytes = 16 << 20;
  auto w = writer::create(o, kTables).value();
  w.put("kv", "big", pattern(1, kBig)).value();
  auto r = reader::attach(o.ns, o.name).value();
  std::optional<ndarray> global = r.get_view("kv", "big").value()->array();
  shared_block st;
  const pid_t child = spawn([&] {
    st->ready = 1;
    while (st->phase.load() < 1) std::this_thread::sleep_for(1ms);
    if (!is_pattern(1, *global)) return 5;
    // The inherited reader reads on, through a slot of the child's own.
    auto again = r.get_view("kv", "churn0");
    if (!again || !*again || !is_pattern(106, (*again)->array())) return 6;
    return 0;
  });
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  global.reset();  // the parent drops its copy
  churn(w);
  EXPECT_EQ(w.stats().readers, 3u) << "the writer's reader, ours and the child's";
  st->phase = 1;
  EXPECT_EQ(wait_for(child), 0) << "the child's view changed under it";
  EXPECT_TRUE(wait_until([&] {
    w.reclaim();
    return w.stats().bytes_retired == 0;
  }));
}

TEST(Fork, AParentsDeathStaysVisibleAfterItForked) {
  auto o = test_options("orphan");
  o.initial_segment_bytes = 16 << 20;
  auto w = writer::create(o, kTables).value();
  w.put("kv", "big", pattern(1, kBig)).value();
  shared_block st;
  const pid_t parent = spawn([&] {
    auto r = reader::attach(o.ns, o.name);
    if (!r) return 2;
    const ndarray a = r->get_view("kv", "big").value()->array();
    if (::fork() == 0) {
      // Its parent is killed; nobody reaps it: it reports through `st`, and
      // ends on its own if the test never gets that far.
      for (int i = 0; i < 60000 && st->phase.load() < 1; ++i) {
        std::this_thread::sleep_for(1ms);
      }
      st->bad = is_pattern(1, a) ? 0 : 1;
      st->stop = 1;
      ::_exit(0);
    }
    st->ready = 1;
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  EXPECT_EQ(w.stats().readers, 3u) << "the writer's, the parent's and the child's own";
  ::kill(parent, SIGKILL);
  EXPECT_EQ(wait_for(parent), 128 + SIGKILL);
  // The dead parent's slot is cleared, though its child still runs.
  EXPECT_TRUE(wait_until([&] {
    w.reclaim();
    return w.stats().readers == 2;
  })) << w.stats().readers
      << " readers";
  churn(w);
  st->phase = 1;
  ASSERT_TRUE(wait_until([&] { return st->stop.load() == 1; }));
  EXPECT_EQ(st->bad.load(), 0u) << "the child's view changed once its parent was gone";
}

TEST(Fork, AChildForkedInsideAReadFinishesItSafely) {
  auto o = test_options("midread");
  o.initial_segment_bytes = 16 << 20;
  auto w = writer::create(o, kTables).value();
  const int keys = 8;
  for (int k = 0; k < keys; ++k) w.put("kv", std::to_string(k), pattern(k, 4096)).value();
  auto r = reader::attach(o.ns, o.name).value();
  shared_block st;
  pid_t child = -1;
  bool forked = false;
  auto ok = r.for_each("kv", [&](std::string_view key, const view& v) {
    if (!forked) {
      forked = true;
      child = testing::track(::fork());
      if (child == 0) {
        st->ready = 1;
        while (st->phase.load() < 1) std::this_thread::sleep_for(1ms);
      }
    }
    const std::uint64_t k = std::stoull(std::string(key));
    if (child == 0 && !is_pattern(k, v.array())) st->bad.fetch_add(1);
    return true;
  });
  if (child == 0) ::_exit(ok ? 0 : 3);  // the child finished the iteration
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  // The parent's iteration is over. Reloads retire the index the child is
  // walking and every block in it, and reuse their memory.
  for (int round = 1; round <= 4; ++round) {
    ASSERT_TRUE(w.reload("kv", [&](loader& l) -> result<void> {
      for (int k = 0; k < keys; ++k) {
        if (auto put = l.put(std::to_string(k), pattern(k + 50 * round, 4096)); !put) return put;
      }
      return {};
    }));
    w.reclaim();
  }
  st->phase = 1;
  EXPECT_EQ(wait_for(child), 0);
  EXPECT_EQ(st->bad.load(), 0u) << "the child's iteration read freed blocks";
}

TEST(Fork, WithoutASlotForTheChildBothKeepWhatWasHeld) {
  auto o = test_options("shared");
  o.initial_segment_bytes = 16 << 20;
  o.max_readers = 2;  // the writer's reader and ours: none left for a child
  auto w = writer::create(o, kTables).value();
  w.put("kv", "big", pattern(1, kBig)).value();
  std::optional<reader> r = reader::attach(o.ns, o.name).value();
  std::optional<ndarray> global = r->get_view("kv", "big").value()->array();
  shared_block st;
  const pid_t child = spawn([&] {
    auto refused = r->get("kv", "big");  // it shares its parent's slot: no reads of its own
    if (refused || refused.error().code != errc::invalid_argument) return 4;
    st->ready = 1;
    while (st->phase.load() < 1) std::this_thread::sleep_for(1ms);
    return is_pattern(1, *global) ? 0 : 5;
  });
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 1; }));
  global.reset();
  churn(w);
  EXPECT_GT(w.stats().bytes_retired, kBig) << "the parent's hold must stay for the child";
  st->phase = 1;
  EXPECT_EQ(wait_for(child), 0);
  // Once both are done with the slot, it is freed and so is the block.
  r.reset();
  EXPECT_TRUE(wait_until([&] {
    w.reclaim();
    return w.stats().bytes_retired == 0 && w.stats().readers == 1;
  }));
  EXPECT_TRUE(reader::attach(o.ns, o.name));
}

}  // namespace
}  // namespace slither::shm
