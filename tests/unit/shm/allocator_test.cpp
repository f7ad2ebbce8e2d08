// The allocator: free space reused across sizes, neighbours merged, segments
// sized by what needs them, free pages handed back to /dev/shm, and the
// stats that say where a store's bytes are.
#include "allocator.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shm_test_util.hpp"
#include "slither/shm/detail/sys.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::numbered;
using testing::test_options;
using testing::unique_ns;

/// An allocator over objects of a unique namespace, unlinked afterwards.
struct scratch_allocator {
  detail::allocator a;
  explicit scratch_allocator(const std::string& what, std::uint64_t initial = 1 << 20) {
    a.init(unique_ns(what), what, what, 1, initial);
    if (!a.add_segment(0)) throw std::runtime_error("no segment");
  }
  ~scratch_allocator() {
    a.unmap();
    for (const auto& name : a.created()) detail::unlink_object(name);
  }
};

/// Bytes the store's segment objects take in /dev/shm (their pages, not their size).
std::uint64_t shm_blocks_bytes(const store_options& o, std::uint64_t segments) {
  std::uint64_t total = 0;
  for (std::uint32_t n = 0; n < segments; ++n) {
    const int fd = ::shm_open(segment_name(o.ns, o.name, n).c_str(), O_RDONLY, 0);
    if (fd < 0) continue;
    struct stat st {};
    if (::fstat(fd, &st) == 0) total += static_cast<std::uint64_t>(st.st_blocks) * 512;
    ::close(fd);
  }
  return total;
}

Value bytes_value(std::size_t n, char c) {
  return Value(Bytes{std::string(n, c)});
}

TEST(Allocator, FreedNeighboursMergeAndServeALargerSize) {
  scratch_allocator s("merge");
  auto a = s.a.allocate(1000).value();
  auto b = s.a.allocate(3000).value();
  auto c = s.a.allocate(500).value();
  EXPECT_EQ(b.ref, a.ref + a.bytes);
  EXPECT_EQ(c.ref, b.ref + b.bytes);
  s.a.free(a.ref, a.bytes);
  s.a.free(b.ref, b.bytes);
  // One block the size of both, where they were: not served by the tail.
  auto ab = s.a.allocate(a.bytes + b.bytes).value();
  EXPECT_EQ(ab.ref, a.ref);
  EXPECT_EQ(s.a.segments().size(), 1u);
}

// Small freed blocks are kept whole for the next request of their size (a
// B+tree node or entry replaced by every write): served again in place,
// counted as free meanwhile, and merged once only fresh space would fit.
TEST(Allocator, SmallFreedBlocksServeTheirSizeAgainAndStillMerge) {
  scratch_allocator s("quick", 4 << 20);
  std::vector<detail::block> nodes;
  for (int i = 0; i < 8; ++i) nodes.push_back(s.a.allocate(6500).value());
  auto fence = s.a.allocate(64).value();  // keeps the blocks off the tail
  (void)fence;
  const std::uint64_t free_before = s.a.free_bytes();
  for (const auto& b : nodes) s.a.free(b.ref, b.bytes);
  EXPECT_EQ(s.a.free_bytes(), free_before + 8 * nodes[0].bytes);
  for (int i = 0; i < 8; ++i) {
    const auto again = s.a.allocate(6500).value();
    EXPECT_TRUE(std::any_of(nodes.begin(), nodes.end(),
                            [&](const detail::block& b) { return b.ref == again.ref; }));
  }
  EXPECT_EQ(s.a.free_bytes(), free_before);
  // Freed again, then a request none of them fits alone: they merge for it.
  for (const auto& b : nodes) s.a.free(b.ref, b.bytes);
  const auto all = s.a.allocate(8 * nodes[0].bytes).value();
  EXPECT_EQ(all.ref, nodes[0].ref);
  EXPECT_EQ(s.a.free_bytes(), free_before);
}

TEST(Allocator, FreedSpaceServesSmallerSizesToo) {
  scratch_allocator s("split");
  auto big = s.a.allocate(64 << 10).value();
  auto fence = s.a.allocate(64).value();  // keeps the big block off the tail
  (void)fence;
  s.a.free(big.ref, big.bytes);
  const std::uint64_t free_before = s.a.free_bytes();
  std::vector<detail::block> small;
  for (int i = 0; i < 100; ++i) small.push_back(s.a.allocate(640).value());
  for (const auto& b : small) {
    EXPECT_GE(b.ref, big.ref);
    EXPECT_LT(b.ref, big.ref + big.bytes);
  }
  EXPECT_EQ(s.a.free_bytes(), free_before - 100 * 640);
}

TEST(Allocator, BestFitPicksTheSmallestExtentThatFits) {
  scratch_allocator s("bestfit");
  auto x = s.a.allocate(8192).value();
  auto f1 = s.a.allocate(64).value();
  auto y = s.a.allocate(2048).value();
  auto f2 = s.a.allocate(64).value();
  (void)f1;
  (void)f2;
  s.a.free(x.ref, x.bytes);
  s.a.free(y.ref, y.bytes);
  EXPECT_EQ(s.a.allocate(2000).value().ref, y.ref);
  EXPECT_EQ(s.a.allocate(5000).value().ref, x.ref);
}

TEST(Allocator, ANewSegmentHoldsWhatTheRequestNeedsNotDouble) {
  scratch_allocator s("grow", 1 << 20);
  auto big = s.a.allocate(std::uint64_t{24} << 20).value();
  ASSERT_EQ(s.a.segments().size(), 2u);
  EXPECT_LT(s.a.segments()[1].bytes, (std::uint64_t{24} << 20) + (1 << 20));
  // The first segment still has room: a small block goes there, not to a third segment.
  auto small = s.a.allocate(4096).value();
  EXPECT_EQ(detail::ref_segment(small.ref), 0u);
  EXPECT_EQ(detail::ref_segment(big.ref), 1u);
  EXPECT_EQ(s.a.segments().size(), 2u);
}

TEST(Allocator, FreePagesAreHandedBackAndReservedAgainOnReuse) {
  scratch_allocator s("punch", 1 << 20);
  const std::uint64_t before = s.a.resident_bytes();
  auto big = s.a.allocate(std::uint64_t{16} << 20).value();
  std::memset(s.a.ptr(big.ref), 0x5a, big.bytes);
  EXPECT_GE(s.a.resident_bytes(), before + (std::uint64_t{16} << 20));
  s.a.free(big.ref, big.bytes);
  s.a.trim_now();
  EXPECT_LE(s.a.resident_bytes(), before + (std::uint64_t{2} << 20));

  auto again = s.a.allocate(std::uint64_t{16} << 20).value();
  EXPECT_EQ(again.ref, big.ref);
  EXPECT_GE(s.a.resident_bytes(), before + (std::uint64_t{16} << 20));
  std::memset(s.a.ptr(again.ref), 0x33, again.bytes);  // reserved: no SIGBUS
  s.a.free(again.ref, again.bytes);
  s.a.trim_now();

  // /dev/shm full when a hole is to be reused: an error, and nothing changes.
  auto& calls = detail::sys();
  const auto real = calls.fallocate;
  calls.fallocate = [](int, off_t, off_t) { return ENOSPC; };
  auto refused = s.a.allocate(std::uint64_t{16} << 20);
  calls.fallocate = real;
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::no_space);
  EXPECT_TRUE(s.a.allocate(std::uint64_t{16} << 20));
}

// Counters for the system calls the tests below watch; the hooks are set
// before the trimmer can call them and restored once it is idle.
std::atomic<int> punches{0};
std::atomic<pid_t> punch_thread{0};
std::atomic<int> fallocates{0};

struct watched_calls {
  detail::sys_calls saved = detail::sys();
  watched_calls() {
    punches = 0;
    punch_thread = 0;
    fallocates = 0;
    auto& calls = detail::sys();
    calls.punch_hole = [](int fd, off_t at, off_t n) {
      ++punches;
      punch_thread = ::gettid();
      return ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, n) == 0 ? 0 : errno;
    };
    calls.fallocate = [](int fd, off_t at, off_t n) {
      ++fallocates;
      return ::posix_fallocate(fd, at, n);
    };
  }
  ~watched_calls() { detail::sys() = saved; }
};

TEST(Allocator, PagesAnotherProcessBackedStopCountingAsHolesAndNoOthers) {
  // A large write's client backs its block's pages itself; it may skip some
  // or die midway. Those it backed must be handed back when the block is
  // freed; those it did not must be reserved before anything writes them.
  scratch_allocator s("noted", 1 << 20);
  watched_calls watch;
  constexpr std::uint64_t page = 4096, pages = 64;
  auto b = s.a.allocate_unreserved(pages * page + 2 * page).value();
  const std::uint64_t at = (b.ref + page - 1) / page * page;
  const std::uint64_t before = s.a.resident_bytes();
  for (const std::uint64_t i : {0, 1, 5}) s.a.ptr(at + i * page)[0] = std::byte{1};
  s.a.note_backed(at, pages * page);
  EXPECT_EQ(s.a.resident_bytes(), before + 3 * page);
  s.a.note_backed(at, pages * page);  // nothing new: no change
  EXPECT_EQ(s.a.resident_bytes(), before + 3 * page);
  EXPECT_EQ(fallocates.load(), 0);

  ASSERT_TRUE(s.a.adopt_backed(at, pages * page));
  EXPECT_GT(fallocates.load(), 0);
  EXPECT_EQ(s.a.resident_bytes(), before + pages * page);
  const int calls = fallocates.load();
  ASSERT_TRUE(s.a.adopt_backed(at, pages * page));  // all backed now: nothing to reserve
  EXPECT_EQ(fallocates.load(), calls);
}

TEST(Allocator, FreedPagesAreHandedBackOnAnotherThread) {
  scratch_allocator s("bgpunch", 1 << 20);
  auto small = s.a.allocate(std::uint64_t{512} << 10).value();  // under linger_min_bytes
  auto fence = s.a.allocate(64).value();
  (void)fence;
  std::memset(s.a.ptr(small.ref), 0x5a, small.bytes);
  watched_calls watch;
  const std::uint64_t resident = s.a.resident_bytes();
  const std::uint64_t free_before = s.a.free_bytes();
  s.a.free(small.ref, small.bytes);
  EXPECT_EQ(punches, 0) << "free itself punches nothing";
  EXPECT_EQ(s.a.free_bytes(), free_before + small.bytes);
  s.a.trim(detail::allocator::clock::now());
  // Out of the free lists while it is punched, but still counted as free.
  EXPECT_EQ(s.a.free_bytes(), free_before + small.bytes);
  // Left to the trimmer's thread (`trim_now` would lend it this one).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (s.a.trimming_bytes() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    s.a.collect_trimmed();
  }
  EXPECT_GE(punches, 1);
  EXPECT_NE(punch_thread, ::gettid()) << "the punch ran on the thread that freed";
  EXPECT_LE(s.a.resident_bytes(), resident - small.bytes + (std::uint64_t{64} << 10));
  EXPECT_EQ(s.a.trimming_bytes(), 0u);
  EXPECT_EQ(s.a.free_bytes(), free_before + small.bytes);
  // The run is free again: the same block serves the next request.
  EXPECT_EQ(s.a.allocate(small.bytes).value().ref, small.ref);
}

TEST(Allocator, ALargeFreedBlockKeepsItsPagesForTheNextOneOfItsSize) {
  scratch_allocator s("linger", 1 << 20);
  const std::uint64_t big_bytes = std::uint64_t{8} << 20;
  auto big = s.a.allocate(big_bytes).value();
  auto fence = s.a.allocate(64).value();
  (void)fence;
  std::memset(s.a.ptr(big.ref), 0x5a, big.bytes);
  watched_calls watch;
  const std::uint64_t resident = s.a.resident_bytes();
  s.a.free(big.ref, big.bytes);
  s.a.trim(detail::allocator::clock::now());
  s.a.collect_trimmed();
  EXPECT_EQ(punches, 0);
  EXPECT_EQ(s.a.resident_bytes(), resident);
  // Reused at once: no page to reserve (nor, for its writer, to fault in and zero).
  auto again = s.a.allocate(big_bytes).value();
  EXPECT_EQ(again.ref, big.ref);
  EXPECT_EQ(fallocates, 0);
  EXPECT_EQ(s.a.resident_bytes(), resident);
  // Freed again and left alone: handed back once it has lingered long enough.
  s.a.free(again.ref, again.bytes);
  s.a.trim(detail::allocator::clock::now() + detail::allocator::linger_time / 2);
  EXPECT_EQ(s.a.trimming_bytes(), 0u);
  s.a.trim(detail::allocator::clock::now() + detail::allocator::linger_time +
           std::chrono::milliseconds(1));
  EXPECT_GE(s.a.trimming_bytes() + (resident - s.a.resident_bytes()), big_bytes - (64u << 10));
  s.a.trim_now();
  EXPECT_LE(s.a.resident_bytes(), resident - big_bytes + (std::uint64_t{64} << 10));
}

TEST(Allocator, SpaceBeingTrimmedIsWaitedForNotGrownPast) {
  scratch_allocator s("trimwait", 1 << 20);
  auto big = s.a.allocate(std::uint64_t{16} << 20).value();
  auto fence = s.a.allocate(64).value();
  (void)fence;
  const std::uint64_t segments = s.a.segments().size();
  s.a.free(big.ref, big.bytes);
  s.a.trim(detail::allocator::clock::now(), true);  // submitted, perhaps not done
  auto again = s.a.allocate(std::uint64_t{16} << 20).value();
  EXPECT_EQ(again.ref, big.ref);
  EXPECT_EQ(s.a.segments().size(), segments);
  EXPECT_EQ(s.a.trimming_bytes(), 0u);
  std::memset(s.a.ptr(again.ref), 0x33, again.bytes);  // reserved again: no SIGBUS
}

TEST(Allocator, DriftingSizesAreServedFromFreedSpace) {
  // Values of one size range, all replaced by values of another, and so on:
  // with reuse only within a size class each round needed new space.
  auto o = test_options("drift");
  o.initial_segment_bytes = 1 << 20;
  std::vector<table_spec> tables = {{"kv", table_kind::set, 4096}};
  auto w = writer::create(o, tables).value();
  std::mt19937_64 rng(7);
  const std::uint64_t keys = testing::scaled(1000, 300);
  std::uint64_t live = 0;
  std::vector<std::uint64_t> sizes(keys, 0);
  // The mix drifts between small and large values: each round replaces every value.
  const std::uint64_t lows[10] = {64, 512, 4096, 1024, 128, 2048, 256, 8192, 64, 1024};
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t lo = lows[round];
    for (std::uint64_t k = 0; k < keys; ++k) {
      const std::uint64_t n = lo + rng() % (lo * 7);
      live += n;
      live -= sizes[k];
      sizes[k] = n;
      ASSERT_TRUE(w.put("kv", numbered("k", k), bytes_value(n, 'v'))) << round;
    }
    w.reclaim();
  }
  w.trim();
  const auto st = w.stats();
  EXPECT_EQ(st.bytes_retired, 0u);
  EXPECT_LE(static_cast<double>(st.bytes_resident), 1.5 * static_cast<double>(live))
      << "live " << live << ", resident " << st.bytes_resident << ", segments " << st.segment_bytes;
  EXPECT_LE(shm_blocks_bytes(o, st.segments), st.bytes_resident + (64u << 10));
  // Every byte is live, garbage, free or a header.
  EXPECT_LE(st.bytes_used + st.bytes_retired + st.bytes_free, st.segment_bytes);
  EXPECT_GE(st.bytes_used + st.bytes_retired + st.bytes_free + 64 * 1024, st.segment_bytes);
}

TEST(Allocator, ClearAfterALargeArrayNeedsNoNewSegment) {
  // Issue 13: after a 100 MB array, clear() of an empty table made a new
  // segment twice the size of the last one (218 MB).
  auto o = test_options("clear");
  o.initial_segment_bytes = 4 << 20;
  std::vector<table_spec> tables = {{"arrays", table_kind::set, 16},
                                    {"empty", table_kind::set, 16}};
  auto w = writer::create(o, tables).value();
  ASSERT_TRUE(w.put("arrays", "a", ndarray::zeros(dtype::f32, {std::uint64_t{6} << 20})));
  const auto before = w.stats();
  ASSERT_TRUE(w.clear("empty"));
  const auto after = w.stats();
  EXPECT_EQ(after.segments, before.segments);
  EXPECT_EQ(after.segment_bytes, before.segment_bytes);
  EXPECT_LT(before.segment_bytes, o.initial_segment_bytes + (std::uint64_t{26} << 20))
      << "the array's segment is sized by the array";
}

TEST(Allocator, AStoreEmptiedOfLargeValuesGivesItsMemoryBack) {
  // Issue 13: a sequence that ended with 0 bytes used kept 768 MB in /dev/shm.
  auto o = test_options("empty");
  o.initial_segment_bytes = 1 << 20;
  std::vector<table_spec> tables = {{"kv", table_kind::set, 16}};
  auto w = writer::create(o, tables).value();
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(w.put("kv", numbered("k", i), bytes_value((std::size_t{1} << 20) * (i + 1), 'x')));
  }
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(w.erase("kv", numbered("k", i)).value());
  w.reclaim();
  w.trim();
  const auto st = w.stats();
  EXPECT_EQ(st.entries, 0u);
  EXPECT_GT(st.segment_bytes, std::uint64_t{20} << 20);
  EXPECT_LT(st.bytes_resident, std::uint64_t{2} << 20);
  EXPECT_LT(shm_blocks_bytes(o, st.segments), std::uint64_t{2} << 20);
  // Readers still see the store, and the space serves new values.
  ASSERT_TRUE(w.put("kv", "again", bytes_value(std::size_t{4} << 20, 'y')));
  EXPECT_EQ(w.read().get("kv", "again").value(), std::optional<Value>(bytes_value(4 << 20, 'y')));
  EXPECT_EQ(w.stats().segments, st.segments);
}

TEST(Allocator, StatsNameWhatIsPinnedAndByWhom) {
  auto o = test_options("pinned");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 512}};
  auto w = writer::create(o, tables).value();
  auto r = reader::attach(o.ns, o.name).value();
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(w.put("kv", numbered("k", i), i));
  // More views than the slot has holds: the rest pin their epoch.
  std::vector<view> views;
  for (int i = 0; i < 200; ++i) views.push_back(*r.get_view("kv", numbered("k", i)).value());
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(w.put("kv", numbered("k", i), i + 1000));
  w.reclaim();
  auto st = w.stats();
  EXPECT_GT(st.bytes_pinned, 0u);
  EXPECT_EQ(st.bytes_pinned, st.bytes_retired);
  EXPECT_EQ(st.oldest_epoch_pid, static_cast<std::uint64_t>(::getpid()));
  EXPECT_GT(st.bytes_free, 0u);
  views.clear();
  w.reclaim();
  st = w.stats();
  EXPECT_EQ(st.bytes_pinned, 0u);
  EXPECT_EQ(st.bytes_retired, 0u);
  EXPECT_EQ(st.oldest_epoch_pid, 0u);
}

}  // namespace
}  // namespace slither::shm
