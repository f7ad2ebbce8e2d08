// Liveness checks: a reused pid (other start time) or a zombie is not alive.
#include "process.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

namespace slither::shm::detail {
namespace {

TEST(Process, SelfIsAliveOnlyWithItsOwnStartTime) {
  const auto pid = static_cast<std::uint64_t>(::getpid());
  const std::uint64_t start = self_start_time();
  ASSERT_NE(start, 0u);
  EXPECT_EQ(process_start_time(pid), start);
  EXPECT_TRUE(process_alive(pid, start));
  EXPECT_TRUE(process_alive(pid, 0));               // start time unknown: pid only
  EXPECT_FALSE(process_alive(pid, start + 12345));  // same pid, another process
  EXPECT_FALSE(process_alive(0, 0));
}

TEST(Process, ZombiesAndReapedProcessesAreDead) {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  const auto pid = static_cast<std::uint64_t>(child);
  // Wait until the child has exited but is not reaped: a zombie.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool zombie = false;
  while (!zombie && std::chrono::steady_clock::now() < deadline) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto paren = line.rfind(')');
    zombie = paren != std::string::npos && line.compare(paren, 3, ") Z") == 0;
    if (!zombie) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(zombie);
  EXPECT_FALSE(process_start_time(pid).has_value());
  EXPECT_FALSE(process_alive(pid, 0));
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_FALSE(process_alive(pid, 0));
}

TEST(Process, ForkChangesTheGeneration) {
  const std::uint64_t parent = fork_generation();
  const pid_t child = ::fork();
  if (child == 0) ::_exit(fork_generation() != parent ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(fork_generation(), parent);
}

}  // namespace
}  // namespace slither::shm::detail
