// CURVE key files: written owner-only and never replaced, read only when
// owner-only, with errors that name the file and the line.
#include "curve_keys.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>

namespace slither::detail {
namespace {

namespace fs = std::filesystem;

class CurveKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> n{0};
    dir_ = fs::temp_directory_path() /
           ("slither-keys" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path write(const std::string& name, const std::string& text, fs::perms mode) {
    const auto p = dir_ / name;
    std::ofstream(p) << text;
    fs::permissions(p, mode);
    return p;
  }

  static unsigned mode_of(const fs::path& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 ? st.st_mode & 07777 : 0xffff;
  }

  fs::path dir_;
};

constexpr auto owner_rw = fs::perms::owner_read | fs::perms::owner_write;

TEST_F(CurveKeysTest, KeygenWritesAnOwnerOnlyPairAndNeverReplacesIt) {
  auto pair = write_key_pair(dir_ / "broker");
  ASSERT_TRUE(pair) << pair.error().message;
  EXPECT_TRUE(is_z85_key(pair->public_key));
  EXPECT_TRUE(is_z85_key(pair->secret_key));
  EXPECT_EQ(mode_of(dir_ / "broker.key"), 0600u);
  EXPECT_EQ(mode_of(dir_ / "broker.pub"), 0600u);
  EXPECT_EQ(read_key_file(dir_ / "broker.key").value(), pair->secret_key);
  EXPECT_EQ(read_key_file(dir_ / "broker.pub").value(), pair->public_key);
  EXPECT_EQ(curve_public_of(pair->secret_key).value(), pair->public_key);

  auto again = write_key_pair(dir_ / "broker");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::already_exists);
  EXPECT_EQ(read_key_file(dir_ / "broker.key").value(), pair->secret_key);
}

TEST_F(CurveKeysTest, KeyFileMustBeOwnerOnly) {
  const auto key = write_key_pair(dir_ / "k").value();
  fs::permissions(dir_ / "k.key", owner_rw | fs::perms::group_read | fs::perms::others_read);
  auto r = read_key_file(dir_ / "k.key");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("mode 0644"), std::string::npos) << r.error().message;

  fs::permissions(dir_ / "k.key", fs::perms::owner_read);  // 0400 is fine
  EXPECT_EQ(read_key_file(dir_ / "k.key").value(), key.secret_key);

  fs::create_symlink(dir_ / "k.key", dir_ / "link.key");
  r = read_key_file(dir_ / "link.key");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("symlink"), std::string::npos) << r.error().message;

  if (::geteuid() == 0) {
    ASSERT_EQ(::chown((dir_ / "k.key").c_str(), 65534, 65534), 0);
    r = read_key_file(dir_ / "k.key");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("owned by uid 65534"), std::string::npos) << r.error().message;
  }
}

TEST_F(CurveKeysTest, MalformedKeysNameFileAndLine) {
  auto r = read_key_file(write("bad.key", "# a comment\nnot-a-key\n", owner_rw));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("bad.key':2: not a 40-character Z85 key"), std::string::npos)
      << r.error().message;
  r = read_key_file(write("empty.key", "# nothing\n\n", owner_rw));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("holds no key"), std::string::npos);
}

TEST_F(CurveKeysTest, AllowListTakesCommentsAndRefusesGarbage) {
  const auto a = write_key_pair(dir_ / "a").value();
  const auto b = write_key_pair(dir_ / "b").value();
  const auto list = write(
      "clients", "# workers\n" + a.public_key + "  # host a\n\n" + b.public_key + "\n", owner_rw);
  const auto keys = read_allow_list(list).value();
  EXPECT_EQ(keys, (std::set<std::string>{a.public_key, b.public_key}));

  auto r = read_allow_list(write("bad", a.public_key + "\nxyz\n", owner_rw));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("bad':2:"), std::string::npos) << r.error().message;
  r = read_allow_list(write("none", "# nobody\n", owner_rw));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("no client could connect"), std::string::npos);
  r = read_allow_list(write("open", a.public_key + "\n", owner_rw | fs::perms::others_read));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("owner-only"), std::string::npos);
}

}  // namespace
}  // namespace slither::detail
