#include "ipc_trust.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace slither::detail {
namespace {

namespace fs = std::filesystem;

// A symlink on the way may lead to another; past this many we give up.
constexpr int max_symlink_depth = 8;

std::string quoted(const fs::path& p) {
  // Built piecewise: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string.
  std::string out = "'";
  out += p.string();
  out += '\'';
  return out;
}

std::string mode_text(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

error_info untrusted(const fs::path& p, const std::string& what) {
  return fail(errc::invalid_argument, quoted(p) + " " + what);
}

std::string owner_text(uid_t uid) {
  return "is owned by uid " + std::to_string(uid) + ", not by this user (uid " +
         std::to_string(::geteuid()) + ")";
}

bool trusted_owner(uid_t uid) {
  return uid == 0 || uid == ::geteuid();
}

// lstat(2) of one component; a missing one means no broker is there.
result<struct stat> look(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) == 0) return st;
  const int err = errno;
  if (err == ENOENT) return fail(errc::unavailable, quoted(p) + " does not exist");
  return fail(errc::io_error, "cannot examine " + quoted(p) + ": " + std::strerror(err));
}

// A directory on the way to the socket: only root or this user may change
// what it holds, or it is sticky (then only an entry's owner may).
result<void> check_ancestor(const fs::path& p, const struct stat& st) {
  if (!S_ISDIR(st.st_mode)) return untrusted(p, "is not a directory");
  if (!trusted_owner(st.st_uid)) {
    return untrusted(p, "is owned by uid " + std::to_string(st.st_uid) +
                            "; a directory on the way to a control socket must be owned by "
                            "root or by this user (uid " +
                            std::to_string(::geteuid()) + ")");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return untrusted(p, "has mode " + mode_text(st.st_mode) +
                            ": others may replace what it holds (it is group or world "
                            "writable and not sticky)");
  }
  return {};
}

// Checks every prefix of the absolute, normal path `dir`, from "/" down to
// `dir` itself, as an ancestor. Prefixes longer than `symlinks_until`
// components must not be symlinks; shorter ones may be, if root or this user
// owns the link, and then the link's target is checked the same way.
result<void> check_chain(const fs::path& dir, std::size_t symlinks_until, int depth) {
  fs::path prefix;
  std::size_t n = 0;
  for (const auto& part : dir) {
    prefix /= part;
    ++n;
    auto st = look(prefix);
    if (!st) return std::move(st).error();
    if (S_ISLNK(st->st_mode)) {
      if (n > symlinks_until) {
        return untrusted(prefix,
                         "is a symlink; the control socket's directory and its parent "
                         "must be real directories");
      }
      if (!trusted_owner(st->st_uid))
        return untrusted(prefix, "is a symlink that " + owner_text(st->st_uid));
      if (depth >= max_symlink_depth) return untrusted(prefix, "leads through too many symlinks");
      char target[PATH_MAX];
      if (::realpath(prefix.c_str(), target) == nullptr) {
        const int err = errno;
        if (err == ENOENT) return fail(errc::unavailable, quoted(prefix) + " leads nowhere");
        return fail(errc::io_error, "cannot resolve " + quoted(prefix) + ": " + std::strerror(err));
      }
      const fs::path resolved(target);
      if (auto r =
              check_chain(resolved, std::distance(resolved.begin(), resolved.end()), depth + 1);
          !r) {
        return r;
      }
      continue;
    }
    if (auto r = check_ancestor(prefix, *st); !r) return r;
  }
  return {};
}

}  // namespace

result<void> verify_ipc_socket(const fs::path& socket_file, socket_dir_rule rule) {
  for (const auto& part : socket_file) {
    if (part == "..") {
      return untrusted(socket_file,
                       "has a '..' component; give the control socket's path "
                       "without one");
    }
  }
  std::error_code ec;
  const fs::path socket = fs::absolute(socket_file, ec).lexically_normal();
  if (ec)
    return fail(errc::io_error,
                "cannot make " + quoted(socket_file) + " absolute: " + ec.message());
  const fs::path dir = socket.parent_path();
  const fs::path parent = dir.parent_path();
  const auto depth_of = [](const fs::path& p) {
    return static_cast<std::size_t>(std::distance(p.begin(), p.end()));
  };

  if (rule == socket_dir_rule::runtime_dir) {
    if (auto r = check_chain(parent, depth_of(parent) - 1, 0); !r) return r;
    auto st = look(dir);
    if (!st) return std::move(st).error();
    if (S_ISLNK(st->st_mode)) return untrusted(dir, "is a symlink, not a runtime directory");
    if (!S_ISDIR(st->st_mode)) return untrusted(dir, "is not a directory");
    if (st->st_uid != ::geteuid()) return untrusted(dir, owner_text(st->st_uid));
    if ((st->st_mode & 077) != 0) {
      return untrusted(dir, "has mode " + mode_text(st->st_mode) +
                                "; a runtime directory must not be group or world accessible");
    }
  } else {
    const std::size_t depth = depth_of(dir);
    if (auto r = check_chain(dir, depth > 2 ? depth - 2 : 0, 0); !r) return r;
  }

  auto st = look(socket);
  if (!st) return std::move(st).error();
  if (S_ISLNK(st->st_mode)) return untrusted(socket, "is a symlink, not a control socket");
  if (!S_ISSOCK(st->st_mode)) return untrusted(socket, "is not a socket");
  if (st->st_uid != ::geteuid()) return untrusted(socket, owner_text(st->st_uid));
  return {};
}

}  // namespace slither::detail
