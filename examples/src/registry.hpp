// The demos that slither-example can run, by name.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "report.hpp"

namespace slither::examples {

/// How one run of slither-example was asked to go (its command line).
struct run_options {
  /// Fraction of each example's full size (0.1 in CI).
  double scale = 1.0;
  /// Python workers in Slither's pool, and threads or processes of the baselines.
  unsigned workers = 2;
  /// Run the pure-Python baselines beside Slither.
  bool baseline = true;
  /// Corrupt one of Slither's results before the invariant checks, to show
  /// (and test) that a broken invariant fails the example.
  bool break_invariant = false;
  /// Human-readable output goes here (stderr with --json, else stdout).
  std::ostream* out = nullptr;
};

/// One runnable demo.
struct example {
  std::string name;
  std::string summary;
  /// Runs the demo, filling `report`; returns a process exit code (0: every
  /// invariant held; 1: one broke or the run failed; 3: a Python package is
  /// missing).
  std::function<int(const run_options&, example_report& report)> run;
};

/// Every demo, in the order `--all` runs them.
const std::vector<example>& all_examples();

}  // namespace slither::examples
