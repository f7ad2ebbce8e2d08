// Child processes for the broker's and dispatch's integration tests: any
// command, and the slither-broker executable.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace slither::test_support {

/// Whether a process's resident memory says anything about its own bounds:
/// AddressSanitizer keeps freed memory in quarantine (256 MiB by default),
/// so in its builds memory bounds are not checked.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool rss_is_meaningful = false;
#else
inline constexpr bool rss_is_meaningful = true;
#endif

/// A child process; killed (SIGKILL) if the test did not see it exit.
class child_process {
 public:
  /// Spawns `args[0]` with `args`, its stderr and stdout appended to `log` (if given).
  explicit child_process(std::vector<std::string> args, const std::filesystem::path& log = {}) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (!log.empty()) {
      posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                       0600);
      posix_spawn_file_actions_adddup2(&actions, 2, 1);
    }
    const int rc = posix_spawn(&pid_, args[0].c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot spawn " + args[0]);
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      (void)wait_exit(std::chrono::seconds(5));
    }
  }

  pid_t pid() const noexcept { return pid_; }
  void signal(int sig) const { ::kill(pid_, sig); }

  /// The exit status (as from waitpid), or nullopt if it still runs after `limit`.
  std::optional<int> wait_exit(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
  }

  /// Resident memory in bytes (from /proc), 0 once gone.
  std::size_t rss_bytes() const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
    }
    return 0;
  }

 private:
  pid_t pid_ = -1;
};

/// slither-broker with a config, runtime directory and namespace, logging to `log`.
inline std::unique_ptr<child_process> spawn_broker(const std::filesystem::path& config,
                                                   const std::filesystem::path& runtime_dir,
                                                   const std::string& ns,
                                                   const std::filesystem::path& log) {
  return std::make_unique<child_process>(
      std::vector<std::string>{SLITHER_BROKER_EXE, "--config", config.string(), "--runtime-dir",
                               runtime_dir.string(), "--namespace", ns, "--log-level", "info"},
      log);
}

/// The whole text of a file (a log).
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace slither::test_support
