#include "slither/broker/broker.hpp"

#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <csignal>
#include <exception>
#include <future>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "runtime_dir.hpp"
#include "slither/broker/client.hpp"
#include "slither/broker/protocol.hpp"
#include "slither/core/telemetry.hpp"
#include "write_queue.hpp"

namespace slither {
namespace {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;
using protocol::message_type;

/// Views running or queued at once; past it `call_view` gets `busy`.
constexpr std::size_t max_views_in_flight = 256;
/// Threads that run views.
constexpr std::size_t view_threads = 2;
/// Messages read per turn of the event loop before timers and replies get a turn.
constexpr int drain_budget = 64;
/// How long closing the control socket waits to deliver the last replies.
constexpr int close_linger_ms = 500;
/// Frame-size headroom over `decode_limits::max_message_bytes` at the transport:
/// a payload a little over the limit still gets a `limit_exceeded` reply, a
/// much larger frame makes ZeroMQ drop the connection before buffering it.
constexpr std::int64_t frame_headroom = 4096;

bool valid_name(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (const char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::int64_t micros_since(clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - t0).count();
}

// Runs `body`, emitting "<event>.start" and "<event>.stop" (with duration_us
// and ok) around it when a telemetry handler is attached; `meta` builds the
// events' metadata only then, so an unobserved write pays one atomic load.
template <class Meta, class Body>
auto with_telemetry(std::string_view event, Meta&& meta, Body&& body) {
  if (!telemetry::enabled()) return body();
  const Map tags = meta();
  const std::string name(event);
  telemetry::emit(name + ".start", {}, tags);
  const auto t0 = clock::now();
  auto r = body();
  telemetry::emit(name + ".stop", {{"duration_us", micros_since(t0)}, {"ok", r.has_value()}}, tags);
  return r;
}

// Runs user or store code so that an exception becomes an error reply, not a dead thread.
template <class F>
result<Value> guarded(F&& f) {
  try {
    return f();
  } catch (const slither::error& e) {
    return fail(e.code(), e.what());
  } catch (const std::exception& e) {
    return fail(errc::internal, std::string("exception: ") + e.what());
  } catch (...) {
    return fail(errc::internal, "unknown exception");
  }
}

error_info bad_arg(message_type type, std::string_view name, std::string_view wanted,
                   const Value* got) {
  return fail(errc::invalid_argument,
              "'" + std::string(protocol::to_string(type)) + "' needs " + std::string(wanted) +
                  " argument '" + std::string(name) + "'" +
                  (got ? ", got " + std::string(to_string(got->type())) : ", it is missing"));
}

// Moves argument `name` out of a request's map, checking its kind.
result<Value> take(Map& args, message_type type, std::string_view name,
                   std::optional<Value::kind> kind, std::string_view wanted) {
  const auto it = args.find(name);
  if (it == args.end()) return bad_arg(type, name, wanted, nullptr);
  if (kind && it->second.type() != *kind) return bad_arg(type, name, wanted, &it->second);
  return std::move(it->second);
}

result<std::string> take_text(Map& args, message_type type, std::string_view name) {
  auto v = take(args, type, name, Value::kind::string, "a string");
  if (!v) return std::move(v).error();
  return std::move(v->as_mut<std::string>());
}

// A store write, prepared on the serving thread and applied through the write
// queue (on the writer thread, or inline when the writer is idle).
using write_op = std::function<result<Value>(shm::writer&)>;

result<write_op> prepare_write(message_type type, Map& args, std::string& table) {
  auto t = take_text(args, type, "table");
  if (!t) return std::move(t).error();
  table = *t;
  switch (type) {
    case message_type::put: {
      auto key = take_text(args, type, "key");
      if (!key) return std::move(key).error();
      auto value = take(args, type, "value", std::nullopt, "a");
      if (!value) return std::move(value).error();
      return write_op([table, key = std::move(*key),
                       value = std::move(*value)](shm::writer& w) -> result<Value> {
        auto v = w.put(table, key, value);
        if (!v) return std::move(v).error();
        return Value(static_cast<std::int64_t>(*v));
      });
    }
    case message_type::put_many: {
      auto list = take(args, type, "entries", Value::kind::list, "a list");
      if (!list) return std::move(list).error();
      std::vector<std::pair<std::string, Value>> entries;
      entries.reserve(list->size());
      auto& items = list->as_mut<List>();
      for (std::size_t i = 0; i < items.size(); ++i) {
        auto& e = items[i];
        if (!e.is_list() || e.size() != 2 || !e[0].is_string()) {
          return fail(errc::invalid_argument, "'put_many' entry " + std::to_string(i) +
                                                  " is not a [key (string), value] pair");
        }
        entries.emplace_back(std::move(e[0].as_mut<std::string>()), std::move(e[1]));
      }
      return write_op([table, entries = std::move(entries)](shm::writer& w) -> result<Value> {
        auto r = w.put_many(table, entries);
        if (!r) return std::move(r).error();
        return Value{};
      });
    }
    case message_type::erase: {
      auto key = take_text(args, type, "key");
      if (!key) return std::move(key).error();
      return write_op([table, key = std::move(*key)](shm::writer& w) -> result<Value> {
        auto r = w.erase(table, key);
        if (!r) return std::move(r).error();
        return Value(*r);
      });
    }
    case message_type::compare_and_set: {
      auto key = take_text(args, type, "key");
      if (!key) return std::move(key).error();
      auto expected = take(args, type, "expected_version", Value::kind::int64, "an int");
      if (!expected) return std::move(expected).error();
      if (expected->as<std::int64_t>() < 0) {
        return fail(errc::invalid_argument,
                    "'compare_and_set' expected_version " + expected->to_string() + " is negative");
      }
      auto value = take(args, type, "value", std::nullopt, "a");
      if (!value) return std::move(value).error();
      const auto version = static_cast<std::uint64_t>(expected->as<std::int64_t>());
      return write_op([table, key = std::move(*key), version,
                       value = std::move(*value)](shm::writer& w) -> result<Value> {
        auto v = w.compare_and_set(table, key, version, value);
        if (!v) return std::move(v).error();
        return Value(static_cast<std::int64_t>(*v));
      });
    }
    case message_type::clear:
      return write_op([table](shm::writer& w) -> result<Value> {
        auto r = w.clear(table);
        if (!r) return std::move(r).error();
        return Value{};
      });
    default:
      return fail(errc::internal,
                  "'" + std::string(protocol::to_string(type)) + "' is not a store write");
  }
}

}  // namespace

// Everything that exists only while the broker runs, torn down by `shutdown`.
struct serving_state {
  explicit serving_state(std::size_t queue_limit) : queue(queue_limit) {}

  std::optional<detail::namespace_lock> lock;
  std::map<std::string, shm::writer, std::less<>> stores;
  clock::time_point started = clock::now();

  // Serving thread. The io_context runs signals, timers, replies posted by
  // other threads, and readiness of the ROUTER socket: ZeroMQ exposes a file
  // descriptor (ZMQ_FD) that becomes readable when the socket's state may
  // have changed, so the socket is served by the same loop as everything
  // else, without a polling tick. ZMQ_FD is edge-like: after it fires, and
  // after every send, ZMQ_EVENTS must be read and all ready messages
  // received, or a wake-up is lost (see `drain`).
  asio::io_context io;
  zmq::context_t zmq_context{1};
  zmq::socket_t router;
  std::optional<asio::posix::stream_descriptor> router_fd;
  std::optional<asio::signal_set> signals;
  bool accepting = true;
  bool drain_posted = false;
  std::map<std::uint64_t, std::unique_ptr<asio::steady_timer>> pending_views;
  std::uint64_t next_view_call = 1;
  std::thread serving_thread;

  // Writer thread.
  detail::write_queue queue;
  std::thread writer_thread;

  // Views.
  asio::thread_pool view_pool{view_threads};
};

struct Broker::impl {
  explicit impl(broker_options o) : options(std::move(o)) {}

  struct view_entry {
    view_scope scope;
    view_fn fn;
  };
  enum class phase { idle, running, stopping };

  broker_options options;
  std::string endpoint;
  std::filesystem::path dir;

  std::mutex views_mutex;
  std::map<std::string, view_entry, std::less<>> views;  // key: "<store>/<view>"

  std::mutex life_mutex;
  std::condition_variable life_cv;
  phase state = phase::idle;
  bool stop_requested = false;
  bool signals_wanted = false;

  std::unique_ptr<serving_state> s;
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> busy{0};
  std::atomic<std::size_t> views_in_flight{0};

  static std::string view_key(std::string_view store, std::string_view name) {
    return std::string(store) + "/" + std::string(name);
  }

  void request_stop() {
    {
      std::lock_guard lock(life_mutex);
      stop_requested = true;
    }
    life_cv.notify_all();
  }

  // ---- serving thread -------------------------------------------------------

  void send(const std::string& identity, message_type type, std::uint64_t id, const Value& body) {
    if (!s->router) return;
    std::vector<buffer> frames;
    try {
      frames = protocol::encode_message({{protocol::protocol_version, type, id}, body});
    } catch (const slither::error& e) {
      // A result nested too deeply to encode: the caller still gets an answer.
      ++errors;
      frames = protocol::encode_message(
          {{protocol::protocol_version, message_type::reply_error, id},
           protocol::error_body(
               fail(e.code(), std::string("reply cannot be encoded: ") + e.what()))});
    }
    // ROUTER never blocks on send: a peer that is gone, or whose queue is at
    // its high-water mark, has the reply dropped (ZMQ_ROUTER_MANDATORY is
    // off), so a slow client cannot stall the others.
    try {
      (void)s->router.send(zmq::buffer(identity),
                           zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      (void)s->router.send(zmq::buffer(frames[0].data(), frames[0].size()),
                           zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      (void)s->router.send(zmq::buffer(frames[1].data(), frames[1].size()),
                           zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      spdlog::debug("reply {} to a peer dropped: {}", id, e.what());
    }
    post_drain_if_ready();
  }

  void reply(const std::string& identity, std::uint64_t id, const result<Value>& r) {
    if (r) {
      send(identity, message_type::reply_ok, id, *r);
    } else {
      ++errors;
      spdlog::debug("request {} failed: {}: {}", id, to_string(r.error().code), r.error().message);
      send(identity, message_type::reply_error, id, protocol::error_body(r.error()));
    }
  }

  // From any thread: answer on the serving thread, which owns the socket.
  void post_reply(std::string identity, std::uint64_t id, result<Value> r) {
    asio::post(s->io, [this, identity = std::move(identity), id, r = std::move(r)] {
      reply(identity, id, r);
    });
  }

  void post_drain_if_ready() {
    if (!s->accepting || s->drain_posted || !s->router) return;
    if ((s->router.get(zmq::sockopt::events) & ZMQ_POLLIN) == 0) return;
    s->drain_posted = true;
    asio::post(s->io, [this] {
      s->drain_posted = false;
      drain();
    });
  }

  void arm() {
    s->router_fd->async_wait(asio::posix::stream_descriptor::wait_read,
                             [this](const boost::system::error_code& ec) {
                               if (ec || !s->accepting) return;
                               drain();
                               arm();
                             });
  }

  void drain() {
    for (int n = 0; n < drain_budget && s->accepting; ++n) {
      if ((s->router.get(zmq::sockopt::events) & ZMQ_POLLIN) == 0) return;
      std::vector<zmq::message_t> parts;
      try {
        if (!zmq::recv_multipart(s->router, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
          return;
        }
      } catch (const zmq::error_t& e) {
        spdlog::warn("control socket receive failed: {}", e.what());
        return;
      }
      on_message(parts);
    }
    post_drain_if_ready();
  }

  void on_message(std::vector<zmq::message_t>& parts) {
    // parts[0] is the peer identity added by ROUTER; then header and payload.
    if (parts.size() < 2) {
      spdlog::debug("dropped a message with no header frame");
      return;
    }
    std::string identity(parts[0].data<char>(), parts[0].size());
    std::vector<protocol::frame> frames;
    for (std::size_t i = 1; i < parts.size(); ++i) {
      frames.emplace_back(parts[i].data<std::byte>(), parts[i].size());
    }
    const auto head = protocol::decode_header(frames[0]);
    if (!head) {
      spdlog::debug("dropped a message that cannot be answered: {}", head.error().message);
      return;
    }
    ++requests;
    auto req = protocol::decode_request(frames, options.limits);
    if (!req) {
      reply(identity, head->request_id, std::move(req).error());
      return;
    }
    spdlog::debug("request {} '{}'", req->head.request_id, protocol::to_string(req->head.type));
    handle(std::move(identity), std::move(*req));
  }

  shm::writer* find_store(std::string_view name) {
    const auto it = s->stores.find(name);
    return it == s->stores.end() ? nullptr : &it->second;
  }

  error_info no_store(std::string_view name) const {
    std::string known;
    for (const auto& [n, w] : s->stores) known += (known.empty() ? "" : ", ") + n;
    return fail(errc::not_found, "no store '" + std::string(name) + "' in namespace '" +
                                     options.ns + "' (stores: " + (known.empty() ? "none" : known) +
                                     ")");
  }

  void handle(std::string identity, protocol::message req) {
    const auto id = req.head.request_id;
    const auto type = req.head.type;
    auto& args = req.body.as_mut<Map>();
    switch (type) {
      case message_type::hello: {
        List stores;
        for (const auto& [name, w] : s->stores) stores.emplace_back(name);
        reply(identity, id,
              Value(Map{{"protocol", static_cast<std::int64_t>(protocol::protocol_version)},
                        {"ns", options.ns},
                        {"pid", static_cast<std::int64_t>(::getpid())},
                        {"max_message_bytes",
                         static_cast<std::int64_t>(options.limits.max_message_bytes)},
                        {"stores", std::move(stores)}}));
        return;
      }
      case message_type::ping:
        reply(identity, id, Value{});
        return;
      case message_type::attach_info:
        reply(identity, id, attach_info(args));
        return;
      case message_type::put:
      case message_type::put_many:
      case message_type::erase:
      case message_type::compare_and_set:
      case message_type::clear:
        enqueue_write(std::move(identity), id, type, args);
        return;
      case message_type::stats:
        enqueue_job(
            std::move(identity), id, "stats", [this] { return stats(); }, true);
        return;
      case message_type::call_view:
        start_view(std::move(identity), id, args);
        return;
      case message_type::reply_ok:
      case message_type::reply_error:
        break;
    }
    reply(identity, id, fail(errc::protocol_error, "unexpected message type"));
  }

  result<Value> attach_info(Map& args) {
    auto name = take_text(args, message_type::attach_info, "store");
    if (!name) return std::move(name).error();
    auto* w = find_store(*name);
    if (w == nullptr) return no_store(*name);
    List tables;
    for (auto& t : w->read().tables()) tables.emplace_back(std::move(t));
    return Value(Map{{"ns", options.ns},
                     {"name", *name},
                     {"tables", std::move(tables)},
                     {"layout_version", static_cast<std::int64_t>(shm::layout_version)}});
  }

  // Queues `job` for the writer thread; its result is the reply. A `short_job`
  // (one key) runs right here when the writer is idle: the hand-off to the
  // writer thread and back cost more than the write itself.
  void enqueue_job(std::string identity, std::uint64_t id, std::string what,
                   std::function<result<Value>()> job, bool short_job) {
    if (short_job && s->queue.try_run_inline([&] { reply(identity, id, guarded(job)); })) return;
    const bool queued = s->queue.try_push([this, identity, id, job = std::move(job)]() mutable {
      post_reply(identity, id, guarded(job));
    });
    if (!queued) {
      ++busy;
      reply(identity, id,
            fail(errc::busy, "write queue is full (" + std::to_string(s->queue.limit()) +
                                 " pending); '" + what + "' not accepted, retry later"));
    }
  }

  void enqueue_write(std::string identity, std::uint64_t id, message_type type, Map& args) {
    auto store = take_text(args, type, "store");
    if (!store) return reply(identity, id, std::move(store).error());
    auto* w = find_store(*store);
    if (w == nullptr) return reply(identity, id, no_store(*store));
    std::string table;
    auto op = prepare_write(type, args, table);
    if (!op) return reply(identity, id, std::move(op).error());
    const std::string_view name = protocol::to_string(type);
    const bool one_key = type == message_type::put || type == message_type::erase ||
                         type == message_type::compare_and_set;
    enqueue_job(
        std::move(identity), id, std::string(name),
        [this, w, name, store = std::move(*store), table = std::move(table),
         op = std::move(*op)]() -> result<Value> {
          return with_telemetry(
              "slither.store.write",
              [&] {
                return Map{{"store", store}, {"table", table}, {"op", name}};
              },
              [&] { return op(*w); });
        },
        one_key);
  }

  // Runs as a write-queue job: only one of those touches the writers at a time.
  result<Value> stats() {
    Map stores;
    for (const auto& [name, w] : s->stores) {
      const auto st = w.stats();
      stores.emplace(name,
                     Value::map({{"entries", static_cast<std::int64_t>(st.entries)},
                                 {"bytes_used", static_cast<std::int64_t>(st.bytes_used)},
                                 {"bytes_retired", static_cast<std::int64_t>(st.bytes_retired)},
                                 {"segments", static_cast<std::int64_t>(st.segments)},
                                 {"segment_bytes", static_cast<std::int64_t>(st.segment_bytes)},
                                 {"readers", static_cast<std::int64_t>(st.readers)}}));
    }
    return Value(Map{
        {"ns", options.ns},
        {"pid", static_cast<std::int64_t>(::getpid())},
        {"uptime_ms",
         std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - s->started).count()},
        {"requests", static_cast<std::int64_t>(requests.load())},
        {"errors", static_cast<std::int64_t>(errors.load())},
        {"busy", static_cast<std::int64_t>(busy.load())},
        {"write_queue_depth", static_cast<std::int64_t>(s->queue.depth())},
        {"write_queue_limit", static_cast<std::int64_t>(s->queue.limit())},
        {"views_in_flight", static_cast<std::int64_t>(views_in_flight.load())},
        {"stores", std::move(stores)},
    });
  }

  void start_view(std::string identity, std::uint64_t id, Map& args) {
    const auto type = message_type::call_view;
    auto store = take_text(args, type, "store");
    if (!store) return reply(identity, id, std::move(store).error());
    auto name = take_text(args, type, "view");
    if (!name) return reply(identity, id, std::move(name).error());
    auto arg_it = args.find("arg");
    Value arg = arg_it == args.end() ? Value{} : std::move(arg_it->second);
    std::string session;
    if (const auto it = args.find("session_id"); it != args.end() && !it->second.is_null()) {
      auto sid = take_text(args, type, "session_id");
      if (!sid) return reply(identity, id, std::move(sid).error());
      session = std::move(*sid);
    }
    auto* w = find_store(*store);
    if (w == nullptr) return reply(identity, id, no_store(*store));
    view_entry entry;
    {
      std::lock_guard lock(views_mutex);
      const auto it = views.find(view_key(*store, *name));
      if (it == views.end()) {
        return reply(identity, id,
                     fail(errc::not_found, "no view '" + *name + "' on store '" + *store + "'"));
      }
      entry = it->second;
    }
    if (entry.scope == view_scope::session && session.empty()) {
      return reply(identity, id,
                   fail(errc::invalid_argument, "view '" + *name +
                                                    "' is session-scoped; "
                                                    "call it with a session_id"));
    }
    if (entry.scope == view_scope::global) session.clear();
    if (views_in_flight.load() >= max_views_in_flight) {
      ++busy;
      return reply(
          identity, id,
          fail(errc::busy, std::to_string(max_views_in_flight) + " views are running; view '" +
                               *name + "' not started, retry later"));
    }
    ++views_in_flight;

    const auto call = s->next_view_call++;
    auto timer = std::make_unique<asio::steady_timer>(s->io, options.view_timeout);
    timer->async_wait(
        [this, call, identity, id, view = *name](const boost::system::error_code& ec) {
          if (ec) return;
          if (s->pending_views.erase(call) == 0) return;
          reply(identity, id,
                fail(errc::timeout, "view '" + view + "' did not return within " +
                                        std::to_string(options.view_timeout.count()) + " ms"));
        });
    s->pending_views.emplace(call, std::move(timer));

    asio::post(
        s->view_pool, [this, call, identity = std::move(identity), id, w, store = std::move(*store),
                       view = std::move(*name), arg = std::move(arg), session = std::move(session),
                       fn = std::move(entry.fn)]() mutable {
          auto r = with_telemetry(
              "slither.bridge.view",
              [&] {
                return Map{{"store", store}, {"view", view}, {"session_id", session}};
              },
              [&] { return guarded([&] { return fn(arg, w->read(), session); }); });
          --views_in_flight;
          asio::post(s->io, [this, call, identity = std::move(identity), id, r = std::move(r)] {
            // Absent: the timeout already answered.
            if (s->pending_views.erase(call) == 0) return;
            reply(identity, id, r);
          });
        });
  }

  void install_signals() {
    s->signals.emplace(s->io, SIGINT, SIGTERM);
    s->signals->async_wait([this](const boost::system::error_code& ec, int signo) {
      if (ec) return;
      spdlog::info("signal {} received: stopping", signo);
      request_stop();
    });
  }

  // ---- lifecycle ------------------------------------------------------------

  result<void> open_socket() {
    try {
      s->router = zmq::socket_t(s->zmq_context, zmq::socket_type::router);
      s->router.set(zmq::sockopt::linger, close_linger_ms);
      s->router.set(zmq::sockopt::sndhwm, 1000);
      s->router.set(zmq::sockopt::rcvhwm, 1000);
      s->router.set(zmq::sockopt::router_mandatory, false);
      s->router.set(zmq::sockopt::maxmsgsize,
                    static_cast<std::int64_t>(options.limits.max_message_bytes) + frame_headroom);
      s->router.bind(endpoint);
    } catch (const zmq::error_t& e) {
      return fail(errc::io_error,
                  "cannot bind the control socket to '" + endpoint + "': " + e.what());
    }
    return {};
  }

  result<void> start() {
    {
      std::lock_guard lock(life_mutex);
      if (state != phase::idle) return fail(errc::already_exists, "broker is already running");
    }
    if (!valid_name(options.ns)) {
      return fail(errc::invalid_argument,
                  "namespace '" + options.ns + "' must be non-empty and use only [A-Za-z0-9_-]");
    }
    const bool default_dir = options.runtime_dir.empty();
    dir = default_dir ? default_runtime_dir(options.ns) : options.runtime_dir;
    if (default_dir) {
      // The shared parent (/tmp/slither-<uid>) must be ours too, or another
      // user could swap our directory.
      if (auto r = detail::ensure_private_dir(dir.parent_path()); !r) return r;
    }
    if (auto r = detail::ensure_private_dir(dir); !r) return r;
    endpoint = options.control_endpoint.empty() ? "ipc://" + (dir / "control").string()
                                                : options.control_endpoint;
    if (endpoint.starts_with("ipc://") && endpoint.size() - 6 >= sizeof(sockaddr_un::sun_path)) {
      return fail(errc::invalid_argument, "control socket path '" + endpoint.substr(6) + "' is " +
                                              std::to_string(endpoint.size() - 6) +
                                              " bytes; at most " +
                                              std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                                              " fit (use a shorter runtime directory)");
    }
    auto st = std::make_unique<serving_state>(options.write_queue_limit);
    auto lock = detail::namespace_lock::acquire(dir / "lock");
    if (!lock) return std::move(lock).error();
    st->lock.emplace(std::move(*lock));
    s = std::move(st);
    // From here on a failure tears down what was made (stores unlink their
    // segments, the lock unlinks its file) and removes the runtime directory.
    auto abandon = [this](error_info err) -> result<void> {
      s.reset();
      remove_runtime_dir();
      return err;
    };

    for (auto def : options.stores) {
      def.options.ns = options.ns;
      const std::string name = def.options.name;
      if (s->stores.contains(name)) {
        return abandon(fail(errc::invalid_argument, "store '" + name + "' is declared twice"));
      }
      auto w = shm::open_store(def);
      if (!w) {
        auto err = std::move(w).error();
        err.message = "store '" + name + "': " + err.message;
        return abandon(std::move(err));
      }
      s->stores.emplace(name, std::move(*w));
    }
    if (auto r = open_socket(); !r) return abandon(std::move(r).error());

    s->router_fd.emplace(s->io, s->router.get(zmq::sockopt::fd));
    {
      std::lock_guard lock(life_mutex);
      state = phase::running;
      stop_requested = false;
      if (signals_wanted) install_signals();
    }
    s->writer_thread = std::thread([this] {
      while (auto job = s->queue.pop()) {
        (*job)();
        s->queue.finish();
      }
    });
    arm();
    // A request that arrived before `arm` left no edge on ZMQ_FD.
    asio::post(s->io, [this] { drain(); });
    s->serving_thread = std::thread([this] {
      auto guard = asio::make_work_guard(s->io);
      // A handler that throws is a bug, but it must not take the broker down:
      // log it and keep serving (io_context::run may be called again).
      for (;;) {
        try {
          s->io.run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("broker event loop: unexpected exception: {}", e.what());
        }
      }
    });
    spdlog::info("broker for namespace '{}' serving {} store(s) at {}", options.ns,
                 s->stores.size(), endpoint);
    return {};
  }

  void remove_runtime_dir() noexcept {
    std::error_code ec;
    if (endpoint.starts_with("ipc://")) {
      const std::filesystem::path socket_file = endpoint.substr(6);
      if (socket_file.parent_path() == dir) std::filesystem::remove(socket_file, ec);
    }
    // Only what we made: a runtime directory that holds anything else stays.
    if (!std::filesystem::remove(dir, ec) && ec) {
      spdlog::warn("runtime directory '{}' not removed: {}", dir.string(), ec.message());
    }
  }

  void shutdown() noexcept {
    serving_state& st = *s;
    asio::post(st.io, [this] {
      s->accepting = false;
      if (s->router_fd) s->router_fd->cancel();
    });
    // Writes already queued are applied and answered; new ones are refused.
    st.queue.close();
    st.writer_thread.join();
    st.view_pool.join();
    asio::post(st.io, [this] {
      s->pending_views.clear();
      s->signals.reset();
      if (s->router_fd) {
        // The descriptor belongs to ZeroMQ; only forget it.
        (void)s->router_fd->release();
        s->router_fd.reset();
      }
      s->router.close();
      s->io.stop();
    });
    st.serving_thread.join();
    st.zmq_context.close();  // waits (up to the linger) for the last replies
    for (auto& [name, w] : st.stores) w.close();
    s.reset();  // unlinks the lock file, then unlocks
    remove_runtime_dir();
    spdlog::info("broker for namespace '{}' stopped", options.ns);
  }

  void stop() noexcept {
    std::unique_lock lock(life_mutex);
    if (state == phase::stopping) {
      life_cv.wait(lock, [&] { return state != phase::stopping; });
      return;
    }
    if (state != phase::running) return;
    state = phase::stopping;
    lock.unlock();
    shutdown();
    lock.lock();
    state = phase::idle;
    stop_requested = false;
    life_cv.notify_all();
  }
};

Broker::Broker(broker_options options) : p_(std::make_unique<impl>(std::move(options))) {}

Broker::~Broker() {
  stop();
}

result<void> Broker::start() {
  return p_->start();
}

void Broker::stop() noexcept {
  p_->stop();
}

void Broker::wait() {
  {
    std::unique_lock lock(p_->life_mutex);
    p_->life_cv.wait(lock, [&] { return p_->state != impl::phase::running || p_->stop_requested; });
  }
  stop();
}

void Broker::handle_signals(bool on) {
  std::lock_guard lock(p_->life_mutex);
  p_->signals_wanted = on;
  if (p_->state != impl::phase::running) return;
  asio::post(p_->s->io, [p = p_.get(), on] {
    if (on && !p->s->signals) {
      p->install_signals();
    } else if (!on) {
      p->s->signals.reset();
    }
  });
}

result<void> Broker::register_view(std::string store, std::string name, view_scope scope,
                                   view_fn fn) {
  if (name.empty()) return fail(errc::invalid_argument, "a view needs a name");
  if (!fn) return fail(errc::invalid_argument, "view '" + name + "' has no function");
  const bool known = std::any_of(p_->options.stores.begin(), p_->options.stores.end(),
                                 [&](const auto& d) { return d.options.name == store; });
  if (!known) {
    return fail(errc::not_found, "cannot register view '" + name + "': no store '" + store + "'");
  }
  std::lock_guard lock(p_->views_mutex);
  const auto [it, inserted] =
      p_->views.emplace(impl::view_key(store, name), impl::view_entry{scope, std::move(fn)});
  if (!inserted) {
    return fail(errc::already_exists,
                "view '" + name + "' is already registered on store '" + store + "'");
  }
  return {};
}

result<void> Broker::write(std::string_view store,
                           const std::function<result<void>(shm::writer&)>& fn) {
  {
    std::lock_guard lock(p_->life_mutex);
    if (p_->state != impl::phase::running) {
      return fail(errc::unavailable,
                  "broker is not running; cannot write to '" + std::string(store) + "'");
    }
  }
  auto* w = p_->find_store(store);
  if (w == nullptr) return p_->no_store(store);
  std::promise<result<void>> done;
  auto answer = done.get_future();
  const bool queued = p_->s->queue.push_wait([&] {
    auto r = with_telemetry(
        "slither.store.write",
        [&] {
          return Map{{"store", std::string(store)}, {"op", "write"}};
        },
        [&] {
          return guarded([&]() -> result<Value> {
            auto v = fn(*w);
            if (!v) return std::move(v).error();
            return Value{};
          });
        });
    done.set_value(r ? result<void>{} : result<void>(std::move(r).error()));
  });
  if (!queued)
    return fail(errc::unavailable,
                "broker is stopping; write to '" + std::string(store) + "' refused");
  return answer.get();
}

const shm::reader& Broker::reader(std::string_view store) const {
  if (p_->s) {
    if (const auto it = p_->s->stores.find(store); it != p_->s->stores.end()) {
      return it->second.read();
    }
  }
  throw error(errc::not_found, "no running store '" + std::string(store) + "' in namespace '" +
                                   p_->options.ns + "'");
}

const std::string& Broker::control_endpoint() const noexcept {
  return p_->endpoint;
}

const std::filesystem::path& Broker::runtime_dir() const noexcept {
  return p_->dir;
}

}  // namespace slither
