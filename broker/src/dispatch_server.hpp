// The dispatch server: the broker half of the dispatch-job protocol
// (slither/broker/dispatch.hpp) and workers joining their pools. It owns the
// worker pools, keeps a table of jobs (which client, which pool, how far
// ahead of the client's acks), forwards batches as the frames they came in,
// and ends the jobs of clients that went away. On the serving thread.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "slither/broker/broker.hpp"
#include "slither/broker/protocol.hpp"
#include "worker_pool.hpp"

namespace slither::detail {

/// True for the message types the dispatch server handles.
bool is_dispatch_request(protocol::message_type type) noexcept;

class dispatch_server final : public job_listener {
 public:
  /// `router` is the control socket, `kick` wakes its reader after a send
  /// (ZMQ_FD is edge-like), `catch_up` takes in pending connection events.
  dispatch_server(std::vector<pool_options> pools, pool_host host, zmq::socket_t& router,
                  std::function<void()> kick, std::function<void()> catch_up);
  ~dispatch_server() override;
  dispatch_server(const dispatch_server&) = delete;
  dispatch_server& operator=(const dispatch_server&) = delete;

  /// Checks the pools' options and binds their sockets. Errors name the pool.
  result<void> start();
  /// Ends every job (its client hears `shutting_down`), then stops the pools.
  void stop() noexcept;

  /// A request of a dispatch type from the connection `identity` (descriptor
  /// `fd`, -1 if unknown); `batch` is a submit's third frame. Returns the
  /// reply to send, or nullopt for a notification that succeeded.
  std::optional<result<Value>> handle(const std::string& identity, int fd, std::uint64_t id,
                                      protocol::message_type type, const Map& args,
                                      zmq::message_t* batch);
  /// The connection with descriptor `fd` closed: its jobs are cancelled.
  void on_connection_closed(int fd);

  /// Pools, workers and jobs, for the broker's `stats`.
  Value stats() const;
  /// A pool by name, or null.
  worker_pool* pool(std::string_view name);

  // job_listener
  void on_output(worker_pool& pool, job_id job) override;
  void on_moved(worker_pool& pool, const session_moved& moved) override;

 private:
  using clock = std::chrono::steady_clock;

  struct job {
    std::uint64_t id = 0;
    worker_pool* pool = nullptr;
    job_id engine_job = 0;
    std::string identity;
    int fd = -1;
    std::uint64_t unacked = 0;
    std::uint64_t accepted = 0;                   // batches the engine took: its next seq
    std::map<std::uint64_t, std::uint64_t> seqs;  // engine seq → client seq, where they differ
    clock::time_point last_heard{};
    std::chrono::milliseconds idle_timeout{0};
  };

  result<worker_pool*> resolve(const Map& args, std::string_view request);
  result<Value> open(const std::string& identity, int fd, const Map& args);
  result<job*> find(const std::string& identity, const Map& args, protocol::message_type type);
  std::optional<result<Value>> submit(job& j, std::uint64_t seq, const Map& args,
                                      zmq::message_t* batch);
  void pump(job& j);
  void end(job& j, const std::optional<dispatch_error>& error);
  void forget(job& j);
  void send(const std::string& identity, std::vector<zmq::message_t>& frames);
  void check_idle();

  std::vector<pool_options> pool_options_;
  pool_host host_;
  zmq::socket_t& router_;
  std::function<void()> kick_;
  std::function<void()> catch_up_;
  std::map<std::string, std::unique_ptr<worker_pool>, std::less<>> pools_;
  std::map<std::uint64_t, job> jobs_;
  std::map<std::pair<const worker_pool*, job_id>, std::uint64_t> by_engine_;
  std::uint64_t next_job_ = 1;
  std::optional<boost::asio::steady_timer> idle_timer_;
  bool stopping_ = false;
};

}  // namespace slither::detail
