// How many times this process was fork()ed into being: a handle that saw
// another value was made in an ancestor process and must not be used here.
#pragma once

#include <cstdint>

namespace slither::py {

/// Counts fork()s (pthread_atfork child handler, registered on first call).
/// One relaxed atomic load.
std::uint64_t fork_generation() noexcept;

}  // namespace slither::py
