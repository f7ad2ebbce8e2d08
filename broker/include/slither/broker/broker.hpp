// The broker: owns a namespace's stores as their only writer and serves the
// control socket (ZeroMQ ROUTER) on its own threads. Embed it in a C++
// program, or run it as the `slither-broker` executable.
//
// Threads: one serving thread runs a Boost.Asio io_context that owns the
// ROUTER socket, the ZAP handler (who may connect), signals and timers; one
// writer thread applies store writes in order, from a queue bounded in jobs
// and bytes; a few threads per store run views. A small one-key write (put,
// erase, compare_and_set, compare_and_erase) that arrives while the writer is
// idle and nothing is queued runs on the serving thread instead, in the same
// order, sparing two thread hand-offs; a large one is decoded and applied on
// the writer.
//
// Telemetry (slither::telemetry, attach by prefix): "slither.store.write.start"
// / ".stop" around every store write, "slither.bridge.view.start" / ".stop"
// around every view call; stop events carry duration_us and ok, both carry the
// store, table or view, and session_id as metadata.
//
// Metrics: counters, gauges and histograms (requests by type, errors by code,
// queue depths, in-flight batches, credits, batch latency, worker restarts,
// store bytes and garbage, clients, items per pipe stage) in the `stats`
// reply's "metrics" map, and as Prometheus text on the optional HTTP endpoint
// `broker_options::metrics_endpoint`. With the endpoint on, the broker also
// counts the "slither.dispatch.batch.*" and "slither.pipe.stage.*" telemetry
// events of its whole process (batch latency, items per pipe stage): a
// telemetry handler stays attached while it runs, so every emitter in the
// process builds its events. Without the endpoint those metrics stay at zero.
//
// Caveats
// - One broker per namespace per machine: a lock file in the runtime
//   directory makes a second one refuse (`errc::already_exists`) while the
//   first lives. A broker that was killed leaves its socket file and shared
//   memory segments behind; the next broker of that namespace removes them.
// - Readers that attached to a store keep their mappings after the broker
//   stops (segments are unlinked, not unmapped), but see no further writes.
// - `stop()` waits up to `broker_options::stop_grace` for views that are
//   still running, then abandons them to their threads (detached). An
//   abandoned view keeps its store's mapping (a reader of its own) but must
//   not use anything else that dies with the Broker or the program.
// - `stop()` and the handled signals answer every request: those that still
//   arrive get `errc::shutting_down`; queued writes are applied and answered,
//   unless a second SIGINT/SIGTERM asks to stop at once, which answers them
//   `errc::shutting_down` instead and abandons running views.
// - `start()` raises the process's soft open-file limit to the hard limit
//   (every client connection costs a descriptor).
// - Do not fork() a process with a running broker and use it in the child.
// - `broker_options::parent_pid` watches ancestors, not a thread: a broker
//   started from a thread that ends lives on while its process does.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "slither/broker/export.hpp"
#include "slither/core/codec.hpp"
#include "slither/core/dispatch.hpp"
#include "slither/core/error.hpp"
#include "slither/core/function_ref.hpp"
#include "slither/core/value.hpp"
#include "slither/shm/store.hpp"

namespace slither {

/// Whether a view serves everybody or is called on behalf of a session.
enum class view_scope : std::uint8_t {
  global,   ///< called with an empty session id
  session,  ///< needs a non-empty session id from the caller
};

/// A C++ function Python can call by name. `session_id` is empty for global views.
using view_fn = std::function<result<Value>(const Value& arg, const shm::reader& store,
                                            std::string_view session_id)>;

/// Severity of a line the broker logs.
enum class log_level : std::uint8_t { trace, debug, info, warn, error, critical, off };

/// Receives one line the broker logs: its level and its text (no timestamp,
/// no logger name). The text is valid only during the call.
using log_fn = std::function<void(log_level level, std::string_view message)>;

/// Longest duration a broker option may hold (about 31 years): a longer one
/// would overflow a deadline computed on the steady clock.
inline constexpr std::chrono::milliseconds max_option_duration{1'000'000'000'000};
/// Largest size a broker option may hold (256 TiB), so that the broker's own
/// arithmetic on it (headroom, totals) cannot overflow.
inline constexpr std::size_t max_option_bytes = std::size_t{1} << 48;

/// A pool of worker processes: the broker spawns `size` of them, keeps them
/// alive, and also serves workers started by others that join it (see
/// slither/broker/worker.hpp). Dispatch jobs name the pool they run on.
///
/// Spawned workers run `command` (by default `<python> -m slither.worker`)
/// with the broker's environment plus `env`, `pythonpath` prepended to
/// PYTHONPATH, and SLITHER_CONTROL_ENDPOINT, SLITHER_NAMESPACE, SLITHER_POOL,
/// SLITHER_WORKER_TOKEN and SLITHER_WORKER_CREDITS set; their output goes to
/// the broker's log. They die with the broker (a parent-death signal), and
/// every worker stops when the broker's heartbeats stop.
struct SLITHER_BROKER_EXPORT pool_options {
  /// [A-Za-z0-9_-], at most 64 characters.
  std::string name = "default";
  /// Workers the broker spawns and keeps alive; 0: only workers started by others.
  std::size_t size = 2;
  /// The interpreter of spawned workers; empty: $SLITHER_PYTHON, else "python3".
  std::string python;
  /// The program a spawned worker runs, as argv (argv[0] is looked up in
  /// PATH); empty: {python, "-m", "slither.worker"}.
  std::vector<std::string> command;
  /// Directories prepended to PYTHONPATH for spawned workers.
  std::vector<std::string> pythonpath;
  /// Environment variables set for spawned workers.
  std::map<std::string, std::string> env;
  /// Working directory of spawned workers; empty: the broker's.
  std::filesystem::path cwd;
  /// Batches a spawned worker asks to hold at once (its credit window).
  std::uint32_t credits = 2;
  /// How often the broker and each worker send a heartbeat when they have
  /// nothing else to say...
  std::chrono::milliseconds heartbeat{500};
  /// ...and how many silent intervals count as death: a worker the broker
  /// has not heard from is killed and replaced; a worker that has not heard
  /// from the broker exits.
  std::uint32_t heartbeat_misses = 3;
  /// Delay before restarting a spawned worker after its n-th consecutive failure.
  backoff restart_backoff{std::chrono::milliseconds(100), 2.0, std::chrono::milliseconds(10'000)};
  /// Spawned workers that exit before they join, in a row, before the pool
  /// counts as failing: jobs then end with its error (`unavailable`) instead
  /// of waiting, and restarts go on at the backoff's longest delay.
  std::uint32_t max_start_failures = 3;
  /// Replace a worker after this many batches (0: never), between batches,
  /// failing nothing (`maxtasksperchild`).
  std::uint64_t max_batches = 0;
  /// Replace a worker once its resident memory passes this (0: never), between batches.
  std::uint64_t max_rss_mib = 0;
  /// Where workers connect: empty for ipc sockets in the runtime directory;
  /// "tcp://<host>:<port>" (port `*`: any) for workers on other machines,
  /// which then need CURVE: the broker's key files are required (as for a
  /// tcp control endpoint) and a worker's key must be on the allow-list. The
  /// host must be one the workers can reach.
  std::string endpoint;
  /// When the pool's workers count as dying too often.
  circuit_breaker breaker;
};

/// How a broker is set up. Every duration and size is checked at `start()`
/// against `max_option_duration` and `max_option_bytes`.
struct SLITHER_BROKER_EXPORT broker_options {
  /// Namespace of the broker's stores and default runtime directory. [A-Za-z0-9_-]+.
  std::string ns = "default";
  /// Owner-only directory for the control socket and the lock file; empty: default_runtime_dir(ns).
  std::filesystem::path runtime_dir;
  /// Empty: ipc://<runtime_dir>/control. A tcp://<host>:<port> endpoint is
  /// always authenticated with CURVE (both key files below are required), and
  /// binds only a loopback host unless `allow_remote`. A port of `*` picks a
  /// free one (see `Broker::control_endpoint`).
  std::string control_endpoint;
  /// tcp only: the broker's CURVE secret key, Z85 on one line, in an
  /// owner-only file (`slither-broker keygen` writes one).
  std::filesystem::path curve_secret_key_file;
  /// tcp only: the public keys (Z85, one per line, `#` comments) of the
  /// clients let in, in an owner-only file.
  std::filesystem::path curve_allowed_clients_file;
  /// Allow binding an address other machines can reach: for a tcp control
  /// endpoint, and for `metrics_endpoint`.
  bool allow_remote = false;
  /// "HOST:PORT" of an HTTP endpoint serving the broker's metrics at
  /// `GET /metrics` (Prometheus text format 0.0.4); empty: none. HOST is an
  /// IP address or localhost, loopback unless `allow_remote`; port 0 picks a
  /// free one (see `Broker::metrics_endpoint`). Anyone who can reach it can
  /// read the figures: it has no authentication.
  std::string metrics_endpoint;
  /// The stores to create (their `options.ns` is set to `ns`).
  std::vector<shm::store_definition> stores;
  /// Pending writes; past it requests get errc::busy.
  std::size_t write_queue_limit = 4096;
  /// Request bytes held by pending writes, all clients together; past it
  /// requests get errc::busy (one write always fits when none is pending).
  std::size_t write_queue_bytes = std::size_t{1} << 30;
  /// Request bytes held by one client's pending writes; past it its requests
  /// get errc::busy.
  std::size_t client_write_queue_bytes = std::size_t{256} << 20;
  /// A one-key write (put, erase, compare_and_set, compare_and_erase) whose payload is at most
  /// this many bytes may run on the serving thread when the writer is idle;
  /// larger writes are decoded and applied on the writer thread, so that
  /// other clients' requests are not held up meanwhile.
  std::size_t inline_write_bytes = 64 * 1024;
  /// How long a large write reserved in place (`client::reserve_put`) may
  /// stay uncommitted; then its block is freed. Bounds what a client that
  /// dies between reserving and committing holds; a client slower than this
  /// to fill its block gets `not_found` at its commit. TOML:
  /// `[broker] large_write_lease_ms` (at least 1).
  std::chrono::milliseconds large_write_lease{60000};
  /// Largest encoded reply; a view result past it gets errc::limit_exceeded.
  std::size_t max_reply_bytes = std::size_t{64} << 20;
  /// Client connections admitted at once; further handshakes are refused (the
  /// client sees `errc::unavailable`). Lowered at start, with a warning, to
  /// fit the open-file limit.
  std::size_t max_clients = 1024;
  /// Longest a view may run before its caller gets errc::timeout. A call
  /// still waiting for its turn then is dropped, not run.
  std::chrono::milliseconds view_timeout{5000};
  /// Views of one store running at once; further calls wait their turn.
  /// Views of other stores are not held up by them.
  std::size_t view_concurrency = 2;
  /// How long `stop()` waits for running views to return before it abandons
  /// them (and says so in the log).
  std::chrono::milliseconds stop_grace{5000};
  /// Bounds on incoming messages: `max_message_bytes` for a request's
  /// payload, `max_decoded_bytes` for what it may take in memory once decoded
  /// (a request past it gets errc::limit_exceeded before it is built).
  decode_limits limits;
  /// Worker pools for Dispatch (slither/broker/dispatch.hpp).
  std::vector<pool_options> pools;
  /// Where this broker's log lines go (its own, and its spawned workers'
  /// output); empty: spdlog's default logger. Called from the broker's
  /// threads and from the thread inside `start()`, `stop()` and `wait()`,
  /// one line at a time (calls never overlap), so it needs no locking of its
  /// own; it must not call into this Broker, and must not throw (an
  /// exception is caught by spdlog, reported on stderr and the line lost).
  /// Lines from other brokers in the process go to their own `log`.
  log_fn log;
  /// Lowest level passed to `log` (ignored without it).
  log_level log_min_level = log_level::info;
  /// A process this broker lives for; 0: none. It must be this process's
  /// parent, or an ancestor when wrappers that did not exec stand between
  /// them, else `start()` fails with `invalid_argument` naming both pids.
  /// About every 200 ms the broker checks that it still is, by parent links
  /// rather than by pid (which a new process may reuse); once it is not (the
  /// process died, even by SIGKILL, or a wrapper between them died and the
  /// broker went to init), the broker logs "parent process PID is gone:
  /// stopping" and stops gracefully, as on SIGTERM: `wait()` returns. A
  /// watch of pid 1, or of a subreaper that takes the broker in, holds.
  /// `slither-broker --parent-pid`; `slither.launch` passes its own pid.
  std::int64_t parent_pid = 0;
};

namespace detail {
struct broker_access;
}  // namespace detail

/// A broker embedded in this process. Construct, `register_view` as needed,
/// `start()`, then `wait()` or `stop()`.
///
/// Thread safety: `write`, `register_view`, `handle_signals`, `stop` and
/// `wait` may be called from any threads at once (`stop` from several waits
/// for the one that stops). `start` must not run at the same time as another
/// member call. `reader`, `control_endpoint`, `runtime_dir` and
/// `metrics_endpoint` read what `start` set: call them after it returned, and
/// use what they return only until `stop` (or the destructor) begins. Views
/// and write functions run on the broker's own threads, never on the
/// caller's (`write` waits for its function, which must not call `write` of
/// this broker); see `broker_options::log` for where log lines are passed.
class SLITHER_BROKER_EXPORT Broker {
 public:
  /// Keeps the options; nothing is created until `start()`.
  explicit Broker(broker_options options);
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;
  /// Calls `stop()`.
  ~Broker();

  /// Creates the runtime directory (0700), takes the namespace lock, creates
  /// the stores (running their `load`), binds the control socket and starts
  /// serving. Errors: `already_exists` (a live broker holds the namespace),
  /// `invalid_argument` (bad names, an unsafe runtime directory, a
  /// `parent_pid` that is not an ancestor), `io_error`,
  /// or a store's own error.
  result<void> start();
  /// Graceful stop: stops reading requests, finishes queued writes and
  /// answers them, unlinks the segments and removes the runtime directory.
  /// Safe twice, and before `start()`.
  void stop() noexcept;
  /// Blocks until the broker is stopped: by `stop()` from another thread, or
  /// by SIGINT/SIGTERM/SIGHUP when `handle_signals(true)`, or when the
  /// `parent_pid` process is gone; then finishes the stop.
  void wait();
  /// SIGINT/SIGTERM/SIGHUP → graceful stop (for the executable): the signal
  /// wakes `wait()`, which then stops the broker (segments unlinked, runtime
  /// directory removed), so call `wait()` when this is on. SIGHUP stops rather
  /// than reloading the config: a closed terminal must not leave files behind,
  /// and stores cannot change shape under attached readers. A second signal
  /// stops at once.
  /// May be called before or after `start()`.
  void handle_signals(bool on);

  /// Registers `fn` as view `name` of `store`. Errors: `not_found` (no such
  /// store), `already_exists` (the name is taken), `invalid_argument` (empty name).
  result<void> register_view(std::string store, std::string name, view_scope scope, view_fn fn);
  /// Runs `fn` on the broker's writer thread against the store's writer and
  /// waits for it (C++ embedding writes). Blocks while the write queue is
  /// full. Errors: `not_found`, `unavailable` (not running), `shutting_down`,
  /// `invalid_argument` when called from this broker's writer or serving
  /// thread (from inside `fn` or a telemetry handler of a write: it would
  /// wait for itself; use the `shm::writer` `fn` was given), or `fn`'s error.
  result<void> write(std::string_view store, function_ref<result<void>(shm::writer&)> fn);
  /// A reader over a running store; throws slither::error(not_found).
  const shm::reader& reader(std::string_view store) const;
  /// The endpoint clients connect to (set by `start()`; a tcp port given as
  /// `*` is the one chosen).
  const std::string& control_endpoint() const noexcept;
  /// The runtime directory in use (set by `start()`).
  const std::filesystem::path& runtime_dir() const noexcept;
  /// Where the metrics endpoint listens ("127.0.0.1:9464", with the port
  /// chosen if 0 was asked for; set by `start()`), or empty without one.
  const std::string& metrics_endpoint() const noexcept;

  struct impl;                          ///< implementation detail
  friend struct detail::broker_access;  ///< the embedded dispatch API reaches the broker's loop

 private:
  std::unique_ptr<impl> p_;
};

/// Parses a slither.toml: [broker] namespace, runtime_dir, control_endpoint,
/// curve_secret_key_file, curve_allowed_clients_file, allow_remote, metrics_endpoint,
/// max_clients, write_queue_limit, write_queue_bytes,
/// client_write_queue_bytes, inline_write_bytes, max_message_bytes,
/// max_decoded_bytes, max_reply_bytes, view_timeout_ms, view_concurrency,
/// stop_grace_ms, large_write_lease_ms (each size and duration range-checked); [[stores]] name,
/// [[stores.tables]] name/kind/initial_capacity, and an optional
/// load = { file = "x.jsonl" | "x.csv", table = "...", key = "<field>" } (or
/// a list of them) whose rows become entries when the store starts. Relative
/// file paths are relative to the config file. [[pools]] name (required),
/// size, python, command (a list), pythonpath (a list), env (a table), cwd,
/// credits, heartbeat_ms, heartbeat_misses, restart_backoff_ms,
/// restart_backoff_max_ms, max_start_failures, max_batches, max_rss_mib,
/// endpoint: see `pool_options`. Errors name the file, line and field.
SLITHER_BROKER_EXPORT result<broker_options> load_config(const std::filesystem::path& path);

}  // namespace slither
