// The thread of a python stage: items grouped into batches by the stage's
// strategy (core's batcher: fixed, weighted or key partition), batches sent
// through its batch_job as its capacity allows, results taken back as they
// come and applied to their items under the stage's policy.
#include <deque>
#include <optional>

#include "pipe_stage_env.hpp"
#include "slither/core/batching.hpp"

namespace slither::detail {

void pipe_run_state::python_main(std::size_t first, std::size_t i, std::size_t last) {
  stage_env env(*this, i);
  batch_job& job = *jobs[i];
  chunk_queue& q = queues[first];
  // Native stages fused with this one: before it (on what comes from the
  // queue) and after it (on what its batches give back).
  stage_chain before(*this, first, i - first);
  stage_chain after(*this, i + 1, last - i);
  // Valid: the pipe was compiled.
  batcher batches = batcher::create(python_batching(env.st.def.python)).value();
  const std::size_t max_items = max_batch_items(batches.strategy());
  std::optional<formed_batch> waiting;  // formed, waiting for the job's capacity
  stage_io io;
  std::size_t outstanding = 0;
  std::deque<std::pair<std::size_t, stage_clock::time_point>> sent;  // batches out, for telemetry
  bool upstream_done = false;
  bool input_closed = false;
  bool cancelling = false;
  std::uint64_t seq = 0;
  error_policy storage;
  const error_policy& fallback = settle(env.st.policy, storage);

  auto held = [&] {
    return batches.open_items() + batches.ready_items() + (waiting ? waiting->items.size() : 0);
  };
  // Items this stage holds and will not send, as unfinished (lock held).
  auto drop_held = [&] {
    if (waiting) {
      for (const Item& item : waiting->items) unfinished.push_back(item.id);
      waiting.reset();
    }
    batches.flush();
    while (auto b = batches.pop()) {
      for (const Item& item : b->items) unfinished.push_back(item.id);
    }
  };

  // Items into the batcher (lock not held: weight and key functions are the
  // user's). An item without a usable weight or key fails here.
  auto feed = [&](std::vector<Item>&& chunk) {
    if (!before.empty()) {
      before.run(std::move(chunk));
      chunk = std::move(before.passed());
      before.passed() = {};
    }
    for (Item& item : chunk) {
      if (auto r = batches.push(std::move(item)); !r) {
        dispatch_error e = make_error(failure_kind::exception,
                                      std::string(to_string(r.error().code)), r.error().message);
        e.attempt = 1;
        env.failed(io, std::move(item), std::move(e), fallback, 1);
      }
    }
  };

  auto submit = [&](formed_batch&& batch) -> result<void> {
    const std::size_t n = batch.items.size();
    const bool observed = telemetry::enabled();
    if (observed) {
      Map m = env.meta;
      m.emplace("batch", static_cast<std::int64_t>(seq));
      telemetry::emit("slither.pipe.stage.start", Map{{"size", static_cast<std::int64_t>(n)}}, m);
    }
    std::vector<std::uint64_t> ids;
    ids.reserve(n);
    for (const Item& item : batch.items) ids.push_back(item.id);
    if (auto r = job.submit(std::move(batch.items)); !r) {
      io.unfinished.insert(io.unfinished.end(), ids.begin(), ids.end());
      return r;
    }
    sent.emplace_back(n, observed ? stage_clock::now() : stage_clock::time_point{});
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
    if (!after.empty() && !io.forward.empty()) {
      std::vector<Item> passed = std::move(io.forward);
      io.forward = {};
      after.run(std::move(passed));
    }
  };

  auto flush_all = [&](std::unique_lock<std::mutex>& lock) {
    before.flush(lock);
    flush(*this, lock, i, io);
    after.flush(lock);
  };

  for (;;) {
    std::vector<std::vector<Item>> taken;
    bool queue_empty = false;
    {
      std::unique_lock lock(mu);
      if (stopping && !cancelling) {
        cancelling = true;
        drop_held();
        lock.unlock();
        job.cancel();
        lock.lock();
      }
      if (!cancelling) {
        // Enough input for the batches the job can take now (key partitions
        // group within it), and at least one batch's worth.
        const std::size_t want = std::max(max_items, job.capacity());
        for (std::size_t h = held(); h < want && !q.chunks.empty();) {
          taken.push_back(pop(first));
          h += taken.back().size();
        }
      }
      queue_empty = q.chunks.empty();
      upstream_done = queue_empty && q.producers == 0;
      if (!cancelling && taken.empty() && outstanding == 0 && held() == 0 && !upstream_done) {
        if (!io.forward.empty() || !io.outputs.empty() || before.holding(1) || after.holding(1)) {
          flush_all(lock);
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
    for (auto& chunk : taken) feed(std::move(chunk));
    if (upstream_done) batches.flush();
    bool broken = false;
    for (;;) {
      if (!waiting) waiting = batches.pop();
      if (!waiting || job.capacity() < waiting->items.size()) break;
      formed_batch batch = std::move(*waiting);
      waiting.reset();
      if (auto r = submit(std::move(batch)); !r) {
        halt_on(r.error(), true);
        broken = true;
        break;
      }
    }
    if (broken) continue;
    if (!waiting && batches.open_items() > 0 && outstanding == 0 &&
        (queue_empty || held() >= std::max(max_items, job.capacity()))) {
      // No worker is busy with this stage's batches, and no more input now
      // (or no room for it): send the fullest open batch rather than wait.
      batches.flush_largest();
      continue;
    }
    if (upstream_done && held() == 0 && !input_closed) {
      if (auto r = job.close_input(); !r && !job.error()) {
        halt_on(r.error());
        continue;
      }
      input_closed = true;
    }
    if (input_closed && outstanding == 0) break;
    if (outstanding == 0) continue;
    std::chrono::milliseconds wait(50);
    if (!upstream_done && held() < std::max(max_items, job.capacity())) {
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
    flush_all(lock);
  }
  std::unique_lock lock(mu);
  drop_held();
  flush_all(lock);
  thread_done(last);
}

}  // namespace slither::detail
