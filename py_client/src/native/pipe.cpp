// The Pipe from Python: `_native.Pipe` builds a `slither::Pipe` whose local
// stages and router predicates are Python callables, and `_native.PipeStream`
// runs it on the C++ engine (python stages on a broker's pool), so semantics,
// policies and telemetry are the engine's. `slither.Pipe` (pipe.py) adds the
// Python conveniences.
//
// Threads and the GIL: the engine calls local stages and predicates on its
// stage threads; they take the GIL once per chunk (a local stage is a
// `native_batch` stage calling the function item by item) or once per item (a
// router, whose first predicate evaluates them all for that item). The input
// iterator is called on the thread that iterates the PipeStream, with the GIL
// taken per item. Every call into the engine that may wait (starting a run,
// waiting for output, cancelling, destroying a run) releases the GIL first.
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "options.hpp"
#include "py_ref.hpp"
#include "slither/broker/pipe.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

// The Python classes the pipe works with, set once by slither.pipe: the
// return forms Many(values), Route(output, value) and the Skip singleton (and
// Route's "value unchanged" marker), PipeContext(pipe, stage, session_id,
// metadata), FailureInfo, Failed(value, error, output), and the PipeError
// factory halted(report, outputs). Leaked on purpose: they live as long as
// the interpreter.
struct pipe_types {
  PyObject* many = nullptr;
  PyObject* route = nullptr;
  PyObject* skip = nullptr;
  PyObject* unset = nullptr;
  PyObject* context = nullptr;
  PyObject* failure_info = nullptr;
  PyObject* failed = nullptr;
  PyObject* halted = nullptr;
};
pipe_types types;

// Items a local stage's function sees at once (one GIL hold); the engine's
// chunks are smaller by default, so this only bounds a chunk.
constexpr std::size_t local_chunk = 4096;

std::string type_qualname(nb::handle type) {
  nb::object name = nb::steal(PyType_GetQualName(reinterpret_cast<PyTypeObject*>(type.ptr())));
  if (!name.is_valid()) {
    PyErr_Clear();
    return "Exception";
  }
  return nb::cast<std::string>(name);
}

std::string str_of(nb::handle obj) {
  nb::object s = nb::steal(PyObject_Str(obj.ptr()));
  if (!s.is_valid()) {
    PyErr_Clear();
    return "<unprintable " +
           type_qualname(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr())))) + ">";
  }
  Py_ssize_t n = 0;
  const char* text = PyUnicode_AsUTF8AndSize(s.ptr(), &n);
  if (text == nullptr) {
    PyErr_Clear();
    return "<unprintable>";
  }
  return std::string(text, static_cast<std::size_t>(n));
}

const char* const gone_message = "ShuttingDown: the Python interpreter is shutting down";

// The Python exception `e` as a failed step: the engine reports it as an
// exception with the Python type's name ("ValueError") and message.
step failed_step(const nb::python_error& e) {
  return step(error_info{errc::internal, type_qualname(e.type()) + ": " + str_of(e.value())});
}

step failed_step(const std::exception& e) {
  return step(error_info{errc::internal, std::string("InternalError: ") + e.what()});
}

bool is_instance(PyObject* obj, PyObject* type) {
  return type != nullptr && PyObject_TypeCheck(obj, reinterpret_cast<PyTypeObject*>(type));
}

// What a local stage's function returned, as a step: a value, Many, Route or Skip.
step to_step(Item& item, PyObject* r) {
  if (r == types.skip) return step::skip();
  if (is_instance(r, types.many)) {
    nb::object values = nb::steal(PyObject_GetAttrString(r, "values"));
    if (!values.is_valid()) throw nb::python_error();
    std::vector<Value> payloads;
    payloads.reserve(nb::len(values));
    for (nb::handle v : values) payloads.push_back(to_value(v, "Many item"));
    return step::many(std::move(payloads));
  }
  if (is_instance(r, types.route)) {
    nb::object output = nb::steal(PyObject_GetAttrString(r, "output"));
    nb::object value = nb::steal(PyObject_GetAttrString(r, "value"));
    if (!output.is_valid() || !value.is_valid()) throw nb::python_error();
    if (value.ptr() != types.unset) item.payload = to_value(value, "Route value");
    return step::route(nb::cast<std::string>(output));
  }
  return step(to_value(r, "result"));
}

// A PipeContext for one stage of a run (per chunk).
nb::object make_context(const Context& ctx) {
  nb::object meta = to_python(Value(ctx.metadata));
  nb::object c = nb::steal(PyObject_CallFunctionObjArgs(
      types.context, nb::str(ctx.pipe.c_str(), ctx.pipe.size()).ptr(),
      nb::str(ctx.stage.c_str(), ctx.stage.size()).ptr(),
      nb::str(ctx.session_id.c_str(), ctx.session_id.size()).ptr(), meta.ptr(), nullptr));
  if (!c.is_valid()) throw nb::python_error();
  return c;
}

// Stage functions hold borrowed references: the Python Pipe owns them (in
// py_pipe::refs), and a run owns them too while it lives (py_stream::refs),
// so the cycle collector sees every reference and copies cost nothing.

// fn(value) or fn(value, ctx) per item, with the GIL taken once for the chunk.
batch_fn local_item_fn(PyObject* fn, bool with_context) {
  return [fn, with_context](std::span<Item> items, Context& ctx) {
    if (python_gone())
      return std::vector<step>(items.size(), step(error_info{errc::internal, gone_message}));
    std::vector<step> out;
    out.reserve(items.size());
    nb::gil_scoped_acquire gil;
    nb::object c;
    if (with_context) {
      try {
        c = make_context(ctx);
      } catch (const nb::python_error& e) {
        return std::vector<step>(items.size(), failed_step(e));
      }
    }
    for (Item& item : items) {
      try {
        nb::object arg = to_python(item.payload);
        if (with_context) {
          nb::object id = nb::int_(item.id);
          nb::object meta = to_python(Value(item.meta));
          if (PyObject_SetAttrString(c.ptr(), "item_id", id.ptr()) != 0 ||
              PyObject_SetAttrString(c.ptr(), "meta", meta.ptr()) != 0) {
            throw nb::python_error();
          }
        }
        nb::object r =
            nb::steal(with_context ? PyObject_CallFunctionObjArgs(fn, arg.ptr(), c.ptr(), nullptr)
                                   : PyObject_CallOneArg(fn, arg.ptr()));
        if (!r.is_valid()) throw nb::python_error();
        out.push_back(to_step(item, r.ptr()));
      } catch (const nb::python_error& e) {
        out.push_back(failed_step(e));
      } catch (const std::exception& e) {
        out.push_back(failed_step(e));
      }
    }
    return out;
  };
}

// fn(values) or fn(values, ctx) per chunk: a list of as many return forms.
// An exception fails every item of the chunk, as a C++ batch stage's does.
batch_fn local_batch_fn(PyObject* fn, bool with_context) {
  return [fn, with_context](std::span<Item> items, Context& ctx) {
    if (python_gone())
      return std::vector<step>(items.size(), step(error_info{errc::internal, gone_message}));
    nb::gil_scoped_acquire gil;
    try {
      nb::list values;
      for (Item& item : items) values.append(to_python(item.payload));
      nb::object r;
      if (with_context) {
        nb::object c = make_context(ctx);
        r = nb::steal(PyObject_CallFunctionObjArgs(fn, values.ptr(), c.ptr(), nullptr));
      } else {
        r = nb::steal(PyObject_CallOneArg(fn, values.ptr()));
      }
      if (!r.is_valid()) throw nb::python_error();
      if (!PyList_Check(r.ptr())) {
        throw stage_exception("TypeError",
                              "a batch stage must return a list, not " + type_qualname(r.type()));
      }
      // A list of another length: the engine fails the chunk ("returned N steps").
      std::vector<step> out;
      const auto n = static_cast<std::size_t>(PyList_GET_SIZE(r.ptr()));
      out.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        Item scratch;
        Item& item = i < items.size() ? items[i] : scratch;
        try {
          out.push_back(to_step(item, PyList_GET_ITEM(r.ptr(), static_cast<Py_ssize_t>(i))));
        } catch (const nb::python_error& e) {
          out.push_back(failed_step(e));
        }
      }
      return out;
    } catch (const nb::python_error& e) {
      return std::vector<step>(items.size(), failed_step(e));
    }
  };
}

struct py_pipe {
  Pipe pipe;
  nb::list refs;  // the callables the pipe's stages use
  explicit py_pipe(std::string name) : pipe(std::move(name)) {}
};

// A Python router decides a chunk at a time (the engine's router_batch): one
// GIL hold and one conversion per item for all its predicates, in order, the
// first that holds winning. A predicate that raises fails its item.
batch_fn router_fn(std::vector<PyObject*> preds, std::vector<std::string> outputs) {
  return [preds = std::move(preds), outputs = std::move(outputs)](std::span<Item> items, Context&) {
    if (python_gone())
      return std::vector<step>(items.size(), step(error_info{errc::internal, gone_message}));
    std::vector<step> out;
    out.reserve(items.size());
    nb::gil_scoped_acquire gil;
    for (Item& item : items) {
      try {
        nb::object arg = to_python(item.payload);
        std::size_t k = 0;
        for (; k < preds.size(); ++k) {
          nb::object got = nb::steal(PyObject_CallOneArg(preds[k], arg.ptr()));
          if (!got.is_valid()) throw nb::python_error();
          const int truth = PyObject_IsTrue(got.ptr());
          if (truth < 0) throw nb::python_error();
          if (truth == 1) break;
        }
        out.push_back(k < preds.size() ? step::route(outputs[k]) : step());
      } catch (const nb::python_error& e) {
        out.push_back(failed_step(e));
      } catch (const std::exception& e) {
        out.push_back(failed_step(e));
      }
    }
    return out;
  };
}

void add_router(py_pipe& p, std::string name, nb::handle routes) {
  std::vector<PyObject*> preds;
  std::vector<std::string> outputs;
  nb::list held;
  for (nb::handle r : routes) {
    if (!PyTuple_Check(r.ptr()) || PyTuple_GET_SIZE(r.ptr()) != 2) {
      raise_invalid_type("router: each route is a (predicate, output) tuple");
    }
    nb::handle pred = PyTuple_GET_ITEM(r.ptr(), 0);
    if (!PyCallable_Check(pred.ptr())) raise_invalid_type("router: a predicate must be callable");
    outputs.push_back(nb::cast<std::string>(nb::handle(PyTuple_GET_ITEM(r.ptr(), 1))));
    preds.push_back(pred.ptr());
    held.append(pred);
  }
  for (nb::handle h : held) p.refs.append(h);
  std::vector<std::string> names = outputs;
  p.pipe.router_batch(std::move(name), std::move(names),
                      router_fn(std::move(preds), std::move(outputs)));
}

order_mode to_ordering(const std::string& s) {
  if (s == "preserve") return order_mode::preserve;
  if (s == "as_completed") return order_mode::as_completed;
  raise_invalid_argument(
      ("ordering must be 'preserve' or 'as_completed' (got '" + s + "')").c_str());
}

affinity_mode to_affinity(const std::string& s) {
  if (s == "hint") return affinity_mode::hint;
  if (s == "strict") return affinity_mode::strict;
  raise_invalid_argument(("affinity must be 'hint' or 'strict' (got '" + s + "')").c_str());
}

// --- reports -----------------------------------------------------------------

nb::object failure_info(const std::string& stage, const dispatch_error& e) {
  const std::string_view kind = to_string(e.kind);
  nb::object kwargs = nb::dict();
  kwargs["stage"] = nb::str(stage.c_str(), stage.size());
  nb::object args = nb::make_tuple(
      nb::str(kind.data(), kind.size()), nb::str(e.type.c_str(), e.type.size()),
      nb::str(e.message.c_str(), e.message.size()),
      nb::str(e.traceback.c_str(), e.traceback.size()), e.batch, e.attempt, e.worker);
  nb::object info = nb::steal(PyObject_Call(types.failure_info, args.ptr(), kwargs.ptr()));
  if (!info.is_valid()) throw nb::python_error();
  return info;
}

nb::object item_id(std::uint64_t id) {
  return id == no_item ? nb::none() : nb::object(nb::int_(id));
}

nb::list ids(const std::vector<std::uint64_t>& v) {
  nb::list out;
  for (std::uint64_t id : v) out.append(nb::int_(id));
  return out;
}

// A run's report as a dict: error ((item id or None, FailureInfo) or None),
// failures [(item id, FailureInfo)], skipped, unfinished, pulled.
nb::dict report_dict(const pipe_run& r, std::uint64_t pulled) {
  nb::dict d;
  d["error"] = r.error ? nb::object(nb::make_tuple(item_id(r.error->item),
                                                   failure_info(r.error->stage, r.error->cause)))
                       : nb::none();
  nb::list failures;
  for (const pipe_failure& f : r.failures) {
    failures.append(nb::make_tuple(item_id(f.item), failure_info(f.stage, f.cause)));
  }
  d["failures"] = failures;
  d["skipped"] = ids(r.skipped);
  d["unfinished"] = ids(r.unfinished);
  d["pulled"] = pulled;
  return d;
}

// An item leaving the pipe, for Python: its value, or Failed(value,
// FailureInfo, output) for an item a `route` policy sent there.
nb::object output_value(const Item& item, nb::handle output) {
  nb::object value = to_python(item.payload);
  const auto e = item.meta.find("error");
  if (e == item.meta.end() || !e->second.is_map()) return value;
  const Map& m = e->second.as<Map>();
  auto text = [&](const char* key) {
    const auto it = m.find(key);
    return it != m.end() && it->second.is_string() ? it->second.as<std::string>() : std::string();
  };
  dispatch_error err;
  err.kind = failure_kind::exception;
  const std::string kind = text("kind");
  for (auto k : {failure_kind::item_error, failure_kind::exception, failure_kind::bad_result,
                 failure_kind::worker_died, failure_kind::timeout, failure_kind::quarantined,
                 failure_kind::circuit_open, failure_kind::cancelled}) {
    if (to_string(k) == kind) err.kind = k;
  }
  err.type = text("type");
  err.message = text("message");
  nb::object info = failure_info(text("stage"), err);
  nb::object f = nb::steal(
      PyObject_CallFunctionObjArgs(types.failed, value.ptr(), info.ptr(), output.ptr(), nullptr));
  if (!f.is_valid()) throw nb::python_error();
  return f;
}

// --- the builder ---------------------------------------------------------------

int pipe_traverse(PyObject* self, visitproc visit, void* arg) {
  if (!nb::inst_ready(self)) return 0;
  Py_VISIT(nb::inst_ptr<py_pipe>(self)->refs.ptr());
  Py_VISIT(Py_TYPE(self));
  return 0;
}

int pipe_clear(PyObject* self) {
  if (!nb::inst_ready(self)) return 0;
  py_pipe* p = nb::inst_ptr<py_pipe>(self);
  p->pipe = Pipe(p->pipe.name());  // first: its stages borrow from refs
  p->refs = nb::list();
  return 0;
}

PyType_Slot pipe_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(pipe_traverse)},
                            {Py_tp_clear, reinterpret_cast<void*>(pipe_clear)},
                            {0, nullptr}};

// --- a run ---------------------------------------------------------------------

// The input iterator, called by the engine on the thread that iterates the
// stream. What it raises (or an input that has no Value form) is kept here and
// raised again from the stream, after the run is cancelled.
struct source_state {
  nb::object iter;
  std::optional<nb::python_error> error;
  std::uint64_t next_id = 0;
  // Items read ahead: one GIL hold reads up to `chunk` items, which the engine
  // then takes one by one without it. Guarded by `mu` (the report reads it).
  std::size_t chunk = 1;
  mutable std::mutex mu;
  std::deque<Item> ahead;
  bool failed = false;  // `error` is raised once `ahead` is drained

  ~source_state() {
    if (python_gone()) {
      (void)iter.release();  // leaked: too late to take the GIL
      return;
    }
    nb::gil_scoped_acquire gil;
    iter.reset();
    error.reset();
  }

  std::size_t read_ahead() const {
    std::lock_guard lock(mu);
    return ahead.size();
  }

  std::vector<std::uint64_t> ahead_ids() const {
    std::lock_guard lock(mu);
    std::vector<std::uint64_t> out;
    for (const Item& item : ahead) out.push_back(item.id);
    return out;
  }

  // Reads up to `chunk` items (GIL held); an error is kept for later.
  void fill() {
    nb::object it = iter;  // a strong reference: the collector may clear `iter`
    if (!it.is_valid()) return;
    std::deque<Item> got;
    try {
      while (got.size() < chunk) {
        nb::object obj = nb::steal(PyIter_Next(it.ptr()));
        if (!obj.is_valid()) {
          if (PyErr_Occurred()) throw nb::python_error();
          iter = nb::object();  // ended
          break;
        }
        Item item;
        item.id = next_id++;
        item.payload = to_value(obj, "input item");
        got.push_back(std::move(item));
      }
    } catch (nb::python_error& e) {
      error.emplace(std::move(e));
      failed = true;
      iter = nb::object();
    }
    std::lock_guard lock(mu);
    for (Item& item : got) ahead.push_back(std::move(item));
  }
};

std::function<std::optional<Item>()> python_source(std::shared_ptr<source_state> src) {
  return [src = std::move(src)]() -> std::optional<Item> {
    {
      std::lock_guard lock(src->mu);
      if (!src->ahead.empty()) {
        Item item = std::move(src->ahead.front());
        src->ahead.pop_front();
        return item;
      }
      if (src->failed) throw std::runtime_error("the input raised a Python exception");
    }
    if (python_gone()) return std::nullopt;
    {
      nb::gil_scoped_acquire gil;
      src->fill();
    }
    std::lock_guard lock(src->mu);
    if (!src->ahead.empty()) {
      Item item = std::move(src->ahead.front());
      src->ahead.pop_front();
      return item;
    }
    if (src->failed) throw std::runtime_error("the input raised a Python exception");
    return std::nullopt;
  };
}

struct py_stream {
  nb::list refs;  // the pipe's callables, owned for as long as the run lives
  std::optional<pipe_stream> s;
  std::shared_ptr<source_state> src;
  // Output names as Python strings, "default" first, then the declared ones.
  std::vector<std::pair<std::string, nb::object>> names;
  bool ended = false;
  pipe_run last_report;  // kept when the stream is closed
  std::uint64_t last_pulled = 0;

  py_stream() = default;
  py_stream(const py_stream&) = delete;
  py_stream& operator=(const py_stream&) = delete;
  ~py_stream() { drop(); }

  // Destroys the run without the GIL: it joins the stage threads, which may
  // be waiting for the GIL.
  void drop() {
    if (!s) return;
    last_report = s->report();
    last_pulled = s->pulled();
    nb::gil_scoped_release nogil;
    s.reset();
  }

  std::size_t index_of(const std::string& output) {
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (names[i].first == output) return i;
    }
    names.emplace_back(output, nb::str(output.c_str(), output.size()));
    return names.size() - 1;
  }

  const pipe_run& report() const { return s ? s->report() : last_report; }
  // Items read from the input: taken by the run, or read ahead for it.
  std::uint64_t pulled() const {
    return (s ? s->pulled() : last_pulled) + (src ? src->read_ahead() : 0);
  }
  // The run's report, items read ahead and never taken counted unfinished.
  nb::dict report_now() const {
    pipe_run r = report();
    if (src) {
      for (std::uint64_t id : src->ahead_ids()) r.unfinished.push_back(id);
    }
    return report_dict(r, pulled());
  }

  // The next output, or nullopt at the end; raises the input's exception, a
  // broker's error, or (at the end of a halted run) PipeError with `outputs`.
  std::optional<pipe_output> next_output(nb::handle outputs) {
    if (ended || !s) return std::nullopt;
    std::optional<result<std::optional<pipe_output>>> r;
    if (s->buffered() > 0) {
      r.emplace(s->try_next());  // at hand: no wait, so the GIL stays
    } else {
      nb::gil_scoped_release nogil;
      r.emplace(s->try_next());
    }
    if (!*r) {
      ended = true;
      if (src->error) {
        nb::python_error e = std::move(*src->error);
        src->error.reset();
        e.restore();
        throw nb::python_error();
      }
      raise(r->error());
    }
    if (**r) return std::move(**r);
    ended = true;
    if (s->report().error) {
      nb::object report = report_now();
      nb::object exc = nb::steal(PyObject_CallFunctionObjArgs(
          types.halted, report.ptr(), outputs.is_valid() ? outputs.ptr() : Py_None, nullptr));
      if (!exc.is_valid()) throw nb::python_error();
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
      throw nb::python_error();
    }
    return std::nullopt;
  }

  // The next (output, value) pair, or nullptr at the end (a new reference).
  PyObject* next() {
    auto o = next_output(nb::handle());
    if (!o) return nullptr;
    const std::size_t i = index_of(o->output);
    nb::object value = output_value(o->item, names[i].second);
    return PyTuple_Pack(2, names[i].second.ptr(), value.ptr());
  }

  // Every output into `buckets` (output name -> list; created for new names).
  void collect(nb::dict buckets) {
    std::vector<PyObject*> lists;
    for (;;) {
      auto o = next_output(buckets);
      if (!o) return;
      const std::size_t i = index_of(o->output);
      if (lists.size() <= i) lists.resize(names.size(), nullptr);
      if (lists[i] == nullptr) {
        PyObject* l = PyDict_GetItemWithError(buckets.ptr(), names[i].second.ptr());
        if (l == nullptr) {
          if (PyErr_Occurred()) throw nb::python_error();
          nb::list fresh;
          buckets[names[i].second] = fresh;
          l = fresh.ptr();
        }
        lists[i] = l;  // borrowed: the dict keeps it
      }
      nb::object value = output_value(o->item, names[i].second);
      if (PyList_Append(lists[i], value.ptr()) != 0) throw nb::python_error();
    }
  }

  void cancel() {
    if (!s) return;
    nb::gil_scoped_release nogil;
    s->cancel();
  }

  void close() {
    ended = true;
    drop();
  }
};

PyObject* stream_iternext(PyObject* self) {
  try {
    return nb::inst_ptr<py_stream>(self)->next();
  } catch (nb::python_error& e) {
    e.restore();
  } catch (const nb::builtin_exception& e) {
    PyErr_SetString(
        e.type() == nb::exception_type::type_error ? PyExc_TypeError : PyExc_RuntimeError,
        e.what());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// The input iterator (a generator may refer back to the stream) and the
// callables (whose globals may hold the stream). The collector runs every
// finalizer before it clears anything, so the finalizer ends the run: no
// stage thread calls a callable that is being cleared.
int stream_traverse(PyObject* self, visitproc visit, void* arg) {
  if (!nb::inst_ready(self)) return 0;
  py_stream* s = nb::inst_ptr<py_stream>(self);
  Py_VISIT(s->refs.ptr());
  if (s->src) Py_VISIT(s->src->iter.ptr());
  Py_VISIT(Py_TYPE(self));
  return 0;
}

void stream_finalize(PyObject* self) {
  if (!nb::inst_ready(self)) return;
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  nb::inst_ptr<py_stream>(self)->close();
  PyErr_Restore(type, value, tb);
}

int stream_clear(PyObject* self) {
  if (!nb::inst_ready(self)) return 0;
  py_stream* s = nb::inst_ptr<py_stream>(self);
  s->close();
  if (s->src) s->src->iter = nb::object();
  s->refs = nb::list();
  return 0;
}

PyType_Slot stream_slots[] = {{Py_tp_iternext, reinterpret_cast<void*>(stream_iternext)},
                              {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
                              {Py_tp_traverse, reinterpret_cast<void*>(stream_traverse)},
                              {Py_tp_clear, reinterpret_cast<void*>(stream_clear)},
                              {Py_tp_finalize, reinterpret_cast<void*>(stream_finalize)},
                              {0, nullptr}};

}  // namespace

void init_pipe(nb::module_& m) {
  m.def(
      "_set_pipe_types",
      [](nb::handle many, nb::handle route, nb::handle skip, nb::handle unset, nb::handle context,
         nb::handle failure_info, nb::handle failed, nb::handle halted) {
        for (auto [slot, obj] : {std::pair{&types.many, many},
                                 {&types.route, route},
                                 {&types.skip, skip},
                                 {&types.unset, unset},
                                 {&types.context, context},
                                 {&types.failure_info, failure_info},
                                 {&types.failed, failed},
                                 {&types.halted, halted}}) {
          *slot = nb::borrow(obj).release().ptr();
        }
      },
      "Sets the classes a pipe works with (slither.pipe calls it once).");

  nb::class_<py_pipe>(m, "Pipe", nb::type_slots(pipe_slots),
                      "A pipe's definition (the engine of slither.Pipe): local stages and\n"
                      "router predicates are Python callables, python stages run on a pool.")
      .def(nb::init<std::string>(), nb::arg("name"))
      .def_prop_ro(
          "name", [](const py_pipe& p) { return p.pipe.name(); }, "The pipe's name.")
      .def_prop_ro(
          "stages", [](const py_pipe& p) { return nb::cast(p.pipe.stages()); },
          "Stage names, in order.")
      .def_prop_ro(
          "outputs", [](const py_pipe& p) { return nb::cast(p.pipe.outputs()); },
          "'default' and the declared outputs.")
      .def(
          "local",
          [](py_pipe& p, std::string name, nb::handle fn, bool context, bool batch,
             std::size_t concurrency, std::size_t batch_size) {
            if (!PyCallable_Check(fn.ptr())) {
              raise_invalid_type(("local stage '" + name + "': fn must be callable").c_str());
            }
            native_options o;
            o.concurrency = concurrency;
            o.batch_size = batch ? batch_size : local_chunk;
            p.refs.append(fn);
            p.pipe.native_batch(
                std::move(name),
                batch ? local_batch_fn(fn.ptr(), context) : local_item_fn(fn.ptr(), context), o);
          },
          nb::arg("name"), nb::arg("fn"), nb::arg("context"), nb::arg("batch"),
          nb::arg("concurrency"), nb::arg("batch_size"), "Adds a local stage.")
      .def(
          "python",
          [](py_pipe& p, std::string name, std::string module, std::string function,
             std::size_t batch_size, std::uint32_t max_in_flight, const std::string& ordering,
             nb::handle timeout, const std::string& affinity, std::string pool) {
            python_options o;
            o.module = std::move(module);
            o.function = std::move(function);
            o.batch_size = batch_size;
            o.max_in_flight = max_in_flight;
            o.ordering = to_ordering(ordering);
            if (!timeout.is_none()) o.timeout = seconds_to_ms(nb::cast<double>(timeout), "timeout");
            o.affinity = to_affinity(affinity);
            o.pool = std::move(pool);
            p.pipe.python(std::move(name), std::move(o));
          },
          nb::arg("name"), nb::arg("module"), nb::arg("function"), nb::arg("batch_size"),
          nb::arg("max_in_flight"), nb::arg("ordering"), nb::arg("timeout").none(),
          nb::arg("affinity"), nb::arg("pool"), "Adds a python stage.")
      .def(
          "router",
          [](py_pipe& p, std::string name, nb::handle routes) {
            add_router(p, std::move(name), routes);
          },
          nb::arg("name"), nb::arg("routes"), "Adds a router of (predicate, output) routes.")
      .def(
          "output", [](py_pipe& p, std::string name) { p.pipe.output(std::move(name)); },
          nb::arg("name"), "Declares an output.")
      .def(
          "on_error",
          [](py_pipe& p, std::string stage, nb::handle spec) {
            p.pipe.on_error(std::move(stage), to_policy(spec));
          },
          nb::arg("stage"), nb::arg("policy"), "Sets a stage's (or '*') error policy.")
      .def(
          "store", [](py_pipe& p, std::string name) { p.pipe.store(std::move(name)); },
          nb::arg("name"), "Attaches a store by name.")
      .def(
          "validate", [](const py_pipe& p) { take(p.pipe.validate()); },
          "Checks the definition; raises InvalidArgument naming the bad part.")
      .def(
          "stream",
          [](const py_pipe& p, nb::handle where, nb::handle source, std::string session_id,
             nb::handle metadata, std::size_t queue_items, std::size_t chunk_items) {
            run_options o;
            o.session_id = std::move(session_id);
            if (!metadata.is_none()) {
              Value meta = to_value(metadata, "metadata");
              if (!meta.is_map()) raise_invalid_type("metadata must be a dict with str keys");
              o.metadata = meta.as<Map>();
            }
            o.queue_items = queue_items;
            o.chunk_items = chunk_items;
            // Local stages and predicates take the interpreter lock: fused
            // onto a python stage's thread, waiting for it would stall that
            // stage's batches. Each keeps a thread of its own.
            o.fuse_stages = false;
            std::optional<client_options> broker;
            if (!where.is_none()) broker = client_where(where);
            // The run owns the callables too (copied before it starts), and the
            // pipe is copied: Python threads may change `p` while it starts.
            auto out = std::make_unique<py_stream>();
            out->refs = nb::steal<nb::list>(PySequence_List(p.refs.ptr()));
            if (!out->refs.is_valid()) throw nb::python_error();
            out->src = std::make_shared<source_state>();
            out->src->iter = nb::steal(PyObject_GetIter(source.ptr()));
            out->src->chunk = chunk_items;
            if (!out->src->iter.is_valid()) throw nb::python_error();
            Pipe snapshot = p.pipe;
            for (const auto& name : snapshot.outputs()) out->index_of(name);
            std::optional<result<pipe_stream>> started;
            {
              nb::gil_scoped_release nogil;
              started.emplace(broker ? stream(*broker, snapshot, python_source(out->src), o)
                                     : stream(snapshot, python_source(out->src), o));
            }
            if (!*started && out->src->error) {
              nb::python_error e = std::move(*out->src->error);
              out->src->error.reset();
              e.restore();
              throw nb::python_error();
            }
            out->s.emplace(take(std::move(*started)));
            return out.release();
          },
          nb::arg("where").none(), nb::arg("source"), nb::arg("session_id"),
          nb::arg("metadata").none(), nb::arg("queue_items"), nb::arg("chunk_items"),
          nb::rv_policy::take_ownership,
          "Starts a run over `source` (python stages on the broker `where` describes).");

  nb::class_<py_stream>(m, "PipeStream", nb::type_slots(stream_slots),
                        "A running pipe, as an iterator of (output, value) pairs.")
      .def(
          "collect", [](py_stream& s, nb::dict buckets) { s.collect(std::move(buckets)); },
          nb::arg("buckets"),
          "Appends every remaining output to buckets[output]; raises PipeError (with\n"
          "the buckets as its outputs) if the run halted.")
      .def("cancel", &py_stream::cancel,
           "Stops the run: what is inside ends unfinished; outputs made still come out.")
      .def("close", &py_stream::close,
           "Cancels what still runs and waits for the stage threads. Safe twice.")
      .def_prop_ro(
          "pulled", [](const py_stream& s) { return s.pulled(); },
          "Items taken from the input so far.")
      .def_prop_ro(
          "report", [](const py_stream& s) { return s.report_now(); },
          "dict: error, failures, skipped, unfinished, pulled (complete at the end).");
}

}  // namespace slither::py
