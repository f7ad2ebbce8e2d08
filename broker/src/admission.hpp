// Who may connect to the broker, and how many at once: a ZAP handler
// (ZeroMQ's authentication protocol, RFC 27) that every handshake on the
// control socket must pass, and a socket monitor that counts live connections.
//
// - ipc (NULL mechanism): ZeroMQ passes the peer's SO_PEERCRED credentials
//   as the ZAP "Address" ("<host>:<uid>:<gid>:<pid>"); only the broker's own
//   uid is let in.
// - tcp (CURVE mechanism): the client's public key must be on the allow-list.
// - Either way, past `max_clients` admitted connections further handshakes are
//   refused, so a flood of connections costs a refused handshake each, not a
//   session, and the broker never runs out of descriptors serving them.
//
// Caveats
// - The handler must be bound before the socket it guards binds, and stay
//   bound while that socket lives: a CURVE handshake with no ZAP handler
//   present is accepted by ZeroMQ without any key check.
// - A refused peer's ZeroMQ socket reconnects on its own (every 100 ms by
//   default) and is refused again each time; refusals are logged at most
//   once a second.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <zmq.hpp>

#include "slither/core/error.hpp"

namespace slither::detail {

/// What the ZAP handler lets in.
struct admission_policy {
  /// The uid an ipc peer must have (the broker's effective uid).
  uid_t uid = 0;
  /// Connections admitted at once; further handshakes are refused.
  std::size_t max_clients = 1024;
  /// Z85 public keys of the clients a CURVE handshake may come from; empty:
  /// CURVE is not in use and every CURVE handshake is refused.
  std::set<std::string> curve_clients;
};

/// Figures for `stats`.
struct admission_counts {
  std::size_t connections = 0;  ///< live connections (accepted, not yet closed)
  std::size_t admitted = 0;     ///< connections that passed the handshake
  std::uint64_t refused = 0;    ///< handshakes refused since start
};

/// The ZAP handler and connection counter of one ZeroMQ context. Runs on the
/// broker's serving thread: `on_zap` and `on_monitor` are called when their
/// sockets have a message.
class admission {
 public:
  /// Binds the ZAP handler (inproc://zeromq.zap.01) in `context`.
  /// Errors: `io_error` (another handler is bound in this context).
  static result<admission> open(zmq::context_t& context, admission_policy policy);

  admission(admission&&) noexcept = default;
  admission& operator=(admission&&) noexcept = default;

  /// Starts counting the connections of `guarded` (a socket monitor), and
  /// sets its ZAP domain so that NULL-mechanism handshakes consult the
  /// handler too. Call before `guarded` binds.
  result<void> watch(zmq::socket_t& guarded);
  /// Stops the monitor of `guarded`; call before closing it.
  void unwatch(zmq::socket_t& guarded) noexcept;
  /// Puts a worker pool's socket under the same rules (uid on ipc, the
  /// allow-list on CURVE) without counting its connections: they are not
  /// clients. Call before it binds.
  result<void> guard(zmq::socket_t& socket);
  /// Calls `fn` with the descriptor of each watched connection that closes
  /// (a dispatch job's client going away).
  void on_close(std::function<void(int fd)> fn) { on_close_ = std::move(fn); }

  /// The ZAP handler's socket, to poll.
  zmq::socket_t& zap_socket() noexcept { return zap_; }
  /// The monitor's socket, to poll.
  zmq::socket_t& monitor_socket() noexcept { return monitor_; }

  /// Answers one ZAP request (after taking in the monitor's pending events).
  void on_zap();
  /// Takes in one monitor event.
  void on_monitor();
  /// A message arrived on the guarded socket from the connection with
  /// descriptor `fd` (ZMQ_SRCFD of its first frame): the connection is in use.
  void on_message_from(int fd);

  /// Live and admitted connections, refusals; from any thread.
  admission_counts counts() const noexcept;
  /// The connection limit in force.
  std::size_t max_clients() const noexcept { return policy_.max_clients; }

  /// Closes both sockets. Safe twice.
  void close() noexcept;

 private:
  // How connections are counted. A ZAP request names its peer (an ipc
  // peer's pid, a tcp peer's address) but not its descriptor, while monitor
  // events and messages name the descriptor. So a decision leaves a token
  // for its peer: an approval until the connection shows itself by sending a
  // message (from then on it is counted by descriptor, exactly), a refusal
  // until a connection of that peer closes without having sent anything.
  // Admitted = connections in use + approvals not yet shown.
  struct connection {
    std::string peer;  // "pid:<n>" (ipc) or the peer's address (tcp)
    bool in_use = false;
  };
  struct tokens {
    std::size_t approvals = 0;
    std::size_t refusals = 0;
  };

  admission(zmq::socket_t zap, zmq::socket_t monitor, admission_policy policy) noexcept;
  // Allowed, or the reason for refusing.
  std::optional<std::string> judge(const std::string& address, const std::string& mechanism,
                                   const std::string& credential, std::string& user_id,
                                   bool counted);
  std::size_t admitted() const noexcept { return in_use_ + approvals_; }
  void take_approval(const std::string& peer);
  void log_refusal(const std::string& reason);
  void drain_monitor();
  void publish() noexcept;

  zmq::socket_t zap_;
  zmq::socket_t monitor_;
  admission_policy policy_;
  std::string monitor_endpoint_;
  std::unordered_map<int, connection> connections_;  // live, by descriptor
  std::unordered_map<std::string, tokens> tokens_;   // by peer
  std::size_t in_use_ = 0;
  std::size_t approvals_ = 0;  // sum over tokens_
  std::uint64_t refused_ = 0;
  // What `counts` reports to other threads (stats runs on the writer thread).
  struct published {
    std::atomic<std::size_t> connections{0};
    std::atomic<std::size_t> admitted{0};
    std::atomic<std::uint64_t> refused{0};
  };
  std::unique_ptr<published> published_ = std::make_unique<published>();
  std::function<void(int)> on_close_;
  std::chrono::steady_clock::time_point last_log_{};
  std::uint64_t unlogged_ = 0;
};

}  // namespace slither::detail
