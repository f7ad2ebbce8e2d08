// Errors shared by every Slither module.
//
// Inside the library, fallible operations return `result<T>`: a value or an
// `error_info` (a code plus a message naming the bad input). At the public
// API boundary, `result<T>::value()` throws `slither::error`, which carries
// the same code and message.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace slither {

/// Error codes used across core, shm, broker and the Python client.
enum class errc : std::uint8_t {
  ok = 0,
  invalid_argument,  ///< a caller passed something malformed (a bad name, dtype, shape...)
  not_found,         ///< unknown store, table, key or view
  decode_error,      ///< bytes that are not a valid encoding
  limit_exceeded,    ///< a size, depth or count over a configured limit
  io_error,          ///< an operating-system call failed
  no_space,          ///< the machine (e.g. /dev/shm) has no room left
  layout_mismatch,   ///< a shared segment written by an incompatible build
  writer_gone,       ///< the process owning a store is no longer alive
  already_exists,    ///< a live owner already holds the name
  conflict,          ///< a compare-and-set saw another version
  busy,              ///< a bounded queue is full; retry later
  timeout,           ///< a deadline passed before an answer came
  unavailable,       ///< the broker cannot be reached
  protocol_error,    ///< a peer broke the wire protocol
  internal,          ///< a bug: an invariant did not hold
  shutting_down,     ///< the broker is stopping: the request was refused, nothing was applied
};

/// Stable lower-case name of a code ("not_found"), used in messages and on the wire.
std::string_view to_string(errc code) noexcept;

/// The `std::error_category` of `errc`, so codes mix with `std::error_code`.
const std::error_category& slither_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), slither_category()};
}

/// A failure as data: a code and a message that names the offending input.
struct error_info {
  errc code = errc::internal;
  std::string message;
};

/// The one exception type of the public C++ API.
class error : public std::runtime_error {
 public:
  error(errc code, const std::string& message);
  explicit error(const error_info& info) : error(info.code, info.message) {}
  /// The code of this failure.
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

/// Builds an `error_info`; `fail(errc::not_found, "no table 'x'")`.
inline error_info fail(errc code, std::string message) {
  return {code, std::move(message)};
}

/// A value of type `T` or an `error_info`. `result<void>` holds no value.
template <class T>
class [[nodiscard]] result {
 public:
  result(T value)
      : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  result(error_info err) : state_(std::in_place_index<1>, std::move(err)) {}  // NOLINT

  bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  /// The value; throws `slither::error` if this holds an error.
  T& value() & {
    throw_if_error();
    return std::get<0>(state_);
  }
  const T& value() const& {
    throw_if_error();
    return std::get<0>(state_);
  }
  T&& value() && {
    throw_if_error();
    return std::get<0>(std::move(state_));
  }
  T& operator*() & { return std::get<0>(state_); }
  const T& operator*() const& { return std::get<0>(state_); }
  T* operator->() { return &std::get<0>(state_); }
  const T* operator->() const { return &std::get<0>(state_); }

  /// The error; only valid when `!has_value()`.
  const error_info& error() const& { return std::get<1>(state_); }
  error_info&& error() && { return std::get<1>(std::move(state_)); }

 private:
  void throw_if_error() const {
    if (state_.index() == 1) throw slither::error(std::get<1>(state_));
  }
  std::variant<T, error_info> state_;
};

template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(error_info err) : err_(std::move(err)), ok_(false) {}  // NOLINT: implicit by design

  bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  /// Throws `slither::error` if this holds an error.
  void value() const {
    if (!ok_) throw slither::error(err_);
  }
  const error_info& error() const& { return err_; }
  error_info&& error() && { return std::move(err_); }

 private:
  error_info err_;
  bool ok_ = true;
};

}  // namespace slither

template <>
struct std::is_error_code_enum<slither::errc> : std::true_type {};
