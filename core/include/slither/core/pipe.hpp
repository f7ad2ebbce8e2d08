// Pipe: a streaming composition of native stages, python stages and routers,
// with named outputs and error policies (the third primitive).
//
//   slither::Pipe score("score");
//   score.native("prepare", [](slither::Item& item, slither::Context&) -> slither::step {
//          return item.payload.as<std::int64_t>() + 1;
//        })
//       .python("predict", {.module = "my_model", .function = "predict_batch",
//                           .batch_size = 32, .max_in_flight = 4})
//       .router("route", {{is_good, "accept"}, {is_unsure, "review"}})
//       .output("accept")
//       .output("review")
//       .on_error("predict", slither::on_error::skip())
//       .on_error("*", slither::on_error::halt());
//   auto done = slither::run(score, slither::wrap_many(values), {.session_id = "s1"}).value();
//   for (const auto& item : done.outputs["accept"]) use(item);
//
// Stages run concurrently, each on its own thread(s), joined by bounded
// queues, so outputs appear while input is still being read and a run's
// memory is bounded by the queues, whatever the input's length. Python
// stages run on a `batch_runner` (a broker's worker pool, see
// slither/broker/pipe.hpp, or `local_runner` over a `local_pool`); core holds
// no sockets.
//
// ## Stages
//
// - `native(name, fn)`: `fn(Item&, Context&) -> step` per item, or
//   `native_batch(name, fn)`: `fn(std::span<Item>, Context&) -> std::vector<step>`
//   per chunk (one step per item). A step keeps the item (as the handler
//   left it), replaces its payload, expands it into many items (each a new
//   item carrying its parent's meta plus `"parent"`: the parent's id, and a
//   fresh id from 2^63 up), skips it, fails it, or routes it to an output
//   (it leaves the pipe there). `concurrency` threads run one native stage.
// - `python(name, {module, function, ...})`: the items go through Dispatch in
//   batches of `batch_size` (or by weight: `weight_fn`, or by key:
//   `key_fn`), at most `max_in_flight` batches at workers, with the run's
//   session id (affinity), pipe, stage and metadata.
// - `router(name, {{pred, output}, ...})`: the first predicate that holds
//   sends the item to its output (it leaves the pipe); unmatched items go on
//   to the next stage, and from the last stage to `default`. `router_batch`
//   decides a chunk at a time.
//
// Items that pass the last stage land in `default`.
//
// ## Errors
//
// `on_error(stage or "*", policy)`; without one, a failure halts the run.
// `halt`: the run stops and reports the error (stage, item id, cause) with
// the partial outputs; `skip`: the item is dropped and its failure reported;
// `route(output)`: the item goes to that output with `meta["error"]` = {stage,
// kind, type, message}; `retry{max_attempts, delay, then}`: a native stage
// calls its handler again (on a copy of the item as it arrived) after the
// backoff, a python stage's batch is dispatched again (Dispatch's retry).
//
// ## Accounting
//
// Every input item ends exactly once: in an output bucket (itself, or its
// children for `step::many`), in `pipe_run::skipped` (a `skip` step, or no
// children), in `pipe_run::failures` (failed under `skip`), as the halting
// `pipe_run::error`, or in `pipe_run::unfinished` (a halted or cancelled run
// stopped before it ended; for `run`, input never read is there too).
//
// ## Threads
//
// - Native handlers and router predicates run on the stage's threads, several
//   at once for `concurrency > 1`, and for concurrent runs of one pipe: they
//   must be thread-safe. Adjacent stages with one thread each share it
//   (`run_options::fuse_stages`). They may block and may take locks the caller of
//   `run`/`next` does not hold while it waits (a binding releases the GIL
//   there, and its handlers take it).
// - The input source is called on the thread that calls `run` or
//   `pipe_stream::next`, only while the first stage's queue has room.
// - `batch_runner::open` is called on the calling thread when a run starts;
//   every `batch_job` call of a stage is made from that stage's one thread.
// - Telemetry handlers run on whichever thread emits (see below).
//
// Order: with `concurrency == 1` everywhere and python stages in `preserve`
// order, each output keeps input order; otherwise outputs may interleave.
//
// ## Telemetry (zero cost with no handler attached: one relaxed load per chunk)
//
// - `slither.pipe.run.start` {} / `.stop` {duration_us, items_in, items_out,
//   skipped, failures, unfinished} / `.exception` (a halt, instead of stop)
//   {duration_us}; metadata {pipe, session, run, status ("ok", "cancelled",
//   "halted")} plus, for an exception, {stage, item, kind, type, message}.
//   `start` is emitted before any stage event of the run, `stop`/`exception`
//   after every one, on the thread that calls `run` or `next`.
// - `slither.pipe.stage.start` {size} / `.stop` {size, duration_us}: around
//   each chunk a native stage or router handles, and each batch of a python
//   stage (start when sent, stop when its results come back); metadata
//   {pipe, session, run, stage, kind ("native", "router", "python")}.
// - `slither.pipe.stage.exception` {attempt}: one per item failure, with
//   metadata {pipe, session, run, stage, kind, item, failure, type, message,
//   policy ("halt", "skip", "route", "retry")}.
//
// Caveats: a native stage under `retry` sleeps its backoff on its own thread
// (other threads of the stage go on). Destroying a `pipe_stream` cancels its
// run and waits for handlers that are running to return.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "slither/core/detail/pull_iterator.hpp"
#include "slither/core/detail/range_source.hpp"
#include "slither/core/dispatch.hpp"
#include "slither/core/dispatch_options.hpp"
#include "slither/core/error.hpp"
#include "slither/core/export.hpp"
#include "slither/core/item.hpp"
#include "slither/core/value.hpp"

namespace slither {

class local_pool;

namespace detail {
struct pipe_def;
struct pipe_run_state;
}  // namespace detail

/// What a native stage does with one item. Built implicitly from a payload
/// (the item goes on with it) or an `error_info` (the item failed).
class SLITHER_CORE_EXPORT step {
 public:
  /// The forms a step takes.
  enum class kind : std::uint8_t { keep, payload, many, skip, route, fail };

  /// Keep: the item, as the handler left it, goes on.
  step() noexcept = default;
  /// The item goes on with this payload.
  step(Value payload) noexcept : kind_(kind::payload), payload_(std::move(payload)) {}  // NOLINT
  /// Anything a `Value` is made from (`return n * 2;`).
  template <class T>
  requires(std::is_constructible_v<Value, T&&> && !std::is_same_v<std::remove_cvref_t<T>, Value> &&
           !std::is_same_v<std::remove_cvref_t<T>, step>) step(T&& payload)  // NOLINT
      : step(Value(std::forward<T>(payload))) {}
  /// The item failed: the stage's error policy applies.
  step(error_info error)
      : kind_(kind::fail), message_(std::move(error.message)), code_(error.code) {}  // NOLINT

  /// The item goes on unchanged.
  static step keep() noexcept { return {}; }
  /// The item is dropped (a filter); it ends in `pipe_run::skipped`.
  static step skip() noexcept;
  /// The item leaves the pipe at `output`.
  static step route(std::string output);
  /// The item is replaced by one new item per payload, each carrying the
  /// parent's meta; none: the parent ends in `pipe_run::skipped`.
  static step many(std::vector<Value> payloads);
  /// The item failed with this message (code `invalid_argument`).
  static step fail(std::string message);

  kind form() const noexcept { return kind_; }
  /// The payload of a `payload` step.
  Value& payload() noexcept { return payload_; }
  /// The payloads of a `many` step.
  std::vector<Value>& payloads() noexcept { return many_; }
  /// The output of a `route` step, the message of a `fail` step.
  const std::string& text() const noexcept { return message_; }
  /// The code of a `fail` step.
  errc code() const noexcept { return code_; }

 private:
  kind kind_ = kind::keep;
  Value payload_;
  std::vector<Value> many_;
  std::string message_;
  errc code_ = errc::ok;
};

/// A native stage's function over one item.
using item_fn = std::function<step(Item&, Context&)>;
/// A native stage's function over a chunk: one step per item, in order.
using batch_fn = std::function<std::vector<step>(std::span<Item>, Context&)>;
/// A router's predicate.
using predicate = std::function<bool(const Item&, const Context&)>;

/// One route of a router: items for which `when` holds leave at `output`.
struct SLITHER_CORE_EXPORT route {
  predicate when;
  std::string output;
};

/// An exception a stage function (or a router's predicate) may throw so that
/// the item's failure carries a type of its own instead of the C++ exception's:
/// a language binding reports its exceptions this way ("ValueError").
class SLITHER_CORE_EXPORT stage_exception : public std::runtime_error {
 public:
  stage_exception(std::string type, const std::string& message);
  /// The type the failure reports.
  const std::string& type() const noexcept { return type_; }

 private:
  std::string type_;
};

/// Options of a native stage.
struct SLITHER_CORE_EXPORT native_options {
  /// Threads running the stage (at least 1).
  std::size_t concurrency = 1;
  /// Most items handed to a `native_batch` function at once (at least 1).
  std::size_t batch_size = 64;
};

/// Options of a python stage: what runs it and how its batches travel.
struct SLITHER_CORE_EXPORT python_options {
  /// The Python module and function ("my_model", "predict_batch"). Required.
  std::string module{};
  std::string function{};
  std::size_t batch_size = 32;
  std::uint32_t max_in_flight = 4;
  order_mode ordering = order_mode::preserve;
  std::optional<std::chrono::milliseconds> timeout{};
  affinity_mode affinity = affinity_mode::hint;
  /// The broker's pool; empty: its only pool.
  std::string pool{};
  /// Weighted batching (Dispatch's `weighted_batch`): with a `weight_fn`,
  /// batches in input order whose items' weights add up to at most
  /// `max_weight`, and hold at most `batch_size` items.
  std::function<double(const Item&)> weight_fn{};
  double max_weight = 0;
  /// Key partition (Dispatch's `key_partition`): with a `key_fn`, each batch
  /// holds the items of one key, at most `batch_size` of them.
  ///
  /// `weight_fn` and `key_fn` run on the stage's thread (a binding takes its
  /// interpreter lock there). An item whose weight or key cannot be had (the
  /// function threw, or gave a negative or non-finite weight) fails at this
  /// stage under its error policy; a retry does not apply, the answer would
  /// be the same.
  std::function<std::string(const Item&)> key_fn{};
};

/// Error policies for `Pipe::on_error` (Dispatch's own policy types).
namespace on_error {
/// Stop the run; report the error and the partial outputs.
inline error_policy halt() {
  return halt_policy{};
}
/// Drop the item; report its failure.
inline error_policy skip() {
  return skip_policy{};
}
/// Send the item, its error in `meta["error"]`, to `output`.
inline error_policy route(std::string output) {
  return route_policy{std::move(output)};
}
/// Try again up to `max_attempts` runs in all, after `delay`; then `then`.
inline error_policy retry(std::uint32_t max_attempts = 3, backoff delay = {},
                          fallback_policy then = halt_policy{}) {
  return retry_policy{max_attempts, delay, std::move(then)};
}
}  // namespace on_error

/// The item id of a failure that is the stage's, not one item's.
inline constexpr std::uint64_t no_item = UINT64_MAX;

/// Why an item failed at a stage.
struct SLITHER_CORE_EXPORT pipe_failure {
  std::string stage;
  /// The item's id, or `no_item` when the stage itself could not go on (its
  /// job's broker went away).
  std::uint64_t item = 0;
  dispatch_error cause;

  /// "stage 'predict', item 42: ValueError: bad (batch 3, attempt 1, worker 2)".
  std::string describe() const;
};

/// A pipe's definition, built step by step; `validate` (and every run) checks
/// it. Copies share nothing: a run takes a snapshot, so changing a pipe does
/// not affect runs already started.
class SLITHER_CORE_EXPORT Pipe {
 public:
  explicit Pipe(std::string name);
  Pipe(const Pipe& other);
  Pipe& operator=(const Pipe& other);
  Pipe(Pipe&&) noexcept;
  Pipe& operator=(Pipe&&) noexcept;
  ~Pipe();

  /// Adds a native stage calling `fn` per item.
  Pipe& native(std::string name, item_fn fn, native_options options = {}) &;
  Pipe&& native(std::string name, item_fn fn, native_options options = {}) &&;
  /// Adds a native stage calling `fn` per chunk of up to `options.batch_size` items.
  Pipe& native_batch(std::string name, batch_fn fn, native_options options = {}) &;
  Pipe&& native_batch(std::string name, batch_fn fn, native_options options = {}) &&;
  /// Adds a python stage.
  Pipe& python(std::string name, python_options options) &;
  Pipe&& python(std::string name, python_options options) &&;
  /// Adds a router: ordered routes, first match wins.
  Pipe& router(std::string name, std::vector<route> routes) &;
  Pipe&& router(std::string name, std::vector<route> routes) &&;
  /// Adds a router that decides a chunk at a time: `fn` returns one step per
  /// item, `step::route(output)` for a match (one of `outputs`, which are
  /// validated as a router's routes are), `keep` for none, or a failure. For
  /// predicates that are costly to enter one at a time (a binding's, which
  /// take an interpreter lock).
  Pipe& router_batch(std::string name, std::vector<std::string> outputs, batch_fn fn) &;
  Pipe&& router_batch(std::string name, std::vector<std::string> outputs, batch_fn fn) &&;
  /// Declares an output ("default" always exists).
  Pipe& output(std::string name) &;
  Pipe&& output(std::string name) &&;
  /// Sets the error policy of `stage`, or of every stage without one ("*").
  Pipe& on_error(std::string stage, error_policy policy) &;
  Pipe&& on_error(std::string stage, error_policy policy) &&;
  /// Attaches a store by name: its name is in every context's
  /// `metadata["stores"]` (a list), and a broker run checks that it exists.
  Pipe& store(std::string name) &;
  Pipe&& store(std::string name) &&;

  const std::string& name() const noexcept;
  /// Stage names, in order.
  std::vector<std::string> stages() const;
  /// "default" and the declared outputs, in declaration order.
  std::vector<std::string> outputs() const;
  /// Attached stores.
  std::vector<std::string> stores() const;
  /// Python stages' (name, options), in order.
  std::vector<std::pair<std::string, python_options>> python_stages() const;

  /// Checks the definition: stages present, names unique and not empty,
  /// routes and route policies to declared outputs, `on_error` for known
  /// stages, python stages with module and function, options in range. The
  /// error names the bad part ("pipe 'score': router 'route' routes to
  /// undeclared output 'reject'").
  result<void> validate() const;

  /// The definition (for runs).
  const std::shared_ptr<detail::pipe_def>& definition() const noexcept { return def_; }

 private:
  std::shared_ptr<detail::pipe_def> def_;
};

/// One python stage's dispatch job within one run: items in, results out.
/// The pipe calls it from the stage's one thread.
class SLITHER_CORE_EXPORT batch_job {
 public:
  virtual ~batch_job() = default;
  /// Items `submit` takes now.
  virtual std::size_t capacity() const = 0;
  /// Sends one batch of 1 to `batch_size` items (no more than `capacity()`).
  virtual result<void> submit(std::vector<Item> batch) = 0;
  /// No more batches will come.
  virtual result<void> close_input() = 0;
  /// Results that came back (each submitted item once, with its status:
  /// `ok` carries the result as payload and the input's id and meta),
  /// waiting at most `timeout` for the first; empty if none came.
  virtual result<std::vector<dispatch_result>> next(std::chrono::milliseconds timeout) = 0;
  /// True once every submitted item has come back through `next`, after `close_input`.
  virtual bool finished() const = 0;
  /// Why the job stopped early (halt, cancel, circuit), if it did.
  virtual std::optional<dispatch_error> error() const = 0;
  /// Stops the job: what has not ended comes back `cancelled`.
  virtual void cancel() = 0;
};

/// Runs python stages: opens one dispatch job per python stage per run.
class SLITHER_CORE_EXPORT batch_runner {
 public:
  virtual ~batch_runner() = default;
  /// Opens a job running `options.function` ("module:function") on `pool`.
  virtual result<std::unique_ptr<batch_job>> open(const dispatch_options& options,
                                                  const std::string& pool) = 0;
};

/// A runner over an in-process `local_pool` (C++ handlers registered under
/// "module:function" names stand in for Python). The pool must outlive the
/// runner's jobs. A job runs its batches one at a time, each as it was
/// formed, on a thread of its own.
SLITHER_CORE_EXPORT std::unique_ptr<batch_runner> local_runner(local_pool& pool);

/// Options of one run.
struct SLITHER_CORE_EXPORT run_options {
  /// The session (sticky routing of python stages) and free-form metadata,
  /// passed to every stage's context.
  std::string session_id{};
  Map metadata{};
  /// Runs the python stages; required if the pipe has any. Used only while
  /// the run starts (it opens one job per python stage then).
  batch_runner* runner = nullptr;
  /// Items each queue between stages holds before its producer waits (at least 1).
  std::size_t queue_items = 1024;
  /// Items moved between stages at once (at least 1).
  std::size_t chunk_items = 128;
  /// Adjacent native stages and routers with `concurrency == 1` and no
  /// `retry` policy share one thread, each chunk going through them in turn:
  /// no queue or thread hand-off between them. False: every stage on its own
  /// thread(s), which pays when two such stages are each heavy enough to
  /// want a core of their own.
  bool fuse_stages = true;
};

/// What a run produced.
struct SLITHER_CORE_EXPORT pipe_run {
  /// "default" and every declared output, each with the items that left there.
  std::map<std::string, std::vector<Item>> outputs;
  /// Why the run halted, if it did.
  std::optional<pipe_failure> error;
  /// Items that failed under `skip`.
  std::vector<pipe_failure> failures;
  /// Ids of items a stage skipped (or expanded into nothing).
  std::vector<std::uint64_t> skipped;
  /// Ids of items the run never finished (it halted or was cancelled).
  std::vector<std::uint64_t> unfinished;
  /// Items taken from the input.
  std::uint64_t items_in = 0;

  bool ok() const noexcept { return !error; }
};

/// One item leaving a streamed run.
struct SLITHER_CORE_EXPORT pipe_output {
  std::string output;
  Item item;
};

/// The outputs of a run, pulled one at a time (or with a range-for). Input
/// is read on the thread that calls `next`, only as the first stage's queue
/// frees up. Move-only; destroying it cancels the run.
class SLITHER_CORE_EXPORT pipe_stream {
 public:
  /// An input iterator over the remaining outputs.
  using iterator = detail::pull_iterator<pipe_stream, pipe_output>;
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() const noexcept { return {}; }

  pipe_stream(pipe_stream&&) noexcept;
  pipe_stream& operator=(pipe_stream&&) noexcept;
  pipe_stream(const pipe_stream&) = delete;
  pipe_stream& operator=(const pipe_stream&) = delete;
  ~pipe_stream();

  /// The next output, waiting for it; nullopt once the run has ended. Throws
  /// `slither::error` if the input source throws (the run is cancelled).
  std::optional<pipe_output> next();
  /// `next` without exceptions.
  result<std::optional<pipe_output>> try_next();
  /// Stops the run: items inside end in `unfinished`; outputs already made
  /// still come out.
  void cancel();
  /// Items taken from the input so far.
  std::uint64_t pulled() const noexcept;
  /// Outputs `next` hands out without waiting: taken from the run already.
  std::size_t buffered() const noexcept;
  /// The run's report without outputs (they were streamed): its error,
  /// failures, skipped and unfinished items. Complete once `next` returned nullopt.
  const pipe_run& report() const noexcept;

  struct impl;  ///< implementation detail

 private:
  friend SLITHER_CORE_EXPORT result<pipe_stream> stream(const Pipe&,
                                                        std::function<std::optional<Item>()>,
                                                        const run_options&);
  explicit pipe_stream(std::unique_ptr<impl> p) noexcept;
  std::unique_ptr<impl> p_;
};

/// Streams `source` (nullopt: the input ended) through `pipe`. Errors (no
/// run started): an invalid pipe, python stages without a runner, a python
/// stage's job the runner cannot open.
SLITHER_CORE_EXPORT result<pipe_stream> stream(const Pipe& pipe,
                                               std::function<std::optional<Item>()> source,
                                               const run_options& options = {});

/// Streams a range of items (a container, by reference while the stream
/// lives, or a view, such as an endless `std::views::iota | transform`, by
/// value). Only as much of it is read as the pipe has room for.
template <std::ranges::input_range R>
requires std::convertible_to<std::ranges::range_reference_t<R>, Item> result<pipe_stream> stream(
    const Pipe& pipe, R&& range, const run_options& options = {}) {
  return stream(pipe, detail::item_source(std::forward<R>(range)), options);
}

/// Runs `input` through `pipe` to the end: the output buckets, or the halting
/// error with the partial outputs (`pipe_run::error`). Errors as `stream`'s.
SLITHER_CORE_EXPORT result<pipe_run> run(const Pipe& pipe, std::vector<Item> input,
                                         const run_options& options = {});

}  // namespace slither
