#include "args.hpp"

#include <string>

#include "errors.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

std::string_view utf8(nb::handle obj, const char* what) {
  Py_ssize_t size = 0;
  const char* text = PyUnicode_AsUTF8AndSize(obj.ptr(), &size);
  if (text == nullptr) {
    PyErr_Clear();
    raise_invalid_argument(std::string(what) + " is not encodable as UTF-8");
  }
  return {text, static_cast<std::size_t>(size)};
}

}  // namespace

std::string_view name_arg(nb::handle obj, const char* what) {
  if (!PyUnicode_Check(obj.ptr())) {
    raise_invalid_type(std::string(what) + " must be a str, not '" + python_type_name(obj) + "'");
  }
  return utf8(obj, what);
}

std::filesystem::path path_arg(nb::handle obj, const char* what) {
  nb::object path = nb::steal(PyOS_FSPath(obj.ptr()));
  if (!path) {
    PyErr_Clear();
    raise_invalid_type(std::string(what) + " must be a str or os.PathLike, not '" +
                       python_type_name(obj) + "'");
  }
  if (PyBytes_Check(path.ptr())) {
    return std::string(PyBytes_AS_STRING(path.ptr()),
                       static_cast<std::size_t>(PyBytes_GET_SIZE(path.ptr())));
  }
  return std::string(name_arg(path, what));
}

}  // namespace slither::py
