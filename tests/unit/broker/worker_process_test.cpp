// Worker processes: spawning, output, exit statuses, the parent-death
// signal, and the records a later broker uses to kill a dead one's workers.
#include "worker_process.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

namespace slither::detail {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

int wait_status(child_process& c, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (const auto st = c.try_reap()) return *st;
    std::this_thread::sleep_for(5ms);
  }
  ADD_FAILURE() << "the child did not exit";
  return -1;
}

std::string read_all(int fd) {
  std::string out;
  char buf[256];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) break;
    const auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

spawn_spec shell(const std::string& script) {
  return {{"sh", "-c", script}, {"PATH=/usr/bin:/bin", "GREETING=hello"}, {}};
}

TEST(WorkerProcess, RunsWithItsEnvironmentAndCapturesItsOutput) {
  auto c = child_process::spawn(shell("echo $GREETING; echo oops >&2; exit 3")).value();
  EXPECT_GT(c.pid(), 0);
  const int out = c.take_output();
  ASSERT_GE(out, 0);
  EXPECT_EQ(read_all(out), "hello\noops\n");
  ::close(out);
  const int status = wait_status(c);
  EXPECT_EQ(describe_exit(status), "exited with status 3");
  EXPECT_FALSE(c.try_reap()) << "reaped once";
}

TEST(WorkerProcess, NoDescriptorLeaksIntoTheChild) {
  const int mine = ::open("/dev/null", O_RDONLY);  // not close-on-exec on purpose
  ASSERT_GE(mine, 3);
  auto c = child_process::spawn(shell("ls /proc/self/fd | wc -l")).value();
  const int out = c.take_output();
  // stdin, stdout, stderr, and the descriptor ls opens to list them.
  EXPECT_EQ(read_all(out), "4\n");
  ::close(out);
  ::close(mine);
  wait_status(c);
}

TEST(WorkerProcess, AMissingProgramIsNamed) {
  auto c = child_process::spawn({{"no-such-program-xyz"}, {}, {}});
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::not_found);
  EXPECT_NE(c.error().message.find("no-such-program-xyz"), std::string::npos);
  EXPECT_FALSE(find_program("/nonexistent/bin/python3"));
  EXPECT_TRUE(find_program("sh"));
}

TEST(WorkerProcess, AKilledChildSaysBySignal) {
  auto c = child_process::spawn(shell("sleep 60")).value();
  c.signal(SIGKILL);
  const int status = wait_status(c);
  EXPECT_NE(describe_exit(status).find("killed by signal 9"), std::string::npos);
}

TEST(WorkerProcess, ItsExitDescriptorBecomesReadable) {
  auto c = child_process::spawn(shell("exit 0")).value();
  if (c.exit_fd() < 0) GTEST_SKIP() << "no pidfd on this kernel";
  pollfd p{c.exit_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 5000), 1);
  EXPECT_TRUE(c.try_reap());
}

TEST(WorkerProcess, DroppingAChildKillsAndReapsIt) {
  pid_t pid = 0;
  {
    auto c = child_process::spawn(shell("sleep 60")).value();
    pid = c.pid();
  }
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, WNOHANG), -1) << "already reaped, no zombie";
}

TEST(WorkerProcess, RecordsLetTheNextBrokerKillOnlyWhatItsPredecessorStarted) {
  const fs::path dir = fs::temp_directory_path() / ("slither-wp-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  worker_records records(dir);
  auto ours = child_process::spawn(shell("sleep 60")).value();
  auto reused = child_process::spawn(shell("sleep 60")).value();
  records.add(ours.pid());
  records.add(reused.pid());
  // A record whose start time no longer matches belongs to a reused pid.
  std::ofstream(dir / "workers" / std::to_string(reused.pid())) << "1\n";
  EXPECT_EQ(records.kill_leftovers(), 1u);
  const int status = wait_status(ours);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_FALSE(reused.try_reap()) << "left alone";
  EXPECT_FALSE(fs::exists(dir / "workers"));
  records.add(reused.pid());
  records.remove(reused.pid());
  records.close();
  EXPECT_FALSE(fs::exists(dir / "workers"));
  fs::remove_all(dir);
}

TEST(WorkerProcess, StartTimesTellProcessesApart) {
  EXPECT_TRUE(process_start_time(::getpid()));
  EXPECT_FALSE(process_start_time(0x3fffffff));
  const auto self = read_process_stat(::getpid());
  ASSERT_TRUE(self);
  EXPECT_EQ(self->ppid, ::getppid());
  EXPECT_EQ(self->start_time, process_start_time(::getpid()));
}

// A command name (field 2, up to 15 bytes) may hold any byte but NUL: spaces,
// parentheses, fields of its own, and a newline, which /proc prints as is.
TEST(WorkerProcess, AnyCommandNameLeavesTheStatFieldsReadable) {
  for (const char* name : {"a) b (c", "x) Z 1 (", "a)\n) Z 1 2 (", "\n", ")\n)"}) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::prctl(PR_SET_NAME, name);
      (void)::write(ready[1], "r", 1);
      for (;;) ::pause();
    }
    ::close(ready[1]);
    char c = 0;
    ASSERT_EQ(::read(ready[0], &c, 1), 1);
    ::close(ready[0]);
    const auto st = read_process_stat(child);
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ASSERT_TRUE(st) << "command name '" << name << "'";
    EXPECT_EQ(st->ppid, ::getpid()) << "command name '" << name << "'";
    EXPECT_GT(st->start_time, 0u) << "command name '" << name << "'";
  }
}

}  // namespace
}  // namespace slither::detail
