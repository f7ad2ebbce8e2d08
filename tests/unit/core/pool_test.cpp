#include "slither/core/pool.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "slither/core/value.hpp"

namespace slither {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool pooled = false;  // AddressSanitizer builds bypass the cache
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool pooled = false;
#else
constexpr bool pooled = true;
#endif
#else
constexpr bool pooled = true;
#endif

TEST(Pool, ReusesAFreedBlockOfTheSameClass) {
  void* a = pool_allocate(100);
  std::memset(a, 0xab, 100);
  pool_deallocate(a, 100);
  void* b = pool_allocate(112);  // same 16-byte class as 100
  if (pooled) {
    EXPECT_EQ(a, b);
  }
  pool_deallocate(b, 112);
}

TEST(Pool, LargeAndEmptyRequestsGoToOperatorNew) {
  void* big = pool_allocate(pool_max_block + 1);
  std::memset(big, 1, pool_max_block + 1);
  pool_deallocate(big, pool_max_block + 1);
  void* none = pool_allocate(0);
  pool_deallocate(none, 0);
}

TEST(Pool, KeepsABoundedNumberOfBlocks) {
  std::vector<void*> blocks;
  const std::size_t n = pool_cached_bytes / 64 + 100;  // more than a class keeps
  for (std::size_t i = 0; i < n; ++i) blocks.push_back(pool_allocate(64));
  for (void* p : blocks) pool_deallocate(p, 64);
  // Reallocating them all works whether they come from the cache or not.
  for (auto& p : blocks) p = pool_allocate(64);
  for (void* p : blocks) pool_deallocate(p, 64);
}

TEST(Pool, BlocksMayBeFreedByAnotherThreadAndAfterTheirThreadExits) {
  std::vector<List> lists(64);
  std::thread maker([&] {
    for (auto& l : lists) l = List{1, "two", 3.0};
  });
  maker.join();  // its cache is gone; its blocks now live in `lists`
  std::thread freer([&] { lists.clear(); });
  freer.join();
  List here{1, 2};
  EXPECT_EQ(here.size(), 2u);
}

TEST(Pool, ManyThreadsDecodeAndFreeConcurrently) {
  std::vector<std::thread> threads;
  std::vector<Value> handoff(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&handoff, t] {
      for (int i = 0; i < 2000; ++i) {
        Value v = Value::map({{"a", List{1, 2, 3}}, {"b", Value::map({{"c", t}})}});
        if (i % 100 == 0) handoff[t] = v;  // freed later by the main thread
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(handoff[t]["b"]["c"], Value(t));
}

}  // namespace
}  // namespace slither
