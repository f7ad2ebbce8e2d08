// Python objects straight into the wire format (see pycodec.hpp).
#include <cstdint>
#include <string>

#include "convert.hpp"
#include "errors.hpp"
#include "pycodec.hpp"
#include "value_path.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

constexpr std::uint32_t max_depth = decode_limits{}.max_depth;

// A str's UTF-8 bytes (see utf8_bytes); `holder` keeps them alive if needed.
std::string_view utf8_of(PyObject* s, nb::object& holder, const path_node& at, const char* what) {
  const auto bytes = utf8_bytes(s, holder);
  if (!bytes)
    raise_at(exception_for(errc::invalid_argument), at,
             std::string(what) + " is not encodable as UTF-8");
  return *bytes;
}

// Releases a Py_buffer on scope exit.
struct buffer_view {
  Py_buffer view{};
  bool held = false;
  buffer_view() = default;
  buffer_view(const buffer_view&) = delete;
  buffer_view& operator=(const buffer_view&) = delete;
  ~buffer_view() {
    if (held) PyBuffer_Release(&view);
  }
};

class encoder {
 public:
  encoder(wire::writer& w, PyObject* out_of_band) noexcept : w_(w), oob_(out_of_band) {}

  // Exact types first, in the order they are common; subclasses and the rest
  // out of line.
  void value(PyObject* o, const path_node& at, std::uint32_t depth) {
    PyTypeObject* t = Py_TYPE(o);
    if (t == &PyUnicode_Type) return text(o, at);
    if (t == &PyLong_Type) return integer(o, at);
    if (t == &PyFloat_Type) return w_.real(PyFloat_AS_DOUBLE(o));
    if (t == &PyDict_Type) return dict(o, at, depth);
    if (t == &PyList_Type || t == &PyTuple_Type) return sequence(o, at, depth);
    if (o == Py_None) return w_.null();
    if (t == &PyBool_Type) return w_.boolean(o == Py_True);
    other(o, at, depth);
  }

 private:
  void text(PyObject* o, const path_node& at) {
    nb::object holder;
    w_.string(utf8_of(o, holder, at, "str"));
  }

  void integer(PyObject* o, const path_node& at) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow != 0) {
      raise_at(out_of_range(), at,
               "int " + std::string(nb::str(o).c_str()) + " is out of the int64 range");
    }
    if (v == -1 && PyErr_Occurred()) throw nb::python_error();
    w_.integer(v);
  }

  void check_depth(const path_node& at, std::uint32_t depth) {
    if (depth >= max_depth) {
      raise_at(exception_for(errc::limit_exceeded), at,
               "nested deeper than " + std::to_string(max_depth) + " levels");
    }
  }

  void dict(PyObject* o, const path_node& at, std::uint32_t depth) {
    check_depth(at, depth);
    const Py_ssize_t n = PyDict_GET_SIZE(o);
    w_.map_header(static_cast<std::size_t>(n));
    Py_ssize_t pos = 0, seen = 0;
    PyObject *key, *val;
    while (PyDict_Next(o, &pos, &key, &val)) {
      // Held while encoded: a finalizer run by an allocation may change the dict.
      const nb::object k = nb::borrow(key), v = nb::borrow(val);
      if (!PyUnicode_Check(key)) {
        raise_at(invalid_type(), at,
                 "map key " + std::string(nb::repr(k).c_str()) + " of type '" + py_type_name(k) +
                     "' is not a str (Value maps have str keys)");
      }
      nb::object holder;
      const std::string_view name = utf8_of(key, holder, at, "map key");
      w_.string(name);
      const path_node child{&at, {}, name, -1};
      value(val, child, depth + 1);
      ++seen;
    }
    if (seen != n || PyDict_GET_SIZE(o) != n) {
      raise_at(PyExc_RuntimeError, at, "dict changed size during encoding");
    }
  }

  void sequence(PyObject* o, const path_node& at, std::uint32_t depth) {
    check_depth(at, depth);
    if (PyTuple_Check(o)) {
      const Py_ssize_t n = PyTuple_GET_SIZE(o);
      w_.list_header(static_cast<std::size_t>(n));
      for (Py_ssize_t i = 0; i < n; ++i) {
        const path_node child{&at, {}, {}, i};
        value(PyTuple_GET_ITEM(o, i), child, depth + 1);
      }
      return;
    }
    const Py_ssize_t n = PyList_GET_SIZE(o);
    w_.list_header(static_cast<std::size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (PyList_GET_SIZE(o) != n) break;
      const nb::object item = nb::borrow(PyList_GET_ITEM(o, i));  // the list may change meanwhile
      const path_node child{&at, {}, {}, i};
      value(item.ptr(), child, depth + 1);
    }
    if (PyList_GET_SIZE(o) != n)
      raise_at(PyExc_RuntimeError, at, "list changed size during encoding");
  }

  // Subclasses of the common types, bytes, numpy scalars and buffers: the
  // same order of tests as `to_value`, so both give every object one form.
  [[gnu::noinline]] void other(PyObject* o, const path_node& at, std::uint32_t depth) {
    if (PyBool_Check(o)) return w_.boolean(o == Py_True);
    if (PyLong_Check(o)) return integer(o, at);
    if (PyFloat_Check(o)) return w_.real(PyFloat_AS_DOUBLE(o));
    if (PyUnicode_Check(o)) return text(o, at);
    if (PyBytes_Check(o)) {
      return w_.bytes({PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o))});
    }
    if (PyByteArray_Check(o)) {
      return w_.bytes(
          {PyByteArray_AS_STRING(o), static_cast<std::size_t>(PyByteArray_GET_SIZE(o))});
    }
    if (PyList_Check(o) || PyTuple_Check(o)) return sequence(o, at, depth);
    if (PyDict_Check(o)) return dict(o, at, depth);
    if (PyObject* generic = numpy_generic(); generic && PyObject_IsInstance(o, generic) == 1) {
      // A numpy scalar (np.float32(1.5), np.int64(3)): the Python scalar it stands for.
      const nb::object item = nb::handle(o).attr("item")();
      return value(item.ptr(), at, depth);
    }
    if (PyObject_CheckBuffer(o)) return array(o, at);
    raise_at(invalid_type(), at,
             "object of type '" + py_type_name(nb::handle(o)) + "' has no Value form");
  }

  void array(PyObject* o, const path_node& at) {
    nb::object source;
    buffer_view b;
    export_contiguous(nb::handle(o), b.view, source, at);
    b.held = true;
    const Py_buffer& v = b.view;
    const auto type = dtype_of_format(v.format, v.itemsize);
    if (!type) {
      raise_at(invalid_type(), at,
               "array of element format '" + std::string(v.format ? v.format : "B") +
                   "' has no Value form (supported: " + supported_dtypes + ")");
    }
    if (static_cast<std::size_t>(v.ndim) > ndarray::max_ndim) {
      raise_at(exception_for(errc::invalid_argument), at,
               "array has " + std::to_string(v.ndim) + " dimensions, more than " +
                   std::to_string(ndarray::max_ndim));
    }
    std::uint64_t dims[ndarray::max_ndim];
    for (int i = 0; i < v.ndim; ++i) dims[i] = static_cast<std::uint64_t>(v.shape[i]);
    const std::span<const std::uint64_t> shape(dims, static_cast<std::size_t>(v.ndim));
    if (oob_ != nullptr) {
      w_.array_out_of_band(*type, shape);
      const nb::object view = nb::steal(PyMemoryView_FromObject(source.ptr()));
      if (!view || PyList_Append(oob_, view.ptr()) != 0) throw nb::python_error();
    } else {
      w_.array(*type, shape,
               {static_cast<const std::byte*>(v.buf), static_cast<std::size_t>(v.len)});
    }
  }

  wire::writer& w_;
  PyObject* oob_;
};

// Each thread encodes into one buffer it keeps (a nested encode, from a
// finalizer, gets a fresh one); a very large one is given back afterwards.
constexpr std::size_t kept_scratch_bytes = std::size_t{1} << 20;

template <class F>
nb::bytes with_scratch(F&& fill) {
  thread_local buffer scratch;
  thread_local bool busy = false;
  if (busy) {
    buffer local;
    fill(local);
    return nb::bytes(local.data(), local.size());
  }
  busy = true;
  struct release {
    ~release() {
      busy = false;
      if (scratch.capacity() > kept_scratch_bytes) buffer().swap(scratch);
    }
  } guard;
  scratch.clear();
  fill(scratch);
  return nb::bytes(scratch.data(), scratch.size());
}

void check_out_of_band(PyObject* out_of_band) {
  if (out_of_band != nullptr && !PyList_Check(out_of_band)) {
    raise_invalid_type("buffers must be a list (out-of-band arrays are appended to it)");
  }
}

// A batch frame of `count` payloads, `payload(i)` the i-th: ids `first_id`,
// ..., empty meta and route; `root` names the payloads in error messages.
template <class PayloadAt>
void write_batch(buffer& out, std::size_t count, PayloadAt&& payload, std::uint64_t first_id,
                 std::string_view root, PyObject* out_of_band) {
  wire::writer w(out);
  w.uvar(static_cast<std::uint64_t>(count));
  encoder e(w, out_of_band);
  const path_node at_root{nullptr, root, {}, -1};
  for (std::size_t i = 0; i < count; ++i) {
    w.uvar(first_id + static_cast<std::uint64_t>(i));
    const path_node at{&at_root, {}, {}, static_cast<Py_ssize_t>(i)};
    e.value(payload(i), at, 0);
    w.map_header(0);
    w.string({});
  }
}

}  // namespace

void encode_into(wire::writer& w, nb::handle obj, PyObject* out_of_band, std::string_view root) {
  check_out_of_band(out_of_band);
  const path_node at{nullptr, root, {}, -1};
  encoder(w, out_of_band).value(obj.ptr(), at, 0);
}

buffer encode_object(nb::handle obj, std::string_view root) {
  buffer out;
  wire::writer w(out);
  encode_into(w, obj, nullptr, root);
  w.finish();
  return out;
}

buffer encode_entries(nb::handle entries) {
  // A str or bytes is refused whole, and so is a pair that is one: "ab"
  // would otherwise read as the pair ('a', 'b').
  const auto refuse = [&](const std::string& what) {
    raise_invalid_type("entries must be a mapping or an iterable of (key, value) pairs" + what);
  };
  PyObject* e = entries.ptr();
  if (PyUnicode_Check(e) || PyBytes_Check(e) || PyByteArray_Check(e) || PyMemoryView_Check(e)) {
    refuse(", not '" + python_type_name(entries) + "'");
  }
  const bool mapping = PyDict_Check(e) || (PyMapping_Check(e) && nb::hasattr(entries, "items"));
  const nb::object pairs = mapping ? entries.attr("items")() : nb::borrow(entries);
  // Materialized first, so a generator that fails keeps its own error.
  const nb::object seq = nb::steal(PySequence_Fast(pairs.ptr(), "entries"));
  if (!seq) {
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw nb::python_error();
    PyErr_Clear();
    refuse(", not '" + python_type_name(entries) + "'");
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  buffer out;
  wire::writer w(out);
  w.list_header(static_cast<std::size_t>(n));
  encoder enc(w, nullptr);
  const path_node root{nullptr, "entries", {}, -1};
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* pair = PySequence_Fast_GET_ITEM(seq.ptr(), i);
    const bool two = (PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) ||
                     (PyList_Check(pair) && PyList_GET_SIZE(pair) == 2);
    if (!two) {
      const nb::handle h(pair);
      refuse(": entries[" + std::to_string(i) + "] is '" + python_type_name(h) + "' " +
             std::string(nb::repr(h).c_str()).substr(0, 60) + ", not a tuple or list of two");
    }
    // Keys are str (stored as UTF-8) or bytes (stored as they are).
    const std::string_view k = key_view(PySequence_Fast_GET_ITEM(pair, 0));
    w.list_header(2);
    w.string(k);
    const path_node at{&root, {}, k, -1};
    enc.value(PySequence_Fast_GET_ITEM(pair, 1), at, 0);
  }
  w.finish();
  return out;
}

nb::bytes encode_to_bytes(nb::handle obj, PyObject* out_of_band) {
  check_out_of_band(out_of_band);
  return with_scratch([&](buffer& b) {
    wire::writer w(b);
    const path_node at{nullptr, "value", {}, -1};
    encoder(w, out_of_band).value(obj.ptr(), at, 0);
  });
}

nb::bytes encode_batch_to_bytes(nb::handle payloads, std::uint64_t first_id,
                                PyObject* out_of_band) {
  check_out_of_band(out_of_band);
  const nb::object seq = nb::steal(PySequence_Fast(payloads.ptr(), "payloads must be a sequence"));
  if (!seq) throw nb::python_error();
  return with_scratch([&](buffer& b) {
    // Item by item from the sequence, as encoding one may run Python code.
    const auto at = [&](std::size_t i) {
      return PySequence_Fast_GET_ITEM(seq.ptr(), static_cast<Py_ssize_t>(i));
    };
    write_batch(b, static_cast<std::size_t>(PySequence_Fast_GET_SIZE(seq.ptr())), at, first_id,
                "payloads", out_of_band);
  });
}

void encode_batch_into(buffer& out, PyObject* const* payloads, std::size_t count,
                       std::uint64_t first_id, std::string_view root) {
  write_batch(
      out, count, [&](std::size_t i) { return payloads[i]; }, first_id, root, nullptr);
}

nb::bytes encode_items_to_bytes(nb::handle items, PyObject* out_of_band) {
  check_out_of_band(out_of_band);
  const nb::object seq = nb::steal(PySequence_Fast(items.ptr(), "items must be a sequence"));
  if (!seq) throw nb::python_error();
  return with_scratch([&](buffer& b) {
    wire::writer w(b);
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
    w.uvar(static_cast<std::uint64_t>(n));
    encoder e(w, out_of_band);
    const path_node root{nullptr, "items", {}, -1};
    for (Py_ssize_t i = 0; i < n; ++i) {
      const path_node at{&root, {}, {}, i};
      PyObject* item = PySequence_Fast_GET_ITEM(seq.ptr(), i);
      const Py_ssize_t size = PyTuple_Check(item) ? PyTuple_GET_SIZE(item) : -1;
      if (size != 2 && size != 4) {
        raise_at(invalid_type(), at,
                 "an item is a tuple (id, payload) or (id, payload, meta, route)");
      }
      const unsigned long long id = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item, 0));
      if (id == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
        PyErr_Clear();
        raise_at(invalid_type(), at, "an item's id is an int in 0..2**64-1");
      }
      w.uvar(id);
      e.value(PyTuple_GET_ITEM(item, 1), at, 0);
      if (size == 2) {
        w.map_header(0);
        w.string({});
        continue;
      }
      PyObject* meta = PyTuple_GET_ITEM(item, 2);
      PyObject* route = PyTuple_GET_ITEM(item, 3);
      if (!PyDict_Check(meta)) raise_at(invalid_type(), at, "an item's meta is a dict");
      if (!PyUnicode_Check(route)) raise_at(invalid_type(), at, "an item's route is a str");
      // meta is a map at depth 0, as the decoder reads it.
      e.value(meta, at, 0);
      nb::object holder;
      w.string(utf8_of(route, holder, at, "route"));
    }
  });
}

}  // namespace slither::py
