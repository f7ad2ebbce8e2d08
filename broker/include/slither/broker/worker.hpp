// The worker runtime: a process that serves one of a broker's worker pools.
//
// A worker joins its pool through the broker's control socket (a
// `worker_join` request: which pool, its pid, its credit window), learns its
// worker id and its endpoints, connects its tasks socket (PULL) and the
// pool's results socket (PUSH), and says hello. From then on the caller
// runs batches on its own thread (`next`, then `respond`; or `serve` with a
// handler). While it waits in `next` it reads the tasks socket itself, so a
// batch reaches it without a hand-off between threads (nor a wake-up of
// another one); while it runs a batch, a receiving thread reads for it
// (queueing batches, and acting on a stop within 50 ms). That thread also
// sends the heartbeats, so a handler that holds a lock for a long time
// (Python's GIL) never makes the worker look dead.
//
//   auto w = slither::worker_runtime::connect(slither::worker_options::from_environment().value())
//                .value();
//   w.serve([](const slither::worker_batch& b) -> slither::batch_outcome {
//     slither::batch_results out;
//     out.count = b.count();
//     out.payload.assign(b.payload().begin(), b.payload().end());   // echo
//     return out;
//   });
//
// A batch's payload and a result's payload are opaque to the broker: the
// producer and the handler agree on them. Slither's clients send the codec's
// batch frame of the items (`slither::encode_batch`, `_native.encode_batch`
// in Python; `decode_batch` reads it), and expect a batch frame of the
// results: one per item, in order, with a placeholder (null) for each item
// listed in `batch_results::errors`.
//
// The worker stops when the broker says so (recycling, shutdown), when the
// broker falls silent for `worker_info::heartbeat_misses` heartbeat
// intervals (it died: workers never outlive their broker), or on `close`.
//
// Caveats
// - A batch whose timeout passes makes the broker kill its worker: a worker
//   the broker spawned gets SIGKILL; one started by others is told to stop
//   at once, and with `worker_options::exit_on_kill` (the default) the
//   runtime then ends the process with `_exit`, since a running handler
//   cannot be interrupted.
// - One runtime per process: the broker knows a worker by its pid. Do not
//   fork() a process with a running runtime and use it in the child.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "slither/broker/client.hpp"
#include "slither/broker/export.hpp"
#include "slither/core/error.hpp"
#include "slither/core/executor.hpp"
#include "slither/core/item.hpp"

namespace slither {

/// How a worker finds its broker and what it offers.
struct SLITHER_BROKER_EXPORT worker_options {
  /// Where the broker's control socket is (endpoint, runtime_dir or ns), and
  /// how long the join may take.
  client_options broker;
  /// The pool to serve; empty: the broker's only pool.
  std::string pool;
  /// Batches the worker may hold at once (its credit window), at least 1.
  std::uint32_t credits = 2;
  /// The token a broker gives the workers it spawns (environment
  /// SLITHER_WORKER_TOKEN); empty for a worker started by others.
  std::string token;
  /// When the broker kills this worker (a batch overran its timeout), end
  /// the process at once with `_exit`. Off: `next` returns nullopt instead,
  /// and the running handler's answer is dropped.
  bool exit_on_kill = true;

  /// Options from the environment, as a broker sets it for the workers it
  /// spawns: SLITHER_CONTROL_ENDPOINT, SLITHER_RUNTIME_DIR, SLITHER_NAMESPACE,
  /// SLITHER_POOL, SLITHER_WORKER_TOKEN, SLITHER_WORKER_CREDITS, and for a
  /// remote worker of a tcp pool SLITHER_CURVE_SERVER_KEY and
  /// SLITHER_CURVE_SECRET_KEY (Z85 keys; all optional). Errors: a malformed
  /// number, named.
  static result<worker_options> from_environment();
};

/// What the broker told a worker when it joined.
struct SLITHER_BROKER_EXPORT worker_info {
  worker_id id = 0;
  std::string pool;
  /// The broker's namespace, for attaching to its stores.
  std::string ns;
  /// The broker's stores, by name.
  std::vector<std::string> stores;
  /// True if the worker runs on the broker's machine (an ipc pool), so it
  /// can attach to the stores' shared memory; false for a tcp pool.
  bool local = true;
  /// How often each side sends a heartbeat, and how many intervals of
  /// silence count as death.
  std::chrono::milliseconds heartbeat{500};
  std::uint32_t heartbeat_misses = 4;
};

/// One batch a worker received. It owns its frames: copies share them, and
/// `payload()` stays valid while any copy lives.
class SLITHER_BROKER_EXPORT worker_batch {
 public:
  worker_batch() = default;

  job_id job() const noexcept { return job_; }
  /// The broker's batch id (unique in the pool).
  std::uint64_t batch() const noexcept { return batch_; }
  /// 1 on the first run, 2 on the first retry...
  std::uint32_t attempt() const noexcept { return attempt_; }
  /// Items in the payload.
  std::size_t count() const noexcept { return count_; }
  /// What to run: "module:function" for Python workers.
  const std::string& function() const noexcept { return target_->function; }
  /// The job's pipe, stage, session id and metadata.
  const Context& context() const noexcept { return target_->context; }
  /// The items, encoded as their producer sent them.
  std::span<const std::byte> payload() const noexcept { return payload_; }

 private:
  friend class worker_runtime;
  job_id job_ = 0;
  std::uint64_t batch_ = 0;
  std::uint32_t attempt_ = 0;
  std::size_t count_ = 0;
  std::shared_ptr<const job_target> target_ = std::make_shared<const job_target>();
  std::span<const std::byte> payload_;
  std::shared_ptr<const void> frames_;
};

/// A batch's results: `count` results encoded in `payload` (one per item, in
/// order), and the items the handler failed (`slither.ItemError`), each with
/// a placeholder in `payload`. A `count` that differs from the batch's fails
/// the batch (`bad_result`).
struct SLITHER_BROKER_EXPORT batch_results {
  std::vector<std::byte> payload;
  std::size_t count = 0;
  std::vector<indexed_error> errors;
};

/// The handler raised: the whole batch failed.
struct SLITHER_BROKER_EXPORT batch_exception {
  std::string type;
  std::string message;
  std::string traceback;
};

/// What a handler made of a batch.
using batch_outcome = std::variant<batch_results, batch_exception>;

/// Runs one batch; an exception it throws fails the batch (`batch_exception`
/// with the exception's type and message).
using worker_handler = std::function<batch_outcome(const worker_batch&)>;

/// A worker's connection to its pool. Move-only; the destructor calls `close`.
class SLITHER_BROKER_EXPORT worker_runtime {
 public:
  /// Joins the pool, connects and says hello. Errors: the broker's
  /// (`not_found`: no such pool), `unavailable` (no broker answered within
  /// `options.broker.timeout`), `invalid_argument` (bad options), `io_error`.
  static result<worker_runtime> connect(worker_options options);

  worker_runtime(worker_runtime&&) noexcept;
  worker_runtime& operator=(worker_runtime&&) noexcept;
  worker_runtime(const worker_runtime&) = delete;
  worker_runtime& operator=(const worker_runtime&) = delete;
  ~worker_runtime();

  /// What the broker said at join.
  const worker_info& info() const noexcept;

  /// The next batch, waiting at most `timeout` (none: until one comes or the
  /// worker stops). nullopt: the wait timed out, or the worker stopped
  /// (`stopped()` says why). Call from one thread at a time.
  std::optional<worker_batch> next(std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  /// Sends a batch's outcome to the broker (and with it a credit back).
  /// Errors: `unavailable` (the worker stopped, or the broker does not take
  /// messages), `limit_exceeded` (more errors than items).
  result<void> respond(const worker_batch& batch, batch_outcome outcome);
  /// Runs `handler` on every batch until the worker stops; returns why it stopped.
  std::string serve(const worker_handler& handler);

  /// Why the worker stopped ("stopped by the broker", "the broker fell
  /// silent..."), or nullopt while it serves.
  std::optional<std::string> stopped() const;
  /// Wakes a `next` that waits, from any thread, and makes the worker stop.
  void interrupt() noexcept;
  /// Tells the broker goodbye and closes the sockets. Safe twice; not while
  /// another thread is in `next` (`interrupt` that one first).
  void close() noexcept;

  struct impl;  ///< implementation detail

 private:
  explicit worker_runtime(std::unique_ptr<impl> p) noexcept;
  std::unique_ptr<impl> p_;
};

}  // namespace slither
