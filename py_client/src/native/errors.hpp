// The Python exception hierarchy of slither and the one translator that maps
// `slither::error` (and its `errc`) onto it.
#pragma once

#include <nanobind/nanobind.h>

#include "slither/core/error.hpp"

namespace slither::py {

/// Creates `SlitherError` and one subclass per `errc`, adds them to `m`, and
/// registers the translator for `slither::error`.
void init_errors(nanobind::module_& m);

/// The Python exception class for `code` (borrowed reference).
PyObject* exception_for(errc code) noexcept;

/// Raises the Python exception for `info` (sets the error indicator and throws
/// `nanobind::python_error`).
[[noreturn]] void raise(const error_info& info);

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
