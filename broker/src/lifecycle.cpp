// The broker's lifecycle: start (runtime directory, namespace lock, stores,
// socket, threads), graceful stop, and the signals that ask for one.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
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
  s->signals.emplace(s->io, SIGINT, SIGTERM);
  s->signals->async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("signal {} received: stopping", signo);
    request_stop();
  });
}

result<void> Broker::impl::open_socket() {
  detail::admission_policy policy;
  policy.uid = ::geteuid();
  policy.max_clients = max_clients;
  if (tcp) policy.curve_clients = tcp->allowed_clients;
  // The ZAP handler first: a handshake it does not see is not checked.
  auto adm = detail::admission::open(s->zmq_context, std::move(policy));
  if (!adm) return std::move(adm).error();
  s->admission.emplace(std::move(*adm));
  try {
    s->router = zmq::socket_t(s->zmq_context, zmq::socket_type::router);
    s->router.set(zmq::sockopt::linger, detail::close_linger_ms);
    s->router.set(zmq::sockopt::sndhwm, 1000);
    s->router.set(zmq::sockopt::rcvhwm, 1000);
    s->router.set(zmq::sockopt::router_mandatory, false);
    // A peer that connects but never completes a handshake holds a
    // descriptor only this long.
    s->router.set(zmq::sockopt::handshake_ivl, detail::handshake_ms);
    s->router.set(
        zmq::sockopt::maxmsgsize,
        static_cast<std::int64_t>(options.limits.max_message_bytes) + detail::frame_headroom);
    if (tcp) {
      s->router.set(zmq::sockopt::curve_server, true);
      s->router.set(zmq::sockopt::curve_secretkey, tcp->secret_key);
    }
    if (auto r = s->admission->watch(s->router); !r) return r;
    s->router.bind(endpoint);
    // A port given as '*' is chosen by the system: clients need the real one.
    if (tcp) endpoint = s->router.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return fail(errc::io_error,
                "cannot bind the control socket to '" + endpoint + "': " + e.what());
  }
  if (endpoint.starts_with("ipc://")) {
    // ZeroMQ leaves the socket file behind when it closes; remember which
    // file is ours, so that only it is removed at stop.
    struct stat st {};
    if (::lstat(endpoint.c_str() + 6, &st) == 0) socket_file_id = {st.st_dev, st.st_ino};
  }
  return {};
}

// Raises the soft RLIMIT_NOFILE to the hard limit (every connection costs a
// descriptor, and libzmq aborts when accept() finds none), then fits the
// connection limit inside it with room for handshakes in progress and the
// broker's own files.
std::size_t Broker::impl::fit_max_clients() const {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return options.max_clients;
  if (lim.rlim_cur < lim.rlim_max) {
    const rlim_t before = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      lim.rlim_cur = before;
    } else {
      spdlog::debug("open-file limit raised from {} to {}", before, lim.rlim_cur);
    }
  }
  if (lim.rlim_cur == RLIM_INFINITY) return options.max_clients;
  const auto fds = static_cast<std::size_t>(lim.rlim_cur);
  const std::size_t fit = fds > detail::reserved_fds ? (fds - detail::reserved_fds) / 2 : 1;
  if (options.max_clients <= fit) return options.max_clients;
  spdlog::warn("max_clients {} lowered to {}: the open-file limit is {} (raise it with ulimit -n)",
               options.max_clients, std::max<std::size_t>(fit, 1), fds);
  return std::max<std::size_t>(fit, 1);
}

result<void> Broker::impl::start() {
  {
    std::lock_guard lock(life_mutex);
    if (state != phase::idle) return fail(errc::already_exists, "broker is already running");
  }
  if (!detail::valid_name(options.ns)) {
    return fail(errc::invalid_argument,
                "namespace '" + options.ns + "' must be non-empty and use only [A-Za-z0-9_-]");
  }
  if (options.max_clients == 0) {
    return fail(errc::invalid_argument, "max_clients must be at least 1");
  }
  max_clients = fit_max_clients();
  auto st = std::make_unique<serving_state>(options.write_queue_limit);
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
  }
  if (auto r = open_socket(); !r) return abandon(std::move(r).error());

  {
    std::lock_guard lock(life_mutex);
    state = phase::running;
    stop_requested = false;
    if (signals_wanted) install_signals();
  }
  s->writer_thread = std::thread([this] {
    while (auto job = s->queue.pop()) {
      (*job)();
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
  s->serving_thread = std::thread([this] {
    auto guard = asio::make_work_guard(s->io);
    // A handler that throws is a bug, but it must not take the broker down:
    // log it and keep serving (io_context::run may be called again).
    for (;;) {
      try {
        s->io.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("broker event loop: unexpected exception: {}", e.what());
      }
    }
  });
  spdlog::info("broker for namespace '{}' serving {} store(s) at {}", options.ns, s->stores.size(),
               endpoint);
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
    spdlog::warn(
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
    spdlog::warn("runtime directory '{}' not removed: {}", dir.string(), std::strerror(errno));
  }
  owns_dir = false;
}

void Broker::impl::shutdown() noexcept {
  serving_state& st = *s;
  asio::post(st.io, [this] { s->control->stop(); });
  // Writes already queued are applied and answered; new ones are refused.
  st.queue.close();
  st.writer_thread.join();
  st.view_pool.join();
  asio::post(st.io, [this] {
    s->pending_views.clear();
    s->signals.reset();
    s->admission->unwatch(s->router);
    s->router.close();
    s->zap->stop();
    s->monitor->stop();
    s->admission->close();
    s->io.stop();
  });
  st.serving_thread.join();
  st.zmq_context.close();  // waits (up to the linger) for the last replies
  for (auto& [name, w] : st.stores) w.close();
  s.reset();  // unlinks the lock file, then unlocks
  remove_runtime_dir();
  spdlog::info("broker for namespace '{}' stopped", options.ns);
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
