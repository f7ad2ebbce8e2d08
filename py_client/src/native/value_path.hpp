// Where an element sits inside a Python object being converted or encoded,
// rendered only for error messages ("value['a'][2]"), so that walking large
// containers builds no strings.
#pragma once

#include <string>
#include <string_view>

#include <nanobind/nanobind.h>

namespace slither::py {

/// One step of a path: the root, a map key or a list index.
struct path_node {
  const path_node* parent = nullptr;
  std::string_view root;     ///< set on the root only
  std::string_view map_key;  ///< set for a map element
  Py_ssize_t index = -1;     ///< set for a list element
};

/// "value['a'][2]" for the node `at`.
std::string render(const path_node& at);

/// Raises `type` with "<path>: <what>".
[[noreturn]] void raise_at(PyObject* type, const path_node& at, const std::string& what);

/// The name of `obj`'s type, for messages.
std::string py_type_name(nanobind::handle obj);

}  // namespace slither::py
