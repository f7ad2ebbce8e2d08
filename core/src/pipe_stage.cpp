// The threads of a pipe run: native stages and routers (handlers over chunks,
// error policies applied per item), and python stages (batches through a
// batch_job, results taken back as they come).
#include <cxxabi.h>

#include <cstdlib>
#include <typeinfo>

#include "pipe_run_state.hpp"
#include "slither/core/telemetry.hpp"

namespace slither::detail {
namespace {

using clock = dispatch_clock;

std::string type_name(const std::type_info& t) {
  int status = 0;
  char* name = abi::__cxa_demangle(t.name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name != nullptr ? name : t.name();
  std::free(name);  // NOLINT(cppcoreguidelines-no-malloc): __cxa_demangle allocates with malloc
  return out;
}

// The exception's type as the failure reports it: a binding's own type name
// for a `stage_exception`, the demangled C++ type otherwise.
std::string type_name(const std::exception& e) {
  if (const auto* s = dynamic_cast<const stage_exception*>(&e)) return s->type();
  return type_name(typeid(e));
}

dispatch_error make_error(failure_kind kind, std::string type, std::string message) {
  dispatch_error e;
  e.kind = kind;
  e.type = std::move(type);
  e.message = std::move(message);
  return e;
}

std::int64_t micros_since(clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - t).count();
}

std::string_view kind_name(stage_kind k) {
  switch (k) {
    case stage_kind::python:
      return "python";
    case stage_kind::router:
      return "router";
    default:
      return "native";
  }
}

// What a stage thread carries between chunks: items for the next stage,
// outputs, and its share of the books, merged under the lock when it flushes.
struct stage_io {
  std::vector<Item> forward;
  std::vector<out_entry> outputs;
  std::vector<pipe_failure> failures;
  std::vector<std::uint64_t> skipped;
  std::vector<std::uint64_t> unfinished;
};

// The policy's fallback once retries are spent (or the policy itself).
const error_policy& settle(const error_policy& p, error_policy& storage) {
  if (const auto* r = std::get_if<retry_policy>(&p)) {
    std::visit([&](const auto& f) { storage = f; }, r->then);
    return storage;
  }
  return p;
}

Map error_meta(const std::string& stage, const dispatch_error& e) {
  Map m;
  m.emplace("stage", stage);
  m.emplace("kind", std::string(to_string(e.kind)));
  m.emplace("type", e.type);
  m.emplace("message", e.message);
  return m;
}

// The per-stage constants a thread needs: context, telemetry metadata.
struct stage_env {
  pipe_run_state& s;
  std::size_t index;
  const compiled_stage& st;
  bool last;
  Context ctx;
  Map meta;  // telemetry metadata

  stage_env(pipe_run_state& state, std::size_t i)
      : s(state), index(i), st(state.pipe.stages[i]), last(i + 1 == state.pipe.stages.size()) {
    ctx.pipe = s.pipe.name;
    ctx.stage = st.def.name;
    ctx.session_id = s.opts.session_id;
    ctx.metadata = s.metadata;
    meta.emplace("pipe", s.pipe.name);
    meta.emplace("session", s.opts.session_id);
    meta.emplace("run", static_cast<std::int64_t>(s.id));
    meta.emplace("stage", st.def.name);
    meta.emplace("kind", std::string(kind_name(st.def.kind)));
  }

  void go_on(stage_io& io, Item&& item) const {
    if (last) {
      io.outputs.push_back({0, std::move(item)});
    } else {
      io.forward.push_back(std::move(item));
    }
  }

  void emit_exception(std::uint64_t item, const dispatch_error& e, std::string_view policy,
                      std::uint32_t attempt) const {
    if (!telemetry::enabled()) return;
    Map m = meta;
    m.emplace("item", static_cast<std::int64_t>(item));
    m.emplace("failure", std::string(to_string(e.kind)));
    m.emplace("type", e.type);
    m.emplace("message", e.message);
    m.emplace("policy", std::string(policy));
    telemetry::emit("slither.pipe.stage.exception",
                    Map{{"attempt", static_cast<std::int64_t>(attempt)}}, m);
  }

  // Applies a settled (non-retry) policy to a failed item.
  void failed(stage_io& io, Item&& item, dispatch_error e, const error_policy& policy,
              std::uint32_t attempt) const {
    emit_exception(item.id, e, policy_name(policy), attempt);
    pipe_failure f{st.def.name, item.id, std::move(e)};
    if (std::holds_alternative<route_policy>(policy)) {
      item.meta.insert_or_assign("error", error_meta(f.stage, f.cause));
      item.route = s.pipe.outputs[st.error_output];
      io.outputs.push_back({st.error_output, std::move(item)});
    } else if (std::holds_alternative<skip_policy>(policy)) {
      io.failures.push_back(std::move(f));
    } else {
      std::unique_lock lock(s.mu);
      if (s.stopping) {
        // Another stage halted first: this one ends as unfinished.
        s.unfinished.push_back(f.item);
      } else {
        s.stop(std::move(f));
      }
    }
  }
};

// Runs the handler (or the router's predicates) over `items`: one step each.
// An exception becomes a `fail` step with code `internal`, "type: what".
std::vector<step> evaluate(const stage_env& env, std::span<Item> items, Context& ctx) {
  std::vector<step> steps;
  const stage_def& d = env.st.def;
  // A batch function that throws (or miscounts) fails every item it was given.
  auto thrown = [&](const std::string& type, const std::string& message) {
    steps.clear();
    for (std::size_t i = 0; i < items.size(); ++i) {
      steps.emplace_back(error_info{errc::internal, type + ": " + message});
    }
  };
  auto call_batch = [&] {
    try {
      steps = d.batch(items, ctx);
      if (steps.size() != items.size()) {
        thrown("bad_result", "the stage returned " + std::to_string(steps.size()) + " steps for " +
                                 std::to_string(items.size()) + " items");
      }
    } catch (const std::exception& e) {
      thrown(type_name(e), e.what());
    } catch (...) {
      thrown("unknown", "a non-std exception");
    }
  };
  switch (d.kind) {
    case stage_kind::native:
      steps.reserve(items.size());
      for (Item& item : items) {
        try {
          steps.push_back(d.item(item, ctx));
        } catch (const std::exception& e) {
          steps.push_back(step(error_info{errc::internal, type_name(e) + ": " + e.what()}));
        } catch (...) {
          steps.push_back(step(error_info{errc::internal, "a non-std exception"}));
        }
      }
      break;
    case stage_kind::native_batch:
      call_batch();
      break;
    case stage_kind::router:
      if (d.batch) {  // router_batch
        call_batch();
        break;
      }
      steps.reserve(items.size());
      for (Item& item : items) {
        try {
          std::size_t r = 0;
          while (r < d.routes.size() && !d.routes[r].when(item, ctx)) ++r;
          steps.push_back(r < d.routes.size() ? step::route(d.routes[r].output) : step());
        } catch (const std::exception& e) {
          steps.push_back(step(error_info{errc::internal, type_name(e) + ": " + e.what()}));
        }
      }
      break;
    case stage_kind::python:
      break;
  }
  return steps;
}

dispatch_error step_error(const step& s) {
  // errc::internal marks an exception the handler threw; other codes are its verdict.
  if (s.code() == errc::internal) {
    const auto colon = s.text().find(": ");
    return make_error(failure_kind::exception,
                      colon == std::string::npos ? "exception" : s.text().substr(0, colon),
                      colon == std::string::npos ? s.text() : s.text().substr(colon + 2));
  }
  return make_error(failure_kind::item_error, std::string(to_string(s.code())), s.text());
}

// Applies one step to its item. Returns the error if the item failed.
std::optional<dispatch_error> apply(const stage_env& env, stage_io& io, Item& item, step& s) {
  switch (s.form()) {
    case step::kind::keep:
      env.go_on(io, std::move(item));
      return std::nullopt;
    case step::kind::payload:
      item.payload = std::move(s.payload());
      env.go_on(io, std::move(item));
      return std::nullopt;
    case step::kind::skip:
      io.skipped.push_back(item.id);
      return std::nullopt;
    case step::kind::many: {
      if (s.payloads().empty()) io.skipped.push_back(item.id);
      for (Value& v : s.payloads()) {
        Item child;
        child.id = env.s.next_child.fetch_add(1, std::memory_order_relaxed);
        child.payload = std::move(v);
        child.meta = item.meta;
        child.meta.insert_or_assign("parent", static_cast<std::int64_t>(item.id));
        env.go_on(io, std::move(child));
      }
      return std::nullopt;
    }
    case step::kind::route: {
      const auto o = env.s.pipe.output_index(s.text());
      if (o < 0) {
        return make_error(failure_kind::item_error, "invalid_argument",
                          "routed to undeclared output '" + s.text() + "'");
      }
      item.route = s.text();
      io.outputs.push_back({static_cast<std::uint32_t>(o), std::move(item)});
      return std::nullopt;
    }
    case step::kind::fail:
      return step_error(s);
  }
  return std::nullopt;
}

// One chunk through a native stage or router, retries included.
void process(const stage_env& env, stage_io& io, std::vector<Item>&& chunk, Context& ctx) {
  const auto* retry = std::get_if<retry_policy>(&env.st.policy);
  std::vector<Item> originals;
  if (retry != nullptr) originals = chunk;
  error_policy storage;
  const error_policy& final_policy = settle(env.st.policy, storage);

  std::vector<Item> todo = std::move(chunk);
  std::vector<std::size_t> index;  // todo[k] is originals[index[k]]
  if (retry != nullptr) {
    index.resize(todo.size());
    for (std::size_t k = 0; k < index.size(); ++k) index[k] = k;
  }
  for (std::uint32_t attempt = 1;; ++attempt) {
    const std::size_t batch = env.st.def.kind == stage_kind::native_batch
                                  ? env.st.def.native.batch_size
                                  : std::max<std::size_t>(todo.size(), 1);
    std::vector<std::pair<std::size_t, dispatch_error>> failed;
    for (std::size_t from = 0; from < todo.size(); from += batch) {
      const std::size_t n = std::min(batch, todo.size() - from);
      std::vector<step> steps = evaluate(env, std::span<Item>(todo.data() + from, n), ctx);
      for (std::size_t k = 0; k < n; ++k) {
        if (auto e = apply(env, io, todo[from + k], steps[k])) failed.emplace_back(from + k, *e);
      }
    }
    if (failed.empty()) return;
    const bool again = retry != nullptr && attempt < retry->max_attempts;
    if (!again) {
      for (auto& [k, e] : failed) {
        Item& item = retry != nullptr ? originals[index[k]] : todo[k];
        e.attempt = attempt;
        env.failed(io, std::move(item), std::move(e), final_policy, attempt);
      }
      return;
    }
    std::vector<Item> next;
    std::vector<std::size_t> next_index;
    for (auto& [k, e] : failed) {
      env.emit_exception(originals[index[k]].id, e, "retry", attempt);
      next.push_back(originals[index[k]]);
      next_index.push_back(index[k]);
    }
    {
      std::unique_lock lock(env.s.mu);
      if (env.s.stopping) {
        for (const Item& item : next) io.unfinished.push_back(item.id);
        return;
      }
    }
    std::this_thread::sleep_for(retry->delay.delay(attempt));
    todo = std::move(next);
    index = std::move(next_index);
  }
}

// Hands what a thread holds to the next queue and the sink, and merges its books.
void flush(pipe_run_state& s, std::unique_lock<std::mutex>& lock, std::size_t i, stage_io& io) {
  for (auto& f : io.failures) s.failures.push_back(std::move(f));
  io.failures.clear();
  s.skipped.insert(s.skipped.end(), io.skipped.begin(), io.skipped.end());
  io.skipped.clear();
  s.unfinished.insert(s.unfinished.end(), io.unfinished.begin(), io.unfinished.end());
  io.unfinished.clear();
  if (!io.outputs.empty()) {
    std::vector<out_entry> out;
    out.reserve(s.opts.chunk_items);
    std::swap(out, io.outputs);
    s.push_sink(lock, std::move(out));
  }
  if (!io.forward.empty()) {
    std::vector<Item> fwd;
    fwd.reserve(s.opts.chunk_items);
    std::swap(fwd, io.forward);
    s.push(lock, i + 1, std::move(fwd));
  }
}

}  // namespace

void pipe_run_state::native_main(std::size_t i) {
  stage_env env(*this, i);
  Context ctx = env.ctx;
  stage_io io;
  chunk_queue& q = queues[i];
  std::unique_lock lock(mu);
  for (;;) {
    if (q.chunks.empty() && (!io.forward.empty() || !io.outputs.empty())) {
      flush(*this, lock, i, io);  // before waiting: nothing lingers while the input is idle
      continue;
    }
    q.not_empty.wait(lock, [&] { return !q.chunks.empty() || q.producers == 0; });
    if (q.chunks.empty()) break;
    std::vector<Item> chunk = pop(i);
    if (stopping) {
      for (const Item& item : chunk) unfinished.push_back(item.id);
      continue;
    }
    lock.unlock();
    const bool observed = telemetry::enabled();
    const auto t0 = observed ? clock::now() : clock::time_point{};
    const auto size = static_cast<std::int64_t>(chunk.size());
    if (observed) telemetry::emit("slither.pipe.stage.start", Map{{"size", size}}, env.meta);
    process(env, io, std::move(chunk), ctx);
    if (observed) {
      telemetry::emit("slither.pipe.stage.stop",
                      Map{{"size", size}, {"duration_us", micros_since(t0)}}, env.meta);
    }
    lock.lock();
    if (io.forward.size() >= opts.chunk_items || io.outputs.size() >= opts.chunk_items ||
        !io.unfinished.empty()) {
      flush(*this, lock, i, io);
    }
  }
  flush(*this, lock, i, io);
  thread_done(i);
}

void pipe_run_state::python_main(std::size_t i) {
  stage_env env(*this, i);
  batch_job& job = *jobs[i];
  chunk_queue& q = queues[i];
  const std::size_t size = env.st.def.python.batch_size;
  std::deque<Item> buf;
  stage_io io;
  std::size_t outstanding = 0;
  std::deque<std::pair<std::size_t, clock::time_point>> sent;  // batches out, for telemetry
  bool upstream_done = false;
  bool input_closed = false;
  bool cancelling = false;
  std::uint64_t seq = 0;

  auto submit = [&](std::size_t n) -> result<void> {
    std::vector<Item> batch;
    batch.reserve(n);
    for (std::size_t k = 0; k < n; ++k) {
      batch.push_back(std::move(buf.front()));
      buf.pop_front();
    }
    const bool observed = telemetry::enabled();
    if (observed) {
      Map m = env.meta;
      m.emplace("batch", static_cast<std::int64_t>(seq));
      telemetry::emit("slither.pipe.stage.start", Map{{"size", static_cast<std::int64_t>(n)}}, m);
    }
    std::vector<std::uint64_t> ids;
    ids.reserve(n);
    for (const Item& item : batch) ids.push_back(item.id);
    if (auto r = job.submit(std::move(batch)); !r) {
      io.unfinished.insert(io.unfinished.end(), ids.begin(), ids.end());
      return r;
    }
    sent.emplace_back(n, observed ? clock::now() : clock::time_point{});
    ++seq;
    outstanding += n;
    return {};
  };

  // A job call failed: the stage cannot go on (its broker went away). A
  // submit refused because the job stopped itself (a halt, the circuit) is
  // not that: the job's results will say why, and the refused items are
  // unfinished.
  auto halt_on = [&](const error_info& e, bool unless_job_stopped = false) {
    if (unless_job_stopped && job.error()) return;
    std::unique_lock lock(mu);
    if (!stopping) {
      stop(pipe_failure{
          env.st.def.name, no_item,
          make_error(failure_kind::exception, std::string(to_string(e.code)), e.message)});
    }
  };

  auto take = [&](std::vector<dispatch_result>&& results) {
    outstanding -= std::min(outstanding, results.size());
    if (telemetry::enabled()) {
      std::size_t n = results.size();
      while (n > 0 && !sent.empty()) {
        auto& [count, t] = sent.front();
        const std::size_t used = std::min(count, n);
        count -= used;
        n -= used;
        if (count == 0) {
          telemetry::emit(
              "slither.pipe.stage.stop",
              Map{{"size", static_cast<std::int64_t>(used)}, {"duration_us", micros_since(t)}},
              env.meta);
          sent.pop_front();
        }
      }
    } else {
      sent.clear();
    }
    error_policy storage;
    const error_policy& fallback = settle(env.st.policy, storage);
    for (dispatch_result& r : results) {
      if (cancelling) {
        io.unfinished.push_back(r.item.id);
        continue;
      }
      switch (r.status) {
        case item_status::ok:
          r.item.route.clear();
          env.go_on(io, std::move(r.item));
          break;
        case item_status::skipped:
          env.failed(io, std::move(r.item), r.error ? *r.error : dispatch_error{}, skip_policy{},
                     r.error ? r.error->attempt : 1);
          break;
        case item_status::routed:
          env.failed(io, std::move(r.item), r.error ? *r.error : dispatch_error{},
                     std::holds_alternative<route_policy>(fallback) ? fallback
                                                                    : error_policy(route_policy{}),
                     r.error ? r.error->attempt : 1);
          break;
        case item_status::failed: {
          std::unique_lock lock(mu);
          pipe_failure f{env.st.def.name, r.item.id, r.error ? *r.error : dispatch_error{}};
          if (stopping) {
            // The batch's other items (or a failure after another stage halted).
            failures.push_back(std::move(f));
          } else {
            lock.unlock();
            env.failed(io, std::move(r.item), f.cause, halt_policy{},
                       r.error ? r.error->attempt : 1);
          }
          break;
        }
        case item_status::cancelled:
          io.unfinished.push_back(r.item.id);
          break;
      }
    }
  };

  for (;;) {
    {
      std::unique_lock lock(mu);
      if (stopping && !cancelling) {
        cancelling = true;
        for (const Item& item : buf) unfinished.push_back(item.id);
        buf.clear();
        lock.unlock();
        job.cancel();
        lock.lock();
      }
      while (!cancelling && buf.size() < size && !q.chunks.empty()) {
        for (Item& item : pop(i)) buf.push_back(std::move(item));
      }
      upstream_done = q.chunks.empty() && q.producers == 0;
      if (!cancelling && outstanding == 0 && buf.empty() && !upstream_done) {
        if (!io.forward.empty() || !io.outputs.empty()) {
          flush(*this, lock, i, io);
          continue;
        }
        q.not_empty.wait(lock, [&] { return !q.chunks.empty() || q.producers == 0 || stopping; });
        continue;
      }
    }
    if (cancelling) {
      if (outstanding == 0 || job.finished()) break;
      auto r = job.next(std::chrono::milliseconds(100));
      if (!r) break;
      take(std::move(*r));
      continue;
    }
    bool broken = false;
    while (buf.size() >= size && job.capacity() >= size) {
      if (auto r = submit(size); !r) {
        halt_on(r.error(), true);
        broken = true;
        break;
      }
    }
    if (!broken && !buf.empty() && buf.size() < size && job.capacity() >= buf.size()) {
      bool idle = upstream_done;
      if (!idle && outstanding == 0) {
        std::lock_guard lock(mu);
        idle = q.chunks.empty();  // nothing more now, and no worker busy: send what there is
      }
      if (idle) {
        if (auto r = submit(buf.size()); !r) {
          halt_on(r.error(), true);
          broken = true;
        }
      }
    }
    if (broken) continue;
    if (upstream_done && buf.empty() && !input_closed) {
      if (auto r = job.close_input(); !r && !job.error()) {
        halt_on(r.error());
        continue;
      }
      input_closed = true;
    }
    if (input_closed && outstanding == 0) break;
    if (outstanding == 0) continue;
    std::chrono::milliseconds wait(50);
    if (!upstream_done && buf.size() < size && job.capacity() > buf.size()) {
      // Results or more input may come first: look at both often.
      std::lock_guard lock(mu);
      wait = q.chunks.empty() ? std::chrono::milliseconds(1) : std::chrono::milliseconds(0);
    }
    auto r = job.next(wait);
    if (!r) {
      halt_on(r.error());
      continue;
    }
    if (r->empty()) continue;
    take(std::move(*r));
    std::unique_lock lock(mu);
    flush(*this, lock, i, io);
  }
  std::unique_lock lock(mu);
  for (const Item& item : buf) unfinished.push_back(item.id);
  flush(*this, lock, i, io);
  thread_done(i);
}

// --- the state's queue operations (lock held) ---

void pipe_run_state::stop(std::optional<pipe_failure> why) {
  if (stopping) return;
  stopping = true;
  if (why) {
    error = std::move(why);
  } else {
    cancelled = true;
  }
  for (auto& q : queues) {
    q.not_empty.notify_all();
    q.not_full.notify_all();
  }
  sink_not_full.notify_all();
  consumer.notify_all();
}

void pipe_run_state::push(std::unique_lock<std::mutex>& lock, std::size_t i,
                          std::vector<Item>&& chunk) {
  chunk_queue& q = queues[i];
  q.not_full.wait(lock, [&] { return stopping || q.items < opts.queue_items; });
  if (stopping) {
    for (const Item& item : chunk) unfinished.push_back(item.id);
    return;
  }
  q.items += chunk.size();
  q.chunks.push_back(std::move(chunk));
  q.not_empty.notify_one();
}

void pipe_run_state::push_sink(std::unique_lock<std::mutex>& lock, std::vector<out_entry>&& out) {
  // Items that left the pipe are outputs even if the run stopped meanwhile.
  sink_not_full.wait(lock, [&] { return stopping || sink_items < opts.queue_items; });
  sink_items += out.size();
  items_out += out.size();
  sink.push_back(std::move(out));
  consumer.notify_one();
}

std::vector<Item> pipe_run_state::pop(std::size_t i) {
  chunk_queue& q = queues[i];
  std::vector<Item> chunk = std::move(q.chunks.front());
  q.chunks.pop_front();
  q.items -= chunk.size();
  q.not_full.notify_all();
  if (i == 0) consumer.notify_one();
  return chunk;
}

void pipe_run_state::thread_done(std::size_t i) {
  if (i + 1 < queues.size()) {
    chunk_queue& next = queues[i + 1];
    if (--next.producers == 0) next.not_empty.notify_all();
  }
  --running;
  consumer.notify_all();
}

}  // namespace slither::detail
