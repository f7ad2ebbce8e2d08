// Errors shared by every Slither module.
//
// Inside the library, fallible operations return `result<T>`: a value or an
// `error_info` (a code plus a message naming the bad input). At the public
// API boundary, `result<T>::value()` throws `slither::error`, which carries
// the same code and message.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "slither/core/export.hpp"

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
SLITHER_CORE_EXPORT std::string_view to_string(errc code) noexcept;

/// The `std::error_category` of `errc`, so codes mix with `std::error_code`.
SLITHER_CORE_EXPORT const std::error_category& slither_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), slither_category()};
}

/// A failure as data: a code and a message that names the offending input.
struct SLITHER_CORE_EXPORT error_info {
  errc code = errc::internal;
  std::string message;
};

/// The one exception type of the public C++ API.
class SLITHER_CORE_EXPORT error : public std::runtime_error {
 public:
  error(errc code, const std::string& message);
  explicit error(const error_info& info) : error(info.code, info.message) {}
  /// The code of this failure.
  errc code() const noexcept { return code_; }
  /// Throws `error(errc::internal, what)`: what a misused `result` does. Out
  /// of line, so that `result`'s inline accessors stay small.
  [[noreturn]] static void throw_bad_access(const char* what);

 private:
  errc code_;
};

/// Builds an `error_info`; `fail(errc::not_found, "no table 'x'")`.
inline error_info fail(errc code, std::string message) {
  return {code, std::move(message)};
}

template <class T>
class result;

namespace detail {
template <class R>
struct is_result : std::false_type {};
template <class T>
struct is_result<result<T>> : std::true_type {};

// What a result's value may be built from by the forwarding constructor.
template <class T, class U>
inline constexpr bool forwards_to_value =
    std::is_constructible_v<T, U> && !std::is_same_v<std::remove_cvref_t<U>, result<T>> &&
    !std::is_same_v<std::remove_cvref_t<U>, error_info> &&
    !std::is_same_v<std::remove_cvref_t<U>, std::in_place_t>;

// `f(args...)`'s type, checked to be a result (for and_then and or_else).
template <class F, class... Args>
using result_of_call = std::remove_cvref_t<std::invoke_result_t<F, Args...>>;
}  // namespace detail

/// A value of type `T` or an `error_info`; `result<void>` holds no value.
///
/// Reads like `std::expected<T, error_info>` (C++23), with the same member
/// names, so it can become that alias: `return 42;` or `return "abc";` in a
/// function returning `result<Value>` builds the value in place, `return
/// fail(errc::not_found, "...")` the error. `value()` throws `slither::error`
/// for an error; unlike `std::expected`, so do `operator*`, `operator->` (on an
/// error) and `error()` (on a value): misuse is a clear `slither::error` with
/// code `internal`, never undefined behaviour or `std::bad_variant_access`.
/// Propagate errors with `SLITHER_TRY`.
template <class T>
class [[nodiscard]] result {
  static_assert(!std::is_reference_v<T> && !std::is_same_v<std::remove_cv_t<T>, error_info>,
                "result<T>: T must be an object type other than error_info");

 public:
  using value_type = T;
  using error_type = error_info;
  template <class U>
  using rebind = result<U>;

  /// A value-initialized `T`.
  result() requires std::is_default_constructible_v<T> : state_(std::in_place_index<0>) {}
  /// A value built from `v` (implicit where `U` converts to `T`).
  template <class U = T>
  requires detail::forwards_to_value<T, U>
  explicit(!std::is_convertible_v<U, T>) result(U&& v)  // NOLINT: implicit by design
      : state_(std::in_place_index<0>, std::forward<U>(v)) {}
  /// A value built in place from `args`.
  template <class... Args>
  requires std::is_constructible_v<T, Args...>
  explicit result(std::in_place_t, Args&&... args)
      : state_(std::in_place_index<0>, std::forward<Args>(args)...) {}
  /// An error.
  result(error_info err) : state_(std::in_place_index<1>, std::move(err)) {}  // NOLINT

  bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  /// The value; throws `slither::error` (the held error's code and message) if this holds an error.
  T& value() & {
    throw_if_error();
    return *std::get_if<0>(&state_);
  }
  const T& value() const& {
    throw_if_error();
    return *std::get_if<0>(&state_);
  }
  T&& value() && {
    throw_if_error();
    return std::move(*std::get_if<0>(&state_));
  }
  /// The value; throws `slither::error(internal)` if this holds an error.
  T& operator*() & { return checked_value(); }
  const T& operator*() const& { return checked_value(); }
  T&& operator*() && { return std::move(checked_value()); }
  T* operator->() { return &checked_value(); }
  const T* operator->() const { return &checked_value(); }

  /// The error; throws `slither::error(internal)` if this holds a value.
  error_info& error() & { return checked_error(); }
  const error_info& error() const& { return checked_error(); }
  error_info&& error() && { return std::move(checked_error()); }

  /// The value, or `fallback` converted to `T` if this holds an error.
  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? **this : static_cast<T>(std::forward<U>(fallback));
  }
  template <class U>
  T value_or(U&& fallback) && {
    return has_value() ? std::move(**this) : static_cast<T>(std::forward<U>(fallback));
  }

  /// `f(value)` (which returns a result), or this error.
  template <class F>
  auto and_then(F&& f) & {
    return and_then_impl(*this, std::forward<F>(f));
  }
  template <class F>
  auto and_then(F&& f) const& {
    return and_then_impl(*this, std::forward<F>(f));
  }
  template <class F>
  auto and_then(F&& f) && {
    return and_then_impl(std::move(*this), std::forward<F>(f));
  }
  /// `result<U>` holding `f(value)` (`result<void>` if `f` returns void), or this error.
  template <class F>
  auto transform(F&& f) & {
    return transform_impl(*this, std::forward<F>(f));
  }
  template <class F>
  auto transform(F&& f) const& {
    return transform_impl(*this, std::forward<F>(f));
  }
  template <class F>
  auto transform(F&& f) && {
    return transform_impl(std::move(*this), std::forward<F>(f));
  }
  /// This value, or `f(error)` (which returns a `result<T>`).
  template <class F>
  result or_else(F&& f) const& {
    if (has_value()) return *this;
    return std::forward<F>(f)(error());
  }
  template <class F>
  result or_else(F&& f) && {
    if (has_value()) return std::move(*this);
    return std::forward<F>(f)(std::move(*this).error());
  }
  /// This value, or an error with `f(error)` as its error_info.
  template <class F>
  result transform_error(F&& f) const& {
    if (has_value()) return *this;
    return error_info(std::forward<F>(f)(error()));
  }
  template <class F>
  result transform_error(F&& f) && {
    if (has_value()) return std::move(*this);
    return error_info(std::forward<F>(f)(std::move(*this).error()));
  }

 private:
  template <class Self, class F>
  static auto and_then_impl(Self&& self, F&& f) {
    using R = detail::result_of_call<F, decltype(*std::forward<Self>(self))>;
    static_assert(detail::is_result<R>::value, "result::and_then: f must return a result");
    if (!self.has_value()) return R(std::forward<Self>(self).error());
    return std::invoke(std::forward<F>(f), *std::forward<Self>(self));
  }
  template <class Self, class F>
  static auto transform_impl(Self&& self, F&& f) {
    using U = std::remove_cv_t<std::invoke_result_t<F, decltype(*std::forward<Self>(self))>>;
    if (!self.has_value()) return result<U>(std::forward<Self>(self).error());
    if constexpr (std::is_void_v<U>) {
      std::invoke(std::forward<F>(f), *std::forward<Self>(self));
      return result<U>();
    } else {
      return result<U>(std::in_place, std::invoke(std::forward<F>(f), *std::forward<Self>(self)));
    }
  }
  void throw_if_error() const {
    if (const auto* e = std::get_if<1>(&state_)) throw slither::error(*e);
  }
  T& checked_value() {
    if (auto* v = std::get_if<0>(&state_)) return *v;
    error::throw_bad_access("result: the value of a result that holds an error");
  }
  const T& checked_value() const {
    if (const auto* v = std::get_if<0>(&state_)) return *v;
    error::throw_bad_access("result: the value of a result that holds an error");
  }
  error_info& checked_error() {
    if (auto* e = std::get_if<1>(&state_)) return *e;
    error::throw_bad_access("result: the error of a result that holds a value");
  }
  const error_info& checked_error() const {
    if (const auto* e = std::get_if<1>(&state_)) return *e;
    error::throw_bad_access("result: the error of a result that holds a value");
  }

  std::variant<T, error_info> state_;
};

/// Success without a value, or an `error_info`; see `result<T>`.
template <>
class [[nodiscard]] result<void> {
 public:
  using value_type = void;
  using error_type = error_info;
  template <class U>
  using rebind = result<U>;

  result() = default;
  explicit result(std::in_place_t) {}
  result(error_info err) : err_(std::move(err)), ok_(false) {}  // NOLINT: implicit by design

  bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  /// Throws `slither::error` (the held error's code and message) if this holds an error.
  void value() const {
    if (!ok_) throw slither::error(err_);
  }
  /// Throws `slither::error(internal)` if this holds an error.
  void operator*() const {
    if (!ok_) error::throw_bad_access("result: the value of a result that holds an error");
  }
  /// The error; throws `slither::error(internal)` if this holds none.
  error_info& error() & { return checked_error(); }
  const error_info& error() const& {
    if (ok_) error::throw_bad_access("result: the error of a result that holds no error");
    return err_;
  }
  error_info&& error() && { return std::move(checked_error()); }

  /// `f()` (which returns a result), or this error.
  template <class F>
  auto and_then(F&& f) const& {
    using R = detail::result_of_call<F>;
    static_assert(detail::is_result<R>::value, "result::and_then: f must return a result");
    if (!ok_) return R(err_);
    return std::invoke(std::forward<F>(f));
  }
  template <class F>
  auto and_then(F&& f) && {
    using R = detail::result_of_call<F>;
    static_assert(detail::is_result<R>::value, "result::and_then: f must return a result");
    if (!ok_) return R(std::move(err_));
    return std::invoke(std::forward<F>(f));
  }
  /// `result<U>` holding `f()` (`result<void>` if `f` returns void), or this error.
  template <class F>
  auto transform(F&& f) const& {
    using U = std::remove_cv_t<std::invoke_result_t<F>>;
    if (!ok_) return result<U>(err_);
    if constexpr (std::is_void_v<U>) {
      std::invoke(std::forward<F>(f));
      return result<U>();
    } else {
      return result<U>(std::in_place, std::invoke(std::forward<F>(f)));
    }
  }
  /// Success, or `f(error)` (which returns a `result<void>`).
  template <class F>
  result or_else(F&& f) const& {
    if (ok_) return {};
    return std::forward<F>(f)(err_);
  }
  template <class F>
  result or_else(F&& f) && {
    if (ok_) return {};
    return std::forward<F>(f)(std::move(err_));
  }
  /// Success, or an error with `f(error)` as its error_info.
  template <class F>
  result transform_error(F&& f) const& {
    if (ok_) return {};
    return error_info(std::forward<F>(f)(err_));
  }

 private:
  error_info& checked_error() {
    if (ok_) error::throw_bad_access("result: the error of a result that holds no error");
    return err_;
  }

  error_info err_;
  bool ok_ = true;
};

}  // namespace slither

template <>
struct std::is_error_code_enum<slither::errc> : std::true_type {};

/// Evaluates `expr` (a `result`); if it holds an error, returns that error
/// from the enclosing function (which returns any `result<U>`):
/// `SLITHER_TRY(w.put(table, key, v));`
#define SLITHER_TRY(expr)                                            \
  do {                                                               \
    if (auto&& slither_try_result_ = (expr); !slither_try_result_) { \
      return std::move(slither_try_result_).error();                 \
    }                                                                \
  } while (false)

#define SLITHER_TRY_CONCAT_INNER(a, b) a##b
#define SLITHER_TRY_CONCAT(a, b) SLITHER_TRY_CONCAT_INNER(a, b)
/// Evaluates `expr` (a `result<T>`); if it holds an error, returns that error
/// from the enclosing function, else moves its value into `lhs`, which may
/// declare a variable: `SLITHER_TRY_ASSIGN(auto table, find_table(name));`
#define SLITHER_TRY_ASSIGN(lhs, expr) \
  SLITHER_TRY_ASSIGN_IMPL(lhs, expr, SLITHER_TRY_CONCAT(slither_try_result_, __LINE__))
#define SLITHER_TRY_ASSIGN_IMPL(lhs, expr, tmp) \
  auto&& tmp = (expr);                          \
  if (!tmp) return std::move(tmp).error();      \
  lhs = std::move(*tmp)
