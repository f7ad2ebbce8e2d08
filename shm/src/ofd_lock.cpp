#include "ofd_lock.hpp"

#include <fcntl.h>

#include <cerrno>

#include "slither/shm/detail/sys.hpp"

namespace slither::shm::detail {

namespace {
struct flock range(short type, std::uint64_t start, std::uint64_t length) noexcept {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(start);
  fl.l_len = static_cast<off_t>(length);
  fl.l_pid = 0;  // required for OFD locks
  return fl;
}
}  // namespace

int ofd_try_lock(int fd, std::uint64_t start, std::uint64_t length) noexcept {
  struct flock fl = range(F_WRLCK, start, length);
  if (sys().ofd_lock(fd, F_OFD_SETLK, &fl) == 0) return 0;
  // EACCES is what some systems report instead of EAGAIN for a held lock.
  return errno == EACCES ? EAGAIN : errno;
}

void ofd_unlock(int fd, std::uint64_t start, std::uint64_t length) noexcept {
  struct flock fl = range(F_UNLCK, start, length);
  (void)sys().ofd_lock(fd, F_OFD_SETLK, &fl);
}

lock_seen ofd_test(int fd, std::uint64_t start, std::uint64_t length) noexcept {
  struct flock fl = range(F_WRLCK, start, length);
  if (sys().ofd_lock(fd, F_OFD_GETLK, &fl) != 0) return lock_seen::unknown;
  if (fl.l_type == F_UNLCK) return lock_seen::free;
  return lock_seen::held;
}

}  // namespace slither::shm::detail
