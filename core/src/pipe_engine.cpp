// Starting a pipe run, the consumer's side (pulling input, draining outputs),
// and its end (joining the stages, the books, telemetry).
#include <atomic>

#include "pipe_run_state.hpp"
#include "slither/core/telemetry.hpp"

namespace slither {

namespace {

using detail::out_entry;
using detail::pipe_run_state;

std::atomic<std::uint64_t> next_run_id{1};

Map run_meta(const pipe_run_state& s, std::string_view status) {
  Map m;
  m.emplace("pipe", s.pipe.name);
  m.emplace("session", s.opts.session_id);
  m.emplace("run", static_cast<std::int64_t>(s.id));
  if (!status.empty()) m.emplace("status", std::string(status));
  return m;
}

dispatch_options python_dispatch(const detail::compiled_pipe& pipe, std::size_t i,
                                 const pipe_run_state& s) {
  const auto& st = pipe.stages[i];
  const python_options& p = st.def.python;
  dispatch_options o;
  o.function = p.module + ":" + p.function;
  o.batching = detail::python_batching(p);
  o.max_in_flight = p.max_in_flight;
  o.ordering = p.ordering;
  o.on_error = st.policy;
  o.timeout = p.timeout;
  o.affinity = p.affinity;
  o.context.pipe = pipe.name;
  o.context.stage = st.def.name;
  o.context.session_id = s.opts.session_id;
  o.context.metadata = s.metadata;
  return o;
}

}  // namespace

// Reads up to `room` items into `chunk` (which it may find partly filled);
// true once the input has ended.
using chunk_source = std::function<bool(std::vector<Item>& chunk, std::size_t room)>;

struct SLITHER_CORE_NO_EXPORT pipe_stream::impl {
  std::shared_ptr<pipe_run_state> s;
  chunk_source source;
  bool source_done = false;
  std::vector<out_entry> buffer;  // the outputs being handed out, from buffer_at on
  std::size_t buffer_at = 0;
  bool ended = false;
  pipe_run report;

  ~impl() {
    if (!s) return;
    {
      std::unique_lock lock(s->mu);
      s->stop(std::nullopt);
      close_input(lock);
    }
    finish();
  }

  // Takes the input's end (or a stop) as the end of queue 0.
  void close_input(std::unique_lock<std::mutex>&) {
    if (source_done) return;
    source_done = true;
    auto& q = s->queues[0];
    if (--q.producers == 0) q.not_empty.notify_all();
  }

  // The next output, with its output's index; nullopt at the end.
  result<std::optional<out_entry>> next_entry() {
    while (buffer_at == buffer.size()) {
      buffer.clear();
      buffer_at = 0;
      auto more = next_outputs(buffer);
      if (!more) return std::move(more).error();
      if (!*more) return std::optional<out_entry>();
    }
    return std::optional<out_entry>(std::move(buffer[buffer_at++]));
  }

  // The next chunk of outputs, swapped into `out` (empty); false at the end.
  // Meanwhile feeds the input as the first queue has room.
  result<bool> next_outputs(std::vector<out_entry>& out) {
    for (;;) {
      std::unique_lock lock(s->mu);
      if (!s->sink.empty()) {
        std::swap(out, s->sink.front());
        s->sink.pop_front();
        s->sink_items -= out.size();
        s->sink_not_full.notify_all();
        return true;
      }
      if (ended) return false;
      if (s->running == 0) {
        lock.unlock();
        finish();
        continue;
      }
      if (!source_done && s->stopping) {
        close_input(lock);
        continue;
      }
      auto& q = s->queues[0];
      if (!source_done && q.items < s->opts.queue_items) {
        const std::size_t room = std::min(s->opts.queue_items - q.items, s->opts.chunk_items);
        lock.unlock();
        std::vector<Item> chunk;
        chunk.reserve(room);
        bool done = false;
        std::optional<error_info> bad;
        try {
          done = source(chunk, room);
        } catch (const std::exception& e) {
          bad = fail(errc::invalid_argument,
                     std::string("the pipe's input source threw: ") + e.what());
        } catch (...) {
          bad = fail(errc::invalid_argument, "the pipe's input source threw a non-std exception");
        }
        lock.lock();
        report.items_in += chunk.size();
        if (!chunk.empty()) s->push(lock, 0, std::move(chunk));
        if (bad) {
          s->stop(std::nullopt);
          close_input(lock);
          return *bad;
        }
        if (done) close_input(lock);
        continue;
      }
      s->consumer.wait(lock);
    }
  }

  // Joins the stages and closes the books (once).
  void finish() {
    if (ended) return;
    ended = true;
    for (auto& t : s->threads) {
      if (t.joinable()) t.join();
    }
    s->jobs.clear();
    std::lock_guard lock(s->mu);
    for (auto& q : s->queues) {
      for (auto& chunk : q.chunks) {
        for (const Item& item : chunk) s->unfinished.push_back(item.id);
      }
      q.chunks.clear();
    }
    report.error = s->error;
    report.failures = std::move(s->failures);
    report.skipped = std::move(s->skipped);
    report.unfinished = std::move(s->unfinished);
    if (!telemetry::enabled()) return;
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(dispatch_clock::now() - s->started)
            .count();
    if (s->error) {
      Map m = run_meta(*s, "halted");
      m.emplace("stage", s->error->stage);
      m.emplace("item", static_cast<std::int64_t>(s->error->item));
      m.emplace("kind", std::string(to_string(s->error->cause.kind)));
      m.emplace("type", s->error->cause.type);
      m.emplace("message", s->error->cause.message);
      telemetry::emit("slither.pipe.run.exception", Map{{"duration_us", us}}, m);
    } else {
      Map measurements{{"duration_us", us},
                       {"items_in", static_cast<std::int64_t>(report.items_in)},
                       {"items_out", static_cast<std::int64_t>(s->items_out)},
                       {"skipped", static_cast<std::int64_t>(report.skipped.size())},
                       {"failures", static_cast<std::int64_t>(report.failures.size())},
                       {"unfinished", static_cast<std::int64_t>(report.unfinished.size())}};
      telemetry::emit("slither.pipe.run.stop", measurements,
                      run_meta(*s, s->cancelled ? "cancelled" : "ok"));
    }
  }
};

namespace {

result<std::unique_ptr<pipe_stream::impl>> start(const Pipe& pipe, chunk_source source,
                                                 const run_options& options) {
  auto compiled = detail::compile(*pipe.definition());
  if (!compiled) return std::move(compiled).error();
  if (options.queue_items == 0 || options.chunk_items == 0) {
    return fail(errc::invalid_argument, "pipe '" + pipe.name() +
                                            "': run options 'queue_items' and 'chunk_items' "
                                            "must be at least 1");
  }
  for (const auto& st : compiled->stages) {
    if (st.def.kind == detail::stage_kind::python && options.runner == nullptr) {
      return fail(
          errc::invalid_argument,
          "pipe '" + pipe.name() + "': python stage '" + st.def.name +
              "' needs a batch runner (run the pipe on a broker, or set run_options::runner)");
    }
  }
  auto s = std::make_shared<pipe_run_state>(std::move(*compiled), options);
  s->id = next_run_id.fetch_add(1, std::memory_order_relaxed);
  s->metadata = options.metadata;
  if (!s->pipe.stores.empty()) {
    List stores;
    for (const auto& name : s->pipe.stores) stores.emplace_back(name);
    s->metadata.insert_or_assign("stores", Value(std::move(stores)));
  }
  const std::size_t n = s->pipe.stages.size();
  s->jobs.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& st = s->pipe.stages[i];
    if (st.def.kind != detail::stage_kind::python) continue;
    auto job = options.runner->open(python_dispatch(s->pipe, i, *s), st.def.python.pool);
    if (!job) {
      auto e = std::move(job).error();
      e.message = "pipe '" + s->pipe.name + "', python stage '" + st.def.name + "': " + e.message;
      return e;
    }
    s->jobs[i] = std::move(*job);
  }

  // The threads: a python stage has one; a native stage or router has
  // `concurrency`, except that adjacent ones with one thread each (and no
  // retry backoff to sleep) share one, and share a python stage's next to them.
  struct segment {
    std::size_t first = 0;
    std::size_t last = 0;
    std::size_t threads = 1;
    std::optional<std::size_t> python;  // the python stage among them
    bool fusable = false;               // natives and routers may join it
  };
  std::vector<segment> segments;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& st = s->pipe.stages[i];
    const bool python = st.def.kind == detail::stage_kind::python;
    const std::size_t threads = python ? 1 : st.def.native.concurrency;
    const bool single = threads == 1 && !std::holds_alternative<retry_policy>(st.policy);
    segment* last = segments.empty() ? nullptr : &segments.back();
    if (options.fuse_stages && last != nullptr && last->fusable &&
        (python ? !last->python.has_value() : single)) {
      last->last = i;
      if (python) last->python = i;
      continue;
    }
    segments.push_back({i, i, threads, python ? std::optional<std::size_t>(i) : std::nullopt,
                        options.fuse_stages && (python || single)});
  }

  auto p = std::make_unique<pipe_stream::impl>();
  p->source = std::move(source);
  s->started = dispatch_clock::now();
  if (telemetry::enabled()) telemetry::emit("slither.pipe.run.start", Map{}, run_meta(*s, ""));
  std::unique_lock lock(s->mu);
  s->queues[0].producers = 1;  // the consumer, feeding the input
  for (const segment& g : segments) {
    if (g.last + 1 < n) s->queues[g.last + 1].producers = g.threads;
    s->running += g.threads;
  }
  p->s = s;
  std::size_t started = 0;
  try {
    for (const segment& g : segments) {
      for (std::size_t t = 0; t < g.threads; ++t) {
        if (g.python) {
          s->threads.emplace_back(
              [raw = s.get(), g] { raw->python_main(g.first, *g.python, g.last); });
        } else {
          s->threads.emplace_back([raw = s.get(), g] { raw->native_main(g.first, g.last); });
        }
        ++started;
      }
    }
  } catch (const std::system_error& e) {
    // Threads never started count as done, so the ones that did can finish.
    std::size_t counted = 0;
    for (const segment& g : segments) {
      for (std::size_t t = 0; t < g.threads; ++t, ++counted) {
        if (counted >= started) s->thread_done(g.last);
      }
    }
    s->stop(std::nullopt);
    p->close_input(lock);
    lock.unlock();
    p.reset();
    return fail(errc::io_error, std::string("pipe: cannot start a stage thread: ") + e.what());
  }
  return p;
}

}  // namespace

pipe_stream::pipe_stream(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}
pipe_stream::pipe_stream(pipe_stream&&) noexcept = default;
pipe_stream& pipe_stream::operator=(pipe_stream&&) noexcept = default;
pipe_stream::~pipe_stream() = default;

result<std::optional<pipe_output>> pipe_stream::try_next() {
  auto e = p_->next_entry();
  if (!e) return std::move(e).error();
  if (!*e) return std::optional<pipe_output>();
  return std::optional<pipe_output>(
      pipe_output{p_->s->pipe.outputs[(*e)->output], std::move((*e)->item)});
}

std::optional<pipe_output> pipe_stream::next() {
  auto r = try_next();
  if (!r) throw slither::error(r.error());
  return std::move(*r);
}

void pipe_stream::cancel() {
  std::lock_guard lock(p_->s->mu);
  p_->s->stop(std::nullopt);
}

std::uint64_t pipe_stream::pulled() const noexcept {
  return p_->report.items_in;
}

std::size_t pipe_stream::buffered() const noexcept {
  return p_->buffer.size() - p_->buffer_at;
}

const pipe_run& pipe_stream::report() const noexcept {
  return p_->report;
}

result<pipe_stream> stream(const Pipe& pipe, std::function<std::optional<Item>()> source,
                           const run_options& options) {
  auto p = start(
      pipe,
      [source = std::move(source)](std::vector<Item>& chunk, std::size_t room) {
        while (chunk.size() < room) {
          auto item = source();
          if (!item) return true;
          chunk.push_back(std::move(*item));
        }
        return false;
      },
      options);
  if (!p) return std::move(p).error();
  return pipe_stream(std::move(*p));
}

result<pipe_run> run(const Pipe& pipe, std::vector<Item> input, const run_options& options) {
  std::size_t next = 0;
  auto p = start(
      pipe,
      [&](std::vector<Item>& chunk, std::size_t room) {
        const std::size_t n = std::min(room - chunk.size(), input.size() - next);
        const auto from = input.begin() + static_cast<std::ptrdiff_t>(next);
        chunk.insert(chunk.end(), std::make_move_iterator(from),
                     std::make_move_iterator(from + static_cast<std::ptrdiff_t>(n)));
        next += n;
        return next == input.size();
      },
      options);
  if (!p) return std::move(p).error();
  auto& s = **p;
  std::vector<std::vector<Item>> buckets(s.s->pipe.outputs.size());
  std::vector<out_entry> chunk;
  for (;;) {
    chunk.clear();
    auto more = s.next_outputs(chunk);
    if (!more) return std::move(more).error();
    if (!*more) break;
    for (out_entry& e : chunk) buckets[e.output].push_back(std::move(e.item));
  }
  pipe_run out = std::move(s.report);
  for (; next < input.size(); ++next) out.unfinished.push_back(input[next].id);
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    out.outputs.emplace(s.s->pipe.outputs[i], std::move(buckets[i]));
  }
  return out;
}

}  // namespace slither
