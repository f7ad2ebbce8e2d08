// A tcp control endpoint is always CURVE-authenticated: it needs keys to
// start, binds loopback unless told otherwise, and lets in only allow-listed
// client keys.
#include "tcp_endpoint.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <fstream>

#include "curve_keys.hpp"
#include "log_tap.hpp"
#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class TcpEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> n{0};
    ns_ = "tcp" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    dir_ = fs::temp_directory_path() / ("slither-" + ns_);
    fs::create_directories(dir_);
    server_ = detail::write_key_pair(dir_ / "broker").value();
    allowed_ = detail::write_key_pair(dir_ / "worker").value();
    std::ofstream(dir_ / "clients") << "# the one worker\n" << allowed_.public_key << "\n";
    fs::permissions(dir_ / "clients", fs::perms::owner_read | fs::perms::owner_write);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  broker_options options(const std::string& endpoint = "tcp://127.0.0.1:*") {
    broker_options o;
    o.ns = ns_;
    o.runtime_dir = dir_ / "run";
    o.control_endpoint = endpoint;
    o.curve_secret_key_file = dir_ / "broker.key";
    o.curve_allowed_clients_file = dir_ / "clients";
    return o;
  }

  result<client> connect(const Broker& b, const detail::curve_key_pair& keys) {
    client_options o;
    o.endpoint = b.control_endpoint();
    o.timeout = 1000ms;
    o.curve_server_key = server_.public_key;
    o.curve_secret_key = keys.secret_key;
    return client::connect(o);
  }

  std::string ns_;
  fs::path dir_;
  detail::curve_key_pair server_;
  detail::curve_key_pair allowed_;
};

TEST_F(TcpEndpointTest, TcpWithoutKeysRefusesToStart) {
  auto o = options();
  o.curve_secret_key_file.clear();
  Broker b(o);
  auto r = b.start();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("always authenticated"), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(dir_ / "run"));
}

TEST_F(TcpEndpointTest, KeyFilesMustBeOwnerOnly) {
  fs::permissions(dir_ / "broker.key", fs::perms::others_read, fs::perm_options::add);
  Broker b(options());
  auto r = b.start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("owner-only"), std::string::npos) << r.error().message;
}

TEST_F(TcpEndpointTest, NonLoopbackAddressNeedsAllowRemote) {
  for (const auto* endpoint : {"tcp://0.0.0.0:*", "tcp://*:*"}) {
    Broker refused(options(endpoint));
    auto r = refused.start();
    ASSERT_FALSE(r) << endpoint;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find("allow_remote = true"), std::string::npos)
        << r.error().message;
  }
  auto o = options("tcp://0.0.0.0:*");
  o.allow_remote = true;
  Broker remote(o);
  ASSERT_TRUE(remote.start());
}

TEST_F(TcpEndpointTest, OtherTransportsAreRefused) {
  Broker b(options("ws://127.0.0.1:5555"));
  auto r = b.start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("must be ipc:// or tcp://"), std::string::npos);
}

TEST_F(TcpEndpointTest, LoopbackHosts) {
  for (const auto* host : {"127.0.0.1", "127.1.2.3", "localhost", "lo", "::1", "[::1]"}) {
    EXPECT_TRUE(detail::is_loopback_host(host)) << host;
  }
  for (const auto* host : {"0.0.0.0", "*", "eth0", "10.0.0.1", "128.0.0.1", "example.org"}) {
    EXPECT_FALSE(detail::is_loopback_host(host)) << host;
  }
}

TEST_F(TcpEndpointTest, AllowedKeyIsServedAndAnUnknownKeyIsRefused) {
  test_support::default_logger_tap tap;

  Broker b(options());
  ASSERT_TRUE(b.start());
  ASSERT_TRUE(b.control_endpoint().starts_with("tcp://127.0.0.1:"));
  EXPECT_EQ(b.control_endpoint().find('*'), std::string::npos) << b.control_endpoint();

  auto ok = connect(b, allowed_);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_TRUE(ok->ping());

  const auto stranger = detail::write_key_pair(dir_ / "stranger").value();
  auto refused = connect(b, stranger);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::unavailable);

  // Without CURVE at all, a tcp client gets nothing either.
  client_options plain;
  plain.endpoint = b.control_endpoint();
  plain.timeout = 500ms;
  EXPECT_EQ(client::connect(plain).error().code, errc::unavailable);

  EXPECT_TRUE(tap.saw("client key " + stranger.public_key))
      << "the refusal of " << stranger.public_key << " was not logged";
  EXPECT_GE(ok->stats().value()["refused_connections"].as<std::int64_t>(), 1);
}

}  // namespace
}  // namespace slither
