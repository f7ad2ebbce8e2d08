// The broker's metrics: counters and histograms fed by events (requests by
// type, errors by code, telemetry from dispatch batches and pipe stages), kept
// in a prometheus-cpp registry, and gauges and counters sampled from the
// broker's `stats` map when someone asks (queue depths, in-flight batches,
// credits, store bytes and garbage, worker restarts, clients connected).
//
// Both appear in the `stats` reply (key "metrics", see `metrics_value`) and as
// Prometheus text exposition (format 0.0.4) on the optional HTTP endpoint
// (metrics_http.hpp) and from `slither-broker stats`.
//
// Caveats
// - Telemetry handlers are process-wide: once `attach_telemetry` is called
//   (the broker does so only when it serves a metrics endpoint), every
//   "slither.pipe.stage.*" and "slither.dispatch.batch.*" event of the
//   process is counted, whoever emits it, and `telemetry::enabled()` is true
//   until `detach_telemetry` (so every emitter builds its events' payloads).
#pragma once

#include <prometheus/metric_family.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "slither/broker/protocol.hpp"
#include "slither/core/error.hpp"
#include "slither/core/telemetry.hpp"
#include "slither/core/value.hpp"

namespace prometheus {
class Counter;
class Registry;
}  // namespace prometheus

namespace slither::detail {

/// Upper bounds (seconds) of the dispatch batch latency histogram.
inline const std::vector<double> batch_latency_buckets{
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

/// Pipe stage series (pipe × stage label pairs) kept at most; events of
/// further stages count under pipe="_other", stage="_other".
inline constexpr std::size_t max_stage_series = 1000;

/// A broker's event-fed metrics. `count_error` and the telemetry handlers are
/// safe from any thread; `count_request` belongs to the serving thread.
class broker_metrics {
 public:
  broker_metrics();
  ~broker_metrics();
  broker_metrics(const broker_metrics&) = delete;
  broker_metrics& operator=(const broker_metrics&) = delete;

  /// A request of `type` arrived (the serving thread only).
  void count_request(protocol::message_type type);
  /// A message arrived whose header could not be read (the serving thread only).
  void count_invalid_request();
  /// An error reply with `code` went out (any thread).
  void count_error(errc code) noexcept;

  /// Starts counting telemetry events: "slither.dispatch.batch.stop" and
  /// ".exception" (their `duration_us` into the batch latency histogram),
  /// "slither.pipe.stage.stop" (metadata `pipe` and `stage`; measurement
  /// `items`, else `size` (the Pipe engine's), else 1) and
  /// "slither.pipe.stage.exception" (one failure each). Safe twice.
  void attach_telemetry();
  /// Stops counting them (a handler call in progress may still finish).
  void detach_telemetry() noexcept;

  /// Every family: the registry's, then those sampled from `stats` (the map
  /// of the broker's `stats` reply, with its "dispatch" key).
  std::vector<prometheus::MetricFamily> collect(const Map& stats) const;

 private:
  struct core;
  std::shared_ptr<core> core_;
  std::array<prometheus::Counter*, 256> requests_{};
  prometheus::Counter* invalid_requests_ = nullptr;
  std::vector<telemetry::attachment> attachments_;
};

/// The families sampled from a `stats` map alone (no registry).
std::vector<prometheus::MetricFamily> sampled_families(const Map& stats);

/// Families as a Value, the `stats` reply's "metrics": a map from metric name
/// to {"type": "counter"|"gauge"|"histogram"|"summary"|"untyped", "help",
/// "samples": [{"labels": {name: value}, "value"} or, for histograms,
/// {"labels", "count", "sum", "buckets": [[upper_bound, cumulative_count], ...]}
/// without the +Inf bucket (its count is "count")]}.
Value metrics_value(const std::vector<prometheus::MetricFamily>& families);

/// The inverse of `metrics_value`, for a client that renders a broker's
/// metrics. Errors (`invalid_argument`) name the metric and what is wrong.
result<std::vector<prometheus::MetricFamily>> metric_families(const Value& metrics);

/// Prometheus text exposition (format 0.0.4) of `families`.
std::string exposition_text(const std::vector<prometheus::MetricFamily>& families);

}  // namespace slither::detail
