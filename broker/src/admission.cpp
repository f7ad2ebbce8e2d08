#include "admission.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <iterator>
#include <vector>
#include <zmq_addon.hpp>

#include "broker_log.hpp"

namespace slither::detail {
namespace {

constexpr const char* zap_endpoint = "inproc://zeromq.zap.01";
constexpr const char* zap_domain = "slither";
// Worker pools' sockets: judged alike, not counted as clients.
constexpr const char* worker_domain = "slither.workers";
// ZMQ_ZAP_ENFORCE_DOMAIN (a draft option in libzmq 4.3): without a handler,
// refuse instead of letting NULL handshakes through. Best effort: our handler
// is bound for the guarded socket's whole life anyway.
constexpr int zap_enforce_domain = 93;

// "pid:<n>" for a unix-socket peer, its numeric address for a tcp one: the
// same key the ZAP request's address yields (see `peer_of_address`).
std::string peer_of_fd(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return {};
  if (addr.ss_family == AF_UNIX) {
    ucred cred{};
    socklen_t size = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &size) != 0) return {};
    return "pid:" + std::to_string(cred.pid);
  }
  len = sizeof addr;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return {};
  char text[INET6_ADDRSTRLEN] = {};
  const void* where =
      addr.ss_family == AF_INET6
          ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr)
          : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&addr)->sin_addr);
  if (::inet_ntop(addr.ss_family, where, text, sizeof text) == nullptr) return {};
  return text;
}

// The credentials libzmq puts into an ipc peer's ZAP address: the last three
// ':'-separated fields are uid, gid and pid.
struct peer_cred {
  std::uint64_t uid = 0;
  std::uint64_t pid = 0;
};

std::optional<peer_cred> cred_of_address(std::string_view address) {
  std::array<std::uint64_t, 3> field{};
  for (int i = 2; i >= 0; --i) {
    const auto colon = address.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const auto text = address.substr(colon + 1);
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), field[i]);
    if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
    address = address.substr(0, colon);
  }
  return peer_cred{field[0], field[2]};
}

std::string peer_of_address(const std::string& address, const std::string& mechanism) {
  if (mechanism == "NULL") {
    if (const auto cred = cred_of_address(address)) return "pid:" + std::to_string(cred->pid);
  }
  return address;
}

std::string frame_text(const zmq::message_t& m) {
  return std::string(m.data<char>(), m.size());
}

}  // namespace

admission::admission(zmq::socket_t zap, zmq::socket_t monitor, admission_policy policy) noexcept
    : zap_(std::move(zap)), monitor_(std::move(monitor)), policy_(std::move(policy)) {}

result<admission> admission::open(zmq::context_t& context, admission_policy policy) {
  try {
    zmq::socket_t zap(context, zmq::socket_type::rep);
    zap.set(zmq::sockopt::linger, 0);
    zap.bind(zap_endpoint);
    zmq::socket_t monitor(context, zmq::socket_type::pair);
    monitor.set(zmq::sockopt::linger, 0);
    // Unbounded on our side: libzmq sends monitor events with a blocking send
    // from its I/O thread, so a full pipe would stall every connection.
    monitor.set(zmq::sockopt::rcvhwm, 0);
    return admission(std::move(zap), std::move(monitor), std::move(policy));
  } catch (const zmq::error_t& e) {
    return fail(errc::io_error, std::string("cannot bind the ZAP handler: ") + e.what());
  }
}

result<void> admission::watch(zmq::socket_t& guarded) {
  try {
    guarded.set(zmq::sockopt::zap_domain, zap_domain);
    const int on = 1;
    (void)zmq_setsockopt(guarded.handle(), zap_enforce_domain, &on, sizeof on);
    monitor_endpoint_ = "inproc://slither.monitor." +
                        std::to_string(reinterpret_cast<std::uintptr_t>(guarded.handle()));
    if (zmq_socket_monitor(guarded.handle(), monitor_endpoint_.c_str(),
                           ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0) {
      throw zmq::error_t();
    }
    monitor_.connect(monitor_endpoint_);
  } catch (const zmq::error_t& e) {
    return fail(errc::io_error, std::string("cannot monitor the control socket: ") + e.what());
  }
  return {};
}

result<void> admission::guard(zmq::socket_t& socket) {
  try {
    socket.set(zmq::sockopt::zap_domain, worker_domain);
    const int on = 1;
    (void)zmq_setsockopt(socket.handle(), zap_enforce_domain, &on, sizeof on);
  } catch (const zmq::error_t& e) {
    return fail(errc::io_error, std::string("cannot guard a worker socket: ") + e.what());
  }
  return {};
}

void admission::unwatch(zmq::socket_t& guarded) noexcept {
  if (monitor_endpoint_.empty() || !guarded) return;
  drain_monitor();
  (void)zmq_socket_monitor(guarded.handle(), nullptr, 0);
  monitor_endpoint_.clear();
}

void admission::drain_monitor() {
  while (monitor_ && (monitor_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0) on_monitor();
}

void admission::on_monitor() {
  std::vector<zmq::message_t> parts;
  if (!zmq::recv_multipart(monitor_, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
  if (parts.empty() || parts[0].size() != 6) return;
  std::uint16_t event = 0;
  std::uint32_t value = 0;
  std::memcpy(&event, parts[0].data(), sizeof event);
  std::memcpy(&value, parts[0].data<char>() + sizeof event, sizeof value);
  const int fd = static_cast<int>(value);
  if (const auto it = connections_.find(fd); it != connections_.end()) {
    // Closed (or, on ACCEPTED, a descriptor reused before we saw it close).
    if (it->second.in_use) {
      --in_use_;
    } else if (auto t = tokens_.find(it->second.peer); t != tokens_.end()) {
      // Closed without a word: a refused connection, or an approved one that
      // left before using its admission.
      if (t->second.refusals > 0) {
        --t->second.refusals;
      } else if (t->second.approvals > 0) {
        --t->second.approvals;
        --approvals_;
      }
      if (t->second.refusals == 0 && t->second.approvals == 0) tokens_.erase(t);
    }
    connections_.erase(it);
  }
  if (event == ZMQ_EVENT_ACCEPTED) connections_.emplace(fd, connection{peer_of_fd(fd)});
  if (event == ZMQ_EVENT_DISCONNECTED && on_close_) on_close_(fd);
  broker_log().trace(
      "connection event {} on descriptor {}: {} live, {} in use, {} approvals pending", event, fd,
      connections_.size(), in_use_, approvals_);
  publish();
}

void admission::take_approval(const std::string& peer) {
  auto t = tokens_.find(peer);
  if (t == tokens_.end() || t->second.approvals == 0) {
    // The peer key did not match (a tcp address seen two ways): any will do.
    t = std::find_if(tokens_.begin(), tokens_.end(),
                     [](const auto& kv) { return kv.second.approvals > 0; });
    if (t == tokens_.end()) return;
  }
  --t->second.approvals;
  --approvals_;
  if (t->second.refusals == 0 && t->second.approvals == 0) tokens_.erase(t);
}

void admission::on_message_from(int fd) {
  auto it = connections_.find(fd);
  if (it == connections_.end() || !it->second.in_use) drain_monitor();
  it = connections_.find(fd);
  if (it == connections_.end()) {
    // Its ACCEPTED event is lost to us (the monitor started late): count it anyway.
    it = connections_.emplace(fd, connection{peer_of_fd(fd)}).first;
  }
  if (it->second.in_use) return;
  it->second.in_use = true;
  ++in_use_;
  take_approval(it->second.peer);
  publish();
}

std::optional<std::string> admission::judge(const std::string& address,
                                            const std::string& mechanism,
                                            const std::string& credential, std::string& user_id,
                                            bool counted) {
  if (mechanism == "NULL") {
    const auto cred = cred_of_address(address);
    if (!cred) return "cannot tell the peer's uid from its address '" + address + "'";
    if (cred->uid != policy_.uid) {
      return "peer uid " + std::to_string(cred->uid) + " (pid " + std::to_string(cred->pid) +
             ") is not the broker's uid " + std::to_string(policy_.uid);
    }
    user_id = "uid:" + std::to_string(cred->uid);
  } else if (mechanism == "CURVE") {
    if (credential.size() != 32)
      return "CURVE credential of " + std::to_string(credential.size()) + " bytes";
    char z85[41] = {};
    if (zmq_z85_encode(z85, reinterpret_cast<const std::uint8_t*>(credential.data()), 32) ==
        nullptr) {
      return "CURVE key cannot be encoded";
    }
    if (!policy_.curve_clients.contains(z85)) {
      return "client key " + std::string(z85) + " from " + address + " is not on the allow-list";
    }
    user_id = z85;
  } else {
    return "mechanism '" + mechanism.substr(0, 16) + "' is not accepted";
  }
  if (counted && admitted() >= policy_.max_clients) {
    return "max_clients (" + std::to_string(policy_.max_clients) + ") connections are open";
  }
  return std::nullopt;
}

void admission::on_zap() {
  std::vector<zmq::message_t> parts;
  if (!zmq::recv_multipart(zap_, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
  // Events of connections accepted before this handshake began are already
  // queued: take them in so that the count is current.
  drain_monitor();
  std::string request_id = parts.size() > 1 ? frame_text(parts[1]) : std::string();
  std::string user_id;
  std::optional<std::string> refusal;
  if (parts.size() < 6 || frame_text(parts[0]) != "1.0") {
    refusal = "malformed ZAP request";
  } else {
    const std::string address = frame_text(parts[3]);
    const std::string mechanism = frame_text(parts[5]);
    const std::string credential = parts.size() > 6 ? frame_text(parts[6]) : std::string();
    const bool counted = frame_text(parts[2]) != worker_domain;
    refusal = judge(address, mechanism, credential, user_id, counted);
    if (counted) {
      auto& t = tokens_[peer_of_address(address, mechanism)];
      if (refusal) {
        ++t.refusals;
      } else {
        ++t.approvals;
        ++approvals_;
      }
    }
  }
  broker_log().trace("handshake {}: {} in use, {} approvals pending",
                     refusal ? "refused" : "admitted", in_use_, approvals_);
  if (refusal) {
    ++refused_;
    log_refusal(*refusal);
  }
  publish();
  const std::array<std::string, 6> reply{
      "1.0", request_id, refusal ? "400" : "200", refusal ? *refusal : "OK", user_id, ""};
  for (std::size_t i = 0; i < reply.size(); ++i) {
    (void)zap_.send(zmq::buffer(reply[i]),
                    i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

void admission::log_refusal(const std::string& reason) {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_log_ < std::chrono::seconds(1)) {
    ++unlogged_;
    return;
  }
  if (unlogged_ > 0) {
    broker_log().warn("refused a connection: {} ({} more refused since the last report)", reason,
                      unlogged_);
  } else {
    broker_log().warn("refused a connection: {}", reason);
  }
  last_log_ = now;
  unlogged_ = 0;
}

void admission::publish() noexcept {
  published_->connections = connections_.size();
  published_->admitted = admitted();
  published_->refused = refused_;
}

admission_counts admission::counts() const noexcept {
  return {published_->connections.load(), published_->admitted.load(), published_->refused.load()};
}

void admission::close() noexcept {
  monitor_.close();
  zap_.close();
}

}  // namespace slither::detail
