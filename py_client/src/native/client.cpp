// Client: the broker's control socket. Every call is a round trip, made with
// the GIL released; a mutex serializes threads that share one Client (the C++
// client is not thread-safe).
#include <chrono>
#include <cmath>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>

#include "bindings.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "pycodec.hpp"
#include "slither/broker/client.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

struct py_client {
  std::optional<client> conn;
  std::string ns;
  std::mutex mutex;

  // Runs `fn(client&)` without the GIL and returns its result (or raises).
  template <class Fn>
  auto call(Fn&& fn) {
    using R = std::invoke_result_t<Fn, client&>;
    std::optional<R> r;
    {
      nb::gil_scoped_release nogil;
      std::lock_guard lock(mutex);
      if (conn)
        r.emplace(fn(*conn));
      else
        r.emplace(fail(errc::unavailable, "client is closed"));
    }
    return take(std::move(*r));
  }
};

std::chrono::milliseconds to_timeout(double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds))
    throw nb::value_error("timeout must be a positive number of seconds");
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(seconds * 1000.0)));
}

}  // namespace

void init_client(nb::module_& m) {
  nb::class_<py_client>(m, "Client",
                        "A connection to a broker's control socket: writes, view calls, stats.\n\n"
                        "Each call is one round trip made without the GIL; a call that gets no\n"
                        "answer within the timeout raises BrokerUnavailable. Safe to share\n"
                        "between threads (calls are serialized); after fork(), connect again.")
      .def(
          "__init__",
          [](py_client* self, std::string endpoint, std::string runtime_dir, std::string ns,
             double timeout, std::string curve_server_key, std::string curve_secret_key,
             std::string curve_public_key) {
            client_options options;
            options.endpoint = std::move(endpoint);
            options.runtime_dir = std::move(runtime_dir);
            options.ns = std::move(ns);
            options.timeout = to_timeout(timeout);
            options.curve_server_key = std::move(curve_server_key);
            options.curve_secret_key = std::move(curve_secret_key);
            options.curve_public_key = std::move(curve_public_key);
            std::optional<result<client>> r;
            {
              nb::gil_scoped_release nogil;
              r.emplace(client::connect(options));
            }
            client connected = take(std::move(*r));
            new (self) py_client{};
            self->conn.emplace(std::move(connected));
            self->ns = self->conn->ns();
          },
          nb::arg("endpoint") = "", nb::arg("runtime_dir") = "", nb::arg("namespace") = "default",
          nb::arg("timeout") = 5.0, nb::arg("curve_server_key") = "",
          nb::arg("curve_secret_key") = "", nb::arg("curve_public_key") = "",
          "Connects to the broker at `endpoint`, or the control socket in `runtime_dir`,\n"
          "or in the default runtime directory of `namespace`. Raises BrokerUnavailable if\n"
          "no broker answers within `timeout` seconds, ProtocolError on a version mismatch.\n"
          "A tcp endpoint needs CURVE keys (Z85 text): the broker's public key and this\n"
          "client's secret key (its public key is derived unless given).")
      .def_prop_ro(
          "namespace", [](const py_client& c) { return c.ns; }, "The namespace the broker serves.")
      .def(
          "attach_info",
          [](py_client& c, std::string_view store) {
            store_info info = c.call([&](client& cl) { return cl.attach_info(store); });
            nb::dict out;
            out["namespace"] = info.ns;
            out["name"] = info.name;
            nb::list tables;
            for (const std::string& t : info.tables) tables.append(nb::str(t.c_str(), t.size()));
            out["tables"] = tables;
            out["layout_version"] = info.layout_version;
            return out;
          },
          nb::arg("store"),
          "What a reader needs to attach to `store`: a dict with namespace, name, tables,\n"
          "layout_version. Raises NotFound for an unknown store.")
      .def(
          "put",
          [](py_client& c, std::string_view store, std::string_view table, nb::handle key,
             nb::handle value) {
            const std::string k(key_view(key));
            const buffer v = encode_object(value);
            return c.call([&](client& cl) { return cl.put_encoded(store, table, k, v); });
          },
          nb::arg("store"), nb::arg("table"), nb::arg("key"), nb::arg("value").none(),
          "Stores `value` under `key`; returns the entry's new version once readers see it.")
      .def(
          "put_many",
          [](py_client& c, std::string_view store, std::string_view table, nb::handle entries) {
            const buffer list = encode_entries(entries);
            c.call([&](client& cl) { return cl.put_many_encoded(store, table, list); });
          },
          nb::arg("store"), nb::arg("table"), nb::arg("entries"),
          "Stores many entries (a mapping or (key, value) pairs), all or nothing, in one\n"
          "round trip.")
      .def(
          "erase",
          [](py_client& c, std::string_view store, std::string_view table, nb::handle key) {
            const std::string k(key_view(key));
            return c.call([&](client& cl) { return cl.erase(store, table, k); });
          },
          nb::arg("store"), nb::arg("table"), nb::arg("key"),
          "Removes `key`; returns whether it was present.")
      .def(
          "compare_and_set",
          [](py_client& c, std::string_view store, std::string_view table, nb::handle key,
             std::uint64_t expected_version, nb::handle value) {
            const std::string k(key_view(key));
            const buffer v = encode_object(value);
            return c.call([&](client& cl) {
              return cl.compare_and_set_encoded(store, table, k, expected_version, v);
            });
          },
          nb::arg("store"), nb::arg("table"), nb::arg("key"), nb::arg("expected_version"),
          nb::arg("value").none(),
          "Writes `value` only if the entry's version is `expected_version` (0 = absent);\n"
          "returns the new version. Raises Conflict naming the version found.")
      .def(
          "clear",
          [](py_client& c, std::string_view store, std::string_view table) {
            c.call([&](client& cl) { return cl.clear(store, table); });
          },
          nb::arg("store"), nb::arg("table"), "Removes every entry of `table`.")
      .def(
          "call_view",
          [](py_client& c, std::string_view store, std::string_view view, nb::handle arg,
             std::string_view session_id) {
            const buffer a = encode_object(arg, "arg");
            const buffer out = c.call(
                [&](client& cl) { return cl.call_view_encoded(store, view, a, session_id); });
            return decode_object(out);
          },
          nb::arg("store"), nb::arg("view"), nb::arg("arg").none() = nb::none(),
          nb::arg("session_id") = "",
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
            nb::gil_scoped_release nogil;
            std::lock_guard lock(c.mutex);
            c.conn.reset();
          },
          "Closes the connection; later calls raise BrokerUnavailable. Safe twice.");

  m.def(
      "default_runtime_dir", [](std::string_view ns) { return default_runtime_dir(ns).string(); },
      nb::arg("namespace"), "The runtime directory a broker of `namespace` uses by default.");
}

}  // namespace slither::py
