// WorkerRuntime: `slither::worker_runtime` for Python, the engine of
// `python -m slither.worker`. The serving loop runs here, in C++: it waits
// for a batch without the GIL, decodes the batch frame straight into Python
// objects, calls the handler, checks and encodes its answer, and responds
// without the GIL. Python supplies only what is Python's business: how a
// "module:function" name becomes a callable, and the `ctx` object.
#include <chrono>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "bindings.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "pycodec.hpp"
#include "slither/broker/worker.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

// How long one wait for a batch lasts before Python gets a chance to see a
// signal (Ctrl-C): short enough to feel immediate, long enough to cost nothing.
constexpr std::chrono::milliseconds signal_poll{100};

std::string qualname_of(nb::handle type) {
  return nb::cast<std::string>(nb::getattr(type, "__qualname__", nb::str("Exception")));
}

// The exception Python holds now (or `e`), as the batch's failure: type,
// message and the formatted traceback.
batch_exception describe(nb::python_error& e) {
  batch_exception out;
  out.type = qualname_of(e.type());
  try {
    out.message = nb::cast<std::string>(nb::str(e.value()));
    nb::object tb = nb::module_::import_("traceback").attr("format_exception")(e.value());
    out.traceback = nb::cast<std::string>(nb::str("").attr("join")(tb));
  } catch (nb::python_error&) {
    // A __str__ that raises must not take the worker down with it.
    if (out.message.empty()) out.message = "(the exception could not be formatted)";
  }
  return out;
}

// KeyboardInterrupt and SystemExit end the worker; every other exception is
// the batch's failure.
bool ends_worker(nb::python_error& e) {
  return e.matches(PyExc_KeyboardInterrupt) || e.matches(PyExc_SystemExit);
}

struct py_worker {
  std::optional<worker_runtime> rt;
  std::unordered_map<std::string, nb::object> handlers;
  std::uint64_t batches = 0;

  worker_runtime& runtime() {
    if (!rt) raise_invalid_argument("the worker is closed");
    return *rt;
  }

  // The handler's answer for one batch.
  batch_outcome run(const worker_batch& b, nb::handle resolve, nb::handle make_context,
                    nb::handle item_error) {
    nb::object fn;
    if (auto it = handlers.find(b.function()); it != handlers.end()) {
      fn = it->second;
    } else {
      try {
        fn = resolve(nb::str(b.function().c_str(), b.function().size()));
      } catch (nb::python_error& e) {
        if (ends_worker(e)) throw;
        return describe(e);
      }
      handlers.emplace(b.function(), fn);
    }
    nb::object results;
    std::size_t count = b.count();
    try {
      nb::list items = decode_batch_payloads(b.payload());
      count = items.size();
      const Context& c = b.context();
      nb::object ctx = make_context(nb::str(c.session_id.c_str(), c.session_id.size()),
                                    nb::str(c.stage.c_str(), c.stage.size()),
                                    nb::str(c.pipe.c_str(), c.pipe.size()),
                                    to_python(Value(c.metadata)), b.attempt(), b.job(), b.batch());
      results = fn(items, ctx);
    } catch (nb::python_error& e) {
      if (ends_worker(e)) throw;
      return describe(e);
    }
    if (!PyList_Check(results.ptr())) {
      return batch_exception{"TypeError",
                             "handler '" + b.function() + "' returned " +
                                 qualname_of(results.type()) + ", not a list of " +
                                 std::to_string(count) + " results",
                             {}};
    }
    const auto n = static_cast<std::size_t>(PyList_GET_SIZE(results.ptr()));
    if (n != count) {
      return batch_exception{"ValueError",
                             "handler '" + b.function() + "' returned " + std::to_string(n) +
                                 " results for a batch of " + std::to_string(count) + " items",
                             {}};
    }
    batch_results out;
    out.count = n;
    PyObject* const* values = PySequence_Fast_ITEMS(results.ptr());
    std::vector<PyObject*> patched;
    for (std::size_t i = 0; i < n; ++i) {
      PyObject* v = values[i];
      if (Py_TYPE(v) != reinterpret_cast<PyTypeObject*>(item_error.ptr()) &&
          !PyObject_TypeCheck(v, reinterpret_cast<PyTypeObject*>(item_error.ptr()))) {
        continue;
      }
      if (patched.empty()) patched.assign(values, values + n);
      patched[i] = Py_None;
      nb::handle err(v);
      indexed_error ie;
      ie.index = static_cast<std::uint32_t>(i);
      ie.error.kind = failure_kind::item_error;
      ie.error.type = nb::cast<std::string>(err.attr("type"));
      ie.error.message = nb::cast<std::string>(err.attr("message"));
      ie.error.traceback = nb::cast<std::string>(err.attr("traceback"));
      out.errors.push_back(std::move(ie));
    }
    try {
      encode_batch_into(out.payload, patched.empty() ? values : patched.data(), n, 0, "result");
    } catch (nb::python_error& e) {
      if (ends_worker(e)) throw;
      batch_exception x = describe(e);
      x.message =
          "handler '" + b.function() + "' returned a result that cannot be sent: " + x.message;
      return x;
    }
    return out;
  }

  std::string serve(nb::handle resolve, nb::handle make_context, nb::handle item_error) {
    worker_runtime& w = runtime();
    for (;;) {
      std::optional<worker_batch> b;
      {
        nb::gil_scoped_release nogil;
        b = w.next(signal_poll);
      }
      if (!b) {
        if (auto why = w.stopped()) return *why;
        if (PyErr_CheckSignals() != 0) throw nb::python_error();
        continue;
      }
      batch_outcome outcome = run(*b, resolve, make_context, item_error);
      ++batches;
      result<void> sent;
      {
        nb::gil_scoped_release nogil;
        sent = w.respond(*b, std::move(outcome));
      }
      if (!sent) {
        if (auto why = w.stopped()) return *why;
        raise(sent.error());
      }
    }
  }
};

}  // namespace

void init_worker(nb::module_& m) {
  nb::class_<py_worker>(m, "WorkerRuntime",
                        "A worker's connection to a broker's pool (slither::worker_runtime).\n\n"
                        "`python -m slither.worker` is the way to run one; this class is its\n"
                        "engine. One per process.")
      .def(
          "__init__",
          [](py_worker* self, std::string endpoint, std::string runtime_dir, std::string ns,
             std::string pool, std::uint32_t credits, double timeout, std::string curve_server_key,
             std::string curve_secret_key) {
            auto from_env = worker_options::from_environment();
            worker_options opts = take(std::move(from_env));
            if (!endpoint.empty()) opts.broker.endpoint = std::move(endpoint);
            if (!runtime_dir.empty()) opts.broker.runtime_dir = std::move(runtime_dir);
            if (!ns.empty()) opts.broker.ns = std::move(ns);
            if (!pool.empty()) opts.pool = std::move(pool);
            if (credits > 0) opts.credits = credits;
            if (timeout > 0) {
              opts.broker.timeout =
                  std::chrono::milliseconds(static_cast<std::int64_t>(timeout * 1000.0));
            }
            if (!curve_server_key.empty()) opts.broker.curve_server_key = curve_server_key;
            if (!curve_secret_key.empty()) opts.broker.curve_secret_key = curve_secret_key;
            std::optional<result<worker_runtime>> r;
            {
              nb::gil_scoped_release nogil;
              r.emplace(worker_runtime::connect(std::move(opts)));
            }
            worker_runtime joined = take(std::move(*r));
            new (self) py_worker{};
            self->rt.emplace(std::move(joined));
          },
          nb::arg("endpoint") = "", nb::arg("runtime_dir") = "", nb::arg("namespace") = "",
          nb::arg("pool") = "", nb::arg("credits") = 0, nb::arg("timeout") = 0.0,
          nb::arg("curve_server_key") = "", nb::arg("curve_secret_key") = "",
          "Joins a pool. Every argument left empty (or 0) comes from the environment a\n"
          "broker sets for the workers it spawns (SLITHER_CONTROL_ENDPOINT,\n"
          "SLITHER_RUNTIME_DIR, SLITHER_NAMESPACE, SLITHER_POOL, SLITHER_WORKER_CREDITS,\n"
          "SLITHER_CURVE_SERVER_KEY, SLITHER_CURVE_SECRET_KEY). Raises NotFound (no such\n"
          "pool), BrokerUnavailable (no broker answered within `timeout` seconds).")
      .def_prop_ro(
          "info",
          [](py_worker& w) {
            const worker_info& i = w.runtime().info();
            nb::dict d;
            d["id"] = i.id;
            d["pool"] = i.pool;
            d["namespace"] = i.ns;
            nb::list stores;
            for (const auto& s : i.stores) stores.append(nb::str(s.c_str(), s.size()));
            d["stores"] = stores;
            d["local"] = i.local;
            d["heartbeat"] = static_cast<double>(i.heartbeat.count()) / 1000.0;
            d["heartbeat_misses"] = i.heartbeat_misses;
            return d;
          },
          "What the broker said at join: id, pool, namespace, stores, local, heartbeat\n"
          "(seconds), heartbeat_misses.")
      .def_prop_ro(
          "batches", [](const py_worker& w) { return w.batches; }, "Batches served so far.")
      .def("serve", &py_worker::serve, nb::arg("resolve"), nb::arg("make_context"),
           nb::arg("item_error"),
           "Serves batches until the worker stops; returns why it stopped.\n\n"
           "`resolve(name)` turns \"module:function\" into the handler (called once per\n"
           "name; an exception fails the batch), `make_context(session_id, stage, pipe,\n"
           "metadata, attempt, job, batch)` builds the handler's `ctx`, and results that\n"
           "are instances of `item_error` fail their item alone. KeyboardInterrupt (Ctrl-C,\n"
           "seen within 0.1 s while waiting) and SystemExit propagate.")
      .def(
          "close",
          [](py_worker& w) {
            if (!w.rt) return;
            nb::gil_scoped_release nogil;
            w.rt->close();
            w.rt.reset();
          },
          "Says goodbye to the broker and closes the sockets. Safe twice.");
}

}  // namespace slither::py
