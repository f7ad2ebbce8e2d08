// What a reader checks before it maps anything: the owner and mode of every
// object, sizes against what the headers claim, and a store still being made.
#include "segment.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "block.hpp"
#include "layout.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::test_options;

const std::vector<table_spec> kTables = {{"kv", table_kind::set, 16}};

TEST(Segment, AttachRefusesAStoreOfAnotherOwner) {
  const auto o = test_options("owner");
  auto w = writer::create(o, kTables).value();
  auto mine = reader::attach(o.ns, o.name, ::geteuid());
  EXPECT_TRUE(mine) << mine.error().message;
  const uid_t other = ::geteuid() + 4242;
  auto r = reader::attach(o.ns, o.name, other);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::io_error);
  EXPECT_NE(r.error().message.find("owned by uid " + std::to_string(::geteuid())),
            std::string::npos)
      << r.error().message;
}

TEST(Segment, AttachRefusesObjectsOthersCanWrite) {
  const auto o = test_options("mode");
  auto w = writer::create(o, kTables).value();
  for (const std::string& name : {segment_name(o.ns, o.name, 0), registry_name(o.ns, o.name)}) {
    const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0);
    for (mode_t mode : {0620, 0602}) {
      ASSERT_EQ(::fchmod(fd, mode), 0);
      auto r = reader::attach(o.ns, o.name);
      ASSERT_FALSE(r) << name << " mode " << mode;
      EXPECT_NE(r.error().message.find("writable by others"), std::string::npos)
          << r.error().message;
    }
    ASSERT_EQ(::fchmod(fd, 0640), 0);  // readable by the group is fine
    EXPECT_TRUE(reader::attach(o.ns, o.name)) << name;
    ASSERT_EQ(::fchmod(fd, 0600), 0);
    ::close(fd);
  }
}

TEST(Segment, ADataSegmentOthersCanWriteIsNotRead) {
  auto o = test_options("datamode");
  o.initial_segment_bytes = 64 << 10;
  auto w = writer::create(o, kTables).value();
  const std::string big(40000, 'x');
  for (int i = 0; i < 4; ++i) w.put("kv", std::to_string(i), Value(Bytes{big})).value();
  ASSERT_GT(w.stats().segments, 1u);
  auto r = reader::attach(o.ns, o.name).value();  // maps segment 1 only when it meets it
  const int fd = ::shm_open(segment_name(o.ns, o.name, 1).c_str(), O_RDONLY, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fchmod(fd, 0666), 0);
  ::close(fd);
  int refused = 0;
  for (int i = 0; i < 4; ++i) {
    auto v = r.get("kv", std::to_string(i));
    if (!v) {
      ++refused;
      EXPECT_EQ(v.error().code, errc::io_error);
    } else {
      EXPECT_EQ(**v, Value(Bytes{big}));  // those in segment 0
    }
  }
  EXPECT_GT(refused, 0);
}

TEST(Segment, AShrunkSegmentIsAnErrorNeverSigbus) {
  auto o = test_options("shrunk");
  o.initial_segment_bytes = 64 << 10;
  auto w = writer::create(o, kTables).value();
  const std::string big(40000, 'y');
  for (int i = 0; i < 6; ++i) w.put("kv", std::to_string(i), Value(Bytes{big})).value();
  ASSERT_GT(w.stats().segments, 2u);
  auto r = reader::attach(o.ns, o.name).value();
  // Another process of the same user truncates segment 2 (its last pages gone).
  const int fd = ::shm_open(segment_name(o.ns, o.name, 2).c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  ::close(fd);
  int refused = 0;
  for (int i = 0; i < 6; ++i) {
    auto v = r.get("kv", std::to_string(i));
    if (!v) ++refused;
  }
  EXPECT_GT(refused, 0);

  // Segment 0 smaller than its header says: attach refuses it.
  const int fd0 = ::shm_open(segment_name(o.ns, o.name, 0).c_str(), O_RDWR, 0);
  ASSERT_GE(fd0, 0);
  ASSERT_EQ(::ftruncate(fd0, 32 << 10), 0);
  ::close(fd0);
  auto again = reader::attach(o.ns, o.name);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::layout_mismatch);
}

TEST(Segment, AStoreStillBeingCreatedIsNotFoundWhateverItsOtherBytes) {
  const auto o = test_options("creating");
  const std::string name = segment_name(o.ns, o.name, 0);
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  // Just created: not even sized yet.
  auto empty = reader::attach(o.ns, o.name);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, errc::not_found);
  EXPECT_NE(empty.error().message.find("still being created"), std::string::npos);
  // Sized, with a half-written header: magic and version not there yet, state still 0.
  std::vector<std::uint64_t> junk(8192 / 8, 0x0123456789abcdefULL);
  junk[detail::store_state_offset / 8] = 0;
  ASSERT_EQ(::write(fd, junk.data(), junk.size() * 8), static_cast<ssize_t>(junk.size() * 8));
  ::close(fd);
  auto half = reader::attach(o.ns, o.name);
  ASSERT_FALSE(half);
  EXPECT_EQ(half.error().code, errc::not_found) << half.error().message;
  EXPECT_NE(half.error().message.find("still being created"), std::string::npos);
  ::shm_unlink(name.c_str());
}

TEST(Segment, EachStoreSeedsItsKeyHash) {
  // Keys chosen so that unseeded XXH3 puts them all in one index slot of 4096.
  std::vector<std::string> keys;
  for (std::uint64_t i = 0; keys.size() < 64; ++i) {
    std::string k = testing::numbered("k", i);
    if ((detail::hash_key(0, k) & 4095) == 7) keys.push_back(std::move(k));
  }
  std::set<std::uint64_t> seeds;
  for (int n = 0; n < 2; ++n) {
    const auto o = test_options("seed");
    auto w = writer::create(o, kTables).value();
    testing::raw_object seg0(segment_name(o.ns, o.name, 0));
    const std::uint64_t seed =
        seg0.at<detail::store_header>(detail::store_header_offset)->hash_seed;
    seeds.insert(seed);
    std::set<std::uint64_t> slots;
    for (const auto& k : keys) slots.insert(detail::hash_key(seed, k) & 4095);
    EXPECT_GT(slots.size(), 48u) << "seeded, the chosen keys spread out";
    for (const auto& k : keys) w.put("kv", k, 1).value();
    for (const auto& k : keys) EXPECT_TRUE(w.read().contains("kv", k).value());
  }
  EXPECT_EQ(seeds.size(), 2u);
  EXPECT_EQ(seeds.count(0), 0u);
}

/// The VmFlags lines of this process's mappings of /dev/shm object `object`.
std::vector<std::string> vm_flags_of(const std::string& object) {
  std::ifstream smaps("/proc/self/smaps");
  std::vector<std::string> out;
  bool in = false;
  for (std::string line; std::getline(smaps, line);) {
    // A mapping's first line: "start-end perms offset dev inode path".
    const bool header = !line.empty() && line.find(':') > line.find(' ');
    if (header) in = line.ends_with(" /dev/shm" + object);
    if (in && line.starts_with("VmFlags:")) out.push_back(line + " ");
  }
  return out;
}

TEST(Segment, TheWritersSegmentMappingsAskForHugePages) {
  // Where /dev/shm honours the advice (huge=advise), a 10^7-key table's
  // index slot and entry each cost one TLB entry per 2 MiB, not per 4 KiB.
  auto o = test_options("huge");
  o.initial_segment_bytes = std::uint64_t{4} << 20;
  auto w = writer::create(o, kTables).value();
  int writable = 0;
  for (const std::string& flags : vm_flags_of(segment_name(o.ns, o.name, 0))) {
    if (flags.find(" wr ") == std::string::npos) continue;  // its own reader's mapping
    ++writable;
    EXPECT_NE(flags.find(" hg "), std::string::npos) << flags;
  }
  EXPECT_EQ(writable, 1) << "the writer maps segment 0 read-write once";
}

/// Bytes of this process's writable mappings of `object` mapped by huge pages.
std::uint64_t huge_mapped_bytes(const std::string& object) {
  std::ifstream smaps("/proc/self/smaps");
  std::uint64_t kib = 0;
  bool in = false;
  for (std::string line; std::getline(smaps, line);) {
    const bool header = !line.empty() && line.find(':') > line.find(' ');
    if (header) {
      const std::size_t perms = line.find(' ') + 1;
      in = line.ends_with(" /dev/shm" + object) && line.compare(perms, 2, "rw") == 0;
    }
    if (in && line.starts_with("ShmemPmdMapped:")) kib += std::stoull(line.substr(15));
  }
  return kib * 1024;
}

TEST(Segment, OnAHugeAdviseShmMountTheWriterGetsHugePages) {
  // fallocate alone backs pages with small ones there, advice or not.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A private /dev/shm mounted huge=advise: needs root (exit 77: skip).
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "huge=advise,size=256m,mode=1777") != 0) {
      ::_exit(77);
    }
    auto o = test_options("hugeadv");
    o.initial_segment_bytes = std::uint64_t{16} << 20;
    auto w = writer::create(o, kTables);
    if (!w) ::_exit(2);
    for (int i = 0; i < 96; ++i) {
      if (!w->put("kv", testing::numbered("k", i), Value(Bytes{std::string(64 << 10, 'x')}))) {
        ::_exit(3);
      }
    }
    ::_exit(huge_mapped_bytes(segment_name(o.ns, o.name, 0)) >= detail::huge_page_bytes ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot mount a private /dev/shm (not root?)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no huge page mapped; 2, 3: the store failed";
}

TEST(Segment, HugePagesOnAdviceAreReadFromTheShmMount) {
  const std::string plain =
      "22 1 0:20 / /proc rw,nosuid - proc proc rw\n"
      "30 24 0:25 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,size=24684092k\n";
  EXPECT_FALSE(detail::shm_huge_on_advice(plain));
  EXPECT_TRUE(detail::shm_huge_on_advice(
      "30 24 0:25 / /dev/shm rw,nosuid shared:4 - tmpfs tmpfs rw,size=1g,huge=advise\n"));
  EXPECT_FALSE(
      detail::shm_huge_on_advice("30 24 0:25 / /dev/shm rw - tmpfs tmpfs rw,huge=within_size\n"));
  // Another mount's option does not count; the last mount on /dev/shm does.
  EXPECT_FALSE(detail::shm_huge_on_advice(
      "40 24 0:30 / /mnt/big rw - tmpfs tmpfs rw,huge=advise\n" + plain));
  EXPECT_TRUE(detail::shm_huge_on_advice(
      plain + "50 30 0:31 / /dev/shm rw - tmpfs tmpfs rw,huge=advise,size=2g"));
  EXPECT_FALSE(detail::shm_huge_on_advice(""));
  EXPECT_FALSE(detail::shm_huge_on_advice("garbage\n - \n/dev/shm"));
}

}  // namespace
}  // namespace slither::shm
