// A deterministic harness for the dispatch engine: simulated workers that
// hold the tasks the engine sends them until the test completes, fails or
// crashes them, and a clock that moves only when the test says so.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "slither/core/dispatch.hpp"

namespace slither::testing {

using namespace std::chrono_literals;

/// Engine options for tests: every item tracked, books checked on every call.
inline engine_options verified(circuit_breaker breaker = {}) {
  engine_options o;
  o.verify_accounting = true;
  o.breaker = breaker;
  return o;
}

/// A breaker that never opens, for runs full of deliberate deaths.
inline circuit_breaker never_open() {
  return circuit_breaker{UINT32_MAX, std::chrono::milliseconds(1), std::chrono::milliseconds(1)};
}

/// The default handler: doubles an int payload.
inline item_result doubled(const Item& item) {
  return Value(item.payload.as<std::int64_t>() * 2);
}

/// An item error, as a handler returns one.
inline dispatch_error item_failure(std::string message) {
  dispatch_error e;
  e.kind = failure_kind::item_error;
  e.type = "ValueError";
  e.message = std::move(message);
  return e;
}

/// Items 0..n-1 whose payload is their id.
inline std::vector<Item> numbered_items(std::uint64_t n, std::uint64_t first = 0) {
  std::vector<Item> out;
  for (std::uint64_t i = first; i < first + n; ++i)
    out.push_back(wrap(Value(static_cast<std::int64_t>(i)), i));
  return out;
}

class sim {
 public:
  using time_point = dispatch_clock::time_point;

  explicit sim(engine_options options = verified()) : engine(options) {}

  dispatch_engine engine;
  time_point now = time_point{} + std::chrono::hours(1);

  /// Tasks each live simulated worker holds, oldest first.
  std::map<worker_id, std::vector<batch_task>> tasks;
  std::vector<batch_task> sent;  // every task, in order
  std::vector<kill_worker> kills;
  std::vector<retire_worker> retires;
  std::vector<session_moved> moves;
  std::vector<circuit_opened> circuits;
  std::vector<input_wanted> wanted;
  std::vector<job_id> ready;
  /// Credits a replacement gets when a killed worker is replaced; 0: none.
  std::uint32_t respawn_credits = 0;

  worker_id add_worker(std::uint32_t credits = 2, bool restart = false) {
    const worker_id id = next_worker_++;
    tasks[id];
    expect_ok(engine.handle(worker_joined{id, credits, restart}, now));
    drain();
    return id;
  }

  /// Carries out every queued action.
  void drain() {
    std::vector<worker_id> killed;
    while (auto a = engine.next_action()) {
      if (auto* t = std::get_if<batch_task>(&*a)) {
        sent.push_back(*t);
        if (auto it = tasks.find(t->worker); it != tasks.end()) it->second.push_back(*t);
      } else if (auto* k = std::get_if<kill_worker>(&*a)) {
        kills.push_back(*k);
        killed.push_back(k->worker);
      } else if (auto* r = std::get_if<retire_worker>(&*a)) {
        retires.push_back(*r);
      } else if (auto* m = std::get_if<session_moved>(&*a)) {
        moves.push_back(*m);
      } else if (auto* c = std::get_if<circuit_opened>(&*a)) {
        circuits.push_back(*c);
      } else if (auto* w = std::get_if<input_wanted>(&*a)) {
        wanted.push_back(*w);
      } else if (auto* o = std::get_if<output_ready>(&*a)) {
        ready.push_back(o->job);
      }
    }
    for (const worker_id w : killed) {
      tasks.erase(w);
      if (respawn_credits > 0) add_worker(respawn_credits, true);
    }
  }

  /// Takes task `index` of worker `w` off it.
  batch_task take_task(worker_id w, std::size_t index = 0) {
    auto& list = tasks.at(w);
    EXPECT_LT(index, list.size());
    batch_task t = list.at(index);
    list.erase(list.begin() + static_cast<std::ptrdiff_t>(index));
    return t;
  }

  /// Worker `w` finishes its task `index` with `fn` per item, and grants the credit back.
  batch_task complete(worker_id w, std::size_t index = 0,
                      const std::function<item_result(const Item&)>& fn = doubled) {
    batch_task t = take_task(w, index);
    batch_completed done{w, t.batch, t.attempt, {}};
    for (const Item& item : *t.items) done.results.push_back(fn(item));
    expect_ok(engine.handle(std::move(done), now));
    expect_ok(engine.handle(credit_granted{w, 1}, now));
    drain();
    return t;
  }

  /// Worker `w`'s task `index` raises.
  batch_task fail(worker_id w, std::size_t index = 0, std::string message = "boom") {
    batch_task t = take_task(w, index);
    dispatch_error e;
    e.kind = failure_kind::exception;
    e.type = "RuntimeError";
    e.message = std::move(message);
    e.traceback = "Traceback: ...";
    expect_ok(engine.handle(batch_failed{w, t.batch, t.attempt, e}, now));
    expect_ok(engine.handle(credit_granted{w, 1}, now));
    drain();
    return t;
  }

  /// Worker `w` dies (SIGKILL); a replacement joins if `respawn_credits`.
  void crash(worker_id w, std::string reason = "killed by signal 9") {
    tasks.erase(w);
    expect_ok(engine.handle(worker_left{w, std::move(reason), false}, now));
    drain();
    if (respawn_credits > 0) add_worker(respawn_credits, true);
  }

  void advance(dispatch_clock::duration d) {
    now += d;
    engine.tick(now);
    drain();
  }

  job_id open(dispatch_options options) {
    auto id = engine.open_job(std::move(options), now);
    EXPECT_TRUE(id) << (id ? "" : id.error().message);
    drain();
    return id.value();
  }

  /// Offers `batch` (all of it must fit) and drains.
  void offer(job_id job, std::vector<Item> batch) {
    expect_ok(engine.offer(job, batch, now));
    drain();
  }

  void close(job_id job) {
    expect_ok(engine.close_input(job, now));
    drain();
  }

  std::vector<dispatch_result> take(job_id job, std::size_t max = SIZE_MAX) {
    auto out = engine.take_results(job, max);
    drain();
    return out;
  }

  /// Tasks held by all workers.
  std::size_t running() const {
    std::size_t n = 0;
    for (const auto& [w, list] : tasks) n += list.size();
    return n;
  }

  static void expect_ok(const result<void>& r) { EXPECT_TRUE(r) << (r ? "" : r.error().message); }

 private:
  worker_id next_worker_ = 1;
};

/// A retry policy (aggregate initialisation would leave members unnamed).
inline retry_policy retrying(std::uint32_t attempts, backoff delay = {0ms, 1.0, 0ms},
                             fallback_policy then = halt_policy{}) {
  retry_policy r;
  r.max_attempts = attempts;
  r.delay = delay;
  r.then = std::move(then);
  return r;
}

/// Options for a doubling job with small batches.
inline dispatch_options job_options(std::size_t batch_size = 2, std::uint32_t max_in_flight = 8) {
  dispatch_options o;
  o.function = "double";
  o.batching = fixed_batch{batch_size};
  o.max_in_flight = max_in_flight;
  return o;
}

/// The item ids of results, in order.
inline std::vector<std::uint64_t> result_ids(const std::vector<dispatch_result>& rs) {
  std::vector<std::uint64_t> out;
  for (const auto& r : rs) out.push_back(r.item.id);
  return out;
}

}  // namespace slither::testing
