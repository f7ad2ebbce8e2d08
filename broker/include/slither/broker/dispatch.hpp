// Dispatch through a broker: batches of items fanned out to a pool of worker
// processes (Python, or any program on `slither::worker_runtime`), with
// credit-based backpressure, ordering, error policies and nothing lost.
//
// Two levels:
//
// - Items, from C++: `dispatch` (run to the end), `dispatch_stream` (a lazy,
//   pull-based stream of results that reads its input only as the job's
//   window frees up) and `call_batch` (one batch, synchronous), against an
//   embedded `Broker` or a broker reached through `client_options`. They
//   batch on the caller's thread (any `batch_strategy`), encode each batch
//   as the codec's batch frame (`encode_batch`), and decode the results the
//   same way.
//
//       slither::job_options opts;
//       opts.function = "features:score";          // module:function on the workers
//       opts.batching = slither::fixed_batch{64};
//       auto report = slither::dispatch(broker, slither::wrap_many(values), opts).value();
//       for (const auto& r : report.results) if (r.ok()) use(r.item.payload);
//
// - Encoded batches: `dispatch_job`, one job on its own connection to the
//   broker, taking batches its caller has already encoded and giving back
//   `batch_output`s whose results it has not decoded (the Python client
//   does both sides with its own codec). The broker forwards the bytes to
//   the workers and back without reading them.
//
// ## Jobs on the wire (control socket, protocol.hpp)
//
// `dispatch_open` {pool, function, batch_size, max_in_flight, ordering,
// on_error, timeout_ms, affinity, session_id, pipe, stage, metadata,
// idle_timeout_ms} → {job, window, pool}. The client then sends
// `dispatch_submit` (header, {job, count, ack}, the batch; request id = the
// batch's sequence number, from 0), never more items than its window holds
// between submitting them and consuming their results (the broker refuses
// more with `busy`); `dispatch_input_end`; `dispatch_ack` {job, batches} as
// it consumes result batches (the broker sends at most 64 result batches
// ahead of the acks); `dispatch_cancel`; `dispatch_close`. The broker sends
// `dispatch_batch` (status frame + payload), `dispatch_moved` and, last,
// `dispatch_end` {ok, error}. A refused submit gets an error reply with its
// request id; its items count as ended (cancelled).
//
// Caveats
// - A job's connection is its own: a client whose process dies has its jobs
//   cancelled when the connection closes, and a client that stops reading
//   while the broker holds results for it is cancelled after
//   `job_options::idle_timeout`.
// - Not thread-safe: one thread at a time per `dispatch_job` or stream.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"
#include "slither/broker/export.hpp"
#include "slither/core/detail/pull_iterator.hpp"
#include "slither/core/detail/range_source.hpp"
#include "slither/core/dispatch.hpp"
#include "slither/core/dispatch_options.hpp"
#include "slither/core/error.hpp"
#include "slither/core/item.hpp"
#include "slither/core/local_pool.hpp"

namespace slither {

namespace detail {
struct dispatch_job_maker;
}  // namespace detail

/// Options of a dispatch job on a broker's worker pool: the dispatch options
/// (function, batching, max_in_flight, ordering, on_error, timeout,
/// affinity, context) plus where it runs.
struct SLITHER_BROKER_EXPORT job_options : dispatch_options {
  /// The pool; empty: the broker's only pool.
  std::string pool;
  /// A job whose results wait for a client that reads none for this long is
  /// cancelled and forgotten. Zero: never.
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};
};

/// One dispatch job on a broker, fed with encoded batches. Move-only; the
/// destructor closes it (cancelling what still runs).
class SLITHER_BROKER_EXPORT dispatch_job {
 public:
  /// Opens a job on the broker `where` names. `options.batching` only gives
  /// the most items a batch may hold (`max_batch_items`); the caller forms
  /// the batches. Errors: bad options (named), `not_found` (no such pool),
  /// `unavailable` (no broker answered, or the pool is failing: its error).
  static result<dispatch_job> open(const client_options& where, const job_options& options);
  /// The same on an embedded broker, through an in-process connection.
  static result<dispatch_job> open(Broker& broker, const job_options& options);

  dispatch_job(dispatch_job&&) noexcept;
  dispatch_job& operator=(dispatch_job&&) noexcept;
  dispatch_job(const dispatch_job&) = delete;
  dispatch_job& operator=(const dispatch_job&) = delete;
  ~dispatch_job();

  /// The broker's id of the job.
  job_id id() const noexcept;
  /// Items the job may hold between `submit` and consuming their results
  /// (`max_in_flight * batch size`).
  std::size_t window() const noexcept;
  /// Most items one batch may hold.
  std::size_t batch_size() const noexcept;
  /// The output items that fail are routed to under the job's error policy
  /// (`route_policy`, or a retry's fallback); empty if they are not routed.
  const std::string& route_output() const noexcept;
  /// Items `submit` takes now: the window less what is submitted and not yet
  /// consumed through `next`.
  std::size_t capacity() const noexcept;

  /// Sends one encoded batch of `count` items. Errors (nothing sent):
  /// `busy` (over `capacity()`), `invalid_argument` (count 0 or past
  /// `batch_size()`, input closed, the job ended), `unavailable`.
  result<void> submit(std::span<const std::byte> payload, std::size_t count);
  /// The same, taking the bytes over (no copy).
  result<void> submit(std::vector<std::byte>&& payload, std::size_t count);
  /// No more batches will come; the job ends once every batch has.
  result<void> close_input();
  /// The next batch of output, in the job's order, waiting at most
  /// `timeout` (none: for ever). nullopt: the wait timed out, or the job has
  /// ended (`finished()`). Errors: `unavailable` (the broker went away:
  /// nothing came from it for longer than `client_options::timeout` while
  /// results were due, or its connection was refused), `protocol_error`.
  result<std::optional<batch_output>> next(
      std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  /// Stops the job: what has not ended comes back cancelled.
  result<void> cancel();

  /// True once every batch has come out through `next`.
  bool finished() const noexcept;
  /// Why the job stopped early (halt, cancel, circuit), once known.
  const std::optional<dispatch_error>& error() const noexcept;
  /// Sessions that lost their worker so far.
  const std::vector<session_moved>& moves() const noexcept;

  struct impl;  ///< implementation detail

 private:
  friend struct detail::dispatch_job_maker;
  explicit dispatch_job(std::unique_ptr<impl> p) noexcept;
  void close() noexcept;
  std::unique_ptr<impl> p_;
};

/// The results of one job over items, pulled one at a time (or with a
/// range-for). Input is read from the source on the thread that calls
/// `next`, only as far as the job's window allows: a consumer that stops
/// calling `next` stops the input.
class SLITHER_BROKER_EXPORT dispatch_results {
 public:
  /// An input iterator over the remaining results.
  using iterator = detail::pull_iterator<dispatch_results, dispatch_result>;
  /// Starts reading (the first `next`).
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() const noexcept { return {}; }

  dispatch_results(dispatch_results&&) noexcept;
  dispatch_results& operator=(dispatch_results&&) noexcept;
  ~dispatch_results();

  /// The next result, waiting for it; nullopt once every item has ended.
  /// Throws `slither::error` when the source throws or yields an item the
  /// batching refuses (the job is then cancelled, and items already taken
  /// come out cancelled), or when the broker goes away (`unavailable`).
  std::optional<dispatch_result> next();
  /// `next` without exceptions: the same error as a result.
  result<std::optional<dispatch_result>> try_next();
  /// Why the job stopped early, once `next` has returned nullopt.
  const std::optional<dispatch_error>& error() const noexcept;
  /// Sessions that lost their worker so far.
  const std::vector<session_moved>& moves() const noexcept;
  /// Stops the job: what has not ended comes out `cancelled`.
  void cancel();
  /// Items taken from the source so far.
  std::uint64_t pulled() const noexcept;

  struct impl;  ///< implementation detail

 private:
  friend SLITHER_BROKER_EXPORT result<dispatch_results> dispatch_stream(
      dispatch_job job, batch_strategy batching, std::function<std::optional<Item>()> source);
  explicit dispatch_results(std::unique_ptr<impl> p) noexcept;
  std::unique_ptr<impl> p_;
};

/// Streams `source` (nullopt: the input ended) through an open job, batching
/// with `batching` (which must fit the job's batch size).
SLITHER_BROKER_EXPORT result<dispatch_results> dispatch_stream(
    dispatch_job job, batch_strategy batching, std::function<std::optional<Item>()> source);
/// Streams `source` through a new job on an embedded broker.
SLITHER_BROKER_EXPORT result<dispatch_results> dispatch_stream(
    Broker& broker, std::function<std::optional<Item>()> source, const job_options& options);
/// Streams `source` through a new job on the broker `where` names.
SLITHER_BROKER_EXPORT result<dispatch_results> dispatch_stream(
    const client_options& where, std::function<std::optional<Item>()> source,
    const job_options& options);

/// Streams a range of items (a container, taken by reference while the
/// stream lives, or a view, such as an endless `std::views::iota |
/// std::views::transform(...)`, taken by value) through a new job on an
/// embedded broker. Only as much of the range is read as the job's window allows.
template <std::ranges::input_range R>
requires std::convertible_to<std::ranges::range_reference_t<R>, Item> result<dispatch_results>
dispatch_stream(Broker& broker, R&& range, const job_options& options) {
  return dispatch_stream(broker, detail::item_source(std::forward<R>(range)), options);
}

/// Runs a job over `items` to its end on an embedded broker: one result per
/// item, in the job's order, whatever its status (items the job never took,
/// because it stopped first, come last, `cancelled`).
SLITHER_BROKER_EXPORT result<dispatch_report> dispatch(Broker& broker, std::vector<Item> items,
                                                       const job_options& options);
/// The same on the broker `where` names.
SLITHER_BROKER_EXPORT result<dispatch_report> dispatch(const client_options& where,
                                                       std::vector<Item> items,
                                                       const job_options& options);

/// Runs `items` as one batch (its batching is ignored) and waits for it.
SLITHER_BROKER_EXPORT result<dispatch_report> call_batch(Broker& broker, std::vector<Item> items,
                                                         const job_options& options);

}  // namespace slither
