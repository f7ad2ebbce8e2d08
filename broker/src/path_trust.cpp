#include "path_trust.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace slither::detail {
namespace {

namespace fs = std::filesystem;

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

std::string this_user() {
  return "this user (uid " + std::to_string(::geteuid()) + ")";
}

// lstat(2) of one component; a missing one is `not_found`.
result<struct stat> look(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) == 0) return st;
  const int err = errno;
  if (err == ENOENT) return fail(errc::not_found, quote_path(p) + " does not exist");
  return fail(errc::io_error, "cannot inspect " + quote_path(p) + ": " + std::strerror(err));
}

// The rule for one ancestor (already lstat'ed).
result<void> check_ancestor(const fs::path& p, const struct stat& st) {
  if (S_ISLNK(st.st_mode)) {
    std::error_code ec;
    const auto target = fs::canonical(p, ec);
    return fail(errc::invalid_argument,
                quote_path(p) + " is a symlink" +
                    (ec ? std::string() : " (to " + quote_path(target) + ")") +
                    "; a trusted path must not contain symlinks (use the real path)");
  }
  if (!S_ISDIR(st.st_mode)) {
    return fail(errc::invalid_argument,
                quote_path(p) + " is a " + file_kind(st.st_mode) + ", not a directory");
  }
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    return fail(errc::invalid_argument, quote_path(p) + " is owned by uid " +
                                            std::to_string(st.st_uid) + ", neither root nor " +
                                            this_user() +
                                            ": that user could replace what is below it");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return fail(errc::invalid_argument,
                quote_path(p) + " has mode " + octal_mode(st.st_mode) +
                    ": writable by others without the sticky bit, so they could replace what "
                    "is below it");
  }
  return {};
}

}  // namespace

// Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on
// `"'" + path.string()`.
std::string quote_path(const fs::path& p) {
  std::string text = "'";
  text += p.string();
  text += '\'';
  return text;
}

std::string file_kind(mode_t mode) {
  if (S_ISREG(mode)) return "regular file";
  if (S_ISDIR(mode)) return "directory";
  if (S_ISLNK(mode)) return "symlink";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISFIFO(mode)) return "fifo";
  return "special file";
}

result<void> check_ancestors(const fs::path& path, bool create) {
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec).lexically_normal();
  if (ec)
    return fail(errc::io_error, "cannot make " + quote_path(path) + " absolute: " + ec.message());
  fs::path p;
  for (const auto& part : abs.parent_path()) {
    p /= part;
    auto st = look(p);
    if (!st && st.error().code == errc::not_found && create) {
      if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) {
        return fail(errc::io_error, "cannot create " + quote_path(p) + ": " + std::strerror(errno));
      }
      st = look(p);
    }
    if (!st) return std::move(st).error();
    if (auto r = check_ancestor(p, *st); !r) return r;
  }
  return {};
}

result<void> check_private_dir(const fs::path& dir) {
  auto st = look(dir);
  if (!st) return std::move(st).error();
  if (!S_ISDIR(st->st_mode)) {
    return fail(errc::invalid_argument, "runtime directory " + quote_path(dir) + " is a " +
                                            file_kind(st->st_mode) + ", not a directory");
  }
  if (st->st_uid != ::geteuid()) {
    return fail(errc::invalid_argument, "runtime directory " + quote_path(dir) +
                                            " is owned by uid " + std::to_string(st->st_uid) +
                                            ", not by " + this_user());
  }
  if ((st->st_mode & 077) != 0) {
    return fail(errc::invalid_argument, "runtime directory " + quote_path(dir) + " has mode " +
                                            octal_mode(st->st_mode) +
                                            "; it must not be group or world accessible "
                                            "(chmod 700 it or remove it)");
  }
  return {};
}

result<void> check_control_socket(const fs::path& socket_file, socket_dir_rule rule) {
  for (const auto& part : socket_file) {
    if (part == "..") {
      return fail(errc::invalid_argument,
                  quote_path(socket_file) +
                      " has a '..' component; give the control socket's path without one");
    }
  }
  std::error_code ec;
  const fs::path socket = fs::absolute(socket_file, ec).lexically_normal();
  if (ec) {
    return fail(errc::io_error,
                "cannot make " + quote_path(socket_file) + " absolute: " + ec.message());
  }
  if (rule == socket_dir_rule::runtime_dir) {
    const fs::path dir = socket.parent_path();
    if (auto r = check_ancestors(dir); !r) return r;
    if (auto r = check_private_dir(dir); !r) return r;
  } else if (auto r = check_ancestors(socket); !r) {
    return r;
  }
  auto st = look(socket);
  if (!st) return std::move(st).error();
  if (!S_ISSOCK(st->st_mode)) {
    return fail(errc::invalid_argument,
                quote_path(socket) + " is a " + file_kind(st->st_mode) + ", not a control socket");
  }
  if (st->st_uid != ::geteuid()) {
    return fail(errc::invalid_argument, quote_path(socket) + " is owned by uid " +
                                            std::to_string(st->st_uid) + ", not by " + this_user());
  }
  return {};
}

}  // namespace slither::detail
