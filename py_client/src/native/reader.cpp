// Reader: read-only access to a store's shared memory, in this process, with
// no broker round trip. Reads are lock-free and short, so they keep the GIL.
//
// A Reader follows its store across a broker restart and a fork(): before
// each read, if the store was closed (a stopped or replaced broker) or this is
// a fork child, it attaches again by name (views taken before stay valid over
// the old mapping). If that fails, the read raises WriterGone.
#include <algorithm>
#include <cstdint>
#include <exception>
#include <optional>
#include <span>
#include <string>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include "args.hpp"
#include "bindings.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "fork.hpp"
#include "get_many.hpp"
#include "pycodec.hpp"
#include "slither/core/codec.hpp"
#include "slither/shm/store.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

// A table as a read looks it up: by the str object that named it, once per
// attach (numbers are per store: a re-created store may number them otherwise).
struct table_ref {
  nb::object name;
  std::uint64_t attach = UINT64_MAX;  // py_reader::attaches when `number` was found
  std::uint32_t number = 0;
};

struct py_reader {
  std::optional<shm::reader> reader;  // empty once closed
  std::string ns;
  std::string name;
  std::uint64_t forked = fork_generation();
  // Iterations under way (`items` calls back into Python, which may read
  // again): the reader they iterate must not be replaced meanwhile.
  int iterating = 0;
  // Attaches so far (`reader` replaced): invalidates every table_ref.
  std::uint64_t attaches = 0;
  // The table `get` read last: the same str object (a literal, a variable)
  // names the same table, so its lookup is skipped.
  table_ref last;
};

// Attaches `r` to its store again. Needs the GIL (which guards `r`). If that
// fails, raises `code` (or the attach error's own code if `code` is nullopt).
void reattach(py_reader& r, std::string_view why, std::optional<errc> code) {
  auto fresh = shm::reader::attach(r.ns, r.name);
  if (!fresh) {
    raise(fail(code.value_or(fresh.error().code),
               "store '" + r.name + "' of namespace '" + r.ns + "' " + std::string(why) +
                   " and cannot be attached again: " + fresh.error().message));
  }
  r.reader = std::move(*fresh);
  r.forked = fork_generation();
  ++r.attaches;
}

// The reader to read through: attached again first if the store was closed
// (its broker stopped or was replaced) or this is a fork child.
[[noreturn]] void raise_closed(const py_reader& r) {
  raise(fail(errc::invalid_argument, "store '" + r.name + "' of namespace '" + r.ns +
                                         "' was closed by this process (Store.close)"));
}

// `live` once a check failed: closed here, closed by the broker, or forked.
[[gnu::noinline]] const shm::reader& live_slow(py_reader& r) {
  if (!r.reader) raise_closed(r);
  if (r.iterating == 0) {
    if (r.reader->store_closed())
      reattach(r, "was closed by its broker", errc::writer_gone);
    else if (r.forked != fork_generation())
      reattach(r, "was attached before a fork", std::nullopt);
  }
  return *r.reader;
}

inline const shm::reader& live(py_reader& r) {
  if (r.reader && r.forked == fork_generation() && !r.reader->store_closed()) [[likely]]
    return *r.reader;
  return live_slow(r);
}

// `live` for a get, which leaves the look at the store's state to its
// numbered peek (writer_gone when closed: `read_closed`), saving a call.
inline const shm::reader& live_for_get(py_reader& r) {
  if (r.reader && r.forked == fork_generation()) [[likely]]
    return *r.reader;
  return live_slow(r);
}

// Python object over a view's memory that keeps the view (and so the block's hold) alive.
nb::object view_to_python(const shm::view& v) {
  if (v.is_ndarray()) return array_to_python(v.array());
  const std::span<const std::byte> bytes = v.bytes();
  const std::size_t shape[1] = {bytes.size()};
  nb::capsule owner(new shm::view(v), [](void* p) noexcept { delete static_cast<shm::view*>(p); });
  nb::ndarray<nb::memview, nb::ro, std::uint8_t> out(bytes.data(), 1, shape, owner);
  return nb::cast(out, nb::rv_policy::reference);
}

// A stored value may be larger than a message.
decode_limits stored_limits(std::size_t size) {
  decode_limits limits;
  limits.max_message_bytes = std::max(limits.max_message_bytes, size);
  return limits;
}

// A scan's `limit`: None (no limit) or an int >= 0.
std::size_t limit_arg(nb::handle limit) {
  if (limit.is_none()) return SIZE_MAX;
  if (!PyLong_Check(limit.ptr()) || PyBool_Check(limit.ptr())) {
    raise_invalid_type("limit must be an int or None, not " + python_type_name(limit));
  }
  const long long n = PyLong_AsLongLong(limit.ptr());
  if (n == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return SIZE_MAX;  // larger than any table
  }
  if (n < 0) raise_invalid_argument("limit must be >= 0, not " + std::to_string(n));
  return static_cast<std::size_t>(n);
}

// The (key, value) pairs an iteration of `r` visits, values decoded straight
// from their stored encoding inside it. `iterate(reader, visit)` runs the
// store's iteration, calling `visit(key, is_ndarray, bytes, array)` per pair
// (`array()` gives an ndarray value) and returning what visit returns.
template <class Iterate>
nb::list pairs_to_python(py_reader& r, Iterate&& iterate) {
  nb::list out;
  const shm::reader& rd = live(r);
  ++r.iterating;  // Python code run meanwhile must not replace the reader iterated
  struct done {
    int& n;
    ~done() { --n; }
  } leave{r.iterating};
  // A Python error must not unwind through the store's iteration: stop it, rethrow after.
  std::exception_ptr failure;
  auto visit = [&](std::string_view key, bool is_ndarray, std::span<const std::byte> bytes,
                   auto&& array) {
    try {
      nb::object value =
          is_ndarray ? to_python(array()) : decode_object(bytes, stored_limits(bytes.size()));
      out.append(nb::make_tuple(key_to_python(key), std::move(value)));
      return true;
    } catch (...) {
      failure = std::current_exception();
      return false;
    }
  };
  take(iterate(rd, visit));
  if (failure) std::rethrow_exception(failure);
  return out;
}

// The (key, value) pairs of `range` of an ordered table.
nb::list scan_to_python(py_reader& r, std::string_view table, const shm::reader::key_range& range) {
  return pairs_to_python(r, [&](const shm::reader& rd, auto& visit) {
    return rd.scan(table, range, [&](const shm::reader::scanned& e) {
      return visit(e.key, e.is_ndarray, e.bytes, [&] { return e.value(); });
    });
  });
}

// The first (or last) entry of an ordered table as (key, value), or None.
nb::object end_to_python(py_reader& r, nb::handle table_arg, bool reverse) {
  const std::string_view table = name_arg(table_arg, "table");
  nb::list one = scan_to_python(r, table, shm::reader::key_range{{}, {}, 1, reverse});
  if (one.size() == 0) return nb::none();
  return one[0];
}

// Whether `t` still numbers the table `table_arg` names in `r`'s store.
bool cached(const py_reader& r, const table_ref& t, nb::handle table_arg) noexcept {
  return t.attach == r.attaches && t.name.ptr() == table_arg.ptr();
}

// The number of the table `table_arg` names, looked up again (`t` did not
// have it): once per str object and attach.
[[gnu::noinline]] std::uint32_t find_table(py_reader& r, const shm::reader& rd, table_ref& t,
                                           nb::handle table_arg) {
  const std::string_view table = name_arg(table_arg, "table");
  const auto n = rd.table_number(table);
  if (!n) {
    raise(fail(errc::not_found, "unknown table '" + std::string(table) + "' in store '" + r.ns +
                                    "." + r.name + "'"));
  }
  t.name = nb::borrow(table_arg);
  t.attach = r.attaches;
  t.number = *n;
  return *n;
}

// What `get`'s peek callback fills: the value (a new reference), or the
// error it must not unwind through the store with: a Python error set
// (`python_error`) or a C++ exception.
struct peek_result {
  PyObject* out = nullptr;
  bool python_error = false;
  std::exception_ptr failure;
};

// Any stored encoding but the short bytes form `decode_peeked` builds itself.
[[gnu::noinline]] void decode_peeked_slow(peek_result& res,
                                          std::span<const std::byte> enc) noexcept {
  try {
    res.out = decode_object(enc, stored_limits(enc.size())).release().ptr();
  } catch (...) {
    res.failure = std::current_exception();
  }
}

// A `bytes` value is the codec's version byte, its bytes tag, a one-byte
// length (under 128) and the bytes: built directly, it skips the decoder's
// set-up. Anything else (and every malformed form) takes the decoder.
void decode_peeked(void* context, std::span<const std::byte> enc) noexcept {
  auto& res = *static_cast<peek_result*>(context);
  const auto* b = reinterpret_cast<const std::uint8_t*>(enc.data());
  if (enc.size() >= 3 && b[0] == codec_version && b[1] == wire::bytes_tag && b[2] < 0x80 &&
      enc.size() == 3u + b[2]) [[likely]] {
    res.out = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(b + 3), b[2]);
    res.python_error = res.out == nullptr;
    return;
  }
  decode_peeked_slow(res, enc);
}

[[noreturn]] void raise_missing(const py_reader& r, std::string_view table, std::string_view key) {
  raise(fail(errc::not_found, "no key '" + std::string(key) + "' in table '" + std::string(table) +
                                  "' of store '" + r.name + "'"));
}

nb::object read_closed(py_reader& r, table_ref& t, nb::handle table_arg, std::string_view k,
                       nb::handle default_);

// What `read_value` returns for a peek that did not visit a value: the
// error raised, a closed store attached again, a table dropped since `t`
// numbered it looked up again, or an ndarray (stored raw) read whole.
// `after_close`: `read_closed` attached again already.
[[gnu::noinline]] nb::object read_other(py_reader& r, const shm::reader& rd, table_ref& t,
                                        nb::handle table_arg, std::string_view k,
                                        nb::handle default_, bool was_cached,
                                        result<shm::reader::peeked>&& peeked, peek_result& res,
                                        bool after_close = false) {
  if (!peeked && peeked.error().code == errc::writer_gone && !after_close) {
    return read_closed(r, t, table_arg, k, default_);  // nothing was read
  }
  if (!peeked && peeked.error().code == errc::not_found && was_cached) {
    // The remembered table was dropped (a new one may have its name).
    t.attach = UINT64_MAX;
    const std::uint32_t table = find_table(r, rd, t, table_arg);
    peeked = rd.peek(table, k, decode_peeked, &res);
  }
  nb::object out = nb::steal(res.out);  // owned before anything raises
  const auto found = take(std::move(peeked));
  if (res.python_error) throw nb::python_error();
  if (res.failure) std::rethrow_exception(res.failure);
  switch (found) {
    case shm::reader::peeked::absent:
      return nb::borrow(default_);
    case shm::reader::peeked::is_ndarray: {
      // Erased between the two reads: gone meanwhile reads as absent.
      std::optional<Value> array = take(rd.get(name_arg(table_arg, "table"), k));
      if (!array) return nb::borrow(default_);
      return to_python(*array);
    }
    case shm::reader::peeked::visited:
      break;
  }
  return out;
}

// A get whose store was closed by its broker (the numbered peek refused
// it): attached again, as `live` does before other reads, and read there.
// Inside an iteration, which keeps its reader, the read goes to the closed
// store's mapping as every other read there does (the named peek reads a
// closed store).
[[gnu::noinline]] nb::object read_closed(py_reader& r, table_ref& t, nb::handle table_arg,
                                         std::string_view k, nb::handle default_) {
  const shm::reader& rd = live_slow(r);
  peek_result res;
  if (rd.store_closed()) {
    auto peeked = rd.peek(name_arg(table_arg, "table"), k,
                          [&](std::span<const std::byte> enc) { decode_peeked(&res, enc); });
    return read_other(r, rd, t, table_arg, k, default_, false, std::move(peeked), res, true);
  }
  const bool was_cached = cached(r, t, table_arg);
  const std::uint32_t table = was_cached ? t.number : find_table(r, rd, t, table_arg);
  auto peeked = rd.peek(table, k, decode_peeked, &res);
  return read_other(r, rd, t, table_arg, k, default_, was_cached, std::move(peeked), res, true);
}

// The value under `key` in the table `table_arg` names (looked up through
// `t`), decoded, or `default_` (which may be null) if absent. Every read of
// one key from Python comes here: the common case (a known table, a value
// visited) runs inline, everything else in the functions above.
inline nb::object read_value(py_reader& r, table_ref& t, nb::handle table_arg, nb::handle key,
                             nb::handle default_) {
  const shm::reader& rd = live_for_get(r);
  const bool was_cached = cached(r, t, table_arg);
  const std::uint32_t table = was_cached ? t.number : find_table(r, rd, t, table_arg);
  // The value becomes Python objects straight from its stored encoding,
  // inside the read (the bytes are only valid there). A Python error must
  // not unwind through the store: kept, raised after.
  const std::string_view k = key_view(key);
  peek_result res;
  auto peeked = rd.peek(table, k, decode_peeked, &res);
  if (peeked && *peeked == shm::reader::peeked::visited && res.out != nullptr) [[likely]]
    return nb::steal(res.out);
  return read_other(r, rd, t, table_arg, k, default_, was_cached, std::move(peeked), res);
}

// The C++ object of a bound instance `self`, which a raw method gets unchecked.
template <class T>
T& self_of(PyObject* self) {
  if (!nb::inst_ready(self)) {
    raise_invalid_type(std::string("an uninitialized ") + Py_TYPE(self)->tp_name +
                       " cannot be read (its __init__ did not run)");
  }
  return *nb::inst_ptr<T>(self);
}

// The arguments of a METH_FASTCALL | METH_KEYWORDS call, by position or
// name, into `out` (null where not given); the first `required` must be.
void parse_args(const char* fn, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                std::span<const char* const> names, std::size_t required, PyObject** out) {
  std::fill(out, out + names.size(), nullptr);
  if (static_cast<std::size_t>(nargs) > names.size()) {
    raise_invalid_type(std::string(fn) + "() takes at most " + std::to_string(names.size()) +
                       " arguments (" + std::to_string(nargs) + " given)");
  }
  std::copy(args, args + nargs, out);
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; ++i) {
    PyObject* kw = PyTuple_GET_ITEM(kwnames, i);
    std::size_t j = 0;
    while (j < names.size() && PyUnicode_CompareWithASCIIString(kw, names[j]) != 0) ++j;
    if (j == names.size() || out[j] != nullptr) {
      raise_invalid_type(std::string(fn) + "() got " +
                         (j == names.size() ? "an unexpected" : "a repeated") + " argument '" +
                         std::string(name_arg(kw, "keyword")) + "'");
    }
    out[j] = args[nargs + i];
  }
  for (std::size_t j = 0; j < required; ++j) {
    if (out[j] == nullptr) {
      raise_invalid_type(std::string(fn) + "() is missing its argument '" + names[j] + "'");
    }
  }
}

// Reader.get, bound as a raw vectorcall method: the common read is one C call
// with no argument conversion in front of it.
PyObject* reader_get(PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                     PyObject* kwnames) noexcept {
  return raw_call([&] {
    py_reader& r = self_of<py_reader>(self);
    if (nargs == 2 && kwnames == nullptr) [[likely]]
      return read_value(r, r.last, args[0], args[1], Py_None);
    static constexpr const char* names[] = {"table", "key", "default"};
    PyObject* a[3];
    parse_args("get", args, nargs, kwnames, names, 2, a);
    return read_value(r, r.last, a[0], a[1], a[2] ? a[2] : Py_None);
  });
}

PyMethodDef reader_methods[] = {
    {"get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(reader_get)),
     METH_FASTCALL | METH_KEYWORDS,
     "get(table, key, default=None)\n--\n\n"
     "A decoded copy of the value under `key` (the first one in a bag), or `default`.\n"
     "Raises NotFound for an unknown table."},
    {nullptr, nullptr, 0, nullptr}};
PyType_Slot reader_slots[] = {{Py_tp_methods, reader_methods}, {0, nullptr}};

// A Table's reads: one table of one Reader, its number cached in the handle,
// so `table[key]`, `table.get(key)` and `key in table` are one C call each.
struct py_table {
  nb::object store;   // the Reader (a slither.Store) read
  py_reader* reader;  // its C++ object
  table_ref ref;      // ref.name: the table's name, a str
};

[[noreturn]] void raise_missing_key(const py_table& t, nb::handle key) {
  nb::object shown = nb::steal(PyObject_Repr(key.ptr()));
  if (!shown) throw nb::python_error();
  raise(fail(errc::not_found, "no key " + std::string(name_arg(shown, "key")) + " in table '" +
                                  std::string(name_arg(t.ref.name, "table")) + "'"));
}

PyObject* table_subscript(PyObject* self, PyObject* key) noexcept {
  return raw_call([&] {
    py_table& t = self_of<py_table>(self);
    nb::object v = read_value(*t.reader, t.ref, t.ref.name, key, nb::handle());
    if (!v) raise_missing_key(t, key);
    return v;
  });
}

PyObject* table_get(PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                    PyObject* kwnames) noexcept {
  return raw_call([&] {
    py_table& t = self_of<py_table>(self);
    if (nargs == 1 && kwnames == nullptr) [[likely]]
      return read_value(*t.reader, t.ref, t.ref.name, args[0], Py_None);
    static constexpr const char* names[] = {"key", "default"};
    PyObject* a[2];
    parse_args("get", args, nargs, kwnames, names, 1, a);
    return read_value(*t.reader, t.ref, t.ref.name, a[0], a[1] ? a[1] : Py_None);
  });
}

int table_contains(PyObject* self, PyObject* key) noexcept {
  PyObject* found = raw_call([&] {
    py_table& t = self_of<py_table>(self);
    const bool in = take(live(*t.reader).contains(name_arg(t.ref.name, "table"), key_view(key)));
    return nb::borrow(in ? Py_True : Py_False);
  });
  if (found == nullptr) return -1;
  Py_DECREF(found);
  return found == Py_True ? 1 : 0;
}

PyMethodDef table_methods[] = {
    {"get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(table_get)),
     METH_FASTCALL | METH_KEYWORDS,
     "get(key, default=None)\n--\n\nA decoded copy of the value under `key`, or `default`."},
    {nullptr, nullptr, 0, nullptr}};
PyType_Slot table_slots[] = {{Py_mp_subscript, reinterpret_cast<void*>(table_subscript)},
                             {Py_sq_contains, reinterpret_cast<void*>(table_contains)},
                             {Py_tp_methods, table_methods},
                             {0, nullptr}};

}  // namespace

void init_reader(nb::module_& m) {
  nb::class_<py_reader>(m, "Reader", nb::type_slots(reader_slots),
                        "Read-only access to a store's shared memory from this process.\n\n"
                        "Reads never wait for the writer and make no broker round trip.\n"
                        "Keys are str (UTF-8) or bytes. When the store is closed (its broker\n"
                        "stopped or restarted), and in a fork() child, the next read attaches\n"
                        "again by name; if the store is not there, it raises WriterGone. Views\n"
                        "taken before stay valid.")
      .def(
          "__init__",
          [](py_reader* self, nb::handle ns_arg, nb::handle name_obj) {
            const std::string_view ns = name_arg(ns_arg, "namespace");
            const std::string_view name = name_arg(name_obj, "name");
            new (self)
                py_reader{.reader = std::optional<shm::reader>(take(shm::reader::attach(ns, name))),
                          .ns = std::string(ns),
                          .name = std::string(name)};
          },
          nb::arg("namespace").none(), nb::arg("name").none(),
          "Attaches to the store `name` of `namespace`. Raises NotFound, LayoutMismatch,\n"
          "WriterGone or LimitExceeded.")
      .def_prop_ro(
          "namespace", [](const py_reader& r) { return r.ns; }, "The store's namespace.")
      .def_prop_ro(
          "name", [](const py_reader& r) { return r.name; }, "The store's name.")
      .def_prop_ro(
          "tables", [](py_reader& r) { return live(r).tables(); }, "Names of the tables.")
      .def_prop_ro(
          "incarnation",
          [](const py_reader& r) {
            if (!r.reader) raise_closed(r);
            return r.reader->incarnation();
          },
          "The incarnation of the store this Reader reads: a store re-created by a\n"
          "restarted broker has another. Reading it never attaches again.")
      .def(
          "_reattach",
          [](py_reader& r) {
            if (!r.reader) raise_closed(r);
            if (r.iterating == 0) reattach(r, "was replaced", errc::writer_gone);
          },
          "Attaches to the store of this name again (after a write found it replaced).")
      .def(
          "get_many",
          [](py_reader& r, nb::handle table_arg, nb::handle keys, nb::handle default_) {
            const std::string_view table = name_arg(table_arg, "table");
            const key_batch ks = key_batch_arg(keys);  // may run Python code: first
            const shm::reader& rd = live(r);
            ++r.iterating;  // objects made inside the read must not replace the reader read
            struct done {
              int& n;
              ~done() { --n; }
            } leave{r.iterating};
            return values_to_python(rd, table, ks.views, default_);
          },
          nb::arg("table").none(), nb::arg("keys").none(), nb::arg("default").none() = nb::none(),
          "Decoded copies of the values under `keys`, in order (`default` where absent),\n"
          "read in one call and one epoch through one index: a reload or an atomic\n"
          "put_many is seen whole or not at all. In a large table, several times faster\n"
          "per key than `get` one key at a time (the batch overlaps memory misses).")
      .def(
          "close",
          [](py_reader& r) {
            // Not from inside this Reader's own `items` (a finalizer it ran):
            // the reader iterated there must live until the iteration ends.
            if (r.iterating != 0) {
              raise(fail(errc::busy, "store '" + r.name + "' cannot be closed while it iterates"));
            }
            r.reader.reset();
          },
          "Detaches from the store (its registry slot is given back); later reads raise\n"
          "InvalidArgument. Views taken stay valid. Safe twice.")
      .def_prop_ro(
          "closed", [](const py_reader& r) { return !r.reader; }, "Whether close() was called.")
      .def(
          "get_all",
          [](py_reader& r, nb::handle table_arg, nb::handle key) {
            const std::string_view table = name_arg(table_arg, "table");
            nb::list out;
            for (const Value& v : take(live(r).get_all(table, key_view(key))))
              out.append(to_python(v));
            return out;
          },
          nb::arg("table").none(), nb::arg("key").none(),
          "Every value under `key` (a bag's values in order).")
      .def(
          "view",
          [](py_reader& r, nb::handle table_arg, nb::handle key) {
            const std::string_view table = name_arg(table_arg, "table");
            const std::string_view k = key_view(key);
            std::optional<shm::view> v = take(live(r).get_view(table, k));
            if (!v) raise_missing(r, table, k);
            return view_to_python(*v);
          },
          nb::arg("table").none(), nb::arg("key").none(),
          "A zero-copy, read-only view of the value under `key`: a numpy array (a\n"
          "memoryview without numpy) for an ndarray, else a memoryview of the stored\n"
          "encoding. The memory stays valid, and is never reused by the writer, until\n"
          "the returned object is released. Raises NotFound if `key` is absent.")
      .def(
          "version",
          [](py_reader& r, nb::handle table_arg, nb::handle key) -> std::uint64_t {
            const std::string_view table = name_arg(table_arg, "table");
            std::optional<shm::view> v = take(live(r).get_view(table, key_view(key)));
            return v ? v->version() : 0;
          },
          nb::arg("table").none(), nb::arg("key").none(),
          "The entry's version (what compare_and_set expects), or 0 if absent.")
      .def(
          "kind",
          [](py_reader& r, nb::handle table_arg) {
            const std::string_view table = name_arg(table_arg, "table");
            return std::string(shm::to_string(take(live(r).kind(table))));
          },
          nb::arg("table").none(), "The kind of `table`: 'set', 'bag' or 'ordered_set'.")
      .def(
          "get_with_version",
          [](py_reader& r, nb::handle table_arg, nb::handle key, nb::handle default_) {
            const std::string_view table = name_arg(table_arg, "table");
            // One read: the value and the version are of the same entry, which
            // `get` then `version` (a write may land between) cannot promise.
            std::optional<shm::view> v = take(live(r).get_view(table, key_view(key)));
            if (!v) return nb::make_tuple(default_, std::uint64_t{0});
            nb::object value = v->is_ndarray()
                                   ? to_python(v->value())
                                   : decode_object(v->bytes(), stored_limits(v->bytes().size()));
            return nb::make_tuple(value, v->version());
          },
          nb::arg("table").none(), nb::arg("key").none(), nb::arg("default").none() = nb::none(),
          "(value, version) of the entry under `key` (a bag's first value), read together;\n"
          "(default, 0) if absent. The value is a decoded copy, as get's. What\n"
          "compare_and_set and compare_and_erase expect: they then act only if the entry\n"
          "is still the one read.")
      .def(
          "contains",
          [](py_reader& r, nb::handle table_arg, nb::handle key) {
            const std::string_view table = name_arg(table_arg, "table");
            return take(live(r).contains(table, key_view(key)));
          },
          nb::arg("table").none(), nb::arg("key").none(), "Whether `key` is present in `table`.")
      .def(
          "size",
          [](py_reader& r, nb::handle table_arg) {
            const std::string_view table = name_arg(table_arg, "table");
            return take(live(r).size(table));
          },
          nb::arg("table").none(), "Number of entries (for a bag, of values) in `table`.")
      .def(
          "key_count",
          [](py_reader& r, nb::handle table_arg) {
            const std::string_view table = name_arg(table_arg, "table");
            return take(live(r).key_count(table));
          },
          nb::arg("table").none(),
          "Number of keys in `table` (for a bag, of distinct keys; `size` counts its values).")
      .def(
          "keys",
          [](py_reader& r, nb::handle table_arg, nb::handle prefix) {
            const std::string_view table = name_arg(table_arg, "table");
            nb::list out;
            for (const std::string& k : take(live(r).keys(table, key_view(prefix, "prefix"))))
              out.append(key_to_python(k));
            return out;
          },
          nb::arg("table").none(), nb::arg("prefix").none() = "",
          "Keys of `table` that start with `prefix`, as str (bytes if not UTF-8); sorted\n"
          "bytewise in an ordered_set table.")
      .def(
          "items",
          [](py_reader& r, nb::handle table_arg) {
            const std::string_view table = name_arg(table_arg, "table");
            return pairs_to_python(r, [&](const shm::reader& rd, auto& visit) {
              return rd.for_each(table, [&](std::string_view key, const shm::view& v) {
                return visit(key, v.is_ndarray(), v.bytes(), [&] { return v.value(); });
              });
            });
          },
          nb::arg("table").none(), "Every (key, value) pair of `table`, values decoded.")
      .def(
          "range",
          [](py_reader& r, nb::handle table_arg, nb::handle lo, nb::handle hi, nb::handle limit,
             nb::handle reverse) {
            const std::string_view table = name_arg(table_arg, "table");
            shm::reader::key_range range;
            if (!lo.is_none()) range.lo = key_view(lo, "lo");
            if (!hi.is_none()) range.hi = key_view(hi, "hi");
            range.limit = limit_arg(limit);
            if (!PyBool_Check(reverse.ptr())) {
              raise_invalid_type("reverse must be a bool, not '" + python_type_name(reverse) + "'");
            }
            range.reverse = reverse.ptr() == Py_True;
            return scan_to_python(r, table, range);
          },
          nb::arg("table").none(), nb::arg("lo").none() = nb::none(),
          nb::arg("hi").none() = nb::none(), nb::arg("limit").none() = nb::none(),
          nb::arg("reverse").none() = false,
          "The (key, value) pairs of the ordered table `table` whose keys are in [lo, hi)\n"
          "(None: unbounded), sorted bytewise, at most `limit` of them, from the largest\n"
          "key if `reverse`; one snapshot of the table. Raises InvalidArgument for a\n"
          "table that is not an ordered_set.")
      .def(
          "first", [](py_reader& r, nb::handle table) { return end_to_python(r, table, false); },
          nb::arg("table").none(),
          "The (key, value) pair with the smallest key of the ordered table `table`, or None.")
      .def(
          "last", [](py_reader& r, nb::handle table) { return end_to_python(r, table, true); },
          nb::arg("table").none(),
          "The (key, value) pair with the largest key of the ordered table `table`, or None.");

  nb::class_<py_table>(m, "_Table", nb::type_slots(table_slots),
                       "The reads of slither.Table, in C: `table[key]`, `get`, `in`.")
      .def(
          "__init__",
          [](py_table* self, nb::handle store, nb::handle name) {
            if (!nb::isinstance<py_reader>(store)) {
              raise_invalid_type("store must be a slither.Store or Reader, not '" +
                                 python_type_name(store) + "'");
            }
            (void)name_arg(name, "name");
            new (self) py_table{nb::borrow(store), nb::inst_ptr<py_reader>(store),
                                table_ref{nb::borrow(name)}};
          },
          nb::arg("store").none(), nb::arg("name").none())
      .def_prop_ro(
          "store", [](const py_table& t) { return t.store; }, "The store this table belongs to.")
      .def_prop_ro(
          "name", [](const py_table& t) { return t.ref.name; }, "The table's name.");

  m.def(
      "_remove_dead_store",
      [](nb::handle ns_arg, nb::handle name_arg_) {
        const std::string_view ns = name_arg(ns_arg, "namespace");
        const std::string_view name = name_arg(name_arg_, "name");
        std::optional<result<bool>> r;
        {
          nb::gil_scoped_release nogil;
          r.emplace(shm::remove_dead_store(ns, name));
        }
        return take(std::move(*r));
      },
      nb::arg("namespace").none(), nb::arg("name").none(),
      "Removes the shared-memory objects a dead writer left of store `name`; False\n"
      "(nothing touched) if its writer is alive. For `python -m slither clean`.");
}

}  // namespace slither::py
