#include "parent_watch.hpp"

#include <unistd.h>

#include <limits>
#include <string>

#include "worker_process.hpp"

namespace slither::detail {

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
  std::vector<pid_t> line{parent};
  while (line.back() != pid) {
    // Pid 1 and the pid-0 parent of a namespace's first process end the line.
    if (line.back() <= 1 || line.size() > max_depth) {
      return refuse("is not the parent of this broker nor an ancestor of it");
    }
    const auto st = read_process_stat(line.back());
    if (!st) {
      return refuse("cannot be found among this broker's ancestors: /proc/" +
                    std::to_string(line.back()) + "/stat cannot be read");
    }
    line.push_back(st->ppid);
  }
  return parent_watch(std::move(line));
}

bool parent_watch::holds() const noexcept {
  if (::getppid() != line_.front()) return false;
  for (std::size_t i = 0; i + 1 < line_.size(); ++i) {
    const auto st = read_process_stat(line_[i]);
    if (!st) return true;  // cannot tell
    if (st->ppid != line_[i + 1]) return false;
  }
  return true;
}

}  // namespace slither::detail
