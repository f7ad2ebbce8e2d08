#include "errors.hpp"

#include <array>
#include <exception>
#include <new>
#include <string>

namespace nb = nanobind;

namespace slither::py {
namespace {

struct exception_def {
  errc code;
  const char* name;
  PyObject* builtin_base;  // a standard exception it also derives from, or nullptr
  const char* doc;
};

constexpr std::size_t errc_count = static_cast<std::size_t>(errc::shutting_down) + 1;

// Filled once by init_errors; index = errc. Entry 0 (ok) is the base class.
std::array<PyObject*, errc_count> classes{};
PyObject* invalid_type_class = nullptr;
PyObject* out_of_range_class = nullptr;

std::array<exception_def, errc_count - 1> definitions() {
  return {{
      {errc::invalid_argument, "InvalidArgument", PyExc_ValueError,
       "A malformed argument: a bad name, dtype, shape or key."},
      {errc::not_found, "NotFound", PyExc_KeyError, "Unknown store, table, key or view."},
      {errc::decode_error, "DecodeError", PyExc_ValueError, "Bytes that are not a valid encoding."},
      {errc::limit_exceeded, "LimitExceeded", nullptr,
       "A size, depth or count over a configured limit."},
      {errc::io_error, "IoError", PyExc_OSError, "An operating-system call failed."},
      {errc::no_space, "NoSpace", nullptr, "The machine (e.g. /dev/shm) has no room left."},
      {errc::layout_mismatch, "LayoutMismatch", nullptr,
       "A shared segment written by an incompatible build."},
      {errc::writer_gone, "WriterGone", nullptr, "The process owning a store is no longer alive."},
      {errc::already_exists, "AlreadyExists", nullptr, "A live owner already holds the name."},
      {errc::conflict, "Conflict", nullptr, "A compare-and-set saw another version."},
      {errc::busy, "Busy", nullptr, "A bounded queue is full; retry later."},
      {errc::timeout, "Timeout", PyExc_TimeoutError, "A deadline passed before an answer came."},
      {errc::unavailable, "BrokerUnavailable", PyExc_ConnectionError,
       "The broker cannot be reached."},
      {errc::protocol_error, "ProtocolError", nullptr, "A peer broke the wire protocol."},
      {errc::internal, "InternalError", nullptr, "A bug in slither: an invariant did not hold."},
      {errc::shutting_down, "ShuttingDown", PyExc_ConnectionError,
       "The broker is stopping: the request was refused and nothing was applied."},
  }};
}

// Builds `slither.<name>` with the given bases; `code` is its errc name.
PyObject* make_class(const char* name, const char* doc, nb::handle bases, std::string_view code) {
  nb::dict attrs;
  attrs["code"] = nb::str(code.data(), code.size());
  // KeyError's __str__ quotes its message; every slither error reads as plain text.
  attrs["__str__"] = nb::handle(PyExc_Exception).attr("__str__");
  const std::string qualified = std::string("slither.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), attrs.ptr());
  if (!cls) throw nb::python_error();
  return cls;
}

}  // namespace

PyObject* exception_for(errc code) noexcept {
  const auto i = static_cast<std::size_t>(code);
  return i < classes.size() && classes[i] ? classes[i] : classes[0];
}

PyObject* invalid_type() noexcept {
  return invalid_type_class;
}

PyObject* out_of_range() noexcept {
  return out_of_range_class;
}

void set_error(PyObject* type, std::string_view message) noexcept {
  PyObject* text =
      PyUnicode_DecodeUTF8(message.data(), static_cast<Py_ssize_t>(message.size()), "replace");
  if (text == nullptr) return;  // no memory: that error is set instead
  PyErr_SetObject(type, text);
  Py_DECREF(text);
}

void raise(const error_info& info) {
  set_error(exception_for(info.code), info.message);
  throw nb::python_error();
}

void raise_invalid_argument(const std::string& message) {
  raise(fail(errc::invalid_argument, message));
}

void raise_invalid_type(const std::string& message) {
  set_error(invalid_type_class, message);
  throw nb::python_error();
}

void set_current_exception() noexcept {
  try {
    throw;
  } catch (const slither::error& e) {
    set_error(exception_for(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& e) {
    set_error(PyExc_RuntimeError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_SystemError, "an unknown C++ exception");
  }
}

std::string python_type_name(nb::handle obj) {
  return Py_TYPE(obj.ptr())->tp_name;
}

void init_errors(nb::module_& m) {
  classes[0] = make_class("SlitherError", "Base class of every error raised by slither.",
                          nb::make_tuple(nb::handle(PyExc_Exception)), "error");
  m.attr("SlitherError") = nb::handle(classes[0]);
  for (const auto& def : definitions()) {
    nb::object bases = def.builtin_base
                           ? nb::make_tuple(nb::handle(classes[0]), nb::handle(def.builtin_base))
                           : nb::make_tuple(nb::handle(classes[0]));
    PyObject* cls = make_class(def.name, def.doc, bases, to_string(def.code));
    classes[static_cast<std::size_t>(def.code)] = cls;
    m.attr(def.name) = nb::handle(cls);
  }
  invalid_type_class =
      make_class("InvalidType",
                 "An argument of the wrong type (e.g. a str where (key, value) pairs belong).\n"
                 "An InvalidArgument that is also a TypeError.",
                 nb::make_tuple(nb::handle(exception_for(errc::invalid_argument)),
                                nb::handle(PyExc_TypeError)),
                 to_string(errc::invalid_argument));
  m.attr("InvalidType") = nb::handle(invalid_type_class);
  out_of_range_class = make_class("OutOfRange",
                                  "A number outside what a Value holds (an int beyond int64).\n"
                                  "An InvalidArgument that is also an OverflowError.",
                                  nb::make_tuple(nb::handle(exception_for(errc::invalid_argument)),
                                                 nb::handle(PyExc_OverflowError)),
                                  to_string(errc::invalid_argument));
  m.attr("OutOfRange") = nb::handle(out_of_range_class);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const slither::error& e) {
      set_error(exception_for(e.code()), e.what());
    }
  });
}

}  // namespace slither::py
