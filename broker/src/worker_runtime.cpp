// The worker runtime: join, a receiving thread that also sends heartbeats,
// and the caller's thread running batches. See slither/broker/worker.hpp.
#include <unistd.h>

#include <atomic>
#include <boost/core/demangle.hpp>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>
#include <typeinfo>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "control_channel.hpp"
#include "slither/broker/worker.hpp"
#include "worker_protocol.hpp"
#include "zmq_frames.hpp"

namespace slither {

namespace wp = worker_protocol;
using clock = std::chrono::steady_clock;

namespace {

// Exit status of a worker the broker killed because a batch overran.
constexpr int killed_status = 70;
// Longest a result may wait for the results socket to take it.
constexpr std::chrono::milliseconds send_timeout{10'000};
// How soon the receiving thread reads for a caller that left next(): a stop
// reaches a busy handler's worker within it.
constexpr std::chrono::milliseconds reader_check{50};

// This process's resident set, in bytes (0 if unknown).
std::uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0;
  std::uint64_t resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

result<std::uint32_t> env_number(const char* name, std::uint32_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  std::uint32_t out = 0;
  const std::string_view text(v);
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return fail(errc::invalid_argument,
                std::string(name) + "='" + std::string(text) + "' is not a number");
  }
  return out;
}

std::string env_text(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

result<std::string> reply_text(const Value& reply, std::string_view key) {
  const Value* v = reply.find(key);
  if (v == nullptr || !v->is_string()) {
    return fail(errc::protocol_error,
                "worker_join reply lacks the string '" + std::string(key) + "'");
  }
  return v->as<std::string>();
}

result<std::int64_t> reply_int(const Value& reply, std::string_view key) {
  const Value* v = reply.find(key);
  if (v == nullptr || !v->is_int() || v->as<std::int64_t>() < 0) {
    return fail(errc::protocol_error,
                "worker_join reply lacks the number '" + std::string(key) + "'");
  }
  return v->as<std::int64_t>();
}

}  // namespace

result<worker_options> worker_options::from_environment() {
  worker_options o;
  o.broker.endpoint = env_text("SLITHER_CONTROL_ENDPOINT");
  o.broker.runtime_dir = env_text("SLITHER_RUNTIME_DIR");
  if (auto ns = env_text("SLITHER_NAMESPACE"); !ns.empty()) o.broker.ns = std::move(ns);
  o.pool = env_text("SLITHER_POOL");
  o.token = env_text("SLITHER_WORKER_TOKEN");
  o.broker.curve_server_key = env_text("SLITHER_CURVE_SERVER_KEY");
  o.broker.curve_secret_key = env_text("SLITHER_CURVE_SECRET_KEY");
  auto credits = env_number("SLITHER_WORKER_CREDITS", o.credits);
  if (!credits) return std::move(credits).error();
  o.credits = *credits;
  return o;
}

struct SLITHER_BROKER_NO_EXPORT worker_runtime::impl {
  worker_options options;
  worker_info info;
  std::string tasks_endpoint;
  std::string results_endpoint;
  zmq::context_t context{1};
  zmq::socket_t tasks;    // the receiving thread's
  zmq::socket_t results;  // under send_mu: the caller's results, the thread's heartbeats
  zmq::socket_t wake_in;  // the receiving thread polls it beside `tasks`
  zmq::socket_t wake_out;
  std::mutex send_mu;
  std::thread receiver;

  // Who reads `tasks` (and `wake_in`), under `mu`: the caller's thread while
  // it waits in next(), so that a batch reaches the handler without a
  // hand-off between threads; the receiving thread while the caller is busy
  // with a batch (it looks every `reader_check`); or nobody, and messages
  // wait in the socket. The caller takes a free socket without waking
  // anyone: only one the receiving thread holds costs a hand-over.
  enum class reader_role { none, caller, receiver };
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<worker_batch> queue;  // batches read while the caller was busy
  reader_role reader = reader_role::none;
  bool caller_wants = false;
  clock::time_point rest_until{};  // the receiving thread takes no socket before
  std::optional<std::string> stop_reason;
  bool closed = false;
  bool broker_gone = false;  // nothing will take our last messages: do not linger
  std::atomic<clock::rep> last_heard{clock::now().time_since_epoch().count()};
  std::mutex wake_mu;  // wake_out, written from any thread

  // The last meta frame, decoded: a job's batches share it.
  std::vector<std::byte> last_meta;
  std::shared_ptr<const job_target> last_target;

  result<void> join(const std::string& endpoint) {
    auto control = detail::open_control_socket(context, options.broker, endpoint);
    if (!control) return std::move(control).error();
    Map args{{"pool", options.pool},
             {"pid", static_cast<std::int64_t>(::getpid())},
             {"credits", static_cast<std::int64_t>(options.credits)}};
    if (!options.token.empty()) args.emplace("token", options.token);
    auto reply = detail::control_request(*control, endpoint, protocol::message_type::worker_join, 1,
                                         Value(std::move(args)), options.broker.timeout);
    if (!reply) return std::move(reply).error();
    auto id = reply_int(*reply, "worker");
    auto tasks_ep = reply_text(*reply, "tasks");
    auto results_ep = reply_text(*reply, "results");
    auto heartbeat = reply_int(*reply, "heartbeat_ms");
    auto misses = reply_int(*reply, "heartbeat_misses");
    auto ns = reply_text(*reply, "ns");
    auto pool = reply_text(*reply, "pool");
    for (const auto* r : {&id, &heartbeat, &misses}) {
      if (!*r) return r->error();
    }
    for (const auto* r : {&tasks_ep, &results_ep, &ns, &pool}) {
      if (!*r) return r->error();
    }
    if (*id == 0 || *heartbeat == 0 || *misses == 0) {
      return fail(errc::protocol_error, "worker_join reply with a zero worker id or heartbeat");
    }
    info.id = static_cast<worker_id>(*id);
    info.heartbeat = std::chrono::milliseconds(*heartbeat);
    info.heartbeat_misses = static_cast<std::uint32_t>(*misses);
    info.ns = std::move(*ns);
    info.pool = std::move(*pool);
    if (const Value* local = reply->find("local"); local != nullptr && local->is_bool()) {
      info.local = local->as<bool>();
    }
    if (const Value* stores = reply->find("stores"); stores != nullptr && stores->is_list()) {
      for (const auto& s : stores->as<List>()) {
        if (s.is_string()) info.stores.push_back(s.as<std::string>());
      }
    }
    tasks_endpoint = std::move(*tasks_ep);
    results_endpoint = std::move(*results_ep);
    return {};
  }

  result<void> open_sockets() {
    try {
      // A tcp pool's sockets take the worker's CURVE keys (one server key
      // pair serves all the broker's tcp endpoints); ipc ones need none.
      const bool tcp = tasks_endpoint.starts_with("tcp://");
      tasks = zmq::socket_t(context, zmq::socket_type::pull);
      tasks.set(zmq::sockopt::linger, 0);
      if (tcp) {
        if (auto r = detail::set_curve_client(tasks, options.broker); !r) return r;
      }
      tasks.connect(tasks_endpoint);
      results = zmq::socket_t(context, zmq::socket_type::push);
      // Long enough for the last results and the goodbye to leave to a
      // broker that listens (they take well under a millisecond); not so long
      // that a worker whose broker stopped (and told it to) waits a second
      // at exit for a goodbye nobody will read.
      results.set(zmq::sockopt::linger, 200);
      if (tcp) {
        if (auto r = detail::set_curve_client(results, options.broker); !r) return r;
      }
      results.connect(results_endpoint);
      const std::string wake = "inproc://wake";
      wake_in = zmq::socket_t(context, zmq::socket_type::pair);
      wake_in.bind(wake);
      wake_out = zmq::socket_t(context, zmq::socket_type::pair);
      wake_out.connect(wake);
    } catch (const zmq::error_t& e) {
      return fail(errc::io_error, "worker " + std::to_string(info.id) + ": cannot connect to '" +
                                      tasks_endpoint + "' / '" + results_endpoint +
                                      "': " + e.what());
    }
    return {};
  }

  wp::header head(wp::message_type type) const {
    wp::header h;
    h.type = type;
    h.worker = info.id;
    return h;
  }

  // Sends a whole message on the results socket; false if it could not go
  // out within `send_timeout`. Call with `send_mu` held.
  bool send_locked(std::vector<zmq::message_t>& frames) {
    const auto sent = detail::send_by(results, frames, clock::now() + send_timeout);
    return sent && *sent;
  }

  bool send(std::vector<zmq::message_t>& frames) {
    std::lock_guard lock(send_mu);
    return send_locked(frames);
  }

  bool send_header(const wp::header& h) {
    std::vector<zmq::message_t> frames;
    frames.push_back(detail::header_message(wp::encode_header(h)));
    return send(frames);
  }

  void stop(std::string reason) {
    {
      std::lock_guard lock(mu);
      if (!stop_reason) stop_reason = std::move(reason);
    }
    cv.notify_all();
    wake();  // a caller reading the sockets waits in a poll, not on `cv`
  }

  // A batch message as a worker_batch; nullopt if its meta is malformed.
  std::optional<worker_batch> make_batch(const wp::header& h, std::vector<zmq::message_t>&& parts) {
    const auto meta = std::span<const std::byte>(parts[1].data<std::byte>(), parts[1].size());
    if (!last_target || !std::equal(meta.begin(), meta.end(), last_meta.begin(), last_meta.end())) {
      auto decoded = wp::decode_meta(meta);
      if (!decoded) return std::nullopt;  // a broker of this version never sends one; dropped
      last_target = std::make_shared<const job_target>(
          job_target{std::move(decoded->function), std::move(decoded->context)});
      last_meta.assign(meta.begin(), meta.end());
    }
    worker_batch b;
    b.job_ = h.job;
    b.batch_ = h.batch;
    b.attempt_ = h.attempt;
    b.count_ = h.count;
    b.target_ = last_target;
    auto owner = std::make_shared<std::vector<zmq::message_t>>(std::move(parts));
    b.payload_ = std::span<const std::byte>((*owner)[2].data<std::byte>(), (*owner)[2].size());
    b.frames_ = std::move(owner);
    return b;
  }

  void wake() noexcept {
    std::lock_guard lock(wake_mu);
    try {
      (void)wake_out.send(zmq::str_buffer("x"), zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
    }
  }

  // Waits for `tasks` or `wake_in` (the reader's sockets) up to `wait`;
  // drains `wake_in`. False if the socket failed (the worker then stopped).
  bool poll_reader(std::chrono::milliseconds wait) {
    zmq::pollitem_t items[] = {{tasks.handle(), 0, ZMQ_POLLIN, 0},
                               {wake_in.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      (void)zmq::poll(items, 2, wait);
      if ((items[1].revents & ZMQ_POLLIN) != 0) {
        zmq::message_t m;
        while (wake_in.recv(m, zmq::recv_flags::dontwait)) {
        }
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return true;
      stop(std::string("worker socket failed: ") + e.what());
      return false;
    }
    return true;
  }

  // Reads what is ready on `tasks` (the reader only). The first batch is
  // returned when `take` is set; other batches are queued for next().
  std::optional<worker_batch> read_ready(bool take) {
    std::optional<worker_batch> first;
    for (int n = 0; n < 256; ++n) {
      std::vector<zmq::message_t> parts;
      try {
        if (!zmq::recv_multipart(tasks, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
          break;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        stop(std::string("worker socket failed: ") + e.what());
        break;
      }
      const auto frames = detail::frames_of(parts);
      const auto h = wp::decode_message(frames, wp::direction::to_worker);
      if (!h || h->worker != info.id) continue;  // not for this worker: dropped
      last_heard = clock::now().time_since_epoch().count();
      if (h->type == wp::message_type::batch) {
        auto b = make_batch(*h, std::move(parts));
        if (!b) continue;
        if (take && !first) {
          first = std::move(b);
          continue;
        }
        {
          std::lock_guard lock(mu);
          queue.push_back(std::move(*b));
        }
        cv.notify_all();
      } else if (h->type == wp::message_type::stop) {
        if (h->count == 1) {
          if (options.exit_on_kill) ::_exit(killed_status);
          stop("killed by the broker: a batch on this worker overran its timeout");
        } else {
          stop("stopped by the broker");
        }
        break;
      }
    }
    return first;
  }

  // The receiving thread: sends heartbeats always, watches the broker's
  // silence, and reads for the caller while it is busy with a batch.
  void receive_loop() {
    const auto beat = info.heartbeat;
    const auto silence = beat * info.heartbeat_misses;
    auto next_beat = clock::now() + beat;
    for (;;) {
      const auto now = clock::now();
      const auto heard = clock::time_point(clock::duration(last_heard.load()));
      if (now - heard > silence) {
        {
          std::lock_guard lock(mu);
          broker_gone = true;
        }
        return stop(
            "the broker fell silent for " +
            std::to_string(
                std::chrono::duration_cast<std::chrono::milliseconds>(now - heard).count()) +
            " ms (it died, or cannot reach this worker)");
      }
      if (now >= next_beat) {
        wp::header h = head(wp::message_type::heartbeat);
        h.aux = resident_bytes();
        (void)send_header(h);
        next_beat = now + beat;
      }
      const auto until = std::min(next_beat, heard + silence + std::chrono::milliseconds(1));
      {
        std::unique_lock lock(mu);
        if (closed || stop_reason) return;
        const auto now_locked = clock::now();
        if (reader != reader_role::none || caller_wants || now_locked < rest_until) {
          // The caller reads (or is about to), or has a batch this thread
          // queued for it: look again a little later, and not on each of
          // its batches, which would hand every batch over between threads.
          cv.wait_until(lock, std::min(until, std::max(rest_until, now_locked + reader_check)));
          continue;
        }
        reader = reader_role::receiver;
      }
      const auto wait = std::max<std::chrono::milliseconds>(
          std::chrono::milliseconds(1),
          std::chrono::ceil<std::chrono::milliseconds>(until - clock::now()));
      const bool ok = poll_reader(wait);
      if (ok) (void)read_ready(false);
      {
        std::lock_guard lock(mu);
        reader = reader_role::none;
        // A batch waits for the caller: it takes it, and reads the next
        // itself, unless it is still busy when this thread looks again.
        if (!queue.empty()) rest_until = clock::now() + reader_check;
      }
      cv.notify_all();  // a caller waiting for the socket takes it
      if (!ok) return;
    }
  }

  // The caller's side of next(): takes the sockets (from the receiving
  // thread if it holds them), reads until a batch comes, the deadline
  // passes or the worker stops, and leaves them free.
  std::optional<worker_batch> read_as_caller(std::optional<clock::time_point> deadline) {
    const auto settled = [&] {
      return reader != reader_role::receiver || !queue.empty() || stop_reason || closed;
    };
    std::unique_lock lock(mu);
    if (!settled()) {
      caller_wants = true;
      lock.unlock();
      wake();  // the receiving thread waits in a poll, not on `cv`
      lock.lock();
      if (deadline) {
        cv.wait_until(lock, *deadline, settled);
      } else {
        cv.wait(lock, settled);
      }
      caller_wants = false;
    }
    std::optional<worker_batch> out;
    if (reader == reader_role::none && queue.empty() && !stop_reason && !closed) {
      reader = reader_role::caller;
      lock.unlock();
      // A batch that is already here (a worker with credit to spare often
      // has the next one waiting) is taken without a poll of both sockets,
      // which costs four system calls.
      out = read_ready(true);
      while (!out) {
        {
          std::lock_guard check(mu);
          if (stop_reason || closed) break;
        }
        auto wait = std::chrono::milliseconds(-1);
        if (deadline) {
          wait = std::chrono::ceil<std::chrono::milliseconds>(*deadline - clock::now());
          if (wait.count() <= 0) break;
        }
        if (!poll_reader(wait)) break;
        out = read_ready(true);
      }
      lock.lock();
      reader = reader_role::none;
    }
    if (!out && !queue.empty() && !stop_reason && !closed) {
      out = std::move(queue.front());
      queue.pop_front();
    }
    return out;
  }
};

worker_runtime::worker_runtime(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}
worker_runtime::worker_runtime(worker_runtime&&) noexcept = default;

worker_runtime& worker_runtime::operator=(worker_runtime&& other) noexcept {
  if (this != &other) {
    close();
    p_ = std::move(other.p_);
  }
  return *this;
}

worker_runtime::~worker_runtime() {
  close();
}

result<worker_runtime> worker_runtime::connect(worker_options options) {
  if (options.credits == 0 || options.credits > 1024) {
    return fail(errc::invalid_argument, "worker option 'credits' must be 1 to 1024 (got " +
                                            std::to_string(options.credits) + ")");
  }
  auto p = std::make_unique<impl>();
  p->options = std::move(options);
  const std::string endpoint = detail::control_endpoint_of(p->options.broker);
  if (auto joined = p->join(endpoint); !joined) return std::move(joined).error();
  if (auto opened = p->open_sockets(); !opened) return std::move(opened).error();
  wp::header hello = p->head(wp::message_type::hello);
  hello.count = p->options.credits;
  hello.aux = static_cast<std::uint64_t>(::getpid());
  if (!p->send_header(hello)) {
    return fail(errc::unavailable, "worker " + std::to_string(p->info.id) +
                                       " cannot say hello on '" + p->results_endpoint + "'");
  }
  p->last_heard = clock::now().time_since_epoch().count();
  try {
    p->receiver = std::thread([raw = p.get()] { raw->receive_loop(); });
  } catch (const std::system_error& e) {
    return fail(errc::io_error, std::string("worker: cannot start its thread: ") + e.what());
  }
  return worker_runtime(std::move(p));
}

const worker_info& worker_runtime::info() const noexcept {
  return p_->info;
}

std::optional<worker_batch> worker_runtime::next(std::optional<std::chrono::milliseconds> timeout) {
  {
    std::lock_guard lock(p_->mu);
    if (p_->stop_reason || p_->closed) return std::nullopt;
    if (!p_->queue.empty()) {
      worker_batch b = std::move(p_->queue.front());
      p_->queue.pop_front();
      return b;
    }
  }
  return p_->read_as_caller(timeout ? std::optional(clock::now() + *timeout) : std::nullopt);
}

result<void> worker_runtime::respond(const worker_batch& batch, batch_outcome outcome) {
  if (auto why = stopped()) {
    return fail(errc::unavailable, "worker " + std::to_string(p_->info.id) + " stopped: " + *why);
  }
  wp::header h = p_->head(wp::message_type::result);
  h.job = batch.job();
  h.batch = batch.batch();
  h.attempt = batch.attempt();
  std::vector<zmq::message_t> frames;
  if (auto* r = std::get_if<batch_results>(&outcome)) {
    if (r->errors.size() > r->count) {
      return fail(errc::limit_exceeded, std::to_string(r->errors.size()) +
                                            " item errors for a result of " +
                                            std::to_string(r->count) + " items");
    }
    if (r->count > UINT32_MAX) {
      return fail(errc::limit_exceeded, "a result of " + std::to_string(r->count) + " items");
    }
    h.count = static_cast<std::uint32_t>(r->count);
    frames.push_back(detail::header_message(wp::encode_header(h)));
    frames.push_back(detail::adopt_message(std::move(r->payload)));
    frames.push_back(detail::adopt_message(wp::encode_item_errors(r->errors)));
  } else {
    auto& ex = std::get<batch_exception>(outcome);
    h.type = wp::message_type::batch_error;
    dispatch_error e;
    e.type = std::move(ex.type);
    e.message = std::move(ex.message);
    e.traceback = std::move(ex.traceback);
    frames.push_back(detail::header_message(wp::encode_header(h)));
    frames.push_back(detail::adopt_message(wp::encode_error(e)));
  }
  if (!p_->send(frames)) {
    return fail(errc::unavailable, "worker " + std::to_string(p_->info.id) +
                                       ": the broker takes no results on '" + p_->results_endpoint +
                                       "'");
  }
  return {};
}

std::string worker_runtime::serve(const worker_handler& handler) {
  while (auto b = next()) {
    batch_outcome outcome;
    try {
      outcome = handler(*b);
    } catch (const std::exception& e) {
      outcome = batch_exception{boost::core::demangle(typeid(e).name()), e.what(), {}};
    } catch (...) {
      outcome = batch_exception{"unknown",
                                "the handler threw something that is not a "
                                "std::exception",
                                {}};
    }
    (void)respond(*b, std::move(outcome));
  }
  return stopped().value_or("closed");
}

std::optional<std::string> worker_runtime::stopped() const {
  std::lock_guard lock(p_->mu);
  if (p_->stop_reason) return p_->stop_reason;
  if (p_->closed) return std::string("closed");
  return std::nullopt;
}

void worker_runtime::interrupt() noexcept {
  if (!p_) return;
  p_->stop("interrupted");
  p_->wake();
}

void worker_runtime::close() noexcept {
  if (!p_) return;
  {
    std::lock_guard lock(p_->mu);
    if (p_->closed) return;
    p_->closed = true;
  }
  p_->cv.notify_all();
  {
    std::lock_guard lock(p_->send_mu);
    try {
      std::vector<zmq::message_t> bye;
      bye.push_back(detail::header_message(wp::encode_header(p_->head(wp::message_type::bye))));
      (void)p_->results.send(bye[0], zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
    }
  }
  p_->wake();
  if (p_->receiver.joinable()) p_->receiver.join();
  if (p_->broker_gone) p_->results.set(zmq::sockopt::linger, 0);
  p_->tasks.close();
  p_->wake_in.close();
  p_->wake_out.close();
  p_->results.close();
}

}  // namespace slither
