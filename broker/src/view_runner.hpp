// The threads that run views: a few per store, so that slow views of one
// store never hold up the views of another, and a stop that waits only so long.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace slither::detail {

/// Posts work to the broker's serving loop from threads that may outlive it
/// (a view the broker abandoned at stop): after `close()`, posting does nothing.
class loop_link {
 public:
  explicit loop_link(boost::asio::io_context& io) : io_(&io) {}
  /// Runs `fn` on the loop; false (and `fn` dropped) once closed.
  bool post(std::function<void()> fn);
  /// From now on `post` does nothing; waits for a `post` in progress.
  void close() noexcept;

 private:
  std::mutex mutex_;
  boost::asio::io_context* io_;
};

/// Runs view calls on a fixed set of threads, at most `per_store` at once for
/// any one store; calls past that wait in order. A call whose deadline has
/// passed when its turn comes is dropped, not run (its caller has had its
/// timeout). Tasks must not refer to anything that dies with the broker but
/// through shared ownership: a task still running at the end of `stop`'s
/// grace period is abandoned to its thread, which is detached.
class view_runner {
 public:
  /// One call. `run` does the work; `drop` (may be empty) is called instead
  /// when the call will not run (deadline passed, or the runner stopped).
  struct task {
    std::string store;  ///< whose concurrency it counts against; empty: none
    std::chrono::steady_clock::time_point deadline;
    std::function<void()> run;
    std::function<void()> drop;
  };

  /// `threads` threads, at most `per_store` calls of one store at once.
  view_runner(std::size_t threads, std::size_t per_store);
  view_runner(const view_runner&) = delete;
  view_runner& operator=(const view_runner&) = delete;
  /// Calls `stop(0)` if `stop` was not called.
  ~view_runner();

  /// Queues a call. False once stopping.
  bool submit(task t);
  /// Calls running or waiting.
  std::size_t in_flight() const;

  /// Stops taking calls, drops those still waiting, waits up to `grace` (or
  /// until `hurry()`) for running ones to return, then abandons the rest.
  /// Returns how many calls were abandoned. Safe twice.
  std::size_t stop(std::chrono::milliseconds grace);
  /// Makes a `stop` in progress (or the next one) give up waiting at once.
  void hurry();

 private:
  struct shared;  // outlives the runner while abandoned threads still run
  std::shared_ptr<shared> state_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
};

}  // namespace slither::detail
