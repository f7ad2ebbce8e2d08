// The broker's private state, shared by the files that implement it: the
// serving loop (serving_loop.cpp), request handling (requests.cpp), the write
// path (write_path.cpp), views (views.cpp) and the lifecycle (lifecycle.cpp).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "admission.hpp"
#include "broker_log.hpp"
#include "dispatch_server.hpp"
#include "metrics.hpp"
#include "metrics_http.hpp"
#include "parent_watch.hpp"
#include "polled_socket.hpp"
#include "runtime_dir.hpp"
#include "slither/broker/broker.hpp"
#include "slither/broker/protocol.hpp"
#include "tcp_endpoint.hpp"
#include "view_runner.hpp"
#include "write_queue.hpp"

namespace slither {

namespace asio = boost::asio;

namespace detail {

/// Views running or queued at once; past it `call_view` gets `busy`.
inline constexpr std::size_t max_views_in_flight = 256;
/// Threads that run views, at most (the runner has view_concurrency per store).
inline constexpr std::size_t max_view_threads = 64;
/// Longest a new connection may take to complete its handshake.
inline constexpr int handshake_ms = 5000;
/// Descriptors kept for the broker's own files (segments, sockets, logs)
/// when the connection limit is fitted inside the open-file limit.
inline constexpr std::size_t reserved_fds = 256;
/// How long closing the control socket waits to deliver the last replies.
inline constexpr int close_linger_ms = 500;
/// Frame-size headroom over `decode_limits::max_message_bytes` at the transport:
/// a payload a little over the limit still gets a `limit_exceeded` reply, a
/// much larger frame makes ZeroMQ drop the connection before buffering it.
inline constexpr std::int64_t frame_headroom = 4096;
/// Replies queued for one peer before further ones are dropped (a peer that
/// never reads cannot grow the broker past this many small replies).
inline constexpr int send_queue_messages = 256;
/// Requests queued from one peer before ZeroMQ stops reading its socket.
inline constexpr int receive_queue_messages = 256;
/// Largest payload of a request that is neither a store write nor a view
/// call (hello, ping, stats, attach_info): they take a few names at most.
inline constexpr std::size_t max_small_request_bytes = 64 * 1024;
/// How often dead readers are swept from every store.
inline constexpr std::chrono::milliseconds reclaim_interval{250};
/// While a store's indexes grow (a migration, or a table's asked index made
/// ready: shm::writer::grow), the writer spends `growth_budget` on them every
/// `growth_interval`: at most a fifth of its time, in pauses of 2 ms.
inline constexpr std::chrono::milliseconds growth_interval{10};
inline constexpr std::chrono::microseconds growth_budget{2000};
/// The control socket's in-process endpoint, for an embedded broker's own
/// dispatch jobs (slither/broker/dispatch.hpp); one broker per ZeroMQ context.
inline constexpr const char* inproc_control = "inproc://slither.control";

/// True for a non-empty name of [A-Za-z0-9_-].
bool valid_name(std::string_view s) noexcept;

/// The frames of the reply to request `id`, from any thread: an error reply
/// (message capped) for an error, for a result that cannot be encoded, or for
/// one over `max_reply_bytes`.
std::vector<buffer> encode_reply(std::uint64_t id, const result<Value>& r,
                                 std::size_t max_reply_bytes);

/// A request's payload decoded into its argument map, from any thread;
/// `limit_exceeded` if it is larger than `limits` allow, on the wire or in memory.
result<Map> decode_request_args(protocol::message_type type, const zmq::message_t& payload,
                                const decode_limits& limits);

}  // namespace detail

// A view call waiting for its result, on the serving thread.
struct pending_view {
  std::unique_ptr<asio::steady_timer> timer;
  std::string identity;
  std::uint64_t request_id = 0;
  std::string view;
};

// Everything that exists only while the broker runs, torn down by `shutdown`.
/// A large write reserved by a client (large_writes.cpp): only that client
/// may commit it, and it is abandoned when its lease ends.
struct write_lease {
  std::string identity;
  std::chrono::steady_clock::time_point deadline;
};

struct serving_state {
  explicit serving_state(const detail::write_queue_limits& limits) : queue(limits) {}

  std::optional<detail::namespace_lock> lock;
  std::map<std::string, shm::writer, std::less<>> stores;
  // Reservations of large writes by (store, id); touched by writer jobs only.
  std::map<std::pair<std::string, std::uint64_t>, write_lease> leases;
  // Readers of the stores for views: shared, so that a view the broker
  // abandons at stop keeps its mapping (see view_runner).
  std::map<std::string, std::shared_ptr<const shm::reader>, std::less<>> view_readers;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

  // Serving thread: one Asio loop runs signals, timers, replies posted by
  // other threads, and the ZeroMQ sockets (polled_socket.hpp): the control
  // socket, the ZAP handler and the connection monitor.
  asio::io_context io;
  // Shared: an embedded broker's in-process dispatch jobs keep it (and their
  // sockets in it) past the broker's stop.
  std::shared_ptr<zmq::context_t> zmq_context = std::make_shared<zmq::context_t>(1);
  zmq::socket_t router;
  std::optional<detail::admission> admission;
  // Declared after what they read, so that they go first.
  std::optional<detail::polled_socket> control;
  std::optional<detail::polled_socket> zap;
  std::optional<detail::polled_socket> monitor;
  std::optional<asio::signal_set> signals;
  std::optional<asio::steady_timer> reclaim_timer;
  // Set while the timer's lease-and-reclaim job waits in the write queue.
  std::atomic<bool> housekeeping_queued{false};
  std::optional<asio::steady_timer> growth_timer;
  // Set while growth steps are scheduled (from a housekeeping job that found
  // growing indexes until a step finds none).
  std::atomic<bool> growth_scheduled{false};
  // The process the broker lives for (`options.parent_pid`), checked on a timer.
  std::optional<detail::parent_watch> parent;
  std::optional<asio::steady_timer> parent_timer;
  // Set when the stop begins: from then on requests get `shutting_down`.
  bool stopping = false;
  std::map<std::uint64_t, pending_view> pending_views;
  std::uint64_t next_view_call = 1;
  // How threads that may outlive the broker (views) reach the loop.
  std::shared_ptr<detail::loop_link> link;
  std::thread serving_thread;

  // Writer thread.
  detail::write_queue queue;
  std::thread writer_thread;

  // Views.
  std::unique_ptr<detail::view_runner> views;

  // The metrics endpoint, if asked for: stopped first at a stop.
  std::unique_ptr<detail::metrics_http> metrics_http;

  // Dispatch: worker pools and jobs, on the serving thread. Declared last,
  // so that it goes first.
  std::unique_ptr<detail::dispatch_server> dispatch;
};

struct SLITHER_BROKER_NO_EXPORT Broker::impl {
  explicit impl(broker_options o)
      : options(std::move(o)), logger(detail::make_broker_logger(options)) {}

  struct view_entry {
    view_scope scope;
    view_fn fn;
  };
  enum class phase { idle, running, stopping };

  broker_options options;
  /// From `options.log`; null: spdlog's default logger (see broker_log.hpp).
  std::shared_ptr<spdlog::logger> logger;
  std::string endpoint;
  std::filesystem::path dir;
  // This broker, or the dead one whose lock it took over, created `dir`.
  bool owns_dir = false;
  // Device and inode of the ipc socket file this broker bound.
  std::optional<std::pair<dev_t, ino_t>> socket_file_id;
  // Keys of a tcp control endpoint, loaded at start.
  std::optional<detail::tcp_security> tcp;
  // Keys of tcp worker pools (the same key files), loaded at start.
  std::optional<detail::tcp_security> pool_tcp;
  // `options.max_clients`, fitted inside the open-file limit at start.
  std::size_t max_clients = 0;

  std::mutex views_mutex;
  std::map<std::string, view_entry, std::less<>> views;  // key: "<store>/<view>"

  std::mutex life_mutex;
  std::condition_variable life_cv;
  phase state = phase::idle;
  bool stop_requested = false;
  bool signals_wanted = false;
  // A second stop signal: cancel queued writes and abandon views at once.
  std::atomic<bool> hurry{false};
  // Keeps the signal handler, which re-arms itself, alive.
  std::shared_ptr<std::function<void(const boost::system::error_code&, int)>> signal_handler;

  std::unique_ptr<serving_state> s;
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> busy{0};
  // Counters and histograms fed by events; they live as long as the Broker.
  detail::broker_metrics metrics;
  // The metrics endpoint's address while it serves ("127.0.0.1:9464").
  std::string metrics_address;

  static std::string view_key(std::string_view store, std::string_view name) {
    return std::string(store) + "/" + std::string(name);
  }

  // ---- serving loop (serving_loop.cpp), on the serving thread ---------------
  // The frames of the reply to request `id`, counting errors: from any thread
  // (encoding a large result there keeps it off the serving thread).
  std::vector<buffer> reply_frames(std::uint64_t id, const result<Value>& r);
  void send(const std::string& identity, const std::vector<buffer>& frames);
  void reply(const std::string& identity, std::uint64_t id, const result<Value>& r);
  // From any thread: encode there, send on the serving thread, which owns the socket.
  void post_reply(std::string identity, std::uint64_t id, const result<Value>& r);
  // Receives one message from the control socket, frame by frame.
  void on_control(zmq::socket_t& socket);
  void on_request(std::string identity, zmq::message_t& header, zmq::message_t* payload,
                  zmq::message_t* batch, std::size_t frames, int fd);
  // What remains of the control socket at the end of a stop: answered `shutting_down`.
  void drain_at_stop();

  // ---- requests (requests.cpp) ------------------------------------------------
  // Decodes a request's payload and bounds its decoded size.
  result<Map> decode_args(protocol::message_type type, const zmq::message_t& payload);
  // `bytes`: the request's payload size, which a queued write holds.
  void handle(std::string identity, std::uint64_t id, protocol::message_type type, Map args,
              std::size_t bytes);
  shm::writer* find_store(std::string_view name);
  error_info no_store(std::string_view name) const;
  // The store a request acts on, checking its optional "incarnation" argument.
  result<shm::writer*> target_store(protocol::message_type type, Map& args, std::string& name);
  result<Value> attach_info(Map& args);
  // Runs as a write-queue job: only one of those touches the writers at a time.
  result<Value> stats();

  // ---- write path (write_path.cpp) --------------------------------------------
  // A store write whose payload is small enough to decode here, on the serving thread.
  void enqueue_write(std::string identity, std::uint64_t id, protocol::message_type type, Map args,
                     std::size_t bytes);
  // A large one: decoded, prepared and applied on the writer thread.
  void enqueue_large_write(std::string identity, std::uint64_t id, protocol::message_type type,
                           zmq::message_t payload);
  void enqueue_job(std::string identity, std::uint64_t id, std::string_view what,
                   std::function<result<Value>()> job, std::size_t bytes, bool may_run_inline);
  // Sweeps dead readers of every store, as a write-queue job, on a timer.
  void schedule_reclaim();
  /// Starts growth steps (`schedule_growth`) if a store's indexes grow and
  /// none are scheduled. Writer thread.
  void start_growth();
  /// A growth step after `growth_interval`: `grow` of every store, then
  /// another step while one still grows. Serving thread.
  void schedule_growth();
  /// put_reserve, put_commit, put_abort: run as writer jobs (large_writes.cpp).
  void enqueue_reservation(std::string identity, std::uint64_t id, protocol::message_type type,
                           Map args);
  /// Abandons the reservations whose lease has ended; on the writer.
  void expire_leases();

  // ---- views (views.cpp) ------------------------------------------------------
  void start_view(std::string identity, std::uint64_t id, Map args);
  // A call_view too large to decode here: decoded on a view thread, then started.
  void start_large_view(std::string identity, std::uint64_t id, zmq::message_t payload);
  // Answers the view calls still waiting (at stop).
  void answer_pending_views(const error_info& err);

  // ---- dispatch (dispatch_hooks.cpp) ---------------------------------------------
  // Loads the keys of tcp pools and removes what a dead broker's workers left.
  result<void> prepare_pools();
  // Creates the dispatch server and its pools (after the control socket).
  result<void> start_dispatch();
  // A dispatch request: answered here unless it is a notification that succeeded.
  void handle_dispatch(std::string identity, int fd, std::uint64_t id, protocol::message_type type,
                       const Map& args, zmq::message_t* batch);

  // ---- metrics (metrics_hooks.cpp) ----------------------------------------------
  // `stats()` with the pools' figures (`dispatch`, read on the serving
  // thread), the metrics map and the endpoint: on the writer's side.
  result<Value> full_stats(Value dispatch);
  // Gathers `full_stats` from the serving thread and answers `done` on
  // whichever thread has them (errors: busy, shutting_down).
  void collect_stats(std::function<void(result<Value>)> done);
  // Binds the metrics endpoint, if one is configured (before the threads start).
  result<void> open_metrics();
  // Starts serving it and, with it, counting telemetry (once the broker runs).
  void serve_metrics();
  // Stops both (first thing at a stop).
  void close_metrics() noexcept;

  // ---- lifecycle (lifecycle.cpp) ----------------------------------------------
  void request_stop();
  void install_signals();
  // Checks `s->parent` after `parent_check_interval`, and again until it no
  // longer holds: then asks for a graceful stop, as a signal does.
  void schedule_parent_check();
  // A second stop signal (or a stop that cannot wait): queued writes are
  // answered `shutting_down` and running views abandoned.
  void stop_at_once();
  // Creates or checks the runtime directory, takes the namespace lock and
  // checks the control socket's path; on failure leaves nothing behind.
  result<void> claim_runtime_dir(serving_state& st);
  result<void> check_options() const;
  result<void> open_socket();
  std::size_t fit_max_clients() const;
  result<void> start();
  void remove_runtime_dir() noexcept;
  void shutdown() noexcept;
  void stop() noexcept;
};

namespace detail {
/// The broker whose writer or serving thread this is (null on other threads):
/// `Broker::write` from there would wait for the very thread that waits.
inline thread_local const Broker::impl* own_thread_of = nullptr;
}  // namespace detail

}  // namespace slither
