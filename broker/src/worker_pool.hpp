// A worker pool: the broker's executor for one dispatch engine. It binds
// one PUSH socket per worker (tasks) and one shared PULL (results, credits,
// hellos, heartbeats), spawns and supervises worker processes, takes in
// workers started by others, and drives its engine from the broker's Asio
// loop. Everything here runs on the serving thread.
//
// worker_pool.cpp: joins, sockets, worker messages, heartbeats, the engine.
// pool_spawning.cpp: spawned workers: start, output, exit, restart, stop.
#pragma once

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "polled_socket.hpp"
#include "slither/broker/broker.hpp"
#include "slither/core/dispatch.hpp"
#include "worker_process.hpp"
#include "worker_protocol.hpp"

namespace slither::detail {

/// A failure of `kind` named after it ("worker_died").
inline dispatch_error failure_of(failure_kind kind, std::string message) {
  dispatch_error e;
  e.kind = kind;
  e.type = std::string(to_string(kind));
  e.message = std::move(message);
  return e;
}

/// What a pool needs from its broker.
struct pool_host {
  boost::asio::io_context* io = nullptr;
  zmq::context_t* zmq = nullptr;
  std::filesystem::path runtime_dir;
  std::string ns;
  /// The control endpoint spawned workers join through (ipc).
  std::string join_endpoint;
  /// The broker's stores, for workers' `ctx.store(name)`.
  std::vector<std::string> stores;
  /// A tcp pool's CURVE secret key (Z85); empty for ipc.
  std::string curve_secret_key;
  /// Largest frame a worker may send.
  std::int64_t max_frame_bytes = 0;
  /// Puts a pool socket under the broker's admission rules (before it binds).
  std::function<result<void>(zmq::socket_t&)> guard;
};

class worker_pool;

/// Hears what a pool's engine says about jobs: the dispatch server.
class job_listener {
 public:
  virtual ~job_listener() = default;
  /// The job has output to take, or has finished.
  virtual void on_output(worker_pool& pool, job_id job) = 0;
  /// The job's session moved to another worker.
  virtual void on_moved(worker_pool& pool, const session_moved& moved) = 0;
};

class worker_pool final : public executor {
 public:
  worker_pool(pool_options options, pool_host host, job_listener& listener);
  ~worker_pool() override;
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  /// Binds the results socket and posts the first spawns to the loop.
  /// Errors: `io_error`, `invalid_argument`.
  result<void> start();
  /// Stops every worker (spawned ones are killed if they do not exit at
  /// once), closes the sockets and removes their files. On the serving thread.
  void stop() noexcept;

  const pool_options& options() const noexcept { return opts_; }
  /// `worker_join`: a worker's id and endpoints. Errors: bad arguments
  /// (named), `not_found` (an unknown spawn token), `shutting_down`.
  result<Value> join(const Map& args);
  /// Why jobs cannot run now (every spawn fails and no worker is left), if so.
  std::optional<dispatch_error> failing() const;

  /// The pool's engine. After calling it, call `apply`.
  dispatch_engine& engine() noexcept { return engine_; }
  /// Carries out the engine's actions and re-arms its timer.
  void apply();

  /// Workers, jobs and counters, for the broker's `stats`.
  Value stats() const;
  /// The pid a worker gave when it joined (0 if unknown): for tests and stats.
  std::int64_t pid_of(worker_id worker) const;

  // executor
  void run(batch_task task) override;
  void kill(worker_id worker, const dispatch_error& reason) override;
  void retire(worker_id worker) override;

 private:
  using clock = std::chrono::steady_clock;
  struct slot;

  struct worker {
    worker_id id = 0;
    std::int64_t pid = 0;
    slot* spawned = nullptr;
    zmq::socket_t tasks;
    std::string endpoint;
    std::filesystem::path socket_file;  // ipc
    std::optional<boost::asio::posix::stream_descriptor> fd;
    std::deque<std::vector<zmq::message_t>> backlog;  // waiting for the connection
    bool waiting = false;
    bool hello = false;
    bool retiring = false;
    clock::time_point joined{};
    clock::time_point last_heard{};
    clock::time_point last_sent{};
    std::optional<clock::time_point> retired_at;
    // (batch, attempt) sent and not answered: only their answers give credit back.
    std::vector<std::pair<std::uint64_t, std::uint32_t>> held;
    std::uint64_t batches = 0;
    std::uint64_t rss = 0;
    std::shared_ptr<char> alive = std::make_shared<char>();
  };

  struct slot {
    std::size_t index = 0;
    std::optional<child_process> child;
    std::string token;
    worker_id worker = 0;  // once joined
    bool said_hello = false;
    bool replacement = false;
    std::uint32_t failures = 0;  // starts in a row that never said hello
    std::optional<boost::asio::posix::stream_descriptor> exit_wait;
    std::optional<boost::asio::posix::stream_descriptor> output;
    std::array<char, 4096> buffer{};
    pid_t pid = 0;
    std::uint64_t generation = 0;  // of the current child: stale handlers ignore themselves
    std::string partial_line;
    std::string tail;  // the last output, for start-failure errors
    std::optional<boost::asio::steady_timer> restart;
    std::shared_ptr<char> alive = std::make_shared<char>();
  };

  // worker_pool.cpp
  void on_results(zmq::socket_t& socket);
  void on_worker_message(worker& w, const worker_protocol::header& h,
                         std::vector<zmq::message_t>& parts);
  void send_to(worker& w, std::vector<zmq::message_t>&& frames);
  bool try_send(worker& w, std::vector<zmq::message_t>& frames);
  void wait_writable(worker& w);
  void send_control(worker& w, worker_protocol::message_type type, std::uint32_t count);
  /// Removes a worker: the engine hears `worker_left` unless `tell` is false.
  void drop(worker_id id, const std::string& why, bool expected, bool tell = true);
  void give_credit(worker& w, const worker_protocol::header& h, clock::time_point now);
  void check_recycling(worker& w);
  void on_tick();
  void arm_tick();
  void arm_engine_timer();
  std::shared_ptr<const std::vector<std::byte>> meta_of(
      const std::shared_ptr<const job_target>& target);

  // pool_spawning.cpp
  void spawn(slot& s);
  std::vector<std::string> worker_env(const slot& s) const;
  void watch_exit(slot& s);
  void read_output(slot& s);
  void on_exit(slot& s, int status);
  void schedule_restart(slot& s);
  void start_failed(slot& s, const std::string& why);
  void stop_children() noexcept;

  pool_options opts_;
  pool_host host_;
  job_listener& listener_;
  dispatch_engine engine_;
  worker_records records_;

  zmq::socket_t results_;
  std::string results_endpoint_;
  std::filesystem::path results_file_;
  std::optional<polled_socket> results_reader_;
  std::map<worker_id, std::unique_ptr<worker>> workers_;
  worker_id next_worker_ = 1;
  std::vector<std::unique_ptr<slot>> slots_;
  std::optional<boost::asio::steady_timer> tick_;
  std::optional<boost::asio::steady_timer> engine_timer_;
  std::optional<clock::time_point> engine_timer_at_;
  std::map<const job_target*, std::pair<std::shared_ptr<const job_target>,
                                        std::shared_ptr<const std::vector<std::byte>>>>
      meta_;
  std::uint32_t start_failures_ = 0;  // spawns in a row that never said hello
  std::optional<dispatch_error> failing_;
  std::uint64_t rejected_ = 0;  // worker messages dropped as malformed or stale
  std::uint64_t spawned_ = 0;
  std::uint64_t recycled_ = 0;
  bool applying_ = false;
  bool stopping_ = false;
  bool started_ = false;
};

}  // namespace slither::detail
