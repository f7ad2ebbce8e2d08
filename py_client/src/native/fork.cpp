#include "fork.hpp"

#include <pthread.h>

namespace slither::py {

std::atomic<std::uint64_t> fork_count{0};

namespace {

// Registered at load time, so a fork before the first handle is made still counts.
[[maybe_unused]] const bool registered = [] {
  ::pthread_atfork(nullptr, nullptr, [] { fork_count.fetch_add(1, std::memory_order_relaxed); });
  return true;
}();

}  // namespace
}  // namespace slither::py
