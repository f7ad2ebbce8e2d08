// What telemetry costs an emitter: emit with no handler attached (the
// "zero cost" promise: one relaxed atomic load), with a handler of another
// prefix, with a handler that counts, and with the broker's metrics handler
// counting a pipe stage's items.
#include <benchmark/benchmark.h>

#include <atomic>

#include "metrics.hpp"
#include "slither/core/telemetry.hpp"

namespace {

using slither::Map;
namespace telemetry = slither::telemetry;

const Map& measurements() {
  static const Map m{{"duration_us", 12}, {"items", 1}};
  return m;
}
const Map& metadata() {
  static const Map m{{"pipe", "score"}, {"stage", "prepare"}};
  return m;
}

void telemetry_emit_idle(benchmark::State& state) {
  for (auto _ : state) {
    telemetry::emit("slither.pipe.stage.stop", measurements(), metadata());
  }
}
BENCHMARK(telemetry_emit_idle);

// The form emitters use so that an idle build does not even make its maps.
void telemetry_enabled_idle(benchmark::State& state) {
  for (auto _ : state) {
    if (telemetry::enabled()) {
      telemetry::emit("slither.pipe.stage.stop", Map{{"items", 1}}, metadata());
    }
  }
}
BENCHMARK(telemetry_enabled_idle);

void telemetry_emit_other_prefix(benchmark::State& state) {
  auto a = telemetry::attach("slither.store.", [](auto, const Map&, const Map&) {});
  for (auto _ : state) {
    telemetry::emit("slither.pipe.stage.stop", measurements(), metadata());
  }
}
BENCHMARK(telemetry_emit_other_prefix);

void telemetry_emit_attached(benchmark::State& state) {
  std::atomic<std::uint64_t> seen{0};
  auto a = telemetry::attach("slither.pipe.", [&](auto, const Map&, const Map&) {
    seen.fetch_add(1, std::memory_order_relaxed);
  });
  for (auto _ : state) {
    telemetry::emit("slither.pipe.stage.stop", measurements(), metadata());
  }
  benchmark::DoNotOptimize(seen.load());
}
BENCHMARK(telemetry_emit_attached);

void telemetry_emit_broker_metrics(benchmark::State& state) {
  slither::detail::broker_metrics metrics;
  metrics.attach_telemetry();
  for (auto _ : state) {
    telemetry::emit("slither.pipe.stage.stop", measurements(), metadata());
  }
}
BENCHMARK(telemetry_emit_broker_metrics);

}  // namespace

BENCHMARK_MAIN();
