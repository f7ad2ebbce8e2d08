#include "runtime_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

namespace slither::detail {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view lock_magic = "slither-broker lock";

error_info io_fail(const std::string& what, int err) {
  return fail(errc::io_error, what + ": " + std::strerror(err));
}

struct lock_record {
  std::string ns;
  std::string pid;
  bool owns_dir = false;
};

// Reads a lock file's record; nullopt if it holds something else. An empty
// file is a record with nothing in it (a broker that died before writing).
std::optional<lock_record> read_record(int fd) {
  char text[512];
  const auto n = ::pread(fd, text, sizeof text, 0);
  if (n < 0 || static_cast<std::size_t>(n) == sizeof text) return std::nullopt;
  lock_record rec;
  if (n == 0) return rec;
  std::string_view rest(text, static_cast<std::size_t>(n));
  bool first = true;
  while (!rest.empty()) {
    const auto eol = rest.find('\n');
    if (eol == std::string_view::npos) return std::nullopt;
    const auto line = rest.substr(0, eol);
    rest.remove_prefix(eol + 1);
    if (first) {
      if (line != lock_magic) return std::nullopt;
      first = false;
    } else if (line.starts_with("namespace=")) {
      rec.ns = line.substr(10);
    } else if (line.starts_with("pid=")) {
      rec.pid = line.substr(4);
    } else if (line == "owns_dir=1") {
      rec.owns_dir = true;
    } else if (line != "owns_dir=0") {
      return std::nullopt;
    }
  }
  if (first || rec.ns.empty()) return std::nullopt;
  return rec;
}

// The pid a live holder wrote, for the "another broker" message.
std::string holder_pid(int fd) {
  const auto rec = read_record(fd);
  return rec && !rec->pid.empty() ? rec->pid : "?";
}

}  // namespace

result<bool> ensure_private_dir(const fs::path& dir) {
  SLITHER_TRY(check_ancestors(dir, true));
  bool created = true;
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno != EEXIST)
      return io_fail("cannot create runtime directory " + quote_path(dir), errno);
    created = false;
  }
  SLITHER_TRY(check_private_dir(dir));
  return created;
}

result<void> check_socket_path(const fs::path& file, bool in_runtime_dir) {
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return io_fail("cannot inspect " + quote_path(file), errno);
  }
  if (in_runtime_dir && S_ISSOCK(st.st_mode) && st.st_uid == ::geteuid()) return {};
  if (in_runtime_dir) {
    return fail(errc::already_exists,
                quote_path(file) + " exists and is a " + file_kind(st.st_mode) + " of uid " +
                    std::to_string(st.st_uid) +
                    ", not a dead broker's socket: refusing to replace it (move it away)");
  }
  return fail(errc::already_exists, "ipc endpoint " + quote_path(file) + " exists (a " +
                                        file_kind(st.st_mode) +
                                        "); binding would replace it. Remove it first if it "
                                        "is a dead broker's socket");
}

result<namespace_lock> namespace_lock::acquire(const fs::path& file, std::string_view ns,
                                               bool created_dir) {
  for (;;) {
    auto lock = try_acquire(file, ns, created_dir);
    if (!lock) return std::move(lock).error();
    if (*lock) return std::move(**lock);
  }
}

result<std::optional<namespace_lock>> namespace_lock::try_acquire(const fs::path& file,
                                                                  std::string_view ns,
                                                                  bool created_dir) {
  constexpr int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW;
  int fd = ::open(file.c_str(), flags | O_CREAT | O_EXCL, 0600);
  const bool fresh = fd >= 0;
  if (!fresh) {
    if (errno != EEXIST) return io_fail("cannot create lock file " + quote_path(file), errno);
    fd = ::open(file.c_str(), flags);
    if (fd < 0) {
      if (errno == ENOENT) return std::optional<namespace_lock>{};  // unlinked meanwhile
      return io_fail("cannot open lock file " + quote_path(file), errno);
    }
  }
  auto refuse = [&](error_info err) -> result<std::optional<namespace_lock>> {
    ::close(fd);
    return err;
  };
  struct stat held {};
  if (::fstat(fd, &held) != 0) return refuse(io_fail("cannot stat " + quote_path(file), errno));
  if (!S_ISREG(held.st_mode) || held.st_uid != ::geteuid() || held.st_nlink != 1) {
    return refuse(fail(errc::invalid_argument,
                       quote_path(file) + " is a " + file_kind(held.st_mode) + " of uid " +
                           std::to_string(held.st_uid) + " with " + std::to_string(held.st_nlink) +
                           " link(s), not a broker's lock file: refusing to touch it"));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      return refuse(fail(errc::already_exists, "another broker (pid " + holder_pid(fd) +
                                                   ") is serving this namespace; lock file '" +
                                                   file.string() + "' is held"));
    }
    return refuse(io_fail("cannot lock " + quote_path(file), err));
  }
  // The holder we waited for may have unlinked the file between our open and
  // our flock; then we hold a lock on a dead inode and must try again.
  struct stat named {};
  if (::stat(file.c_str(), &named) != 0 || held.st_ino != named.st_ino ||
      held.st_dev != named.st_dev) {
    ::close(fd);
    return std::optional<namespace_lock>{};
  }
  bool owns_dir = created_dir;
  if (!fresh) {
    // Unlocked, so its writer is dead; but only a lock record of this
    // namespace is a dead broker's: anything else is someone's file.
    const auto rec = read_record(fd);
    if (!rec || (!rec->ns.empty() && rec->ns != ns)) {
      return refuse(fail(errc::invalid_argument,
                         quote_path(file) + " is not a lock file of a broker of namespace '" +
                             std::string(ns) + "': refusing to replace it (move it away)"));
    }
    owns_dir = owns_dir || rec->owns_dir;
  }
  const std::string record = std::string(lock_magic) + "\nnamespace=" + std::string(ns) +
                             "\npid=" + std::to_string(::getpid()) +
                             "\nowns_dir=" + (owns_dir ? "1" : "0") + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, record.data(), record.size(), 0) != static_cast<ssize_t>(record.size())) {
    return refuse(io_fail("cannot write lock file " + quote_path(file), errno));
  }
  return std::optional<namespace_lock>(namespace_lock(file, fd, owns_dir));
}

namespace_lock::namespace_lock(namespace_lock&& other) noexcept
    : file_(std::move(other.file_)),
      fd_(std::exchange(other.fd_, -1)),
      owns_dir_(other.owns_dir_) {}

namespace_lock& namespace_lock::operator=(namespace_lock&& other) noexcept {
  if (this != &other) {
    release();
    file_ = std::move(other.file_);
    fd_ = std::exchange(other.fd_, -1);
    owns_dir_ = other.owns_dir_;
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
