// The wire format straight into Python objects (see pycodec.hpp): the C++
// codec's parser (wire::parser) with a builder that makes Python objects.
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "convert.hpp"
#include "errors.hpp"
#include "pycodec.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

PyObject* checked(PyObject* o) {
  if (!o) throw nb::python_error();
  return o;
}

bool is_ascii(const char* p, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w & 0x8080808080808080ull) return false;
  }
  for (; i < n; ++i) {
    if (static_cast<unsigned char>(p[i]) & 0x80) return false;
  }
  return true;
}

// A str from UTF-8; ASCII (the common case) is copied without decoding.
// Text that is not UTF-8 (a C++ producer's bytes) arrives with
// surrogateescape, as `Reader.get` has always returned it.
PyObject* make_text(std::string_view s) {
  if (is_ascii(s.data(), s.size())) {
    PyObject* o = checked(PyUnicode_New(static_cast<Py_ssize_t>(s.size()), 127));
    std::memcpy(PyUnicode_DATA(o), s.data(), s.size());
    return o;
  }
  return checked(
      PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape"));
}

// Dict keys repeat across the items of a batch and across reads: one interned
// str per distinct short ASCII key is kept and shared, so decoding a key is a
// lookup (no allocation, no hashing of a new str), and user code's literal
// keys find them by identity. Direct-mapped; a collision replaces the entry.
// Guarded by the GIL.
class key_cache {
 public:
  static constexpr std::size_t slots = 1024;
  static constexpr std::size_t max_key = 32;

  PyObject* get(std::string_view key) {
    if (key.size() > max_key) return make_text(key);
    PyObject*& slot = slots_[hash(key) & (slots - 1)];
    if (slot != nullptr && static_cast<std::size_t>(PyUnicode_GET_LENGTH(slot)) == key.size() &&
        same_bytes(static_cast<const char*>(PyUnicode_DATA(slot)), key.data(), key.size())) {
      Py_INCREF(slot);
      return slot;
    }
    if (!is_ascii(key.data(), key.size())) return make_text(key);
    PyObject* s = make_text(key);
    PyUnicode_InternInPlace(&s);
    Py_XSETREF(slot, Py_NewRef(s));
    return s;
  }

 private:
  // Equality of up to `max_key` bytes with word loads: a call to memcmp costs
  // more than the whole comparison of a short key.
  static bool same_bytes(const char* a, const char* b, std::size_t n) noexcept {
    if (n >= 8) {
      std::uint64_t x, y;
      for (std::size_t i = 0; i + 8 <= n; i += 8) {
        std::memcpy(&x, a + i, 8);
        std::memcpy(&y, b + i, 8);
        if (x != y) return false;
      }
      std::memcpy(&x, a + n - 8, 8);  // the tail, overlapping what was compared
      std::memcpy(&y, b + n - 8, 8);
      return x == y;
    }
    std::uint64_t x = 0, y = 0;
    for (std::size_t i = 0; i < n; ++i) {
      x = (x << 8) | static_cast<unsigned char>(a[i]);
      y = (y << 8) | static_cast<unsigned char>(b[i]);
    }
    return x == y;
  }

  static std::uint64_t hash(std::string_view k) noexcept {
    // Two overlapping loads cover a key of 4 to 16 bytes (and hash the rest
    // of a longer one); shorter keys are read byte by byte. Never past its end.
    std::uint64_t a = 0, b = 0;
    const std::size_t n = k.size();
    if (n >= 8) {
      std::memcpy(&a, k.data(), 8);
      std::memcpy(&b, k.data() + n - 8, 8);
    } else if (n >= 4) {
      std::uint32_t x, y;
      std::memcpy(&x, k.data(), 4);
      std::memcpy(&y, k.data() + n - 4, 4);
      a = x;
      b = y;
    } else {
      for (std::size_t i = 0; i < n; ++i) a = (a << 8) | static_cast<unsigned char>(k[i]);
    }
    const std::uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ull) ^ n) * 0xff51afd7ed558ccdull;
    return h ^ (h >> 29);
  }

  std::array<PyObject*, slots> slots_{};
};

key_cache& keys() {
  static key_cache* cache = new key_cache();  // lives as long as the interpreter's strs
  return *cache;
}

PyObject* new_dict(std::size_t n) {
#if PY_VERSION_HEX < 0x030D0000
  return checked(_PyDict_NewPresized(static_cast<Py_ssize_t>(n)));
#else
  (void)n;
  return checked(PyDict_New());
#endif
}

// A Py_buffer released, with the GIL, when the last array over it goes.
std::shared_ptr<Py_buffer> hold_buffer(PyObject* obj, std::size_t index) {
  auto* view = new Py_buffer{};
  if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) != 0) {
    delete view;
    PyErr_Clear();
    raise_invalid_type("out-of-band buffer #" + std::to_string(index) +
                       " is not a C-contiguous buffer");
  }
  return {view, [](Py_buffer* b) {
            const PyGILState_STATE state = PyGILState_Ensure();
            PyBuffer_Release(b);
            PyGILState_Release(state);
            delete b;
          }};
}

std::vector<std::shared_ptr<Py_buffer>> hold_buffers(nb::handle buffers) {
  std::vector<std::shared_ptr<Py_buffer>> out;
  if (buffers.is_none()) return out;
  const nb::object seq =
      nb::steal(PySequence_Fast(buffers.ptr(), "buffers must be a sequence of buffers"));
  if (!seq) throw nb::python_error();
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  out.reserve(static_cast<std::size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    out.push_back(hold_buffer(PySequence_Fast_GET_ITEM(seq.ptr(), i), static_cast<std::size_t>(i)));
  }
  return out;
}

// One owned reference, released unless taken.
struct owned {
  PyObject* p = nullptr;
  owned() = default;
  owned(const owned&) = delete;
  owned& operator=(const owned&) = delete;
  ~owned() { Py_XDECREF(p); }
  nb::object take() noexcept { return nb::steal(std::exchange(p, nullptr)); }
};

// Builds Python objects for wire::parser. A slot is a `PyObject*&` that
// receives a new reference: a list's own item slot, or a local owned above.
class py_builder {
 public:
  using slot = PyObject*&;

  struct map_entry {
    PyObject* key;
    PyObject* value = nullptr;
    explicit map_entry(PyObject* k) noexcept : key(k) {}
    map_entry(const map_entry&) = delete;
    map_entry& operator=(const map_entry&) = delete;
    ~map_entry() {
      Py_XDECREF(key);
      Py_XDECREF(value);
    }
  };

  // A batch item being decoded; meta and route stay null when empty.
  struct item {
    std::uint64_t id = 0;
    PyObject* payload = nullptr;
    PyObject* meta = nullptr;
    PyObject* route = nullptr;
    void clear() noexcept {
      Py_CLEAR(payload);
      Py_CLEAR(meta);
      Py_CLEAR(route);
    }
    ~item() { clear(); }
  };

  py_builder(std::vector<std::shared_ptr<Py_buffer>> buffers, bool full_items)
      : buffers_(std::move(buffers)), full_items_(full_items) {}

  void null(PyObject*& out) noexcept { out = Py_NewRef(Py_None); }
  void boolean(PyObject*& out, bool b) noexcept { out = Py_NewRef(b ? Py_True : Py_False); }
  void integer(PyObject*& out, std::int64_t v) { out = checked(PyLong_FromLongLong(v)); }
  void real(PyObject*& out, double d) { out = checked(PyFloat_FromDouble(d)); }
  void string(PyObject*& out, std::string_view s) { out = make_text(s); }
  void bytes(PyObject*& out, std::string_view s) {
    out = checked(PyBytes_FromStringAndSize(s.data(), static_cast<Py_ssize_t>(s.size())));
  }
  void array(PyObject*& out, const wire::array_head& head, const std::byte* data) {
    const ndarray a =
        ndarray::from_bytes(head.type, {head.dims, head.dims + head.ndim}, {data, head.nbytes});
    out = array_to_python(a).release().ptr();
  }
  void oob_array(PyObject*& out, const wire::array_head& head, std::size_t index) {
    const std::shared_ptr<Py_buffer>& b = buffers_[index];
    const ndarray a = ndarray::view(head.type, {head.dims, head.dims + head.ndim},
                                    static_cast<const std::byte*>(b->buf), b);
    out = array_to_python(a).release().ptr();
  }
  std::size_t buffer_count() const noexcept { return buffers_.size(); }
  std::span<const std::byte> buffer(std::size_t index) const noexcept {
    return {static_cast<const std::byte*>(buffers_[index]->buf),
            static_cast<std::size_t>(buffers_[index]->len)};
  }

  PyObject* begin_list(PyObject*& out, std::size_t n) {
    out = checked(PyList_New(static_cast<Py_ssize_t>(n)));
    return out;
  }
  PyObject*& element(PyObject* list, std::size_t i) noexcept {
    return reinterpret_cast<PyListObject*>(list)->ob_item[i];
  }
  PyObject* begin_map(PyObject*& out, std::size_t n) {
    out = new_dict(n);
    return out;
  }
  map_entry entry(PyObject*, std::string_view key, std::size_t) {
    return map_entry(keys().get(key));
  }
  PyObject*& value_of(map_entry& e) noexcept { return e.value; }
  void commit(PyObject* map, map_entry& e, std::string_view key, std::size_t at) {
    const Py_ssize_t before = PyDict_GET_SIZE(map);
    if (PyDict_SetItem(map, e.key, e.value) != 0) throw nb::python_error();
    if (PyDict_GET_SIZE(map) == before) wire::duplicate_key(key, at);
  }

  void begin_batch(std::size_t n) { result_.p = checked(PyList_New(static_cast<Py_ssize_t>(n))); }
  item& batch_item(std::size_t i) {
    index_ = i;
    current_.clear();
    return current_;
  }
  void begin_item(item& it, std::uint64_t id) noexcept { it.id = id; }
  PyObject*& payload(item& it) noexcept { return it.payload; }
  PyObject*& meta(item& it) noexcept { return it.meta; }
  PyObject*& route(item& it) noexcept { return it.route; }
  void end_item(item& it) {
    PyObject* out;
    if (full_items_) {
      if (!it.meta) it.meta = new_dict(0);
      if (!it.route) it.route = checked(PyUnicode_New(0, 127));
      PyObject* id = checked(PyLong_FromUnsignedLongLong(it.id));
      out = PyTuple_New(4);
      if (!out) {
        Py_DECREF(id);
        throw nb::python_error();
      }
      PyTuple_SET_ITEM(out, 0, id);
      PyTuple_SET_ITEM(out, 1, std::exchange(it.payload, nullptr));
      PyTuple_SET_ITEM(out, 2, std::exchange(it.meta, nullptr));
      PyTuple_SET_ITEM(out, 3, std::exchange(it.route, nullptr));
    } else {
      out = std::exchange(it.payload, nullptr);
    }
    PyList_SET_ITEM(result_.p, static_cast<Py_ssize_t>(index_), out);
  }
  nb::list take_result() { return nb::steal<nb::list>(result_.take().release()); }

 private:
  std::vector<std::shared_ptr<Py_buffer>> buffers_;
  bool full_items_;
  owned result_;
  item current_;
  std::size_t index_ = 0;
};

}  // namespace

input_bytes::input_bytes(nb::handle obj) {
  PyObject* o = obj.ptr();
  if (PyBytes_Check(o)) {
    span_ = {reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(o)),
             static_cast<std::size_t>(PyBytes_GET_SIZE(o))};
    return;
  }
  if (PyObject_GetBuffer(o, &view_, PyBUF_C_CONTIGUOUS) != 0) {
    PyErr_Clear();
    raise_invalid_type("expected bytes or a C-contiguous buffer, not '" +
                       std::string(nb::type_name(obj.type()).c_str()) + "'");
  }
  held_ = true;
  span_ = {static_cast<const std::byte*>(view_.buf), static_cast<std::size_t>(view_.len)};
}

input_bytes::~input_bytes() {
  if (held_) PyBuffer_Release(&view_);
}

nb::object decode_object(std::span<const std::byte> bytes, const decode_limits& limits,
                         nb::handle buffers) {
  py_builder b(hold_buffers(buffers), false);
  wire::cursor c = wire::open(bytes, limits);
  wire::parser<py_builder> p(c, b);
  owned root;
  p.message(root.p);
  wire::close(c);
  p.check_buffers_used();
  return root.take();
}

namespace {

nb::list decode_batch(std::span<const std::byte> bytes, const decode_limits& limits,
                      nb::handle buffers, bool full_items) {
  py_builder b(hold_buffers(buffers), full_items);
  wire::cursor c = wire::open(bytes, limits);
  wire::parser<py_builder> p(c, b);
  p.batch();
  wire::close(c);
  p.check_buffers_used();
  return b.take_result();
}

}  // namespace

nb::list decode_batch_payloads(std::span<const std::byte> bytes, const decode_limits& limits,
                               nb::handle buffers) {
  return decode_batch(bytes, limits, buffers, false);
}

nb::list decode_batch_items(std::span<const std::byte> bytes, const decode_limits& limits,
                            nb::handle buffers) {
  return decode_batch(bytes, limits, buffers, true);
}

}  // namespace slither::py
