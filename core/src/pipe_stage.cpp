// The threads of a pipe run's native stages and routers (handlers over
// chunks, error policies applied per item), and the run's queue operations.
#include <typeinfo>

#include "demangled.hpp"
#include "pipe_stage_env.hpp"

namespace slither::detail {
namespace {

// The exception's type as the failure reports it: a binding's own type name
// for a `stage_exception`, the demangled C++ type otherwise.
std::string type_name(const std::exception& e) {
  if (const auto* s = dynamic_cast<const stage_exception*>(&e)) return s->type();
  return demangled(typeid(e));
}

// A batch function's steps over `items`, one each. A function that throws
// (or miscounts) fails every item it was given: an exception becomes a
// `fail` step with code `internal`, "type: what".
std::vector<step> evaluate_batch(const stage_env& env, std::span<Item> items, Context& ctx) {
  std::vector<step> steps;
  auto thrown = [&](const std::string& type, const std::string& message) {
    steps.clear();
    for (std::size_t i = 0; i < items.size(); ++i) {
      steps.emplace_back(error_info{errc::internal, type + ": " + message});
    }
  };
  try {
    steps = env.st.def.batch(items, ctx);
    if (steps.size() != items.size()) {
      thrown("bad_result", "the stage returned " + std::to_string(steps.size()) + " steps for " +
                               std::to_string(items.size()) + " items");
    }
  } catch (const std::exception& e) {
    thrown(type_name(e), e.what());
  } catch (...) {
    thrown("unknown", "a non-std exception");
  }
  return steps;
}

// A per-item handler's step; an exception becomes a `fail` step with code
// `internal`, "type: what".
step evaluate(const stage_env& env, Item& item, Context& ctx) {
  try {
    return env.st.def.item(item, ctx);
  } catch (const std::exception& e) {
    return step(error_info{errc::internal, type_name(e) + ": " + e.what()});
  } catch (...) {
    return step(error_info{errc::internal, "a non-std exception"});
  }
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

// Sends the item to the first route whose predicate holds, or on. Returns
// the error if a predicate threw.
std::optional<dispatch_error> route_item(const stage_env& env, stage_io& io, Item& item,
                                         Context& ctx) {
  const auto& routes = env.st.def.routes;
  std::size_t r = 0;
  try {
    while (r < routes.size() && !routes[r].when(item, ctx)) ++r;
  } catch (const std::exception& e) {
    return make_error(failure_kind::exception, type_name(e), e.what());
  } catch (...) {
    return make_error(failure_kind::exception, "unknown", "a non-std exception");
  }
  if (r == routes.size()) {
    env.go_on(io, std::move(item));
    return std::nullopt;
  }
  const std::uint32_t o = env.st.route_outputs[r];
  item.route = env.s.pipe.outputs[o];
  io.outputs.push_back(out_entry{o, std::move(item)});
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
    switch (env.st.def.kind) {
      case stage_kind::native:
        for (std::size_t k = 0; k < todo.size(); ++k) {
          step st = evaluate(env, todo[k], ctx);
          if (auto e = apply(env, io, todo[k], st)) failed.emplace_back(k, std::move(*e));
        }
        break;
      case stage_kind::router:
        if (!env.st.def.batch) {
          for (std::size_t k = 0; k < todo.size(); ++k) {
            if (auto e = route_item(env, io, todo[k], ctx)) failed.emplace_back(k, std::move(*e));
          }
          break;
        }
        [[fallthrough]];  // router_batch: its function decides a chunk at a time
      default:
        for (std::size_t from = 0; from < todo.size(); from += batch) {
          const std::size_t n = std::min(batch, todo.size() - from);
          std::vector<step> steps =
              evaluate_batch(env, std::span<Item>(todo.data() + from, n), ctx);
          for (std::size_t k = 0; k < n; ++k) {
            if (auto e = apply(env, io, todo[from + k], steps[k])) {
              failed.emplace_back(from + k, std::move(*e));
            }
          }
        }
        break;
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

}  // namespace

stage_chain::stage_chain(pipe_run_state& s, std::size_t first, std::size_t count)
    : s_(s), first_(first) {
  envs_.reserve(count);
  contexts_.reserve(count);
  for (std::size_t i = first; i < first + count; ++i) {
    envs_.emplace_back(s, i);
    contexts_.push_back(envs_.back().ctx);
  }
  ios_.resize(count);
}

bool stage_chain::run(std::vector<Item>&& chunk) {
  bool unfinished_items = false;
  for (std::size_t k = 0; k < ios_.size() && !chunk.empty(); ++k) {
    const bool observed = telemetry::enabled();
    const auto t0 = observed ? stage_clock::now() : stage_clock::time_point{};
    const auto size = static_cast<std::int64_t>(chunk.size());
    if (observed) telemetry::emit("slither.pipe.stage.start", Map{{"size", size}}, envs_[k].meta);
    process(envs_[k], ios_[k], std::move(chunk), contexts_[k]);
    if (observed) {
      telemetry::emit("slither.pipe.stage.stop",
                      Map{{"size", size}, {"duration_us", micros_since(t0)}}, envs_[k].meta);
    }
    unfinished_items = unfinished_items || !ios_[k].unfinished.empty();
    if (k + 1 < ios_.size()) {
      chunk = std::move(ios_[k].forward);
      ios_[k].forward = {};
      ios_[k].forward.reserve(s_.opts.chunk_items);
    }
  }
  return unfinished_items;
}

bool stage_chain::holding(std::size_t at_least) const noexcept {
  if (ios_.empty()) return false;
  if (ios_.back().forward.size() >= at_least) return true;
  for (const stage_io& io : ios_) {
    if (io.outputs.size() >= at_least) return true;
  }
  return false;
}

void stage_chain::flush(std::unique_lock<std::mutex>& lock) {
  for (std::size_t k = 0; k < ios_.size(); ++k) detail::flush(s_, lock, first_ + k, ios_[k]);
}

void pipe_run_state::native_main(std::size_t first, std::size_t last) {
  stage_chain chain(*this, first, last - first + 1);
  chunk_queue& q = queues[first];
  std::unique_lock lock(mu);
  for (;;) {
    if (q.chunks.empty() && chain.holding(1)) {
      chain.flush(lock);  // before waiting: nothing lingers while the input is idle
      continue;
    }
    q.not_empty.wait(lock, [&] { return !q.chunks.empty() || q.producers == 0; });
    if (q.chunks.empty()) break;
    std::vector<Item> chunk = pop(first);
    if (stopping) {
      for (const Item& item : chunk) unfinished.push_back(item.id);
      continue;
    }
    lock.unlock();
    const bool unfinished_items = chain.run(std::move(chunk));
    lock.lock();
    if (unfinished_items || chain.holding(opts.chunk_items)) chain.flush(lock);
  }
  chain.flush(lock);
  thread_done(last);
}

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
  // The consumer refills the first queue: waking it once the queue is half
  // empty lets it refill several chunks per wake-up, not one per chunk taken.
  if (i == 0 && q.items <= opts.queue_items / 2) consumer.notify_one();
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
