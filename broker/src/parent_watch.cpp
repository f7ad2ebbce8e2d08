#include "parent_watch.hpp"

#include <unistd.h>

#include <limits>
#include <string>

#include "worker_process.hpp"

namespace slither::detail {

namespace {

enum class line_end { watched, without_it, unreadable };

// Walks up from this process's parent: whether `pid` is on the line, and
// which process's stat could not be read if that stopped the walk.
line_end find_on_line(pid_t pid, pid_t* unreadable) noexcept {
  pid_t p = ::getppid();
  for (std::size_t depth = 0; p != pid; ++depth) {
    // Pid 1 and the pid-0 parent of a namespace's first process end the line.
    if (p <= 1 || depth >= parent_watch::max_depth) return line_end::without_it;
    const auto st = read_process_stat(p);
    if (!st) {
      *unreadable = p;
      return line_end::unreadable;
    }
    p = st->ppid;
  }
  return line_end::watched;
}

}  // namespace

result<parent_watch> parent_watch::start(std::int64_t pid) {
  const pid_t parent = ::getppid();
  auto refuse = [&](const std::string& why) -> result<parent_watch> {
    return fail(errc::invalid_argument, "parent_pid " + std::to_string(pid) + " " + why +
                                            " (this broker is pid " + std::to_string(::getpid()) +
                                            ", its parent pid " + std::to_string(parent) + ")");
  };
  if (pid <= 0 || pid > std::numeric_limits<pid_t>::max()) {
    return refuse("is not a process id");
  }
  pid_t unreadable = 0;
  switch (find_on_line(static_cast<pid_t>(pid), &unreadable)) {
    case line_end::watched:
      return parent_watch(static_cast<pid_t>(pid));
    case line_end::without_it:
      return refuse("is not the parent of this broker nor an ancestor of it");
    case line_end::unreadable:
      break;
  }
  return refuse("cannot be found among this broker's ancestors: /proc/" +
                std::to_string(unreadable) + "/stat cannot be read");
}

bool parent_watch::holds() const noexcept {
  pid_t unreadable = 0;
  return find_on_line(pid_, &unreadable) != line_end::without_it;
}

}  // namespace slither::detail
