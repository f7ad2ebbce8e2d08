// How readers announce their epochs (epoch.hpp): the fence mode a writer
// offers, a writer whose barrier fails, lanes that threads keep until they
// exit, and nested reads on a kept lane.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "layout.hpp"
#include "reader_core.hpp"
#include "shm_fences_util.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::test_options;

std::vector<table_spec> one_table() {
  return {{"kv", table_kind::set, 16}};
}

TEST(Epoch, AStoreOffersMembarrierWhereTheKernelHasIt) {
  const auto o = test_options("offers");
  auto w = writer::create(o, one_table()).value();
  EXPECT_EQ(testing::fences_of(o), static_cast<std::uint64_t>(testing::expected_fences()));
}

TEST(Epoch, AWriterThatCannotIssueMembarrierOffersFullFences) {
  testing::sys_restore restore;
  detail::sys().membarrier = testing::failing_membarrier;
  const auto o = test_options("nooffer");
  auto w = writer::create(o, one_table()).value();
  EXPECT_EQ(testing::fences_of(o), static_cast<std::uint64_t>(detail::fence_mode::full));
  // Readers of it read as usual (their announces are fenced on their own).
  ASSERT_TRUE(w.put("kv", "k", testing::checked_value(1, 0)));
  auto r = reader::attach(o.ns, o.name).value();
  auto v = r.get("kv", "k");
  ASSERT_TRUE(v && *v);
  EXPECT_TRUE(testing::verify(1, **v));
}

TEST(Epoch, AWriterWhoseBarrierFailsFreesNothingThatReclaim) {
  if (testing::expected_fences() != detail::fence_mode::membarrier) {
    GTEST_SKIP() << "no membarrier here (kernel or ThreadSanitizer build)";
  }
  const auto o = test_options("barrierfail");
  auto w = writer::create(o, one_table()).value();
  auto r = reader::attach(o.ns, o.name).value();  // a registered reader
  for (std::uint64_t i = 0; i < 8; ++i) {
    ASSERT_TRUE(w.put("kv", "k", testing::checked_value(1, i)));
  }
  {
    testing::sys_restore restore;
    detail::sys().membarrier = testing::failing_membarrier;
    EXPECT_EQ(w.reclaim().bytes_freed, 0u);
    EXPECT_GT(w.stats().bytes_retired, 0u);
  }
  EXPECT_GT(w.reclaim().bytes_freed, 0u);
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

/// The lanes of this process's slots that are busy now, as a bit mask.
unsigned busy_lanes(const store_options& o) {
  testing::mapped reg(registry_name(o.ns, o.name), detail::slot_offset(o.max_readers));
  const auto* slots =
      reinterpret_cast<const detail::reader_slot*>(reg.data() + sizeof(detail::registry_header));
  unsigned mask = 0;
  for (std::uint64_t i = 0; i < o.max_readers; ++i) {
    if (slots[i].pid.load() != static_cast<std::uint64_t>(::getpid())) continue;
    for (unsigned k = 0; k < detail::lanes_per_reader; ++k) {
      if (slots[i].lanes[k].load() != 0) mask |= 1u << k;
    }
  }
  return mask;
}

/// The lanes busy while this thread is inside a read of `r`.
unsigned lanes_during_a_read(const reader& r, const store_options& o) {
  unsigned mask = 0;
  EXPECT_TRUE(r.for_each("kv", [&](std::string_view, const view&) {
    mask = busy_lanes(o);
    return false;
  }));
  return mask;
}

constexpr unsigned kept_mask = (1u << detail::kept_lanes) - 1;

TEST(Epoch, ThreadsKeepLanesUntilTheyExit) {
  const auto o = test_options("kept");
  auto w = writer::create(o, one_table()).value();
  ASSERT_TRUE(w.put("kv", "k", testing::checked_value(1, 0)));
  auto r = reader::attach(o.ns, o.name).value();

  // The first threads to read keep a lane each and stay until released.
  std::atomic<bool> release{false};
  std::atomic<unsigned> kept{0};
  std::vector<std::thread> keepers;
  std::vector<unsigned> seen(detail::kept_lanes, 0);
  for (unsigned i = 0; i < detail::kept_lanes; ++i) {
    keepers.emplace_back([&, i] {
      seen[i] = lanes_during_a_read(r, o);
      kept.fetch_add(1);
      while (!release.load()) std::this_thread::yield();
    });
    // One at a time: each sees only its own lane busy.
    while (kept.load() != i + 1) std::this_thread::yield();
  }
  unsigned all_kept = 0;
  for (unsigned m : seen) {
    EXPECT_EQ(__builtin_popcount(m), 1) << m;
    EXPECT_EQ(m & ~kept_mask, 0u) << m;
    all_kept |= m;
  }
  EXPECT_EQ(all_kept, kept_mask);  // every kept lane, each kept by one thread
  EXPECT_EQ(busy_lanes(o), 0u);    // kept, but idle between reads

  // Every kept lane is taken: another thread reads on a per-read lane.
  unsigned other = 0;
  std::thread([&] { other = lanes_during_a_read(r, o); }).join();
  EXPECT_EQ(__builtin_popcount(other), 1) << other;
  EXPECT_EQ(other & kept_mask, 0u) << other;

  // Keepers that exit give their lanes back: the next thread keeps one.
  release = true;
  for (auto& t : keepers) t.join();
  unsigned later = 0;
  std::thread([&] { later = lanes_during_a_read(r, o); }).join();
  EXPECT_EQ(__builtin_popcount(later), 1) << later;
  EXPECT_EQ(later & ~kept_mask, 0u) << later;
  EXPECT_EQ(busy_lanes(o), 0u);
}

TEST(Epoch, ANestedReadOnAKeptLaneLeavesTheOuterReadsAnnounce) {
  const auto o = test_options("nested");
  auto w = writer::create(o, one_table()).value();
  ASSERT_TRUE(w.put("kv", "k", testing::checked_value(1, 0)));
  auto r = reader::attach(o.ns, o.name).value();
  unsigned before = 0;
  unsigned after = 0;
  ASSERT_TRUE(r.for_each("kv", [&](std::string_view, const view&) {
    before = busy_lanes(o);
    auto v = r.get("kv", "k");  // nested: shares the outer read's lane
    EXPECT_TRUE(v && *v && testing::verify(1, **v));
    after = busy_lanes(o);
    return false;
  }));
  EXPECT_EQ(__builtin_popcount(before), 1) << before;
  EXPECT_EQ(before & ~kept_mask, 0u) << before;
  EXPECT_EQ(after, before);  // still announced for the rest of the outer read
  EXPECT_EQ(busy_lanes(o), 0u);
}

}  // namespace
}  // namespace slither::shm
