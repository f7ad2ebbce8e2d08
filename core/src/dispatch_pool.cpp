// The dispatch engine's pool: forming and sending batches, choosing workers
// (credits, least-loaded, affinity, retries elsewhere, suspects alone),
// worker deaths, timeouts, backoff, the circuit breaker, telemetry, stats.
#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "dispatch_state.hpp"
#include "slither/core/telemetry.hpp"

namespace slither {
namespace {

using state = detail::dispatch_state;

std::int64_t as_int(std::uint64_t v) {
  return static_cast<std::int64_t>(v);
}

std::int64_t micros(dispatch_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

bool contains(const std::vector<worker_id>& v, worker_id w) {
  return std::find(v.begin(), v.end(), w) != v.end();
}

}  // namespace

// --- forming and sending ---

void state::pump(time_point now) {
  for (auto& [id, job] : jobs) {
    if (!job.stopped) form(job);
  }
  // Round robin over jobs, one batch each per round, starting after the job
  // served last: jobs share the pool's credits fairly.
  bool progress = true;
  while (progress && free_credits > 0) {
    progress = false;
    auto it = jobs.upper_bound(rr_cursor);
    for (std::size_t n = jobs.size(); n > 0 && free_credits > 0; --n) {
      if (it == jobs.end()) it = jobs.begin();
      job_rec& job = it->second;
      ++it;
      if (job.stopped || job.running >= job.opts.max_in_flight) continue;
      if (try_send(job, now)) {
        progress = true;
        rr_cursor = job.id;
      }
    }
  }
}

void state::form(job_rec& job) {
  const auto drain = [&] {
    while (auto formed = job.input.pop()) make_batch(job, std::move(*formed));
  };
  drain();
  if (job.input.open_items() == 0) return;
  if (job.input_closed) {
    job.input.flush();
  } else if (capacity(job) == 0 && job.live.empty() && job.held.empty() && job.output_items == 0) {
    // The whole window waits in open batches (key partition): nothing else
    // will free room for the input that would fill them, so one goes out.
    // Anything less would cut batches short while the consumer is merely slow.
    job.input.flush_largest();
  }
  drain();
}

bool state::try_send(job_rec& job, time_point now) {
  for (auto it = job.retry_ready.begin(); it != job.retry_ready.end(); ++it) {
    batch_rec& b = *it->second;
    if (worker_rec* w = place(job, b)) {
      job.retry_ready.erase(it);
      send(job, b, *w, now);
      return true;
    }
  }
  if (job.queued.empty()) return false;
  batch_rec& b = *job.queued.front();
  worker_rec* w = place(job, b);
  if (w == nullptr) return false;
  job.queued.pop_front();
  send(job, b, *w, now);
  return true;
}

// The worker `b` should go to now, or null to wait.
state::worker_rec* state::place(job_rec& job, batch_rec& b) {
  if (b.kills > 0) return place_alone(job, b);
  const std::string& session = job.opts.context.session_id;
  if (!session.empty() && job.opts.affinity != affinity_mode::none) {
    if (const auto s = sessions.find(session); s != sessions.end()) {
      worker_rec& bound = workers.at(s->second);
      const bool usable =
          !bound.draining && bound.credits > 0 && bound.reserved == 0 && bound.exclusive == 0;
      if (job.opts.affinity == affinity_mode::strict) return usable ? &bound : nullptr;
      if (usable && !(b.attempt > 0 && contains(b.tried, bound.id))) return &bound;
    }
  }
  return least_loaded(b);
}

// Least loaded worker with credit, not held for a suspect; for a retry, one
// that has not failed this batch when there is one.
state::worker_rec* state::least_loaded(const batch_rec& b) {
  worker_rec* best = nullptr;
  bool best_tried = true;
  for (auto& [id, w] : workers) {
    if (w.draining || w.credits == 0 || w.reserved != 0 || w.exclusive != 0) continue;
    const bool tried = b.attempt > 0 && contains(b.tried, id);
    if (best == nullptr || std::tie(tried, w.in_flight, w.last_used) <
                               std::tie(best_tried, best->in_flight, best->last_used)) {
      best = &w;
      best_tried = tried;
    }
  }
  return best;
}

// A suspect batch (one that was on a worker when it died) runs alone: it
// reserves a worker, which takes nothing new until it is empty, so a second
// death is the suspect's doing and an innocent neighbour is never blamed.
state::worker_rec* state::place_alone(job_rec& job, batch_rec& b) {
  worker_rec* w = nullptr;
  if (b.reserved != 0) {
    if (const auto it = workers.find(b.reserved); it != workers.end()) w = &it->second;
    if (w == nullptr) b.reserved = 0;
  }
  if (w == nullptr) {
    const std::string& session = job.opts.context.session_id;
    const auto s = job.opts.affinity == affinity_mode::strict && !session.empty()
                       ? sessions.find(session)
                       : sessions.end();
    bool best_tried = true;
    for (auto& [id, c] : workers) {
      if (c.draining || c.reserved != 0) continue;
      if (s != sessions.end() && s->second != id) continue;
      const bool tried = contains(b.tried, id);
      if (w == nullptr || std::tie(tried, c.in_flight, c.last_used) <
                              std::tie(best_tried, w->in_flight, w->last_used)) {
        w = &c;
        best_tried = tried;
      }
    }
    if (w == nullptr) return nullptr;
    w->reserved = b.id;
    b.reserved = w->id;
  }
  return w->in_flight == 0 && w->credits > 0 ? w : nullptr;
}

void state::send(job_rec& job, batch_rec& b, worker_rec& w, time_point now) {
  b.at = batch_rec::phase::running;
  ++b.attempt;
  b.worker = w.id;
  b.started = now;
  if (job.opts.timeout) {
    b.deadline = now + *job.opts.timeout;
    deadlines.emplace(*b.deadline, b.id);
  } else {
    b.deadline.reset();
  }
  --w.credits;
  --free_credits;
  ++w.in_flight;
  w.held.push_back(b.id);
  w.last_used = ++use_counter;
  if (b.reserved == w.id) {
    w.reserved = 0;
    b.reserved = 0;
    w.exclusive = b.id;
  }
  ++job.running;
  ++counters.batches_sent;

  const std::string& session = job.opts.context.session_id;
  if (!session.empty() && job.opts.affinity != affinity_mode::none &&
      sessions.emplace(session, w.id).second) {
    for (auto& [id, other] : jobs) {
      if (other.session_lost == 0 || other.opts.context.session_id != session) continue;
      actions.emplace_back(session_moved{id, session, other.session_lost, w.id});
      other.session_lost = 0;
      ++other.moves;
    }
  }
  emit_start(job, b);
  actions.emplace_back(batch_task{b.id, b.attempt, w.id, job.id, b.items, b.count, b.payload,
                                  job.target, b.deadline});
}

// --- answers and ends ---

// The running batch an answer is about, or null (and counted) for a stale
// answer: a batch that ended, was retried, or left a worker since.
state::batch_rec* state::answering(worker_id worker, std::uint64_t batch, std::uint32_t attempt) {
  const auto it = batches.find(batch);
  if (it == batches.end() || it->second.at != batch_rec::phase::running ||
      it->second.worker != worker || it->second.attempt != attempt) {
    ++counters.stale_events;
    return nullptr;
  }
  return &it->second;
}

// `b` answered: it leaves its worker.
void state::stop_running(batch_rec& b) {
  worker_rec& w = workers.at(b.worker);
  --w.in_flight;
  std::erase(w.held, b.id);
  if (w.exclusive == b.id) w.exclusive = 0;
  if (b.deadline) deadlines.erase({*b.deadline, b.id});
  b.deadline.reset();
  if (b.job != nullptr) --b.job->running;
  if (w.draining && w.in_flight == 0) actions.emplace_back(retire_worker{w.id});
}

void state::erase_batch(batch_rec& b) {
  if (b.at == batch_rec::phase::backoff) backoffs.erase({b.retry_at, b.id});
  if (b.deadline) deadlines.erase({*b.deadline, b.id});
  if (b.reserved != 0) {
    if (const auto it = workers.find(b.reserved);
        it != workers.end() && it->second.reserved == b.id) {
      it->second.reserved = 0;
    }
  }
  batches.erase(b.id);
}

// --- workers ---

// `w` is gone. Its batches fail as killed (`timed_out` for the batch that
// overran, if that is why), its sessions are unbound, and an unexpected
// departure counts toward the circuit breaker.
void state::remove_worker(worker_rec& w, const dispatch_error& why, bool death, time_point now,
                          const dispatch_error* timed_out) {
  const worker_id id = w.id;
  if (!w.draining) free_credits -= w.credits;
  if (w.reserved != 0) {
    if (const auto it = batches.find(w.reserved); it != batches.end()) it->second.reserved = 0;
  }
  const std::vector<std::uint64_t> held = std::move(w.held);
  std::erase_if(sessions, [&](const auto& s) {
    if (s.second != id) return false;
    for (auto& [jid, job] : jobs) {
      if (!job.stopped && job.opts.affinity != affinity_mode::none &&
          job.opts.context.session_id == s.first) {
        job.session_lost = id;
      }
    }
    return true;
  });
  workers.erase(id);
  for (const std::uint64_t bid : held) {
    const auto it = batches.find(bid);
    if (it == batches.end()) continue;
    batch_rec& b = it->second;
    if (b.deadline) deadlines.erase({*b.deadline, b.id});
    b.deadline.reset();
    if (b.job == nullptr) {
      erase_batch(b);
      continue;
    }
    --b.job->running;
    const bool overran = timed_out != nullptr && timed_out->batch == b.id;
    fail_attempt(b, overran ? *timed_out : why, true, now);
  }
  if (!death) return;
  ++counters.worker_deaths;
  deaths.push_back(now);
  while (!deaths.empty() && deaths.front() < now - opts.breaker.window) deaths.pop_front();
  if (deaths.size() >= opts.breaker.max_deaths) {
    open_circuit(detail::make_failure(failure_kind::circuit_open,
                                      std::to_string(deaths.size()) + " workers died within " +
                                          std::to_string(opts.breaker.window.count()) +
                                          " ms (last: " + why.message + ")"),
                 now);
  }
}

void state::open_circuit(dispatch_error why, time_point now) {
  why.kind = failure_kind::circuit_open;
  circuit_until = now + opts.breaker.cooldown;
  circuit_error = why;
  deaths.clear();
  for (auto& [id, job] : jobs) {
    if (!all_ended(job)) stop_job(job, why);
  }
  actions.emplace_back(circuit_opened{std::move(why)});
}

result<void> state::on_event(executor_event&& event, time_point now) {
  if (auto* e = std::get_if<worker_joined>(&event)) {
    if (e->worker == 0) return fail(errc::invalid_argument, "worker_joined: worker id 0");
    if (workers.contains(e->worker)) {
      return fail(errc::invalid_argument,
                  "worker_joined: worker " + std::to_string(e->worker) + " joined twice");
    }
    worker_rec& w = workers[e->worker];
    w.id = e->worker;
    w.credits = std::min(e->credits, opts.max_credits);
    free_credits += w.credits;
    if (e->restart) ++counters.restarts;
  } else if (auto* c = std::get_if<credit_granted>(&event)) {
    const auto it = workers.find(c->worker);
    if (it == workers.end()) {
      ++counters.stale_events;
      return {};
    }
    worker_rec& w = it->second;
    const std::uint32_t add = std::min(c->credits, opts.max_credits - w.credits);
    w.credits += add;
    if (!w.draining) free_credits += add;
  } else if (auto* done = std::get_if<batch_completed>(&event)) {
    on_completed(std::move(*done), now);
  } else if (auto* failed = std::get_if<batch_failed>(&event)) {
    on_failed(std::move(*failed), now);
  } else if (auto* encoded = std::get_if<batch_encoded>(&event)) {
    on_encoded(std::move(*encoded), now);
  } else if (auto* left = std::get_if<worker_left>(&event)) {
    const auto it = workers.find(left->worker);
    if (it == workers.end()) {
      ++counters.stale_events;
      return {};
    }
    remove_worker(
        it->second,
        detail::make_failure(failure_kind::worker_died,
                             "worker " + std::to_string(left->worker) + " left: " + left->reason),
        !left->expected, now);
  } else if (auto* p = std::get_if<pool_failed>(&event)) {
    open_circuit(std::move(p->error), now);
  }
  return {};
}

// --- time ---

void state::fire(time_point now) {
  while (!deadlines.empty() && deadlines.begin()->first <= now) {
    batch_rec& b = batches.at(deadlines.begin()->second);
    worker_rec& w = workers.at(b.worker);
    dispatch_error overran =
        detail::make_failure(failure_kind::timeout,
                             "the batch ran for " + std::to_string(micros(now - b.started) / 1000) +
                                 " ms, past its timeout; its worker was killed");
    overran.batch = b.id;
    overran.attempt = b.attempt;
    overran.worker = w.id;
    ++counters.timeouts;
    actions.emplace_back(kill_worker{w.id, overran});
    remove_worker(w,
                  detail::make_failure(failure_kind::worker_died,
                                       "worker " + std::to_string(w.id) + " was killed: batch " +
                                           std::to_string(b.id) + " on it timed out"),
                  true, now, &overran);
  }
  while (!backoffs.empty() && backoffs.begin()->first <= now) {
    batch_rec& b = batches.at(backoffs.begin()->second);
    backoffs.erase(backoffs.begin());
    b.at = batch_rec::phase::retry_ready;
    b.job->retry_ready.emplace(b.seq, &b);
  }
  if (circuit_until && now >= *circuit_until) circuit_until.reset();
}

// --- telemetry ---

void state::emit_start(const job_rec& job, const batch_rec& b) const {
  if (!telemetry::enabled()) return;
  telemetry::emit("slither.dispatch.batch.start", {{"size", as_int(b.count)}},
                  {{"batch", as_int(b.id)},
                   {"job", as_int(job.id)},
                   {"worker", as_int(b.worker)},
                   {"attempt", as_int(b.attempt)},
                   {"function", job.opts.function},
                   {"session", job.opts.context.session_id}});
}

void state::emit_end(const batch_rec& b, time_point now, const dispatch_error* err,
                     std::size_t item_errors) const {
  if (!telemetry::enabled()) return;
  Map meta{{"batch", as_int(b.id)}, {"worker", as_int(b.worker)}, {"attempt", as_int(b.attempt)}};
  if (b.job != nullptr) {
    meta.emplace("job", as_int(b.job->id));
    meta.emplace("function", b.job->opts.function);
    meta.emplace("session", b.job->opts.context.session_id);
  }
  Map measurements{{"size", as_int(b.count)},
                   {"duration_us", micros(now - b.started)},
                   {"item_errors", as_int(item_errors)}};
  if (err == nullptr) {
    telemetry::emit("slither.dispatch.batch.stop", measurements, meta);
    return;
  }
  meta.emplace("kind", std::string(to_string(err->kind)));
  meta.emplace("type", err->type);
  meta.emplace("message", err->message);
  telemetry::emit("slither.dispatch.batch.exception", measurements, meta);
}

// --- books ---

result<void> state::books() const {
  const auto wrong = [](const std::string& what) {
    return fail(errc::internal, "dispatch accounting: " + what);
  };
  std::size_t running = 0;
  std::uint64_t credits = 0;
  for (const auto& [id, w] : workers) {
    if (w.held.size() != w.in_flight) {
      return wrong("worker " + std::to_string(id) + " holds " + std::to_string(w.held.size()) +
                   " batches but counts " + std::to_string(w.in_flight));
    }
    for (const std::uint64_t bid : w.held) {
      const auto it = batches.find(bid);
      if (it == batches.end() || it->second.at != batch_rec::phase::running ||
          it->second.worker != id) {
        return wrong("worker " + std::to_string(id) + " holds batch " + std::to_string(bid) +
                     ", which is not running there");
      }
    }
    running += w.in_flight;
    if (!w.draining) credits += w.credits;
  }
  std::size_t running_batches = 0;
  for (const auto& [id, b] : batches) {
    if (b.at == batch_rec::phase::running) ++running_batches;
  }
  if (running != running_batches) {
    return wrong(std::to_string(running_batches) + " batches run, workers hold " +
                 std::to_string(running));
  }
  if (credits != free_credits) {
    return wrong("workers hold " + std::to_string(credits) + " credits, the pool counts " +
                 std::to_string(free_credits));
  }
  for (const auto& [id, job] : jobs) {
    const std::string name = "job " + std::to_string(id);
    std::uint64_t inside = job.input.open_items() + job.input.ready_items();
    std::uint32_t job_running = 0;
    for (const auto& [seq, b] : job.live) {
      inside += b->count;
      if (b->at == batch_rec::phase::running) ++job_running;
      if (b->job != &job)
        return wrong(name + " lists batch " + std::to_string(b->id) + " of another job");
    }
    std::uint64_t ended = 0;
    for (const auto n : job.by_status) ended += n;
    if (job.ingested != inside + ended) {
      return wrong(name + " took " + std::to_string(job.ingested) + " items; " +
                   std::to_string(inside) + " are inside and " + std::to_string(ended) + " ended");
    }
    if (ended != job.held_items + job.output_items + job.taken) {
      return wrong(name + ": " + std::to_string(ended) + " items ended, but " +
                   std::to_string(job.held_items + job.output_items + job.taken) +
                   " are held, ready or taken");
    }
    if (job_running != job.running) {
      return wrong(name + " counts " + std::to_string(job.running) + " running batches, has " +
                   std::to_string(job_running));
    }
    if (opts.verify_accounting) {
      const auto flagged = static_cast<std::uint64_t>(
          std::count(job.ended_bits.begin(), job.ended_bits.end(), true));
      if (job.ended_base + flagged != ended) {
        return wrong(name + ": " + std::to_string(job.ended_base + flagged) +
                     " items flagged ended, counted " + std::to_string(ended));
      }
    }
  }
  return {};
}

// --- public API: workers, time, stats ---

result<void> dispatch_engine::handle(executor_event event, time_point now) {
  auto r = s_->on_event(std::move(event), now);
  s_->after_call(now);
  return r;
}

result<void> dispatch_engine::drain_worker(worker_id worker, time_point now) {
  const auto it = s_->workers.find(worker);
  if (it == s_->workers.end()) {
    return fail(errc::not_found, "drain_worker: no worker " + std::to_string(worker));
  }
  detail::dispatch_state::worker_rec& w = it->second;
  if (!w.draining) {
    w.draining = true;
    s_->free_credits -= w.credits;
    if (w.reserved != 0) {
      if (const auto b = s_->batches.find(w.reserved); b != s_->batches.end()) {
        b->second.reserved = 0;
      }
      w.reserved = 0;
    }
    if (w.in_flight == 0) s_->actions.emplace_back(retire_worker{worker});
  }
  s_->after_call(now);
  return {};
}

void dispatch_engine::tick(time_point now) {
  s_->fire(now);
  s_->after_call(now);
}

std::optional<dispatch_engine::time_point> dispatch_engine::next_deadline() const {
  std::optional<time_point> next = s_->circuit_until;
  const auto consider = [&](time_point t) {
    if (!next || t < *next) next = t;
  };
  if (!s_->deadlines.empty()) consider(s_->deadlines.begin()->first);
  if (!s_->backoffs.empty()) consider(s_->backoffs.begin()->first);
  return next;
}

pool_stats dispatch_engine::stats() const {
  pool_stats st = s_->counters;
  st.circuit_open = s_->circuit_until.has_value();
  for (const auto& [id, w] : s_->workers) {
    st.workers.push_back({id, w.credits, w.in_flight, w.batches_ok, w.batches_failed, w.draining});
  }
  for (const auto& [id, job] : s_->jobs) {
    job_stats js;
    js.id = id;
    js.function = job.opts.function;
    js.in_flight = job.running;
    js.queued_batches = job.queued.size() + job.retry_ready.size();
    for (const auto& [seq, b] : job.live) {
      if (b->at == detail::dispatch_state::batch_rec::phase::backoff) ++js.queued_batches;
    }
    js.buffered_items = job.input.open_items() + job.input.ready_items();
    js.reorder_items = job.held_items;
    js.ready_items = job.output_items;
    js.items_in = job.ingested;
    js.items_taken = job.taken;
    js.ok = job.by_status[static_cast<std::size_t>(item_status::ok)];
    js.skipped = job.by_status[static_cast<std::size_t>(item_status::skipped)];
    js.routed = job.by_status[static_cast<std::size_t>(item_status::routed)];
    js.failed = job.by_status[static_cast<std::size_t>(item_status::failed)];
    js.cancelled = job.by_status[static_cast<std::size_t>(item_status::cancelled)];
    js.retries = job.retries;
    js.session_moves = job.moves;
    st.jobs.push_back(std::move(js));
  }
  return st;
}

result<void> dispatch_engine::check_accounting() const {
  return s_->books();
}

}  // namespace slither
