// Conversion between Python objects and slither::Value.
//
// Python -> Value: None, bool, int (int64 range), float, str, bytes/bytearray,
// list/tuple, dict with str keys, numpy scalars, and any C-contiguous buffer of
// a supported dtype (numpy arrays, memoryviews) as an ndarray that refers to
// the Python buffer without copying. Anything else raises InvalidType (a
// SlitherError and a TypeError) naming the
// type and the path of the offending element, e.g. "value['a'][2]".
//
// Value -> Python: the same kinds back; an ndarray becomes a numpy array when
// numpy is importable, a memoryview otherwise, in both cases over the
// ndarray's own memory, which the Python object keeps alive.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nanobind/nanobind.h>

#include "slither/core/value.hpp"
#include "value_path.hpp"

namespace slither::py {

/// Converts `obj`; `root` names it in error messages ("value", "entries['k']").
/// Needs the GIL. The result may refer to Python buffers: release it with the GIL held
/// or after re-acquiring it (its owner handles take the GIL themselves).
Value to_value(nanobind::handle obj, std::string_view root = "value");

/// Converts a value to a new Python object. Needs the GIL.
nanobind::object to_python(const Value& value);
/// A Python `bytes` (kind bytes) or `str` (kind string, UTF-8 with surrogateescape).
nanobind::object text_to_python(Value::kind kind, std::string_view text);

/// A numpy array (or memoryview without numpy) over `array`'s memory; the
/// returned object holds a copy of `array`, and so its owner, until it is freed.
nanobind::object array_to_python(const ndarray& array);

/// Exports `obj`'s buffer, C-contiguous and with its format, into `view` (release it
/// with PyBuffer_Release); a strided numpy array goes through a contiguous copy, which
/// `source` then refers to. Raises InvalidType at `at` with Python's reason (a dtype
/// numpy cannot export, a released memoryview, a strided buffer without numpy) if
/// there is no such buffer. Needs the GIL.
void export_contiguous(nanobind::handle obj, Py_buffer& view, nanobind::object& source,
                       const path_node& at);

/// True if `import numpy` works in this interpreter (checked once).
bool numpy_available();

/// `numpy.generic` (the base of numpy scalars) once numpy has been imported
/// by someone, else nullptr: numpy scalars only exist after that, so nothing
/// imports numpy just to check. Borrowed.
PyObject* numpy_generic();

/// The part of `utf8_bytes` for a str that is not compact ASCII.
std::optional<std::string_view> utf8_bytes_slow(PyObject* s, nanobind::object& holder);

/// The characters of the str `s`, in place, if CPython stores it as compact
/// ASCII (its bytes are then its UTF-8); nullopt otherwise.
inline std::optional<std::string_view> compact_ascii(PyObject* s) noexcept {
#if PY_VERSION_HEX < 0x030C0000
  const bool ascii = PyUnicode_IS_READY(s) && PyUnicode_IS_COMPACT_ASCII(s);
#else
  const bool ascii = PyUnicode_IS_COMPACT_ASCII(s);
#endif
  if (!ascii) return std::nullopt;
  return std::string_view(static_cast<const char*>(PyUnicode_DATA(s)),
                          static_cast<std::size_t>(PyUnicode_GET_LENGTH(s)));
}

/// The UTF-8 bytes of the str `s`: in place for a compact ASCII string, else
/// from the UTF-8 form CPython caches; a lone surrogate U+DC80..U+DCFF (what
/// decoding with surrogateescape makes of a byte that is not UTF-8) becomes
/// that byte again, with `holder` keeping the bytes alive. nullopt (no Python
/// error set) for a str with other lone surrogates.
inline std::optional<std::string_view> utf8_bytes(PyObject* s, nanobind::object& holder) {
  if (auto ascii = compact_ascii(s)) return ascii;
  return utf8_bytes_slow(s, holder);
}

/// The element type of a buffer of struct-module `format` and `itemsize`, or
/// nullopt for one with no `ndarray` form.
std::optional<dtype> dtype_of_format(const char* format, Py_ssize_t itemsize);
/// The element types an array may have, for error messages.
inline constexpr const char* supported_dtypes =
    "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64";

/// `key_view` for every key that is neither bytes nor a compact ASCII str.
std::string_view key_view_slow(nanobind::handle obj, const char* what);

/// A key given as str (encoded UTF-8) or bytes. Raises InvalidType otherwise
/// (InvalidArgument for a str that has no UTF-8 form).
/// The view is valid while `obj` lives. Inline for the common keys (bytes, and
/// str that CPython stores as compact ASCII: its bytes are its UTF-8), which
/// every read converts, so they cost no call.
inline std::string_view key_view(nanobind::handle obj, const char* what = "key") {
  PyObject* o = obj.ptr();
  if (PyUnicode_Check(o)) {
    if (auto ascii = compact_ascii(o)) return *ascii;
  } else if (PyBytes_Check(o)) {
    return {PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o))};
  }
  return key_view_slow(obj, what);
}

/// A key for Python: str when it is valid UTF-8, bytes otherwise.
nanobind::object key_to_python(std::string_view key);

}  // namespace slither::py
