// A small blocking HTTP client for tests of the metrics endpoint (Boost.Beast):
// sends raw bytes or a GET, reads one response, with a receive timeout so that
// a server that misbehaves fails the test instead of hanging it.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>
#include <string>

namespace slither::test_support {

namespace http_test {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
}  // namespace http_test

struct http_reply {
  int status = 0;            ///< 0: the connection closed without a response
  std::string content_type;  ///< the Content-Type header
  std::string body;
};

/// A connection to "HOST:PORT" ("[::1]:PORT" too).
class http_connection {
 public:
  explicit http_connection(const std::string& endpoint) : socket_(io_) {
    using namespace http_test;
    const auto colon = endpoint.rfind(':');
    std::string host = endpoint.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    const tcp::endpoint ep(asio::ip::make_address(host),
                           static_cast<unsigned short>(std::stoi(endpoint.substr(colon + 1))));
    socket_.connect(ep, error_);
    timeval tv{10, 0};
    if (!error_) ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  /// False if the connection was refused.
  bool connected() const { return !error_; }

  void send(const std::string& bytes) {
    boost::system::error_code ec;
    http_test::asio::write(socket_, http_test::asio::buffer(bytes), ec);
  }
  /// Reads one response; status 0 if the connection ended without one.
  http_reply read() {
    using namespace http_test;
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    beast::error_code ec;
    http::read(socket_, buffer, res, ec);
    if (ec) return {};
    return {static_cast<int>(res.result_int()), std::string(res[http::field::content_type]),
            res.body()};
  }
  /// True once the server has closed the connection (reads end of file).
  bool closed_by_peer() {
    char c;
    boost::system::error_code ec;
    const auto n = socket_.read_some(http_test::asio::buffer(&c, 1), ec);
    return n == 0 && ec == http_test::asio::error::eof;
  }

 private:
  http_test::asio::io_context io_;
  http_test::tcp::socket socket_;
  boost::system::error_code error_;
};

/// `GET target` on a new connection.
inline http_reply http_get(const std::string& endpoint, const std::string& target = "/metrics",
                           const std::string& method = "GET") {
  http_connection c(endpoint);
  if (!c.connected()) return {};
  c.send(method + " " + target + " HTTP/1.1\r\nHost: test\r\n\r\n");
  return c.read();
}

/// The value of the exposition line that starts with `series` + " " (a metric
/// name with its labels exactly as printed), if there is one.
inline std::optional<double> sample(const std::string& text, const std::string& series) {
  const std::string head = series + " ";
  for (std::size_t pos = 0; pos < text.size();) {
    const auto end = text.find('\n', pos);
    const std::string line = text.substr(pos, end == std::string::npos ? end : end - pos);
    if (line.starts_with(head)) return std::stod(line.substr(head.size()));
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return std::nullopt;
}

}  // namespace slither::test_support
