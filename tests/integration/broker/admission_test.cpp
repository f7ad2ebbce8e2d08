// Who gets in: ipc peers of another uid are refused, and past max_clients
// further connections are refused while the broker keeps serving.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iostream>
#include <iterator>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "child_process.hpp"
#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"
#include "slither/broker/protocol.hpp"
#include "slither/shm/store.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using clock = std::chrono::steady_clock;
using test_support::child_process;

/// Runs the test peer (test_peer.cpp) with `args` after the endpoint; its exit
/// status: 0 answered, 3 not answered in time.
int run_peer(const std::string& endpoint, std::vector<std::string> args) {
  args.insert(args.begin(), {SLITHER_TEST_PEER_EXE, endpoint});
  child_process peer(std::move(args));
  const auto status = peer.wait_exit(std::chrono::seconds(30));
  if (!status || !WIFEXITED(*status)) return -1;
  return WEXITSTATUS(*status);
}

class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> n{0};
    ns_ = "ad" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    base_ = fs::temp_directory_path() / ("slither-" + ns_);
    fs::create_directories(base_);
    fs::permissions(base_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);
  }
  void TearDown() override {
    if (HasFailure()) {
      const auto log = test_support::read_file(base_ / "broker.log");
      std::cerr << "broker log (tail):\n" << log.substr(log.size() > 6000 ? log.size() - 6000 : 0);
    }
    std::error_code ec;
    fs::remove_all(base_, ec);
    // A killed broker leaves them all, its writer lock included.
    for (const auto& name : {shm::segment_name(ns_, "main", 0), shm::registry_name(ns_, "main"),
                             shm::lock_name(ns_, "main")}) {
      fs::remove("/dev/shm" + name, ec);
    }
  }

  std::string ns_;
  fs::path base_;
};

TEST_F(AdmissionTest, IpcPeerOfAnotherUidIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a peer as another user";
  // An endpoint outside the private runtime directory, reachable by anyone:
  // only the ZAP handler stands between another user and the broker.
  broker_options o;
  o.ns = ns_;
  o.runtime_dir = base_ / "run";
  o.control_endpoint = "ipc://" + (base_ / "control.sock").string();
  Broker broker(o);
  ASSERT_TRUE(broker.start());
  fs::permissions(base_ / "control.sock", fs::perms::all);

  EXPECT_EQ(run_peer(o.control_endpoint, {"--uid", "65534", "--timeout-ms", "1000"}), 3);
  EXPECT_EQ(run_peer(o.control_endpoint, {"--timeout-ms", "5000"}), 0);

  client_options co;
  co.endpoint = o.control_endpoint;
  auto c = client::connect(co).value();
  const auto stats = c.stats().value();
  EXPECT_GE(stats["refused_connections"].as<std::int64_t>(), 1);
}

// A DEALER that sent a ping; `served` once its reply came.
struct peer {
  zmq::socket_t socket;
  bool served = false;
};

// Polls `peers` for replies until `want` are served or `limit` passes.
std::size_t collect_replies(std::vector<peer>& peers, std::size_t want,
                            std::chrono::milliseconds limit) {
  const auto deadline = clock::now() + limit;
  auto count = [&] {
    return static_cast<std::size_t>(
        std::count_if(peers.begin(), peers.end(), [](const peer& p) { return p.served; }));
  };
  while (count() < want && clock::now() < deadline) {
    std::vector<zmq::pollitem_t> items;
    std::vector<peer*> open;
    for (auto& p : peers) {
      if (p.served || !p.socket) continue;
      items.push_back({p.socket.handle(), 0, ZMQ_POLLIN, 0});
      open.push_back(&p);
    }
    if (items.empty() || zmq::poll(items, 50ms) <= 0) continue;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
      std::vector<zmq::message_t> reply;
      (void)zmq::recv_multipart(open[i]->socket, std::back_inserter(reply));
      open[i]->served = true;
    }
  }
  return count();
}

// The broker's stats through a connected raw peer.
Value stats_of(zmq::socket_t& socket) {
  const auto request = protocol::encode_message(
      {{protocol::protocol_version, protocol::message_type::stats, 7}, Value(Map{})});
  (void)socket.send(zmq::buffer(request[0].data(), request[0].size()), zmq::send_flags::sndmore);
  (void)socket.send(zmq::buffer(request[1].data(), request[1].size()), zmq::send_flags::none);
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, 5s) <= 0) return Value::map({{"clients", -1}});
  std::vector<zmq::message_t> reply;
  (void)zmq::recv_multipart(socket, std::back_inserter(reply));
  std::vector<protocol::frame> frames;
  for (auto& p : reply) frames.emplace_back(p.data<std::byte>(), p.size());
  auto m = protocol::decode_reply(frames);
  if (!m || m->head.type != protocol::message_type::reply_ok) return Value::map({{"clients", -1}});
  return std::move(m->body);
}

TEST_F(AdmissionTest, ConnectionsPastMaxClientsAreRefusedAndTheBrokerKeepsServing) {
  constexpr std::size_t max_clients = 8;
  constexpr std::size_t attempts = 200;
  std::ofstream(base_ / "slither.toml")
      << "[broker]\nmax_clients = " << max_clients
      << "\n[[stores]]\nname = \"main\"\ninitial_segment_bytes = 1048576\n"
         "[[stores.tables]]\nname = \"t\"\n";
  // Started with a soft open-file limit far below the connections to come:
  // the broker raises it to the hard limit, and fits max_clients inside.
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit low = saved;
  low.rlim_cur = 64;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  auto broker =
      test_support::spawn_broker(base_ / "slither.toml", base_ / "run", ns_, base_ / "broker.log");
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);

  const std::string endpoint = "ipc://" + (base_ / "run" / "control").string();
  const auto up = clock::now() + 10s;
  while (!fs::exists(base_ / "run" / "control") && clock::now() < up)
    std::this_thread::sleep_for(10ms);

  zmq::context_t context{1};
  context.set(zmq::ctxopt::max_sockets, 4096);
  const auto ping = protocol::encode_message(
      {{protocol::protocol_version, protocol::message_type::ping, 1}, Value(Map{})});
  auto crowd = [&](std::size_t n) {
    std::vector<peer> peers;
    for (std::size_t i = 0; i < n; ++i) {
      peer p{zmq::socket_t(context, zmq::socket_type::dealer)};
      p.socket.set(zmq::sockopt::linger, 0);
      p.socket.connect(endpoint);
      (void)p.socket.send(zmq::buffer(ping[0].data(), ping[0].size()), zmq::send_flags::sndmore);
      (void)p.socket.send(zmq::buffer(ping[1].data(), ping[1].size()), zmq::send_flags::none);
      peers.push_back(std::move(p));
    }
    return peers;
  };
  // Exactly max_clients get in; the others are refused.
  auto peers = crowd(attempts);
  EXPECT_EQ(collect_replies(peers, max_clients, 10s), max_clients);
  EXPECT_EQ(collect_replies(peers, max_clients + 1, 1s), max_clients);
  ASSERT_FALSE(broker->wait_exit(10ms)) << test_support::read_file(base_ / "broker.log");
  if (test_support::rss_is_meaningful) {
    EXPECT_LT(broker->rss_bytes(), std::size_t{256} << 20);
  }

  // A refused ZeroMQ socket gives up (a handshake refusal is final). One
  // served peer stays to watch; once the broker has seen the others leave,
  // as many newcomers get in.
  auto observer = std::find_if(peers.begin(), peers.end(), [](const peer& p) { return p.served; });
  ASSERT_NE(observer, peers.end());
  zmq::socket_t watcher = std::move(observer->socket);
  peers.clear();
  std::int64_t clients = -1;
  for (const auto deadline = clock::now() + 10s; clients != 1 && clock::now() < deadline;) {
    clients = stats_of(watcher)["clients"].as<std::int64_t>();
  }
  EXPECT_EQ(clients, 1);
  auto newcomers = crowd(2 * max_clients);
  EXPECT_EQ(collect_replies(newcomers, max_clients - 1, 10s), max_clients - 1);
  EXPECT_EQ(collect_replies(newcomers, max_clients, 1s), max_clients - 1);
  newcomers.clear();
  watcher.close();

  // Once the crowd is gone, a client is served as usual.
  peers.clear();
  client_options co;
  co.runtime_dir = base_ / "run";
  co.ns = ns_;
  co.timeout = 2s;
  std::optional<client> c;
  for (const auto deadline = clock::now() + 10s; !c && clock::now() < deadline;) {
    if (auto r = client::connect(co)) c.emplace(std::move(*r));
  }
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->ping());
  const auto stats = c->stats().value();
  EXPECT_EQ(stats["max_clients"], Value(static_cast<std::int64_t>(max_clients)));
  EXPECT_GT(stats["refused_connections"].as<std::int64_t>(), 0);
  const auto log = test_support::read_file(base_ / "broker.log");
  EXPECT_NE(log.find("max_clients (8) connections are open"), std::string::npos) << log;
  broker->signal(SIGTERM);
  const auto status = broker->wait_exit(10s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << log;
}

}  // namespace
}  // namespace slither

namespace slither {
namespace {

// The first Z85 key in a key file written by `slither-broker keygen`.
std::string key_of(const fs::path& file) {
  auto text = test_support::read_file(file);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

int keygen(const fs::path& base) {
  child_process p({SLITHER_BROKER_EXE, "keygen", "--out", base.string()});
  const auto status = p.wait_exit(10s);
  return status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
}

TEST_F(AdmissionTest, KeygenKeysLetAnAllowedPeerInOverTcpAndNoOneElse) {
  for (const auto* name : {"broker", "worker", "stranger"}) ASSERT_EQ(keygen(base_ / name), 0);
  for (const auto* file : {"broker.key", "broker.pub", "worker.key"}) {
    struct stat st {};
    ASSERT_EQ(::stat((base_ / file).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
  }
  const auto secret = key_of(base_ / "broker.key");
  EXPECT_EQ(keygen(base_ / "broker"), 1);  // never replaces a key
  EXPECT_EQ(key_of(base_ / "broker.key"), secret);

  fs::copy_file(base_ / "worker.pub", base_ / "clients");
  std::ofstream(base_ / "slither.toml")
      << "[broker]\ncontrol_endpoint = \"tcp://127.0.0.1:*\"\n"
         "curve_secret_key_file = \"broker.key\"\ncurve_allowed_clients_file = \"clients\"\n"
         "[[stores]]\nname = \"main\"\ninitial_segment_bytes = 1048576\n"
         "[[stores.tables]]\nname = \"t\"\n";
  auto broker =
      test_support::spawn_broker(base_ / "slither.toml", base_ / "run", ns_, base_ / "broker.log");
  // The port is chosen at bind time and logged.
  std::string endpoint;
  for (const auto deadline = clock::now() + 10s; endpoint.empty() && clock::now() < deadline;) {
    const auto log = test_support::read_file(base_ / "broker.log");
    if (const auto at = log.find(" at tcp://"); at != std::string::npos) {
      const auto end = log.find('\n', at);
      if (end != std::string::npos) endpoint = log.substr(at + 4, end - at - 4);
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(endpoint.starts_with("tcp://127.0.0.1:"))
      << test_support::read_file(base_ / "broker.log");

  const auto server = key_of(base_ / "broker.pub");
  auto as = [&](const std::string& name) {
    return std::vector<std::string>{"--server-key", server,
                                    "--public-key", key_of(base_ / (name + ".pub")),
                                    "--secret-key", key_of(base_ / (name + ".key")),
                                    "--timeout-ms", "3000"};
  };
  EXPECT_EQ(run_peer(endpoint, as("worker")), 0);
  EXPECT_EQ(run_peer(endpoint, as("stranger")), 3);
  EXPECT_EQ(run_peer(endpoint, {"--timeout-ms", "1000"}), 3);  // no CURVE at all
  const auto log = test_support::read_file(base_ / "broker.log");
  EXPECT_NE(log.find("client key " + key_of(base_ / "stranger.pub") +
                     " from 127.0.0.1 is not on "
                     "the allow-list"),
            std::string::npos)
      << log;
}

}  // namespace
}  // namespace slither
