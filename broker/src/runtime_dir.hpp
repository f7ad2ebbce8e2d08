// The broker's runtime directory: owner-only, and a lock file in it that
// makes one broker per namespace.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "slither/core/error.hpp"

namespace slither::detail {

/// Creates `dir` (mode 0700) if it does not exist, then checks that it is a
/// real directory (not a symlink) owned by this user with no group or world
/// access. Missing parents are created with default permissions.
result<void> ensure_private_dir(const std::filesystem::path& dir);

/// An exclusive flock(2) on a lock file, released by `release()` or the
/// destructor, and by the kernel when the process dies, so a killed broker
/// never blocks the next one.
class namespace_lock {
 public:
  /// Opens (creating, 0600) and locks `file`, then writes this pid into it.
  /// Errors: `already_exists` naming the pid of the live holder, `io_error`.
  static result<namespace_lock> acquire(const std::filesystem::path& file);

  namespace_lock(namespace_lock&& other) noexcept;
  namespace_lock& operator=(namespace_lock&& other) noexcept;
  namespace_lock(const namespace_lock&) = delete;
  namespace_lock& operator=(const namespace_lock&) = delete;
  ~namespace_lock();

  /// Unlinks the lock file, then unlocks it. Safe twice.
  void release() noexcept;

 private:
  // One attempt; nullopt if the file was replaced meanwhile (try again).
  static result<std::optional<namespace_lock>> try_acquire(const std::filesystem::path& file);
  namespace_lock(std::filesystem::path file, int fd) noexcept : file_(std::move(file)), fd_(fd) {}
  std::filesystem::path file_;
  int fd_ = -1;
};

}  // namespace slither::detail
