// The process a broker lives for (`broker_options::parent_pid`): its parent,
// or an ancestor when wrappers that did not exec stand between them. The
// broker stops once that process is no longer its ancestor.
//
// Judged by parent links, never by the pid alone (kill(pid, 0) succeeds for
// whatever process reuses a dead one's pid): each check walks up from this
// process's parent, and the watch holds while the watched pid is on that
// line. A process that took the pid of a dead one cannot be on it: an
// ancestor is always older than its descendants (a process whose parent
// dies is given to a living ancestor that is a subreaper, or to init, both
// older than the dead one), and the watched process was an ancestor of this
// one at start. Nor is a line followed as it was at start: when a process
// between them dies and its orphan is given to the watched process (a
// subreaper) or to one below it, that process is still an ancestor, and
// the watch holds; a watch of pid 1 holds for ever.
//
// Not PR_SET_PDEATHSIG: it fires when the parent *thread* exits, so a broker
// launched from a short-lived thread of a living process would stop.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>

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

  /// Whether the watched process is still this process's ancestor. A link
  /// that cannot be read (/proc failing, a process exiting as it is read)
  /// counts as holding: only a line of parents that ends without it is
  /// evidence that the process is gone.
  bool holds() const noexcept;

  /// The watched process.
  pid_t pid() const noexcept { return pid_; }

  /// Generations searched for the watched process.
  static constexpr std::size_t max_depth = 64;

 private:
  explicit parent_watch(pid_t pid) : pid_(pid) {}

  pid_t pid_;
};

}  // namespace slither::detail
