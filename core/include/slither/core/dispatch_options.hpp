// Options of one dispatch call (a job): batching, concurrency, ordering,
// error policy, timeout and session affinity.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "slither/core/batching.hpp"
#include "slither/core/error.hpp"
#include "slither/core/export.hpp"
#include "slither/core/item.hpp"

namespace slither {

/// In which order a job's results come out.
enum class order_mode : std::uint8_t {
  /// In the order batches were formed, which is input order for fixed,
  /// weighted and preformed batching. Completed batches wait in a bounded
  /// reorder buffer for the ones before them; the buffer counts toward the
  /// job's window, so a slow head batch stops input instead of growing it.
  preserve,
  /// As batches complete.
  as_completed,
};

/// How batches of a job with a session id (`Context::session_id`) pick workers.
enum class affinity_mode : std::uint8_t {
  /// Sessions are ignored.
  none,
  /// A session sticks to one worker while it lives; when that worker has no
  /// free credit a batch goes to another one (the session stays put).
  hint,
  /// A session's batches run only on its worker, waiting for its credit.
  strict,
};

/// Delay before retry n (n = failed attempts so far, from 1):
/// `min(max, initial * multiplier^(n-1))`.
struct SLITHER_CORE_EXPORT backoff {
  std::chrono::milliseconds initial{100};
  double multiplier = 2.0;
  std::chrono::milliseconds max{10'000};

  /// The delay after `failed_attempts` failures (at least 1).
  std::chrono::milliseconds delay(std::uint32_t failed_attempts) const noexcept;
};

/// Stop the job at the first failure: the failed items come out as
/// `failed`, every item not yet ended as `cancelled`, and the job's error is
/// the failure. Results that completed before come out as usual.
struct halt_policy {};
/// Failed items come out as `skipped`, with their errors, and are counted.
struct skip_policy {};
/// Failed items come out as `routed`, their `Item::route` set to `output`.
struct SLITHER_CORE_EXPORT route_policy {
  std::string output;
};
/// What a retry policy does once its attempts are spent.
using fallback_policy = std::variant<halt_policy, skip_policy, route_policy>;

/// Runs a failed batch again, after `delay`, on another worker when one has
/// credit, up to `max_attempts` runs in all; then applies `then`. Batch
/// failures (exception, bad result, worker death, timeout) are retried;
/// per-item errors are the handler's verdict and go straight to `then`.
/// A batch whose every run killed its worker is a poison batch: it is
/// quarantined (its items fail as `quarantined`) rather than sent again.
/// After a death a batch runs alone on its worker, so a death is only ever
/// charged to the batch that caused it.
struct SLITHER_CORE_EXPORT retry_policy {
  std::uint32_t max_attempts = 3;
  backoff delay;
  fallback_policy then = halt_policy{};
};

/// What happens to items whose batch or handler failed.
using error_policy = std::variant<halt_policy, skip_policy, route_policy, retry_policy>;

/// Options of one dispatch call.
struct SLITHER_CORE_EXPORT dispatch_options {
  /// What workers run: "module:function" for Python workers, a registered
  /// name for `local_pool`. Required.
  std::string function;
  batch_strategy batching = fixed_batch{};
  /// Most batches of this job at workers at once (at least 1). With the
  /// strategy's batch size it also sets the job's window: at most
  /// `max_in_flight * max_batch_items(batching)` items taken from the input
  /// and not yet taken back as results.
  std::uint32_t max_in_flight = 8;
  order_mode ordering = order_mode::preserve;
  error_policy on_error = halt_policy{};
  /// A batch still running after this long fails as `timeout` and its worker
  /// is killed. None by default: handlers may run for as long as they need.
  std::optional<std::chrono::milliseconds> timeout;
  affinity_mode affinity = affinity_mode::hint;
  /// Pipe, stage, session id (for affinity) and metadata, passed to handlers.
  Context context;
};

/// Checks options; the error names the bad one ("dispatch option
/// 'max_in_flight' must be at least 1 (got 0)").
SLITHER_CORE_EXPORT result<void> validate(const dispatch_options& options);

/// Items a job may hold between taking them from its input and handing them
/// back as results: `max_in_flight * max_batch_items(batching)`.
SLITHER_CORE_EXPORT std::size_t job_window(const dispatch_options& options) noexcept;

}  // namespace slither
