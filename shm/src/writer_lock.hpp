// A store's writer lock: exclusivity of its writer, and the writer's liveness
// as readers and later writers see it.
//
// The lock object "/slither.<ns>.<store>.lock" (0600, owned by the writer's
// user) holds a lock_record naming the store's incarnation; the writer holds
// an OFD write lock on its byte 0 for its whole lifetime. A second writer
// fails to take it (`already_exists`); the kernel drops it when the writer
// exits or is killed, so "dead" means the lock is free, never a guess from
// /proc. A writer that closes unlinks the object last, after its segments;
// one that takes the lock checks afterwards that the name still refers to the
// object it locked, so a closing writer's unlink cannot hand two writers the
// lock on two different objects.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "segment.hpp"
#include "slither/core/error.hpp"

namespace slither::shm::detail {

/// The writer lock of one store, held until `release` (or destruction).
class writer_lock {
 public:
  /// Takes the lock of store `<ns>.<name>`, creating its lock object if
  /// needed. Errors: `already_exists` if a live writer holds it, `io_error`
  /// for an object of another user or a failed call.
  static result<writer_lock> acquire(std::string_view ns, std::string_view name);

  writer_lock() = default;
  writer_lock(writer_lock&&) noexcept = default;
  writer_lock& operator=(writer_lock&& o) noexcept {
    if (this != &o) {
      release();
      name_ = std::move(o.name_);
      fd_ = std::move(o.fd_);
      dev_ = o.dev_;
      ino_ = o.ino_;
    }
    return *this;
  }
  ~writer_lock() { release(); }

  /// Records which store this writer creates, for readers' liveness checks.
  result<void> record(std::uint64_t incarnation);
  /// Unlinks the lock object (if the name still refers to it) and drops the lock. Safe twice.
  void release() noexcept;
  /// In a fork() child: closes the inherited descriptor without unlinking or
  /// unlocking anything, so the lock stays the parent's alone.
  void forget() noexcept { fd_.close(); }

 private:
  std::string name_;
  unique_fd fd_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

/// What a reader can tell about a store's writer.
enum class writer_seen : std::uint8_t {
  alive,  ///< it holds its lock, or that cannot be told
  gone,   ///< its lock is free, or its lock object is gone or names another store
};

/// Whether the writer that created the store with `incarnation` is alive.
/// Any failure to tell counts as alive. `owner` is the uid the object must have.
writer_seen check_writer(std::string_view ns, std::string_view name, std::uint64_t incarnation,
                         uid_t owner) noexcept;

/// Marks the store a dead writer left under `<ns>.<name>` closed (so readers
/// still attached see `store_closed()`), then unlinks its objects. Call only
/// while holding the store's writer lock. Errors: `io_error` if an object
/// there belongs to another user.
result<void> remove_stale_store(std::string_view ns, std::string_view name);

}  // namespace slither::shm::detail
