// Which paths slither trusts, on both sides of an ipc control socket: the
// broker before it creates its runtime directory or binds a socket, the
// client (and a worker or dispatch job) before it connects.
//
// A directory can be swapped by whoever may write to its parent, so every
// ancestor of a trusted path up to `/` must be a real directory (no symlink),
// owned by root or by this user (euid), and writable by nobody else unless it
// is sticky (as /tmp is: others may create entries there but not rename ours).
// A runtime directory itself must be this user's, with no group or other
// access. A control socket must be a socket of this user. So another local
// user cannot plant `/tmp/slither-<uid>/<ns>/control` (XDG_RUNTIME_DIR unset)
// and receive a client's writes, nor swap a directory under a broker.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

#include "slither/core/error.hpp"

namespace slither::detail {

/// Checks every ancestor of `path` (not `path` itself) from `/` down, by the
/// rule above. With `create`, a missing ancestor is made first (mode 0700).
/// Errors: `invalid_argument` naming the first bad ancestor and what is wrong
/// with it, `not_found` for a missing one (without `create`), `io_error`.
result<void> check_ancestors(const std::filesystem::path& path, bool create = false);

/// Checks the runtime directory `dir` itself (not its ancestors): a real
/// directory (no symlink) owned by this user, with no group or other access.
/// Errors: `invalid_argument` saying what is wrong, `not_found`, `io_error`.
result<void> check_private_dir(const std::filesystem::path& dir);

/// How a client judges the directory that holds a control socket.
enum class socket_dir_rule {
  /// A broker's runtime directory (given, or the default one of a namespace):
  /// `check_private_dir`, and its ancestors.
  runtime_dir,
  /// The directory of an explicitly given ipc endpoint: held to the rule of
  /// ancestors only, so a socket in a directory of ours under /tmp is fine.
  ancestor,
};

/// What a client checks before it connects to the ipc control socket
/// `socket_file`: no ".." component (a symlink before it would make the
/// checked path differ from the one connected to); its directory by `rule`;
/// every ancestor (`check_ancestors`); the file itself a socket (not a
/// symlink) owned by this user. Errors: `not_found` when something on the way
/// does not exist (no broker there), `invalid_argument` naming the path and
/// what is wrong with it, `io_error`.
result<void> check_control_socket(const std::filesystem::path& socket_file, socket_dir_rule rule);

/// "'<path>'", for messages.
std::string quote_path(const std::filesystem::path& p);

/// What a file of `mode` is ("regular file", "directory", "socket"...), for messages.
std::string file_kind(mode_t mode);

}  // namespace slither::detail
