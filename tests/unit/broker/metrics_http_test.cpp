// The metrics endpoint on its own: what it serves, what it refuses, and that
// garbage, slow or too many clients neither crash it nor hold it up.
#include "metrics_http.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "http_client.hpp"

namespace slither::detail {
namespace {

using namespace std::chrono_literals;
using test_support::http_connection;
using test_support::http_get;

std::unique_ptr<metrics_http> serve_text(std::string text, metrics_http_limits limits = {}) {
  auto server = metrics_http::bind(parse_metrics_endpoint("127.0.0.1:0", false).value(), limits);
  EXPECT_TRUE(server) << server.error().message;
  (*server)->serve([text](metrics_http::reply_fn done) { done(text); });
  return std::move(*server);
}

TEST(MetricsEndpoint, ParsesHostAndPort) {
  EXPECT_EQ(parse_metrics_endpoint("127.0.0.1:9464", false).value().port(), 9464);
  EXPECT_TRUE(parse_metrics_endpoint("localhost:0", false).value().address().is_loopback());
  EXPECT_TRUE(parse_metrics_endpoint("[::1]:80", false).value().address().is_v6());
  EXPECT_TRUE(parse_metrics_endpoint("127.1.2.3:1", false));
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:70000",
                          "example.com:80", ":80", "127.0.0.1:-1", "[::1:80"}) {
    auto r = parse_metrics_endpoint(bad, false);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find(bad), std::string::npos) << r.error().message;
  }
}

TEST(MetricsEndpoint, RefusesNonLoopbackUnlessAllowed) {
  for (const char* remote : {"0.0.0.0:9464", "10.1.2.3:9464", "[::]:9464"}) {
    auto r = parse_metrics_endpoint(remote, false);
    ASSERT_FALSE(r) << remote;
    EXPECT_NE(r.error().message.find("allow_remote"), std::string::npos);
    EXPECT_TRUE(parse_metrics_endpoint(remote, true)) << remote;
  }
}

TEST(MetricsEndpoint, ServesGetMetricsOnly) {
  auto server = serve_text("m 1\n");
  const auto ep = server->endpoint();
  ASSERT_TRUE(ep.starts_with("127.0.0.1:")) << ep;
  EXPECT_NE(ep, "127.0.0.1:0");
  auto ok = http_get(ep);
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "m 1\n");
  EXPECT_NE(ok.content_type.find("version=0.0.4"), std::string::npos) << ok.content_type;
  EXPECT_EQ(http_get(ep, "/metrics?name[]=x").status, 200);
  EXPECT_EQ(http_get(ep, "/").status, 404);
  EXPECT_EQ(http_get(ep, "/metrics/x").status, 404);
  EXPECT_EQ(http_get(ep, "/metrics", "POST").status, 404);
  EXPECT_EQ(http_get(ep, "/metrics", "DELETE").status, 404);
}

TEST(MetricsEndpoint, GarbageGetsAnErrorOrAClose) {
  metrics_http_limits limits;
  limits.io_timeout = 2s;
  auto server = serve_text("m 1\n", limits);
  const auto ep = server->endpoint();
  const std::vector<std::string> garbage = {
      "garbage\r\n\r\n",
      std::string("\x00\xff\x01\x02\r\n\r\n", 8),
      "GET /metrics HTTP/x.y\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
      "GET /metrics HTTP/1.1\r\nX: " + std::string(64 * 1024, 'a') + "\r\n\r\n",
      "GET /" + std::string(20000, 'a') + " HTTP/1.1\r\n\r\n",
  };
  for (const auto& g : garbage) {
    http_connection c(ep);
    ASSERT_TRUE(c.connected());
    c.send(g);
    const auto r = c.read();
    EXPECT_TRUE(r.status == 0 || r.status == 400) << r.status << " for " << g.substr(0, 40);
  }
  // Half a request, then the client hangs up.
  {
    http_connection c(ep);
    c.send("GET /met");
  }
  EXPECT_EQ(http_get(ep).status, 200);
}

TEST(MetricsEndpoint, ASlowClientHoldsUpNobody) {
  metrics_http_limits limits;
  limits.io_timeout = 300ms;
  auto server = serve_text("m 1\n", limits);
  const auto ep = server->endpoint();
  http_connection slow(ep);
  slow.send("GET /metr");  // and nothing more
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(http_get(ep).status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  // Past its timeout the slow one is closed without an answer.
  EXPECT_EQ(slow.read().status, 0);
}

TEST(MetricsEndpoint, ConnectionsPastTheLimitAreClosed) {
  metrics_http_limits limits;
  limits.max_sessions = 2;
  auto server = serve_text("m 1\n", limits);
  const auto ep = server->endpoint();
  auto idle1 = std::make_unique<http_connection>(ep);
  auto idle2 = std::make_unique<http_connection>(ep);
  // Accepted in order: this third one finds both places taken.
  http_connection third(ep);
  third.send("GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(third.read().status, 0);
  idle1.reset();
  idle2.reset();
  // Once the server has seen them go, scrapes are served again.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  int status = 0;
  while (status != 200 && std::chrono::steady_clock::now() < deadline) {
    status = http_get(ep).status;
    if (status != 200) std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(status, 200);
}

TEST(MetricsEndpoint, ACollectorThatFailsOrNeverAnswersGets503) {
  metrics_http_limits limits;
  limits.collect_timeout = 200ms;
  auto server = metrics_http::bind(parse_metrics_endpoint("127.0.0.1:0", false).value(), limits);
  ASSERT_TRUE(server);
  std::mutex mu;
  std::vector<metrics_http::reply_fn> kept;
  int calls = 0;
  (*server)->serve([&](metrics_http::reply_fn done) {
    std::lock_guard lock(mu);
    if (calls++ == 0) return done(fail(errc::busy, "the write queue is full"));
    kept.push_back(std::move(done));  // never answered (until after the timeout)
  });
  const auto ep = (*server)->endpoint();
  auto failed = http_get(ep);
  EXPECT_EQ(failed.status, 503);
  EXPECT_NE(failed.body.find("busy: the write queue is full"), std::string::npos) << failed.body;
  auto late = http_get(ep);
  EXPECT_EQ(late.status, 503);
  EXPECT_NE(late.body.find("in time"), std::string::npos) << late.body;
  // An answer after the 503, and after the stop, goes nowhere.
  std::lock_guard lock(mu);
  ASSERT_EQ(kept.size(), 1U);
  kept[0](std::string("late\n"));
  (*server)->stop();
  kept[0](std::string("later\n"));
}

TEST(MetricsEndpoint, AnswersFromAnotherThread) {
  auto server = metrics_http::bind(parse_metrics_endpoint("127.0.0.1:0", false).value());
  ASSERT_TRUE(server);
  std::vector<std::thread> threads;
  std::mutex mu;
  (*server)->serve([&](metrics_http::reply_fn done) {
    std::lock_guard lock(mu);
    threads.emplace_back([done] {
      std::this_thread::sleep_for(20ms);
      done(std::string("from a thread\n"));
    });
  });
  EXPECT_EQ(http_get((*server)->endpoint()).body, "from a thread\n");
  std::lock_guard lock(mu);
  for (auto& t : threads) t.join();
}

TEST(MetricsEndpoint, StopClosesTheListenerAndConnections) {
  auto server = serve_text("m 1\n");
  const auto ep = server->endpoint();
  http_connection idle(ep);
  ASSERT_TRUE(idle.connected());
  ASSERT_EQ(http_get(ep).status, 200);
  server->stop();
  server->stop();  // twice is fine
  EXPECT_TRUE(idle.closed_by_peer());
  EXPECT_FALSE(http_connection(ep).connected());
  EXPECT_EQ(server->endpoint(), ep);
}

TEST(MetricsEndpoint, APortInUseIsAnIoError) {
  auto first = serve_text("m 1\n");
  auto second = metrics_http::bind(parse_metrics_endpoint(first->endpoint(), false).value());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::io_error);
  EXPECT_NE(second.error().message.find(first->endpoint()), std::string::npos);
}

}  // namespace
}  // namespace slither::detail
