// Where Dispatch joins the broker: pools' keys and a dead broker's leftovers
// at start, the dispatch server beside the control socket, and dispatch
// requests routed to it.
#include <sys/stat.h>
#include <unistd.h>

#include <regex>

#include "broker_impl.hpp"
#include "worker_process.hpp"

namespace slither {

namespace {

// The ipc sockets of worker pools in a runtime directory: "<pool>.results"
// and "<pool>.w<worker>".
bool is_pool_socket_name(const std::string& name) {
  static const std::regex pattern("^[A-Za-z0-9_-]+\\.(results|w[0-9]+)$");
  return std::regex_match(name, pattern);
}

}  // namespace

result<void> Broker::impl::prepare_pools() {
  // The namespace lock is held: whatever a broker left here is a dead one's.
  if (const auto killed = detail::worker_records(dir).kill_leftovers(); killed > 0) {
    detail::broker_log().warn("killed {} worker(s) left behind by a dead broker of namespace '{}'",
                              killed, options.ns);
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    struct stat st {};
    if (is_pool_socket_name(name) && ::lstat(entry.path().c_str(), &st) == 0 &&
        S_ISSOCK(st.st_mode) && st.st_uid == ::geteuid()) {
      ::unlink(entry.path().c_str());
    }
  }
  for (const auto& p : options.pools) {
    if (!p.endpoint.starts_with("tcp://")) continue;
    // The same checks as a tcp control endpoint: keys required, loopback
    // unless allow_remote.
    auto security = detail::prepare_tcp_endpoint(p.endpoint, options);
    if (!security) {
      auto err = std::move(security).error();
      err.message = "pool '" + p.name + "': " + err.message;
      return err;
    }
    if (!pool_tcp) pool_tcp.emplace(std::move(*security));
  }
  return {};
}

result<void> Broker::impl::start_dispatch() {
  detail::pool_host host;
  host.io = &s->io;
  host.zmq = s->zmq_context.get();
  host.runtime_dir = dir;
  host.ns = options.ns;
  host.join_endpoint = endpoint;
  for (const auto& [name, w] : s->stores) host.stores.push_back(name);
  if (pool_tcp) host.curve_secret_key = pool_tcp->secret_key;
  host.max_frame_bytes =
      static_cast<std::int64_t>(options.limits.max_message_bytes) + detail::frame_headroom;
  host.guard = [this](zmq::socket_t& socket) { return s->admission->guard(socket); };
  s->dispatch = std::make_unique<detail::dispatch_server>(
      options.pools, std::move(host), s->router,
      [this] {
        if (s->control) s->control->kick();
      },
      [this] {
        auto& monitor = s->admission->monitor_socket();
        while ((monitor.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0) s->admission->on_monitor();
      });
  s->admission->on_close([this](int fd) {
    if (s->dispatch) s->dispatch->on_connection_closed(fd);
  });
  return s->dispatch->start();
}

void Broker::impl::handle_dispatch(std::string identity, int fd, std::uint64_t id,
                                   protocol::message_type type, const Map& args,
                                   zmq::message_t* batch) {
  if (batch != nullptr && batch->size() > options.limits.max_message_bytes) {
    return reply(identity, id,
                 fail(errc::limit_exceeded, "a batch of " + std::to_string(batch->size()) +
                                                " bytes is over the limit of " +
                                                std::to_string(options.limits.max_message_bytes)));
  }
  if (auto r = s->dispatch->handle(identity, fd, id, type, args, batch)) reply(identity, id, *r);
}

}  // namespace slither
