// Large values written in place: reserve, fill through a mapping of the
// block's own pages (as a client process would), commit.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "layout.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/detail/sys.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::test_options;

const std::vector<table_spec> kTables = {{"kv", table_kind::set, 16}, {"log", table_kind::bag, 16}};

/// Maps a reservation's pages read-write as a client does, fills them with
/// floats i * scale, unmaps.
void fill(const reservation& r, float scale) {
  const int fd = ::shm_open(r.object.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, r.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   static_cast<off_t>(r.offset));
  ::close(fd);
  ASSERT_NE(p, MAP_FAILED);
  auto* f = static_cast<float*>(p);
  for (std::uint64_t i = 0; i < r.bytes / 4; ++i) f[i] = static_cast<float>(i) * scale;
  ::munmap(p, r.map_bytes);
}

/// Bytes of [at, at + bytes) of the object `name` backed by memory (not holes).
std::uint64_t backed_bytes(const std::string& name, std::uint64_t at, std::uint64_t bytes) {
  const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
  EXPECT_GE(fd, 0);
  std::uint64_t backed = 0;
  for (std::uint64_t pos = at; pos < at + bytes;) {
    const off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0 || static_cast<std::uint64_t>(data) >= at + bytes) break;  // ENXIO: no more
    const off_t hole = ::lseek(fd, data, SEEK_HOLE);
    const std::uint64_t end = std::min<std::uint64_t>(static_cast<std::uint64_t>(hole), at + bytes);
    backed += end - static_cast<std::uint64_t>(data);
    pos = end;
  }
  ::close(fd);
  return backed;
}

/// Bytes of the object `name` backed by memory, reserved or written (tmpfs
/// counts a reserved, unwritten page as a hole for SEEK_DATA, not in st_blocks).
std::uint64_t object_blocks(const std::string& name) {
  struct stat st {};
  EXPECT_EQ(::stat(("/dev/shm" + name).c_str(), &st), 0);
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

/// Maps a client-backed reservation's pages as a client does, backs the
/// first `pages` of them (MADV_POPULATE_WRITE) and writes a byte into each.
void back_pages(const reservation& r, std::uint64_t pages) {
  const int fd = ::shm_open(r.object.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, r.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   static_cast<off_t>(r.offset));
  ::close(fd);
  ASSERT_NE(p, MAP_FAILED);
  ASSERT_EQ(::madvise(p, pages * 4096, MADV_POPULATE_WRITE), 0) << std::strerror(errno);
  for (std::uint64_t i = 0; i < pages; ++i) static_cast<char*>(p)[i * 4096] = 1;
  ::munmap(p, r.map_bytes);
}

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;

TEST(LargeWrite, AClientBackedReservationLeavesItsPagesToTheClient) {
  // Reserving 256 MiB costs ~100 ms of kernel CPU: with client_backs the
  // writer spends none of it on the value's pages; the client's populate does.
  auto w = writer::create(test_options("lwcb"), kTables).value();
  const std::uint64_t shape[] = {8 * kMiB};
  auto mine = w.reserve("kv", "mine", dtype::u8, shape).value();
  EXPECT_EQ(mine.pages, reserve_pages::writer_reserves);
  const std::uint64_t reserved = object_blocks(mine.object);
  EXPECT_GE(reserved, mine.map_bytes);
  auto r = w.reserve("kv", "arr", dtype::u8, shape, reserve_pages::client_backs).value();
  EXPECT_EQ(r.pages, reserve_pages::client_backs);
  const std::uint64_t base = r.object == mine.object ? reserved : 0;  // or a segment of its own
  EXPECT_LT(object_blocks(r.object), base + kMiB);
  back_pages(r, r.map_bytes / 4096);
  EXPECT_GE(object_blocks(r.object), base + r.map_bytes);
  ASSERT_TRUE(w.commit(r.id));
  auto got = w.read().get_view("kv", "arr").value();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->array().bytes()[4096], std::byte{1});
  EXPECT_EQ(got->array().bytes()[4097], std::byte{0});
  ASSERT_TRUE(w.abandon(mine.id));
}

TEST(LargeWrite, AClientBackedReservationGivenUpHandsItsPagesBack) {
  // A client that backed some pages and died (its lease ended): the pages it
  // backed go back to /dev/shm like any freed block's, though the writer
  // never reserved them.
  auto w = writer::create(test_options("lwcbab"), kTables).value();
  const auto before = w.stats();
  const std::uint64_t shape[] = {8 * kMiB};
  auto r = w.reserve("kv", "x", dtype::u8, shape, reserve_pages::client_backs).value();
  back_pages(r, 1024);
  ASSERT_EQ(backed_bytes(r.object, r.offset, r.map_bytes), 4 * kMiB);
  ASSERT_TRUE(w.abandon(r.id));
  w.trim();
  EXPECT_EQ(backed_bytes(r.object, r.offset, r.map_bytes), 0u);
  EXPECT_EQ(w.stats().bytes_used, before.bytes_used);
  EXPECT_FALSE(w.read().contains("kv", "x").value());
}

TEST(LargeWrite, AReservationInPagesBackedAlreadyLeavesTheClientNothingToBack) {
  // A value replacing one of its size lands in the pages the freed one left
  // (they linger): a populate over them would be a long system call for
  // nothing, so the offer to back them is declined.
  auto w = writer::create(test_options("lwback"), kTables).value();
  const std::uint64_t shape[] = {8 * kMiB};
  auto first = w.reserve("kv", "x", dtype::u8, shape, reserve_pages::client_backs).value();
  ASSERT_EQ(first.pages, reserve_pages::client_backs);
  back_pages(first, first.map_bytes / 4096);
  ASSERT_TRUE(w.abandon(first.id));
  auto again = w.reserve("kv", "x", dtype::u8, shape, reserve_pages::client_backs).value();
  ASSERT_EQ(again.object, first.object);
  ASSERT_EQ(again.offset, first.offset);
  EXPECT_EQ(again.pages, reserve_pages::writer_reserves);
  EXPECT_GE(backed_bytes(again.object, again.offset, again.map_bytes), again.map_bytes);
  fill(again, 1.0f);
  ASSERT_TRUE(w.commit(again.id));
  auto got = w.read().get_view("kv", "x").value();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->array().bytes().size(), 8 * kMiB);
}

TEST(LargeWrite, ACommitBacksThePagesItsClientLeftHoles) {
  // Readers of a published block must never fault for lack of space: what
  // the client did not back, the commit reserves.
  auto w = writer::create(test_options("lwcbh"), kTables).value();
  const std::uint64_t shape[] = {4 * kMiB};
  auto r = w.reserve("kv", "x", dtype::u8, shape, reserve_pages::client_backs).value();
  back_pages(r, 3);
  const std::uint64_t before = object_blocks(r.object);
  ASSERT_TRUE(w.commit(r.id));
  EXPECT_GE(object_blocks(r.object), before + r.map_bytes - 3 * 4096);
  auto got = w.read().get_view("kv", "x").value();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->array().bytes()[2 * 4096], std::byte{1});
  EXPECT_EQ(got->array().bytes()[3 * 4096], std::byte{0});
}

int no_space(int, off_t, off_t) {
  return ENOSPC;
}

TEST(LargeWrite, ACommitWithoutRoomForTheClientsHolesIsAbandonedCleanly) {
  auto w = writer::create(test_options("lwcbns"), kTables).value();
  const auto before = w.stats();
  const std::uint64_t shape[] = {4 * kMiB};
  auto r = w.reserve("kv", "x", dtype::u8, shape, reserve_pages::client_backs).value();
  back_pages(r, 3);
  auto& calls = detail::sys();
  const auto saved = calls;
  calls.fallocate = no_space;
  const auto v = w.commit(r.id);
  calls = saved;
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code, errc::no_space);
  EXPECT_NE(v.error().message.find("not fully written"), std::string::npos) << v.error().message;
  EXPECT_FALSE(w.read().contains("kv", "x").value());
  EXPECT_EQ(w.stats().bytes_used, before.bytes_used);
  EXPECT_EQ(w.commit(r.id).error().code, errc::not_found);
  // What the client left holes still counts as holes (or the next block
  // there would be written unreserved); the 3 pages it backed and the
  // block's header page, too few to be worth a punch, count as the store's.
  w.trim();
  EXPECT_LE(backed_bytes(r.object, r.offset, r.map_bytes), 3 * 4096u);
  EXPECT_LE(w.stats().bytes_resident, before.bytes_resident + 4 * 4096);
}

TEST(LargeWrite, AReservedBlockIsInvisibleUntilCommitted) {
  auto w = writer::create(test_options("lw"), kTables).value();
  ASSERT_TRUE(w.put("kv", "a", 1));
  const std::uint64_t shape[] = {1000, 3};
  auto r = w.reserve("kv", "arr", dtype::f32, shape).value();
  EXPECT_EQ(r.bytes, 12000u);
  EXPECT_EQ(r.offset % 4096, 0u);
  EXPECT_EQ(r.map_bytes, 12288u);
  fill(r, 0.5f);
  EXPECT_FALSE(w.read().contains("kv", "arr").value());
  const auto v = w.commit(r.id).value();
  EXPECT_GT(v, 0u);
  auto view = w.read().get_view("kv", "arr").value();
  ASSERT_TRUE(view);
  const ndarray a = view->array();
  EXPECT_TRUE(std::ranges::equal(a.shape(), std::vector<std::uint64_t>{1000, 3}));
  const auto f = a.values<float>();
  EXPECT_EQ(f[2999], 2999 * 0.5f);
  EXPECT_EQ(w.read().get("kv", "a").value(), std::optional<Value>(1));
  // Finished: neither a second commit nor an abandon finds it.
  EXPECT_EQ(w.commit(r.id).error().code, errc::not_found);
  EXPECT_EQ(w.abandon(r.id).error().code, errc::not_found);
}

TEST(LargeWrite, CommitReplacesAndAppendsLikeAPut) {
  auto w = writer::create(test_options("lwrep"), kTables).value();
  const std::uint64_t shape[] = {4096};
  for (int round = 1; round <= 3; ++round) {
    auto r = w.reserve("kv", "x", dtype::f32, shape).value();
    fill(r, static_cast<float>(round));
    ASSERT_TRUE(w.commit(r.id));
    auto b = w.reserve("log", "x", dtype::f32, shape).value();
    fill(b, static_cast<float>(round));
    ASSERT_TRUE(w.commit(b.id));
  }
  const auto v = w.read().get("kv", "x").value();
  ASSERT_TRUE(v && v->is_ndarray());
  EXPECT_EQ(v->as<ndarray>().values<float>()[7], 21.0f);
  EXPECT_EQ(w.read().size("log").value(), 3u);  // three values under one key
  EXPECT_EQ(w.stats().entries, 4u);
}

TEST(LargeWrite, ACommitIntoAnOrderedTableIsInItsOrder) {
  const std::vector<table_spec> tables = {{"ord", table_kind::ordered_set, 16}};
  auto w = writer::create(test_options("lword"), tables).value();
  ASSERT_TRUE(w.put("ord", "a", 1));
  ASSERT_TRUE(w.put("ord", "c", 3));
  const std::uint64_t shape[] = {2048};
  auto r = w.reserve("ord", "b", dtype::f32, shape).value();
  fill(r, 1.0f);
  ASSERT_TRUE(w.commit(r.id));
  std::vector<std::string> keys;
  const auto entries = w.read().range("ord").value();
  for (const auto& [k, v] : entries) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(LargeWrite, ACommitAfterItsTableWasDroppedIsRefused) {
  auto w = writer::create(test_options("lwdrop"), kTables).value();
  ASSERT_TRUE(w.create_table({"made", table_kind::set, 16}));
  ASSERT_TRUE(w.create_table({"kept", table_kind::set, 16}));
  const std::uint64_t shape[] = {2048};
  auto r = w.reserve("kept", "x", dtype::f32, shape).value();
  fill(r, 1.0f);
  ASSERT_TRUE(w.drop_table("made"));  // shifts the tables after it
  ASSERT_TRUE(w.commit(r.id));
  EXPECT_TRUE(w.read().contains("kept", "x").value());
  auto gone = w.reserve("kept", "y", dtype::f32, shape).value();
  ASSERT_TRUE(w.drop_table("kept"));
  EXPECT_EQ(w.commit(gone.id).error().code, errc::not_found);
}

TEST(LargeWrite, AbandonedReservationsGiveTheirSpaceBack) {
  auto w = writer::create(test_options("lwab"), kTables).value();
  const auto before = w.stats();
  const std::uint64_t shape[] = {std::uint64_t{4} << 20};
  auto r = w.reserve("kv", "x", dtype::u8, shape).value();
  EXPECT_GT(w.stats().bytes_used, before.bytes_used + (std::uint64_t{4} << 20));
  ASSERT_TRUE(w.abandon(r.id));
  EXPECT_EQ(w.stats().bytes_used, before.bytes_used);
  EXPECT_FALSE(w.read().contains("kv", "x").value());
  EXPECT_EQ(w.commit(r.id).error().code, errc::not_found);
}

TEST(LargeWrite, BadRequestsAreRefusedAndChangeNothing) {
  auto o = test_options("lwbad");
  o.max_value_bytes = 1 << 20;
  auto w = writer::create(o, kTables).value();
  const std::uint64_t big[] = {std::uint64_t{1} << 19, 4};
  EXPECT_EQ(w.reserve("kv", "x", dtype::f32, big).error().code, errc::limit_exceeded);
  const std::uint64_t overflow[] = {std::uint64_t{1} << 40, std::uint64_t{1} << 40};
  EXPECT_EQ(w.reserve("kv", "x", dtype::f32, overflow).error().code, errc::limit_exceeded);
  const std::uint64_t ok[] = {16};
  EXPECT_EQ(w.reserve("nope", "x", dtype::f32, ok).error().code, errc::not_found);
  EXPECT_EQ(w.reserve("kv", std::string(300, 'k'), dtype::f32, ok).error().code,
            errc::limit_exceeded);
  EXPECT_EQ(w.reserve("kv", "x", static_cast<dtype>(200), ok).error().code, errc::invalid_argument);
  EXPECT_EQ(w.commit(12345).error().code, errc::not_found);
  EXPECT_EQ(w.stats().entries, 0u);
}

TEST(LargeWrite, ADamagedHeaderIsNotPublished) {
  auto o = test_options("lwdmg");
  auto w = writer::create(o, kTables).value();
  const std::uint64_t shape[] = {1024};
  auto r = w.reserve("kv", "x", dtype::f32, shape).value();
  // A client that writes outside its pages (here: the block's header, below
  // its value) is caught at the commit.
  {
    testing::raw_object seg(r.object);
    bool found = false;
    for (std::uint64_t at = r.offset - 128; at + 8192 > r.offset && !found; at -= 8) {
      auto* e = seg.at<detail::entry_header>(at);
      if (e->layout == static_cast<std::uint8_t>(detail::entry_layout::full) && e->key_bytes == 1 &&
          e->value_bytes == r.bytes && e->value_offset == r.offset - at) {
        e->value_bytes = 8;
        found = true;
      }
    }
    ASSERT_TRUE(found);
  }
  EXPECT_EQ(w.commit(r.id).error().code, errc::decode_error);
  EXPECT_FALSE(w.read().contains("kv", "x").value());
}

}  // namespace
}  // namespace slither::shm
