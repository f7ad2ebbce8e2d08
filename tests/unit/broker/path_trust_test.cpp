// The one set of rules by which both the broker (runtime_dir.cpp) and its
// clients (control_channel.cpp) trust a path: ancestors, the runtime
// directory itself, and a control socket.
#include "path_trust.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace slither::detail {
namespace {

namespace fs = std::filesystem;

/// A uid no test runs as: "another local user" (tests run as root here).
constexpr uid_t other_uid = 65534;

// Expects `r` to fail with `code` and a message holding every one of `parts`.
void expect_error(const result<void>& r, errc code, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, code) << r.error().message;
  for (const auto& part : parts) {
    EXPECT_NE(r.error().message.find(part), std::string::npos)
        << "'" << part << "' not in: " << r.error().message;
  }
}

// "'<path>'", piecewise: GCC 12 warns falsely (-Wrestrict) on "'" + string.
std::string q(const fs::path& p) {
  std::string text = "'";
  text += p.string();
  text += '\'';
  return text;
}

class PathTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "slither-pt-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    base_ = tmpl;
    ::chmod(base_.c_str(), 0755);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  static void need_root() {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to hand a path to another user";
  }

  static void chown_to(const fs::path& p, uid_t uid) {
    ASSERT_EQ(::lchown(p.c_str(), uid, static_cast<gid_t>(-1)), 0) << p;
  }

  // A private runtime directory `name` holding a unix socket `control`.
  fs::path runtime_dir(const std::string& name) {
    const auto dir = base_ / name;
    fs::create_directories(dir);
    ::chmod(dir.c_str(), 0700);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    EXPECT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", (dir / "control").c_str());
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
    return dir;
  }

  fs::path base_;
};

TEST_F(PathTrustTest, AnAncestorOfAnotherUserIsRefusedByName) {
  need_root();
  const auto theirs = base_ / "theirs";
  fs::create_directories(theirs / "a");
  chown_to(theirs, other_uid);
  expect_error(check_ancestors(theirs / "a" / "b"), errc::invalid_argument,
               {q(theirs) + " is owned by uid 65534", "could replace"});
  EXPECT_TRUE(check_ancestors(base_ / "x"));
}

TEST_F(PathTrustTest, AWritableAncestorNeedsTheStickyBit) {
  const auto open_dir = base_ / "open";
  fs::create_directory(open_dir);
  ::chmod(open_dir.c_str(), 0777);
  expect_error(check_ancestors(open_dir / "run"), errc::invalid_argument,
               {q(open_dir), "has mode 0777"});
  ::chmod(open_dir.c_str(), 01777);  // like /tmp: others cannot rename what is ours
  EXPECT_TRUE(check_ancestors(open_dir / "run"));
}

TEST_F(PathTrustTest, ASymlinkAnywhereOnThePathIsRefusedEvenOurs) {
  const auto real = base_ / "real";
  fs::create_directories(real / "b");
  fs::create_directory_symlink(real, base_ / "link");
  expect_error(check_ancestors(base_ / "link" / "b" / "run"), errc::invalid_argument,
               {q(base_ / "link"), "is a symlink", "use the real path"});
  EXPECT_TRUE(check_ancestors(real / "b" / "run"));
}

TEST_F(PathTrustTest, AMissingAncestorIsNotFoundOrCreatedPrivate) {
  const auto deep = base_ / "x" / "y" / "run";
  expect_error(check_ancestors(deep), errc::not_found, {q(base_ / "x"), "does not exist"});
  ASSERT_TRUE(check_ancestors(deep, true));
  struct stat st {};
  ASSERT_EQ(::stat((base_ / "x" / "y").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_FALSE(fs::exists(deep));  // the path itself is not an ancestor
}

TEST_F(PathTrustTest, ARegularFileOnThePathIsRefused) {
  std::ofstream(base_ / "file") << "x";
  expect_error(check_ancestors(base_ / "file" / "run"), errc::invalid_argument,
               {q(base_ / "file"), "regular file, not a directory"});
}

TEST_F(PathTrustTest, ARuntimeDirectoryIsOursPrivateAndReal) {
  const auto dir = runtime_dir("run");
  EXPECT_TRUE(check_private_dir(dir));

  ::chmod(dir.c_str(), 0750);
  expect_error(check_private_dir(dir), errc::invalid_argument, {q(dir), "0750", "chmod 700"});
  ::chmod(dir.c_str(), 0700);

  fs::create_directory_symlink(dir, base_ / "alias");
  expect_error(check_private_dir(base_ / "alias"), errc::invalid_argument,
               {"symlink, not a directory"});
  expect_error(check_private_dir(base_ / "none"), errc::not_found, {"does not exist"});

  need_root();
  chown_to(dir, other_uid);
  expect_error(check_private_dir(dir), errc::invalid_argument, {q(dir), "uid 65534"});
}

TEST_F(PathTrustTest, AControlSocketIsASocketOfOurs) {
  const auto dir = runtime_dir("run");
  const auto socket = dir / "control";
  EXPECT_TRUE(check_control_socket(socket, socket_dir_rule::runtime_dir));
  EXPECT_TRUE(check_control_socket(socket, socket_dir_rule::ancestor));

  expect_error(check_control_socket(dir / "nobody", socket_dir_rule::runtime_dir), errc::not_found,
               {"does not exist"});
  std::ofstream(dir / "file") << "x";
  expect_error(check_control_socket(dir / "file", socket_dir_rule::runtime_dir),
               errc::invalid_argument, {"regular file, not a control socket"});
  fs::create_symlink(socket, dir / "link");
  expect_error(check_control_socket(dir / "link", socket_dir_rule::runtime_dir),
               errc::invalid_argument, {"symlink, not a control socket"});

  need_root();
  chown_to(socket, other_uid);
  expect_error(check_control_socket(socket, socket_dir_rule::ancestor), errc::invalid_argument,
               {q(socket), "uid 65534"});
}

TEST_F(PathTrustTest, OnlyARuntimeDirectoryMustBePrivate) {
  // An explicit endpoint may sit in a directory others can read (not write).
  const auto dir = runtime_dir("shared");
  ::chmod(dir.c_str(), 0755);
  EXPECT_TRUE(check_control_socket(dir / "control", socket_dir_rule::ancestor));
  expect_error(check_control_socket(dir / "control", socket_dir_rule::runtime_dir),
               errc::invalid_argument, {"0755"});
  ::chmod(dir.c_str(), 0777);
  expect_error(check_control_socket(dir / "control", socket_dir_rule::ancestor),
               errc::invalid_argument, {q(dir), "0777"});
}

TEST_F(PathTrustTest, ADotDotComponentIsRefused) {
  // "x/../run" with x a symlink is not "run": the checked path must be the used one.
  runtime_dir("run");
  fs::create_directory(base_ / "x");
  expect_error(
      check_control_socket(base_ / "x" / ".." / "run" / "control", socket_dir_rule::runtime_dir),
      errc::invalid_argument, {"'..'"});
}

}  // namespace
}  // namespace slither::detail
