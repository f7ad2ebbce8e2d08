// The broker's private state, shared by the files that implement it: the
// serving loop (serving_loop.cpp), request handling (requests.cpp), the write
// path (write_path.cpp), views (views.cpp) and the lifecycle (lifecycle.cpp).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
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
#include "polled_socket.hpp"
#include "runtime_dir.hpp"
#include "slither/broker/broker.hpp"
#include "slither/broker/protocol.hpp"
#include "tcp_endpoint.hpp"
#include "write_queue.hpp"

namespace slither {

namespace asio = boost::asio;

namespace detail {

/// Views running or queued at once; past it `call_view` gets `busy`.
inline constexpr std::size_t max_views_in_flight = 256;
/// Threads that run views.
inline constexpr std::size_t view_threads = 2;
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

/// True for a non-empty name of [A-Za-z0-9_-].
bool valid_name(std::string_view s) noexcept;

}  // namespace detail

// Everything that exists only while the broker runs, torn down by `shutdown`.
struct serving_state {
  explicit serving_state(std::size_t queue_limit) : queue(queue_limit) {}

  std::optional<detail::namespace_lock> lock;
  std::map<std::string, shm::writer, std::less<>> stores;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

  // Serving thread: one Asio loop runs signals, timers, replies posted by
  // other threads, and the ZeroMQ sockets (polled_socket.hpp): the control
  // socket, the ZAP handler and the connection monitor.
  asio::io_context io;
  zmq::context_t zmq_context{1};
  zmq::socket_t router;
  std::optional<detail::admission> admission;
  // Declared after what they read, so that they go first.
  std::optional<detail::polled_socket> control;
  std::optional<detail::polled_socket> zap;
  std::optional<detail::polled_socket> monitor;
  std::optional<asio::signal_set> signals;
  std::map<std::uint64_t, std::unique_ptr<asio::steady_timer>> pending_views;
  std::uint64_t next_view_call = 1;
  std::thread serving_thread;

  // Writer thread.
  detail::write_queue queue;
  std::thread writer_thread;

  // Views.
  asio::thread_pool view_pool{detail::view_threads};
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
  // This broker, or the dead one whose lock it took over, created `dir`.
  bool owns_dir = false;
  // Device and inode of the ipc socket file this broker bound.
  std::optional<std::pair<dev_t, ino_t>> socket_file_id;
  // Keys of a tcp control endpoint, loaded at start.
  std::optional<detail::tcp_security> tcp;
  // `options.max_clients`, fitted inside the open-file limit at start.
  std::size_t max_clients = 0;

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

  // ---- serving loop (serving_loop.cpp), on the serving thread ---------------
  void send(const std::string& identity, protocol::message_type type, std::uint64_t id,
            const Value& body);
  void reply(const std::string& identity, std::uint64_t id, const result<Value>& r);
  // From any thread: answer on the serving thread, which owns the socket.
  void post_reply(std::string identity, std::uint64_t id, result<Value> r);
  // Receives one message from the control socket.
  void on_control(zmq::socket_t& socket);
  void on_message(std::vector<zmq::message_t>& parts);

  // ---- requests (requests.cpp) ------------------------------------------------
  void handle(std::string identity, protocol::message req);
  shm::writer* find_store(std::string_view name);
  error_info no_store(std::string_view name) const;
  result<Value> attach_info(Map& args);
  // Runs as a write-queue job: only one of those touches the writers at a time.
  result<Value> stats();

  // ---- write path (write_path.cpp) --------------------------------------------
  void enqueue_job(std::string identity, std::uint64_t id, std::string what,
                   std::function<result<Value>()> job, bool short_job);
  void enqueue_write(std::string identity, std::uint64_t id, protocol::message_type type,
                     Map& args);

  // ---- views (views.cpp) ------------------------------------------------------
  void start_view(std::string identity, std::uint64_t id, Map& args);

  // ---- lifecycle (lifecycle.cpp) ----------------------------------------------
  void request_stop();
  void install_signals();
  // Creates or checks the runtime directory, takes the namespace lock and
  // checks the control socket's path; on failure leaves nothing behind.
  result<void> claim_runtime_dir(serving_state& st);
  result<void> open_socket();
  std::size_t fit_max_clients() const;
  result<void> start();
  void remove_runtime_dir() noexcept;
  void shutdown() noexcept;
  void stop() noexcept;
};

}  // namespace slither
