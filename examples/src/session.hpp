// One example's run: a scratch directory, the data its Python generator
// made, an embedded broker with a pool of Python workers, the baselines.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/timer/progress_display.hpp>

#include "registry.hpp"
#include "report.hpp"
#include "slither/broker/broker.hpp"
#include "slither/broker/dispatch.hpp"
#include "slither/core/item.hpp"
#include "slither/core/value.hpp"

namespace slither::examples {

/// Where the examples' sources are: $SLITHER_EXAMPLES_DIR, else the source tree.
std::filesystem::path examples_dir();
/// The Python interpreter for generators, baselines and workers:
/// $SLITHER_PYTHON, else `python3` from PATH (scripts/example.sh puts .venv first).
std::string python();
/// Runs a program and waits for it; its stdout goes to our stderr when
/// `stdout_to_stderr` (so --json keeps stdout for the summary). Returns its
/// exit status (128 + signal if killed), or an error if it could not start.
result<int> run_process(const std::vector<std::string>& argv, bool stdout_to_stderr);

/// Seconds since `start`.
double seconds_since(std::chrono::steady_clock::time_point start);

/// A progress bar on stderr, shown only when stderr is a terminal.
class progress_bar {
 public:
  explicit progress_bar(std::size_t total);
  /// One more item done.
  void tick();

 private:
  std::unique_ptr<boost::timer::progress_display> bar_;
};

/// One example's run, from generating its data to printing its report.
///
/// Caveats: the broker and its workers live as long as the session; the
/// scratch directory (data, runtime directory, outputs) is removed with it.
class example_session {
 public:
  example_session(std::string name, const run_options& options, example_report& report);
  ~example_session();
  example_session(const example_session&) = delete;
  example_session& operator=(const example_session&) = delete;

  /// Runs `<name>_data.py` into the scratch directory and decodes its data.
  bool generate();
  /// Starts an embedded broker with `stores` and a pool of Python workers
  /// (`options.workers`, the examples' Python directory on their path).
  bool start_broker(std::vector<shm::store_definition> stores);

  /// Has every worker import `modules` (the example's worker module) before
  /// the timed run, as the baselines import theirs before their timers
  /// start: a job of single-item batches, as many as the pool holds credits.
  bool warm_up(const std::vector<std::string>& modules);

  /// Records a failure before the checks; returns the exit code to return.
  int fail(const std::string& why);
  /// Records Slither's run and checks. With `options.break_invariant` the
  /// caller has corrupted a result first. Then runs the baselines (unless
  /// --no-baseline), prints the comparison, and returns the exit code.
  int finish(mode_result slither);

  const Value& data() const noexcept { return data_; }
  const std::filesystem::path& scratch() const noexcept { return scratch_; }
  Broker& broker() noexcept { return *broker_; }
  const run_options& options() const noexcept { return options_; }
  std::ostream& out() const noexcept { return *options_.out; }
  /// Records a number the run produced (counts per output, ...).
  void fact(const std::string& key, nlohmann::json value);

 private:
  std::string name_;
  run_options options_;
  example_report& report_;
  std::filesystem::path scratch_;
  std::filesystem::path data_file_;
  Value data_;
  std::unique_ptr<Broker> broker_;
  bool missing_package_ = false;
};

/// Items from a list of payloads, with ids 0..n-1.
std::vector<Item> items_of(const Value& list);

/// Peak resident memory of this process, in MiB.
double peak_rss_mib();

}  // namespace slither::examples
