// The seam through which the store makes the system calls that can fail for
// reasons outside the program (a full /dev/shm), so tests can inject them.
#pragma once

#include <sys/statvfs.h>
#include <sys/types.h>

namespace slither::shm::detail {

/// System calls used when a segment is created.
struct sys_calls {
  /// Reserves a segment's pages; returns 0 or an errno value (ENOSPC).
  int (*fallocate)(int fd, off_t offset, off_t length);
  /// Reports free space of the file system holding `fd`; 0 or -1 with errno set.
  int (*fstatvfs)(int fd, struct statvfs* out);
};

/// The calls in use, initially the real ones. Tests may replace entries and
/// must restore them; not thread-safe.
sys_calls& sys() noexcept;

}  // namespace slither::shm::detail
