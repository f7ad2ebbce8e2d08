// A ZeroMQ socket served by an Asio event loop: the control socket, the ZAP
// handler and the connection monitor all run on the broker's serving thread
// this way, and a further socket (a dispatch server's) joins the same loop by
// making one more of these.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <zmq.hpp>

namespace slither::detail {

/// Reads a ZeroMQ socket from an Asio loop without a polling tick. ZeroMQ
/// exposes a descriptor (ZMQ_FD) that becomes readable when the socket's
/// state may have changed; it is edge-like: after it fires, and after every
/// send on the socket, ZMQ_EVENTS must be read and every ready message
/// received, or a wake-up is lost. `kick()` after a send does that.
///
/// Not thread-safe: everything runs on the loop's thread, except construction.
class polled_socket {
 public:
  /// Receives and handles one whole message that ZMQ_EVENTS said is ready.
  using receiver = std::function<void(zmq::socket_t&)>;

  /// Serves `socket` (which must outlive this) on `io`.
  polled_socket(boost::asio::io_context& io, zmq::socket_t& socket, receiver on_message,
                int budget = 64);
  polled_socket(const polled_socket&) = delete;
  polled_socket& operator=(const polled_socket&) = delete;
  ~polled_socket();

  /// Starts waiting, and reads what arrived before (which left no edge).
  void start();
  /// After a send, or whenever the socket may hold messages: read them soon.
  void kick();
  /// Stops reading; the socket itself stays open. Safe twice.
  void stop() noexcept;
  /// Whether `start` was called and `stop` was not.
  bool active() const noexcept { return active_; }

 private:
  void arm();
  void drain();
  void post_drain();

  boost::asio::io_context& io_;
  zmq::socket_t& socket_;
  receiver on_message_;
  int budget_;
  std::optional<boost::asio::posix::stream_descriptor> fd_;
  bool active_ = false;
  bool drain_posted_ = false;
  std::shared_ptr<char> alive_;  // expires at `stop`: posted drains check it
};

}  // namespace slither::detail
