// The dispatch engine's jobs: input, batches' ends, error policies, ordering,
// accounting. Workers, sending and time are in dispatch_pool.cpp.
#include <algorithm>
#include <string>
#include <utility>

#include "dispatch_state.hpp"

namespace slither {
namespace {

using state = detail::dispatch_state;

error_info no_job(job_id id) {
  return fail(errc::not_found, "no dispatch job " + std::to_string(id));
}

// What a failure becomes under a job's policy (a retry's, once spent).
item_status fallback_status(const error_policy& policy) {
  const auto of = [](const fallback_policy& f) {
    if (std::holds_alternative<skip_policy>(f)) return item_status::skipped;
    if (std::holds_alternative<route_policy>(f)) return item_status::routed;
    return item_status::failed;
  };
  if (const auto* r = std::get_if<retry_policy>(&policy)) return of(r->then);
  if (std::holds_alternative<skip_policy>(policy)) return of(skip_policy{});
  if (const auto* r = std::get_if<route_policy>(&policy)) return of(*r);
  return item_status::failed;
}

const std::string& route_output(const error_policy& policy) {
  static const std::string none;
  if (const auto* r = std::get_if<route_policy>(&policy)) return r->output;
  if (const auto* r = std::get_if<retry_policy>(&policy)) {
    if (const auto* t = std::get_if<route_policy>(&r->then)) return t->output;
  }
  return none;
}

dispatch_result failed_item(const Item& input, item_status status,
                            const std::shared_ptr<const dispatch_error>& err,
                            const std::string& route) {
  dispatch_result r{input, status, err};
  if (status == item_status::routed) r.item.route = route;
  return r;
}

// Names the run of `b` that `e` came from.
void attribute(dispatch_error& e, const state::batch_rec& b) noexcept {
  e.batch = b.id;
  e.attempt = b.attempt;
  e.worker = b.worker;
}

bool is_encoded(const dispatch_options& options) noexcept {
  const auto* p = std::get_if<preformed_batch>(&options.batching);
  return p != nullptr && p->encoded;
}

std::size_t unit_size(const state::output_unit& unit) noexcept {
  if (const auto* v = std::get_if<std::vector<dispatch_result>>(&unit)) return v->size();
  return std::get<batch_output>(unit).count;
}

error_info wrong_form(job_id id, bool encoded) {
  return fail(errc::invalid_argument,
              "dispatch job " + std::to_string(id) +
                  (encoded ? " takes encoded batches (offer_batch of an opaque_batch), not items"
                           : " takes items; only a job whose batching is preformed_batch{.encoded "
                             "= true} takes encoded batches"));
}

// Job `id`, if it takes `n` more items; else the error saying why not (no
// such job, a job of encoded batches, a full or closed input).
result<state::job_rec*> taking_items(state& s, job_id id, std::size_t n) {
  state::job_rec* j = s.find_job(id);
  if (j == nullptr) return no_job(id);
  if (is_encoded(j->opts)) return wrong_form(id, true);
  if (auto ok = s.check_input(*j, n); !ok) return std::move(ok).error();
  return j;
}

}  // namespace

bool debug_accounting_default() noexcept {
#ifdef NDEBUG
  return false;
#else
  return true;
#endif
}

std::string_view to_string(item_status status) noexcept {
  switch (status) {
    case item_status::ok:
      return "ok";
    case item_status::skipped:
      return "skipped";
    case item_status::routed:
      return "routed";
    case item_status::failed:
      return "failed";
    case item_status::cancelled:
      return "cancelled";
  }
  return "unknown";
}

state::job_rec::job_rec(job_id id_, dispatch_options opts_, batcher input_)
    : id(id_),
      opts(std::move(opts_)),
      target(std::make_shared<const job_target>(job_target{opts.function, opts.context})),
      input(std::move(input_)),
      window(job_window(opts)) {}

state::job_rec* state::find_job(job_id id) noexcept {
  const auto it = jobs.find(id);
  return it == jobs.end() ? nullptr : &it->second;
}

const state::job_rec* state::find_job(job_id id) const noexcept {
  const auto it = jobs.find(id);
  return it == jobs.end() ? nullptr : &it->second;
}

std::size_t state::capacity(const job_rec& job) const noexcept {
  if (job.stopped || job.input_closed) return 0;
  const std::uint64_t outstanding = job.ingested - job.taken;
  return outstanding >= job.window ? 0 : job.window - static_cast<std::size_t>(outstanding);
}

bool state::all_ended(const job_rec& job) const noexcept {
  return job.stopped || (job.input_closed && job.input.open_items() == 0 &&
                         job.input.ready_items() == 0 && job.live.empty());
}

result<void> state::check_input(const job_rec& job, std::size_t n) const {
  const std::string name = "dispatch job " + std::to_string(job.id);
  if (job.stopped) {
    return fail(errc::invalid_argument,
                name + " has stopped (" + job.error->describe() + "); it takes no more input");
  }
  if (job.input_closed) return fail(errc::invalid_argument, name + ": its input is closed");
  const std::size_t cap = capacity(job);
  if (n > cap) {
    return fail(errc::busy, name + " can take " + std::to_string(cap) + " more items now, not " +
                                std::to_string(n) + " (its window holds " +
                                std::to_string(job.window) + "); take results first");
  }
  return {};
}

void state::ingested(job_rec& job, std::size_t n) {
  job.ingested += n;
  if (opts.verify_accounting) job.ended_bits.insert(job.ended_bits.end(), n, false);
}

// A new batch of `count` items, next in `job`'s order and queued; the
// caller gives it its items or payload.
state::batch_rec& state::add_batch(job_rec& job, std::size_t count) {
  const std::uint64_t id = next_batch++;
  batch_rec& b = batches[id];
  b.id = id;
  b.job = &job;
  b.seq = job.next_seq++;
  b.count = count;
  job.live.emplace(b.seq, &b);
  job.queued.push_back(&b);
  return b;
}

void state::make_batch(job_rec& job, formed_batch&& formed) {
  batch_rec& b = add_batch(job, formed.items.size());
  b.items = std::make_shared<const std::vector<Item>>(std::move(formed.items));
  if (opts.verify_accounting) b.positions = std::move(formed.positions);
}

// An encoded batch bypasses the batcher: its items take the next input
// positions (call before `ingested`).
void state::make_encoded_batch(job_rec& job, opaque_batch&& batch) {
  batch_rec& b = add_batch(job, batch.count);
  b.payload = std::move(batch.payload);
  if (opts.verify_accounting) {
    b.positions.resize(b.count);
    for (std::size_t i = 0; i < b.count; ++i) b.positions[i] = job.ingested + i;
  }
}

// The output of a batch whose items all ended alike (a failure, a cancel).
state::output_unit state::ended_whole(const job_rec& job, const batch_rec& b, item_status status,
                                      const std::shared_ptr<const dispatch_error>& err) const {
  if (!b.items) {
    batch_output out;
    out.seq = b.seq;
    out.count = b.count;
    out.has_results = false;
    out.payload = b.payload;
    out.status = status;
    out.error = err;
    return out;
  }
  const std::string& route = route_output(job.opts.on_error);
  std::vector<dispatch_result> results;
  results.reserve(b.count);
  for (const Item& in : *b.items) results.push_back(failed_item(in, status, err, route));
  return results;
}

// Ends a batch's items: counts them, checks each ends once, and passes the
// results on in the job's order. The caller then erases or orphans `b`.
void state::deliver(job_rec& job, const batch_rec& b, output_unit&& results) {
  if (const auto* v = std::get_if<std::vector<dispatch_result>>(&results)) {
    for (const auto& r : *v) ++job.by_status[static_cast<std::size_t>(r.status)];
  } else if (const auto& out = std::get<batch_output>(results); out.has_results) {
    for (const auto& f : out.failures) ++job.by_status[static_cast<std::size_t>(f.status)];
    job.by_status[static_cast<std::size_t>(item_status::ok)] += out.count - out.failures.size();
  } else {
    job.by_status[static_cast<std::size_t>(out.status)] += out.count;
  }
  if (opts.verify_accounting) {
    for (const std::uint64_t pos : b.positions) {
      if (pos < job.ended_base || pos - job.ended_base >= job.ended_bits.size() ||
          job.ended_bits[pos - job.ended_base]) {
        throw error(errc::internal, "dispatch accounting: item at input position " +
                                        std::to_string(pos) + " of job " + std::to_string(job.id) +
                                        " ended twice or was never offered");
      }
      job.ended_bits[pos - job.ended_base] = true;
    }
    while (!job.ended_bits.empty() && job.ended_bits.front()) {
      job.ended_bits.pop_front();
      ++job.ended_base;
    }
  }
  job.live.erase(b.seq);
  job.notify = true;
  const auto release = [&job](output_unit&& ready) {
    const std::size_t n = unit_size(ready);
    job.output_items += n;
    if (n > 0) job.output.push_back(std::move(ready));
  };
  if (job.opts.ordering == order_mode::as_completed) return release(std::move(results));
  if (b.seq == job.next_release) {
    release(std::move(results));
    ++job.next_release;
  } else {
    job.held_items += unit_size(results);
    job.held.emplace(b.seq, std::move(results));
  }
  while (!job.held.empty() && job.held.begin()->first == job.next_release) {
    job.held_items -= unit_size(job.held.begin()->second);
    release(std::move(job.held.begin()->second));
    job.held.erase(job.held.begin());
    ++job.next_release;
  }
}

// A worker's answer that cannot be used: the run failed as `bad_result`.
void state::bad_answer(batch_rec& b, std::string why, time_point now) {
  ++workers.at(b.worker).batches_failed;
  ++counters.batches_failed;
  if (b.job == nullptr) return erase_batch(b);
  fail_attempt(b, detail::make_failure(failure_kind::bad_result, std::move(why)), false, now);
}

void state::on_completed(batch_completed&& ev, time_point now) {
  batch_rec* b = answering(ev.worker, ev.batch, ev.attempt);
  if (b == nullptr) return;
  stop_running(*b);
  if (!b->items) {
    return bad_answer(*b, "the executor answered an encoded batch with decoded results", now);
  }
  if (ev.results.size() != b->count) {
    return bad_answer(*b,
                      "the handler returned " + std::to_string(ev.results.size()) +
                          " results for a batch of " + std::to_string(b->count) + " items",
                      now);
  }
  worker_rec& w = workers.at(ev.worker);
  ++w.batches_ok;
  ++counters.batches_ok;
  if (b->job == nullptr) return erase_batch(*b);
  job_rec& job = *b->job;
  const item_status on_failure = fallback_status(job.opts.on_error);
  const std::string& route = route_output(job.opts.on_error);
  std::vector<dispatch_result> results;
  results.reserve(ev.results.size());
  std::optional<dispatch_error> halt;
  std::size_t item_errors = 0;
  for (std::size_t i = 0; i < ev.results.size(); ++i) {
    const Item& in = (*b->items)[i];
    if (auto* v = std::get_if<Value>(&ev.results[i])) {
      Item& out = results.emplace_back().item;
      out.id = in.id;
      out.payload = std::move(*v);
      if (!in.meta.empty()) out.meta = in.meta;
      continue;
    }
    auto e = std::get<dispatch_error>(std::move(ev.results[i]));
    e.kind = failure_kind::item_error;
    attribute(e, *b);
    ++item_errors;
    if (on_failure == item_status::failed && !halt) halt = e;
    results.push_back(
        failed_item(in, on_failure, std::make_shared<const dispatch_error>(std::move(e)), route));
  }
  emit_end(*b, now, nullptr, item_errors);
  deliver(job, *b, std::move(results));
  erase_batch(*b);
  if (halt) stop_job(job, *halt);
}

void state::on_encoded(batch_encoded&& ev, time_point now) {
  batch_rec* b = answering(ev.worker, ev.batch, ev.attempt);
  if (b == nullptr) return;
  stop_running(*b);
  if (b->items) {
    return bad_answer(*b, "the executor answered a batch of items with encoded results", now);
  }
  if (ev.count != b->count) {
    return bad_answer(*b,
                      "the handler returned " + std::to_string(ev.count) +
                          " results for a batch of " + std::to_string(b->count) + " items",
                      now);
  }
  std::sort(ev.failures.begin(), ev.failures.end(),
            [](const indexed_error& x, const indexed_error& y) { return x.index < y.index; });
  for (std::size_t i = 0; i < ev.failures.size(); ++i) {
    const std::uint32_t index = ev.failures[i].index;
    if (index >= b->count) {
      return bad_answer(*b,
                        "the worker reported an error for item " + std::to_string(index) +
                            " of a batch of " + std::to_string(b->count) + " items",
                        now);
    }
    if (i > 0 && ev.failures[i - 1].index == index) {
      return bad_answer(*b, "the worker reported two errors for item " + std::to_string(index),
                        now);
    }
  }
  worker_rec& w = workers.at(ev.worker);
  ++w.batches_ok;
  ++counters.batches_ok;
  if (b->job == nullptr) return erase_batch(*b);
  job_rec& job = *b->job;
  const item_status on_failure = fallback_status(job.opts.on_error);
  std::optional<dispatch_error> halt;
  batch_output out;
  out.seq = b->seq;
  out.count = b->count;
  out.payload = std::move(ev.results);
  out.failures.reserve(ev.failures.size());
  for (auto& f : ev.failures) {
    dispatch_error& e = f.error;
    e.kind = failure_kind::item_error;
    attribute(e, *b);
    if (on_failure == item_status::failed && !halt) halt = e;
    out.failures.push_back(
        {f.index, on_failure, std::make_shared<const dispatch_error>(std::move(e))});
  }
  emit_end(*b, now, nullptr, out.failures.size());
  deliver(job, *b, std::move(out));
  erase_batch(*b);
  if (halt) stop_job(job, *halt);
}

void state::on_failed(batch_failed&& ev, time_point now) {
  batch_rec* b = answering(ev.worker, ev.batch, ev.attempt);
  if (b == nullptr) return;
  stop_running(*b);
  ++workers.at(ev.worker).batches_failed;
  ++counters.batches_failed;
  if (b->job == nullptr) return erase_batch(*b);
  if (ev.error.kind != failure_kind::bad_result) ev.error.kind = failure_kind::exception;
  fail_attempt(*b, std::move(ev.error), false, now);
}

// A run of `b` failed as a whole: retry it, quarantine it, or end its items
// under the job's policy. `killed`: the run ended with its worker dead.
void state::fail_attempt(batch_rec& b, dispatch_error err, bool killed, time_point now) {
  job_rec& job = *b.job;
  attribute(err, b);
  emit_end(b, now, &err, 0);
  b.tried.push_back(b.worker);
  if (killed) ++b.kills;
  if (const auto* r = std::get_if<retry_policy>(&job.opts.on_error)) {
    if (b.attempt < r->max_attempts) {
      ++job.retries;
      ++counters.retries;
      b.retry_at = now + r->delay.delay(b.attempt);
      if (b.retry_at <= now) {
        b.at = batch_rec::phase::retry_ready;
        job.retry_ready.emplace(b.seq, &b);
      } else {
        b.at = batch_rec::phase::backoff;
        backoffs.emplace(b.retry_at, b.id);
      }
      return;
    }
    if (b.kills >= r->max_attempts) {
      ++counters.quarantined;
      err.kind = failure_kind::quarantined;
      err.message = "poison batch quarantined: it killed its worker on each of its " +
                    std::to_string(b.attempt) + " attempts (last: " + err.describe() + ")";
      err.type = "quarantined";
      err.traceback.clear();
    }
  }
  const item_status status = fallback_status(job.opts.on_error);
  deliver(job, b, ended_whole(job, b, status, std::make_shared<const dispatch_error>(err)));
  erase_batch(b);
  if (status == item_status::failed) stop_job(job, err);
}

// Records why `job` stopped, ends every item not yet ended as `cancelled`, in
// batch order, and takes no more input. Running batches are orphaned: their workers' answers
// will be ignored.
void state::stop_job(job_rec& job, const dispatch_error& cause) {
  if (job.stopped) return;
  job.stopped = true;
  job.error = cause;
  const auto cancelled = std::make_shared<const dispatch_error>(detail::make_failure(
      failure_kind::cancelled,
      "dispatch job " + std::to_string(job.id) + " stopped: " + cause.describe()));
  job.input.flush();
  while (auto formed = job.input.pop()) make_batch(job, std::move(*formed));
  job.queued.clear();
  job.retry_ready.clear();
  std::vector<batch_rec*> pending;
  pending.reserve(job.live.size());
  for (const auto& [seq, b] : job.live) pending.push_back(b);
  for (batch_rec* b : pending) {
    deliver(job, *b, ended_whole(job, *b, item_status::cancelled, cancelled));
    if (b->at == batch_rec::phase::running) {
      --job.running;
      b->job = nullptr;
    } else {
      erase_batch(*b);
    }
  }
}

// Queues output_ready for jobs with news and input_wanted for jobs with more room.
void state::announce() {
  for (auto& [id, job] : jobs) {
    const bool finished_now = !job.finish_announced && all_ended(job);
    if (finished_now) job.finish_announced = true;
    if (job.notify || finished_now) {
      actions.emplace_back(output_ready{id});
      job.notify = false;
    }
    const std::size_t cap = capacity(job);
    if (cap > job.announced) actions.emplace_back(input_wanted{id, cap});
    job.announced = cap;
  }
}

void state::after_call(time_point now) {
  pump(now);
  announce();
  verify();
}

void state::verify() const {
  if (!opts.verify_accounting) return;
  // The books of the whole engine, on every call: for tests and debug builds.
  if (auto r = books(); !r) throw error(r.error());
}

// --- public API ---

dispatch_engine::dispatch_engine(engine_options options)
    : s_(std::make_unique<detail::dispatch_state>(options)) {}
dispatch_engine::~dispatch_engine() = default;
dispatch_engine::dispatch_engine(dispatch_engine&&) noexcept = default;
dispatch_engine& dispatch_engine::operator=(dispatch_engine&&) noexcept = default;

result<job_id> dispatch_engine::open_job(dispatch_options options, time_point now) {
  if (s_->circuit_until && now >= *s_->circuit_until) s_->circuit_until.reset();
  if (s_->circuit_until) {
    return fail(errc::unavailable, "dispatch is paused: " + s_->circuit_error.describe());
  }
  SLITHER_TRY(validate(options));
  SLITHER_TRY_ASSIGN(batcher input, batcher::create(options.batching));
  const job_id id = s_->next_job++;
  s_->jobs.emplace(std::piecewise_construct, std::forward_as_tuple(id),
                   std::forward_as_tuple(id, std::move(options), std::move(input)));
  s_->after_call(now);
  return id;
}

result<void> dispatch_engine::offer(job_id job, Item&& item, time_point now) {
  auto found = taking_items(*s_, job, 1);
  if (!found) return std::move(found).error();
  state::job_rec* j = *found;
  if (auto pushed = j->input.push(std::move(item)); !pushed) return pushed;
  s_->ingested(*j, 1);
  s_->after_call(now);
  return {};
}

result<void> dispatch_engine::offer(job_id job, std::vector<Item>& items, time_point now) {
  auto found = taking_items(*s_, job, items.size());
  if (!found) return std::move(found).error();
  state::job_rec* j = *found;
  std::size_t taken = 0;
  result<void> outcome;
  for (; taken < items.size(); ++taken) {
    if (auto pushed = j->input.push(std::move(items[taken])); !pushed) {
      outcome = std::move(pushed).error();
      break;
    }
  }
  items.erase(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(taken));
  s_->ingested(*j, taken);
  s_->after_call(now);
  return outcome;
}

result<void> dispatch_engine::offer_batch(job_id job, std::vector<Item>&& items, time_point now) {
  auto found = taking_items(*s_, job, items.size());
  if (!found) return std::move(found).error();
  state::job_rec* j = *found;
  const std::size_t n = items.size();
  if (auto pushed = j->input.push_batch(std::move(items)); !pushed) return pushed;
  s_->ingested(*j, n);
  s_->after_call(now);
  return {};
}

result<void> dispatch_engine::offer_batch(job_id job, opaque_batch batch, time_point now) {
  auto* j = s_->find_job(job);
  if (j == nullptr) return no_job(job);
  if (!is_encoded(j->opts)) return wrong_form(job, false);
  const std::size_t max = std::get<preformed_batch>(j->opts.batching).max_items;
  if (batch.count == 0 || batch.count > max) {
    return fail(batch.count == 0 ? errc::invalid_argument : errc::limit_exceeded,
                "an encoded batch of " + std::to_string(batch.count) + " items for dispatch job " +
                    std::to_string(job) + ", whose batches hold 1 to " + std::to_string(max));
  }
  if (auto ok = s_->check_input(*j, batch.count); !ok) return ok;
  const std::size_t n = batch.count;
  s_->make_encoded_batch(*j, std::move(batch));
  s_->ingested(*j, n);
  s_->after_call(now);
  return {};
}

result<void> dispatch_engine::close_input(job_id job, time_point now) {
  auto* j = s_->find_job(job);
  if (j == nullptr) return no_job(job);
  j->input_closed = true;
  s_->after_call(now);
  return {};
}

result<void> dispatch_engine::cancel(job_id job, time_point now) {
  auto* j = s_->find_job(job);
  if (j == nullptr) return no_job(job);
  if (!s_->all_ended(*j)) {
    s_->stop_job(
        *j, detail::make_failure(failure_kind::cancelled, "dispatch job " + std::to_string(job) +
                                                              " was cancelled by its caller"));
  }
  s_->after_call(now);
  return {};
}

void dispatch_engine::close_job(job_id job, time_point now) {
  auto* j = s_->find_job(job);
  if (j == nullptr) return;
  if (!s_->all_ended(*j)) {
    s_->stop_job(
        *j, detail::make_failure(failure_kind::cancelled, "dispatch job " + std::to_string(job) +
                                                              " was closed by its caller"));
  }
  s_->jobs.erase(job);
  s_->after_call(now);
}

std::size_t dispatch_engine::input_capacity(job_id job) const noexcept {
  const auto* j = s_->find_job(job);
  return j == nullptr ? 0 : s_->capacity(*j);
}

std::vector<dispatch_result> dispatch_engine::take_results(job_id job, std::size_t max) {
  using results = std::vector<dispatch_result>;
  results out;
  auto* j = s_->find_job(job);
  if (j == nullptr || is_encoded(j->opts)) return out;
  const std::size_t n = std::min(max, j->output_items);
  if (n > 0 && j->output_front == 0 && std::get<results>(j->output.front()).size() == n) {
    out = std::move(std::get<results>(j->output.front()));  // the common case: one whole batch
    j->output.pop_front();
  } else {
    out.reserve(n);
  }
  while (out.size() < n) {
    auto& front = std::get<results>(j->output.front());
    const std::size_t k = std::min(front.size() - j->output_front, n - out.size());
    const auto first = front.begin() + static_cast<std::ptrdiff_t>(j->output_front);
    out.insert(out.end(), std::make_move_iterator(first),
               std::make_move_iterator(first + static_cast<std::ptrdiff_t>(k)));
    j->output_front += k;
    if (j->output_front == front.size()) {
      j->output.pop_front();
      j->output_front = 0;
    }
  }
  j->output_items -= n;
  j->taken += n;
  s_->announce();
  s_->verify();
  return out;
}

std::vector<batch_output> dispatch_engine::take_batches(job_id job, std::size_t max) {
  std::vector<batch_output> out;
  auto* j = s_->find_job(job);
  if (j == nullptr || !is_encoded(j->opts)) return out;
  while (out.size() < max && !j->output.empty()) {
    out.push_back(std::get<batch_output>(std::move(j->output.front())));
    j->output.pop_front();
    j->output_items -= out.back().count;
    j->taken += out.back().count;
  }
  s_->announce();
  s_->verify();
  return out;
}

result<job_status> dispatch_engine::status(job_id job) const {
  const auto* j = s_->find_job(job);
  if (j == nullptr) return no_job(job);
  job_status st;
  st.state = s_->all_ended(*j) && j->held.empty() && j->output_items == 0 ? job_state::finished
                                                                          : job_state::running;
  st.input_closed = j->input_closed;
  st.error = j->error;
  st.capacity = s_->capacity(*j);
  st.ready = j->output_items;
  return st;
}

std::optional<dispatch_action> dispatch_engine::next_action() {
  if (s_->actions.empty()) return std::nullopt;
  dispatch_action a = std::move(s_->actions.front());
  s_->actions.pop_front();
  return a;
}

bool dispatch_engine::has_actions() const noexcept {
  return !s_->actions.empty();
}

}  // namespace slither
