// The broker's optional metrics endpoint: an HTTP server (Boost.Beast) on its
// own thread that answers `GET /metrics` with the Prometheus text exposition
// and everything else with 404.
//
// Bounds: requests are read with a header limit (`max_request_bytes`) and no
// body, within `io_timeout`; at most `max_sessions` connections are served at
// once (more are closed as they arrive); every response closes its
// connection. The text comes from a collector that may answer on any thread;
// a collector that does not answer within `collect_timeout` gets the client a
// 503. Nothing here ever waits for the broker's serving loop, and the loop
// never waits for a client.
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

/// Largest request (request line and headers) the endpoint reads.
inline constexpr std::size_t max_request_bytes = 8 * 1024;
/// Connections served at once.
inline constexpr std::size_t max_sessions = 16;
/// Longest a client may take to send its request or read the response.
inline constexpr std::chrono::seconds io_timeout{10};
/// Longest the endpoint waits for the broker's figures.
inline constexpr std::chrono::seconds collect_timeout{10};

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
  static result<std::unique_ptr<metrics_http>> bind(const boost::asio::ip::tcp::endpoint& where);
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
