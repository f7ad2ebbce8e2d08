// data_etl, a Pipe run once per phase: 15,000 rows in 3 schema phases. The
// schema lives in a Store and is hot-swapped with `reload` between phases;
// validate (Python workers) reads it in place and checks and transforms the
// rows; route (router) sends invalid rows to the `invalid` output; the
// totals are audited.
#include <algorithm>
#include <chrono>
#include <map>
#include <string>

#include "registry.hpp"
#include "session.hpp"
#include "slither/broker/pipe.hpp"

namespace slither::examples {
namespace {

int run(const run_options& opts, example_report& report) {
  example_session s("data_etl", opts, report);
  if (!s.generate()) return report.exit_code;
  shm::store_definition etl;
  etl.options.name = "etl";
  etl.tables = {{"schema", shm::table_kind::set, 16}};
  if (!s.start_broker({etl})) return report.exit_code;
  if (!s.warm_up({"data_etl_worker"})) return report.exit_code;

  const auto& schemas = s.data()["schemas"].as<List>();
  const auto& phases = s.data()["phases"].as<List>();
  std::map<std::int64_t, std::int64_t> phase_of;
  for (std::size_t p = 0; p < phases.size(); ++p) {
    for (const auto& row : phases[p].as<List>()) {
      phase_of[row["id"].as<std::int64_t>()] = static_cast<std::int64_t>(p + 1);
    }
  }
  std::map<std::int64_t, int> seen;
  std::vector<std::int64_t> invalid;
  std::int64_t total_cents = 0;
  std::int64_t clean = 0;
  std::int64_t failed = 0;
  bool phase_seen = true;
  Pipe pipe("data_etl");
  pipe.store("etl")
      .python("validate", {.module = "data_etl_worker",
                           .function = "validate",
                           .batch_size = 100,
                           .max_in_flight = 8})
      .router("route",
              {{[](const Item& item, const Context&) { return !item.payload["valid"].as<bool>(); },
                "invalid"}})
      .output("invalid");

  const auto start = std::chrono::steady_clock::now();
  for (std::size_t p = 0; p < phases.size(); ++p) {
    // The swap: readers see the old schema or the new one, never a mix.
    auto swapped = s.broker().write("etl", [&](shm::writer& w) {
      return w.reload("schema", [&](shm::loader& l) { return l.put("current", schemas[p]); });
    });
    if (!swapped) return s.fail("schema reload: " + swapped.error().message);
    auto done = slither::run(s.broker(), pipe, items_of(phases[p]));
    if (!done) return s.fail("pipe: " + done.error().message);
    if (done->error) return s.fail("pipe halted: " + done->error->describe());
    failed += static_cast<std::int64_t>(done->failures.size() + done->skipped.size() +
                                        done->unfinished.size());
    for (const auto& [output, items] : done->outputs) {
      for (const auto& item : items) {
        const Value& out = item.payload;
        const auto id = out["id"].as<std::int64_t>();
        ++seen[id];
        phase_seen = phase_seen && out["schema_version"].as<std::int64_t>() == phase_of[id];
        if (output == "invalid") {
          invalid.push_back(id);
        } else {
          total_cents += out["amount_cents"].as<std::int64_t>();
          ++clean;
        }
      }
    }
    s.out() << "  phase " << p + 1 << " (schema v" << schemas[p]["version"].as<std::int64_t>()
            << "): " << phases[p].size() << " rows, " << done->outputs["invalid"].size()
            << " invalid\n";
  }
  mode_result m;
  m.seconds = seconds_since(start);
  m.items = phase_of.size();
  if (opts.break_invariant) total_cents += 1;
  s.out() << "  outputs: default " << clean << ", invalid " << invalid.size() << "; failed "
          << failed << "; total " << total_cents / 100 << "." << total_cents % 100 << "\n";
  s.fact("outputs", {{"default", clean}, {"invalid", invalid.size()}});

  std::vector<std::int64_t> expected_invalid;
  for (const auto& id : s.data()["expected"]["invalid"].as<List>()) {
    expected_invalid.push_back(id.as<std::int64_t>());
  }
  std::sort(invalid.begin(), invalid.end());
  std::sort(expected_invalid.begin(), expected_invalid.end());
  const bool once = seen.size() == phase_of.size() && failed == 0 &&
                    std::all_of(seen.begin(), seen.end(), [](auto& e) { return e.second == 1; });
  m.invariants = {
      {"every row accounted for once", once},
      {"every row saw its phase's schema", phase_seen},
      {"invalid rows are the broken ones", invalid == expected_invalid},
      {"total of valid amounts",
       total_cents == s.data()["expected"]["total_cents"].as<std::int64_t>()},
  };
  return s.finish(std::move(m));
}

}  // namespace

example data_etl_example() {
  return {"data_etl",
          "15,000 rows, 3 schema phases: the schema hot-swapped in a Store (reload), read in place "
          "by Python workers; invalid rows routed; totals audited",
          run};
}

}  // namespace slither::examples
