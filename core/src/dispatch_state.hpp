// The dispatch engine's state, shared by its implementation files:
// dispatch_engine.cpp (jobs: input, output, ordering, policies) and
// dispatch_pool.cpp (workers: choice, sending, deaths, timers, circuit).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "slither/core/batching.hpp"
#include "slither/core/dispatch.hpp"

namespace slither {

namespace detail {

/// The engine's state; `dispatch_engine` is a handle to one.
struct dispatch_state {
  using time_point = dispatch_clock::time_point;
  struct job_rec;

  /// A batch from formation to its end (or, orphaned, to its worker's answer).
  struct batch_rec {
    enum class phase : std::uint8_t {
      queued,       // formed, never sent
      running,      // at `worker`
      backoff,      // failed; waits until `retry_at`
      retry_ready,  // backoff over; waits for a worker
    };
    std::uint64_t id = 0;
    /// Null once orphaned: its job stopped while the batch ran. The batch
    /// stays until its worker answers or dies, to keep the worker's books.
    job_rec* job = nullptr;
    std::uint64_t seq = 0;                           // formation order within the job
    std::shared_ptr<const std::vector<Item>> items;  // null for an encoded batch
    std::size_t count = 0;                           // items, in either form
    opaque_bytes payload;                            // an encoded batch's input
    std::vector<std::uint64_t> positions;            // input positions, for verify_accounting
    phase at = phase::queued;
    std::uint32_t attempt = 0;  // runs started
    worker_id worker = 0;       // while running; kept after for error reports
    time_point started{};
    std::optional<time_point> deadline;
    time_point retry_at{};
    std::uint32_t kills = 0;       // runs that ended with the worker dead
    std::vector<worker_id> tried;  // workers a run failed on
    worker_id reserved = 0;        // a suspect (kills > 0) waits for this worker to empty
  };

  struct worker_rec {
    worker_id id = 0;
    std::uint32_t credits = 0;
    std::uint32_t in_flight = 0;
    std::vector<std::uint64_t> held;  // running batch ids
    bool draining = false;
    std::uint64_t reserved = 0;   // suspect batch waiting for this worker to empty
    std::uint64_t exclusive = 0;  // suspect batch running here alone
    std::uint64_t last_used = 0;  // tie-break: least recently used first
    std::uint64_t batches_ok = 0;
    std::uint64_t batches_failed = 0;
  };

  /// What a batch delivers: results of items, or an encoded batch's output.
  using output_unit = std::variant<std::vector<dispatch_result>, batch_output>;

  struct job_rec {
    job_rec(job_id id_, dispatch_options opts_, batcher input_);
    job_id id;
    dispatch_options opts;
    std::shared_ptr<const job_target> target;
    batcher input;
    std::size_t window;
    std::deque<batch_rec*> queued;                    // formed, FIFO
    std::map<std::uint64_t, batch_rec*> retry_ready;  // by seq
    std::map<std::uint64_t, batch_rec*> live;         // not yet ended, by seq
    std::uint32_t running = 0;
    std::uint64_t next_seq = 0;
    std::uint64_t next_release = 0;             // preserve
    std::map<std::uint64_t, output_unit> held;  // preserve
    std::size_t held_items = 0;
    // Results ready to take, kept as the batches they came in (taking a whole
    // batch moves one vector, not each result); `output_front` of the first
    // are already taken.
    std::deque<output_unit> output;
    std::size_t output_front = 0;
    std::size_t output_items = 0;
    std::uint64_t ingested = 0;
    std::uint64_t taken = 0;
    std::array<std::uint64_t, 5> by_status{};  // indexed by item_status
    std::uint64_t retries = 0;
    std::uint64_t moves = 0;
    bool input_closed = false;
    bool stopped = false;
    std::optional<dispatch_error> error;
    worker_id session_lost = 0;  // its session's worker died; not yet rebound
    std::size_t announced = 0;   // capacity last told in input_wanted
    bool notify = false;
    bool finish_announced = false;
    // verify_accounting: ended flags of positions from ended_base on.
    std::deque<bool> ended_bits;
    std::uint64_t ended_base = 0;
  };

  explicit dispatch_state(engine_options o) : opts(o) {}

  engine_options opts;
  std::map<job_id, job_rec> jobs;
  std::unordered_map<std::uint64_t, batch_rec> batches;
  std::map<worker_id, worker_rec> workers;
  std::unordered_map<std::string, worker_id> sessions;
  std::set<std::pair<time_point, std::uint64_t>> deadlines;  // running batches with a timeout
  std::set<std::pair<time_point, std::uint64_t>> backoffs;   // batches waiting to retry
  std::deque<dispatch_action> actions;
  std::deque<time_point> deaths;  // within the breaker's window
  std::optional<time_point> circuit_until;
  dispatch_error circuit_error;
  job_id next_job = 1;
  std::uint64_t next_batch = 1;
  std::uint64_t use_counter = 0;
  job_id rr_cursor = 0;
  std::uint64_t free_credits = 0;  // credits of workers not draining
  pool_stats counters;             // the pool-wide counters (workers/jobs left empty)

  // --- jobs (dispatch_engine.cpp) ---
  job_rec* find_job(job_id id) noexcept;
  const job_rec* find_job(job_id id) const noexcept;
  std::size_t capacity(const job_rec& job) const noexcept;
  bool all_ended(const job_rec& job) const noexcept;
  result<void> check_input(const job_rec& job, std::size_t n) const;
  void ingested(job_rec& job, std::size_t n);
  batch_rec& add_batch(job_rec& job, std::size_t count);
  void make_batch(job_rec& job, formed_batch&& formed);
  void make_encoded_batch(job_rec& job, opaque_batch&& batch);
  void deliver(job_rec& job, const batch_rec& b, output_unit&& results);
  output_unit ended_whole(const job_rec& job, const batch_rec& b, item_status status,
                          const std::shared_ptr<const dispatch_error>& err) const;
  void on_completed(batch_completed&& ev, time_point now);
  void on_encoded(batch_encoded&& ev, time_point now);
  void bad_answer(batch_rec& b, std::string why, time_point now);
  void on_failed(batch_failed&& ev, time_point now);
  void fail_attempt(batch_rec& b, dispatch_error err, bool killed, time_point now);
  void stop_job(job_rec& job, const dispatch_error& cause);
  void announce();
  void after_call(time_point now);
  void verify() const;
  result<void> books() const;

  // --- pool (dispatch_pool.cpp) ---
  void pump(time_point now);
  void form(job_rec& job);
  bool try_send(job_rec& job, time_point now);
  worker_rec* place(job_rec& job, batch_rec& b);
  worker_rec* place_alone(job_rec& job, batch_rec& b);
  worker_rec* least_loaded(const batch_rec& b);
  void send(job_rec& job, batch_rec& b, worker_rec& w, time_point now);
  batch_rec* answering(worker_id worker, std::uint64_t batch, std::uint32_t attempt);
  void stop_running(batch_rec& b);
  void erase_batch(batch_rec& b);
  void remove_worker(worker_rec& w, const dispatch_error& why, bool death, time_point now,
                     const dispatch_error* timed_out = nullptr);
  void open_circuit(dispatch_error why, time_point now);
  void fire(time_point now);
  result<void> on_event(executor_event&& ev, time_point now);
  void emit_start(const job_rec& job, const batch_rec& b) const;
  void emit_end(const batch_rec& b, time_point now, const dispatch_error* err,
                std::size_t item_errors) const;
};

/// A failure of `kind` whose type is the kind's name.
inline dispatch_error make_failure(failure_kind kind, std::string message) {
  dispatch_error e;
  e.kind = kind;
  e.type = std::string(to_string(kind));
  e.message = std::move(message);
  return e;
}

}  // namespace detail
}  // namespace slither
