// Helpers for the multi-process Store tests: state shared with children,
// children that run a function, and waiting on conditions with deadlines.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <new>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include "slither/core/value.hpp"

namespace slither::shm::testing {

using namespace std::chrono_literals;

/// Flags and counters shared between the test and its children.
struct shared_state {
  std::atomic<std::uint64_t> ready{0};
  std::atomic<std::uint64_t> stop{0};
  std::atomic<std::uint64_t> phase{0};
  std::atomic<std::uint64_t> acked{0};
  std::atomic<std::uint64_t> reads{0};
  std::atomic<std::uint64_t> bad{0};
};

class shared_block {
 public:
  shared_block() {
    void* p = ::mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    s_ = new (p) shared_state{};
  }
  ~shared_block() { ::munmap(s_, sizeof(shared_state)); }
  shared_state* operator->() const { return s_; }
  shared_state* get() const { return s_; }

 private:
  shared_state* s_;
};

/// The children a test process started and has not waited for yet.
struct child_list {
  pid_t owner = 0;
  std::vector<pid_t> pids;
};
inline child_list& children() {
  static child_list list;
  return list;
}

/// SIGKILLs and reaps the children a test left running (a failed ASSERT
/// returns before it waits for them), so that none outlives the test process
/// holding its output open.
inline void kill_leftover_children() {
  child_list& list = children();
  if (list.owner != ::getpid()) return;  // inherited through fork(): not ours
  for (pid_t p : list.pids) {
    ::kill(p, SIGKILL);
    ::waitpid(p, nullptr, 0);
  }
  list.pids.clear();
}

/// Records a child of this process, killed at exit unless waited for.
inline pid_t track(pid_t pid) {
  child_list& list = children();
  if (list.owner != ::getpid()) {
    static const bool registered = std::atexit(kill_leftover_children) == 0;
    (void)registered;
    list.owner = ::getpid();
    list.pids.clear();
  }
  if (pid > 0) list.pids.push_back(pid);
  return pid;
}

/// Runs `fn` in a child process, which exits with its return value (or 99 if it threw).
inline pid_t spawn(const std::function<int()>& fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = fn();
    } catch (...) {
    }
    ::_exit(rc);
  }
  return track(pid);
}

/// Waits for a child; its exit code, or 128 + signal if a signal ended it.
inline int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::erase(children().pids, pid);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

inline bool wait_until(const std::function<bool()>& cond, std::chrono::seconds limit = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

/// A u8 array of `bytes` bytes whose contents depend on `seed`.
inline ndarray pattern(std::uint64_t seed, std::uint64_t bytes) {
  auto a = ndarray::zeros(dtype::u8, {bytes});
  auto v = a.mutable_values<std::uint8_t>();
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint8_t>(i * 7 + seed * 13);
  return a;
}

/// True if `a` is `pattern(seed, a.nbytes())`.
inline bool is_pattern(std::uint64_t seed, const ndarray& a) {
  const auto v = a.values<std::uint8_t>();
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] != static_cast<std::uint8_t>(i * 7 + seed * 13)) return false;
  }
  return true;
}

}  // namespace slither::shm::testing
