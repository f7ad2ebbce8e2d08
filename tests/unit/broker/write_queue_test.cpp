#include "write_queue.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace slither::detail {
namespace {

TEST(WriteQueue, RunsInlineOnlyWhenIdle) {
  write_queue q(8);
  bool ran = false;
  EXPECT_TRUE(q.try_run_inline([&] { ran = true; }));
  EXPECT_TRUE(ran);

  // A queued job must run first: inline would overtake it.
  ASSERT_TRUE(q.try_push([] {}));
  EXPECT_FALSE(q.try_run_inline([] { FAIL() << "overtook a queued job"; }));

  // A running job excludes inline work too.
  auto job = q.pop();
  ASSERT_TRUE(job);
  EXPECT_FALSE(q.try_run_inline([] { FAIL() << "ran beside a running job"; }));
  (*job)();
  q.finish();
  EXPECT_TRUE(q.try_run_inline([] {}));
}

TEST(WriteQueue, WriterWaitsForInlineJobAndOrderIsKept) {
  write_queue q(64);
  std::mutex m;
  std::vector<int> order;
  std::promise<void> inline_started;
  std::promise<void> release_inline;
  auto release = release_inline.get_future().share();

  std::thread producer([&] {
    ASSERT_TRUE(q.try_run_inline([&] {
      inline_started.set_value();
      release.wait();
      std::lock_guard lock(m);
      order.push_back(1);
    }));
  });
  inline_started.get_future().wait();
  ASSERT_TRUE(q.try_push([&] {
    std::lock_guard lock(m);
    order.push_back(2);
  }));
  std::atomic<bool> popped{false};
  std::thread writer([&] {
    auto job = q.pop();  // must wait until the inline job finishes
    popped = true;
    (*job)();
    q.finish();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(popped.load()) << "the writer took a job while an inline one ran";
  release_inline.set_value();
  producer.join();
  writer.join();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(WriteQueue, CloseDrainsQueuedJobsThenStops) {
  write_queue q(2);
  int ran = 0;
  ASSERT_TRUE(q.try_push([&] { ++ran; }));
  ASSERT_TRUE(q.try_push([&] { ++ran; }));
  EXPECT_FALSE(q.try_push([&] { ++ran; })) << "over the limit";
  q.close();
  EXPECT_FALSE(q.try_run_inline([&] { ++ran; }));
  while (auto job = q.pop()) {
    (*job)();
    q.finish();
  }
  EXPECT_EQ(ran, 2);
}

}  // namespace
}  // namespace slither::detail
