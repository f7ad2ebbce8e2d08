// Several reader threads of one process share one `reader` while a writer
// thread rewrites the store: meant to run under ThreadSanitizer too.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

TEST(StoreThreads, ReaderThreadsShareOneReaderWhileTheWriterWrites) {
  auto o = testing::test_options("threads");
  o.initial_segment_bytes = 64 << 10;  // force new segments while reading
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  const std::uint64_t keys = 2000;
  const std::uint64_t writes = testing::scaled(200000, 20000);
  for (std::uint64_t k = 0; k < keys; ++k)
    ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, 0)));

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bad{0}, reads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::uint64_t k = static_cast<std::uint64_t>(t) * 7919;
      std::vector<std::pair<std::uint64_t, view>> kept;
      while (!stop.load(std::memory_order_relaxed)) {
        k = (k * 6364136223846793005ULL + 1442695040888963407ULL);
        const std::uint64_t key_no = k % keys;
        const std::string key = std::to_string(key_no);
        if (t % 2 == 0) {
          auto v = r.get("kv", key);
          if (!v || !*v || !testing::verify(key_no, **v)) bad.fetch_add(1);
        } else {
          auto v = r.get_view("kv", key);
          if (!v || !*v || !testing::verify(key_no, (*v)->value())) bad.fetch_add(1);
          if (v && *v) {
            kept.emplace_back(key_no, **v);
            if (kept.size() > 200) kept.erase(kept.begin(), kept.begin() + 100);
          }
        }
        reads.fetch_add(1, std::memory_order_relaxed);
      }
      for (const auto& [key_no, v] : kept) {
        if (!testing::verify(key_no, v.value())) bad.fetch_add(1);
      }
    });
  }
  for (std::uint64_t i = 0; i < writes; ++i) {
    const std::uint64_t k = (i * 7) % keys;
    ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, i)));
  }
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(reads.load(), 0u);
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

// As many threads as a slot has lanes iterate a table together (each holds a
// lane) and, for every entry, read the store again from inside their
// callbacks: the nested reads must reuse their thread's lane, as no lane is
// free. In a child process, so that a regression (threads waiting for lanes
// held by each other) fails here rather than hangs.
TEST(StoreThreads, ReadsNestedInACallbackReuseTheirThreadsLane) {
  auto o = testing::test_options("nested");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 64}, {"log", table_kind::bag, 8}};
  auto w = writer::create(o, tables).value();
  for (int k = 0; k < 50; ++k) w.put("kv", std::to_string(k), k).value();
  w.put("log", "x", 1).value();
  const pid_t child = ::fork();
  if (child == 0) {
    auto r = reader::attach(o.ns, o.name);
    if (!r) ::_exit(2);
    constexpr int kThreads = 8;  // lanes_per_reader
    std::atomic<int> bad{0}, inside{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        for (int round = 0; round < 20; ++round) {
          bool first = round == 0;
          auto ok = r->for_each("kv", [&](std::string_view key, const view& v) {
            if (first) {  // every thread holds its lane before any reads again
              first = false;
              inside.fetch_add(1);
              while (inside.load() < kThreads) std::this_thread::yield();
            }
            auto again = r->get("kv", key);
            if (!again || **again != v.value()) bad.fetch_add(1);
            auto deeper = r->for_each("log", [&](std::string_view, const view&) {
              if (!r->get_view("kv", key)) bad.fetch_add(1);
              return true;
            });
            if (!deeper) bad.fetch_add(1);
            return true;
          });
          if (!ok) bad.fetch_add(1);
        }
      });
    }
    for (auto& th : threads) th.join();
    ::_exit(bad.load() == 0 ? 0 : 3);
  }
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (::waitpid(child, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      FAIL() << "nested reads did not finish in 120 s: threads wait for lanes forever";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  w.reclaim();
}

// A view outlives the reader that made it, its copies are released on other
// threads, and its block stays held until the last copy goes (the thread
// safety `view` documents).
TEST(StoreThreads, ViewCopiesOutliveTheirReaderAndAreReleasedOnOtherThreads) {
  auto o = testing::test_options("viewthreads");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 8}};
  auto w = writer::create(o, tables).value();
  const Value original(Bytes{std::string(10000, 'v')});
  ASSERT_TRUE(w.put("kv", "k", original));
  std::optional<view> v;
  {
    auto r = reader::attach(o.ns, o.name).value();
    v = r.get_view("kv", "k").value();
    ASSERT_TRUE(v);
  }  // the reader is gone; its mapping lives on in the view
  for (char c = 'a'; c < 'k'; ++c)
    ASSERT_TRUE(w.put("kv", "k", Value(Bytes{std::string(10000, c)})));
  w.reclaim();
  EXPECT_GE(w.stats().bytes_retired, 10000u);  // the viewed block, still held

  constexpr int kThreads = 4;
  std::atomic<int> bad{0}, released{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, copy = v]() mutable {
      for (int i = 0; i < 100; ++i) {
        if (copy->value() != original) bad.fetch_add(1);
      }
      copy.reset();  // released here, on this thread
      released.fetch_add(1);
    });
  }
  v.reset();  // the original goes first; the threads' copies still hold the block
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(released.load(), kThreads);
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);
}

}  // namespace
}  // namespace slither::shm
