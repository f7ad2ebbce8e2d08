// Reader: read-only access to a store's shared memory, in this process, with
// no broker round trip. Reads are lock-free and short, so they keep the GIL.
#include <algorithm>
#include <exception>
#include <optional>
#include <string>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include "bindings.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "pycodec.hpp"
#include "slither/core/codec.hpp"
#include "slither/shm/store.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

struct py_reader {
  shm::reader reader;
  std::string ns;
  std::string name;
};

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

[[noreturn]] void raise_missing(const py_reader& r, std::string_view table, std::string_view key) {
  raise(fail(errc::not_found, "no key '" + std::string(key) + "' in table '" + std::string(table) +
                                  "' of store '" + r.name + "'"));
}

}  // namespace

void init_reader(nb::module_& m) {
  nb::class_<py_reader>(m, "Reader",
                        "Read-only access to a store's shared memory from this process.\n\n"
                        "Reads never wait for the writer and make no broker round trip.\n"
                        "Keys are str (UTF-8) or bytes. A Reader is bound to the process that\n"
                        "created it: after fork(), attach again in the child.")
      .def(
          "__init__",
          [](py_reader* self, std::string_view ns, std::string_view name) {
            new (self)
                py_reader{take(shm::reader::attach(ns, name)), std::string(ns), std::string(name)};
          },
          nb::arg("namespace"), nb::arg("name"),
          "Attaches to the store `name` of `namespace`. Raises NotFound, LayoutMismatch,\n"
          "WriterGone or LimitExceeded.")
      .def_prop_ro(
          "namespace", [](const py_reader& r) { return r.ns; }, "The store's namespace.")
      .def_prop_ro(
          "name", [](const py_reader& r) { return r.name; }, "The store's name.")
      .def_prop_ro(
          "tables", [](const py_reader& r) { return r.reader.tables(); }, "Names of the tables.")
      .def(
          "get",
          [](const py_reader& r, std::string_view table, nb::handle key, nb::handle default_) {
            // The value becomes Python objects straight from its stored
            // encoding, inside the read (the bytes are only valid there). A
            // Python error must not unwind through the store: kept, raised after.
            const std::string_view k = key_view(key);
            nb::object out;
            std::exception_ptr failure;
            const auto found = take(r.reader.peek(table, k, [&](std::span<const std::byte> enc) {
              try {
                out = decode_object(enc, stored_limits(enc.size()));
              } catch (...) {
                failure = std::current_exception();
              }
            }));
            if (failure) std::rethrow_exception(failure);
            switch (found) {
              case shm::reader::peeked::absent:
                return nb::borrow(default_);
              case shm::reader::peeked::is_ndarray:
                return to_python(*take(r.reader.get(table, k)));
              case shm::reader::peeked::visited:
                break;
            }
            return out;
          },
          nb::arg("table"), nb::arg("key"), nb::arg("default").none() = nb::none(),
          "A decoded copy of the value under `key` (the first one in a bag), or `default`.\n"
          "Raises NotFound for an unknown table.")
      .def(
          "get_all",
          [](const py_reader& r, std::string_view table, nb::handle key) {
            nb::list out;
            for (const Value& v : take(r.reader.get_all(table, key_view(key))))
              out.append(to_python(v));
            return out;
          },
          nb::arg("table"), nb::arg("key"), "Every value under `key` (a bag's values in order).")
      .def(
          "view",
          [](const py_reader& r, std::string_view table, nb::handle key) {
            const std::string_view k = key_view(key);
            std::optional<shm::view> v = take(r.reader.get_view(table, k));
            if (!v) raise_missing(r, table, k);
            return view_to_python(*v);
          },
          nb::arg("table"), nb::arg("key"),
          "A zero-copy, read-only view of the value under `key`: a numpy array (a\n"
          "memoryview without numpy) for an ndarray, else a memoryview of the stored\n"
          "encoding. The memory stays valid, and is never reused by the writer, until\n"
          "the returned object is released. Raises NotFound if `key` is absent.")
      .def(
          "version",
          [](const py_reader& r, std::string_view table, nb::handle key) -> std::uint64_t {
            std::optional<shm::view> v = take(r.reader.get_view(table, key_view(key)));
            return v ? v->version() : 0;
          },
          nb::arg("table"), nb::arg("key"),
          "The entry's version (what compare_and_set expects), or 0 if absent.")
      .def(
          "contains",
          [](const py_reader& r, std::string_view table, nb::handle key) {
            return take(r.reader.contains(table, key_view(key)));
          },
          nb::arg("table"), nb::arg("key"), "Whether `key` is present in `table`.")
      .def(
          "size",
          [](const py_reader& r, std::string_view table) { return take(r.reader.size(table)); },
          nb::arg("table"), "Number of entries (for a bag, of values) in `table`.")
      .def(
          "keys",
          [](const py_reader& r, std::string_view table, nb::handle prefix) {
            nb::list out;
            for (const std::string& k : take(r.reader.keys(table, key_view(prefix, "prefix"))))
              out.append(key_to_python(k));
            return out;
          },
          nb::arg("table"), nb::arg("prefix") = "",
          "Keys of `table` that start with `prefix`, as str (bytes if not UTF-8).")
      .def(
          "items",
          [](const py_reader& r, std::string_view table) {
            nb::list out;
            // A Python error must not unwind through the store's iteration: stop it, rethrow after.
            std::exception_ptr failure;
            take(r.reader.for_each(table, [&](std::string_view key, const shm::view& v) {
              try {
                nb::object value = v.is_ndarray()
                                       ? to_python(v.value())
                                       : decode_object(v.bytes(), stored_limits(v.bytes().size()));
                out.append(nb::make_tuple(key_to_python(key), std::move(value)));
                return true;
              } catch (...) {
                failure = std::current_exception();
                return false;
              }
            }));
            if (failure) std::rethrow_exception(failure);
            return out;
          },
          nb::arg("table"), "Every (key, value) pair of `table`, values decoded.");
}

}  // namespace slither::py
