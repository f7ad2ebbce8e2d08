// The Pipe's cost:
//
// - pipe_native / loop_native: 10^6 small items through map (+1) → map (×2)
//   → router (multiples of 4 to "four", the rest to "default"), as a pipe
//   (`slither::run`) and as the plain loop doing the same work into the same
//   buckets (the limit). pipe_native_overhead reports, per item, the pipe's
//   time less the loop's, both measured in the same iteration.
// - pipe_python / dispatch_python: 100k small items through native (+1) →
//   python (the worker's trivial handler) → router on a broker with 2
//   workers, against `slither::dispatch` of the same items with the same
//   batch size and in-flight limit, in the same run.
//
// Workers: the C++ test worker (slither-test-worker, "test:identity") unless
// SLITHER_BENCH_WORKER names another command and SLITHER_BENCH_FUNCTION its
// "module:function".
#include <benchmark/benchmark.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "../bench_broker.hpp"
#include "slither/broker/dispatch.hpp"
#include "slither/broker/pipe.hpp"

namespace {

using namespace slither;
using namespace std::chrono_literals;
using bench_clock = std::chrono::steady_clock;

constexpr std::int64_t native_items = 1'000'000;
constexpr std::int64_t python_items = 100'000;
constexpr std::size_t batch_size = 64;
constexpr std::uint32_t in_flight = 16;

std::vector<Item> input(std::int64_t n) {
  std::vector<Item> out;
  out.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) out.push_back(wrap(Value(i), static_cast<std::uint64_t>(i)));
  return out;
}

bool multiple_of_4(const Item& i) {
  return i.payload.as<std::int64_t>() % 4 == 0;
}

const Pipe& native_pipe() {
  static const Pipe p = [] {
    Pipe pipe("bench");
    pipe.native("plus", [](Item& i, Context&) -> step { return i.payload.as<std::int64_t>() + 1; })
        .native("times", [](Item& i, Context&) -> step { return i.payload.as<std::int64_t>() * 2; })
        .router("route", {{[](const Item& i, const Context&) { return multiple_of_4(i); }, "four"}})
        .output("four");
    return pipe;
  }();
  return p;
}

double run_pipe() {
  const auto t0 = bench_clock::now();
  auto r = run(native_pipe(), input(native_items)).value();
  const auto t1 = bench_clock::now();
  if (r.outputs["four"].size() + r.outputs["default"].size() != native_items) std::abort();
  return std::chrono::duration<double>(t1 - t0).count();
}

// The same work as a loop: the items made, mapped twice, and sorted into buckets.
double run_loop() {
  const auto t0 = bench_clock::now();
  std::vector<Item> items = input(native_items);
  std::vector<Item> four, rest;
  for (Item& i : items) {
    // Each map reads the payload and replaces it, as the pipe's stages do.
    const Value& in = i.payload;
    Value plus(in.as<std::int64_t>() + 1);
    i.payload = std::move(plus);
    Value times(i.payload.as<std::int64_t>() * 2);
    i.payload = std::move(times);
    if (multiple_of_4(i)) {
      i.route = "four";
      four.push_back(std::move(i));
    } else {
      rest.push_back(std::move(i));
    }
  }
  const auto t1 = bench_clock::now();
  if (four.size() + rest.size() != native_items) std::abort();
  return std::chrono::duration<double>(t1 - t0).count();
}

void pipe_native(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(run_pipe());
  state.SetItemsProcessed(state.iterations() * native_items);
}
BENCHMARK(pipe_native)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void loop_native(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(run_loop());
  state.SetItemsProcessed(state.iterations() * native_items);
}
BENCHMARK(loop_native)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void pipe_native_overhead(benchmark::State& state) {
  for (auto _ : state) {
    const double pipe = run_pipe();
    const double loop = run_loop();
    state.SetIterationTime(std::max(pipe - loop, 0.0) / static_cast<double>(native_items));
  }
}
BENCHMARK(pipe_native_overhead)->Iterations(1)->UseManualTime()->Unit(benchmark::kNanosecond);

// --- through a broker ---

Broker& broker() {
  static const std::unique_ptr<Broker> b = bench::start_broker("pbench");
  return *b;
}

std::string function_name() {
  return bench::function_name("test:identity");
}

void pipe_python(benchmark::State& state) {
  const std::string fn = function_name();
  const auto colon = fn.find(':');
  python_options py;
  py.module = fn.substr(0, colon);
  py.function = fn.substr(colon + 1);
  py.batch_size = batch_size;
  py.max_in_flight = in_flight;
  Pipe p("bench_python");
  p.native("plus", [](Item& i, Context&) -> step { return i.payload.as<std::int64_t>() + 1; })
      .python("model", py)
      .router("route", {{[](const Item& i, const Context&) { return multiple_of_4(i); }, "four"}})
      .output("four");
  Broker& b = broker();
  for (auto _ : state) {
    auto r = run(b, p, input(python_items)).value();
    if (!r.ok() || r.outputs["four"].size() + r.outputs["default"].size() != python_items) {
      state.SkipWithError("the pipe lost items");
    }
  }
  state.SetItemsProcessed(state.iterations() * python_items);
}
BENCHMARK(pipe_python)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void dispatch_python(benchmark::State& state) {
  job_options o;
  o.function = function_name();
  o.batching = fixed_batch{batch_size};
  o.max_in_flight = in_flight;
  Broker& b = broker();
  for (auto _ : state) {
    auto r = dispatch(b, input(python_items), o).value();
    if (r.results.size() != python_items) state.SkipWithError("dispatch lost items");
  }
  state.SetItemsProcessed(state.iterations() * python_items);
}
BENCHMARK(dispatch_python)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

// The embedded broker logs through spdlog's default logger, to stdout: send
// it to stderr, so stdout holds only the report (JSON for bench_report.py).
int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("bench_pipe"));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
