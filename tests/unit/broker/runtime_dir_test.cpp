// The broker applies path_trust's rules to its runtime directory (the rules
// themselves are path_trust_test's), and replaces or removes only what it (or
// a dead broker of its namespace) made.
#include "runtime_dir.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"

namespace slither {
namespace {

namespace fs = std::filesystem;

// Another local user: tests run as root here, so a directory can be handed to it.
constexpr uid_t other_uid = 65534;

class RuntimeDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> n{0};
    ns_ = "rt" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    base_ = fs::temp_directory_path() / ("slither-" + ns_);
    fs::create_directories(base_);
    fs::permissions(base_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);
  }
  void TearDown() override {
    broker_.reset();
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  broker_options options(const fs::path& dir) {
    broker_options o;
    o.ns = ns_;
    o.runtime_dir = dir;
    shm::store_definition def;
    def.options.name = "main";
    def.options.initial_segment_bytes = 1 << 20;
    def.tables = {{"kv", shm::table_kind::set, 16}};
    o.stores.push_back(std::move(def));
    return o;
  }

  result<void> start(broker_options o) {
    broker_ = std::make_unique<Broker>(std::move(o));
    return broker_->start();
  }

  void ping(const fs::path& dir) {
    client_options o;
    o.runtime_dir = dir;
    o.ns = ns_;
    o.timeout = std::chrono::milliseconds(2000);
    auto c = client::connect(o);
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_TRUE(c->ping());
  }

  static void need_root() {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to hand a directory to another user";
  }

  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // A private directory made by the user, not by a broker.
  fs::path user_dir(const std::string& name) {
    const auto dir = base_ / name;
    fs::create_directory(dir);
    fs::permissions(dir, fs::perms::owner_all);
    return dir;
  }

  std::string ns_;
  fs::path base_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(RuntimeDirTest, AncestorOwnedByAnotherUserIsRefused) {
  need_root();
  const auto theirs = base_ / "theirs";
  fs::create_directory(theirs);
  ASSERT_EQ(::chown(theirs.c_str(), other_uid, other_uid), 0);
  auto r = start(options(theirs / "run"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("'" + theirs.string() + "' is owned by uid 65534"),
            std::string::npos)
      << r.error().message;
  EXPECT_FALSE(fs::exists(theirs / "run"));
}

TEST_F(RuntimeDirTest, WritableAncestorNeedsTheStickyBit) {
  const auto open_dir = base_ / "open";
  fs::create_directory(open_dir);
  fs::permissions(open_dir, fs::perms::all);
  auto r = start(options(open_dir / "run"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("has mode 0777"), std::string::npos) << r.error().message;

  // Like /tmp: others may create entries but not rename ours.
  fs::permissions(open_dir, fs::perms::all | fs::perms::sticky_bit);
  auto ok = start(options(open_dir / "run"));
  ASSERT_TRUE(ok) << ok.error().message;
  ping(open_dir / "run");
}

TEST_F(RuntimeDirTest, SomeoneElsesLockFileIsNeitherReplacedNorRemoved) {
  const auto dir = user_dir("run");
  std::ofstream(dir / "lock") << "precious\n";
  auto r = start(options(dir));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("not a lock file of a broker"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(read(dir / "lock"), "precious\n");
  EXPECT_TRUE(fs::exists(dir));
}

TEST_F(RuntimeDirTest, LockOfAnotherNamespaceIsNotTakenOver) {
  const auto dir = user_dir("run");
  const std::string record = "slither-broker lock\nnamespace=other\npid=1\nowns_dir=0\n";
  std::ofstream(dir / "lock") << record;
  auto r = start(options(dir));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_EQ(read(dir / "lock"), record);
}

TEST_F(RuntimeDirTest, SomeoneElsesControlFileIsNotReplaced) {
  const auto dir = user_dir("run");
  std::ofstream(dir / "control") << "data\n";
  auto r = start(options(dir));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::already_exists);
  EXPECT_NE(r.error().message.find("not a dead broker's socket"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(read(dir / "control"), "data\n");
  EXPECT_FALSE(fs::exists(dir / "lock"));  // the refusal leaves nothing of its own behind
}

// A unix socket file with nobody listening: what a killed broker leaves.
void stale_socket(const fs::path& file) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", file.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
}

TEST_F(RuntimeDirTest, DeadBrokersLeftoversAreTakenOverAndItsDirectoryRemoved) {
  // A broker that created the directory and was killed: its lock record and socket remain.
  const auto dir = user_dir("run");
  std::ofstream(dir / "lock") << "slither-broker lock\nnamespace=" << ns_
                              << "\npid=999999\nowns_dir=1\n";
  stale_socket(dir / "control");
  auto r = start(options(dir));
  ASSERT_TRUE(r) << r.error().message;
  ping(dir);
  broker_->stop();
  EXPECT_FALSE(fs::exists(dir));
}

TEST_F(RuntimeDirTest, DirectoryTheBrokerDidNotCreateIsKept) {
  const auto dir = user_dir("run");
  auto r = start(options(dir));
  ASSERT_TRUE(r) << r.error().message;
  ping(dir);
  broker_->stop();
  EXPECT_TRUE(fs::is_directory(dir));
  EXPECT_TRUE(fs::is_empty(dir));  // its own lock and socket are gone
}

TEST_F(RuntimeDirTest, IpcEndpointOutsideTheRuntimeDirNeverReplacesAFile) {
  const auto elsewhere = user_dir("sockets");
  std::ofstream(elsewhere / "broker.sock") << "not a socket\n";
  auto o = options(base_ / "run");
  o.control_endpoint = "ipc://" + (elsewhere / "broker.sock").string();
  auto r = start(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::already_exists);
  EXPECT_EQ(read(elsewhere / "broker.sock"), "not a socket\n");
  EXPECT_FALSE(fs::exists(base_ / "run"));  // made by the refused start, so removed again

  // Not even a stale socket: nothing proves it a dead broker's.
  fs::remove(elsewhere / "broker.sock");
  stale_socket(elsewhere / "broker.sock");
  r = start(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::already_exists);

  // A free name is bound, and removed at stop, so the next start binds it again.
  fs::remove(elsewhere / "broker.sock");
  for (int round = 0; round < 2; ++round) {
    auto ok = start(o);
    ASSERT_TRUE(ok) << ok.error().message;
    broker_->stop();
    EXPECT_FALSE(fs::exists(elsewhere / "broker.sock"));
  }
}

}  // namespace
}  // namespace slither
