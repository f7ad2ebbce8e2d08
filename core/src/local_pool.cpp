// local_pool: worker threads as the executor of a dispatch engine, and the
// driver that feeds the engine. One mutex guards the engine, the workers'
// queues and the jobs' wake-ups; handlers and job sources run outside it.
#include "slither/core/local_pool.hpp"

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <typeinfo>
#include <utility>

#include "demangled.hpp"

namespace slither {
namespace detail {
namespace {

dispatch_error failure(failure_kind kind, std::string type, std::string message) {
  dispatch_error e;
  e.kind = kind;
  e.type = std::move(type);
  e.message = std::move(message);
  return e;
}

}  // namespace

struct local_worker {
  worker_id id = 0;
  std::deque<batch_task> queue;
  std::condition_variable wake;
  std::stop_source stop;
  bool dead = false;      // killed or crashed: drop everything, exit
  bool retiring = false;  // drained: exit, cleanly
  bool exited = false;    // the thread is done with the state; join it
  std::thread thread;
};

struct job_slot {
  std::condition_variable cv;
  bool ready = false;
  std::vector<session_moved> moves;
};

struct local_pool_state;

namespace {
// What a worker thread runs. A type of this file only: std::thread's state for
// it then has internal linkage. For a lambda or a member pointer naming
// detail:: types, GCC gives that state (std's template, our arguments) default
// visibility, so a shared library would export it.
struct worker_entry {
  local_pool_state* pool;
  local_worker* me;
  void operator()() const;
};
}  // namespace

struct SLITHER_CORE_NO_EXPORT local_pool_state final : executor {
  explicit local_pool_state(local_pool_options o) : opts(o), engine(o.engine) {}

  local_pool_options opts;
  mutable std::mutex mu;
  dispatch_engine engine;
  std::map<std::string, std::shared_ptr<const batch_handler>> functions;
  std::map<worker_id, std::unique_ptr<local_worker>> live;
  std::vector<std::unique_ptr<local_worker>> dead;  // threads not yet joined
  std::map<job_id, std::shared_ptr<job_slot>> jobs;
  std::thread timer;
  std::condition_variable timer_cv;
  std::optional<dispatch_clock::time_point> timer_at;
  bool closing = false;
  worker_id next_worker = 1;

  static dispatch_clock::time_point now() { return dispatch_clock::now(); }

  // --- executor: called with `mu` held, from apply() ---

  void run(batch_task task) override {
    const auto it = live.find(task.worker);
    if (it == live.end()) return;  // it died; the engine hears of it from worker_left
    it->second->queue.push_back(std::move(task));
    it->second->wake.notify_one();
  }

  void kill(worker_id worker, const dispatch_error&) override {
    if (bury(worker)) spawn(true);
  }

  void retire(worker_id worker) override {
    if (const auto it = live.find(worker); it != live.end()) {
      it->second->retiring = true;
      it->second->wake.notify_one();
    }
  }

  // --- driving the engine (with `mu` held) ---

  /// Applies an event and carries out what follows.
  void handle(executor_event ev) {
    (void)engine.handle(std::move(ev), now());
    apply();
  }

  void apply() {
    while (auto a = engine.next_action()) {
      if (auto* t = std::get_if<batch_task>(&*a)) {
        run(std::move(*t));
      } else if (auto* k = std::get_if<kill_worker>(&*a)) {
        kill(k->worker, k->reason);
      } else if (auto* r = std::get_if<retire_worker>(&*a)) {
        retire(r->worker);
      } else if (auto* o = std::get_if<output_ready>(&*a)) {
        if (const auto it = jobs.find(o->job); it != jobs.end()) {
          it->second->ready = true;
          it->second->cv.notify_all();
        }
      } else if (auto* m = std::get_if<session_moved>(&*a)) {
        if (const auto it = jobs.find(m->job); it != jobs.end()) it->second->moves.push_back(*m);
      }
      // input_wanted: consumers pull on demand. circuit_opened: jobs hear through output_ready.
    }
    const auto next = engine.next_deadline();
    if (next && (!timer_at || *next < *timer_at)) timer_cv.notify_one();
  }

  /// Takes a worker out: it drops its queue and exits when its handler returns.
  bool bury(worker_id worker) {
    const auto it = live.find(worker);
    if (it == live.end()) return false;
    local_worker& w = *it->second;
    w.dead = true;
    w.queue.clear();
    w.stop.request_stop();
    w.wake.notify_one();
    dead.push_back(std::move(it->second));
    live.erase(it);
    return true;
  }

  /// Starts a worker thread and tells the engine at once, so stats and the
  /// next batch see it; the caller carries out the resulting actions.
  void spawn(bool restart) {
    reap();
    if (closing || (restart && !opts.respawn)) return;
    auto w = std::make_unique<local_worker>();
    w->id = next_worker++;
    local_worker* raw = w.get();
    live.emplace(raw->id, std::move(w));
    raw->thread = std::thread(worker_entry{this, raw});
    (void)engine.handle(worker_joined{raw->id, opts.credits, restart}, now());
  }

  /// Joins threads that are done (they no longer touch the state).
  void reap() {
    std::erase_if(dead, [](std::unique_ptr<local_worker>& w) {
      if (!w->exited) return false;
      if (w->thread.joinable()) w->thread.join();
      return true;
    });
  }

  std::shared_ptr<const batch_handler> find_function(const std::string& name) const {
    const auto it = functions.find(name);
    return it == functions.end() ? nullptr : it->second;
  }

  // --- threads ---

  void worker_main(local_worker& me) {
    std::unique_lock lock(mu);
    while (!me.dead) {
      me.wake.wait(lock, [&] { return me.dead || me.retiring || !me.queue.empty(); });
      if (me.dead) break;
      if (me.queue.empty()) {  // retiring, drained
        const worker_id id = me.id;
        bury(id);
        (void)engine.handle(worker_left{id, "recycled", true}, now());
        spawn(true);
        apply();
        break;
      }
      batch_task task = std::move(me.queue.front());
      me.queue.pop_front();
      const auto fn = find_function(task.target->function);
      lock.unlock();
      std::optional<executor_event> answer = run_handler(me, task, fn.get());
      lock.lock();
      if (me.dead) break;  // killed while it ran: the answer is nobody's
      if (!answer) {       // the handler crashed its worker
        const worker_id id = me.id;
        bury(id);
        (void)engine.handle(worker_left{id, "crashed mid-batch", false}, now());
        spawn(true);
        apply();
        break;
      }
      handle(std::move(*answer));
      handle(credit_granted{me.id, 1});
    }
    me.exited = true;
  }

  /// Runs one batch; nullopt if the handler crashed the worker.
  static std::optional<executor_event> run_handler(local_worker& me, const batch_task& task,
                                                   const batch_handler* fn) {
    batch_failed failed{me.id, task.batch, task.attempt, {}};
    if (fn == nullptr) {
      failed.error = failure(failure_kind::exception, "LookupError",
                             "no function '" + task.target->function + "' in this local_pool");
      return failed;
    }
    try {
      const batch_context ctx{task.target->context, me.id, task.batch, task.attempt,
                              me.stop.get_token()};
      std::vector<result<Value>> out = (*fn)(std::span<const Item>(*task.items), ctx);
      batch_completed done{me.id, task.batch, task.attempt, {}};
      done.results.reserve(out.size());
      for (auto& r : out) {
        if (r) {
          done.results.emplace_back(std::move(*r));
        } else {
          done.results.emplace_back(failure(
              failure_kind::item_error, std::string(to_string(r.error().code)), r.error().message));
        }
      }
      return done;
    } catch (const worker_crash&) {
      return std::nullopt;
    } catch (const std::exception& e) {
      failed.error = failure(failure_kind::exception, demangled(typeid(e)), e.what());
    } catch (...) {
      failed.error = failure(failure_kind::exception, "unknown",
                             "the handler threw something that is not a std::exception");
    }
    return failed;
  }

  void timer_main() {
    std::unique_lock lock(mu);
    while (!closing) {
      timer_at = engine.next_deadline();
      if (timer_at) {
        timer_cv.wait_until(lock, *timer_at);
      } else {
        timer_cv.wait(lock);
      }
      if (closing) break;
      const auto due = engine.next_deadline();
      if (due && *due <= now()) {
        engine.tick(now());
        apply();
      }
    }
  }

  void shutdown() noexcept {
    std::vector<std::unique_ptr<local_worker>> threads;
    {
      std::lock_guard lock(mu);
      if (closing) return;
      closing = true;
      dispatch_error e =
          failure(failure_kind::circuit_open, "pool_closed", "the local_pool was destroyed");
      (void)engine.handle(pool_failed{e}, now());
      apply();
      while (!live.empty()) bury(live.begin()->first);
      threads = std::move(dead);
      timer_cv.notify_all();
    }
    for (auto& w : threads) {
      if (w->thread.joinable()) w->thread.join();
    }
    if (timer.joinable()) timer.join();
  }
};

void worker_entry::operator()() const {
  pool->worker_main(*me);
}

}  // namespace detail

// --- local_job ---

local_job::local_job(std::shared_ptr<detail::local_pool_state> s, job_id id,
                     std::function<std::optional<Item>()> source)
    : s_(std::move(s)), id_(id), source_(std::move(source)) {}

local_job::local_job(local_job&&) noexcept = default;

local_job& local_job::operator=(local_job&& other) noexcept {
  if (this != &other) {
    release();
    s_ = std::move(other.s_);
    id_ = other.id_;
    source_ = std::move(other.source_);
    source_done_ = other.source_done_;
    buffer_ = std::move(other.buffer_);
    ended_ = other.ended_;
    error_ = std::move(other.error_);
  }
  return *this;
}

local_job::~local_job() {
  release();
}

void local_job::release() noexcept {
  // The job may hold the last reference to a closed pool's state: let it go
  // only after the state's mutex is unlocked.
  const auto s = std::move(s_);
  if (!s) return;
  std::lock_guard lock(s->mu);
  s->engine.close_job(id_, detail::local_pool_state::now());
  s->jobs.erase(id_);
  s->apply();
}

// Reads as much input as the job has room for, outside the lock, and offers it.
void local_job::feed(std::unique_lock<std::mutex>& lock) {
  const std::size_t room = s_->engine.input_capacity(id_);
  if (source_done_ || room == 0) return;
  lock.unlock();
  std::vector<Item> items;
  items.reserve(std::min<std::size_t>(room, 4096));
  std::optional<error_info> bad;
  try {
    while (items.size() < room) {
      auto item = source_();
      if (!item) {
        source_done_ = true;
        break;
      }
      items.push_back(std::move(*item));
    }
  } catch (const std::exception& e) {
    bad = fail(errc::invalid_argument, std::string("the job's input source threw: ") + e.what());
  } catch (...) {
    bad = fail(errc::invalid_argument, "the job's input source threw a non-std exception");
  }
  lock.lock();
  const auto t = detail::local_pool_state::now();
  if (s_->engine.status(id_).value().error) {
    // Cancelled (or its pool closed) while we read: what we read goes nowhere.
    source_done_ = true;
    return;
  }
  if (!items.empty() && !bad) {
    if (auto r = s_->engine.offer(id_, items, t); !r) {
      bad = r.error();
      bad->message +=
          "; " + std::to_string(items.size() - 1) + " items read after it were not dispatched";
    }
  }
  if (bad) {
    source_done_ = true;
    (void)s_->engine.cancel(id_, t);
    s_->apply();
    throw slither::error(*bad);
  }
  if (source_done_) (void)s_->engine.close_input(id_, t);
  s_->apply();
}

std::optional<dispatch_result> local_job::next() {
  for (;;) {
    if (!buffer_.empty()) {
      dispatch_result r = std::move(buffer_.front());
      buffer_.pop_front();
      return r;
    }
    if (ended_ || !s_) return std::nullopt;
    std::unique_lock lock(s_->mu);
    const auto slot = s_->jobs.at(id_);
    feed(lock);
    slot->ready = false;
    auto taken = s_->engine.take_results(id_);
    s_->apply();
    if (!taken.empty()) {
      for (auto& r : taken) buffer_.push_back(std::move(r));
      continue;
    }
    const job_status st = s_->engine.status(id_).value();
    if (st.state == job_state::finished) {
      ended_ = true;
      error_ = st.error;
      continue;
    }
    if (st.capacity > 0 && !source_done_) continue;
    slot->cv.wait(lock, [&] { return slot->ready; });
  }
}

std::vector<session_moved> local_job::moves() const {
  if (!s_) return {};
  std::lock_guard lock(s_->mu);
  const auto it = s_->jobs.find(id_);
  return it == s_->jobs.end() ? std::vector<session_moved>{} : it->second->moves;
}

void local_job::cancel() {
  if (!s_) return;
  std::lock_guard lock(s_->mu);
  (void)s_->engine.cancel(id_, detail::local_pool_state::now());
  s_->apply();
}

// --- local_pool ---

local_pool::local_pool(std::shared_ptr<detail::local_pool_state> s) : s_(std::move(s)) {}
local_pool::local_pool(local_pool&&) noexcept = default;

local_pool& local_pool::operator=(local_pool&& other) noexcept {
  if (this != &other) {
    close();
    s_ = std::move(other.s_);
  }
  return *this;
}

local_pool::~local_pool() {
  close();
}

void local_pool::close() noexcept {
  if (s_) s_->shutdown();
}

result<local_pool> local_pool::create(local_pool_options options) {
  if (options.workers == 0) {
    return fail(errc::invalid_argument, "local_pool option 'workers' must be at least 1 (got 0)");
  }
  if (options.credits == 0) {
    return fail(errc::invalid_argument, "local_pool option 'credits' must be at least 1 (got 0)");
  }
  auto s = std::make_shared<detail::local_pool_state>(options);
  local_pool pool(s);
  try {
    std::lock_guard lock(s->mu);
    for (std::size_t i = 0; i < options.workers; ++i) s->spawn(false);
    s->apply();
    s->timer = std::thread([raw = s.get()] { raw->timer_main(); });
  } catch (const std::system_error& e) {
    return fail(errc::io_error, std::string("local_pool: cannot start a thread: ") + e.what());
  }
  return pool;
}

void local_pool::add_function(std::string name, batch_handler handler) {
  std::lock_guard lock(s_->mu);
  s_->functions[std::move(name)] = std::make_shared<const batch_handler>(std::move(handler));
}

result<local_job> local_pool::stream(dispatch_options options,
                                     std::function<std::optional<Item>()> source) {
  if (const auto* p = std::get_if<preformed_batch>(&options.batching); p != nullptr && p->encoded) {
    return fail(errc::invalid_argument,
                "local_pool runs C++ handlers over items; an encoded job needs an executor that "
                "forwards its bytes (a broker's worker pool)");
  }
  std::lock_guard lock(s_->mu);
  if (!s_->find_function(options.function)) {
    return fail(errc::not_found, "no function '" + options.function + "' in this local_pool");
  }
  auto id = s_->engine.open_job(std::move(options), detail::local_pool_state::now());
  if (!id) return std::move(id).error();
  s_->jobs.emplace(*id, std::make_shared<detail::job_slot>());
  s_->apply();
  return local_job(s_, *id, std::move(source));
}

result<dispatch_report> local_pool::run(dispatch_options options, std::vector<Item> items) {
  std::size_t next = 0;
  auto job = stream(std::move(options), [&]() -> std::optional<Item> {
    if (next == items.size()) return std::nullopt;
    return std::move(items[next++]);
  });
  if (!job) return std::move(job).error();
  dispatch_report report;
  try {
    while (auto r = job->next()) report.results.push_back(std::move(*r));
  } catch (const error& e) {
    return fail(e.code(), e.what());
  }
  report.error = job->error();
  report.moves = job->moves();
  return report;
}

std::vector<worker_id> local_pool::workers() const {
  std::lock_guard lock(s_->mu);
  std::vector<worker_id> out;
  for (const auto& [id, w] : s_->live) out.push_back(id);
  return out;
}

bool local_pool::kill_worker(worker_id worker) {
  std::lock_guard lock(s_->mu);
  if (!s_->bury(worker)) return false;
  (void)s_->engine.handle(worker_left{worker, "killed", false}, detail::local_pool_state::now());
  s_->spawn(true);
  s_->apply();
  return true;
}

bool local_pool::recycle_worker(worker_id worker) {
  std::lock_guard lock(s_->mu);
  auto r = s_->engine.drain_worker(worker, detail::local_pool_state::now());
  s_->apply();
  return r.has_value();
}

pool_stats local_pool::stats() const {
  std::lock_guard lock(s_->mu);
  return s_->engine.stats();
}

}  // namespace slither
