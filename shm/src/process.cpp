#include "process.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <string>
#include <string_view>

#include "slither/shm/detail/sys.hpp"

namespace slither::shm::detail {

sys_calls& sys() noexcept {
  static sys_calls calls{
      [](int fd, off_t offset, off_t length) { return ::posix_fallocate(fd, offset, length); },
      [](int fd, struct statvfs* out) { return ::fstatvfs(fd, out); },
  };
  return calls;
}

std::optional<std::uint64_t> process_start_time(std::uint64_t pid) noexcept {
  if (pid == 0) return std::nullopt;
  const std::string p = "/proc/" + std::to_string(pid) + "/stat";
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[1024];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof(buf) - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  // The command name (field 2) may contain spaces and parentheses: fields
  // 3 onwards start after its last ')'.
  std::string_view text(buf, static_cast<std::size_t>(n));
  const auto close_paren = text.rfind(')');
  if (close_paren == std::string_view::npos) return std::nullopt;
  text.remove_prefix(close_paren + 1);
  int field = 2;
  std::size_t pos = 0;
  while (pos < text.size()) {
    while (pos < text.size() && text[pos] == ' ') ++pos;
    const std::size_t end = text.find(' ', pos);
    const std::string_view token =
        text.substr(pos, end == std::string_view::npos ? end : end - pos);
    ++field;
    if (field == 3 && (token == "Z" || token == "X" || token == "x")) return std::nullopt;
    if (field == 22) {
      std::uint64_t value = 0;
      const auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
      if (ec != std::errc{}) return std::nullopt;
      return value;
    }
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return std::nullopt;
}

bool process_alive(std::uint64_t pid, std::uint64_t start_time) noexcept {
  const auto actual = process_start_time(pid);
  if (!actual) return false;
  return start_time == 0 || *actual == start_time;
}

namespace {
std::atomic<std::uint64_t> generation{0};
}  // namespace

std::uint64_t fork_generation() noexcept {
  static const int registered = ::pthread_atfork(
      nullptr, nullptr, [] { generation.fetch_add(1, std::memory_order_relaxed); });
  (void)registered;
  return generation.load(std::memory_order_relaxed);
}

std::uint64_t self_start_time() noexcept {
  // Not cached: a child created by fork() must see its own start time.
  return process_start_time(static_cast<std::uint64_t>(::getpid())).value_or(0);
}

}  // namespace slither::shm::detail
