// The process a broker lives for (`broker_options::parent_pid`): its parent,
// or an ancestor when wrappers that did not exec stand between them. The
// broker stops once that process is no longer its ancestor.
//
// Judged by parent links, never by the pid alone (kill(pid, 0) succeeds for
// whatever process reuses a dead one's pid): the line of pids from this
// process's parent up to the watched one is recorded at start, and the watch
// holds while each of them is still the parent of the one below it. A process
// whose parent dies is given another parent at once (init or a subreaper,
// always an older process than the dead one, so never one that took its pid);
// a broken link therefore shows at the next check.
//
// Not PR_SET_PDEATHSIG: it fires when the parent *thread* exits, so a broker
// launched from a short-lived thread of a living process would stop.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "slither/core/error.hpp"

namespace slither::detail {

/// How often a running broker checks its `parent_pid`.
inline constexpr std::chrono::milliseconds parent_check_interval{200};

/// This process's line of ancestors up to a watched one.
class parent_watch {
 public:
  /// Starts watching `pid`, which must be this process's parent or an
  /// ancestor of it (at most `max_depth` generations up). Errors:
  /// `invalid_argument` naming `pid`, this process and its parent when it is
  /// not (it may be gone already), or when an ancestor's parent cannot be
  /// read from /proc on the way.
  static result<parent_watch> start(std::int64_t pid);

  /// Whether the watched process is still this process's ancestor, through
  /// the same line. A link that cannot be read (/proc failing) counts as
  /// holding: only a changed parent is evidence that the process is gone.
  bool holds() const noexcept;

  /// The watched process.
  pid_t pid() const noexcept { return line_.back(); }

  /// Generations searched for the watched process.
  static constexpr std::size_t max_depth = 64;

 private:
  explicit parent_watch(std::vector<pid_t> line) : line_(std::move(line)) {}

  // line_[0]: this process's parent; line_[i + 1]: the parent of line_[i];
  // line_.back(): the watched process.
  std::vector<pid_t> line_;
};

}  // namespace slither::detail
