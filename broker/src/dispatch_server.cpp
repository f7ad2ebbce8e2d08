#include "dispatch_server.hpp"

#include "broker_log.hpp"
#include "job_wire.hpp"
#include "zmq_frames.hpp"

namespace slither::detail {

namespace wire = job_wire;
using protocol::message_type;

namespace {

// How often jobs are checked for clients that stopped reading.
constexpr std::chrono::seconds idle_check{1};

result<std::uint64_t> count_arg(const Map& args, std::string_view name, message_type type,
                                bool required) {
  const auto it = args.find(name);
  if (it == args.end() && !required) return std::uint64_t{0};
  if (it == args.end() || !it->second.is_int() || it->second.as<std::int64_t>() < 0) {
    return fail(errc::invalid_argument, "'" + std::string(protocol::to_string(type)) +
                                            "' needs an int argument '" + std::string(name) +
                                            "' of 0 or more");
  }
  return static_cast<std::uint64_t>(it->second.as<std::int64_t>());
}

result<void> check_pool(const pool_options& p) {
  const auto bad = [&](const std::string& what) {
    return fail(errc::invalid_argument, "pool '" + p.name + "': " + what);
  };
  if (p.name.empty() || p.name.size() > 64 ||
      p.name.find_first_not_of(
          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
          std::string::npos) {
    return fail(errc::invalid_argument,
                "pool name '" + p.name + "' must be 1-64 characters of [A-Za-z0-9_-]");
  }
  if (p.size > 1024) return bad("size " + std::to_string(p.size) + " is over 1024");
  if (p.credits == 0 || p.credits > 1024) return bad("credits must be 1 to 1024");
  if (p.heartbeat.count() <= 0 || p.heartbeat > std::chrono::hours(1)) {
    return bad("heartbeat_ms must be 1 ms to 1 hour");
  }
  if (p.heartbeat_misses == 0 || p.heartbeat_misses > 1000) {
    return bad("heartbeat_misses must be 1 to 1000");
  }
  if (p.max_start_failures == 0) return bad("max_start_failures must be at least 1");
  if (p.restart_backoff.initial.count() < 0 || p.restart_backoff.max < p.restart_backoff.initial ||
      p.restart_backoff.multiplier < 1) {
    return bad("restart backoff must have 0 <= initial <= max and a multiplier of at least 1");
  }
  if (!p.endpoint.empty() && !p.endpoint.starts_with("tcp://")) {
    return bad("endpoint '" + p.endpoint + "' must be empty (ipc) or tcp://<host>:<port>");
  }
  if (!p.command.empty() && p.command[0].empty()) return bad("command has an empty program");
  return {};
}

}  // namespace

bool is_dispatch_request(message_type type) noexcept {
  return type >= message_type::worker_join && type <= message_type::dispatch_close;
}

dispatch_server::dispatch_server(std::vector<pool_options> pools, pool_host host,
                                 zmq::socket_t& router, std::function<void()> kick,
                                 std::function<void()> catch_up)
    : pool_options_(std::move(pools)),
      host_(std::move(host)),
      router_(router),
      kick_(std::move(kick)),
      catch_up_(std::move(catch_up)) {}

dispatch_server::~dispatch_server() {
  stop();
}

result<void> dispatch_server::start() {
  for (const auto& p : pool_options_) {
    if (auto r = check_pool(p); !r) return r;
    if (pools_.contains(p.name)) {
      return fail(errc::invalid_argument, "pool '" + p.name + "' is declared twice");
    }
    if (p.size > 0 && !host_.join_endpoint.starts_with("ipc://")) {
      return fail(errc::invalid_argument,
                  "pool '" + p.name + "' spawns " + std::to_string(p.size) +
                      " workers, which join through the broker's ipc control socket, but the "
                      "control endpoint is '" +
                      host_.join_endpoint +
                      "': give the pool size 0 and start its workers with CURVE keys");
    }
    auto pool = std::make_unique<worker_pool>(p, host_, *this);
    if (auto r = pool->start(); !r) return r;
    pools_.emplace(p.name, std::move(pool));
  }
  idle_timer_.emplace(*host_.io);
  check_idle();
  return {};
}

void dispatch_server::stop() noexcept {
  if (stopping_) return;
  stopping_ = true;
  if (idle_timer_) idle_timer_->cancel();
  const auto why = failure_of(failure_kind::cancelled, "the broker is stopping");
  while (!jobs_.empty()) {
    job& j = jobs_.begin()->second;
    end(j, why);
    forget(j);
  }
  for (auto& [name, pool] : pools_) pool->stop();
}

worker_pool* dispatch_server::pool(std::string_view name) {
  const auto it = pools_.find(name);
  return it == pools_.end() ? nullptr : it->second.get();
}

result<worker_pool*> dispatch_server::resolve(const Map& args, std::string_view request) {
  std::string name;
  if (const auto it = args.find("pool"); it != args.end()) {
    if (!it->second.is_string()) {
      return fail(errc::invalid_argument,
                  "'" + std::string(request) + "' argument 'pool' must be a string");
    }
    name = it->second.as<std::string>();
  }
  std::string known;
  for (const auto& [n, p] : pools_) known += (known.empty() ? "" : ", ") + n;
  if (name.empty()) {
    if (pools_.size() == 1) return pools_.begin()->second.get();
    return fail(pools_.empty() ? errc::not_found : errc::invalid_argument,
                pools_.empty() ? "this broker has no worker pools (declare [[pools]])"
                               : "name a pool: this broker has " + known);
  }
  if (auto* p = pool(name)) return p;
  return fail(errc::not_found, "no pool '" + name.substr(0, 64) +
                                   "' (pools: " + (known.empty() ? "none" : known) + ")");
}

std::optional<result<Value>> dispatch_server::handle(const std::string& identity, int fd,
                                                     std::uint64_t id, message_type type,
                                                     const Map& args, zmq::message_t* batch) {
  if (stopping_) {
    return result<Value>(fail(errc::shutting_down, "the broker is stopping"));
  }
  switch (type) {
    case message_type::worker_join: {
      auto p = resolve(args, "worker_join");
      if (!p) return result<Value>(std::move(p).error());
      return (*p)->join(args);
    }
    case message_type::dispatch_open:
      return open(identity, fd, args);
    case message_type::dispatch_close: {
      // Idempotent: a job that already ended is simply gone.
      if (auto j = find(identity, args, type); j) {
        (*j)->pool->engine().close_job((*j)->engine_job, clock::now());
        worker_pool* pool = (*j)->pool;
        forget(**j);
        pool->apply();
      }
      return result<Value>(Value());
    }
    default:
      break;
  }
  auto j = find(identity, args, type);
  if (!j) return result<Value>(std::move(j).error());
  job& job = **j;
  job.last_heard = clock::now();
  auto ack = count_arg(args, type == message_type::dispatch_ack ? "batches" : "ack", type, false);
  if (!ack) return result<Value>(std::move(ack).error());
  job.unacked -= std::min(job.unacked, *ack);
  dispatch_engine& engine = job.pool->engine();
  worker_pool* pool = job.pool;
  const std::uint64_t job_id = job.id;
  std::optional<result<Value>> reply;
  switch (type) {
    case message_type::dispatch_submit:
      reply = submit(job, id, args, batch);
      break;
    case message_type::dispatch_input_end:
      (void)engine.close_input(job.engine_job, clock::now());
      break;
    case message_type::dispatch_cancel:
      (void)engine.cancel(job.engine_job, clock::now());
      break;
    default:
      break;
  }
  pool->apply();
  if (const auto it = jobs_.find(job_id); it != jobs_.end()) pump(it->second);
  return reply;
}

result<Value> dispatch_server::open(const std::string& identity, int fd, const Map& args) {
  auto req = wire::read_open(args);
  if (!req) return std::move(req).error();
  Map named{{"pool", req->pool}};
  auto p = resolve(named, "dispatch_open");
  if (!p) return std::move(p).error();
  worker_pool& pool = **p;
  if (auto f = pool.failing()) return fail(errc::unavailable, f->describe());
  // Connection events not yet taken in may close an earlier job on a reused
  // descriptor: take them in before a new job claims it.
  if (catch_up_) catch_up_();
  const std::size_t window = job_window(req->options);
  auto engine_job = pool.engine().open_job(std::move(req->options), clock::now());
  if (!engine_job) return std::move(engine_job).error();
  job j;
  j.id = next_job_++;
  j.pool = &pool;
  j.engine_job = *engine_job;
  j.identity = identity;
  j.fd = fd;
  j.last_heard = clock::now();
  j.idle_timeout = req->idle_timeout;
  by_engine_.emplace(std::pair<const worker_pool*, job_id>(&pool, j.engine_job), j.id);
  const auto id = j.id;
  jobs_.emplace(id, std::move(j));
  pool.apply();
  return Value(Map{{"job", i64(id)}, {"window", i64(window)}, {"pool", pool.options().name}});
}

result<dispatch_server::job*> dispatch_server::find(const std::string& identity, const Map& args,
                                                    message_type type) {
  auto id = count_arg(args, "job", type, true);
  if (!id) return std::move(id).error();
  const auto it = jobs_.find(*id);
  if (it == jobs_.end()) {
    return fail(errc::not_found,
                "no dispatch job " + std::to_string(*id) + " (it ended, or was never opened)");
  }
  if (it->second.identity != identity) {
    return fail(errc::invalid_argument,
                "dispatch job " + std::to_string(*id) + " belongs to another connection");
  }
  return &it->second;
}

std::optional<result<Value>> dispatch_server::submit(job& j, std::uint64_t seq, const Map& args,
                                                     zmq::message_t* batch) {
  auto count = count_arg(args, "count", message_type::dispatch_submit, true);
  if (!count) return result<Value>(std::move(count).error());
  if (batch == nullptr) {
    return result<Value>(
        fail(errc::protocol_error, "'dispatch_submit' has 3 frames: header, arguments, batch"));
  }
  auto offered = j.pool->engine().offer_batch(
      j.engine_job, opaque_batch{*count, to_opaque(std::move(*batch))}, clock::now());
  if (!offered) return result<Value>(std::move(offered).error());
  if (seq != j.accepted) j.seqs.emplace(j.accepted, seq);
  ++j.accepted;
  return std::nullopt;
}

void dispatch_server::on_output(worker_pool& pool, job_id job) {
  const auto it = by_engine_.find({&pool, job});
  if (it == by_engine_.end()) return;
  if (const auto j = jobs_.find(it->second); j != jobs_.end()) pump(j->second);
}

void dispatch_server::on_moved(worker_pool& pool, const session_moved& moved) {
  const auto it = by_engine_.find({&pool, moved.job});
  if (it == by_engine_.end()) return;
  const auto j = jobs_.find(it->second);
  if (j == jobs_.end()) return;
  session_moved m = moved;
  m.job = j->second.id;
  std::vector<zmq::message_t> frames;
  frames.push_back(header_message(
      protocol::encode_header({protocol::protocol_version, message_type::dispatch_moved, m.job})));
  frames.push_back(adopt_message(encode(wire::moved_value(m))));
  send(j->second.identity, frames);
}

// Sends the job's output as far as its client's acks allow; ends it when done.
void dispatch_server::pump(job& j) {
  dispatch_engine& engine = j.pool->engine();
  while (j.unacked < wire::max_unacked) {
    auto out = engine.take_batches(j.engine_job, 1);
    if (out.empty()) break;
    batch_output& b = out.front();
    if (const auto s = j.seqs.find(b.seq); s != j.seqs.end()) {
      b.seq = s->second;
      j.seqs.erase(s);
    }
    std::vector<zmq::message_t> frames;
    frames.push_back(header_message(
        protocol::encode_header({protocol::protocol_version, message_type::dispatch_batch, j.id})));
    frames.push_back(adopt_message(wire::encode_status(b)));
    frames.push_back(share_message(b.payload));
    send(j.identity, frames);
    ++j.unacked;
  }
  const auto st = engine.status(j.engine_job);
  if (st && st->state == job_state::finished) {
    end(j, st->error);
    engine.close_job(j.engine_job, clock::now());
    forget(j);
  }
}

void dispatch_server::end(job& j, const std::optional<dispatch_error>& error) {
  std::vector<zmq::message_t> frames;
  frames.push_back(header_message(
      protocol::encode_header({protocol::protocol_version, message_type::dispatch_end, j.id})));
  frames.push_back(adopt_message(encode(wire::end_value(error))));
  send(j.identity, frames);
}

void dispatch_server::forget(job& j) {
  by_engine_.erase({j.pool, j.engine_job});
  jobs_.erase(j.id);
}

void dispatch_server::send(const std::string& identity, std::vector<zmq::message_t>& frames) {
  // ROUTER drops what a peer's queue cannot hold; a job never has more than
  // `max_unacked` result batches in it, well under the queue's limit.
  try {
    (void)router_.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    for (std::size_t i = 0; i < frames.size(); ++i) {
      (void)router_.send(frames[i], i + 1 < frames.size()
                                        ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                                        : zmq::send_flags::dontwait);
    }
  } catch (const zmq::error_t& e) {
    broker_log().debug("a dispatch message to a client was dropped: {}", e.what());
  }
  if (kick_) kick_();
}

void dispatch_server::on_connection_closed(int fd) {
  if (fd < 0) return;
  std::vector<std::uint64_t> gone;
  for (const auto& [id, j] : jobs_) {
    if (j.fd == fd) gone.push_back(id);
  }
  for (const auto id : gone) {
    job& j = jobs_.at(id);
    broker_log().info("dispatch job {}: its client's connection closed; cancelling it", id);
    worker_pool* pool = j.pool;
    pool->engine().close_job(j.engine_job, clock::now());
    forget(j);
    pool->apply();
  }
}

void dispatch_server::check_idle() {
  const auto now = clock::now();
  std::vector<std::uint64_t> idle;
  for (const auto& [id, j] : jobs_) {
    if (j.idle_timeout.count() == 0 || now - j.last_heard <= j.idle_timeout) continue;
    // Silent, with results it has not read: sent and not acked, or waiting.
    const auto st = j.pool->engine().status(j.engine_job);
    if (j.unacked > 0 || (st && st->ready > 0)) idle.push_back(id);
  }
  for (const auto id : idle) {
    job& j = jobs_.at(id);
    broker_log().warn("dispatch job {}: its client read nothing for {} ms; cancelling it", id,
                      j.idle_timeout.count());
    end(j, failure_of(failure_kind::cancelled, "the client read no results for " +
                                                   std::to_string(j.idle_timeout.count()) + " ms"));
    worker_pool* pool = j.pool;
    pool->engine().close_job(j.engine_job, now);
    forget(j);
    pool->apply();
  }
  if (stopping_) return;
  idle_timer_->expires_after(idle_check);
  idle_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopping_) check_idle();
  });
}

Value dispatch_server::stats() const {
  Map pools;
  for (const auto& [name, pool] : pools_) pools.emplace(name, pool->stats());
  return Value(Map{{"pools", std::move(pools)}, {"jobs", i64(jobs_.size())}});
}

}  // namespace slither::detail
