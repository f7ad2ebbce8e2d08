// The broker's optional metrics endpoint: an HTTP server (Boost.Beast) on its
// own thread that answers `GET /metrics` with the Prometheus text exposition
// and everything else with 404.
//
// Bounds (`metrics_http_limits`): requests are read with a header limit and
// no body, within a timeout; a few connections are served at once (more are
// closed as they arrive); every response closes its connection. The text
// comes from a collector that may answer on any thread; one that does not
// answer in time gets the client a 503. Nothing here ever waits for the
// broker's serving loop, and the loop never waits for a client.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "slither/core/error.hpp"

namespace slither::detail {

/// What the endpoint allows a client.
struct metrics_http_limits {
  /// Largest request (request line and headers) it reads.
  std::size_t max_request_bytes = 8 * 1024;
  /// Connections served at once.
  std::size_t max_sessions = 16;
  /// Longest a client may take to send its request, or to read the response.
  std::chrono::milliseconds io_timeout{10'000};
  /// Longest it waits for the broker's figures before answering 503.
  std::chrono::milliseconds collect_timeout{10'000};
};

/// Parses "HOST:PORT" (IPv4 literal, "[IPv6 literal]" or "localhost"; port 0
/// picks a free one) and refuses an address that is not loopback unless
/// `allow_remote`. Errors (`invalid_argument`) name the value.
result<boost::asio::ip::tcp::endpoint> parse_metrics_endpoint(std::string_view text,
                                                              bool allow_remote);

class metrics_http {
 public:
  /// Answers a scrape once, from any thread: the exposition text, or an error.
  using reply_fn = std::function<void(result<std::string>)>;
  /// Produces the figures; must call its reply_fn at most once (a lost one
  /// costs the client a 503 after `collect_timeout`).
  using collector = std::function<void(reply_fn)>;

  /// Binds and listens on `where`; serves nothing until `serve`. Errors:
  /// `io_error` naming the address (in use, not local...).
  static result<std::unique_ptr<metrics_http>> bind(const boost::asio::ip::tcp::endpoint& where,
                                                    metrics_http_limits limits = {});
  ~metrics_http();
  metrics_http(const metrics_http&) = delete;
  metrics_http& operator=(const metrics_http&) = delete;

  /// Starts the server's thread. Once.
  void serve(collector collect);
  /// Closes the listening socket and every connection, and joins the thread. Safe twice.
  void stop() noexcept;
  /// The address it listens on ("127.0.0.1:9464", "[::1]:9464"), with the
  /// port chosen when 0 was asked for.
  std::string endpoint() const;

  struct impl;  ///< implementation detail

 private:
  explicit metrics_http(std::unique_ptr<impl> p) noexcept;
  std::unique_ptr<impl> p_;
};

}  // namespace slither::detail
