// What an example reports: Slither's run and the baselines', side by side.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace slither::examples {

/// One way of running an example's work (Slither, or a baseline mode).
struct mode_result {
  std::string mode;
  double seconds = 0;
  /// Input items (documents, rows, images...).
  std::uint64_t items = 0;
  /// Invariant name → held, in the order they were checked.
  std::vector<std::pair<std::string, bool>> invariants;
  /// Peak resident memory, where the example measures it; 0: not measured.
  double peak_rss_mib = 0;

  bool held() const noexcept;
  double throughput() const noexcept { return seconds > 0 ? items / seconds : 0; }
};

/// One example's run.
struct example_report {
  std::string name;
  /// Slither's run (mode "slither"); empty mode: it did not run.
  mode_result slither;
  std::vector<mode_result> baselines;
  /// What the run did, in numbers (counts per output, ...), for --json.
  std::map<std::string, nlohmann::json> facts;
  /// Why the run failed before its checks, if it did.
  std::string error;
  int exit_code = 0;
};

/// Modes whose broken invariant is a bug (Slither's, or the harness's for the
/// safe baselines); `unsafe_threaded` is expected to break some.
bool must_hold(const std::string& mode);

/// Prints Slither's and the baselines' figures as a table.
void print_comparison(const example_report& report, std::ostream& out);

/// The report as JSON (slither-example --json).
nlohmann::json to_json(const example_report& report);

/// Reads the JSON list of modes a baseline script wrote.
std::vector<mode_result> baselines_from_json(const nlohmann::json& modes);

}  // namespace slither::examples
