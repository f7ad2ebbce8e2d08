// The dispatch engine's own overhead per batch: one batch offered, sent,
// answered (with a credit back) and taken, on an engine with 4 workers,
// against a harness that does the same work (items in, per-item results
// built, results out) with no engine. The difference is what the engine
// costs. local_pool adds real threads and locks, for scale.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <span>
#include <vector>

#include "slither/core/dispatch.hpp"
#include "slither/core/local_pool.hpp"

namespace {

using namespace slither;

std::vector<Item> make_items(std::size_t n) {
  std::vector<Item> out;
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(wrap(Value(static_cast<std::int64_t>(i)), i));
  }
  return out;
}

// What any executor does for a batch: one result per item.
std::vector<item_result> answer(const std::vector<Item>& items) {
  std::vector<item_result> results;
  results.reserve(items.size());
  for (const auto& item : items) results.emplace_back(item.payload);
  return results;
}

void engine_round_trip(benchmark::State& state, std::size_t batch) {
  engine_options eo;
  eo.verify_accounting = false;
  dispatch_engine engine(eo);
  auto now = dispatch_clock::now();
  for (worker_id w = 1; w <= 4; ++w) (void)engine.handle(worker_joined{w, 2, false}, now);
  dispatch_options o;
  o.function = "bench";
  o.batching = fixed_batch{batch};
  const job_id job = engine.open_job(o, now).value();
  const std::vector<Item> source = make_items(batch);
  std::vector<batch_task> tasks;
  while (engine.next_action()) {
  }
  for (auto _ : state) {
    std::vector<Item> items = source;
    (void)engine.offer(job, items, now);
    while (auto a = engine.next_action()) {
      if (auto* t = std::get_if<batch_task>(&*a)) tasks.push_back(std::move(*t));
    }
    for (auto& t : tasks) {
      (void)engine.handle(batch_completed{t.worker, t.batch, t.attempt, answer(*t.items)}, now);
      (void)engine.handle(credit_granted{t.worker, 1}, now);
    }
    tasks.clear();
    auto out = engine.take_results(job);
    benchmark::DoNotOptimize(out.data());
    while (engine.next_action()) {
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

// The same items and results, with no engine in between.
void harness_round_trip(benchmark::State& state, std::size_t batch) {
  const std::vector<Item> source = make_items(batch);
  for (auto _ : state) {
    auto items = std::make_shared<const std::vector<Item>>(source);
    auto results = answer(*items);
    std::vector<dispatch_result> out;
    out.reserve(results.size());
    for (std::size_t i = 0; i < results.size(); ++i) {
      Item item;
      item.id = (*items)[i].id;
      item.payload = std::get<Value>(std::move(results[i]));
      item.meta = (*items)[i].meta;
      out.push_back({std::move(item), item_status::ok, nullptr});
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

void dispatch_engine_batch1(benchmark::State& state) {
  engine_round_trip(state, 1);
}
void dispatch_engine_batch64(benchmark::State& state) {
  engine_round_trip(state, 64);
}
void dispatch_harness_batch1(benchmark::State& state) {
  harness_round_trip(state, 1);
}
void dispatch_harness_batch64(benchmark::State& state) {
  harness_round_trip(state, 64);
}

// 64k items through 2 worker threads running a trivial handler.
void dispatch_local_pool_batch64(benchmark::State& state) {
  local_pool_options po;
  po.workers = 2;
  po.engine.verify_accounting = false;
  auto pool = local_pool::create(po).value();
  pool.add_function("echo", [](std::span<const Item> items, const batch_context&) {
    std::vector<result<Value>> out;
    out.reserve(items.size());
    for (const auto& i : items) out.emplace_back(i.payload);
    return out;
  });
  dispatch_options o;
  o.function = "echo";
  o.batching = fixed_batch{64};
  const std::vector<Item> source = make_items(65536);
  for (auto _ : state) {
    auto report = pool.run(o, source).value();
    benchmark::DoNotOptimize(report.results.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(source.size()));
}

BENCHMARK(dispatch_engine_batch1);
BENCHMARK(dispatch_harness_batch1);
BENCHMARK(dispatch_engine_batch64)->Unit(benchmark::kMicrosecond);
BENCHMARK(dispatch_harness_batch64)->Unit(benchmark::kMicrosecond);
BENCHMARK(dispatch_local_pool_batch64)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
