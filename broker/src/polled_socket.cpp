#include "polled_socket.hpp"

#include <boost/asio/post.hpp>

#include "broker_log.hpp"

namespace slither::detail {

namespace asio = boost::asio;

polled_socket::polled_socket(asio::io_context& io, zmq::socket_t& socket, receiver on_message,
                             int budget)
    : io_(io), socket_(socket), on_message_(std::move(on_message)), budget_(budget) {}

polled_socket::~polled_socket() {
  stop();
}

void polled_socket::start() {
  if (active_) return;
  fd_.emplace(io_, socket_.get(zmq::sockopt::fd));
  active_ = true;
  alive_ = std::make_shared<char>();
  arm();
  // A message that arrived before `arm` left no edge on ZMQ_FD.
  post_drain();
}

void polled_socket::kick() {
  if (!active_ || drain_posted_) return;
  if ((socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) == 0) return;
  post_drain();
}

void polled_socket::post_drain() {
  drain_posted_ = true;
  // Posted work outlives nothing: after `stop` (or destruction) it does nothing.
  asio::post(io_, [this, alive = std::weak_ptr<char>(alive_)] {
    if (alive.expired()) return;
    drain_posted_ = false;
    drain();
  });
}

void polled_socket::stop() noexcept {
  if (!fd_) return;
  active_ = false;
  drain_posted_ = false;
  alive_.reset();
  boost::system::error_code ec;
  fd_->cancel(ec);
  // The descriptor belongs to ZeroMQ; only forget it.
  (void)fd_->release();
  fd_.reset();
}

void polled_socket::arm() {
  fd_->async_wait(asio::posix::stream_descriptor::wait_read,
                  [this](const boost::system::error_code& ec) {
                    if (ec || !active_) return;
                    drain();
                    if (active_) arm();
                  });
}

void polled_socket::drain() {
  for (int n = 0; n < budget_ && active_; ++n) {
    if ((socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) == 0) return;
    try {
      on_message_(socket_);
    } catch (const zmq::error_t& e) {
      broker_log().warn("socket receive failed: {}", e.what());
      return;
    }
  }
  // Budget spent with messages left: let timers and replies have a turn first.
  kick();
}

}  // namespace slither::detail
