// A large write does not hold up other clients: it is decoded and applied on
// the writer thread while the serving thread answers pings. Its own
// executable, run alone (RUN_SERIAL): it measures latency.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>

#include "broker_fixture.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
using test_support::BrokerTest;
using clock = std::chrono::steady_clock;

TEST_F(BrokerTest, PingsStayFastWhileALargePutRuns) {
  auto o = options();
  o.stores[0].options.initial_segment_bytes = std::uint64_t{1} << 30;
  o.limits.max_message_bytes = std::size_t{1} << 30;
  auto& b = start(std::move(o));
  ASSERT_TRUE(b.start());
  auto writer = connect(60s);
  auto pinger = connect(5s);
  const auto array = ndarray::zeros(dtype::f32, {std::uint64_t{64} << 20});  // 256 MiB
  std::atomic<bool> done{false};
  const auto put_start = clock::now();
  auto put = std::async(std::launch::async, [&] {
    auto v = writer.put("main", "kv", "big", Value(array));
    done = true;
    return v;
  });
  // Pings while the put is in flight (sent, decoded, copied into the store).
  std::vector<std::chrono::microseconds> rtts;
  while (!done) {
    const auto t0 = clock::now();
    ASSERT_TRUE(pinger.ping());
    rtts.push_back(std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - t0));
  }
  auto v = put.get();
  const auto put_time = clock::now() - put_start;
  ASSERT_TRUE(v) << v.error().message;
  ASSERT_GE(rtts.size(), 3u) << "the put was over before pings could be measured";
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "timings under ThreadSanitizer say nothing about the serving thread";
#endif
  // Inline on the serving thread, one ping would wait for the whole decode and
  // copy, most of the put (400 ms of about 500 on an idle machine). The bound
  // scales with the put so that a loaded machine, which slows both, does not
  // fail it: a quarter of the put, or 50 ms when that is more.
  std::sort(rtts.begin(), rtts.end());
  RecordProperty("pings", static_cast<int>(rtts.size()));
  RecordProperty("slowest_ping_us", static_cast<int>(rtts.back().count()));
  const auto bound = std::max<clock::duration>(50ms, put_time / 4);
  EXPECT_LT(rtts.back(), bound)
      << rtts.size() << " pings, median " << rtts[rtts.size() / 2].count() << " us, put "
      << std::chrono::duration_cast<std::chrono::milliseconds>(put_time).count() << " ms";
}

}  // namespace
}  // namespace slither
