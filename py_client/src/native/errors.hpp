// The Python exception hierarchy of slither and the one translator that maps
// `slither::error` (and its `errc`) onto it.
//
// Bad input is always a SlitherError: `InvalidArgument` (also a ValueError),
// and its subclass `InvalidType` (also a TypeError) for an argument of the
// wrong type. Binding code raises them with `raise_invalid_argument` and
// `raise_invalid_type` (args.hpp checks the common arguments), never with
// `nanobind::type_error`, which nanobind turns into a bare TypeError.
#pragma once

#include <string>
#include <string_view>

#include <nanobind/nanobind.h>

#include "slither/core/error.hpp"

namespace slither::py {

/// Creates `SlitherError` and one subclass per `errc`, adds them to `m`, and
/// registers the translator for `slither::error`.
void init_errors(nanobind::module_& m);

/// The Python exception class for `code` (borrowed reference).
PyObject* exception_for(errc code) noexcept;

/// `slither.InvalidType`: an `InvalidArgument` that is also a `TypeError` (borrowed).
PyObject* invalid_type() noexcept;
/// `slither.OutOfRange`: an InvalidArgument that is also an OverflowError.
PyObject* out_of_range() noexcept;

/// Sets the Python error indicator to `type` with `message`, decoded as UTF-8
/// with invalid bytes replaced (U+FFFD): a message may quote a key or path
/// that is not UTF-8, and must still reach the caller as itself.
void set_error(PyObject* type, std::string_view message) noexcept;

/// Raises the Python exception for `info` (sets the error indicator and throws
/// `nanobind::python_error`).
[[noreturn]] void raise(const error_info& info);

/// Raises `slither.InvalidArgument` (a ValueError) with `message`.
[[noreturn]] void raise_invalid_argument(const std::string& message);
/// Raises `slither.InvalidType` (a TypeError) with `message`.
[[noreturn]] void raise_invalid_type(const std::string& message);

/// The name of `obj`'s type, for messages ("str", "numpy.ndarray").
std::string python_type_name(nanobind::handle obj);

/// Sets the Python error for the C++ exception being handled: a
/// `slither::error` as the translator maps it, `std::bad_alloc` as MemoryError,
/// anything else as RuntimeError. Call only inside a catch block.
void set_current_exception() noexcept;

/// Runs `f` (returning a nanobind::object) for a function bound as a raw
/// CPython slot or method, past nanobind's dispatcher: its result as a new
/// reference, or nullptr with the Python error set for whatever it threw.
template <class F>
PyObject* raw_call(F&& f) noexcept {
  try {
    return f().release().ptr();
  } catch (nanobind::python_error& e) {
    e.restore();
  } catch (...) {
    set_current_exception();
  }
  return nullptr;
}

/// The value of `r`, or the matching Python exception.
template <class T>
T take(result<T>&& r) {
  if (!r) raise(r.error());
  return std::move(*r);
}
inline void take(result<void>&& r) {
  if (!r) raise(r.error());
}

}  // namespace slither::py
