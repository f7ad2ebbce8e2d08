#include "convert.hpp"

#include <cstdint>
#include <memory>
#include <vector>

#include <nanobind/ndarray.h>

#include "errors.hpp"
#include "slither/core/codec.hpp"
#include "value_path.hpp"

namespace nb = nanobind;

namespace slither::py {

std::string render(const path_node& node) {
  if (!node.parent) return std::string(node.root);
  std::string out = render(*node.parent);
  if (node.index >= 0) return out + "[" + std::to_string(node.index) + "]";
  out += "['";
  out += node.map_key;
  return out + "']";
}

void raise_at(PyObject* type, const path_node& at, const std::string& what) {
  set_error(type, render(at) + ": " + what);
  throw nb::python_error();
}

std::string py_type_name(nb::handle obj) {
  return nb::type_name(obj.type()).c_str();
}

namespace {

// The message of the Python error being raised, which this clears; `buffer_error` says
// whether it was a BufferError (a buffer of the wrong layout, not of the wrong kind).
std::string take_error_message(bool* buffer_error = nullptr) {
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  const nb::object t = nb::steal(type), v = nb::steal(value), b = nb::steal(tb);
  if (buffer_error != nullptr) {
    *buffer_error = t.is_valid() && PyErr_GivenExceptionMatches(t.ptr(), PyExc_BufferError);
  }
  PyObject* text = v.is_valid() ? PyObject_Str(v.ptr()) : nullptr;
  const char* utf8 = text != nullptr ? PyUnicode_AsUTF8(text) : nullptr;
  std::string out = utf8 != nullptr ? utf8 : "no buffer";
  Py_XDECREF(text);
  PyErr_Clear();
  return out;
}

}  // namespace

void export_contiguous(nb::handle obj, Py_buffer& view, nb::object& source, const path_node& at) {
  constexpr int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT;
  source = nb::borrow(obj);
  if (PyObject_GetBuffer(obj.ptr(), &view, flags) == 0) return;
  bool strided = false;
  std::string why = take_error_message(&strided);
  // A strided view (a numpy slice, a transpose, a sliced memoryview) is stored as a
  // contiguous copy. numpy says "not contiguous" with a ValueError, a memoryview with a
  // BufferError; any other failure (a dtype numpy cannot export, a released memoryview,
  // which numpy would wrap as an object array) is the answer.
  const nb::object np = numpy_available() ? nb::module_::import_("numpy") : nb::object();
  if (np.is_valid() && (strided || PyObject_IsInstance(obj.ptr(), np.attr("ndarray").ptr()) == 1)) {
    PyObject* copy = PyObject_CallOneArg(np.attr("ascontiguousarray").ptr(), obj.ptr());
    if (copy != nullptr && PyObject_GetBuffer(copy, &view, flags) == 0) {
      source = nb::steal(copy);
      return;
    }
    Py_XDECREF(copy);
    why = take_error_message();
  }
  raise_at(invalid_type(), at,
           "buffer of type '" + py_type_name(obj) + "' has no Value form (" + why + ")");
}

PyObject* numpy_generic() {
  static PyObject* generic = nullptr;
  if (!generic) {
    PyObject* modules = PySys_GetObject("modules");  // borrowed
    PyObject* np = modules ? PyDict_GetItemString(modules, "numpy") : nullptr;
    if (!np) return nullptr;
    generic = PyObject_GetAttrString(np, "generic");  // kept for the process lifetime
    if (!generic) PyErr_Clear();
  }
  return generic;
}

namespace {

struct buffer_release {
  void operator()(Py_buffer* b) const noexcept {
    // The Value may be dropped in code that released the GIL.
    const PyGILState_STATE state = PyGILState_Ensure();
    PyBuffer_Release(b);
    PyGILState_Release(state);
    delete b;
  }
};

}  // namespace

std::optional<std::string_view> utf8_bytes_slow(PyObject* s, nb::object& holder) {
  Py_ssize_t n = 0;
  if (const char* p = PyUnicode_AsUTF8AndSize(s, &n)) {
    return std::string_view(p, static_cast<std::size_t>(n));
  }
  PyErr_Clear();
  // Strings decoded from bytes that are not UTF-8 (surrogateescape) encode back to them.
  holder = nb::steal(PyUnicode_AsEncodedString(s, "utf-8", "surrogateescape"));
  if (!holder) {
    PyErr_Clear();
    return std::nullopt;
  }
  return std::string_view(PyBytes_AS_STRING(holder.ptr()),
                          static_cast<std::size_t>(PyBytes_GET_SIZE(holder.ptr())));
}

std::optional<dtype> dtype_of_format(const char* format, Py_ssize_t itemsize) {
  std::string_view f = format ? format : "B";
  if (!f.empty() && (f[0] == '@' || f[0] == '=' || f[0] == '<')) f.remove_prefix(1);
  if (f.size() != 1) return std::nullopt;
  // Integer codes name C types whose size varies ('l' is 8 bytes here, 4 on
  // Windows), so the item size decides; the others have one size each.
  constexpr dtype signed_of[] = {dtype::i8, dtype::i16, dtype::i32, dtype::i64};
  constexpr dtype unsigned_of[] = {dtype::u8, dtype::u16, dtype::u32, dtype::u64};
  const int log2 = itemsize == 1   ? 0
                   : itemsize == 2 ? 1
                   : itemsize == 4 ? 2
                   : itemsize == 8 ? 3
                                   : -1;
  std::optional<dtype> out;
  switch (f[0]) {
    case 'b':
    case 'h':
    case 'i':
    case 'l':
    case 'q':
      if (log2 >= 0) out = signed_of[log2];
      break;
    case 'B':
    case 'H':
    case 'I':
    case 'L':
    case 'Q':
      if (log2 >= 0) out = unsigned_of[log2];
      break;
    case '?':
      out = dtype::boolean;
      break;
    case 'e':
      out = dtype::f16;
      break;
    case 'f':
      out = dtype::f32;
      break;
    case 'd':
      out = dtype::f64;
      break;
    default:
      break;
  }
  if (out && dtype_size(*out) != static_cast<std::size_t>(itemsize)) return std::nullopt;
  return out;
}

namespace {

Value buffer_to_value(nb::handle obj, const path_node& at) {
  auto buf = std::make_unique<Py_buffer>();
  nb::object source;
  export_contiguous(obj, *buf, source, at);
  // From here on the buffer is held: it is released (with the GIL) with the Value.
  std::shared_ptr<Py_buffer> held(buf.release(), buffer_release{});
  const auto type = dtype_of_format(held->format, held->itemsize);
  if (!type) {
    raise_at(invalid_type(), at,
             "array of element format '" + std::string(held->format ? held->format : "B") +
                 "' has no Value form (supported: " + supported_dtypes + ")");
  }
  if (static_cast<std::size_t>(held->ndim) > ndarray::max_ndim)
    raise_at(exception_for(errc::invalid_argument), at,
             "array has " + std::to_string(held->ndim) + " dimensions, more than " +
                 std::to_string(ndarray::max_ndim));
  std::vector<std::uint64_t> shape(static_cast<std::size_t>(held->ndim));
  for (int i = 0; i < held->ndim; ++i) shape[i] = static_cast<std::uint64_t>(held->shape[i]);
  const auto* data = static_cast<const std::byte*>(held->buf);
  return ndarray::view(*type, std::move(shape), data, std::move(held));
}

Value convert(nb::handle obj, const path_node& at, std::uint32_t depth) {
  PyObject* o = obj.ptr();
  if (o == Py_None) return nullptr;
  if (PyBool_Check(o)) return o == Py_True;
  if (PyLong_Check(o)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow != 0) {
      raise_at(out_of_range(), at,
               "int " + std::string(nb::str(obj).c_str()) + " is out of the int64 range");
    }
    if (v == -1 && PyErr_Occurred()) throw nb::python_error();
    return static_cast<std::int64_t>(v);
  }
  if (PyFloat_Check(o)) return PyFloat_AS_DOUBLE(o);
  if (PyUnicode_Check(o)) {
    nb::object holder;
    const auto s = utf8_bytes(o, holder);
    if (!s) raise_at(exception_for(errc::invalid_argument), at, "str is not encodable as UTF-8");
    return std::string(*s);
  }
  if (PyBytes_Check(o))
    return Bytes{std::string(PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o)))};
  if (PyByteArray_Check(o))
    return Bytes{
        std::string(PyByteArray_AS_STRING(o), static_cast<std::size_t>(PyByteArray_GET_SIZE(o)))};

  const bool is_list = PyList_Check(o), is_tuple = PyTuple_Check(o), is_dict = PyDict_Check(o);
  if ((is_list || is_tuple || is_dict) && depth >= decode_limits{}.max_depth) {
    raise_at(exception_for(errc::limit_exceeded), at,
             "nested deeper than " + std::to_string(decode_limits{}.max_depth) + " levels");
  }
  if (is_list || is_tuple) {
    nb::object seq = nb::borrow(obj);  // keeps a list alive while elements are converted
    List out;
    const Py_ssize_t n = is_list ? PyList_GET_SIZE(o) : PyTuple_GET_SIZE(o);
    out.reserve(static_cast<std::size_t>(n));
    for (Py_ssize_t i = 0; i < (is_list ? PyList_GET_SIZE(o) : n); ++i) {
      nb::object item = nb::borrow(is_list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i));
      path_node child{&at, {}, {}, i};
      out.push_back(convert(item, child, depth + 1));
    }
    return out;
  }
  if (is_dict) {
    Map out;
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(o, &pos, &key, &val)) {
      nb::object k = nb::borrow(key), v = nb::borrow(val);
      if (!PyUnicode_Check(key)) {
        raise_at(invalid_type(), at,
                 "map key " + std::string(nb::repr(k).c_str()) + " of type '" + py_type_name(k) +
                     "' is not a str (Value maps have str keys)");
      }
      nb::object holder;
      const auto s = utf8_bytes(key, holder);
      if (!s)
        raise_at(exception_for(errc::invalid_argument), at, "map key is not encodable as UTF-8");
      const std::string_view name = *s;
      path_node child{&at, {}, name, -1};
      out.insert_or_assign(std::string(name), convert(v, child, depth + 1));
    }
    return out;
  }
  if (PyObject* generic = numpy_generic(); generic && PyObject_IsInstance(o, generic) == 1) {
    // A numpy scalar (np.float32(1.5), np.int64(3)): store the Python scalar it stands for.
    return convert(obj.attr("item")(), at, depth);
  }
  if (PyObject_CheckBuffer(o)) return buffer_to_value(obj, at);
  raise_at(invalid_type(), at, "object of type '" + py_type_name(obj) + "' has no Value form");
}

nb::dlpack::dtype dlpack_dtype(dtype t) {
  switch (t) {
    case dtype::u8:
      return nb::dtype<std::uint8_t>();
    case dtype::i32:
      return nb::dtype<std::int32_t>();
    case dtype::i64:
      return nb::dtype<std::int64_t>();
    case dtype::f32:
      return nb::dtype<float>();
    case dtype::f64:
      return nb::dtype<double>();
    case dtype::boolean:
      return nb::dtype<bool>();
    case dtype::i8:
      return nb::dtype<std::int8_t>();
    case dtype::i16:
      return nb::dtype<std::int16_t>();
    case dtype::u16:
      return nb::dtype<std::uint16_t>();
    case dtype::u32:
      return nb::dtype<std::uint32_t>();
    case dtype::u64:
      return nb::dtype<std::uint64_t>();
    case dtype::f16:
      return {static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
  }
  return nb::dtype<std::uint8_t>();
}

template <class Framework>
nb::object make_array(const ndarray& array, nb::handle owner) {
  const std::span<const std::uint64_t> dims = array.shape();
  std::vector<std::size_t> shape(dims.begin(), dims.end());
  void* data = const_cast<std::byte*>(array.data());
  if (array.writable()) {
    nb::ndarray<Framework> out(data, shape.size(), shape.data(), owner, nullptr,
                               dlpack_dtype(array.type()));
    return nb::cast(out, nb::rv_policy::reference);
  }
  nb::ndarray<Framework, nb::ro> out(data, shape.size(), shape.data(), owner, nullptr,
                                     dlpack_dtype(array.type()));
  return nb::cast(out, nb::rv_policy::reference);
}

}  // namespace

bool numpy_available() {
  static const bool available = [] {
    try {
      nb::module_::import_("numpy");
      return true;
    } catch (const nb::python_error&) {
      return false;
    }
  }();
  return available;
}

Value to_value(nb::handle obj, std::string_view root) {
  path_node at{nullptr, root, {}, -1};
  return convert(obj, at, 0);
}

nb::object array_to_python(const ndarray& array) {
  nb::capsule owner(new ndarray(array), [](void* p) noexcept { delete static_cast<ndarray*>(p); });
  return numpy_available() ? make_array<nb::numpy>(array, owner)
                           : make_array<nb::memview>(array, owner);
}

nb::object text_to_python(Value::kind kind, std::string_view text) {
  PyObject* out =
      kind == Value::kind::bytes
          ? PyBytes_FromStringAndSize(text.data(), static_cast<Py_ssize_t>(text.size()))
          // surrogateescape: text written by a C++ producer that is not UTF-8 still arrives.
          : PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()),
                                 "surrogateescape");
  if (!out) throw nb::python_error();
  return nb::steal(out);
}

nb::object to_python(const Value& value) {
  switch (value.type()) {
    case Value::kind::null:
      return nb::none();
    case Value::kind::boolean:
      return nb::bool_(value.as<bool>());
    case Value::kind::int64:
      return nb::int_(value.as<std::int64_t>());
    case Value::kind::float64:
      return nb::float_(value.as<double>());
    case Value::kind::string:
      return text_to_python(Value::kind::string, value.as<std::string>());
    case Value::kind::bytes:
      return text_to_python(Value::kind::bytes, value.as<Bytes>().data);
    case Value::kind::list: {
      const List& items = value.as<List>();
      nb::list out;
      for (const Value& item : items) out.append(to_python(item));
      return out;
    }
    case Value::kind::map: {
      nb::dict out;
      // Keys as text_to_python makes strings (surrogateescape), as the direct decoder does.
      for (const auto& [k, v] : value.as<Map>())
        out[text_to_python(Value::kind::string, k)] = to_python(v);
      return out;
    }
    case Value::kind::ndarray:
      return array_to_python(value.as<ndarray>());
  }
  throw slither::error(errc::internal, "value of unknown kind");
}

std::string_view key_view_slow(nb::handle obj, const char* what) {
  PyObject* o = obj.ptr();
  if (PyUnicode_Check(o)) {
    Py_ssize_t size = 0;
    const char* s = PyUnicode_AsUTF8AndSize(o, &size);
    if (!s) {
      PyErr_Clear();
      raise_invalid_argument(std::string(what) + " is not encodable as UTF-8");
    }
    return {s, static_cast<std::size_t>(size)};
  }
  if (PyBytes_Check(o))
    return {PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o))};
  raise_invalid_type(std::string(what) + " must be str or bytes, not '" + py_type_name(obj) + "'");
}

nb::object key_to_python(std::string_view key) {
  PyObject* s = PyUnicode_DecodeUTF8(key.data(), static_cast<Py_ssize_t>(key.size()), nullptr);
  if (s) return nb::steal(s);
  PyErr_Clear();
  return nb::steal(PyBytes_FromStringAndSize(key.data(), static_cast<Py_ssize_t>(key.size())));
}

}  // namespace slither::py
