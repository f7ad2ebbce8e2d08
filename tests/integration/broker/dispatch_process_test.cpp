// Dispatch across processes where the broker itself is at stake: the
// slither-broker executable killed with SIGKILL (its workers must not
// outlive it, a client must hear `unavailable`), and tcp pools with CURVE.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>

#include "child_process.hpp"
#include "curve_keys.hpp"
#include "dispatch_fixture.hpp"

namespace slither {
namespace {

using namespace test_support;

// Gone, or a zombie waiting for a reaper that is not us.
bool gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return true;
  const auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] == 'Z';
}

TEST_F(DispatchTest, WhenTheBrokerIsKilledItsWorkersExitAndAClientHearsUnavailable) {
  fs::create_directories(dir_.string() + "-work");
  const fs::path work = dir_.string() + "-work";
  // Spawned workers with heartbeats far apart: only the parent-death signal
  // can end them in time. The outsider's pool beats fast: silence ends it.
  std::ofstream(work / "slither.toml")
      << "[[pools]]\nname = \"spawned\"\nsize = 2\ncommand = [\"" << SLITHER_TEST_WORKER_EXE
      << "\"]\nheartbeat_ms = 10000\nheartbeat_misses = 5\n"
      << "[[pools]]\nname = \"outside\"\nsize = 0\nheartbeat_ms = 200\nheartbeat_misses = 5\n";
  child_process broker({SLITHER_BROKER_EXE, "--config", (work / "slither.toml").string(),
                        "--runtime-dir", dir_.string(), "--namespace", ns_},
                       work / "broker.log");
  ASSERT_TRUE(eventually([&] { return client::connect(where(500ms)).has_value(); }));
  child_process outsider({SLITHER_TEST_WORKER_EXE, "--runtime-dir", dir_.string(), "--namespace",
                          ns_, "--pool", "outside"});
  ASSERT_TRUE(wait_workers(2, "spawned"));
  ASSERT_TRUE(wait_workers(1, "outside"));
  auto pids = worker_pids("spawned");
  pids.push_back(outsider.pid());

  auto o = job("sleep", 1, 4);
  o.pool = "spawned";
  o.context.metadata = Map{{"ms", 60000}};
  auto j = dispatch_job::open(where(1000ms), o).value();
  ASSERT_TRUE(j.submit(batch_of(List{1}), 1));
  ASSERT_TRUE(eventually([&] { return count(pool_stats("spawned"), "batches_sent") == 1; }));

  ASSERT_EQ(::kill(broker.pid(), SIGKILL), 0);
  const auto killed = clock::now();
  for (const pid_t pid : pids) {
    if (pid == outsider.pid()) {
      EXPECT_TRUE(outsider.wait_exit(2s).has_value())
          << "a worker started by others exits when the broker's heartbeats stop";
    } else {
      EXPECT_TRUE(eventually([&] { return gone(pid); }, 2s))
          << "a spawned worker dies with its broker";
    }
  }
  auto next = j.next(30s);
  ASSERT_FALSE(next);
  EXPECT_EQ(next.error().code, errc::unavailable) << next.error().message;
  EXPECT_LT(clock::now() - killed, 10s) << "no hang";
  std::error_code ec;
  fs::remove_all(work, ec);
}

// Key files as `slither-broker keygen` writes them.
struct keys {
  detail::curve_key_pair broker, worker, stranger;
};

class DispatchCurveTest : public DispatchTest {
 protected:
  void SetUp() override {
    DispatchTest::SetUp();
    keys_dir_ = fs::temp_directory_path() / ("slither-" + ns_ + "-keys");
    fs::create_directories(keys_dir_);
    fs::permissions(keys_dir_, fs::perms::owner_all, fs::perm_options::replace);
    k_.broker = detail::write_key_pair(keys_dir_ / "broker").value();
    k_.worker = detail::write_key_pair(keys_dir_ / "worker").value();
    k_.stranger = detail::write_key_pair(keys_dir_ / "stranger").value();
    {
      std::ofstream allow(keys_dir_ / "clients");
      allow << "# workers and clients let in\n" << k_.worker.public_key << "\n";
    }
    fs::permissions(keys_dir_ / "clients", fs::perms::owner_read | fs::perms::owner_write,
                    fs::perm_options::replace);
  }
  void TearDown() override {
    DispatchTest::TearDown();
    std::error_code ec;
    fs::remove_all(keys_dir_, ec);
  }

  broker_options tcp_options(bool with_keys = true) {
    auto p = pool(0);
    p.endpoint = "tcp://127.0.0.1:*";
    auto o = options({p});
    o.control_endpoint = "tcp://127.0.0.1:*";
    if (with_keys) {
      o.curve_secret_key_file = keys_dir_ / "broker.key";
      o.curve_allowed_clients_file = keys_dir_ / "clients";
    }
    return o;
  }

  client_options as(const detail::curve_key_pair& who) const {
    client_options c;
    c.endpoint = broker_->control_endpoint();
    c.curve_server_key = k_.broker.public_key;
    c.curve_secret_key = who.secret_key;
    c.timeout = 1500ms;
    return c;
  }

  child_process worker_as(const detail::curve_key_pair& who) {
    return child_process({SLITHER_TEST_WORKER_EXE, "--endpoint", broker_->control_endpoint(),
                          "--curve-server-key", k_.broker.public_key, "--curve-secret-key",
                          who.secret_key, "--timeout-ms", "1500"});
  }

  fs::path keys_dir_;
  keys k_;
};

TEST_F(DispatchCurveTest, AnAllowedWorkerServesAndAnUnknownOneIsRefused) {
  start(tcp_options());
  child_process allowed = worker_as(k_.worker);
  child_process stranger = worker_as(k_.stranger);
  // The stranger cannot even join: its handshake is refused, its join times out.
  const auto refused_status = stranger.wait_exit(10s);
  ASSERT_TRUE(refused_status);
  EXPECT_TRUE(WIFEXITED(*refused_status) && WEXITSTATUS(*refused_status) == 1);
  // The allowed one joins the tcp pool and serves a client that holds an allowed key.
  auto c = client::connect(as(k_.worker)).value();
  ASSERT_TRUE(eventually([&] {
    const Value* ws =
        c.stats().value().find("dispatch")->find("pools")->find("default")->find("workers");
    return ws != nullptr && ws->as<List>().size() == 1;
  }));
  auto report = dispatch(as(k_.worker), numbered(20), job("pid", 4, 2)).value();
  ASSERT_EQ(report.results.size(), 20u);
  for (const auto& r : report.results) {
    ASSERT_TRUE(r.ok()) << (r.error ? r.error->describe() : "");
    EXPECT_EQ(r.item.payload.as<std::int64_t>(), allowed.pid());
  }
  // A client with an unknown key gets nothing either.
  auto refused = dispatch_job::open(as(k_.stranger), job("pid"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::unavailable);
}

TEST_F(DispatchCurveTest, ATcpPoolWithoutKeysRefusesToStart) {
  auto o = tcp_options(false);
  o.control_endpoint.clear();  // the pool alone asks for tcp
  broker_ = std::make_unique<Broker>(std::move(o));
  auto r = broker_->start();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("pool 'default'"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("curve_secret_key_file"), std::string::npos)
      << r.error().message;
}

TEST_F(DispatchCurveTest, SpawnedWorkersNeedAnIpcControlSocket) {
  auto o = tcp_options();
  o.pools[0].size = 1;
  broker_ = std::make_unique<Broker>(std::move(o));
  auto r = broker_->start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("give the pool size 0"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace slither
