// The seam through which the store makes the system calls that can fail for
// reasons outside the program (a full /dev/shm, a descriptor table at its
// limit), so tests can inject those failures.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

namespace slither::shm::detail {

/// System calls the store makes through this seam.
struct sys_calls {
  /// Reserves a segment's pages; returns 0 or an errno value (ENOSPC).
  int (*fallocate)(int fd, off_t offset, off_t length);
  /// Hands a range of a segment's pages back (FALLOC_FL_PUNCH_HOLE, size
  /// kept); returns 0 or an errno value.
  int (*punch_hole)(int fd, off_t offset, off_t length);
  /// Reports free space of the file system holding `fd`; 0 or -1 with errno set.
  int (*fstatvfs)(int fd, struct statvfs* out);
  /// Describes an object before it is mapped; 0 or -1 with errno set.
  int (*fstat)(int fd, struct stat* out);
  /// `fcntl(fd, cmd, lock)` for the OFD lock commands (F_OFD_SETLK,
  /// F_OFD_GETLK); 0 or -1 with errno set.
  int (*ofd_lock)(int fd, int cmd, struct flock* lock);
  /// membarrier(2) `cmd` with `flags`: what the call returns (a mask for
  /// MEMBARRIER_CMD_QUERY, else 0) or -1 with errno set (epoch.hpp).
  int (*membarrier)(int cmd, unsigned flags);
};

/// The calls in use, initially the real ones. Tests may replace entries and
/// must restore them; not thread-safe.
sys_calls& sys() noexcept;

}  // namespace slither::shm::detail
