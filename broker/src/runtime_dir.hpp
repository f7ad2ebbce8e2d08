// The broker's runtime directory: a trusted path to an owner-only directory,
// a lock file in it that makes one broker per namespace, and the rules for
// what a broker may replace or remove there.
//
// Trust: the path to the runtime directory is checked by path_trust.hpp's
// rules, which clients apply too before they connect.
//
// Ownership: a broker removes only what it made. It replaces `lock` and
// `control` in an existing directory only when they are provably a dead
// broker's leftovers of the same namespace, and removes the directory at stop
// only if it (or the dead broker whose lock it took over) created it.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "path_trust.hpp"
#include "slither/core/error.hpp"

namespace slither::detail {

/// Creates `dir` (mode 0700, missing parents with 0700 too) unless it exists,
/// then checks it: its ancestors (`check_ancestors`) and itself
/// (`check_private_dir`). Returns whether this call created it.
result<bool> ensure_private_dir(const std::filesystem::path& dir);

/// Whether the broker may bind an ipc socket at `file`, which ZeroMQ will
/// unlink first if it exists. Inside the runtime directory (`in_runtime_dir`,
/// with the namespace lock held) an existing file is accepted only if it is a
/// socket owned by this user: a dead broker's. Anywhere else an existing file
/// is refused, whatever it is. Errors: `already_exists`, `io_error`.
result<void> check_socket_path(const std::filesystem::path& file, bool in_runtime_dir);

/// An exclusive flock(2) on the namespace's lock file, released by `release()`
/// or the destructor, and by the kernel when the process dies, so a killed
/// broker never blocks the next one. The file records the namespace, the pid
/// and whether the broker created the runtime directory.
class namespace_lock {
 public:
  /// Opens (creating, 0600) and locks `file`, then records `ns`, this pid and
  /// `created_dir` in it. An existing file is taken over only if it is a
  /// regular file of this user holding a lock record of `ns` (or nothing).
  /// Errors: `already_exists` naming the pid of the live holder,
  /// `invalid_argument` for a file that is not a lock of this namespace,
  /// `io_error`.
  static result<namespace_lock> acquire(const std::filesystem::path& file, std::string_view ns,
                                        bool created_dir);

  namespace_lock(namespace_lock&& other) noexcept;
  namespace_lock& operator=(namespace_lock&& other) noexcept;
  namespace_lock(const namespace_lock&) = delete;
  namespace_lock& operator=(const namespace_lock&) = delete;
  ~namespace_lock();

  /// True if this broker or the dead broker whose lock it took over created
  /// the runtime directory, which may then be removed at stop.
  bool owns_dir() const noexcept { return owns_dir_; }

  /// Unlinks the lock file, then unlocks it. Safe twice.
  void release() noexcept;

 private:
  // One attempt; nullopt if the file was replaced meanwhile (try again).
  static result<std::optional<namespace_lock>> try_acquire(const std::filesystem::path& file,
                                                           std::string_view ns, bool created_dir);
  namespace_lock(std::filesystem::path file, int fd, bool owns_dir) noexcept
      : file_(std::move(file)), fd_(fd), owns_dir_(owns_dir) {}
  std::filesystem::path file_;
  int fd_ = -1;
  bool owns_dir_ = false;
};

}  // namespace slither::detail
