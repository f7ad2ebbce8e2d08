#include "fork.hpp"

#include <pthread.h>

#include <atomic>

namespace slither::py {
namespace {

std::atomic<std::uint64_t> forks{0};

// Registered at load time, so a fork before the first handle is made still counts.
const bool registered = [] {
  ::pthread_atfork(nullptr, nullptr, [] { forks.fetch_add(1, std::memory_order_relaxed); });
  return true;
}();

}  // namespace

std::uint64_t fork_generation() noexcept {
  return forks.load(std::memory_order_relaxed);
}

}  // namespace slither::py
