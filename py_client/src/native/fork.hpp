// How many times this process was fork()ed into being: a handle that saw
// another value was made in an ancestor process and must not be used here.
#pragma once

#include <atomic>
#include <cstdint>

namespace slither::py {

/// Incremented in every fork() child (a pthread_atfork handler registered when
/// the extension loads, in fork.cpp).
extern std::atomic<std::uint64_t> fork_count;

/// The number of fork()s that led to this process: one relaxed load, cheap
/// enough for every read.
inline std::uint64_t fork_generation() noexcept {
  return fork_count.load(std::memory_order_relaxed);
}

}  // namespace slither::py
