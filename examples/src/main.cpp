// slither-example: runs the demos on an embedded broker, beside their
// pure-Python baselines.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>

#include "registry.hpp"

int main(int argc, char** argv) {
  using namespace slither::examples;
  CLI::App app{"Runs Slither's demos on an embedded broker, beside pure-Python baselines.",
               "slither-example"};
  bool all = false;
  bool list = false;
  bool no_baseline = false;
  bool json = false;
  run_options options;
  std::vector<std::string> names;
  std::string log_level = "warn";
  app.add_flag("--all", all, "Run feature_store and the five demos in turn");
  app.add_flag("--list", list, "List the examples and exit");
  app.add_flag("--no-baseline", no_baseline, "Skip the pure-Python baselines");
  app.add_option("--workers", options.workers, "Python workers (and baseline threads/processes)")
      ->check(CLI::Range(1u, 64u));
  app.add_option("--scale", options.scale, "Fraction of each demo's full size")
      ->check(CLI::Range(0.001, 100.0));
  app.add_option("--log-level", log_level, "The embedded broker's log level (to stderr)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_flag("--json", json, "Print a machine-readable summary on stdout (the rest on stderr)");
  // Tests use it to see that a broken invariant fails the example.
  app.add_flag("--break-invariant", options.break_invariant,
               "Corrupt one of Slither's results before the checks")
      ->group("");
  app.add_option("names", names, "Examples to run, by name");
  CLI11_PARSE(app, argc, argv);
  options.baseline = !no_baseline;
  // The broker logs to stderr, so that stdout holds only the demos' output (or the JSON).
  spdlog::set_default_logger(spdlog::stderr_color_mt("slither-example"));
  spdlog::set_level(spdlog::level::from_str(log_level));
  options.out = json ? &std::cerr : &std::cout;

  if (list || (!all && names.empty())) {
    for (const auto& e : all_examples()) std::cout << e.name << "  " << e.summary << "\n";
    return 0;
  }
  for (const auto& n : names) {
    const bool known = std::any_of(all_examples().begin(), all_examples().end(),
                                   [&](const auto& e) { return e.name == n; });
    if (!known) {
      std::cerr << "slither-example: no example named '" << n << "' (see --list)\n";
      return 2;
    }
  }
  int worst = 0;
  nlohmann::json summary = {{"scale", options.scale},
                            {"workers", options.workers},
                            {"examples", nlohmann::json::array()}};
  for (const auto& e : all_examples()) {
    if (!all && std::find(names.begin(), names.end(), e.name) == names.end()) continue;
    *options.out << "== " << e.name << ": " << e.summary << "\n" << std::flush;
    example_report report;
    report.name = e.name;
    report.exit_code = e.run(options, report);
    worst = std::max(worst, report.exit_code);
    summary["examples"].push_back(to_json(report));
    *options.out << std::flush;
  }
  if (json) std::cout << summary.dump(2) << "\n";
  return worst;
}
