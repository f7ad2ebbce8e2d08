#include "curve_keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace slither::detail {
namespace {

namespace fs = std::filesystem;

// Key files are a few hundred bytes; an allow-list of thousands of keys fits.
constexpr std::size_t max_file_bytes = std::size_t{1} << 20;

std::string quote(const fs::path& p) {
  std::string text = "'";
  text += p.string();
  text += '\'';
  return text;
}

error_info io_fail(const std::string& what, int err) {
  return fail(errc::io_error, what + ": " + std::strerror(err));
}

// The whole file, if it is a regular file of this user that nobody else may access.
result<std::string> read_private(const fs::path& file, std::string_view what) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ELOOP) {
      return fail(errc::invalid_argument,
                  std::string(what) + " " + quote(file) + " is a symlink; give the real file");
    }
    return io_fail("cannot open " + std::string(what) + " " + quote(file), errno);
  }
  struct stat st {};
  std::string text;
  auto done = [&](result<std::string> r) {
    ::close(fd);
    return r;
  };
  if (::fstat(fd, &st) != 0) return done(io_fail("cannot stat " + quote(file), errno));
  if (!S_ISREG(st.st_mode)) {
    return done(fail(errc::invalid_argument,
                     std::string(what) + " " + quote(file) + " is not a regular file"));
  }
  if (st.st_uid != ::geteuid()) {
    return done(fail(errc::invalid_argument, std::string(what) + " " + quote(file) +
                                                 " is owned by uid " + std::to_string(st.st_uid) +
                                                 ", not by this user (uid " +
                                                 std::to_string(::geteuid()) + ")"));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return done(fail(errc::invalid_argument, std::string(what) + " " + quote(file) + " has mode " +
                                                 mode + "; it must be owner-only (chmod 600 it)"));
  }
  if (static_cast<std::size_t>(st.st_size) > max_file_bytes) {
    return done(fail(errc::invalid_argument, std::string(what) + " " + quote(file) + " has " +
                                                 std::to_string(st.st_size) +
                                                 " bytes, more than a key file can hold"));
  }
  text.resize(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < text.size()) {
    const auto n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return done(io_fail("cannot read " + quote(file), n < 0 ? errno : EIO));
    got += static_cast<std::size_t>(n);
  }
  return done(std::move(text));
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// Calls `fn(line_number, key_text)` for every line that is not blank or a comment.
template <class Fn>
result<void> for_each_key_line(std::string_view text, std::string_view label, Fn&& fn) {
  std::size_t number = 0;
  while (!text.empty()) {
    ++number;
    const auto eol = text.find('\n');
    auto line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    // Z85 has '#' in its alphabet: a trailing comment needs a blank before it.
    const auto blank = line.find_first_of(" \t");
    if (blank != std::string_view::npos) {
      if (trim(line.substr(blank)).front() != '#') {
        return fail(errc::invalid_argument, std::string(label) + ":" + std::to_string(number) +
                                                ": one key per line, then only a comment");
      }
      line = line.substr(0, blank);
    }
    if (auto r = fn(number, line); !r) return r;
  }
  return {};
}

// Writes `text` to a new owner-only file; never replaces one.
result<void> write_new(const fs::path& file, const std::string& text) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    if (errno == EEXIST) {
      return fail(errc::already_exists, quote(file) + " exists; not replacing a key file");
    }
    return io_fail("cannot create " + quote(file), errno);
  }
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(file.c_str());
    return io_fail("cannot write " + quote(file), err);
  }
  return {};
}

}  // namespace

bool is_z85_key(std::string_view text) noexcept {
  if (text.size() != 40) return false;
  std::array<char, 41> z85{};
  std::memcpy(z85.data(), text.data(), 40);
  std::array<std::uint8_t, 32> raw{};
  return zmq_z85_decode(raw.data(), z85.data()) != nullptr;
}

result<std::string> curve_public_of(const std::string& secret_key) {
  if (!is_z85_key(secret_key)) {
    return fail(errc::invalid_argument, "a CURVE secret key is 40 Z85 characters");
  }
  std::array<char, 41> pub{};
  if (zmq_curve_public(pub.data(), secret_key.c_str()) != 0) {
    return fail(errc::invalid_argument, "cannot derive the public key of a CURVE secret key");
  }
  return std::string(pub.data(), 40);
}

result<std::string> read_key_file(const fs::path& file) {
  SLITHER_TRY_ASSIGN(const std::string text, read_private(file, "key file"));
  std::string key;
  const std::string label = "key file " + quote(file);
  SLITHER_TRY(
      for_each_key_line(text, label, [&](std::size_t line, std::string_view found) -> result<void> {
        if (!key.empty()) {
          return fail(errc::invalid_argument,
                      "key file " + quote(file) + ":" + std::to_string(line) + ": a second key");
        }
        if (!is_z85_key(found)) {
          return fail(errc::invalid_argument, "key file " + quote(file) + ":" +
                                                  std::to_string(line) +
                                                  ": not a 40-character Z85 key");
        }
        key = found;
        return {};
      }));
  if (key.empty()) return fail(errc::invalid_argument, "key file " + quote(file) + " holds no key");
  return key;
}

result<std::set<std::string>> read_allow_list(const fs::path& file) {
  SLITHER_TRY_ASSIGN(const std::string text, read_private(file, "allow-list"));
  std::set<std::string> keys;
  const std::string label = "allow-list " + quote(file);
  SLITHER_TRY(
      for_each_key_line(text, label, [&](std::size_t line, std::string_view found) -> result<void> {
        if (!is_z85_key(found)) {
          return fail(errc::invalid_argument, "allow-list " + quote(file) + ":" +
                                                  std::to_string(line) +
                                                  ": not a 40-character Z85 public key");
        }
        keys.emplace(found);
        return {};
      }));
  if (keys.empty()) {
    return fail(errc::invalid_argument,
                "allow-list " + quote(file) + " holds no key: no client could connect");
  }
  return keys;
}

result<curve_key_pair> write_key_pair(const fs::path& base) {
  std::array<char, 41> pub{}, secret{};
  if (zmq_curve_keypair(pub.data(), secret.data()) != 0) {
    return fail(errc::io_error,
                std::string("cannot generate a CURVE key pair: ") + zmq_strerror(zmq_errno()));
  }
  curve_key_pair pair{std::string(pub.data(), 40), std::string(secret.data(), 40)};
  const fs::path secret_file = base.string() + ".key";
  const fs::path public_file = base.string() + ".pub";
  if (std::error_code ec; fs::exists(public_file, ec)) {
    return fail(errc::already_exists, quote(public_file) + " exists; not replacing a key file");
  }
  SLITHER_TRY(write_new(secret_file, pair.secret_key + "\n"));
  if (auto r = write_new(public_file, pair.public_key + "\n"); !r) {
    ::unlink(secret_file.c_str());
    return std::move(r).error();
  }
  return pair;
}

}  // namespace slither::detail
