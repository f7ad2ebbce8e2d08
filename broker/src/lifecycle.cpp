// The broker's lifecycle: start (options, runtime directory, namespace lock,
// stores, socket, threads), graceful stop, and what asks for one: signals (a
// second one stops at once) and the end of the `parent_pid` process.
#include <pthread.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "broker_impl.hpp"
#include "slither/broker/client.hpp"
#include "tcp_endpoint.hpp"

namespace slither {

namespace detail {

bool valid_name(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (const char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace detail

void Broker::impl::request_stop() {
  {
    std::lock_guard lock(life_mutex);
    stop_requested = true;
  }
  life_cv.notify_all();
}

void Broker::impl::install_signals() {
  // SIGHUP too: a broker started from a terminal that closes stops cleanly
  // (segments and runtime directory removed) instead of dying with them in place.
  s->signals.emplace(s->io, SIGINT, SIGTERM, SIGHUP);
  auto handler = std::make_shared<std::function<void(const boost::system::error_code&, int)>>();
  *handler = [this, handler = std::weak_ptr(handler)](const boost::system::error_code& ec,
                                                      int signo) {
    if (ec) return;
    bool again = false;
    {
      std::lock_guard lock(life_mutex);
      again = stop_requested || state == phase::stopping;
    }
    if (again) {
      detail::broker_log().warn("signal {} received again: stopping at once", signo);
      stop_at_once();
      return;
    }
    detail::broker_log().info("signal {} received: stopping (send it again to stop at once)",
                              signo);
    request_stop();
    // Listen on: a second signal must not wait for the graceful stop.
    if (auto h = handler.lock()) s->signals->async_wait(*h);
  };
  s->signals->async_wait(*handler);
  signal_handler = handler;
}

void Broker::impl::schedule_parent_check() {
  s->parent_timer->expires_after(detail::parent_check_interval);
  s->parent_timer->async_wait([this](const boost::system::error_code& ec) {
    if (ec || s->stopping) return;
    if (s->parent->holds()) {
      schedule_parent_check();
      return;
    }
    detail::broker_log().warn("parent process {} is gone: stopping", s->parent->pid());
    request_stop();
  });
}

void Broker::impl::stop_at_once() {
  hurry = true;
  for (auto& j : s->queue.abort()) {
    if (j.cancel) j.cancel();
  }
  s->views->hurry();
}

result<void> Broker::impl::check_options() const {
  if (!detail::valid_name(options.ns)) {
    return fail(errc::invalid_argument,
                "namespace '" + options.ns + "' must be non-empty and use only [A-Za-z0-9_-]");
  }
  auto duration = [](std::string_view name, std::chrono::milliseconds v,
                     std::int64_t least) -> result<void> {
    if (v.count() < least || v > max_option_duration) {
      return fail(errc::invalid_argument, std::string(name) + " " + std::to_string(v.count()) +
                                              " ms is outside " + std::to_string(least) + ".." +
                                              std::to_string(max_option_duration.count()) + " ms");
    }
    return {};
  };
  auto size = [](std::string_view name, std::size_t v) -> result<void> {
    if (v == 0 || v > max_option_bytes) {
      return fail(errc::invalid_argument, std::string(name) + " " + std::to_string(v) +
                                              " is outside 1.." + std::to_string(max_option_bytes));
    }
    return {};
  };
  for (auto r : {duration("view_timeout", options.view_timeout, 1),
                 duration("stop_grace", options.stop_grace, 0),
                 duration("large_write_lease", options.large_write_lease, 1),
                 size("max_clients", options.max_clients),
                 size("write_queue_limit", options.write_queue_limit),
                 size("write_queue_bytes", options.write_queue_bytes),
                 size("client_write_queue_bytes", options.client_write_queue_bytes),
                 size("max_message_bytes", options.limits.max_message_bytes),
                 size("max_decoded_bytes", options.limits.max_decoded_bytes),
                 size("max_reply_bytes", options.max_reply_bytes),
                 size("view_concurrency", options.view_concurrency)}) {
    if (!r) return r;
  }
  if (options.inline_write_bytes > max_option_bytes) {
    return fail(errc::invalid_argument, "inline_write_bytes " +
                                            std::to_string(options.inline_write_bytes) +
                                            " is over " + std::to_string(max_option_bytes));
  }
  return {};
}

result<void> Broker::impl::start() {
  {
    std::lock_guard lock(life_mutex);
    if (state != phase::idle) return fail(errc::already_exists, "broker is already running");
  }
  if (auto r = check_options(); !r) return r;
  std::optional<detail::parent_watch> parent;
  if (options.parent_pid != 0) {
    auto watch = detail::parent_watch::start(options.parent_pid);
    if (!watch) return std::move(watch).error();
    parent.emplace(std::move(*watch));
  }
  max_clients = fit_max_clients();
  hurry = false;
  auto st = std::make_unique<serving_state>(detail::write_queue_limits{
      options.write_queue_limit, options.write_queue_bytes, options.client_write_queue_bytes});
  st->parent = std::move(parent);
  if (auto r = claim_runtime_dir(*st); !r) return r;
  s = std::move(st);
  // From here on a failure tears down what was made (stores unlink their
  // segments, the lock unlinks its file) and removes the runtime directory
  // if this broker made it.
  auto abandon = [this](error_info err) -> result<void> {
    s.reset();
    remove_runtime_dir();
    return err;
  };

  for (auto def : options.stores) {
    def.options.ns = options.ns;
    const std::string name = def.options.name;
    if (s->stores.contains(name)) {
      return abandon(fail(errc::invalid_argument, "store '" + name + "' is declared twice"));
    }
    auto w = shm::open_store(def);
    if (!w) {
      auto err = std::move(w).error();
      err.message = "store '" + name + "': " + err.message;
      return abandon(std::move(err));
    }
    s->stores.emplace(name, std::move(*w));
    auto reader = shm::reader::attach(options.ns, name);
    if (!reader) {
      auto err = std::move(reader).error();
      err.message = "store '" + name + "': cannot attach a reader for views: " + err.message;
      return abandon(std::move(err));
    }
    s->view_readers.emplace(name, std::make_shared<const shm::reader>(std::move(*reader)));
  }
  if (auto r = prepare_pools(); !r) return abandon(std::move(r).error());
  if (auto r = open_socket(); !r) return abandon(std::move(r).error());
  if (auto r = start_dispatch(); !r) return abandon(std::move(r).error());
  if (auto r = open_metrics(); !r) return abandon(std::move(r).error());

  s->link = std::make_shared<detail::loop_link>(s->io);
  // A few threads per store, and one for decoding large view arguments.
  s->views = std::make_unique<detail::view_runner>(
      std::min(detail::max_view_threads, s->stores.size() * options.view_concurrency + 1),
      options.view_concurrency);
  s->reclaim_timer.emplace(s->io);
  s->growth_timer.emplace(s->io);
  s->parent_timer.emplace(s->io);
  {
    std::lock_guard lock(life_mutex);
    state = phase::running;
    stop_requested = false;
    if (signals_wanted) install_signals();
  }
  s->writer_thread = std::thread([this] {
    // Named, so that a profile or /proc/<pid>/task tells the writer's CPU
    // time and waits from the serving thread's.
    ::pthread_setname_np(::pthread_self(), "slither-writer");
    detail::log_scope scope(logger);
    detail::own_thread_of = this;
    while (auto job = s->queue.pop()) {
      job->run();
      s->queue.finish();
    }
  });
  s->control.emplace(s->io, s->router, [this](zmq::socket_t& socket) { on_control(socket); });
  s->zap.emplace(s->io, s->admission->zap_socket(),
                 [this](zmq::socket_t&) { s->admission->on_zap(); });
  s->monitor.emplace(s->io, s->admission->monitor_socket(),
                     [this](zmq::socket_t&) { s->admission->on_monitor(); });
  s->monitor->start();
  s->zap->start();
  s->control->start();
  schedule_reclaim();
  if (s->parent) schedule_parent_check();
  s->serving_thread = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), "slither-serve");
    detail::log_scope scope(logger);
    detail::own_thread_of = this;
    auto guard = asio::make_work_guard(s->io);
    // A handler that throws is a bug, but it must not take the broker down:
    // log it and keep serving (io_context::run may be called again).
    for (;;) {
      try {
        s->io.run();
        return;
      } catch (const std::exception& e) {
        detail::broker_log().error("broker event loop: unexpected exception: {}", e.what());
      }
    }
  });
  serve_metrics();
  detail::broker_log().info("broker for namespace '{}' serving {} store(s) at {}", options.ns,
                            s->stores.size(), endpoint);
  return {};
}

result<void> Broker::impl::claim_runtime_dir(serving_state& st) {
  dir = options.runtime_dir.empty() ? default_runtime_dir(options.ns) : options.runtime_dir;
  dir = std::filesystem::absolute(dir).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // a trailing '/'
  auto created = detail::ensure_private_dir(dir);
  if (!created) return std::move(created).error();
  owns_dir = *created;
  // Nothing made yet but (perhaps) the directory: a refusal removes only that.
  auto refuse = [this](error_info err) -> result<void> {
    remove_runtime_dir();
    return err;
  };
  endpoint = options.control_endpoint.empty() ? "ipc://" + (dir / "control").string()
                                              : options.control_endpoint;
  if (endpoint.starts_with("tcp://")) {
    auto security = detail::prepare_tcp_endpoint(endpoint, options);
    if (!security) return refuse(std::move(security).error());
    tcp.emplace(std::move(*security));
  } else if (!endpoint.starts_with("ipc://")) {
    return refuse(fail(errc::invalid_argument,
                       "control_endpoint '" + endpoint + "' must be ipc:// or tcp://"));
  } else if (!options.curve_secret_key_file.empty()) {
    detail::broker_log().warn(
        "CURVE keys apply to tcp endpoints only; the ipc endpoint '{}' is guarded by "
        "its owner-only directory and the peer's uid",
        endpoint);
  }
  std::optional<std::filesystem::path> socket_file;
  if (endpoint.starts_with("ipc://")) socket_file = endpoint.substr(6);
  if (socket_file && socket_file->string().size() >= sizeof(sockaddr_un::sun_path)) {
    return refuse(fail(errc::invalid_argument,
                       "control socket path '" + socket_file->string() + "' is " +
                           std::to_string(socket_file->string().size()) + " bytes; at most " +
                           std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                           " fit (use a shorter runtime directory)"));
  }
  const bool socket_in_dir = socket_file && socket_file->parent_path() == dir;
  if (socket_file && !socket_in_dir) {
    // ZeroMQ unlinks whatever sits at an ipc path before binding: only a free
    // name on a trusted path will do.
    if (auto r = detail::check_ancestors(*socket_file); !r) return refuse(std::move(r).error());
    if (auto r = detail::check_socket_path(*socket_file, false); !r) {
      return refuse(std::move(r).error());
    }
  }
  auto lock = detail::namespace_lock::acquire(dir / "lock", options.ns, owns_dir);
  if (!lock) return refuse(std::move(lock).error());
  owns_dir = lock->owns_dir();
  if (socket_in_dir) {
    // With the namespace lock held, a socket of ours here is a dead broker's.
    if (auto r = detail::check_socket_path(*socket_file, true); !r) {
      lock->release();
      return refuse(std::move(r).error());
    }
  }
  st.lock.emplace(std::move(*lock));
  return {};
}

void Broker::impl::remove_runtime_dir() noexcept {
  if (socket_file_id) {
    const char* file = endpoint.c_str() + 6;
    struct stat st {};
    if (::lstat(file, &st) == 0 && S_ISSOCK(st.st_mode) &&
        std::pair(st.st_dev, st.st_ino) == *socket_file_id) {
      ::unlink(file);
    }
    socket_file_id.reset();
  }
  if (!owns_dir) return;
  // Only what we made: a runtime directory that holds anything else stays.
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) {
    detail::broker_log().warn("runtime directory '{}' not removed: {}", dir.string(),
                              std::strerror(errno));
  }
  owns_dir = false;
}

void Broker::impl::shutdown() noexcept {
  serving_state& st = *s;
  // Scrapes end first: they reach into what the rest of the stop tears down.
  close_metrics();
  // From here on every request that arrives is answered `shutting_down`.
  asio::post(st.io, [this] {
    s->stopping = true;
    s->reclaim_timer->cancel();
    s->growth_timer->cancel();
    s->parent_timer->cancel();
  });
  // Writes already queued are applied and answered (or, stopping at once,
  // answered `shutting_down`); new ones are refused.
  st.queue.close();
  st.writer_thread.join();
  if (const auto abandoned = st.views->stop(options.stop_grace); abandoned > 0) {
    detail::broker_log().warn(
        "{} view call(s) still running {}: abandoned to their threads", abandoned,
        hurry ? "at a stop at once"
              : "after the stop grace of " + std::to_string(options.stop_grace.count()) + " ms");
  }
  asio::post(st.io, [this] {
    answer_pending_views(fail(errc::shutting_down, "the broker stopped before it returned"));
    // Jobs end (their clients are told), then the pools' workers stop.
    if (s->dispatch) s->dispatch->stop();
    drain_at_stop();
    s->control->stop();
    s->signals.reset();
    s->admission->unwatch(s->router);
    s->router.close();
    s->zap->stop();
    s->monitor->stop();
    s->admission->close();
    s->link->close();
    s->io.stop();
  });
  st.serving_thread.join();
  // Closing the context waits (up to the linger) for the last replies. An
  // in-process dispatch job still open holds it: shut it down instead, so
  // that the job's socket fails at once, and let the job close it.
  if (st.zmq_context.use_count() > 1) zmq_ctx_shutdown(st.zmq_context->handle());
  st.zmq_context.reset();
  for (auto& [name, w] : st.stores) w.close();
  s.reset();  // unlinks the lock file, then unlocks
  remove_runtime_dir();
  detail::broker_log().info("broker for namespace '{}' stopped", options.ns);
}

void Broker::impl::stop() noexcept {
  std::unique_lock lock(life_mutex);
  if (state == phase::stopping) {
    life_cv.wait(lock, [&] { return state != phase::stopping; });
    return;
  }
  if (state != phase::running) return;
  state = phase::stopping;
  lock.unlock();
  shutdown();
  lock.lock();
  state = phase::idle;
  stop_requested = false;
  life_cv.notify_all();
}

void Broker::wait() {
  detail::log_scope scope(p_->logger);
  {
    std::unique_lock lock(p_->life_mutex);
    p_->life_cv.wait(lock, [&] { return p_->state != impl::phase::running || p_->stop_requested; });
  }
  stop();
}

void Broker::handle_signals(bool on) {
  std::lock_guard lock(p_->life_mutex);
  p_->signals_wanted = on;
  if (p_->state != impl::phase::running) return;
  asio::post(p_->s->io, [p = p_.get(), on] {
    if (on && !p->s->signals) {
      p->install_signals();
    } else if (!on) {
      p->s->signals.reset();
    }
  });
}

}  // namespace slither
