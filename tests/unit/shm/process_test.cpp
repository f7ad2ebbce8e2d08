// Fork plumbing: the generation that tells an inherited object, and the
// hooks that let readers and writers act around fork().
#include "process.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

namespace slither::shm::detail {
namespace {

TEST(Process, ForkChangesTheGeneration) {
  const std::uint64_t parent = fork_generation();
  const pid_t child = ::fork();
  if (child == 0) ::_exit(fork_generation() != parent ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(fork_generation(), parent);
}

struct recorder final : fork_aware {
  int before = 0, parent = 0, child = 0;
  void before_fork() noexcept override { ++before; }
  void after_fork_parent() noexcept override { ++parent; }
  void after_fork_child() noexcept override { ++child; }
};

TEST(Process, ForkAwareObjectsAreCalledAroundForkUntilUnregistered) {
  recorder r;
  register_fork_aware(&r);
  const pid_t child = ::fork();
  if (child == 0) ::_exit(r.before == 1 && r.child == 1 && r.parent == 0 ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "hooks in the child";
  EXPECT_EQ(r.before, 1);
  EXPECT_EQ(r.parent, 1);
  EXPECT_EQ(r.child, 0);

  unregister_fork_aware(&r);
  const pid_t again = ::fork();
  if (again == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(again, &status, 0), again);
  EXPECT_EQ(r.before, 1);
  EXPECT_EQ(r.parent, 1);
}

}  // namespace
}  // namespace slither::shm::detail
