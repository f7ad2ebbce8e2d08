// The view runner: a per-store limit, calls past their deadline dropped, and a
// stop that abandons what does not return.
#include "view_runner.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

namespace slither::detail {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

view_runner::task call(std::string store, std::function<void()> run,
                       std::function<void()> drop = {}, std::chrono::milliseconds within = 10s) {
  return {std::move(store), clock::now() + within, std::move(run), std::move(drop)};
}

TEST(ViewRunner, OneStoreNeverTakesMoreThanItsShare) {
  view_runner runner(4, 2);
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::atomic<int> running_a{0}, peak_a{0}, done_b{0};
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(runner.submit(call("a", [&] {
      const int now = ++running_a;
      int seen = peak_a.load();
      while (now > seen && !peak_a.compare_exchange_weak(seen, now)) {
      }
      gate.wait();
      --running_a;
    })));
  }
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(runner.submit(call("b", [&] { ++done_b; })));
  for (const auto deadline = clock::now() + 5s; done_b < 3 && clock::now() < deadline;) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(done_b.load(), 3) << "store b waited for store a";
  EXPECT_EQ(peak_a.load(), 2);
  release.set_value();
  EXPECT_EQ(runner.stop(5s), 0u);
}

TEST(ViewRunner, ACallPastItsDeadlineIsDroppedNotRun) {
  view_runner runner(1, 1);
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::atomic<int> ran{0}, dropped{0};
  ASSERT_TRUE(runner.submit(call("a", [&] { gate.wait(); })));
  ASSERT_TRUE(runner.submit(call(
      "a", [&] { ++ran; }, [&] { ++dropped; }, 50ms)));
  std::this_thread::sleep_for(100ms);
  release.set_value();
  EXPECT_EQ(runner.stop(5s), 0u);
  EXPECT_EQ(ran.load(), 0);
  EXPECT_EQ(dropped.load(), 1);
}

TEST(ViewRunner, StopDropsWaitingCallsAndAbandonsAStuckOneAfterTheGrace) {
  auto release = std::make_shared<std::promise<void>>();
  auto gate = release->get_future().share();
  std::atomic<int> dropped{0};
  auto runner = std::make_unique<view_runner>(1, 1);
  ASSERT_TRUE(runner->submit(call("a", [gate] { gate.wait(); })));
  ASSERT_TRUE(runner->submit(call(
      "a", [] {}, [&] { ++dropped; })));
  std::this_thread::sleep_for(20ms);
  const auto t0 = clock::now();
  EXPECT_EQ(runner->stop(100ms), 1u);
  EXPECT_LT(clock::now() - t0, 2s);
  EXPECT_EQ(dropped.load(), 1);
  EXPECT_FALSE(runner->submit(call("a", [] {})));
  runner.reset();  // the abandoned thread keeps what it needs
  release->set_value();
}

TEST(ViewRunner, HurryEndsTheGraceAtOnce) {
  std::promise<void> release;
  auto gate = release.get_future().share();
  view_runner runner(1, 1);
  ASSERT_TRUE(runner.submit(call("a", [gate] { gate.wait(); })));
  std::this_thread::sleep_for(20ms);
  auto stopping = std::async(std::launch::async, [&] { return runner.stop(60s); });
  EXPECT_EQ(stopping.wait_for(100ms), std::future_status::timeout);
  runner.hurry();
  ASSERT_EQ(stopping.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(stopping.get(), 1u);
  release.set_value();
}

}  // namespace
}  // namespace slither::detail
