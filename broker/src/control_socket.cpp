// The control socket: ROUTER options, CURVE for tcp, the admission control
// (ZAP handler, connection monitor) it needs before it binds, and the
// connection limit fitted inside the open-file limit.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "broker_impl.hpp"

namespace slither {

result<void> Broker::impl::open_socket() {
  detail::admission_policy policy;
  policy.uid = ::geteuid();
  policy.max_clients = max_clients;
  if (tcp) policy.curve_clients = tcp->allowed_clients;
  if (pool_tcp)
    policy.curve_clients.insert(pool_tcp->allowed_clients.begin(), pool_tcp->allowed_clients.end());
  // The ZAP handler first: a handshake it does not see is not checked.
  auto adm = detail::admission::open(*s->zmq_context, std::move(policy));
  if (!adm) return std::move(adm).error();
  s->admission.emplace(std::move(*adm));
  try {
    s->router = zmq::socket_t(*s->zmq_context, zmq::socket_type::router);
    s->router.set(zmq::sockopt::linger, detail::close_linger_ms);
    s->router.set(zmq::sockopt::sndhwm, detail::send_queue_messages);
    s->router.set(zmq::sockopt::rcvhwm, detail::receive_queue_messages);
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
    // In-process, for this process's own dispatch jobs (no handshake, no file).
    s->router.bind(detail::inproc_control);
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
      detail::broker_log().debug("open-file limit raised from {} to {}", before, lim.rlim_cur);
    }
  }
  if (lim.rlim_cur == RLIM_INFINITY) return options.max_clients;
  const auto fds = static_cast<std::size_t>(lim.rlim_cur);
  const std::size_t fit = fds > detail::reserved_fds ? (fds - detail::reserved_fds) / 2 : 1;
  if (options.max_clients <= fit) return options.max_clients;
  detail::broker_log().warn(
      "max_clients {} lowered to {}: the open-file limit is {} (raise it with ulimit -n)",
      options.max_clients, std::max<std::size_t>(fit, 1), fds);
  return std::max<std::size_t>(fit, 1);
}

}  // namespace slither
