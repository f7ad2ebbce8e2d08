#include "metrics_http.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <optional>
#include <thread>

#include "broker_log.hpp"
#include "view_runner.hpp"

namespace slither::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

result<tcp::endpoint> parse_metrics_endpoint(std::string_view text, bool allow_remote) {
  const std::string given(text.substr(0, 100));
  const auto bad = [&](const std::string& why) {
    return fail(errc::invalid_argument, "metrics endpoint '" + given + "': " + why);
  };
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad("give it as HOST:PORT (127.0.0.1:9464)");
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc{} || end != port_text.data() + port_text.size() ||
      port > 65535) {
    return bad("the port must be a number from 0 to 65535");
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  boost::system::error_code parse_error;
  asio::ip::address address;
  if (host == "localhost") {
    address = asio::ip::address_v4::loopback();
  } else {
    address = asio::ip::make_address(std::string(host), parse_error);
    if (parse_error) return bad("the host must be an IP address or localhost");
  }
  if (!address.is_loopback() && !allow_remote) {
    return bad("not a loopback address; set allow_remote = true to serve metrics to others");
  }
  return tcp::endpoint(address, static_cast<unsigned short>(port));
}

namespace {

std::string shown(const tcp::endpoint& ep) {
  const auto address = ep.address();
  const std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(ep.port());
}

// One connection: read one request, answer it, close.
class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, const metrics_http::collector& collect,
          std::shared_ptr<loop_link> link, std::atomic<std::size_t>& count,
          const metrics_http_limits& limits)
      : stream_(std::move(socket)),
        timer_(stream_.get_executor()),
        buffer_(limits.max_request_bytes),
        limits_(limits),
        collect_(collect),
        link_(std::move(link)),
        count_(count) {
    ++count_;
  }
  ~session() { --count_; }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  void start() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(limits_.max_request_bytes));
    parser_->body_limit(0);
    stream_.expires_after(limits_.io_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

 private:
  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted) {
      return close();
    }
    if (ec) {
      broker_log().debug("metrics endpoint: bad request: {}", ec.message());
      return respond(http::status::bad_request, "bad request\n");
    }
    const auto& req = parser_->get();
    const std::string_view target(req.target().data(), req.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    if (req.method() != http::verb::get || path != "/metrics") {
      return respond(http::status::not_found, "not found: only GET /metrics is served\n");
    }
    // The collector answers on whatever thread it likes; the answer comes
    // back here through the link, unless the server has stopped by then.
    timer_.expires_after(limits_.collect_timeout);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
      if (!e && !self->answered_) {
        self->respond(http::status::service_unavailable, "the broker did not answer in time\n");
      }
    });
    collect_([weak = weak_from_this(), link = link_](result<std::string> text) {
      link->post([weak, text = std::move(text)]() mutable {
        if (auto self = weak.lock()) self->on_collected(std::move(text));
      });
    });
  }

  void on_collected(result<std::string> text) {
    if (answered_) return;
    timer_.cancel();
    if (!text) {
      return respond(http::status::service_unavailable, std::string(to_string(text.error().code)) +
                                                            ": " + text.error().message + "\n");
    }
    respond(http::status::ok, std::move(*text), "text/plain; version=0.0.4; charset=utf-8");
  }

  void respond(http::status status, std::string body,
               const char* type = "text/plain; charset=utf-8") {
    answered_ = true;
    response_.result(status);
    response_.version(11);
    response_.set(http::field::content_type, type);
    response_.keep_alive(false);
    response_.body() = std::move(body);
    response_.prepare_payload();
    stream_.expires_after(limits_.io_timeout);
    http::async_write(
        stream_, response_,
        [self = shared_from_this()](beast::error_code, std::size_t) { self->close(); });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  const metrics_http_limits& limits_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  http::response<http::string_body> response_;
  const metrics_http::collector& collect_;
  std::shared_ptr<loop_link> link_;
  std::atomic<std::size_t>& count_;
  bool answered_ = false;
};

}  // namespace

struct metrics_http::impl {
  // Sessions count themselves here, to their last destructor: declared first,
  // so that it outlives the io_context that destroys them.
  std::atomic<std::size_t> sessions{0};
  metrics_http_limits limits;
  collector collect;
  // Optional, so that `stop` can destroy them: the sessions still waiting in
  // the io_context (and their connections) go with it.
  std::optional<asio::io_context> io{std::in_place, 1};
  std::optional<tcp::acceptor> acceptor{std::in_place, *io};
  std::shared_ptr<loop_link> link = std::make_shared<loop_link>(*io);
  std::thread thread;
  std::string where;
  bool stopped = false;

  void accept() {
    acceptor->async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
      if (!ec) {
        if (sessions.load() >= limits.max_sessions) {
          boost::system::error_code ignored;
          socket.close(ignored);
        } else {
          std::make_shared<session>(std::move(socket), collect, link, sessions, limits)->start();
        }
      }
      accept();
    });
  }
};

metrics_http::metrics_http(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}

metrics_http::~metrics_http() {
  stop();
}

result<std::unique_ptr<metrics_http>> metrics_http::bind(const tcp::endpoint& where,
                                                         metrics_http_limits limits) {
  auto p = std::make_unique<impl>();
  p->limits = limits;
  boost::system::error_code ec;
  p->acceptor->open(where.protocol(), ec);
  if (!ec) p->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) p->acceptor->bind(where, ec);
  if (!ec) p->acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail(errc::io_error,
                "cannot listen for metrics on '" + shown(where) + "': " + ec.message());
  }
  p->where = shown(p->acceptor->local_endpoint(ec));
  return std::unique_ptr<metrics_http>(new metrics_http(std::move(p)));
}

void metrics_http::serve(collector collect) {
  if (p_->thread.joinable() || p_->stopped) return;
  p_->collect = std::move(collect);
  p_->accept();
  p_->thread = std::thread([p = p_.get(), logger = current_broker_logger()] {
    log_scope scope(logger);
    for (;;) {
      try {
        p->io->run();
        return;
      } catch (const std::exception& e) {
        broker_log().error("metrics endpoint: unexpected exception: {}", e.what());
      }
    }
  });
}

void metrics_http::stop() noexcept {
  if (p_->stopped) return;
  p_->stopped = true;
  // Answers still coming from the broker are dropped from here on.
  p_->link->close();
  p_->io->stop();
  if (p_->thread.joinable()) p_->thread.join();
  p_->acceptor.reset();
  p_->io.reset();
}

std::string metrics_http::endpoint() const {
  return p_->where;
}

}  // namespace slither::detail
