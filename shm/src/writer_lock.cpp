#include "writer_lock.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "layout.hpp"
#include "ofd_lock.hpp"
#include "slither/shm/detail/sys.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::detail {

namespace {

constexpr int lock_attempts = 16;

bool read_record(int fd, lock_record& out) noexcept {
  ssize_t n;
  do {
    n = ::pread(fd, &out, sizeof(out), 0);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(sizeof(out)) && out.magic == lock_magic;
}

}  // namespace

result<writer_lock> writer_lock::acquire(std::string_view ns, std::string_view name) {
  writer_lock lock;
  lock.name_ = lock_name(ns, name);
  const std::string label = std::string(ns) + "." + std::string(name);
  const uid_t me = ::geteuid();
  for (int attempt = 0; attempt < lock_attempts; ++attempt) {
    unique_fd fd(::shm_open(lock.name_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) {
      return fail(errc::io_error,
                  "cannot open the lock of store '" + label + "': " + errno_text(errno));
    }
    struct stat st {};
    if (sys().fstat(fd.get(), &st) != 0) {
      return fail(errc::io_error,
                  "cannot stat the lock of store '" + label + "': " + errno_text(errno));
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != me) {
      return fail(errc::io_error, "the lock of store '" + label + "' (shared memory '" +
                                      lock.name_ + "') is owned by uid " +
                                      std::to_string(st.st_uid) + ", not " + std::to_string(me) +
                                      ": refusing to use it");
    }
    if ((st.st_mode & 077) != 0 && ::fchmod(fd.get(), 0600) != 0) {
      return fail(errc::io_error,
                  "cannot make the lock of store '" + label + "' owner-only: " + errno_text(errno));
    }
    if (const int err = ofd_try_lock(fd.get(), 0, 1); err != 0) {
      if (err != EAGAIN) {
        return fail(errc::io_error,
                    "cannot lock the lock of store '" + label + "': " + errno_text(err));
      }
      lock_record rec{};
      const std::string who =
          read_record(fd.get(), rec) ? " (pid " + std::to_string(rec.writer_pid) + ")" : "";
      return fail(errc::already_exists, "store '" + label + "' is owned by a live writer" + who);
    }
    // Locked; but a writer that was closing may have unlinked this object
    // meanwhile, and a third one created a new object under the name.
    unique_fd again(::shm_open(lock.name_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0));
    struct stat now {};
    if (again && sys().fstat(again.get(), &now) == 0 && now.st_dev == st.st_dev &&
        now.st_ino == st.st_ino) {
      lock.fd_ = std::move(fd);
      lock.dev_ = st.st_dev;
      lock.ino_ = st.st_ino;
      return lock;
    }
  }
  return fail(errc::io_error, "the lock of store '" + label + "' kept being replaced");
}

result<void> writer_lock::record(std::uint64_t incarnation) {
  const lock_record rec{lock_magic, incarnation, static_cast<std::uint64_t>(::getpid())};
  ssize_t n;
  do {
    n = ::pwrite(fd_.get(), &rec, sizeof(rec), 0);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(rec))) {
    return fail(errc::io_error, "cannot write the lock record '" + name_ +
                                    "': " + (n < 0 ? errno_text(errno) : "short write"));
  }
  return {};
}

void writer_lock::release() noexcept {
  if (!fd_) return;
  // We hold the lock, so no other writer can have replaced the object; check
  // anyway, to never unlink what is not ours (someone may have removed it by hand).
  unique_fd current(::shm_open(name_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0));
  struct stat st {};
  if (current && ::fstat(current.get(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    unlink_object(name_);
  }
  fd_.close();  // drops the lock
}

writer_seen check_writer(std::string_view ns, std::string_view name, std::uint64_t incarnation,
                         uid_t owner) noexcept {
  try {
    auto obj = open_object(lock_name(ns, name), false, owner);
    if (!obj) return obj.error().code == errc::not_found ? writer_seen::gone : writer_seen::alive;
    lock_record rec{};
    if (!read_record(obj->fd.get(), rec)) {
      // Empty: a new object at the name, which only a writer creates after
      // the previous one unlinked its own, on close. Unreadable: cannot tell.
      struct stat st {};
      const bool empty = ::fstat(obj->fd.get(), &st) == 0 && st.st_size == 0;
      return empty ? writer_seen::gone : writer_seen::alive;
    }
    if (rec.incarnation != incarnation) return writer_seen::gone;
    return ofd_test(obj->fd.get(), 0, 1) == lock_seen::free ? writer_seen::gone
                                                            : writer_seen::alive;
  } catch (...) {  // std::bad_alloc from a name: cannot tell
    return writer_seen::alive;
  }
}

result<void> remove_stale_store(std::string_view ns, std::string_view name) {
  const std::string seg0 = segment_name(ns, name, 0);
  auto obj = open_object(seg0, true, ::geteuid());
  if (!obj && obj.error().code != errc::not_found) {
    return fail(errc::io_error, "cannot replace the stale store '" + std::string(ns) + "." +
                                    std::string(name) + "': " + obj.error().message);
  }
  if (obj && obj->bytes >= page_bytes) {
    // Readers still attached to it learn from its state that it is closed.
    if (auto map = map_object(obj->fd.get(), page_bytes, true, seg0)) {
      const auto* sh = reinterpret_cast<const segment_header*>(map->data());
      if (sh->magic == store_magic) {
        reinterpret_cast<shared_u64*>(map->data() + store_state_offset)
            ->store(static_cast<std::uint64_t>(store_state::closed), std::memory_order_release);
      }
    }
  }
  for (std::uint32_t n = 0; n < max_segments; ++n) unlink_object(segment_name(ns, name, n));
  unlink_object(registry_name(ns, name));
  return {};
}

}  // namespace slither::shm::detail

namespace slither::shm {

result<bool> remove_dead_store(std::string_view ns, std::string_view name) {
  if (!detail::valid_name(ns) || !detail::valid_name(name)) {
    return fail(errc::invalid_argument, "bad store name '" + std::string(ns) + "." +
                                            std::string(name) +
                                            "': use 1-64 characters of [A-Za-z0-9_-]");
  }
  auto lock = detail::writer_lock::acquire(ns, name);
  if (!lock) {
    if (lock.error().code == errc::already_exists) return false;  // its writer lives
    return std::move(lock).error();
  }
  // The lock is ours: whatever is left under the name is a dead writer's.
  if (auto r = detail::remove_stale_store(ns, name); !r) return std::move(r).error();
  lock->release();  // unlinks the lock object, then unlocks it
  return true;
}

}  // namespace slither::shm
