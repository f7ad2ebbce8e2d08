// What a client checks before it connects to an ipc:// endpoint, so that a
// socket another local user planted at the expected path (say, under
// /tmp/slither-<uid>/ while XDG_RUNTIME_DIR is unset) cannot capture its
// writes or point it at shared memory that user wrote.
#pragma once

#include <filesystem>

#include "slither/core/error.hpp"

namespace slither::detail {

/// How strictly to judge the directory that holds the socket.
enum class socket_dir_rule {
  /// A broker's runtime directory: owned by this user, no group or other
  /// access at all, not a symlink (and so is its parent).
  runtime_dir,
  /// The directory of an explicitly given ipc endpoint: held to the rule of
  /// every ancestor (below), so a socket in /tmp is fine when it is ours.
  ancestor,
};

/// Checks the control socket file of an ipc endpoint before connecting:
/// - the socket: a socket (not a symlink) owned by this user (euid);
/// - its directory: see `socket_dir_rule`;
/// - every ancestor from the directory's parent up to "/": a directory owned
///   by root or this user, writable by no one else unless sticky (like /tmp),
///   so no other user can rename or replace anything below it. The parent of
///   a runtime directory must not be a symlink; a higher ancestor may be one
///   when root or this user owns it, and its target is checked the same way.
/// A path with a ".." component is refused (a symlink before it would make
/// the checked path differ from the one connected to).
/// Errors: `unavailable` when a component does not exist (no broker there),
/// `invalid_argument` naming the path and what is wrong with it, `io_error`
/// when a component cannot be examined.
result<void> verify_ipc_socket(const std::filesystem::path& socket_file, socket_dir_rule rule);

}  // namespace slither::detail
