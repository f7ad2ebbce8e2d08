// batch_stats: 2,000 sensor datasets, 50 of them poison, through Python
// workers computing Welford statistics; `on_error: skip` isolates the poison
// ones. The same job runs with each batching strategy (fixed, weighted by
// dataset length, partitioned by sensor), and the results merge (Chan et
// al.) into statistics that must match a two-pass computation. Each run is a
// Pipe whose python stage batches with one strategy.
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <string>

#include "registry.hpp"
#include "session.hpp"
#include "slither/broker/pipe.hpp"

namespace slither::examples {
namespace {

struct welford {
  double n = 0;
  double mean = 0;
  double m2 = 0;

  void merge(const welford& o) {
    if (o.n == 0) return;
    const double total = n + o.n;
    const double delta = o.mean - mean;
    mean += delta * o.n / total;
    m2 += o.m2 + delta * delta * n * o.n / total;
    n = total;
  }
};

bool close(double a, double b) {
  return std::fabs(a - b) <= 1e-9 * std::max(1.0, std::fabs(b));
}

struct strategy_run {
  std::string name;
  python_options stage;
};

int run(const run_options& opts, example_report& report) {
  example_session s("batch_stats", opts, report);
  if (!s.generate()) return report.exit_code;
  if (!s.start_broker({})) return report.exit_code;
  if (!s.warm_up({"batch_stats_worker"})) return report.exit_code;

  const auto& datasets = s.data()["datasets"].as<List>();
  std::set<std::int64_t> poison;
  for (const auto& id : s.data()["poison"].as<List>()) poison.insert(id.as<std::int64_t>());

  // What the merged statistics must come to: two passes over the healthy values.
  welford expected;
  {
    long double sum = 0;
    std::size_t n = 0;
    for (const auto& ds : datasets) {
      if (poison.contains(ds["id"].as<std::int64_t>())) continue;
      for (const auto& x : ds["values"].as<List>()) sum += x.as<double>(), ++n;
    }
    expected.n = static_cast<double>(n);
    expected.mean = static_cast<double>(sum / n);
    long double m2 = 0;
    for (const auto& ds : datasets) {
      if (poison.contains(ds["id"].as<std::int64_t>())) continue;
      for (const auto& x : ds["values"].as<List>()) {
        const long double d = x.as<double>() - expected.mean;
        m2 += d * d;
      }
    }
    expected.m2 = static_cast<double>(m2);
  }

  const std::vector<strategy_run> strategies = {
      {"fixed",
       {.module = "batch_stats_worker",
        .function = "welford",
        .batch_size = 32,
        .max_in_flight = 8}},
      {"weighted",
       {.module = "batch_stats_worker",
        .function = "welford",
        .batch_size = 64,
        .max_in_flight = 8,
        .weight_fn =
            [](const Item& item) { return static_cast<double>(item.payload["values"].size()); },
        .max_weight = 16000}},
      {"key_partition",
       {.module = "batch_stats_worker",
        .function = "welford",
        .batch_size = 32,
        .max_in_flight = 8,
        .key_fn = [](const Item& item) { return item.payload["sensor"].as<std::string>(); }}},
  };
  mode_result m;
  m.items = datasets.size();
  bool isolated = true;
  bool complete = true;
  bool statistics = true;
  nlohmann::json per_strategy = nlohmann::json::object();
  for (const auto& strategy : strategies) {
    Pipe pipe("batch_stats");
    pipe.python("welford", strategy.stage).on_error("welford", on_error::skip());
    const auto start = std::chrono::steady_clock::now();
    auto done = slither::run(s.broker(), pipe, items_of(s.data()["datasets"]));
    if (!done) return s.fail("pipe (" + strategy.name + "): " + done.error().message);
    if (done->error) {
      return s.fail("pipe (" + strategy.name + ") halted: " + done->error->describe());
    }
    const double seconds = seconds_since(start);
    if (strategy.name == "fixed") m.seconds = seconds;

    // The skipped ones: items are numbered by their place in the input.
    std::set<std::int64_t> skipped;
    for (const auto& f : done->failures) {
      if (f.item < datasets.size()) skipped.insert(datasets[f.item]["id"].as<std::int64_t>());
    }
    std::size_t ok = 0;
    welford overall;
    std::map<std::string, welford> by_sensor;
    for (const Item& item : done->outputs["default"]) {
      const Value& out = item.payload;
      const welford w{static_cast<double>(out["n"].as<std::int64_t>()), out["mean"].as<double>(),
                      out["m2"].as<double>()};
      overall.merge(w);
      by_sensor[out["sensor"].as<std::string>()].merge(w);
      ++ok;
    }
    if (opts.break_invariant && strategy.name == "fixed") skipped.insert(-1);
    isolated = isolated && skipped == poison;
    complete = complete && ok + poison.size() == datasets.size();
    statistics = statistics && overall.n == expected.n && close(overall.mean, expected.mean) &&
                 close(overall.m2, expected.m2);
    char line[200];
    std::snprintf(line, sizeof line,
                  "  %-14s %.3f s: %zu datasets, %zu poison skipped; mean %.6f, variance %.6f "
                  "over %.0f values in %zu sensors\n",
                  strategy.name.c_str(), seconds, ok, skipped.size(), overall.mean,
                  overall.n > 1 ? overall.m2 / (overall.n - 1) : 0.0, overall.n, by_sensor.size());
    s.out() << line;
    per_strategy[strategy.name] = {{"seconds", seconds}, {"ok", ok}, {"skipped", skipped.size()}};
  }
  s.fact("strategies", per_strategy);
  m.invariants = {
      {"poison datasets skipped, and only they", isolated},
      {"every healthy dataset has its statistics", complete},
      {"merged statistics match a two-pass computation", statistics},
  };
  return s.finish(std::move(m));
}

}  // namespace

example batch_stats_example() {
  return {"batch_stats",
          "2,000 datasets (50 poison) → Welford statistics in Python workers, poison skipped; "
          "fixed, weighted and key-partition batching",
          run};
}

}  // namespace slither::examples
