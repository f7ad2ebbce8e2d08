#include "write_queue.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace slither::detail {
namespace {

write_job job(std::function<void()> run, std::size_t bytes = 0, std::string client = {}) {
  return {std::move(run), {}, bytes, std::move(client)};
}

write_queue_limits max_jobs(std::size_t n) {
  write_queue_limits l;
  l.jobs = n;
  return l;
}

TEST(WriteQueue, RunsInlineOnlyWhenIdle) {
  write_queue q(max_jobs(8));
  bool ran = false;
  EXPECT_TRUE(q.try_run_inline([&] { ran = true; }));
  EXPECT_TRUE(ran);

  // A queued job must run first: inline would overtake it.
  ASSERT_EQ(q.try_push(job([] {})), push_result::queued);
  EXPECT_FALSE(q.try_run_inline([] { FAIL() << "overtook a queued job"; }));

  // A running job excludes inline work too.
  auto popped = q.pop();
  ASSERT_TRUE(popped);
  EXPECT_FALSE(q.try_run_inline([] { FAIL() << "ran beside a running job"; }));
  popped->run();
  q.finish();
  EXPECT_TRUE(q.try_run_inline([] {}));
}

TEST(WriteQueue, WriterWaitsForInlineJobAndOrderIsKept) {
  write_queue q(max_jobs(64));
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
  ASSERT_EQ(q.try_push(job([&] {
    std::lock_guard lock(m);
    order.push_back(2);
  })),
            push_result::queued);
  std::atomic<bool> popped{false};
  std::thread writer([&] {
    auto next = q.pop();  // must wait until the inline job finishes
    popped = true;
    next->run();
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
  write_queue q(max_jobs(2));
  int ran = 0;
  ASSERT_EQ(q.try_push(job([&] { ++ran; })), push_result::queued);
  ASSERT_EQ(q.try_push(job([&] { ++ran; })), push_result::queued);
  EXPECT_EQ(q.try_push(job([&] { ++ran; })), push_result::full_jobs);
  q.close();
  EXPECT_FALSE(q.try_run_inline([&] { ++ran; }));
  EXPECT_EQ(q.try_push(job([&] { ++ran; })), push_result::closed);
  while (auto next = q.pop()) {
    next->run();
    q.finish();
  }
  EXPECT_EQ(ran, 2);
}

TEST(WriteQueue, BytesAreBoundedInTotalAndPerClient) {
  write_queue_limits limits;
  limits.bytes = 1000;
  limits.client_bytes = 600;
  write_queue q(limits);
  // One job always fits when nothing is held, however large.
  EXPECT_EQ(q.try_push(job([] {}, 5000, "a")), push_result::queued);
  EXPECT_EQ(q.try_push(job([] {}, 1, "b")), push_result::full_bytes);
  auto big = q.pop();
  big->run();
  EXPECT_EQ(q.bytes(), 5000u) << "a running job still holds its bytes";
  q.finish();
  EXPECT_EQ(q.bytes(), 0u);

  EXPECT_EQ(q.try_push(job([] {}, 500, "a")), push_result::queued);
  EXPECT_EQ(q.try_push(job([] {}, 200, "a")), push_result::full_client);
  EXPECT_EQ(q.try_push(job([] {}, 400, "b")), push_result::queued);
  EXPECT_EQ(q.try_push(job([] {}, 200, "c")), push_result::full_bytes);
  EXPECT_EQ(q.try_push(job([] {}, 100, "c")), push_result::queued);
  EXPECT_EQ(q.bytes(), 1000u);
  while (q.depth() > 0) {
    q.pop()->run();
    q.finish();
  }
  EXPECT_EQ(q.bytes(), 0u);
  EXPECT_EQ(q.try_push(job([] {}, 600, "a")), push_result::queued);
}

TEST(WriteQueue, AbortHandsBackQueuedJobsAndLetsTheRunningOneFinish) {
  write_queue q(max_jobs(8));
  int ran = 0, cancelled = 0;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(q.try_push({[&] { ++ran; }, [&] { ++cancelled; }, 10, "a"}), push_result::queued);
  }
  auto running = q.pop();
  for (auto& left : q.abort()) left.cancel();
  EXPECT_EQ(cancelled, 2);
  EXPECT_EQ(q.try_push(job([&] { ++ran; })), push_result::closed);
  running->run();
  q.finish();
  EXPECT_FALSE(q.pop());
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(q.bytes(), 0u);
}

}  // namespace
}  // namespace slither::detail
