// The Dispatch engine: batched fan-out of items to a pool of workers, as a
// state machine with no I/O of its own.
//
// One `dispatch_engine` serves one pool of workers and any number of jobs
// (dispatch calls) that share it. It owns the decisions — batching, credits,
// `max_in_flight`, least-loaded choice, session affinity, ordering, error
// policies, retries, poison batches, the circuit breaker, timeouts,
// accounting, telemetry — and nothing else: no sockets, threads, processes
// or clocks. Its driver feeds it *events* and carries out its *actions*, so
// the same engine runs deterministically in unit tests, under `local_pool`'s
// lock, and inside the broker's Asio loop.
//
// ## The protocol, for a driver
//
// Every call that changes state takes `now` (the driver's
// `dispatch_clock::now()`; tests pass made-up times) and may queue actions.
// After each call, drain `next_action()` and carry every action out:
//
// | action           | the driver...                                              |
// |------------------|------------------------------------------------------------|
// | `batch_task`     | has the executor run it on `task.worker` (`executor::run`) |
// | `kill_worker`    | has the executor kill the worker (a timeout)               |
// | `retire_worker`  | has the executor retire the drained worker (recycling)     |
// | `output_ready`   | wakes the job's consumer: `take_results` has something, or |
// |                  | the job finished (`status`)                                |
// | `input_wanted`   | may feed the job up to `items` items (`input_capacity`)    |
// | `session_moved`  | tells the job's caller its session lost its worker         |
// | `circuit_opened` | logs it: every running job ended with this error           |
//
// Events, in any order the world produces them:
//
// - from the executor, through `handle(executor_event)`: `worker_joined`
//   (with its credit window), `credit_granted`, `batch_completed` (per-item
//   results and per-item errors), `batch_failed` (type, message, traceback),
//   `worker_left` (died; the engine knows which batches it held),
//   `pool_failed` (workers cannot start);
// - from the job's producer: `offer` / `offer_batch` (input items, never
//   more than `input_capacity`), `close_input` (the input is exhausted);
// - from the job's consumer: `take_results` (what it consumed frees room for
//   more input: this is the backpressure), `cancel`, `close_job`;
// - from the driver's timer: `tick(now)` at `next_deadline()` (timeouts,
//   retry backoff, circuit cooldown).
//
// A job's life: `open_job` → (`offer`... `take_results`...)* → `close_input`
// → `take_results` until `status().state == finished` → `close_job`.
//
// A broker driving a pool of worker processes, in outline:
//
//   on a worker's hello:      engine.handle(worker_joined{w, window}, now)
//   on a client's dispatch:   job = engine.open_job(opts, now)        // or the error
//   on input_wanted{job, n}:  ask the client for n - (items already asked for)
//   on items from the client: engine.offer(job, items, now)           // close_input at its end
//   on batch_task t:          send t.items to t.worker's socket (executor::run)
//   on a worker's reply:      engine.handle(batch_completed{...} or batch_failed{...}, now),
//                             engine.handle(credit_granted{w, 1}, now)
//   on a missed heartbeat:    engine.handle(worker_left{w, "no heartbeat"}, now)
//   on output_ready{job}:     send engine.take_results(job, what the client can take)
//   on session_moved:         tell the job's client
//   on kill_worker{w}:        SIGKILL it; the supervisor's replacement joins as a new worker
//   timer at next_deadline(): engine.tick(now)
//
// A Python client whose batching needs Python callables (`key_fn`,
// `weight_fn`) batches on its side and uses `preformed_batch` with
// `offer_batch`. The engine holds `Item`s; an ndarray payload can be a view
// over the received message (`ndarray::view`), so large arrays are not copied.
//
// An *encoded* job (`preformed_batch{.encoded = true}`) never holds items:
// its producer offers `opaque_batch`es (a count and the encoded bytes), its
// tasks carry those bytes (`batch_task::payload`), workers answer with
// `batch_encoded` (encoded results plus the short list of failed items, so
// policies apply without decoding), and its consumer takes `batch_output`s
// with `take_batches`. This is how a broker forwards batches between a
// client and workers as the same frames, never decoding them. Accounting,
// windows and policies count items as for any job.
//
// Backpressure is exact: a job holds at most `job_window(options)` items
// between `offer` and `take_results`, counting the batcher, batches queued
// or at workers, the reorder buffer and results not yet taken. A consumer
// that stops taking results stops the input, however long it pauses.
//
// Exactly-once: every item offered ends exactly once, as one
// `dispatch_result` (ok, skipped, routed, failed or cancelled), whatever
// workers die when. Late answers from dead or timed-out workers, and
// answers for batches already retried elsewhere, are recognised by
// (batch, attempt, worker) and ignored. `check_accounting()` verifies the
// books; with `engine_options::verify_accounting` the engine also tracks
// every item and throws `slither::error(internal)` the moment one would end
// twice.
//
// Telemetry: `slither.dispatch.batch.start` when a batch is sent,
// `.stop` when it completes, `.exception` when it fails (measurements
// `size`, `duration_us`, `item_errors`; metadata `batch`, `job`, `worker`,
// `attempt`, `function`, `session`, and for exceptions `kind`, `type`,
// `message`). Handlers run inside the engine's turn: they must not call the
// engine. With no handler attached this costs one relaxed load per batch.
//
// Caveats: not thread-safe (one thread, or one lock, at a time). Time only
// moves when the driver says so: without `tick` calls there are no
// timeouts and no retries after backoff.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "slither/core/dispatch_options.hpp"
#include "slither/core/error.hpp"
#include "slither/core/executor.hpp"
#include "slither/core/export.hpp"
#include "slither/core/item.hpp"

namespace slither {

namespace detail {
struct dispatch_state;
}  // namespace detail

/// How one item ended.
enum class item_status : std::uint8_t {
  ok,         ///< `item.payload` is the handler's result
  skipped,    ///< failed under `skip_policy`; `item.payload` is the input
  routed,     ///< failed under `route_policy`; `item.route` names the output
  failed,     ///< failed under `halt_policy` (the job's error)
  cancelled,  ///< the job stopped before the item ended
};

/// Stable lower-case name of a status ("skipped").
SLITHER_CORE_EXPORT std::string_view to_string(item_status status) noexcept;

/// One item's outcome. `item` keeps the input's id and meta; its payload is
/// the result when `ok`, and the input payload otherwise.
struct SLITHER_CORE_EXPORT dispatch_result {
  Item item;
  item_status status = item_status::ok;
  /// Why, unless `ok` (shared by the items of one failed batch).
  std::shared_ptr<const dispatch_error> error;

  bool ok() const noexcept { return status == item_status::ok; }
};

/// How one item of an encoded batch ended, when it did not end `ok`.
struct SLITHER_CORE_EXPORT item_outcome {
  /// The item's place in its batch, from 0.
  std::uint32_t index = 0;
  item_status status = item_status::skipped;
  std::shared_ptr<const dispatch_error> error;
};

/// One batch of an encoded job's output (`take_batches`), in the job's order.
struct SLITHER_CORE_EXPORT batch_output {
  /// The batch's place among the job's batches, from 0, in the order they
  /// were offered: with `as_completed` it says which input this answers.
  std::uint64_t seq = 0;
  /// Items in the batch.
  std::size_t count = 0;
  /// True: `payload` holds the handler's results, one per item, and the
  /// items in `failures` (by index, ascending) hold placeholders. False: the
  /// batch ended as a whole (it failed, or was cancelled): `payload` is its
  /// input as offered, and every item ended with `status` and `error`.
  bool has_results = true;
  opaque_bytes payload;
  std::vector<item_outcome> failures;
  item_status status = item_status::ok;
  std::shared_ptr<const dispatch_error> error;
};

/// Kill this worker: a batch on it overran its timeout. The engine has
/// already failed the worker's batches and forgotten the worker.
struct SLITHER_CORE_EXPORT kill_worker {
  worker_id worker = 0;
  dispatch_error reason;
};

/// A worker being drained (`drain_worker`) holds no batch any more.
struct SLITHER_CORE_EXPORT retire_worker {
  worker_id worker = 0;
};

/// The job has results to take, or has finished.
struct SLITHER_CORE_EXPORT output_ready {
  job_id job = 0;
};

/// The job can take `items` more input items now (its whole capacity, not
/// an increment: subtract what is already on its way).
struct SLITHER_CORE_EXPORT input_wanted {
  job_id job = 0;
  std::size_t items = 0;
};

/// The job's session lost its worker `from` (it died) and now runs on `to`;
/// per-process state the handler kept there is gone.
struct SLITHER_CORE_EXPORT session_moved {
  job_id job = 0;
  std::string session;
  worker_id from = 0;
  worker_id to = 0;
};

/// The pool's workers kept dying: every running job ended with `error`, and
/// `open_job` refuses new jobs until the cooldown passes.
struct SLITHER_CORE_EXPORT circuit_opened {
  dispatch_error error;
};

/// Everything the engine asks its driver to do.
using dispatch_action = std::variant<batch_task, kill_worker, retire_worker, output_ready,
                                     input_wanted, session_moved, circuit_opened>;

/// When the pool counts as broken: `max_deaths` unexpected worker exits
/// (crashes, kills, timeouts) within `window`. While the circuit is open,
/// for `cooldown`, running jobs end with a `circuit_open` error and new jobs
/// are refused; then deaths are counted afresh.
struct SLITHER_CORE_EXPORT circuit_breaker {
  std::uint32_t max_deaths = 10;
  std::chrono::milliseconds window{10'000};
  std::chrono::milliseconds cooldown{5'000};
};

/// True if the library was built without NDEBUG: accounting checks are then on by default.
SLITHER_CORE_EXPORT bool debug_accounting_default() noexcept;

/// Options of the engine (of the pool), as opposed to a job's.
struct SLITHER_CORE_EXPORT engine_options {
  circuit_breaker breaker;
  /// Track every item and check the books on every call (costs memory and
  /// time; on by default in debug builds of the library, and in its tests).
  bool verify_accounting = debug_accounting_default();
  /// Credits one worker may hold; grants beyond are ignored.
  std::uint32_t max_credits = 1024;
};

/// Where a job stands.
enum class job_state : std::uint8_t {
  running,   ///< items are still to come or to end
  finished,  ///< every item ended and every result was taken
};

/// A job's state, error and buffers.
struct SLITHER_CORE_EXPORT job_status {
  job_state state = job_state::running;
  bool input_closed = false;
  /// Why the job stopped early (halt, cancel, circuit), if it did.
  std::optional<dispatch_error> error;
  /// Items `offer` would take now.
  std::size_t capacity = 0;
  /// Results waiting for `take_results`.
  std::size_t ready = 0;
};

/// One worker, for `stats`.
struct SLITHER_CORE_EXPORT worker_stats {
  worker_id id = 0;
  std::uint32_t credits = 0;
  std::uint32_t in_flight = 0;
  std::uint64_t batches_ok = 0;
  std::uint64_t batches_failed = 0;
  bool draining = false;
};

/// One job, for `stats`.
struct SLITHER_CORE_EXPORT job_stats {
  job_id id = 0;
  std::string function;
  std::uint32_t in_flight = 0;
  /// Batches formed and waiting for a worker (retries included).
  std::size_t queued_batches = 0;
  /// Items in the batcher, waiting to fill a batch.
  std::size_t buffered_items = 0;
  /// Results held in the reorder buffer (`preserve`).
  std::size_t reorder_items = 0;
  /// Results waiting for `take_results`.
  std::size_t ready_items = 0;
  std::uint64_t items_in = 0;
  std::uint64_t items_taken = 0;
  std::uint64_t ok = 0, skipped = 0, routed = 0, failed = 0, cancelled = 0;
  std::uint64_t retries = 0;
  std::uint64_t session_moves = 0;
};

/// The pool and its jobs at a glance, for a broker's `stats` reply.
struct SLITHER_CORE_EXPORT pool_stats {
  std::vector<worker_stats> workers;
  std::vector<job_stats> jobs;
  std::uint64_t batches_sent = 0;
  std::uint64_t batches_ok = 0;
  std::uint64_t batches_failed = 0;
  std::uint64_t retries = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t quarantined = 0;
  /// Workers that left unexpectedly.
  std::uint64_t worker_deaths = 0;
  /// Workers that joined as replacements (`worker_joined::restart`).
  std::uint64_t restarts = 0;
  /// Events about batches or workers the engine no longer knew (late
  /// answers from dead or timed-out workers): ignored, counted.
  std::uint64_t stale_events = 0;
  bool circuit_open = false;
};

/// The dispatch engine. See the top of this header for the protocol.
class SLITHER_CORE_EXPORT dispatch_engine {
 public:
  using time_point = dispatch_clock::time_point;

  explicit dispatch_engine(engine_options options = {});
  ~dispatch_engine();
  dispatch_engine(dispatch_engine&&) noexcept;
  dispatch_engine& operator=(dispatch_engine&&) noexcept;
  dispatch_engine(const dispatch_engine&) = delete;
  dispatch_engine& operator=(const dispatch_engine&) = delete;

  // --- jobs ---

  /// Starts a job. Errors: invalid options (named), or `unavailable` while
  /// the circuit is open.
  result<job_id> open_job(dispatch_options options, time_point now);
  /// Feeds one input item. Errors (the item is left untouched): unknown or
  /// stopped job, input closed, a preformed job, no capacity (`busy`), or
  /// the batcher refusing the item (a bad weight or key, named).
  result<void> offer(job_id job, Item&& item, time_point now);
  /// Feeds several items. Needs capacity for all of them (else `busy`,
  /// nothing taken). On error `items` holds those not taken, the refused
  /// one first; on success it is empty.
  result<void> offer(job_id job, std::vector<Item>& items, time_point now);
  /// Feeds one batch formed by the producer (`preformed_batch` jobs only).
  /// On error `items` is left untouched.
  result<void> offer_batch(job_id job, std::vector<Item>&& items, time_point now);
  /// Feeds one encoded batch of 1 to `max_items` items (jobs whose batching
  /// is `preformed_batch{.encoded = true}` only). Errors as `offer`'s.
  result<void> offer_batch(job_id job, opaque_batch batch, time_point now);
  /// The input is exhausted: open batches close and are sent.
  result<void> close_input(job_id job, time_point now);
  /// Stops the job: every item not yet ended comes out `cancelled`.
  result<void> cancel(job_id job, time_point now);
  /// Forgets the job (cancelling it if it still runs); results not taken are dropped.
  void close_job(job_id job, time_point now);
  /// Items `offer` would take now (0 for an unknown, stopped or closed-input job).
  std::size_t input_capacity(job_id job) const noexcept;
  /// Takes up to `max` results, in the job's order. Taking makes room for
  /// input. An encoded job has none: see `take_batches`.
  std::vector<dispatch_result> take_results(job_id job, std::size_t max = SIZE_MAX);
  /// Takes up to `max` whole batches of an encoded job's output, in the
  /// job's order (nothing for a job of items). Taking makes room for input.
  std::vector<batch_output> take_batches(job_id job, std::size_t max = SIZE_MAX);
  /// The job's state, or `not_found`.
  result<job_status> status(job_id job) const;

  // --- workers and time ---

  /// Applies one executor event. Events about workers or batches the engine
  /// no longer knows are ignored (`stale_events`); an impossible one (a
  /// worker joining twice, id 0) is an error and changes nothing.
  result<void> handle(executor_event event, time_point now);
  /// Stops sending to `worker` and emits `retire_worker` once it holds no
  /// batch. Error: unknown worker.
  result<void> drain_worker(worker_id worker, time_point now);
  /// Fires what is due at `now`: timeouts, ends of retry backoff, the end of
  /// the circuit's cooldown.
  void tick(time_point now);
  /// When `tick` next has something to do, if ever.
  std::optional<time_point> next_deadline() const;

  // --- output ---

  /// The next action to carry out, oldest first.
  std::optional<dispatch_action> next_action();
  /// True if actions are waiting.
  bool has_actions() const noexcept;

  /// Workers, jobs and counters.
  pool_stats stats() const;
  /// Checks the books: for every job, items offered = items still inside +
  /// items ended; every worker's batches add up. The error says what differs.
  result<void> check_accounting() const;

 private:
  std::unique_ptr<detail::dispatch_state> s_;
};

}  // namespace slither
