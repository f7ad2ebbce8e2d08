// The writer lock: one writer per store name, its liveness as others see it.
#include "writer_lock.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::detail {
namespace {

using testing::unique_ns;

TEST(WriterLock, ASecondWriterIsRefusedUntilTheFirstReleases) {
  const std::string ns = unique_ns("lock");
  auto first = writer_lock::acquire(ns, "st");
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_TRUE(first->record(42));
  auto second = writer_lock::acquire(ns, "st");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::already_exists);
  EXPECT_NE(second.error().message.find("pid " + std::to_string(::getpid())), std::string::npos)
      << second.error().message;
  first->release();
  first->release();  // safe twice
  const int fd = ::shm_open(lock_name(ns, "st").c_str(), O_RDONLY, 0);
  EXPECT_LT(fd, 0) << "release unlinks the lock object";
  auto third = writer_lock::acquire(ns, "st");
  EXPECT_TRUE(third) << third.error().message;
}

TEST(WriterLock, TheLockObjectIsOwnerOnly) {
  const std::string ns = unique_ns("lockmode");
  const std::string name = lock_name(ns, "st");
  // Left behind with a loose mode (by a dead writer, say): tightened on acquire.
  const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fchmod(fd, 0666), 0);
  auto lock = writer_lock::acquire(ns, "st");
  ASSERT_TRUE(lock) << lock.error().message;
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ::close(fd);
}

TEST(WriterLock, ALockObjectOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make an object of another user";
  const std::string ns = unique_ns("lockowner");
  const std::string name = lock_name(ns, "st");
  const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fchown(fd, 12345, 12345), 0);
  ::close(fd);
  auto lock = writer_lock::acquire(ns, "st");
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().code, errc::io_error);
  EXPECT_NE(lock.error().message.find("uid 12345"), std::string::npos) << lock.error().message;
  ::shm_unlink(name.c_str());
}

TEST(WriterLock, CheckWriterNeedsPositiveEvidenceOfDeath) {
  const std::string ns = unique_ns("lockcheck");
  const uid_t me = ::geteuid();
  EXPECT_EQ(check_writer(ns, "st", 42, me), writer_seen::gone) << "no lock object at all";
  auto lock = writer_lock::acquire(ns, "st");
  ASSERT_TRUE(lock);
  ASSERT_TRUE(lock->record(42));
  EXPECT_EQ(check_writer(ns, "st", 42, me), writer_seen::alive);
  EXPECT_EQ(check_writer(ns, "st", 43, me), writer_seen::gone) << "another store's writer";

  // The writer dies without releasing: the object stays, its lock does not.
  const pid_t child = ::fork();
  if (child == 0) {
    lock->forget();  // a fork child drops its copy; the parent's lock stays
    ::_exit(check_writer(ns, "st", 42, me) == writer_seen::alive ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(check_writer(ns, "st", 42, me), writer_seen::alive);
  lock->forget();
  EXPECT_EQ(check_writer(ns, "st", 42, me), writer_seen::gone);
  // The next writer reuses the dead one's object.
  auto next = writer_lock::acquire(ns, "st");
  ASSERT_TRUE(next) << next.error().message;
  ASSERT_TRUE(next->record(7));
  EXPECT_EQ(check_writer(ns, "st", 42, me), writer_seen::gone);
  EXPECT_EQ(check_writer(ns, "st", 7, me), writer_seen::alive);
}

}  // namespace
}  // namespace slither::shm::detail
