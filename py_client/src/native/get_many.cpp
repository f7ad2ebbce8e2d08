// Reader.get_many's keys and values (get_many.hpp).
#include "get_many.hpp"

#include <exception>
#include <string>

#include "convert.hpp"
#include "errors.hpp"
#include "pycodec.hpp"
#include "slither/core/codec.hpp"
#include "slither/core/wire.hpp"

namespace nb = nanobind;

namespace slither::py {

key_batch key_batch_arg(nb::handle keys) {
  if (PyUnicode_Check(keys.ptr()) || PyBytes_Check(keys.ptr())) {
    raise_invalid_type("keys must be an iterable of keys, not a single '" + python_type_name(keys) +
                       "'");
  }
  key_batch out;
  // A tuple of the keys holds them (and their UTF-8 forms) while the views
  // are used; a list or tuple given is copied as references, not iterated.
  out.held = nb::steal(PySequence_Tuple(keys.ptr()));
  if (!out.held) {
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw nb::python_error();
    PyErr_Clear();
    raise_invalid_type("keys must be an iterable of keys, not '" + python_type_name(keys) + "'");
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(out.held.ptr());
  out.views.reserve(static_cast<std::size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* k = PyTuple_GET_ITEM(out.held.ptr(), i);
    if (PyUnicode_Check(k)) {
      if (auto ascii = compact_ascii(k)) {
        out.views.push_back(*ascii);
        continue;
      }
    } else if (PyBytes_Check(k)) {
      out.views.emplace_back(PyBytes_AS_STRING(k), static_cast<std::size_t>(PyBytes_GET_SIZE(k)));
      continue;
    }
    const std::string what = "keys[" + std::to_string(i) + "]";
    out.views.push_back(key_view_slow(k, what.c_str()));
  }
  return out;
}

namespace {

// A short `bytes` value (the codec's version byte, its bytes tag, a one-byte
// length under 128, the bytes), built directly, as `get` does: the common
// small value skips the decoder's set-up. Null for every other encoding
// (and with a Python error set if the bytes object could not be made).
PyObject* short_bytes(std::span<const std::byte> enc) noexcept {
  const auto* b = reinterpret_cast<const std::uint8_t*>(enc.data());
  if (enc.size() < 3 || b[0] != codec_version || b[1] != wire::bytes_tag || b[2] >= 0x80 ||
      enc.size() != 3u + b[2]) {
    return nullptr;
  }
  return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(b + 3), b[2]);
}

}  // namespace

nb::list values_to_python(const shm::reader& rd, std::string_view table,
                          std::span<const std::string_view> keys, nb::handle default_) {
  nb::list out = nb::steal<nb::list>(PyList_New(static_cast<Py_ssize_t>(keys.size())));
  if (!out) throw nb::python_error();
  // A Python error must not unwind through the store's read: kept, raised after.
  std::exception_ptr failure;
  auto read = rd.get_many(table, keys, [&](std::size_t i, const shm::reader::scanned* e) {
    try {
      nb::object v;
      if (e == nullptr) {
        v = nb::borrow(default_);
      } else if (e->is_ndarray) {
        v = to_python(e->value());  // a copy, as `get` returns
      } else if (PyObject* small = short_bytes(e->bytes)) {
        v = nb::steal(small);
      } else {
        if (PyErr_Occurred()) throw nb::python_error();
        decode_limits limits;
        limits.max_message_bytes = std::max(limits.max_message_bytes, e->bytes.size());
        v = decode_object(e->bytes, limits);
      }
      PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), v.release().ptr());
      return true;
    } catch (...) {
      failure = std::current_exception();
      return false;
    }
  });
  // Items past a failure stay null: the list is dropped, and frees only what it holds.
  if (failure) std::rethrow_exception(failure);
  take(std::move(read));
  return out;
}

}  // namespace slither::py
