// local_pool: Dispatch without Python. Threads run C++ batch handlers as the
// executor of a dispatch engine, for C++ programs that want batched fan-out
// with backpressure, ordering and error policies in process, and for tests
// of everything the engine promises, with real threads.
//
//   slither::local_pool_options po;
//   po.workers = 4;
//   auto pool = slither::local_pool::create(po).value();
//   pool.add_function("double", [](std::span<const slither::Item> items,
//                                  const slither::batch_context&) {
//     std::vector<slither::result<slither::Value>> out;
//     for (const auto& i : items) out.emplace_back(i.payload.as<std::int64_t>() * 2);
//     return out;
//   });
//   slither::dispatch_options opts;
//   opts.function = "double";
//   auto report = pool.run(opts, slither::wrap_many(values)).value();
//
// A worker here is a thread, so "killing" one abandons it: its batches are
// failed or retried at once and a replacement starts; the thread itself
// stops when its handler returns (handlers that may run long should watch
// `batch_context::stop`). A handler throws `worker_crash` to die the way a
// process killed mid-batch would; tests use that and `kill_worker`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include "slither/core/dispatch.hpp"
#include "slither/core/error.hpp"
#include "slither/core/export.hpp"
#include "slither/core/item.hpp"

namespace slither {

namespace detail {
struct local_pool_state;
}  // namespace detail

/// Where a C++ handler runs.
struct SLITHER_CORE_EXPORT batch_context {
  /// The job's context (pipe, stage, session id, metadata).
  const Context& context;
  worker_id worker = 0;
  std::uint64_t batch = 0;
  std::uint32_t attempt = 0;
  /// Requested when the worker is killed (its batch timed out) or the pool
  /// closes: a long handler should return soon after; its answer is dropped.
  std::stop_token stop;
};

/// A C++ batch handler: one result per item, in order. An `error_info` fails
/// that item alone (an item error); an exception fails the whole batch.
using batch_handler =
    std::function<std::vector<result<Value>>(std::span<const Item>, const batch_context&)>;

/// Thrown by a handler to make its worker die mid-batch, as a process killed
/// by SIGKILL would: the worker's batches are failed (or retried) and a
/// replacement starts.
class SLITHER_CORE_EXPORT worker_crash : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Options of a `local_pool`.
struct SLITHER_CORE_EXPORT local_pool_options {
  /// Worker threads (at least 1).
  std::size_t workers = 2;
  /// Credit window per worker, in batches (at least 1).
  std::uint32_t credits = 2;
  /// Start a replacement when a worker dies, is killed or is recycled.
  bool respawn = true;
  /// The engine's options (circuit breaker, accounting checks).
  engine_options engine;
};

/// Everything a job produced, for `local_pool::run`.
struct SLITHER_CORE_EXPORT dispatch_report {
  /// One per input item, in the job's order, whatever its status.
  std::vector<dispatch_result> results;
  /// Why the job stopped early (halt, circuit), if it did.
  std::optional<dispatch_error> error;
  /// Sessions that lost their worker during the job.
  std::vector<session_moved> moves;
};

/// The results of one job, pulled one at a time (`local_pool::stream`).
///
/// Input is read from the job's source on the thread that calls `next`, only
/// as far as the job's window allows: a consumer that stops calling `next`
/// stops the input. Destroying the job cancels what is still running.
class SLITHER_CORE_EXPORT local_job {
 public:
  local_job(local_job&&) noexcept;
  local_job& operator=(local_job&&) noexcept;
  local_job(const local_job&) = delete;
  local_job& operator=(const local_job&) = delete;
  ~local_job();

  /// The next result, waiting for it; nullopt once every item has ended.
  /// Throws `slither::error` if the source throws or yields an item the job
  /// refuses (a bad weight or key, named): the job is then cancelled, later
  /// calls return its remaining (cancelled) results, and items the source
  /// gave after the refused one are not dispatched.
  std::optional<dispatch_result> next();
  /// Why the job stopped early, once `next` has returned nullopt.
  const std::optional<dispatch_error>& error() const noexcept { return error_; }
  /// Sessions that lost their worker so far.
  std::vector<session_moved> moves() const;
  /// Stops the job: what has not ended comes out `cancelled`.
  void cancel();
  /// The engine's id of this job.
  job_id id() const noexcept { return id_; }

 private:
  friend class local_pool;
  // Internal (its type is detail::): not exported from a shared library.
  SLITHER_CORE_NO_EXPORT local_job(std::shared_ptr<detail::local_pool_state> s, job_id id,
                                   std::function<std::optional<Item>()> source);
  void feed(std::unique_lock<std::mutex>& lock);
  void release() noexcept;

  std::shared_ptr<detail::local_pool_state> s_;
  job_id id_ = 0;
  std::function<std::optional<Item>()> source_;
  bool source_done_ = false;
  std::deque<dispatch_result> buffer_;
  bool ended_ = false;
  std::optional<dispatch_error> error_;
};

/// A dispatch engine driving threads that run C++ handlers. Thread-safe:
/// any thread may submit jobs and read their results.
///
/// Caveats: telemetry handlers run under the pool's lock and must not call
/// the pool. A handler that ignores `batch_context::stop` keeps its thread
/// (not its batch) until it returns, and the pool's destructor waits for it.
/// Destroying the pool ends every open job with an error.
class SLITHER_CORE_EXPORT local_pool {
 public:
  /// Starts the worker threads. Errors: bad options (named), no threads.
  static result<local_pool> create(local_pool_options options = {});

  local_pool(local_pool&&) noexcept;
  local_pool& operator=(local_pool&&) noexcept;
  local_pool(const local_pool&) = delete;
  local_pool& operator=(const local_pool&) = delete;
  ~local_pool();

  /// Registers (or replaces) the handler that jobs name in `function`.
  void add_function(std::string name, batch_handler handler);

  /// Starts a job whose input comes from `source` (nullopt: the input ended).
  /// Errors: bad options, an unknown function, the circuit open.
  result<local_job> stream(dispatch_options options, std::function<std::optional<Item>()> source);
  /// Runs a job over `items` to its end.
  result<dispatch_report> run(dispatch_options options, std::vector<Item> items);

  /// Ids of the live workers.
  std::vector<worker_id> workers() const;
  /// Kills a worker as SIGKILL would (for tests and operators). False if unknown.
  bool kill_worker(worker_id worker);
  /// Replaces a worker once it has finished its batches, losing nothing.
  /// False if unknown.
  bool recycle_worker(worker_id worker);
  /// The engine's view: workers, jobs, counters.
  pool_stats stats() const;

 private:
  SLITHER_CORE_NO_EXPORT explicit local_pool(std::shared_ptr<detail::local_pool_state> s);
  void close() noexcept;
  std::shared_ptr<detail::local_pool_state> s_;
};

}  // namespace slither
