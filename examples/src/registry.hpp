// The demos that slither-example can run, by name.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace slither::examples {

/// One runnable demo.
struct example {
  std::string name;
  std::string summary;
  /// Runs the demo; returns a process exit code.
  std::function<int()> run;
};

/// Every demo, in the order `--all` runs them.
const std::vector<example>& all_examples();

}  // namespace slither::examples
