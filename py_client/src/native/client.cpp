// Client: the broker's control socket. Every call is a round trip, made with
// the GIL released; a mutex serializes threads that share one Client (the C++
// client is not thread-safe). While a call waits, the GIL is taken back every
// 50 ms to run signal handlers, so Ctrl-C interrupts it.
//
// fork(): a child must not touch the parent's connection. Its mutex may be
// held by a parent thread that does not exist in the child (locking it would
// hang forever), and its socket belongs to the parent's ZeroMQ threads. The
// child leaves both behind and connects anew on its first call.
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>

#include "args.hpp"
#include "bindings.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "fork.hpp"
#include "pycodec.hpp"
#include "slither/broker/client.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

// Runs pending signal handlers (the main thread's Ctrl-C) while a call waits.
// An exception a handler raised is left set for `py_client::call` to raise.
result<void> check_signals() {
  nb::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() == 0) return {};
  return fail(errc::unavailable, "interrupted by a signal");
}

// One process's connection: a fork child makes its own.
struct connection {
  std::mutex mutex;
  std::optional<client> conn;
  bool closed = false;  // guarded by `mutex`
  // The thread inside a call, so that a signal handler that runs during the
  // wait and uses this Client gets an error instead of a self-deadlock.
  std::atomic<std::thread::id> holder{};
};

// Marks the calling thread as inside a call on `c` (its mutex held).
class holding {
 public:
  explicit holding(connection& c) : c_(c) {
    c_.holder.store(std::this_thread::get_id(), std::memory_order_relaxed);
  }
  ~holding() { c_.holder.store({}, std::memory_order_relaxed); }
  holding(const holding&) = delete;
  holding& operator=(const holding&) = delete;

 private:
  connection& c_;
};

// The store and table a write names (a view call names no table), checked.
struct write_target {
  std::string_view store;
  std::string_view table;
};

write_target target_of(nb::handle store, nb::handle table) {
  return {name_arg(store, "store"), name_arg(table, "table")};
}

struct py_client {
  client_options options;
  std::string ns;
  std::unique_ptr<connection> live = std::make_unique<connection>();
  std::uint64_t forked = fork_generation();

  // Runs `fn(client&)` without the GIL and returns its result (or raises).
  // Needs the GIL.
  template <class Fn>
  auto call(Fn&& fn) {
    if (forked != fork_generation()) [[unlikely]] {
      const bool closed = live->closed;  // the only thread of a new child: no race
      (void)live.release();              // the parent's: see the file comment
      live = std::make_unique<connection>();
      live->closed = closed;
      forked = fork_generation();
    }
    if (live->holder.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
      raise(fail(errc::busy,
                 "this Client is already waiting for a reply on this thread (was it called from "
                 "a signal handler?); use another Client there"));
    }
    using R = std::invoke_result_t<Fn, client&>;
    std::optional<R> r;
    {
      nb::gil_scoped_release nogil;
      std::lock_guard lock(live->mutex);
      const holding held(*live);
      if (!live->conn && !live->closed) {
        auto fresh = client::connect(options);
        if (fresh)
          live->conn.emplace(std::move(*fresh));
        else
          r.emplace(std::move(fresh).error());
      }
      if (live->conn)
        r.emplace(fn(*live->conn));
      else if (!r)
        r.emplace(fail(errc::unavailable, "client is closed"));
    }
    if (!*r && PyErr_Occurred()) throw nb::python_error();  // a signal handler raised
    return take(std::move(*r));
  }

  // `call` of a write to `at`: it carries the incarnation of the store the
  // caller reads, if given, so that a broker whose store is another one
  // applies nothing.
  template <class Fn>
  auto write(const write_target& at, std::optional<std::uint64_t> incarnation, Fn&& fn) {
    return call([&](client& cl) {
      if (incarnation) cl.set_incarnation(at.store, *incarnation);
      return fn(cl);
    });
  }
};

std::chrono::milliseconds to_timeout(nb::handle obj) {
  if (PyBool_Check(obj.ptr()) || PyUnicode_Check(obj.ptr()) || PyBytes_Check(obj.ptr())) {
    raise_invalid_type("timeout must be a number of seconds, not '" + python_type_name(obj) + "'");
  }
  const double seconds = PyFloat_AsDouble(obj.ptr());
  if (seconds == -1.0 && PyErr_Occurred()) {
    const bool wrong_type = PyErr_ExceptionMatches(PyExc_TypeError);
    PyErr_Clear();
    if (wrong_type)
      raise_invalid_type("timeout must be a number of seconds, not '" + python_type_name(obj) +
                         "'");
    raise_invalid_argument("timeout " + std::string(nb::repr(obj).c_str()) + " is out of range");
  }
  constexpr double max_seconds = static_cast<double>(client_options::max_timeout.count()) / 1000.0;
  if (!std::isfinite(seconds) || seconds <= 0 || seconds > max_seconds) {
    raise_invalid_argument("timeout must be more than 0 and at most " +
                           std::to_string(static_cast<std::int64_t>(max_seconds)) +
                           " seconds (one year), got " + std::string(nb::repr(obj).c_str()));
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(seconds * 1000.0)));
}

// An entry version: an int from 0 to 2**63 - 1, what the wire carries (a
// store's versions stay far below).
std::uint64_t version_arg(nb::handle obj) {
  if (PyBool_Check(obj.ptr()) || !PyLong_Check(obj.ptr())) {
    raise_invalid_type("expected_version must be an int, not '" + python_type_name(obj) + "'");
  }
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw nb::python_error();
  if (overflow != 0 || v < 0) {
    raise_invalid_argument("expected_version " + std::string(nb::repr(obj).c_str()) +
                           " is not a version (0 to 2**63 - 1)");
  }
  return static_cast<std::uint64_t>(v);
}

// A bytes or bytearray object's buffer, exported for as long as this lives.
struct held_buffer {
  Py_buffer view{};
  explicit held_buffer(nb::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_SIMPLE) != 0) throw nb::python_error();
  }
  ~held_buffer() { PyBuffer_Release(&view); }
  held_buffer(const held_buffer&) = delete;
  held_buffer& operator=(const held_buffer&) = delete;
};

}  // namespace

void init_client(nb::module_& m) {
  nb::class_<py_client>(
      m, "Client",
      "A connection to a broker's control socket: writes, view calls, stats.\n\n"
      "Each call is one round trip made without the GIL. A call with no answer within\n"
      "the timeout raises Timeout if the broker still answers a ping (alive but slow),\n"
      "else BrokerUnavailable. Ctrl-C interrupts a waiting call (KeyboardInterrupt); a\n"
      "write interrupted or timed out may still have been applied: read the entry's\n"
      "version to find out. Safe to share between threads (calls are serialized); a\n"
      "fork() child connects anew on its first call.")
      .def(
          "__init__",
          [](py_client* self, nb::handle endpoint, nb::handle runtime_dir, nb::handle ns,
             nb::handle timeout, nb::handle curve_server_key, nb::handle curve_secret_key,
             nb::handle curve_public_key) {
            client_options options;
            options.endpoint = name_arg(endpoint, "endpoint");
            options.runtime_dir = path_arg(runtime_dir, "runtime_dir");
            options.ns = name_arg(ns, "namespace");
            options.timeout = to_timeout(timeout);
            options.curve_server_key = name_arg(curve_server_key, "curve_server_key");
            options.curve_secret_key = name_arg(curve_secret_key, "curve_secret_key");
            options.curve_public_key = name_arg(curve_public_key, "curve_public_key");
            options.interrupt = check_signals;
            std::optional<result<client>> r;
            {
              nb::gil_scoped_release nogil;
              r.emplace(client::connect(options));
            }
            if (!*r && PyErr_Occurred()) throw nb::python_error();
            client connected = take(std::move(*r));
            new (self) py_client{};
            self->options = std::move(options);
            self->ns = connected.ns();
            self->live->conn.emplace(std::move(connected));
          },
          nb::arg("endpoint").none() = "", nb::arg("runtime_dir").none() = "",
          nb::arg("namespace").none() = "default", nb::arg("timeout").none() = 5.0,
          nb::arg("curve_server_key").none() = "", nb::arg("curve_secret_key").none() = "",
          nb::arg("curve_public_key").none() = "",
          "Connects to the broker at `endpoint`, or the control socket in `runtime_dir`,\n"
          "or in the default runtime directory of `namespace` (1-64 characters of\n"
          "[A-Za-z0-9_-]). An ipc socket is used only if it, its directory and every\n"
          "directory above belong to this user or root (see the README's security model):\n"
          "else InvalidArgument names the path and what is wrong. `timeout` (seconds, more\n"
          "than 0, at most a year) bounds every round trip. Raises BrokerUnavailable if no\n"
          "broker answers, ProtocolError on a version mismatch. A tcp endpoint needs CURVE\n"
          "keys (Z85 text): the broker's public key and this client's secret key (its\n"
          "public key is derived unless given).")
      .def_prop_ro(
          "namespace", [](const py_client& c) { return c.ns; }, "The namespace the broker serves.")
      .def(
          "attach_info",
          [](py_client& c, nb::handle store) {
            const std::string_view s = name_arg(store, "store");
            store_info info = c.call([&](client& cl) { return cl.attach_info(s); });
            nb::dict out;
            out["namespace"] = info.ns;
            out["name"] = info.name;
            nb::list tables;
            for (const std::string& t : info.tables) tables.append(nb::str(t.c_str(), t.size()));
            out["tables"] = tables;
            out["layout_version"] = info.layout_version;
            out["incarnation"] = info.incarnation;
            return out;
          },
          nb::arg("store").none(),
          "What a reader needs to attach to `store`: a dict with namespace, name, tables,\n"
          "layout_version and incarnation (0 if the broker does not say). Raises NotFound\n"
          "for an unknown store.")
      .def(
          "put",
          [](py_client& c, nb::handle store, nb::handle table, nb::handle key, nb::handle value,
             std::optional<std::uint64_t> incarnation) {
            const write_target at = target_of(store, table);
            const std::string k(key_view(key));
            const buffer v = encode_object(value);
            return c.write(at, incarnation,
                           [&](client& cl) { return cl.put_encoded(at.store, at.table, k, v); });
          },
          nb::arg("store").none(), nb::arg("table").none(), nb::arg("key").none(),
          nb::arg("value").none(), nb::arg("incarnation").none() = nb::none(),
          "Stores `value` under `key`; returns the entry's new version once readers see it.\n"
          "With `incarnation` (a Reader's), a broker whose store is another one raises\n"
          "WriterGone and applies nothing; so do the other writes.")
      .def(
          "put_in_place",
          [](py_client& c, nb::handle store, nb::handle table, nb::handle key, nb::handle value,
             std::optional<std::uint64_t> incarnation) {
            const write_target at = target_of(store, table);
            const std::string k(key_view(key));
            if (PyBytes_Check(value.ptr()) || PyByteArray_Check(value.ptr())) {
              // Stored as `put` stores bytes (encoded, not as an array). The
              // buffer export keeps a bytearray from being resized meanwhile.
              const held_buffer b(value);
              const std::span<const std::byte> bytes(static_cast<const std::byte*>(b.view.buf),
                                                     static_cast<std::size_t>(b.view.len));
              return c.write(at, incarnation, [&](client& cl) {
                return cl.put_bytes_in_place(at.store, at.table, k, bytes);
              });
            }
            // Refers to the Python buffer, which `value` keeps alive: the copy
            // into shared memory below is the only one.
            const Value v = to_value(value);
            if (!v.is_ndarray()) {
              throw slither::error(errc::invalid_argument,
                                   "put_in_place needs bytes, a bytearray or an array (a "
                                   "C-contiguous buffer of a supported dtype)");
            }
            const ndarray& a = v.as<ndarray>();
            return c.write(at, incarnation,
                           [&](client& cl) { return cl.put_in_place(at.store, at.table, k, a); });
          },
          nb::arg("store").none(), nb::arg("table").none(), nb::arg("key").none(),
          nb::arg("value").none(), nb::arg("incarnation").none() = nb::none(),
          "`put` of bytes, a bytearray or an array through shared memory: the broker\n"
          "reserves a block, this process copies the value into it and commits; the value\n"
          "never crosses the socket. Readers see what `put` of the same value stores.")
      .def(
          "put_many",
          [](py_client& c, nb::handle store, nb::handle table, nb::handle entries,
             std::optional<std::uint64_t> incarnation, bool atomic) {
            const write_target at = target_of(store, table);
            const buffer list = encode_entries(entries);
            c.write(at, incarnation, [&](client& cl) {
              return cl.put_many_encoded(at.store, at.table, list, atomic);
            });
          },
          nb::arg("store").none(), nb::arg("table").none(), nb::arg("entries").none(),
          nb::arg("incarnation").none() = nb::none(), nb::arg("atomic") = false,
          "Stores many entries, all or nothing, in one round trip. `entries` is a mapping\n"
          "or an iterable of (key, value) tuples or lists; anything else (a str, a list of\n"
          "str) raises InvalidType. Readers may see part of the batch until the call\n"
          "returns, unless `atomic`: then they see none or all of it.")
      .def(
          "reload",
          [](py_client& c, nb::handle store, nb::handle table, nb::handle entries,
             std::optional<std::uint64_t> incarnation) {
            const write_target at = target_of(store, table);
            const buffer list = encode_entries(entries);
            c.write(at, incarnation,
                    [&](client& cl) { return cl.reload_encoded(at.store, at.table, list); });
          },
          nb::arg("store").none(), nb::arg("table").none(), nb::arg("entries").none(),
          nb::arg("incarnation").none() = nb::none(),
          "Replaces every entry of `table` with `entries` atomically: readers see the old\n"
          "or the new contents, never a mix. If an entry fails, the old contents stay.")
      .def(
          "create_table",
          [](py_client& c, nb::handle store, nb::handle table, nb::handle kind,
             std::uint64_t capacity, std::optional<std::uint64_t> incarnation) {
            const write_target at = target_of(store, table);
            const std::string_view k = name_arg(kind, "kind");
            c.write(at, incarnation,
                    [&](client& cl) { return cl.create_table(at.store, at.table, k, capacity); });
          },
          nb::arg("store").none(), nb::arg("table").none(), nb::arg("kind").none() = "set",
          nb::arg("capacity") = 1024, nb::arg("incarnation").none() = nb::none(),
          "Adds the table `table` (kind 'set', 'bag' or 'ordered_set') to `store` while the\n"
          "broker runs. "
          "Raises AlreadyExists, InvalidArgument or LimitExceeded (64 tables per store).")
      .def(
          "drop_table",
          [](py_client& c, nb::handle store, nb::handle table,
             std::optional<std::uint64_t> incarnation) {
            const write_target at = target_of(store, table);
            c.write(at, incarnation, [&](client& cl) { return cl.drop_table(at.store, at.table); });
          },
          nb::arg("store").none(), nb::arg("table").none(),
          nb::arg("incarnation").none() = nb::none(),
          "Removes a table created at run time, with its entries. A table declared in the\n"
          "broker's config cannot be dropped (InvalidArgument).")
      .def(
          "erase",
          [](py_client& c, nb::handle store, nb::handle table, nb::handle key,
             std::optional<std::uint64_t> incarnation) {
            const write_target at = target_of(store, table);
            const std::string k(key_view(key));
            return c.write(at, incarnation,
                           [&](client& cl) { return cl.erase(at.store, at.table, k); });
          },
          nb::arg("store").none(), nb::arg("table").none(), nb::arg("key").none(),
          nb::arg("incarnation").none() = nb::none(),
          "Removes `key`; returns whether it was present.")
      .def(
          "compare_and_set",
          [](py_client& c, nb::handle store, nb::handle table, nb::handle key, nb::handle expected,
             nb::handle value, std::optional<std::uint64_t> incarnation) {
            const write_target at = target_of(store, table);
            const std::string k(key_view(key));
            const std::uint64_t expected_version = version_arg(expected);
            const buffer v = encode_object(value);
            return c.write(at, incarnation, [&](client& cl) {
              return cl.compare_and_set_encoded(at.store, at.table, k, expected_version, v);
            });
          },
          nb::arg("store").none(), nb::arg("table").none(), nb::arg("key").none(),
          nb::arg("expected_version").none(), nb::arg("value").none(),
          nb::arg("incarnation").none() = nb::none(),
          "Writes `value` only if the entry's version is `expected_version` (0 = absent);\n"
          "returns the new version. Raises Conflict naming the version found.")
      .def(
          "compare_and_erase",
          [](py_client& c, nb::handle store, nb::handle table, nb::handle key, nb::handle expected,
             std::optional<std::uint64_t> incarnation) {
            const write_target at = target_of(store, table);
            const std::string k(key_view(key));
            const std::uint64_t expected_version = version_arg(expected);
            return c.write(at, incarnation, [&](client& cl) {
              return cl.compare_and_erase(at.store, at.table, k, expected_version);
            });
          },
          nb::arg("store").none(), nb::arg("table").none(), nb::arg("key").none(),
          nb::arg("expected_version").none(), nb::arg("incarnation").none() = nb::none(),
          "Removes `key` only if the entry's version is `expected_version` (0 = absent:\n"
          "nothing is removed); returns whether an entry was removed. Raises Conflict\n"
          "naming the version found, InvalidArgument for a bag table.")
      .def(
          "clear",
          [](py_client& c, nb::handle store, nb::handle table,
             std::optional<std::uint64_t> incarnation) {
            const write_target at = target_of(store, table);
            c.write(at, incarnation, [&](client& cl) { return cl.clear(at.store, at.table); });
          },
          nb::arg("store").none(), nb::arg("table").none(),
          nb::arg("incarnation").none() = nb::none(), "Removes every entry of `table`.")
      .def(
          "call_view",
          [](py_client& c, nb::handle store, nb::handle view, nb::handle arg, nb::handle session_id,
             std::optional<std::uint64_t> incarnation) {
            const std::string_view s = name_arg(store, "store");
            const std::string_view v = name_arg(view, "view");
            const std::string_view session = name_arg(session_id, "session_id");
            const buffer a = encode_object(arg, "arg");
            const buffer out = c.write({s, {}}, incarnation, [&](client& cl) {
              return cl.call_view_encoded(s, v, a, session);
            });
            return decode_object(out);
          },
          nb::arg("store").none(), nb::arg("view").none(), nb::arg("arg").none() = nb::none(),
          nb::arg("session_id").none() = "", nb::arg("incarnation").none() = nb::none(),
          "Calls the view `view` registered on `store` with `arg` and returns its result.")
      .def(
          "stats",
          [](py_client& c) { return to_python(c.call([](client& cl) { return cl.stats(); })); },
          "Broker and store figures (queue depth, entries, bytes...) as a dict.")
      .def(
          "ping", [](py_client& c) { c.call([](client& cl) { return cl.ping(); }); },
          "One round trip that touches nothing; raises BrokerUnavailable if none comes back.")
      .def(
          "close",
          [](py_client& c) {
            if (c.forked != fork_generation()) {
              // Nothing of the parent's to close here (see `py_client::call`).
              (void)c.live.release();
              c.live = std::make_unique<connection>();
              c.forked = fork_generation();
            }
            if (c.live->holder.load(std::memory_order_relaxed) == std::this_thread::get_id()) {
              raise(fail(errc::busy, "this Client is waiting for a reply on this thread"));
            }
            nb::gil_scoped_release nogil;
            std::lock_guard lock(c.live->mutex);
            c.live->closed = true;
            c.live->conn.reset();
          },
          "Closes the connection; later calls raise BrokerUnavailable. Safe twice.");

  m.def(
      "default_runtime_dir",
      [](nb::handle ns) {
        const std::string_view n = name_arg(ns, "namespace");
        if (!valid_namespace(n)) {
          raise_invalid_argument("namespace '" + std::string(n) +
                                 "' must be 1-64 characters of [A-Za-z0-9_-]");
        }
        return default_runtime_dir(n).string();
      },
      nb::arg("namespace").none(),
      "The runtime directory a broker of `namespace` uses by default.");
}

}  // namespace slither::py
