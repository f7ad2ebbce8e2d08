// Several reader threads of one process share one `reader` while a writer
// thread rewrites the store: meant to run under ThreadSanitizer too.
#include <gtest/gtest.h>

#include <atomic>
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

}  // namespace
}  // namespace slither::shm
