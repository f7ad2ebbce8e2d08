// Process identity for liveness checks: a pid plus the process start time,
// so a reused pid or a zombie is never mistaken for the original process.
#pragma once

#include <cstdint>
#include <optional>

namespace slither::shm::detail {

/// Start time of a running process (field 22 of /proc/<pid>/stat, in clock
/// ticks since boot); nullopt if there is no such process or it is a zombie.
std::optional<std::uint64_t> process_start_time(std::uint64_t pid) noexcept;

/// True if `pid` runs and started at `start_time` (0: start time unknown,
/// then only the pid is checked).
bool process_alive(std::uint64_t pid, std::uint64_t start_time) noexcept;

/// A number that changes in a child process after every fork(), so objects
/// bound to the process that created them can tell they were inherited.
std::uint64_t fork_generation() noexcept;

/// Start time of the calling process.
std::uint64_t self_start_time() noexcept;

}  // namespace slither::shm::detail
