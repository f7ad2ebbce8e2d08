// Dispatch and Pipe figures on the metrics endpoint of an embedded broker with
// real worker processes: batches and their latency, workers and credits,
// restarts, items per pipe stage.
#include <gtest/gtest.h>
#include <signal.h>

#include "../../unit/broker/http_client.hpp"
#include "dispatch_fixture.hpp"
#include "slither/broker/pipe.hpp"

namespace slither {
namespace {

using namespace test_support;

class DispatchMetricsTest : public DispatchTest {
 protected:
  Broker& start_with_metrics() {
    auto o = options({pool(2)});
    o.metrics_endpoint = "127.0.0.1:0";
    return start(std::move(o));
  }
  std::string scrape() {
    auto r = http_get(broker_->metrics_endpoint());
    EXPECT_EQ(r.status, 200);
    return r.body;
  }
};

TEST_F(DispatchMetricsTest, BatchesWorkersAndRestartsShowOnTheEndpoint) {
  Broker& b = start_with_metrics();
  ASSERT_TRUE(wait_workers(2));
  auto idle = scrape();
  EXPECT_EQ(sample(idle, "slither_pool_workers{pool=\"default\"}"), 2);
  EXPECT_EQ(sample(idle, "slither_pool_credits{pool=\"default\"}"), 4);  // 2 each
  EXPECT_EQ(sample(idle, "slither_dispatch_batch_duration_seconds_count"), 0);

  auto report = dispatch(b, numbered(100), job("double", 4, 4)).value();
  ASSERT_FALSE(report.error);
  auto busy = scrape();
  EXPECT_EQ(sample(busy, "slither_pool_batches_total{outcome=\"ok\",pool=\"default\"}"), 25);
  EXPECT_EQ(sample(busy, "slither_dispatch_batch_duration_seconds_count"), 25);
  EXPECT_GT(sample(busy, "slither_dispatch_batch_duration_seconds_sum").value(), 0);
  EXPECT_EQ(sample(busy, "slither_dispatch_batch_duration_seconds_bucket{le=\"+Inf\"}"), 25);
  EXPECT_GE(sample(busy, "slither_requests_total{type=\"dispatch_submit\"}").value(), 25);
  EXPECT_EQ(sample(busy, "slither_pool_in_flight_batches{pool=\"default\"}"), 0);
  EXPECT_EQ(sample(busy, "slither_pool_worker_restarts_total{pool=\"default\"}"), 0);

  const auto pids = worker_pids();
  ASSERT_EQ(::kill(pids[0], SIGKILL), 0);
  EXPECT_TRUE(eventually([&] {
    const auto text = scrape();
    return sample(text, "slither_pool_worker_restarts_total{pool=\"default\"}").value_or(0) >= 1 &&
           sample(text, "slither_pool_worker_deaths_total{pool=\"default\"}").value_or(0) >= 1;
  }));
}

TEST_F(DispatchMetricsTest, ItemsPerPipeStageAreCounted) {
  Broker& b = start_with_metrics();
  Pipe p("score");
  p.native("prepare", [](Item& item, Context&) -> step { return item.payload.as<std::int64_t>(); })
      .python("predict",
              [] {
                python_options o;
                o.module = "test";
                o.function = "double";
                o.batch_size = 8;
                return o;
              }())
      .router("route",
              {{[](const Item& i, const Context&) { return i.payload.as<std::int64_t>() % 4 == 0; },
                "accept"}})
      .output("accept");
  auto r = run(b, p, numbered(200), {.session_id = "s1"}).value();
  ASSERT_TRUE(r.ok()) << r.error->describe();
  const auto text = scrape();
  for (const char* stage : {"prepare", "predict", "route"}) {
    EXPECT_EQ(sample(text, "slither_pipe_stage_items_total{pipe=\"score\",stage=\"" +
                               std::string(stage) + "\"}"),
              200)
        << stage << "\n"
        << text;
  }
  EXPECT_GE(sample(text, "slither_dispatch_batch_duration_seconds_count").value(), 25);
}

}  // namespace
}  // namespace slither
