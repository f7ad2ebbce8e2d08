#include "runtime_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

namespace slither::detail {
namespace {

error_info io_fail(const std::string& what, int err) {
  return fail(errc::io_error, what + ": " + std::strerror(err));
}

}  // namespace

result<void> ensure_private_dir(const std::filesystem::path& dir) {
  if (dir.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(dir.parent_path(), ec);
    if (ec) {
      return fail(errc::io_error,
                  "cannot create '" + dir.parent_path().string() + "': " + ec.message());
    }
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return io_fail("cannot create runtime directory '" + dir.string() + "'", errno);
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return io_fail("cannot stat '" + dir.string() + "'", errno);
  if (!S_ISDIR(st.st_mode)) {
    return fail(errc::invalid_argument,
                "runtime directory '" + dir.string() + "' is not a directory (or is a symlink)");
  }
  if (st.st_uid != ::geteuid()) {
    return fail(errc::invalid_argument, "runtime directory '" + dir.string() +
                                            "' is owned by uid " + std::to_string(st.st_uid) +
                                            ", not by this user (uid " +
                                            std::to_string(::geteuid()) + ")");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(errc::invalid_argument, "runtime directory '" + dir.string() + "' has mode " +
                                            mode +
                                            "; it must not be group or world accessible "
                                            "(chmod 700 it or remove it)");
  }
  return {};
}

result<namespace_lock> namespace_lock::acquire(const std::filesystem::path& file) {
  for (;;) {
    auto lock = try_acquire(file);
    if (!lock) return std::move(lock).error();
    if (*lock) return std::move(**lock);
  }
}

result<std::optional<namespace_lock>> namespace_lock::try_acquire(
    const std::filesystem::path& file) {
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return io_fail("cannot open lock file '" + file.string() + "'", errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    const auto n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    if (err == EWOULDBLOCK) {
      const std::string holder = n > 0 ? std::string(pid, static_cast<std::size_t>(n)) : "?";
      return fail(errc::already_exists, "another broker (pid " + holder +
                                            ") is serving this namespace; lock file '" +
                                            file.string() + "' is held");
    }
    return io_fail("cannot lock '" + file.string() + "'", err);
  }
  // The holder we waited for may have unlinked the file between our open and
  // our flock; then we hold a lock on a dead inode and must try again.
  struct stat held {
  }, named{};
  if (::fstat(fd, &held) != 0 || ::stat(file.c_str(), &named) != 0 || held.st_ino != named.st_ino ||
      held.st_dev != named.st_dev) {
    ::close(fd);
    return std::optional<namespace_lock>{};
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    const int err = errno;
    ::close(fd);
    return io_fail("cannot write lock file '" + file.string() + "'", err);
  }
  return std::optional<namespace_lock>(namespace_lock(file, fd));
}

namespace_lock::namespace_lock(namespace_lock&& other) noexcept
    : file_(std::move(other.file_)), fd_(std::exchange(other.fd_, -1)) {}

namespace_lock& namespace_lock::operator=(namespace_lock&& other) noexcept {
  if (this != &other) {
    release();
    file_ = std::move(other.file_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

namespace_lock::~namespace_lock() {
  release();
}

void namespace_lock::release() noexcept {
  if (fd_ < 0) return;
  // Unlink while still holding the lock, so no other broker can lock this
  // inode after we let go and then see its file vanish.
  ::unlink(file_.c_str());
  ::close(fd_);
  fd_ = -1;
}

}  // namespace slither::detail
