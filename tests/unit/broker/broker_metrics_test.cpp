// Metrics of a running broker: the `stats` reply's "metrics" map, the
// endpoint scraped with a real HTTP client as requests move the figures, and
// the endpoint's options checked at start.
#include <gtest/gtest.h>

#include <fstream>

#include "broker_fixture.hpp"
#include "http_client.hpp"
#include "slither/core/telemetry.hpp"

namespace slither::test_support {
namespace {

class BrokerMetricsTest : public BrokerTest {};

// The value of a sample in the stats reply's metrics map, or -1.
double metric(const Value& stats, const std::string& name, const Map& labels = {}) {
  const Value* f = stats["metrics"].find(name);
  if (f == nullptr) return -1;
  for (const auto& s : (*f)["samples"].as<List>()) {
    bool match = true;
    for (const auto& [k, v] : labels) {
      const Value* l = s["labels"].find(k);
      match = match && l != nullptr && *l == v;
    }
    if (match) return s.find("value") ? s["value"].as<double>() : s["count"].as<double>();
  }
  return -1;
}

TEST_F(BrokerMetricsTest, StatsKeepTheirKeysAndAddMetrics) {
  start();
  auto c = connect();
  ASSERT_TRUE(c.put("main", "kv", "a", Value(std::string(1000, 'x'))));
  ASSERT_TRUE(c.put("main", "kv", "a", Value(std::string(1000, 'y'))));
  EXPECT_FALSE(c.put("nope", "kv", "a", Value(1)));
  auto st = c.stats().value();
  for (const char* key : {"ns", "pid", "uptime_ms", "requests", "errors", "busy",
                          "write_queue_depth", "connections", "clients", "stores", "dispatch"}) {
    EXPECT_NE(st.find(key), nullptr) << key;
  }
  EXPECT_EQ(st["metrics_endpoint"].as<std::string>(), "");
  EXPECT_EQ(metric(st, "slither_requests_total", {{"type", "put"}}), 3);
  EXPECT_EQ(metric(st, "slither_requests_total", {{"type", "hello"}}), 1);
  EXPECT_EQ(metric(st, "slither_request_errors_total", {{"code", "not_found"}}), 1);
  EXPECT_EQ(metric(st, "slither_clients_connected"), 1);
  EXPECT_GT(metric(st, "slither_store_bytes", {{"store", "main"}}), 1000);
  EXPECT_GE(metric(st, "slither_store_garbage_bytes", {{"store", "main"}}), 0);
  EXPECT_EQ(metric(st, "slither_store_entries", {{"store", "main"}}), 1);
  EXPECT_EQ(st["metrics"]["slither_store_bytes"]["type"].as<std::string>(), "gauge");
}

TEST_F(BrokerMetricsTest, TheEndpointServesFiguresThatMove) {
  auto o = options();
  o.metrics_endpoint = "127.0.0.1:0";
  start(std::move(o));
  ASSERT_TRUE(broker_->start());
  const std::string ep = broker_->metrics_endpoint();
  ASSERT_TRUE(ep.starts_with("127.0.0.1:")) << ep;
  ASSERT_NE(ep, "127.0.0.1:0");

  auto before = http_get(ep);
  ASSERT_EQ(before.status, 200);
  EXPECT_NE(before.body.find("# TYPE slither_write_queue_depth gauge"), std::string::npos);
  EXPECT_NE(before.body.find("slither_dispatch_batch_duration_seconds_bucket{le=\"+Inf\"} 0"),
            std::string::npos);
  EXPECT_FALSE(sample(before.body, "slither_requests_total{type=\"put\"}"));
  const double bytes0 = sample(before.body, "slither_store_bytes{store=\"main\"}").value();

  auto c = connect();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c.put("main", "kv", "k" + std::to_string(i), Value(std::string(500, 'v'))));
  }
  auto after = http_get(ep);
  ASSERT_EQ(after.status, 200);
  EXPECT_EQ(sample(after.body, "slither_requests_total{type=\"put\"}"), 5);
  EXPECT_GT(sample(after.body, "slither_store_bytes{store=\"main\"}").value(), bytes0 + 2500);
  EXPECT_EQ(sample(after.body, "slither_store_entries{store=\"main\"}"), 5);
  EXPECT_EQ(sample(after.body, "slither_clients_connected"), 1);

  // The stats reply names the endpoint.
  EXPECT_EQ(c.stats().value()["metrics_endpoint"].as<std::string>(), ep);
  EXPECT_EQ(http_get(ep, "/").status, 404);

  broker_->stop();
  EXPECT_FALSE(http_connection(ep).connected());
}

TEST_F(BrokerMetricsTest, WithoutTheEndpointTelemetryStaysOff) {
  // An attached handler would make every store write build its events.
  start();
  EXPECT_FALSE(telemetry::enabled());
  telemetry::emit("slither.pipe.stage.stop", {{"size", 3}}, {{"pipe", "p"}, {"stage", "s"}});
  auto st = connect().stats().value();
  EXPECT_EQ(metric(st, "slither_pipe_stage_items_total", {{"pipe", "p"}, {"stage", "s"}}), -1);
}

TEST_F(BrokerMetricsTest, PipeStageEventsOfTheProcessAreCounted) {
  auto o = options();
  o.metrics_endpoint = "127.0.0.1:0";
  start(std::move(o));
  ASSERT_TRUE(broker_->start());
  telemetry::emit("slither.pipe.stage.stop", {{"items", 3}},
                  {{"pipe", "score"}, {"stage", "prep"}});
  auto text = http_get(broker_->metrics_endpoint()).body;
  EXPECT_EQ(sample(text, "slither_pipe_stage_items_total{pipe=\"score\",stage=\"prep\"}"), 3)
      << text;
  // A stopped broker no longer listens for them.
  broker_->stop();
  EXPECT_FALSE(telemetry::enabled());
}

TEST_F(BrokerMetricsTest, ANonLoopbackEndpointNeedsAllowRemote) {
  auto o = options();
  o.metrics_endpoint = "0.0.0.0:0";
  start(o);
  auto r = broker_->start();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("allow_remote"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "lock"));

  o.allow_remote = true;
  start(o);
  ASSERT_TRUE(broker_->start());
  EXPECT_TRUE(broker_->metrics_endpoint().starts_with("0.0.0.0:"));
}

TEST_F(BrokerMetricsTest, ABadOrTakenEndpointStopsTheStart) {
  auto o = options();
  o.metrics_endpoint = "not-an-endpoint";
  start(o);
  auto r = broker_->start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("not-an-endpoint"), std::string::npos);

  o.metrics_endpoint = "127.0.0.1:0";
  start(o);
  ASSERT_TRUE(broker_->start());
  Broker second([&] {
    auto o2 = o;
    o2.ns = ns_ + "b";
    o2.runtime_dir = dir_.string() + "b";
    o2.metrics_endpoint = broker_->metrics_endpoint();
    return o2;
  }());
  auto taken = second.start();
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, errc::io_error);
  EXPECT_FALSE(fs::exists(dir_.string() + "b"));
}

TEST_F(BrokerMetricsTest, TheConfigTakesMetricsEndpoint) {
  const auto file = fs::temp_directory_path() / (ns_ + ".toml");
  std::ofstream(file) << "[broker]\nmetrics_endpoint = \"127.0.0.1:9464\"\nallow_remote = true\n";
  auto cfg = load_config(file);
  fs::remove(file);
  ASSERT_TRUE(cfg) << cfg.error().message;
  EXPECT_EQ(cfg->metrics_endpoint, "127.0.0.1:9464");
  EXPECT_TRUE(cfg->allow_remote);
}

}  // namespace
}  // namespace slither::test_support
