// CURVE key files for tcp endpoints: the broker's secret key, the allow-list
// of client public keys, and `slither-broker keygen`, which writes key pairs.
//
// Formats (text, Z85 keys of 40 characters as ZeroMQ prints them):
// - a key file (`<name>.key` secret, `<name>.pub` public): the key alone on
//   one line, so that a program can read it with a plain read and strip;
// - an allow-list: one public key per line; blank lines and `#` comments
//   are ignored (a comment after a key needs a blank before its `#`, which
//   is also a Z85 character).
//
// The broker reads both files only if they are regular files (no symlink)
// owned by its user with no group or world access (0600 or 0400): a key
// another user could read or replace protects nothing.
#pragma once

#include <filesystem>
#include <set>
#include <string>

#include "slither/core/error.hpp"

namespace slither::detail {

/// A CURVE key pair, Z85-encoded.
struct curve_key_pair {
  std::string public_key;
  std::string secret_key;
};

/// True for a 40-character Z85 string that decodes to a 32-byte key.
bool is_z85_key(std::string_view text) noexcept;

/// The public key of a Z85 secret key. Errors: `invalid_argument`.
result<std::string> curve_public_of(const std::string& secret_key);

/// Reads a key file. Errors: `invalid_argument` naming the file and what is
/// wrong (not owner-only, not a regular file, no key, a malformed key), `io_error`.
result<std::string> read_key_file(const std::filesystem::path& file);

/// Reads an allow-list of client public keys; it must hold at least one.
/// Errors as `read_key_file`, naming the line of a malformed key.
result<std::set<std::string>> read_allow_list(const std::filesystem::path& file);

/// Generates a key pair and writes `<base>.key` (secret) and `<base>.pub`
/// (public), both 0600; refuses to replace an existing file. Errors:
/// `already_exists`, `io_error`.
result<curve_key_pair> write_key_pair(const std::filesystem::path& base);

}  // namespace slither::detail
