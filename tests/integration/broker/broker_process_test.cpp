// The slither-broker executable as a child process: crashes, restarts, a
// second broker, graceful stop, permissions and hostile traffic.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "child_process.hpp"
#include "slither/broker/client.hpp"
#include "slither/broker/protocol.hpp"
#include "slither/shm/store.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using clock = std::chrono::steady_clock;

class BrokerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> n{0};
    ns_ = "it" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    work_ = fs::temp_directory_path() / ("slither-" + ns_ + "-work");
    run_ = fs::temp_directory_path() / ("slither-" + ns_);
    fs::create_directories(work_);
    std::ofstream(work_ / "items.jsonl")
        << "{\"id\": \"a\", \"n\": 1}\n{\"id\": \"b\", \"n\": 2}\n";
    std::ofstream(work_ / "slither.toml")
        << "[[stores]]\nname = \"main\"\ninitial_segment_bytes = 1048576\n"
           "load = { file = \"items.jsonl\", table = \"items\", key = \"id\" }\n"
           "[[stores.tables]]\nname = \"items\"\n";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(work_, ec);
    fs::remove_all(run_, ec);
    // A SIGKILLed broker leaves them all, its writer lock included.
    for (const auto& name : {shm::segment_name(ns_, "main", 0), shm::registry_name(ns_, "main"),
                             shm::lock_name(ns_, "main")}) {
      fs::remove("/dev/shm" + name, ec);
    }
  }

  std::unique_ptr<test_support::child_process> spawn() {
    return test_support::spawn_broker(work_ / "slither.toml", run_, ns_, work_ / "broker.log");
  }

  result<client> connect(std::chrono::milliseconds timeout = 1000ms) {
    client_options o;
    o.runtime_dir = run_;
    o.ns = ns_;
    o.timeout = timeout;
    return client::connect(o);
  }

  // Retries until the broker answers (it needs a moment to come up).
  client connect_when_up() {
    const auto deadline = clock::now() + 10s;
    for (;;) {
      auto c = connect();
      if (c) return std::move(*c);
      if (clock::now() > deadline) throw slither::error(c.error());
      std::this_thread::sleep_for(20ms);
    }
  }

  std::string log() const {
    std::ifstream in(work_ / "broker.log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  static unsigned mode_of(const fs::path& p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return 0xffff;
    return st.st_mode & 07777;
  }

  std::string ns_;
  fs::path work_;
  fs::path run_;
};

TEST_F(BrokerProcessTest, ServesLoadedStoreWithOwnerOnlyPermissions) {
  auto broker = spawn();
  auto c = connect_when_up();
  auto info = c.attach_info("main").value();
  auto reader = shm::reader::attach(info.ns, info.name).value();
  EXPECT_EQ((*reader.get("items", "b").value())["n"], Value(2));
  ASSERT_TRUE(c.put("main", "items", "c", Value(3)));
  EXPECT_EQ(reader.get("items", "c").value(), std::optional(Value(3)));

  EXPECT_EQ(mode_of(run_), 0700u);
  EXPECT_EQ(mode_of("/dev/shm" + shm::segment_name(ns_, "main", 0)), 0600u);
  EXPECT_EQ(mode_of("/dev/shm" + shm::registry_name(ns_, "main")), 0600u);
}

TEST_F(BrokerProcessTest, SigtermAndSigintStopGracefullyAndRemoveEverything) {
  for (const int sig : {SIGTERM, SIGINT}) {
    auto broker = spawn();
    auto c = connect_when_up();
    ASSERT_TRUE(c.put("main", "items", "z", Value(26)));
    broker->signal(sig);
    const auto status = broker->wait_exit(10s);
    ASSERT_TRUE(status) << "broker did not exit on signal " << sig;
    ASSERT_TRUE(WIFEXITED(*status));
    EXPECT_EQ(WEXITSTATUS(*status), 0) << log();
    EXPECT_FALSE(fs::exists(run_));
    EXPECT_FALSE(fs::exists("/dev/shm" + shm::segment_name(ns_, "main", 0)));
    EXPECT_FALSE(fs::exists("/dev/shm" + shm::registry_name(ns_, "main")));
  }
}

TEST_F(BrokerProcessTest, SecondBrokerOnTheNamespaceRefuses) {
  auto first = spawn();
  auto c = connect_when_up();
  auto second = spawn();
  const auto status = second->wait_exit(10s);
  ASSERT_TRUE(status) << "second broker kept running";
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 1);
  EXPECT_NE(log().find("another broker (pid " + std::to_string(first->pid()) + ")"),
            std::string::npos)
      << log();
  EXPECT_TRUE(c.ping());
}

// CLI11's PositiveNumber answered "Value 0 not in range 0.000000 to 1.79...e308"
// and took 99999999999999999999 as 9223372036854775807.
TEST_F(BrokerProcessTest, ABadParentPidIsRefusedNamingItAndTheRange) {
  const std::string range =
      "not in range 1 to " + std::to_string(std::numeric_limits<pid_t>::max());
  for (const std::string pid : {"0", "-3", "abc", "", "1x", "99999999999999999999", "2147483648"}) {
    fs::remove(work_ / "broker.log");
    test_support::child_process b({SLITHER_BROKER_EXE, "--runtime-dir", run_.string(),
                                   "--namespace", ns_, "--parent-pid", pid},
                                  work_ / "broker.log");
    const auto status = b.wait_exit(10s);
    ASSERT_TRUE(status) << "a broker with --parent-pid '" << pid << "' kept running";
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << pid;
    EXPECT_NE(log().find("--parent-pid: Value " + pid + " " + range), std::string::npos)
        << "'" << pid << "': " << log();
    EXPECT_FALSE(fs::exists(run_)) << pid;
  }
}

TEST_F(BrokerProcessTest, KilledBrokerIsUnavailableThenARestartCleansUpAndServes) {
  auto broker = spawn();
  auto c = connect(500ms);
  for (int i = 0; !c && i < 500; ++i) {
    std::this_thread::sleep_for(20ms);
    c = connect(500ms);
  }
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->put("main", "items", "before", Value(1)));

  broker->signal(SIGKILL);
  ASSERT_TRUE(broker->wait_exit(5s));
  const auto t0 = clock::now();
  auto r = c->put("main", "items", "after", Value(2));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unavailable);
  EXPECT_LT(clock::now() - t0, 2s);
  // The dead broker left its segments and socket file behind.
  EXPECT_TRUE(fs::exists("/dev/shm" + shm::segment_name(ns_, "main", 0)));

  auto restarted = spawn();
  auto c2 = connect_when_up();
  auto reader = shm::reader::attach(ns_, "main").value();
  EXPECT_FALSE(reader.contains("items", "before").value());  // a fresh store, loaded again
  EXPECT_TRUE(reader.contains("items", "a").value());
  ASSERT_TRUE(c2.put("main", "items", "after", Value(2)));
  // The old client recovers too: its socket reconnects to the new broker.
  EXPECT_TRUE(c->ping());
  // The dead broker created the runtime directory; the one that took over its
  // lock removes it at stop.
  restarted->signal(SIGTERM);
  ASSERT_TRUE(restarted->wait_exit(10s));
  EXPECT_FALSE(fs::exists(run_)) << log();
}

TEST_F(BrokerProcessTest, SurvivesRandomAndTruncatedFrames) {
  auto broker = spawn();
  auto c = connect_when_up();
  zmq::context_t context{1};
  zmq::socket_t raw(context, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.set(zmq::sockopt::sndtimeo, 1000);
  raw.connect("ipc://" + (run_ / "control").string());

  std::mt19937_64 rng(0x5eed);
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  auto random_bytes = [&](std::size_t n) {
    buffer b(n);
    for (auto& x : b) x = std::byte(static_cast<std::uint8_t>(rng()));
    return b;
  };
  const auto valid = protocol::encode_message(
      {{protocol::protocol_version, protocol::message_type::put, 1},
       Value::map({{"store", "main"}, {"table", "items"}, {"key", "k"}, {"value", Value(1)}})});
  const auto deadline = clock::now() + 20s;
  int sent = 0;
  for (; sent < 2000 && clock::now() < deadline; ++sent) {
    std::vector<buffer> frames;
    switch (pick(5)) {
      case 0:  // random frames
        for (std::size_t i = 0, n = 1 + pick(4); i < n; ++i)
          frames.push_back(random_bytes(pick(64)));
        break;
      case 1: {  // a valid header with a random payload
        frames.push_back(valid[0]);
        frames.back()[4] = std::byte(static_cast<std::uint8_t>(1 + pick(12)));
        frames.push_back(random_bytes(pick(256)));
        break;
      }
      case 2: {  // a truncated header
        frames.push_back(valid[0]);
        frames.back().resize(pick(protocol::header_size));
        frames.push_back(valid[1]);
        break;
      }
      case 3: {  // a truncated or bit-flipped payload
        frames = valid;
        if (pick(2) == 0) {
          frames[1].resize(pick(frames[1].size()));
        } else {
          frames[1][pick(frames[1].size())] ^= std::byte(static_cast<std::uint8_t>(1 + pick(255)));
        }
        break;
      }
      default:  // extra frames
        frames = valid;
        for (std::size_t i = 0, n = 1 + pick(3); i < n; ++i)
          frames.push_back(random_bytes(pick(32)));
        break;
    }
    for (std::size_t i = 0; i < frames.size(); ++i) {
      (void)raw.send(zmq::buffer(frames[i].data(), frames[i].size()),
                     i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
    // Replies to the raw socket are never read: the broker must not care.
  }
  EXPECT_GE(sent, 500);
  auto ping = c.ping();
  EXPECT_TRUE(ping) << ping.error().message;
  auto fresh = connect_when_up();
  EXPECT_TRUE(fresh.ping());
  EXPECT_FALSE(broker->wait_exit(50ms)) << "broker died: " << log();
}

}  // namespace
}  // namespace slither

namespace slither {
namespace {

std::int64_t readers_of(client& c) {
  return c.stats().value()["stores"]["main"]["readers"].as<std::int64_t>();
}

TEST_F(BrokerProcessTest, ReadersThatDieAreSweptEvenWhenNothingWrites) {
  auto broker = spawn();
  auto c = connect_when_up();
  const auto before = readers_of(c);
  const auto out = work_ / "reader.out";
  test_support::child_process reader({SLITHER_TEST_PEER_EXE, "--attach", ns_, "main"}, out);
  for (const auto deadline = clock::now() + 10s;
       test_support::read_file(out).find("attached") == std::string::npos &&
       clock::now() < deadline;) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(readers_of(c), before + 1) << test_support::read_file(out);
  reader.signal(SIGKILL);
  ASSERT_TRUE(reader.wait_exit(5s));
  // No write follows: only the broker's own sweep can clear the dead slot.
  auto now = readers_of(c);
  for (const auto deadline = clock::now() + 10s; now != before && clock::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
    now = readers_of(c);
  }
  EXPECT_EQ(now, before);
}

TEST_F(BrokerProcessTest, AClientThatNeverReadsItsRepliesCannotGrowTheBroker) {
  auto broker = spawn();
  auto c = connect_when_up();
  ASSERT_TRUE(c.ping());
  const auto baseline = broker->rss_bytes();
  zmq::context_t context{1};
  zmq::socket_t deaf(context, zmq::socket_type::dealer);
  deaf.set(zmq::sockopt::linger, 0);
  deaf.set(zmq::sockopt::rcvhwm, 1);
  deaf.set(zmq::sockopt::sndhwm, 0);
  deaf.connect("ipc://" + (run_ / "control").string());
  // Each request names a missing table of 64 KiB: an error reply that
  // repeated it would hold 64 KiB per reply in the broker's queue for this peer.
  const std::string table(64 << 10, 't');
  const auto request =
      protocol::encode_message({{protocol::protocol_version, protocol::message_type::erase, 1},
                                Value::map({{"store", "main"}, {"table", table}, {"key", "k"}})});
  for (int i = 0; i < 4000; ++i) {
    (void)deaf.send(zmq::buffer(request[0].data(), request[0].size()), zmq::send_flags::sndmore);
    (void)deaf.send(zmq::buffer(request[1].data(), request[1].size()), zmq::send_flags::none);
  }
  // Once the broker has read them all, a ping from another client is answered.
  // A loaded machine can stall the broker for a while: give up waiting only
  // after 2 s without progress, not one poll.
  std::size_t answered_before = 0;
  auto last_progress = clock::now();
  for (const auto deadline = clock::now() + 20s; clock::now() < deadline;) {
    const auto stats = c.stats().value();
    const auto errors = static_cast<std::size_t>(stats["errors"].as<std::int64_t>());
    if (errors >= 4000) break;
    if (errors != answered_before) {
      answered_before = errors;
      last_progress = clock::now();
    } else if (clock::now() - last_progress > 2s) {
      break;
    }
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(c.ping());
  const auto grown = broker->rss_bytes() > baseline ? broker->rss_bytes() - baseline : 0;
  if (test_support::rss_is_meaningful) {
    EXPECT_LT(grown, std::size_t{32} << 20) << "broker grew by " << grown << " bytes";
  }
  EXPECT_FALSE(broker->wait_exit(10ms)) << log();
}

}  // namespace
}  // namespace slither
