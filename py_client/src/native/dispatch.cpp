// Dispatch: one job on a broker's worker pool, fed from a Python iterable and
// read as an iterator of results. The hot loop is here, in C++: pulling input
// only while the job has room, batching (fixed, weighted or by key), encoding
// each batch straight from the Python objects into a batch frame, submitting
// it, waiting for output without the GIL, and decoding results straight into
// Python objects. `slither.Dispatch` (dispatch.py) subclasses it and adds the
// Python conveniences; a Pipe binding can drive this class the same way.
#include <chrono>
#include <cmath>
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
#include "options.hpp"
#include "pycodec.hpp"
#include "slither/broker/dispatch.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

// How long one wait for output lasts before Python gets a chance to see a
// signal (Ctrl-C).
constexpr std::chrono::milliseconds signal_poll{100};

// The Python classes a dispatch reports with, set once by slither.dispatch:
// FailureInfo(kind, type, message, traceback, batch, attempt, worker),
// Failed(item, error, output), and the DispatchError factory. Leaked on
// purpose: they live as long as the interpreter.
struct report_types {
  PyObject* failure_info = nullptr;
  PyObject* failed = nullptr;
  PyObject* halted = nullptr;
};
report_types types;

enum class batching_kind { fixed, weighted, keyed };

struct py_dispatch {
  std::optional<dispatch_job> job;
  nb::object source;  // the input iterator
  bool source_done = false;
  bool input_closed = false;
  bool ended = false;
  bool cancelled_by_caller = false;

  batching_kind batching = batching_kind::fixed;
  std::size_t batch_size = 64;
  nb::object weight_fn, key_fn;
  double max_weight = 0;
  // The open batch (fixed, weighted) and its weight; or open batches by key.
  std::vector<nb::object> open;
  double open_weight = 0;
  nb::dict open_by_key;
  std::size_t open_items = 0;

  std::uint64_t next_seq = 0;
  std::unordered_map<std::uint64_t, std::vector<nb::object>> inputs;  // sent, not answered
  // Results to hand out, from ready_pos on (the decoded batch itself when it
  // had no failures); handed-out slots hold None.
  nb::list ready;
  std::size_t ready_pos = 0;
  std::string route;

  nb::list errors;  // (item, FailureInfo) of skipped items
  nb::list failed;  // (item, FailureInfo) of items failed under halt
  std::uint64_t pulled = 0, submitted = 0, yielded = 0, skipped = 0, routed = 0, failed_count = 0,
                cancelled = 0;

  dispatch_job& live() {
    if (!job) raise_invalid_argument("the dispatch is closed");
    return *job;
  }

  // --- output -------------------------------------------------------------

  nb::object failure_info(const dispatch_error& e) {
    const std::string_view kind = to_string(e.kind);
    return nb::handle(types.failure_info)(
        nb::str(kind.data(), kind.size()), nb::str(e.type.c_str(), e.type.size()),
        nb::str(e.message.c_str(), e.message.size()),
        nb::str(e.traceback.c_str(), e.traceback.size()), e.batch, e.attempt, e.worker);
  }

  bool ready_empty() const noexcept {
    return ready_pos >= static_cast<std::size_t>(PyList_GET_SIZE(ready.ptr()));
  }

  void push_ready(const nb::object& o) {
    if (ready_pos > 0 && ready_empty()) {
      ready = nb::list();
      ready_pos = 0;
    }
    if (PyList_Append(ready.ptr(), o.ptr()) != 0) throw nb::python_error();
  }

  // One item that did not end ok.
  void report(nb::object item, item_status status, const nb::object& info) {
    if (!info.is_valid()) throw nb::python_error();
    switch (status) {
      case item_status::ok:
        push_ready(item);
        return;
      case item_status::skipped:
        errors.append(nb::make_tuple(item, info));
        ++skipped;
        return;
      case item_status::routed: {
        nb::object f = nb::steal(
            PyObject_CallFunctionObjArgs(types.failed, item.ptr(), info.ptr(),
                                         nb::str(route.c_str(), route.size()).ptr(), nullptr));
        if (!f.is_valid()) throw nb::python_error();
        push_ready(f);
        ++routed;
        return;
      }
      case item_status::failed:
        failed.append(nb::make_tuple(item, info));
        ++failed_count;
        return;
      case item_status::cancelled:
        ++cancelled;
        return;
    }
  }

  void take(batch_output&& out) {
    const auto it = inputs.find(out.seq);
    if (it == inputs.end()) {
      raise(error_info{errc::protocol_error, "dispatch job " + std::to_string(job->id()) +
                                                 ": a result for batch " + std::to_string(out.seq) +
                                                 ", never sent"});
    }
    std::vector<nb::object> items = std::move(it->second);
    inputs.erase(it);
    if (!out.has_results) {
      nb::object info = failure_info(*out.error);
      for (auto& item : items) report(std::move(item), out.status, info);
      return;
    }
    nb::list values;
    std::optional<std::string> bad;
    try {
      values = decode_batch_payloads(out.payload.bytes);
      if (values.size() != items.size()) {
        bad = "the results are a batch of " + std::to_string(values.size()) + ", not " +
              std::to_string(items.size());
      }
    } catch (nb::python_error& e) {
      bad = std::string("the results cannot be decoded: ") + e.what();
    }
    if (bad) {
      dispatch_error e;
      e.kind = failure_kind::bad_result;
      e.type = "bad_result";
      e.message = *bad;
      nb::object info = failure_info(e);
      for (auto& item : items) report(std::move(item), item_status::failed, info);
      return;
    }
    if (out.failures.empty() && ready_empty()) {
      ready = std::move(values);  // the common case: hand out the decoded list itself
      ready_pos = 0;
      return;
    }
    PyObject* const* v = PySequence_Fast_ITEMS(values.ptr());
    std::size_t f = 0;
    const dispatch_error* last = nullptr;
    nb::object info;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (f < out.failures.size() && out.failures[f].index == i) {
        const item_outcome& o = out.failures[f++];
        if (o.error.get() != last) {
          info = failure_info(*o.error);
          last = o.error.get();
        }
        report(std::move(items[i]), o.status, info);
        continue;
      }
      push_ready(nb::borrow(v[i]));
    }
  }

  // --- input --------------------------------------------------------------

  void submit(std::vector<nb::object>&& items) {
    dispatch_job& j = *job;
    if (j.error()) {  // the job stopped: these never reach it
      cancelled += items.size();
      return;
    }
    std::vector<std::byte> bytes;
    std::vector<PyObject*> raw(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) raw[i] = items[i].ptr();
    encode_batch_into(bytes, raw.data(), raw.size(), 0, "item");
    const std::size_t count = items.size();
    if (auto r = j.submit(std::move(bytes), count); !r) {
      if (!j.error()) raise(r.error());
      cancelled += count;  // it ended meanwhile
      return;
    }
    ++submitted;
    inputs.emplace(next_seq++, std::move(items));
  }

  void flush_open() {
    if (open.empty()) return;
    std::vector<nb::object> batch;
    batch.swap(open);
    open_items -= batch.size();
    open_weight = 0;
    submit(std::move(batch));
  }

  void flush_key(nb::handle key) {
    nb::handle list = PyDict_GetItem(open_by_key.ptr(), key.ptr());
    if (!list) return;
    nb::list l = nb::borrow<nb::list>(list);
    std::vector<nb::object> batch;
    batch.reserve(l.size());
    for (nb::handle h : l) batch.push_back(nb::borrow(h));
    PyDict_DelItem(open_by_key.ptr(), key.ptr());
    open_items -= batch.size();
    submit(std::move(batch));
  }

  void flush_all_keys() {
    nb::list keys = open_by_key.keys();
    for (nb::handle k : keys) flush_key(k);
  }

  void flush_largest_key() {
    nb::object best;
    std::size_t most = 0;
    for (auto [k, v] : open_by_key) {
      const std::size_t n = nb::len(v);
      if (n > most) {
        most = n;
        best = nb::borrow(k);
      }
    }
    if (best.is_valid()) flush_key(best);
  }

  void push(nb::object item) {
    ++open_items;
    switch (batching) {
      case batching_kind::fixed:
        open.push_back(std::move(item));
        if (open.size() >= batch_size) flush_open();
        return;
      case batching_kind::weighted: {
        const double w = nb::cast<double>(weight_fn(item));
        if (!(w >= 0) || !std::isfinite(w)) {
          --open_items;
          raise_invalid_argument(
              ("weight_fn returned " + std::to_string(w) + ": weights must be finite and >= 0")
                  .c_str());
        }
        if (!open.empty() && open_weight + w > max_weight) flush_open();
        open.push_back(std::move(item));
        open_weight += w;
        if (open.size() >= batch_size || open_weight >= max_weight) flush_open();
        return;
      }
      case batching_kind::keyed: {
        nb::object key = key_fn(item);
        PyObject* list = PyDict_GetItemWithError(open_by_key.ptr(), key.ptr());
        if (!list && PyErr_Occurred()) {
          --open_items;
          throw nb::python_error();
        }
        if (!list) {
          nb::list fresh;
          open_by_key[key] = fresh;
          list = fresh.ptr();
        }
        if (PyList_Append(list, item.ptr()) != 0) throw nb::python_error();
        if (static_cast<std::size_t>(PyList_GET_SIZE(list)) >= batch_size) flush_key(key);
        return;
      }
    }
  }

  void close_open() {
    if (batching == batching_kind::keyed)
      flush_all_keys();
    else
      flush_open();
  }

  // Pulls as much input as the job has room for, submitting what forms.
  void feed() {
    dispatch_job& j = *job;
    if (!source_done && j.error()) {
      source_done = true;  // the job stopped: read no more
      close_open();
    }
    while (!source_done) {
      const std::size_t cap = j.capacity();
      if (cap <= open_items) break;
      PyObject* next = PyIter_Next(source.ptr());
      if (!next) {
        if (PyErr_Occurred()) {
          source_done = true;
          nb::python_error e;  // the caller's input raised: stop the job, raise it
          (void)j.cancel();
          cancelled_by_caller = true;
          throw e;
        }
        source_done = true;
        break;
      }
      ++pulled;
      push(nb::steal(next));
    }
    if (source_done) {
      close_open();
      if (!input_closed) {
        input_closed = true;
        (void)j.close_input();
      }
      return;
    }
    if (inputs.empty() && open_items > 0 && j.capacity() <= open_items) {
      // The whole window waits in open batches: send some, or nothing frees room.
      if (batching == batching_kind::keyed)
        flush_largest_key();
      else
        flush_open();
    }
  }

  // --- the iterator -------------------------------------------------------

  // The job ended: nothing more to hand out, or the DispatchError of a halt.
  void finish() {
    ended = true;
    if (!cancelled_by_caller && job && job->error() && types.halted &&
        (failed_count > 0 || job->error()->kind != failure_kind::cancelled)) {
      nb::object info = failure_info(*job->error());
      nb::object exc = nb::steal(PyObject_CallFunctionObjArgs(
          types.halted, info.ptr(), failed.ptr(), nb::int_(cancelled).ptr(), nullptr));
      if (!exc.is_valid()) throw nb::python_error();
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
      throw nb::python_error();
    }
  }

  // The next result, or nullptr at the end (a new reference).
  PyObject* next() {
    for (;;) {
      if (!ready_empty()) {
        PyObject** slot = &PySequence_Fast_ITEMS(ready.ptr())[ready_pos++];
        PyObject* r = *slot;  // the list's reference moves to the caller
        *slot = Py_NewRef(Py_None);
        ++yielded;
        return r;
      }
      if (ended || !job) return nullptr;
      feed();
      if (!ready_empty()) continue;
      std::optional<result<std::optional<batch_output>>> out;
      for (;;) {
        {
          nb::gil_scoped_release nogil;
          out.emplace(job->next(signal_poll));
        }
        if (!*out || **out || job->finished()) break;
        if (PyErr_CheckSignals() != 0) {
          (void)job->cancel();
          cancelled_by_caller = true;
          throw nb::python_error();
        }
      }
      if (!*out) raise(out->error());
      if (!**out) {
        finish();
        return nullptr;
      }
      take(std::move(***out));
    }
  }

  void close() {
    if (!job) return;
    if (!job->finished()) {
      cancelled_by_caller = true;
      nb::gil_scoped_release nogil;
      (void)job->cancel();
    }
    {
      nb::gil_scoped_release nogil;
      job.reset();
    }
    ended = true;
    inputs.clear();
    ready = nb::list();
    ready_pos = 0;
    source = nb::none();
    open.clear();
  }
};

// Garbage collection: a Dispatch holds Python objects (its input iterator,
// batching callables, items in flight) that may refer back to it, such as a
// generator whose frame holds the Dispatch.
int dispatch_traverse(PyObject* self, visitproc visit, void* arg) {
  if (!nb::inst_ready(self)) return 0;
  py_dispatch* d = nb::inst_ptr<py_dispatch>(self);
  for (PyObject* h : {d->source.ptr(), d->weight_fn.ptr(), d->key_fn.ptr(), d->open_by_key.ptr(),
                      d->errors.ptr(), d->failed.ptr()}) {
    Py_VISIT(h);
  }
  for (const nb::object& o : d->open) Py_VISIT(o.ptr());
  Py_VISIT(d->ready.ptr());
  for (const auto& [seq, items] : d->inputs) {
    for (const nb::object& o : items) Py_VISIT(o.ptr());
  }
  Py_VISIT(Py_TYPE(self));
  return 0;
}

int dispatch_clear(PyObject* self) {
  if (!nb::inst_ready(self)) return 0;
  py_dispatch* d = nb::inst_ptr<py_dispatch>(self);
  d->source = nb::object();
  d->weight_fn = nb::object();
  d->key_fn = nb::object();
  d->open.clear();
  d->ready = nb::list();
  d->ready_pos = 0;
  d->inputs.clear();
  d->open_by_key = nb::dict();
  d->errors = nb::list();
  d->failed = nb::list();
  return 0;
}

// tp_iternext straight into C++: a result costs no method lookup, and the
// end costs no StopIteration object.
PyObject* dispatch_iternext(PyObject* self) {
  try {
    return nb::inst_ptr<py_dispatch>(self)->next();
  } catch (nb::python_error& e) {
    e.restore();
  } catch (const nb::builtin_exception& e) {
    PyObject* type = PyExc_RuntimeError;
    switch (e.type()) {
      case nb::exception_type::value_error:
        type = PyExc_ValueError;
        break;
      case nb::exception_type::type_error:
        type = PyExc_TypeError;
        break;
      default:
        break;
    }
    PyErr_SetString(type, e.what());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyType_Slot dispatch_slots[] = {{Py_tp_iternext, reinterpret_cast<void*>(dispatch_iternext)},
                                {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
                                {Py_tp_traverse, reinterpret_cast<void*>(dispatch_traverse)},
                                {Py_tp_clear, reinterpret_cast<void*>(dispatch_clear)},
                                {0, nullptr}};

}  // namespace

void init_dispatch(nb::module_& m) {
  m.def(
      "_set_dispatch_types",
      [](nb::handle failure_info, nb::handle failed, nb::handle halted) {
        types.failure_info = nb::borrow(failure_info).release().ptr();
        types.failed = nb::borrow(failed).release().ptr();
        types.halted = nb::borrow(halted).release().ptr();
      },
      "Sets the classes dispatch reports with (slither.dispatch calls it once).");

  nb::class_<py_dispatch>(m, "Dispatch", nb::type_slots(dispatch_slots),
                          "One dispatch job over a pool's workers, as an iterator of results\n"
                          "(the engine of slither.Dispatch; see Client.dispatch).")
      .def(
          "__init__",
          [](py_dispatch* self, nb::handle where, nb::handle source, std::string function,
             std::size_t batch_size, std::uint32_t max_in_flight, std::string ordering,
             nb::handle on_error, nb::handle timeout, nb::handle session_id, std::string affinity,
             std::string pool, nb::handle weight_fn, nb::handle max_weight, nb::handle key_fn,
             nb::handle stage, nb::handle metadata, double idle_timeout) {
            if (types.failure_info == nullptr) {
              raise_invalid_type("import slither.dispatch first (it registers its types)");
            }
            const client_options where_opts = client_where(where);

            job_options o;
            o.function = std::move(function);
            if (batch_size == 0) raise_invalid_argument("batch_size must be at least 1 (got 0)");
            o.batching = fixed_batch{batch_size};
            o.max_in_flight = max_in_flight;
            if (ordering == "preserve")
              o.ordering = order_mode::preserve;
            else if (ordering == "as_completed")
              o.ordering = order_mode::as_completed;
            else
              raise_invalid_argument(
                  ("ordering must be 'preserve' or 'as_completed' (got '" + ordering + "')")
                      .c_str());
            o.on_error = to_policy(on_error);
            if (!timeout.is_none()) o.timeout = seconds_to_ms(nb::cast<double>(timeout), "timeout");
            if (!session_id.is_none()) o.context.session_id = nb::cast<std::string>(session_id);
            if (!stage.is_none()) o.context.stage = nb::cast<std::string>(stage);
            if (!metadata.is_none()) {
              Value meta = to_value(metadata, "metadata");
              if (!meta.is_map()) raise_invalid_type("metadata must be a dict with str keys");
              o.context.metadata = meta.as<Map>();
            }
            if (affinity == "hint")
              o.affinity = affinity_mode::hint;
            else if (affinity == "strict")
              o.affinity = affinity_mode::strict;
            else
              raise_invalid_argument(
                  ("affinity must be 'hint' or 'strict' (got '" + affinity + "')").c_str());
            o.pool = std::move(pool);
            o.idle_timeout = std::chrono::milliseconds(
                static_cast<std::int64_t>(std::max(0.0, idle_timeout) * 1000.0));

            nb::object iter = nb::steal(PyObject_GetIter(source.ptr()));
            if (!iter.is_valid()) throw nb::python_error();

            std::optional<result<dispatch_job>> opened;
            {
              nb::gil_scoped_release nogil;
              opened.emplace(dispatch_job::open(where_opts, o));
            }
            dispatch_job j = take(std::move(*opened));
            new (self) py_dispatch{};
            self->route = j.route_output();
            self->batch_size = j.batch_size();
            self->job.emplace(std::move(j));
            self->source = std::move(iter);
            if (!key_fn.is_none()) {
              self->batching = batching_kind::keyed;
              self->key_fn = nb::borrow(key_fn);
            } else if (!weight_fn.is_none()) {
              self->batching = batching_kind::weighted;
              self->weight_fn = nb::borrow(weight_fn);
              self->max_weight = max_weight.is_none() ? static_cast<double>(batch_size)
                                                      : nb::cast<double>(max_weight);
            }
          },
          nb::arg("where"), nb::arg("source"), nb::arg("function"), nb::arg("batch_size"),
          nb::arg("max_in_flight"), nb::arg("ordering"), nb::arg("on_error"),
          nb::arg("timeout").none(), nb::arg("session_id").none(), nb::arg("affinity"),
          nb::arg("pool"), nb::arg("weight_fn").none(), nb::arg("max_weight").none(),
          nb::arg("key_fn").none(), nb::arg("stage").none(), nb::arg("metadata").none(),
          nb::arg("idle_timeout"),
          "Opens the job (a connection of its own to the broker `where` describes).")
      .def("close", &py_dispatch::close,
           "Cancels what still runs and closes the job's connection. Safe twice.")
      .def_prop_ro(
          "errors", [](py_dispatch& d) { return d.errors; },
          "(item, FailureInfo) of every item skipped so far (on_error='skip').")
      .def_prop_ro(
          "moves",
          [](py_dispatch& d) {
            nb::list out;
            if (!d.job) return out;
            for (const session_moved& mv : d.job->moves()) {
              nb::dict m;
              m["session"] = mv.session;
              m["from_worker"] = mv.from;
              m["to_worker"] = mv.to;
              out.append(m);
            }
            return out;
          },
          "Session moves so far: dicts with session, from_worker, to_worker.")
      .def_prop_ro(
          "stats",
          [](py_dispatch& d) {
            nb::dict s;
            s["job"] = d.job ? d.job->id() : 0;
            s["window"] = d.job ? d.job->window() : 0;
            s["pulled"] = d.pulled;
            s["batches_submitted"] = d.submitted;
            s["in_flight_items"] = d.job ? d.job->window() - d.job->capacity() : 0;
            s["yielded"] = d.yielded;
            s["skipped"] = d.skipped;
            s["routed"] = d.routed;
            s["failed"] = d.failed_count;
            s["cancelled"] = d.cancelled;
            return s;
          },
          "Counters: job, window, pulled, batches_submitted, in_flight_items, yielded,\n"
          "skipped, routed, failed, cancelled.")
      .def_prop_ro(
          "pulled", [](const py_dispatch& d) { return d.pulled; },
          "Items taken from the input so far.")
      .def_prop_ro(
          "yielded", [](const py_dispatch& d) { return d.yielded; }, "Results handed out so far.")
      .def_prop_ro(
          "ended_count",
          [](const py_dispatch& d) { return d.yielded + d.skipped + d.failed_count + d.cancelled; },
          "Input items that have ended one way or another (for progress).");
}

}  // namespace slither::py
