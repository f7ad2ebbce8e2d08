// Open-file-description locks (F_OFD_SETLK): the kernel-held tokens that say
// a writer or a reader is alive. Such a lock belongs to an open file
// description, not to a process: it is released when the last reference to
// that description goes, which happens on exit, SIGKILL and exec (our
// descriptors are close-on-exec, and exec drops every mapping), and never
// because some other descriptor of the same file is closed. Both descriptors
// and mappings hold such references, and fork() copies both: fork handlers
// close the inherited descriptors in the child and remap what it inherited
// from its own descriptions (fork.cpp).
#pragma once

#include <cstdint>

namespace slither::shm::detail {

/// Takes a write lock on bytes [start, start + length) through `fd` without
/// waiting. Returns 0, or the errno value (EAGAIN: another description holds it).
int ofd_try_lock(int fd, std::uint64_t start, std::uint64_t length) noexcept;

/// Releases this description's lock on those bytes.
void ofd_unlock(int fd, std::uint64_t start, std::uint64_t length) noexcept;

/// What `ofd_test` found.
enum class lock_seen : std::uint8_t {
  free,     ///< no other open file description holds a lock there
  held,     ///< another one does
  unknown,  ///< the test itself failed: callers treat this as `held`
};

/// Whether an open file description other than `fd`'s holds a lock on those bytes.
lock_seen ofd_test(int fd, std::uint64_t start, std::uint64_t length) noexcept;

}  // namespace slither::shm::detail
