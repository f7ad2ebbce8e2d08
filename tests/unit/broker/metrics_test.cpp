// The metrics registry: sampled families from a stats map, the Value form and
// back, the text exposition, and the telemetry-fed counters and histogram.
#include "metrics.hpp"

#include <gtest/gtest.h>
#include <prometheus/client_metric.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "slither/core/telemetry.hpp"

namespace slither::detail {
namespace {

namespace pm = prometheus;

const pm::MetricFamily* family(const std::vector<pm::MetricFamily>& fams, std::string_view name) {
  const auto it =
      std::find_if(fams.begin(), fams.end(), [&](const auto& f) { return f.name == name; });
  return it == fams.end() ? nullptr : &*it;
}

bool has_labels(const pm::ClientMetric& m, const std::vector<pm::ClientMetric::Label>& want) {
  for (const auto& w : want) {
    if (std::find(m.label.begin(), m.label.end(), w) == m.label.end()) return false;
  }
  return true;
}

// The value of the sample of `name` with (at least) `labels`; NaN if absent.
double value_of(const std::vector<pm::MetricFamily>& fams, std::string_view name,
                const std::vector<pm::ClientMetric::Label>& labels = {}) {
  const auto* f = family(fams, name);
  if (f == nullptr) return std::nan("");
  for (const auto& m : f->metric) {
    if (!has_labels(m, labels)) continue;
    switch (f->type) {
      case pm::MetricType::Counter:
        return m.counter.value;
      case pm::MetricType::Gauge:
        return m.gauge.value;
      case pm::MetricType::Histogram:
        return static_cast<double>(m.histogram.sample_count);
      default:
        return m.untyped.value;
    }
  }
  return std::nan("");
}

Map sample_stats() {
  return Map{
      {"uptime_ms", 2500},
      {"clients", 3},
      {"write_queue_depth", 7},
      {"stores", Value::map({{"features", Value::map({{"entries", 10},
                                                      {"bytes_used", 4096},
                                                      {"bytes_retired", 512},
                                                      {"segments", 1},
                                                      {"segment_bytes", 1 << 20},
                                                      {"readers", 2}})}})},
      {"dispatch",
       Value::map(
           {{"jobs", 1},
            {"pools",
             Value::map({{"default",
                          Value::map({{"workers", Value::list({Value::map({{"id", 1},
                                                                           {"credits", 2},
                                                                           {"in_flight", 1},
                                                                           {"rss_bytes", 1000}}),
                                                               Value::map({{"id", 2},
                                                                           {"credits", 1},
                                                                           {"in_flight", 2},
                                                                           {"rss_bytes", 2000}})})},
                                      {"jobs", Value::list({Value::map({{"id", 9},
                                                                        {"queued_batches", 4},
                                                                        {"in_flight", 3},
                                                                        {"ready_items", 5}})})},
                                      {"queued_batches", 4},
                                      {"batches_ok", 20},
                                      {"batches_failed", 1},
                                      {"restarts", 2},
                                      {"circuit_open", false}})}})}})},
  };
}

TEST(Metrics, SampledFamiliesReadTheStatsMap) {
  const auto fams = sampled_families(sample_stats());
  EXPECT_EQ(value_of(fams, "slither_uptime_seconds"), 2.5);
  EXPECT_EQ(value_of(fams, "slither_clients_connected"), 3);
  EXPECT_EQ(value_of(fams, "slither_write_queue_depth"), 7);
  EXPECT_EQ(value_of(fams, "slither_store_bytes", {{"store", "features"}}), 4096);
  EXPECT_EQ(value_of(fams, "slither_store_garbage_bytes", {{"store", "features"}}), 512);
  EXPECT_EQ(value_of(fams, "slither_store_readers", {{"store", "features"}}), 2);
  EXPECT_EQ(value_of(fams, "slither_worker_credits", {{"pool", "default"}, {"worker", "2"}}), 1);
  EXPECT_EQ(value_of(fams, "slither_pool_credits", {{"pool", "default"}}), 3);
  EXPECT_EQ(value_of(fams, "slither_pool_in_flight_batches", {{"pool", "default"}}), 3);
  EXPECT_EQ(value_of(fams, "slither_pool_workers", {{"pool", "default"}}), 2);
  EXPECT_EQ(value_of(fams, "slither_job_queued_batches", {{"pool", "default"}, {"job", "9"}}), 4);
  EXPECT_EQ(value_of(fams, "slither_pool_batches_total", {{"pool", "default"}, {"outcome", "ok"}}),
            20);
  EXPECT_EQ(
      value_of(fams, "slither_pool_batches_total", {{"pool", "default"}, {"outcome", "failed"}}),
      1);
  EXPECT_EQ(value_of(fams, "slither_pool_worker_restarts_total", {{"pool", "default"}}), 2);
  EXPECT_EQ(value_of(fams, "slither_dispatch_jobs"), 1);
  EXPECT_EQ(family(fams, "slither_pool_worker_restarts_total")->type, pm::MetricType::Counter);
  EXPECT_EQ(family(fams, "slither_store_bytes")->type, pm::MetricType::Gauge);
}

TEST(Metrics, SampledFamiliesTolerateMissingAndOddKeys) {
  // Absent keys read as 0; keys of the wrong kind are skipped, never a throw.
  const auto fams = sampled_families(
      Map{{"stores", "not a map"}, {"dispatch", Value::map({{"pools", Value::list({1})}})}});
  EXPECT_EQ(value_of(fams, "slither_write_queue_depth"), 0);
  EXPECT_EQ(family(fams, "slither_store_bytes"), nullptr);
}

TEST(Metrics, ValueFormRoundTripsAndRendersTheExpositionFormat) {
  broker_metrics m;
  m.count_request(protocol::message_type::put);
  m.count_request(protocol::message_type::put);
  m.count_invalid_request();
  m.count_error(errc::not_found);
  m.attach_telemetry();
  telemetry::emit("slither.dispatch.batch.stop", {{"duration_us", 1500}}, {});
  const auto fams = m.collect(sample_stats());
  const Value v = metrics_value(fams);
  ASSERT_TRUE(v.is_map());
  EXPECT_EQ(v["slither_requests_total"]["type"].as<std::string>(), "counter");
  const auto& hist = v["slither_dispatch_batch_duration_seconds"];
  EXPECT_EQ(hist["type"].as<std::string>(), "histogram");
  EXPECT_EQ(hist["samples"][0]["count"].as<std::int64_t>(), 1);
  EXPECT_EQ(hist["samples"][0]["buckets"].size(), batch_latency_buckets.size());  // no +Inf

  auto back = metric_families(v);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(value_of(*back, "slither_requests_total", {{"type", "put"}}), 2);
  EXPECT_EQ(value_of(*back, "slither_requests_total", {{"type", "invalid"}}), 1);
  EXPECT_EQ(value_of(*back, "slither_request_errors_total", {{"code", "not_found"}}), 1);
  EXPECT_EQ(value_of(*back, "slither_request_errors_total", {{"code", "busy"}}), 0);
  EXPECT_EQ(value_of(*back, "slither_store_bytes", {{"store", "features"}}), 4096);

  const std::string text = exposition_text(*back);
  EXPECT_NE(text.find("# HELP slither_requests_total "), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE slither_requests_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("slither_requests_total{type=\"put\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE slither_dispatch_batch_duration_seconds histogram\n"),
            std::string::npos);
  EXPECT_NE(text.find("slither_dispatch_batch_duration_seconds_bucket{le=\"0.001\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("slither_dispatch_batch_duration_seconds_bucket{le=\"0.0025\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("slither_dispatch_batch_duration_seconds_bucket{le=\"+Inf\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("slither_dispatch_batch_duration_seconds_sum 0.0015\n"), std::string::npos);
  EXPECT_NE(text.find("slither_dispatch_batch_duration_seconds_count 1\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE slither_store_garbage_bytes gauge\n"), std::string::npos);
  EXPECT_NE(text.find("slither_store_garbage_bytes{store=\"features\"} 512\n"), std::string::npos);
}

TEST(Metrics, LabelValuesAreEscaped) {
  const auto fams = sampled_families(
      Map{{"stores", Value::map({{"a\"b\\c\nd", Value::map({{"bytes_used", 1}})}})}});
  const std::string text = exposition_text(fams);
  EXPECT_NE(text.find("slither_store_bytes{store=\"a\\\"b\\\\c\\nd\"} 1\n"), std::string::npos)
      << text;
}

TEST(Metrics, MetricFamiliesRefuseMalformedMaps) {
  EXPECT_FALSE(metric_families(Value(1)));
  EXPECT_FALSE(metric_families(Value::map({{"bad name", Value::map({})}})));
  EXPECT_FALSE(metric_families(Value::map({{"m", 1}})));
  EXPECT_FALSE(metric_families(
      Value::map({{"m", Value::map({{"type", "weird"}, {"samples", Value::list({})}})}})));
  EXPECT_FALSE(metric_families(Value::map({{"m", Value::map({{"type", "gauge"}})}})));
  EXPECT_FALSE(metric_families(Value::map(
      {{"m", Value::map({{"type", "gauge"},
                         {"samples", Value::list({Value::map(
                                         {{"labels", Value::map({{"le:x", "1"}})}})})}})}})));
  EXPECT_FALSE(metric_families(Value::map(
      {{"m", Value::map({{"type", "histogram"},
                         {"samples", Value::list({Value::map(
                                         {{"buckets", Value::list({Value::list({1})})}})})}})}})));
  const auto err = metric_families(Value::map({{"m", 1}}));
  EXPECT_NE(err.error().message.find("metric 'm'"), std::string::npos);
  // Line breaks in help text would end the line: they become spaces.
  auto ok = metric_families(Value::map(
      {{"m", Value::map({{"type", "gauge"}, {"help", "a\nb"}, {"samples", Value::list({})}})}}));
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)[0].help, "a b");
}

TEST(Metrics, PipeStageEventsCountItemsAndErrorsByStage) {
  broker_metrics m;
  telemetry::emit("slither.pipe.stage.stop", {{"items", 5}}, {{"pipe", "score"}, {"stage", "a"}});
  m.attach_telemetry();
  telemetry::emit("slither.pipe.stage.stop", {{"items", 5}}, {{"pipe", "score"}, {"stage", "a"}});
  telemetry::emit("slither.pipe.stage.stop", {}, {{"pipe", "score"}, {"stage", "a"}});
  telemetry::emit("slither.pipe.stage.start", {}, {{"pipe", "score"}, {"stage", "a"}});
  telemetry::emit("slither.pipe.stage.exception", {}, {{"pipe", "score"}, {"stage", "b"}});
  telemetry::emit("slither.pipe.stage.stop", {{"items", -1}}, {{"pipe", "score"}, {"stage", "a"}});
  // The Pipe engine's form: a chunk's size.
  telemetry::emit("slither.pipe.stage.stop", {{"size", 10}, {"duration_us", 3}},
                  {{"pipe", "score"}, {"stage", "c"}});
  auto fams = m.collect({});
  EXPECT_EQ(value_of(fams, "slither_pipe_stage_items_total", {{"pipe", "score"}, {"stage", "a"}}),
            6);
  EXPECT_EQ(value_of(fams, "slither_pipe_stage_items_total", {{"pipe", "score"}, {"stage", "c"}}),
            10);
  EXPECT_EQ(value_of(fams, "slither_pipe_stage_errors_total", {{"pipe", "score"}, {"stage", "b"}}),
            1);
  m.detach_telemetry();
  telemetry::emit("slither.pipe.stage.stop", {{"items", 5}}, {{"pipe", "score"}, {"stage", "a"}});
  fams = m.collect({});
  EXPECT_EQ(value_of(fams, "slither_pipe_stage_items_total", {{"pipe", "score"}, {"stage", "a"}}),
            6);
}

TEST(Metrics, StageSeriesAreCapped) {
  broker_metrics m;
  m.attach_telemetry();
  for (std::size_t i = 0; i < max_stage_series + 10; ++i) {
    telemetry::emit("slither.pipe.stage.stop", {}, {{"pipe", "p"}, {"stage", std::to_string(i)}});
  }
  const auto fams = m.collect({});
  EXPECT_EQ(family(fams, "slither_pipe_stage_items_total")->metric.size(), max_stage_series + 1);
  EXPECT_EQ(
      value_of(fams, "slither_pipe_stage_items_total", {{"pipe", "_other"}, {"stage", "_other"}}),
      10);
}

TEST(Metrics, BatchLatencyComesFromDispatchEvents) {
  broker_metrics m;
  m.attach_telemetry();
  telemetry::emit("slither.dispatch.batch.start", {{"size", 4}}, {});
  telemetry::emit("slither.dispatch.batch.stop", {{"duration_us", 200}}, {});
  telemetry::emit("slither.dispatch.batch.exception", {{"duration_us", 2'000'000}}, {});
  telemetry::emit("slither.dispatch.batch.stop", {}, {});  // no duration: not observed
  const auto fams = m.collect({});
  EXPECT_EQ(value_of(fams, "slither_dispatch_batch_duration_seconds"), 2);
  const auto& h = family(fams, "slither_dispatch_batch_duration_seconds")->metric[0].histogram;
  EXPECT_DOUBLE_EQ(h.sample_sum, 2.0002);
  EXPECT_EQ(h.bucket[0].cumulative_count, 1);  // 0.0005 s
}

}  // namespace
}  // namespace slither::detail
