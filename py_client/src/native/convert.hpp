// Conversion between Python objects and slither::Value.
//
// Python -> Value: None, bool, int (int64 range), float, str, bytes/bytearray,
// list/tuple, dict with str keys, numpy scalars, and any C-contiguous buffer of
// a supported dtype (numpy arrays, memoryviews) as an ndarray that refers to
// the Python buffer without copying. Anything else raises TypeError naming the
// type and the path of the offending element, e.g. "value['a'][2]".
//
// Value -> Python: the same kinds back; an ndarray becomes a numpy array when
// numpy is importable, a memoryview otherwise, in both cases over the
// ndarray's own memory, which the Python object keeps alive.
#pragma once

#include <string>
#include <string_view>

#include <nanobind/nanobind.h>

#include "slither/core/value.hpp"

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

/// True if `import numpy` works in this interpreter (checked once).
bool numpy_available();

/// A key given as str (encoded UTF-8) or bytes. Raises TypeError otherwise.
/// The view is valid while `obj` lives.
std::string_view key_view(nanobind::handle obj, const char* what = "key");

/// A key for Python: str when it is valid UTF-8, bytes otherwise.
nanobind::object key_to_python(std::string_view key);

}  // namespace slither::py
