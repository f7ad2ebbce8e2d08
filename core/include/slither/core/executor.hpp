// The executor side of Dispatch: what the engine asks workers to do, and the
// events an executor reports back.
//
// The dispatch engine (dispatch.hpp) never touches a socket, a thread or a
// process. An *executor* owns the workers: it starts each `batch_task` the
// engine emits on the worker it names, kills a worker when asked, retires a
// drained one, and reports everything that happens to its workers as
// `executor_event`s, which its driver feeds to `dispatch_engine::handle`.
// The broker's worker pool (ZeroMQ PUSH/PULL to Python processes) is one
// executor; `local_pool` (threads running C++ handlers) is another.
//
// Worker ids are the executor's, unique for the executor's lifetime: a
// restarted worker is a new worker with a new id, so nothing a dead worker
// sends late can be taken for its successor's.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "slither/core/export.hpp"
#include "slither/core/item.hpp"
#include "slither/core/value.hpp"

namespace slither {

/// The clock of every deadline and timestamp in Dispatch.
using dispatch_clock = std::chrono::steady_clock;
/// A worker, as its executor names it (never 0, never reused).
using worker_id = std::uint64_t;
/// A dispatch call (a job) on one engine (never 0).
using job_id = std::uint64_t;

/// Why a batch or an item failed.
enum class failure_kind : std::uint8_t {
  item_error,    ///< the handler marked this one item as failed (`slither.ItemError`)
  exception,     ///< the handler raised: the whole batch failed
  bad_result,    ///< the worker answered with something unusable (wrong length, unencodable)
  worker_died,   ///< the worker exited or was killed while it held the batch
  timeout,       ///< the batch overran its timeout, so its worker was killed
  quarantined,   ///< the batch killed its worker on every attempt (a poison batch)
  circuit_open,  ///< the pool's workers kept dying, so the engine stopped dispatching
  cancelled,     ///< the job stopped (halted, cancelled) before the item ended
};

/// Stable lower-case name of a kind ("worker_died").
SLITHER_CORE_EXPORT std::string_view to_string(failure_kind kind) noexcept;

/// A failure as data: what went wrong, where, and on which attempt.
struct SLITHER_CORE_EXPORT dispatch_error {
  failure_kind kind = failure_kind::exception;
  /// The exception's type ("ValueError"), or the kind's name when there is none.
  std::string type;
  std::string message;
  /// The worker's traceback, when it sent one.
  std::string traceback;
  /// The batch, attempt (from 1) and worker it happened on; 0 when unknown.
  std::uint64_t batch = 0;
  std::uint32_t attempt = 0;
  worker_id worker = 0;

  /// One line for logs and exceptions: "ValueError: bad input (batch 3,
  /// attempt 2, worker 5)".
  std::string describe() const;

  friend bool operator==(const dispatch_error&, const dispatch_error&) = default;
};

/// Encoded bytes that Dispatch carries without reading them: a batch's
/// input or results as they arrived (for the broker, a ZeroMQ frame), kept
/// alive by `owner`, so they can be passed on without a copy.
struct SLITHER_CORE_EXPORT opaque_bytes {
  std::span<const std::byte> bytes;
  /// Owns the memory `bytes` points into (null for static data).
  std::shared_ptr<const void> owner;

  /// Takes `data` over: the result owns it.
  static opaque_bytes adopt(std::vector<std::byte> data);
  std::size_t size() const noexcept { return bytes.size(); }
};

/// A batch of `count` items that its producer formed and encoded (a Python
/// client), fed to an encoded job with `dispatch_engine::offer_batch`.
struct SLITHER_CORE_EXPORT opaque_batch {
  std::size_t count = 0;
  opaque_bytes payload;
};

/// What a job's batches run: the function (for Python workers
/// "module:function"; for `local_pool` a registered name) and its context.
struct SLITHER_CORE_EXPORT job_target {
  std::string function;
  Context context;
};

/// One batch to run on one worker (the engine's `run` action).
///
/// `items` (or `payload`) is shared and immutable: the engine keeps the
/// batch until it ends, for retries, while the executor reads it from any
/// thread.
struct SLITHER_CORE_EXPORT batch_task {
  std::uint64_t batch = 0;
  /// 1 on the first run, 2 on the first retry...
  std::uint32_t attempt = 0;
  worker_id worker = 0;
  job_id job = 0;
  /// The batch's items; null for a batch of an encoded job (see `payload`).
  std::shared_ptr<const std::vector<Item>> items;
  /// Items in the batch, whichever form it has.
  std::size_t count = 0;
  /// An encoded job's batch: its items as the producer encoded them, to be
  /// passed on as they are. Empty for a batch of items.
  opaque_bytes payload;
  std::shared_ptr<const job_target> target;
  /// When the engine will declare the batch timed out (and ask for the
  /// worker to be killed); the executor may use it to stop earlier.
  std::optional<dispatch_clock::time_point> deadline;
};

/// One item's answer: its result value, or why it failed (kind `item_error`).
using item_result = std::variant<Value, dispatch_error>;

/// A worker is ready with `credits` batches of window (0 is allowed: it
/// grants credit later). `restart` marks a replacement for a lost worker.
struct SLITHER_CORE_EXPORT worker_joined {
  worker_id worker = 0;
  std::uint32_t credits = 2;
  bool restart = false;
};

/// A worker can take `credits` more batches. Workers grant a credit back as
/// they finish a batch; the engine sends only against credit it holds.
struct SLITHER_CORE_EXPORT credit_granted {
  worker_id worker = 0;
  std::uint32_t credits = 1;
};

/// A batch ran: one result per item, in the batch's order. A wrong count is
/// the worker's fault, and fails the batch as `bad_result`.
struct SLITHER_CORE_EXPORT batch_completed {
  worker_id worker = 0;
  std::uint64_t batch = 0;
  std::uint32_t attempt = 0;
  std::vector<item_result> results;
};

/// One item of an encoded batch that the handler failed (`slither.ItemError`).
struct SLITHER_CORE_EXPORT indexed_error {
  /// The item's place in its batch, from 0.
  std::uint32_t index = 0;
  /// Why; its kind becomes `item_error`.
  dispatch_error error;
};

/// A batch of an encoded job ran: the handler's results, encoded as the
/// worker sent them (one per item, in the batch's order; a failed item holds
/// a placeholder), and the items it failed, so that error policies apply
/// without decoding the results. `count` is how many results the worker says
/// `results` holds: a wrong count (or a failure index past it, or twice)
/// fails the batch as `bad_result`.
struct SLITHER_CORE_EXPORT batch_encoded {
  worker_id worker = 0;
  std::uint64_t batch = 0;
  std::uint32_t attempt = 0;
  std::size_t count = 0;
  opaque_bytes results;
  std::vector<indexed_error> failures;
};

/// A batch failed as a whole (the handler raised, or its answer could not be
/// used); the worker lives on. `error.kind` is `exception` or `bad_result`.
struct SLITHER_CORE_EXPORT batch_failed {
  worker_id worker = 0;
  std::uint64_t batch = 0;
  std::uint32_t attempt = 0;
  dispatch_error error;
};

/// A worker is gone: exited, crashed, killed, or missed its heartbeats. The
/// batches it held fail as `worker_died` (or are retried). `expected` marks
/// a retired worker's clean exit, which does not count as a death.
struct SLITHER_CORE_EXPORT worker_left {
  worker_id worker = 0;
  std::string reason;
  bool expected = false;
};

/// The executor cannot keep workers alive (they fail to start: a missing
/// module, a bad interpreter). Opens the engine's circuit with this error.
struct SLITHER_CORE_EXPORT pool_failed {
  dispatch_error error;
};

/// Everything an executor reports to the engine.
using executor_event = std::variant<worker_joined, credit_granted, batch_completed, batch_failed,
                                    worker_left, pool_failed, batch_encoded>;

/// Runs batches on workers, for a dispatch engine.
///
/// The engine's driver calls these for the engine's `batch_task`,
/// `kill_worker` and `retire_worker` actions, and feeds what follows back to
/// the engine as `executor_event`s: a result or failure per task (a
/// `batch_encoded` answers a task that carried a `payload`), credit
/// grants, `worker_joined` for a replacement, `worker_left` for a worker that
/// dies. None of these may block. The driver calls them between engine calls,
/// so an event known at once (a replacement started) may be fed to the engine
/// right away; the driver then carries out the actions that follow too.
///
/// Caveats: a task for a worker the executor already lost is dropped
/// silently; the engine learns of the loss from `worker_left` and fails the
/// batches it sent there.
class SLITHER_CORE_EXPORT executor {
 public:
  virtual ~executor() = default;
  /// Sends `task` to `task.worker`.
  virtual void run(batch_task task) = 0;
  /// Kills `worker` (it overran a timeout). The engine has already failed its
  /// batches and forgotten it; a replacement joins as a new worker.
  virtual void kill(worker_id worker, const dispatch_error& reason) = 0;
  /// Retires a drained worker (it holds no batch), e.g. to recycle it; it
  /// then leaves with `worker_left{.expected = true}`.
  virtual void retire(worker_id worker) = 0;
};

}  // namespace slither
