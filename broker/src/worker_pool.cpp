// The worker pool's sockets and workers: joins, batches out, answers in,
// heartbeats both ways, recycling, and the engine it drives.
#include "worker_pool.hpp"
#include "broker_log.hpp"
#include "job_wire.hpp"

#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <csignal>
#include <iterator>
#include <zmq_addon.hpp>

#include "worker_protocol.hpp"
#include "zmq_frames.hpp"

namespace slither::detail {

namespace asio = boost::asio;
namespace wp = worker_protocol;

namespace {

engine_options engine_options_of(const pool_options& o) {
  engine_options e;
  e.breaker = o.breaker;
  return e;
}

// Joined workers that never say hello within this are dropped.
constexpr std::chrono::seconds hello_timeout{10};
// A retired worker that has not left after this is killed (spawned) or dropped.
constexpr std::chrono::seconds retire_grace{10};

}  // namespace

worker_pool::worker_pool(pool_options options, pool_host host, job_listener& listener)
    : opts_(std::move(options)),
      host_(std::move(host)),
      listener_(listener),
      engine_(engine_options_of(opts_)),
      records_(host_.runtime_dir) {}

worker_pool::~worker_pool() {
  stop();
}

result<void> worker_pool::start() {
  const bool tcp = opts_.endpoint.starts_with("tcp://");
  results_endpoint_ =
      tcp ? opts_.endpoint : "ipc://" + (host_.runtime_dir / (opts_.name + ".results")).string();
  if (!tcp) {
    // The longest socket path this pool will use (a worker's, with a large id).
    const auto longest = (host_.runtime_dir / (opts_.name + ".w18446744073709551615")).string();
    if (longest.size() >= sizeof(sockaddr_un::sun_path)) {
      return fail(errc::invalid_argument,
                  "pool '" + opts_.name + "': its socket paths in '" + host_.runtime_dir.string() +
                      "' would be up to " + std::to_string(longest.size()) + " bytes; at most " +
                      std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                      " fit (use a shorter runtime directory or pool name)");
    }
  }
  try {
    results_ = zmq::socket_t(*host_.zmq, zmq::socket_type::pull);
    results_.set(zmq::sockopt::linger, 0);
    results_.set(zmq::sockopt::maxmsgsize, host_.max_frame_bytes);
    if (tcp) {
      results_.set(zmq::sockopt::curve_server, true);
      results_.set(zmq::sockopt::curve_secretkey, host_.curve_secret_key);
    }
    if (host_.guard) {
      if (auto r = host_.guard(results_); !r) return r;
    }
    if (!tcp) {
      results_file_ = results_endpoint_.substr(6);
      // A dead broker's socket of this pool (the namespace lock is held).
      struct stat st {};
      if (::lstat(results_file_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
          st.st_uid == ::geteuid()) {
        ::unlink(results_file_.c_str());
      }
    }
    results_.bind(results_endpoint_);
    results_endpoint_ = results_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return fail(errc::io_error, "pool '" + opts_.name + "': cannot bind its results socket at '" +
                                    results_endpoint_ + "': " + e.what());
  }
  results_reader_.emplace(*host_.io, results_,
                          [this](zmq::socket_t& socket) { on_results(socket); });
  tick_.emplace(*host_.io);
  engine_timer_.emplace(*host_.io);
  started_ = true;
  // Spawns happen on the serving thread: the parent-death signal is tied to
  // the thread that forks.
  asio::post(*host_.io, [this] {
    if (stopping_) return;
    results_reader_->start();
    for (std::size_t i = 0; i < opts_.size; ++i) {
      auto s = std::make_unique<slot>();
      s->index = i;
      slots_.push_back(std::move(s));
      spawn(*slots_.back());
    }
    arm_tick();
  });
  broker_log().info("pool '{}': {} worker(s), results at {}", opts_.name, opts_.size,
                    results_endpoint_);
  return {};
}

void worker_pool::stop() noexcept {
  if (!started_ || stopping_) return;
  stopping_ = true;
  if (tick_) tick_->cancel();
  if (engine_timer_) engine_timer_->cancel();
  // Every job still here ends: the pool is going away.
  (void)engine_.handle(pool_failed{failure_of(failure_kind::circuit_open,
                                              "pool '" + opts_.name + "' stopped with the broker")},
                       clock::now());
  apply();
  for (auto& [id, w] : workers_) {
    // Closing the socket must not drop the stop on its way out.
    w->tasks.set(zmq::sockopt::linger, 500);
    send_control(*w, wp::message_type::stop, 0);
  }
  stop_children();
  while (!workers_.empty()) drop(workers_.begin()->first, "the broker stopped", true, false);
  if (results_reader_) results_reader_->stop();
  results_.close();
  if (!results_file_.empty()) ::unlink(results_file_.c_str());
  records_.close();
}

std::optional<dispatch_error> worker_pool::failing() const {
  for (const auto& [id, w] : workers_) {
    if (w->hello) return std::nullopt;
  }
  return failing_;
}

std::int64_t worker_pool::pid_of(worker_id id) const {
  const auto it = workers_.find(id);
  return it == workers_.end() ? 0 : it->second->pid;
}

// --- joins ---

result<Value> worker_pool::join(const Map& args) {
  if (stopping_) {
    return fail(errc::shutting_down, "pool '" + opts_.name + "' is stopping");
  }
  const auto int_arg = [&](std::string_view name, std::int64_t fallback) -> result<std::int64_t> {
    const auto it = args.find(name);
    if (it == args.end()) return fallback;
    if (!it->second.is_int() || it->second.as<std::int64_t>() < 0) {
      return fail(errc::invalid_argument,
                  "'worker_join' argument '" + std::string(name) + "' must be an int of 0 or more");
    }
    return it->second.as<std::int64_t>();
  };
  auto pid = int_arg("pid", 0);
  if (!pid) return std::move(pid).error();
  slot* spawned = nullptr;
  if (const auto it = args.find("token"); it != args.end()) {
    if (!it->second.is_string()) {
      return fail(errc::invalid_argument, "'worker_join' argument 'token' must be a string");
    }
    for (auto& s : slots_) {
      if (s->child && s->worker == 0 && s->token == it->second.as<std::string>()) spawned = s.get();
    }
    if (spawned == nullptr) {
      return fail(errc::not_found, "pool '" + opts_.name +
                                       "' spawned no worker with this token that has yet to join");
    }
  }
  auto w = std::make_unique<worker>();
  w->id = next_worker_++;
  w->pid = *pid;
  w->spawned = spawned;
  w->joined = w->last_heard = w->last_sent = clock::now();
  const bool tcp = opts_.endpoint.starts_with("tcp://");
  try {
    w->tasks = zmq::socket_t(*host_.zmq, zmq::socket_type::push);
    w->tasks.set(zmq::sockopt::linger, 0);
    if (tcp) {
      w->tasks.set(zmq::sockopt::curve_server, true);
      w->tasks.set(zmq::sockopt::curve_secretkey, host_.curve_secret_key);
    }
    if (host_.guard) {
      if (auto r = host_.guard(w->tasks); !r) return std::move(r).error();
    }
    if (tcp) {
      // The pool's host, any port: this socket is this worker's alone.
      const auto colon = opts_.endpoint.rfind(':');
      w->endpoint = opts_.endpoint.substr(0, colon) + ":*";
    } else {
      w->socket_file = host_.runtime_dir / (opts_.name + ".w" + std::to_string(w->id));
      ::unlink(w->socket_file.c_str());  // a dead broker's, of the same name
      w->endpoint = "ipc://" + w->socket_file.string();
    }
    w->tasks.bind(w->endpoint);
    w->endpoint = w->tasks.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return fail(errc::io_error, "pool '" + opts_.name + "': cannot bind a tasks socket at '" +
                                    w->endpoint + "': " + e.what());
  }
  if (spawned != nullptr) spawned->worker = w->id;
  List stores;
  for (const auto& s : host_.stores) stores.emplace_back(s);
  Value reply(Map{{"worker", i64(w->id)},
                  {"tasks", w->endpoint},
                  {"results", results_endpoint_},
                  {"heartbeat_ms", static_cast<std::int64_t>(opts_.heartbeat.count())},
                  {"heartbeat_misses", static_cast<std::int64_t>(opts_.heartbeat_misses)},
                  {"local", !tcp},
                  {"ns", host_.ns},
                  {"stores", std::move(stores)},
                  {"pool", opts_.name}});
  broker_log().debug("pool '{}': worker {} (pid {}{}) joined at {}", opts_.name, w->id, w->pid,
                     spawned != nullptr ? ", spawned" : "", w->endpoint);
  workers_.emplace(w->id, std::move(w));
  return reply;
}

// --- sending ---

bool worker_pool::try_send(worker& w, std::vector<zmq::message_t>& frames) {
  try {
    if (!w.tasks.send(frames[0], frames.size() > 1
                                     ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                                     : zmq::send_flags::dontwait)) {
      return false;
    }
    // Once a message's first frame is taken, its other frames are too.
    for (std::size_t i = 1; i < frames.size(); ++i) {
      (void)w.tasks.send(frames[i],
                         i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  } catch (const zmq::error_t& e) {
    broker_log().debug("pool '{}': sending to worker {} failed: {}", opts_.name, w.id, e.what());
    return true;  // dropped: the worker is going away, its batches with it
  }
  w.last_sent = clock::now();
  return true;
}

void worker_pool::send_to(worker& w, std::vector<zmq::message_t>&& frames) {
  if (w.backlog.empty() && try_send(w, frames)) return;
  // Not connected yet (it has only just joined), or at its high-water mark.
  w.backlog.push_back(std::move(frames));
  wait_writable(w);
}

// ZMQ_FD is edge-like: it fires when the socket's state may have changed;
// ZMQ_EVENTS says whether it may be written to now.
void worker_pool::wait_writable(worker& w) {
  if (w.waiting) return;
  if (!w.fd) {
    try {
      w.fd.emplace(*host_.io, w.tasks.get(zmq::sockopt::fd));
    } catch (const std::exception& e) {
      broker_log().warn("pool '{}': cannot wait on worker {}'s socket: {}", opts_.name, w.id,
                        e.what());
      return;
    }
  }
  w.waiting = true;
  const worker_id id = w.id;
  w.fd->async_wait(
      asio::posix::stream_descriptor::wait_read,
      [this, id, alive = std::weak_ptr<char>(w.alive)](const boost::system::error_code& ec) {
        if (ec || alive.expired() || stopping_) return;
        worker& me = *workers_.at(id);
        me.waiting = false;
        while (!me.backlog.empty() && (me.tasks.get(zmq::sockopt::events) & ZMQ_POLLOUT) != 0) {
          if (!try_send(me, me.backlog.front())) break;
          me.backlog.pop_front();
        }
        if (!me.backlog.empty()) wait_writable(me);
      });
}

void worker_pool::send_control(worker& w, wp::message_type type, std::uint32_t count) {
  wp::header h;
  h.type = type;
  h.worker = w.id;
  h.count = count;
  std::vector<zmq::message_t> frames;
  frames.push_back(header_message(wp::encode_header(h)));
  if (w.backlog.empty()) (void)try_send(w, frames);
}

std::shared_ptr<const std::vector<std::byte>> worker_pool::meta_of(
    const std::shared_ptr<const job_target>& target) {
  const auto it = meta_.find(target.get());
  if (it != meta_.end()) return it->second.second;
  auto bytes = std::make_shared<const std::vector<std::byte>>(wp::encode_meta(*target));
  meta_.emplace(target.get(), std::pair(target, bytes));
  return bytes;
}

// --- executor ---

void worker_pool::run(batch_task task) {
  const auto it = workers_.find(task.worker);
  if (it == workers_.end()) return;  // it left; the engine hears of it from worker_left
  worker& w = *it->second;
  if (!task.payload.owner && task.items) {
    // Only encoded jobs reach a pool: the broker opens no other kind.
    (void)engine_.handle(batch_failed{w.id, task.batch, task.attempt,
                                      failure_of(failure_kind::bad_result,
                                                 "a worker pool runs encoded batches, not items")},
                         clock::now());
    (void)engine_.handle(credit_granted{w.id, 1}, clock::now());
    return;
  }
  wp::header h;
  h.type = wp::message_type::batch;
  h.worker = w.id;
  h.job = task.job;
  h.batch = task.batch;
  h.attempt = task.attempt;
  h.count = static_cast<std::uint32_t>(task.count);
  const auto meta = meta_of(task.target);
  std::vector<zmq::message_t> frames;
  frames.push_back(header_message(wp::encode_header(h)));
  frames.push_back(
      share_message(opaque_bytes{std::span<const std::byte>(meta->data(), meta->size()), meta}));
  frames.push_back(share_message(task.payload));
  w.held.emplace_back(task.batch, task.attempt);
  send_to(w, std::move(frames));
}

void worker_pool::kill(worker_id id, const dispatch_error& reason) {
  const auto it = workers_.find(id);
  if (it == workers_.end()) return;
  worker& w = *it->second;
  broker_log().warn("pool '{}': killing worker {} (pid {}): {}", opts_.name, w.id, w.pid,
                    reason.describe());
  if (w.spawned != nullptr && w.spawned->child) {
    w.spawned->child->signal(SIGKILL);
  } else {
    // Not ours to signal: told to end at once (its runtime _exits).
    send_control(w, wp::message_type::stop, 1);
  }
  // The engine has already forgotten it.
  drop(id, "killed: " + reason.message, false, false);
}

void worker_pool::retire(worker_id id) {
  const auto it = workers_.find(id);
  if (it == workers_.end()) return;
  worker& w = *it->second;
  w.retiring = true;
  w.retired_at = clock::now();
  ++recycled_;
  broker_log().debug("pool '{}': retiring worker {} after {} batches", opts_.name, w.id, w.batches);
  send_control(w, wp::message_type::stop, 0);
}

// --- messages from workers ---

void worker_pool::on_results(zmq::socket_t& socket) {
  std::vector<zmq::message_t> parts;
  if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
  const auto frames = frames_of(parts);
  const auto h = wp::decode_message(frames, wp::direction::to_broker);
  if (!h) {
    ++rejected_;
    broker_log().debug("pool '{}': dropped a worker message: {}", opts_.name, h.error().message);
    return;
  }
  const auto it = workers_.find(h->worker);
  if (it == workers_.end()) {
    ++rejected_;  // a worker that left (or never was): nothing to do with it
    return;
  }
  on_worker_message(*it->second, *h, parts);
  apply();
}

void worker_pool::on_worker_message(worker& w, const wp::header& h,
                                    std::vector<zmq::message_t>& parts) {
  const auto frames = frames_of(parts);
  const auto now = clock::now();
  w.last_heard = now;
  switch (h.type) {
    case wp::message_type::hello: {
      if (w.hello) return;
      w.hello = true;
      const bool restart = w.spawned != nullptr && w.spawned->replacement;
      if (w.spawned != nullptr) {
        w.spawned->said_hello = true;
        w.spawned->failures = 0;
        start_failures_ = 0;
        failing_.reset();
      }
      (void)engine_.handle(worker_joined{w.id, std::min<std::uint32_t>(h.count, 1024), restart},
                           now);
      return;
    }
    case wp::message_type::heartbeat:
      w.rss = h.aux;
      check_recycling(w);
      return;
    case wp::message_type::result: {
      // The credit first: the worker is free again before the engine hears
      // the result and places the next batch, so a session's next batch
      // finds its worker with credit (affinity) rather than going elsewhere.
      give_credit(w, h, now);
      auto errors = wp::decode_item_errors(frames[2], h.count);
      if (errors) {
        (void)engine_.handle(batch_encoded{w.id, h.batch, h.attempt, h.count,
                                           to_opaque(std::move(parts[1])), std::move(*errors)},
                             now);
      } else {
        (void)engine_.handle(batch_failed{w.id, h.batch, h.attempt,
                                          failure_of(failure_kind::bad_result,
                                                     "the worker's item errors are malformed: " +
                                                         errors.error().message)},
                             now);
      }
      break;
    }
    case wp::message_type::batch_error: {
      give_credit(w, h, now);
      auto e = wp::decode_error(frames[1]);
      (void)engine_.handle(
          batch_failed{w.id, h.batch, h.attempt,
                       e ? std::move(*e)
                         : failure_of(failure_kind::bad_result,
                                      "the worker's error is malformed: " + e.error().message)},
          now);
      break;
    }
    case wp::message_type::bye:
      drop(w.id, "said goodbye", true);
      return;
    default:
      return;
  }
  ++w.batches;
  check_recycling(w);
}

// An answer frees its batch's slot on the worker; an answer for a batch the
// worker does not hold (a forgery, a bug) frees nothing.
void worker_pool::give_credit(worker& w, const wp::header& h, clock::time_point now) {
  const auto it = std::find(w.held.begin(), w.held.end(), std::pair(h.batch, h.attempt));
  if (it == w.held.end()) return;
  w.held.erase(it);
  (void)engine_.handle(credit_granted{w.id, 1}, now);
}

void worker_pool::check_recycling(worker& w) {
  if (w.retiring || !w.hello) return;
  const bool too_many = opts_.max_batches > 0 && w.batches >= opts_.max_batches;
  const bool too_big = opts_.max_rss_mib > 0 && w.rss > opts_.max_rss_mib * 1024 * 1024;
  if (!too_many && !too_big) return;
  w.retiring = true;  // the engine's retire_worker action follows once it is empty
  broker_log().debug("pool '{}': recycling worker {}: {}", opts_.name, w.id,
                     too_many ? std::to_string(w.batches) + " batches"
                              : std::to_string(w.rss >> 20) + " MiB resident");
  (void)engine_.drain_worker(w.id, clock::now());
}

void worker_pool::drop(worker_id id, const std::string& why, bool expected, bool tell) {
  const auto it = workers_.find(id);
  if (it == workers_.end()) return;
  std::unique_ptr<worker> w = std::move(it->second);
  workers_.erase(it);
  w->alive.reset();
  if (w->fd) {
    boost::system::error_code ec;
    w->fd->cancel(ec);
    (void)w->fd->release();  // the descriptor is ZeroMQ's
  }
  w->tasks.close();
  if (!w->socket_file.empty()) ::unlink(w->socket_file.c_str());
  if (w->spawned != nullptr && w->spawned->worker == id) w->spawned->worker = 0;
  if (tell && w->hello) {
    (void)engine_.handle(worker_left{id, why, expected}, clock::now());
  }
  broker_log().debug("pool '{}': worker {} (pid {}) left: {}", opts_.name, id, w->pid, why);
}

// --- time ---

void worker_pool::arm_tick() {
  if (stopping_) return;
  tick_->expires_after(
      std::max<std::chrono::milliseconds>(opts_.heartbeat / 2, std::chrono::milliseconds(5)));
  tick_->async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    on_tick();
    arm_tick();
  });
}

void worker_pool::on_tick() {
  const auto now = clock::now();
  const auto silence = opts_.heartbeat * opts_.heartbeat_misses;
  std::vector<std::pair<worker_id, std::string>> dead;
  for (auto& [id, w] : workers_) {
    if (!w->hello && now - w->joined > hello_timeout) {
      dead.emplace_back(id, "joined but never said hello");
    } else if (now - w->last_heard > silence) {
      dead.emplace_back(
          id, "silent for " +
                  std::to_string(
                      std::chrono::duration_cast<std::chrono::milliseconds>(now - w->last_heard)
                          .count()) +
                  " ms (missed its heartbeats)");
    } else if (w->retired_at && now - *w->retired_at > retire_grace) {
      dead.emplace_back(id, "retired but did not leave");
    } else if (now - w->last_sent >= opts_.heartbeat) {
      send_control(*w, wp::message_type::heartbeat, 0);
    }
  }
  for (const auto& [id, why] : dead) {
    worker& w = *workers_.at(id);
    broker_log().warn("pool '{}': worker {} (pid {}) {}: replacing it", opts_.name, id, w.pid, why);
    if (w.spawned != nullptr && w.spawned->child) w.spawned->child->signal(SIGKILL);
    drop(id, why, w.retiring);
  }
  for (auto& s : slots_) {
    if (s->child && s->exit_wait == std::nullopt) {
      // No pidfd on this kernel: look for exits on the tick.
      if (const auto status = s->child->try_reap()) on_exit(*s, *status);
    }
  }
  // Encoded meta of jobs that are gone.
  std::erase_if(meta_, [](const auto& kv) { return kv.second.first.use_count() == 1; });
  apply();
}

void worker_pool::arm_engine_timer() {
  const auto next = engine_.next_deadline();
  if (!next || stopping_) return;
  if (engine_timer_at_ && *engine_timer_at_ <= *next) return;
  engine_timer_at_ = *next;
  engine_timer_->expires_at(*next);
  engine_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    engine_timer_at_.reset();
    engine_.tick(clock::now());
    apply();
  });
}

void worker_pool::apply() {
  if (applying_) return;  // the outer call drains what this one would
  applying_ = true;
  while (auto a = engine_.next_action()) {
    if (auto* t = std::get_if<batch_task>(&*a)) {
      run(std::move(*t));
    } else if (auto* k = std::get_if<kill_worker>(&*a)) {
      kill(k->worker, k->reason);
    } else if (auto* r = std::get_if<retire_worker>(&*a)) {
      retire(r->worker);
    } else if (auto* o = std::get_if<output_ready>(&*a)) {
      listener_.on_output(*this, o->job);
    } else if (auto* m = std::get_if<session_moved>(&*a)) {
      listener_.on_moved(*this, *m);
    } else if (auto* c = std::get_if<circuit_opened>(&*a)) {
      if (!stopping_)
        broker_log().error("pool '{}': dispatch paused: {}", opts_.name, c->error.describe());
    }
    // input_wanted: clients count their own window (see dispatch.hpp).
  }
  applying_ = false;
  arm_engine_timer();
}

// --- stats ---

Value worker_pool::stats() const {
  const pool_stats st = engine_.stats();
  List workers;
  for (const auto& ws : st.workers) {
    const auto it = workers_.find(ws.id);
    const worker* w = it == workers_.end() ? nullptr : it->second.get();
    workers.push_back(Value(Map{{"id", i64(ws.id)},
                                {"pid", w != nullptr ? w->pid : 0},
                                {"spawned", w != nullptr && w->spawned != nullptr},
                                {"credits", static_cast<std::int64_t>(ws.credits)},
                                {"in_flight", static_cast<std::int64_t>(ws.in_flight)},
                                {"batches_ok", i64(ws.batches_ok)},
                                {"batches_failed", i64(ws.batches_failed)},
                                {"rss_bytes", i64(w != nullptr ? w->rss : 0)},
                                {"draining", ws.draining}}));
  }
  List jobs;
  std::uint64_t queued = 0;
  for (const auto& js : st.jobs) {
    queued += js.queued_batches;
    jobs.push_back(Value(Map{{"id", i64(js.id)},
                             {"function", js.function},
                             {"in_flight", static_cast<std::int64_t>(js.in_flight)},
                             {"queued_batches", i64(js.queued_batches)},
                             {"reorder_items", i64(js.reorder_items)},
                             {"ready_items", i64(js.ready_items)},
                             {"items_in", i64(js.items_in)},
                             {"ok", i64(js.ok)},
                             {"skipped", i64(js.skipped)},
                             {"routed", i64(js.routed)},
                             {"failed", i64(js.failed)},
                             {"cancelled", i64(js.cancelled)},
                             {"retries", i64(js.retries)}}));
  }
  Map out{{"workers", std::move(workers)},
          {"jobs", std::move(jobs)},
          {"size", i64(opts_.size)},
          {"queued_batches", i64(queued)},
          {"batches_sent", i64(st.batches_sent)},
          {"batches_ok", i64(st.batches_ok)},
          {"batches_failed", i64(st.batches_failed)},
          {"retries", i64(st.retries)},
          {"timeouts", i64(st.timeouts)},
          {"quarantined", i64(st.quarantined)},
          {"worker_deaths", i64(st.worker_deaths)},
          {"restarts", i64(st.restarts)},
          {"recycled", i64(recycled_)},
          {"spawned", i64(spawned_)},
          {"stale_events", i64(st.stale_events)},
          {"rejected_messages", i64(rejected_)},
          {"circuit_open", st.circuit_open}};
  if (const auto f = failing()) out.emplace("failing", f->describe());
  return Value(std::move(out));
}

}  // namespace slither::detail
