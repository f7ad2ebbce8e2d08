// Worker processes the broker starts: fork/exec with a parent-death signal,
// a descriptor to wait on for each child's exit, a pipe of its output, and a
// record in the runtime directory so that a broker starting after a dead one
// can find and kill the workers that one left.
//
// Caveats
// - The parent-death signal (SIGKILL) fires when the *thread* that forked
//   exits: spawn from a thread that lives as long as the workers should (the
//   broker's serving thread).
// - Between fork and exec the child calls only async-signal-safe functions:
//   everything it needs (argv, envp, the resolved program path) is prepared
//   before the fork.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "slither/core/error.hpp"

namespace slither::detail {

/// What to start.
struct spawn_spec {
  /// argv; argv[0] is looked up in PATH unless it holds a '/'.
  std::vector<std::string> argv;
  /// The whole environment, "NAME=value" each.
  std::vector<std::string> env;
  /// Working directory; empty: the broker's.
  std::filesystem::path cwd;
};

/// A child process: its pid, a descriptor that becomes readable when it exits
/// (a pidfd; -1 where the kernel has none, then poll `try_reap`), and the
/// read end of a pipe holding its stdout and stderr. Move-only; the
/// destructor kills and reaps a child still running, so no zombie is left.
class child_process {
 public:
  /// Starts `spec` with PR_SET_PDEATHSIG(SIGKILL), stdin from /dev/null,
  /// stdout and stderr into the output pipe, and no other descriptor.
  /// Errors: `not_found` (no such program), `io_error`.
  static result<child_process> spawn(const spawn_spec& spec);

  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process();

  pid_t pid() const noexcept { return pid_; }
  /// Readable once the child has exited; -1 if unsupported.
  int exit_fd() const noexcept { return pidfd_; }
  /// The read end of the output pipe (non-blocking); -1 once taken.
  int output_fd() const noexcept { return output_; }
  /// Hands the output pipe over (the caller closes it).
  int take_output() noexcept;
  /// The wait status if the child has exited (it is then reaped), else nullopt.
  std::optional<int> try_reap() noexcept;
  /// Sends `signo` unless the child was already reaped.
  void signal(int signo) noexcept;

 private:
  child_process(pid_t pid, int pidfd, int output) noexcept
      : pid_(pid), pidfd_(pidfd), output_(output) {}
  void release() noexcept;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  int output_ = -1;
  bool reaped_ = false;
};

/// "exited with status 3", "killed by signal 9 (Killed)".
std::string describe_exit(int status);

/// The absolute path of `program`: itself if it holds a '/', else the first
/// executable match in $PATH. Errors: `not_found`.
result<std::filesystem::path> find_program(const std::string& program);

/// What /proc/<pid>/stat says of a process.
struct process_stat {
  /// Its parent (field 4).
  pid_t ppid = 0;
  /// Its start time in clock ticks after boot (field 22): with the pid, it
  /// names one process, whose pid may be reused once it is gone.
  std::uint64_t start_time = 0;
};

/// Of process `pid`; nullopt if there is none, or it is a zombie.
std::optional<process_stat> read_process_stat(pid_t pid) noexcept;

/// Start time of process `pid` (see `process_stat`); nullopt if there is
/// none, or it is a zombie.
std::optional<std::uint64_t> process_start_time(pid_t pid) noexcept;

/// The runtime directory's record of the workers a broker spawned: one file
/// per live child, `<dir>/workers/<pid>`, holding its start time.
class worker_records {
 public:
  /// The record directory of `runtime_dir` (created 0700 on first `add`).
  explicit worker_records(std::filesystem::path runtime_dir);

  /// Records a child. Best effort: a record that cannot be written is logged.
  void add(pid_t pid) const;
  /// Forgets a child (it was reaped).
  void remove(pid_t pid) const;
  /// Removes the record directory once it is empty (at stop).
  void close() const noexcept;

  /// Kills (SIGKILL) every recorded process that still runs with the
  /// recorded start time, a dead broker's leftover workers, and removes the
  /// records and directory. Call with the namespace lock held. Returns how
  /// many processes it killed.
  std::size_t kill_leftovers() const;

 private:
  std::filesystem::path dir_;
};

}  // namespace slither::detail
