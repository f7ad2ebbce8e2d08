#include "worker_process.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>

#include "broker_log.hpp"

namespace slither::detail {
namespace {

void close_fd(int& fd) noexcept {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// pidfd_open(2) by its number: glibc's wrapper came late (2.36).
int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

// In the child, before exec: async-signal-safe calls only.
[[noreturn]] void child_fail(int out, const char* what) noexcept {
  const int err = errno;
  char digits[16];
  int n = 0;
  for (int v = err; n == 0 || v > 0; v /= 10) digits[n++] = static_cast<char>('0' + v % 10);
  const char prefix[] = "slither: cannot start the worker: ";
  (void)!::write(out, prefix, sizeof prefix - 1);
  (void)!::write(out, what, std::strlen(what));
  (void)!::write(out, ": errno ", 8);
  while (n > 0) (void)!::write(out, &digits[--n], 1);
  (void)!::write(out, "\n", 1);
  ::_exit(127);
}

void close_from(int lowest) noexcept {
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, static_cast<unsigned>(lowest), ~0U, 0U) == 0) return;
#endif
  const long max = ::sysconf(_SC_OPEN_MAX);
  for (long fd = lowest; fd < (max > 0 ? max : 65536); ++fd) ::close(static_cast<int>(fd));
}

}  // namespace

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
  }
  return "ended with wait status " + std::to_string(status);
}

result<std::filesystem::path> find_program(const std::string& program) {
  if (program.empty()) return fail(errc::invalid_argument, "an empty program name");
  if (program.find('/') != std::string::npos) {
    if (::access(program.c_str(), X_OK) != 0) {
      return fail(errc::not_found, "program '" + program + "' is not an executable file");
    }
    return std::filesystem::absolute(program);
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) dir = ".";
    const auto candidate = std::filesystem::path(dir) / program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return std::filesystem::absolute(candidate);
    }
  }
  return fail(errc::not_found, "program '" + program + "' is not in PATH");
}

result<child_process> child_process::spawn(const spawn_spec& spec) {
  if (spec.argv.empty()) return fail(errc::invalid_argument, "a worker command with no program");
  auto program = find_program(spec.argv[0]);
  if (!program) return std::move(program).error();
  // Everything the child needs, built before the fork.
  const std::string exe = program->string();
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));  // NOLINT
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));  // NOLINT
  envp.push_back(nullptr);
  const std::string cwd = spec.cwd.string();

  int pipe_fds[2] = {-1, -1};
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return fail(errc::io_error,
                std::string("cannot make a pipe for a worker: ") + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return fail(errc::io_error, std::string("cannot fork a worker: ") + std::strerror(err));
  }
  if (pid == 0) {
    // The child. Die with the thread that forked us, and if it is already
    // gone, at once (the signal would never come).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int out = pipe_fds[1];
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) {
      child_fail(out, "redirecting its input and output");
    }
    close_from(3);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) child_fail(2, cwd.c_str());
    ::execve(exe.c_str(), argv.data(), envp.data());
    child_fail(2, exe.c_str());
  }
  ::close(pipe_fds[1]);
  const int output = pipe_fds[0];
  ::fcntl(output, F_SETFL, ::fcntl(output, F_GETFL) | O_NONBLOCK);
  int pidfd = open_pidfd(pid);
  if (pidfd >= 0) ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  return child_process(pid, pidfd, output);
}

child_process::child_process(child_process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      output_(std::exchange(other.output_, -1)),
      reaped_(std::exchange(other.reaped_, false)) {}

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    release();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    output_ = std::exchange(other.output_, -1);
    reaped_ = std::exchange(other.reaped_, false);
  }
  return *this;
}

child_process::~child_process() {
  release();
}

void child_process::release() noexcept {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
  close_fd(pidfd_);
  close_fd(output_);
  pid_ = -1;
}

int child_process::take_output() noexcept {
  return std::exchange(output_, -1);
}

std::optional<int> child_process::try_reap() noexcept {
  if (pid_ <= 0 || reaped_) return std::nullopt;
  int status = 0;
  pid_t r = 0;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return std::nullopt;
  reaped_ = true;
  close_fd(pidfd_);
  // ECHILD: somebody else reaped it (a SIGCHLD handler set to SIG_IGN).
  return r == pid_ ? status : 0;
}

void child_process::signal(int signo) noexcept {
  // The pid is ours until we reap it: no other process can have taken it.
  if (pid_ > 0 && !reaped_) ::kill(pid_, signo);
}

std::optional<process_stat> read_process_stat(pid_t pid) noexcept {
  try {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    // The whole file, not a line: the command name (field 2) may hold any
    // byte but NUL, a newline too (printed as is), and spaces and
    // parentheses: fields are counted from the last ')'.
    const std::string stat{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    const auto close = stat.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream fields(stat.substr(close + 2));
    std::string state;
    fields >> state;
    if (state == "Z" || state == "X") return std::nullopt;
    process_stat st;
    if (!(fields >> st.ppid)) return std::nullopt;
    std::string skip;
    for (int i = 5; i < 22; ++i) fields >> skip;  // fields 5..21
    if (!(fields >> st.start_time)) return std::nullopt;
    return st;
  } catch (...) {
    return std::nullopt;
  }
}

std::optional<std::uint64_t> process_start_time(pid_t pid) noexcept {
  const auto st = read_process_stat(pid);
  if (!st) return std::nullopt;
  return st->start_time;
}

worker_records::worker_records(std::filesystem::path runtime_dir)
    : dir_(std::move(runtime_dir) / "workers") {}

void worker_records::add(pid_t pid) const {
  std::error_code ec;
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    broker_log().warn("cannot record worker {} in '{}': {}", pid, dir_.string(),
                      std::strerror(errno));
    return;
  }
  const auto start = process_start_time(pid);
  const auto file = dir_ / std::to_string(pid);
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    broker_log().warn("cannot record worker {}: {}", pid, std::strerror(errno));
    return;
  }
  const std::string text = std::to_string(start.value_or(0)) + "\n";
  (void)!::write(fd, text.data(), text.size());
  ::close(fd);
}

void worker_records::remove(pid_t pid) const {
  ::unlink((dir_ / std::to_string(pid)).c_str());
}

void worker_records::close() const noexcept {
  ::rmdir(dir_.c_str());
}

std::size_t worker_records::kill_leftovers() const {
  std::size_t killed = 0;
  std::error_code ec;
  struct stat st {};
  // Only a directory of ours: a record directory is made by a broker of this user.
  if (::lstat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    return 0;
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    char* end = nullptr;
    const long pid = std::strtol(name.c_str(), &end, 10);
    if (end == nullptr || *end != '\0' || pid <= 1) continue;
    std::ifstream in(entry.path());
    std::uint64_t recorded = 0;
    in >> recorded;
    const auto actual = process_start_time(static_cast<pid_t>(pid));
    if (recorded != 0 && actual && *actual == recorded) {
      if (::kill(static_cast<pid_t>(pid), SIGKILL) == 0) {
        ++killed;
        broker_log().warn("killed worker {} left behind by a dead broker", pid);
      }
    }
    ::unlink(entry.path().c_str());
  }
  ::rmdir(dir_.c_str());
  return killed;
}

}  // namespace slither::detail
