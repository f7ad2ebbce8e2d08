// The registry protocol on its own: slots claimed and freed by readers, and
// swept by the writer only on positive evidence of death (no OFD lock held,
// owner word unchanged). Several open file descriptions of one registry in
// one process stand for several processes: OFD locks conflict between
// descriptions, not between processes.
#include "registry.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <new>
#include <optional>
#include <string>

#include "layout.hpp"
#include "ofd_lock.hpp"
#include "slither/shm/detail/sys.hpp"

namespace slither::shm::detail {
namespace {

constexpr std::uint64_t kSlots = 4;

/// A registry in a memfd, with a way to open more descriptions of it.
class test_registry {
 public:
  test_registry() {
    fd_ = ::memfd_create("registry_test", MFD_CLOEXEC);
    if (fd_ < 0 || ::ftruncate(fd_, static_cast<off_t>(slot_offset(kSlots))) != 0) {
      throw std::runtime_error("memfd");
    }
    void* p = ::mmap(nullptr, slot_offset(kSlots), PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    base_ = static_cast<std::byte*>(p);
    slots_ = reinterpret_cast<reader_slot*>(base_ + sizeof(registry_header));
    for (std::uint64_t i = 0; i < kSlots; ++i) new (&slots_[i]) reader_slot{};
  }
  ~test_registry() {
    ::munmap(base_, slot_offset(kSlots));
    ::close(fd_);
  }
  /// A new open file description of the registry (as another process would have).
  int open_description() const {
    const std::string path = "/proc/self/fd/" + std::to_string(fd_);
    return ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  }
  reader_slot* slots() const { return slots_; }
  reader_slot& operator[](std::uint64_t i) const { return slots_[i]; }

 private:
  int fd_ = -1;
  std::byte* base_ = nullptr;
  reader_slot* slots_ = nullptr;
};

TEST(Registry, ClaimsFromSlotZeroAndReleaseFrees) {
  test_registry reg;
  const int a = reg.open_description(), b = reg.open_description();
  const auto ca = claim_slot(a, reg.slots(), kSlots, 11);
  const auto cb = claim_slot(b, reg.slots(), kSlots, 22);
  ASSERT_TRUE(ca && cb);
  EXPECT_EQ(ca->index, 0u);
  EXPECT_EQ(cb->index, 1u);
  EXPECT_EQ(owner_state(reg[0].owner.load()), slot_state::owned);
  EXPECT_EQ(reg[1].pid.load(), 22u);
  reg[0].holds[5].store(0x1000);
  release_slot(*ca);
  EXPECT_EQ(owner_state(reg[0].owner.load()), slot_state::free);
  EXPECT_EQ(reg[0].holds[5].load(), 0u);
  ::close(a);
  // Taken again: a new generation.
  const int c = reg.open_description();
  const auto cc = claim_slot(c, reg.slots(), kSlots, 33);
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->index, 0u);
  EXPECT_EQ(owner_generation(cc->owner), owner_generation(ca->owner) + 1);
  ::close(b);
  ::close(c);
}

TEST(Registry, AFullRegistryHasNoSlot) {
  test_registry reg;
  int fds[kSlots + 1];
  for (auto& fd : fds) fd = reg.open_description();
  for (std::uint64_t i = 0; i < kSlots; ++i)
    ASSERT_TRUE(claim_slot(fds[i], reg.slots(), kSlots, i));
  EXPECT_FALSE(claim_slot(fds[kSlots], reg.slots(), kSlots, 99));
  for (int fd : fds) ::close(fd);
}

TEST(Registry, SweepFreesOnlySlotsWhoseLockIsGone) {
  test_registry reg;
  const int writer = reg.open_description();
  const int a = reg.open_description(), b = reg.open_description();
  ASSERT_TRUE(claim_slot(a, reg.slots(), kSlots, 1));
  ASSERT_TRUE(claim_slot(b, reg.slots(), kSlots, 2));
  reg[0].lanes[3].store(7);
  reg[0].holds[9].store(0x4000);
  reg[1].holds[9].store(0x8000);
  EXPECT_EQ(sweep_dead_readers(writer, reg.slots(), kSlots), 0u);
  ::close(a);  // its owner is gone: exit, SIGKILL and exec all close it
  EXPECT_EQ(sweep_dead_readers(writer, reg.slots(), kSlots), 1u);
  EXPECT_EQ(owner_state(reg[0].owner.load()), slot_state::free);
  EXPECT_EQ(reg[0].lanes[3].load(), 0u);
  EXPECT_EQ(reg[0].holds[9].load(), 0u);
  EXPECT_EQ(owner_state(reg[1].owner.load()), slot_state::owned);
  EXPECT_EQ(reg[1].holds[9].load(), 0x8000u);
  ::close(b);
  ::close(writer);
}

TEST(Registry, ALockTestThatFailsCountsAsAlive) {
  test_registry reg;
  const int writer = reg.open_description();
  const int a = reg.open_description();
  ASSERT_TRUE(claim_slot(a, reg.slots(), kSlots, 1));
  reg[0].holds[0].store(0x40);
  ::close(a);
  auto& calls = sys();
  const auto real = calls.ofd_lock;
  calls.ofd_lock = [](int fd, int cmd, struct flock* fl) {
    if (cmd == F_OFD_GETLK) {
      errno = EMFILE;
      return -1;
    }
    return ::fcntl(fd, cmd, fl);
  };
  const auto freed = sweep_dead_readers(writer, reg.slots(), kSlots);
  calls.ofd_lock = real;
  EXPECT_EQ(freed, 0u);
  EXPECT_EQ(reg[0].holds[0].load(), 0x40u);
  EXPECT_EQ(sweep_dead_readers(writer, reg.slots(), kSlots), 1u);
  ::close(writer);
}

TEST(Registry, ANewcomerTakesOverADeadReadersSlotAndZeroesIt) {
  test_registry reg;
  const int a = reg.open_description();
  const auto ca = claim_slot(a, reg.slots(), kSlots, 1);
  ASSERT_TRUE(ca);
  reg[0].lanes[1].store(5);
  reg[0].holds[2].store(0x80);
  reg[0].overflow_epoch.store(4);
  ::close(a);  // died without releasing
  const int b = reg.open_description();
  const auto cb = claim_slot(b, reg.slots(), kSlots, 2);
  ASSERT_TRUE(cb);
  EXPECT_EQ(cb->index, 0u);
  EXPECT_EQ(owner_generation(cb->owner), owner_generation(ca->owner) + 1);
  EXPECT_EQ(reg[0].lanes[1].load(), 0u);
  EXPECT_EQ(reg[0].holds[2].load(), 0u);
  EXPECT_EQ(reg[0].overflow_epoch.load(), 0u);
  EXPECT_EQ(reg[0].pid.load(), 2u);
  ::close(b);
}

TEST(Registry, AStaleReleaseNeverErasesTheNewOwner) {
  test_registry reg;
  const int a = reg.open_description();
  const auto ca = claim_slot(a, reg.slots(), kSlots, 1);
  ASSERT_TRUE(ca);
  ::close(a);  // A lost its lock (say it exec'd), its slot was taken over...
  const int b = reg.open_description();
  const auto cb = claim_slot(b, reg.slots(), kSlots, 2);
  ASSERT_TRUE(cb && cb->index == ca->index);
  reg[0].holds[3].store(0x77);
  release_slot(*ca);  // ...and A's late clean-up must not touch B's registration
  EXPECT_EQ(reg[0].owner.load(), cb->owner);
  EXPECT_EQ(reg[0].holds[3].load(), 0x77u);
  EXPECT_EQ(reg[0].pid.load(), 2u);
  ::close(b);
}

// The writer reads a dead reader's owner word, and before it claims the slot
// for clearing a newcomer takes the slot over. Even a lock test that (wrongly)
// says "free" cannot make the sweep wipe the newcomer: its owner word has a
// new generation.
int newcomer_fd = -1;
std::optional<slot_claim> newcomer;
reader_slot* race_slots = nullptr;

TEST(Registry, ASweepRacingANewcomerLeavesTheNewcomerAlone) {
  test_registry reg;
  race_slots = reg.slots();
  const int writer = reg.open_description();
  const int a = reg.open_description();
  ASSERT_TRUE(claim_slot(a, reg.slots(), kSlots, 1));
  ::close(a);
  newcomer_fd = reg.open_description();
  auto& calls = sys();
  const auto real = calls.ofd_lock;
  calls.ofd_lock = [](int fd, int cmd, struct flock* fl) {
    if (cmd != F_OFD_GETLK) return ::fcntl(fd, cmd, fl);
    if (!newcomer) newcomer = claim_slot(newcomer_fd, race_slots, kSlots, 2);
    fl->l_type = F_UNLCK;  // a wrong "free": only the owner word protects the newcomer now
    return 0;
  };
  const auto freed = sweep_dead_readers(writer, reg.slots(), kSlots);
  calls.ofd_lock = real;
  ASSERT_TRUE(newcomer);
  EXPECT_EQ(newcomer->index, 0u);
  EXPECT_EQ(freed, 0u) << "the newcomer's slot was swept";
  EXPECT_EQ(reg[0].owner.load(), newcomer->owner);
  EXPECT_EQ(reg[0].pid.load(), 2u);
  ::close(newcomer_fd);
  ::close(writer);
}

}  // namespace
}  // namespace slither::shm::detail
