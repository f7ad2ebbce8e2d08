// broker_options::parent_pid: refused unless it names an ancestor; the watch
// breaks when a process on the line up to it dies.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>

#include "broker_fixture.hpp"
#include "parent_watch.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
using detail::parent_watch;
using test_support::BrokerTest;

TEST_F(BrokerTest, AParentPidThatIsNotAnAncestorIsRefusedNamingBothPids) {
  for (const std::int64_t pid : {std::int64_t{::getpid()}, std::int64_t{0x3fffffff}}) {
    auto o = options();
    o.parent_pid = pid;
    auto r = start(std::move(o)).start();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    const std::string& m = r.error().message;
    EXPECT_NE(m.find("parent_pid " + std::to_string(pid) + " is not the parent"), std::string::npos)
        << m;
    EXPECT_NE(m.find("its parent pid " + std::to_string(::getppid())), std::string::npos) << m;
    EXPECT_FALSE(std::filesystem::exists(options().runtime_dir)) << "made before the refusal";
  }
  auto o = options();
  o.parent_pid = -4;
  auto r = start(std::move(o)).start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("parent_pid -4 is not a process id"), std::string::npos)
      << r.error().message;
}

TEST_F(BrokerTest, TheParentOrAnAncestorIsAccepted) {
  auto o = options();
  o.parent_pid = ::getppid();
  auto& b = start(std::move(o));
  auto r = b.start();
  ASSERT_TRUE(r) << r.error().message;
  b.stop();
  // pid 1 is everyone's ancestor, through whatever stands between.
  EXPECT_TRUE(parent_watch::start(1));
}

// Reads one byte from `fd` within `timeout`; 0 if none came.
char read_within(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  char c = 0;
  if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1 && ::read(fd, &c, 1) == 1) return c;
  return 0;
}

TEST(ParentWatch, BreaksWhenAProcessOnTheLineDiesNotBefore) {
  // This process T forks M, M forks W, W forks B: B watches W (its parent) and
  // T (through W and M), says whether both hold, then T kills M. W lives on,
  // so B keeps its parent: only W's new parent shows that T is no longer B's
  // ancestor. B then says which watches hold, and ends W and itself.
  const pid_t t = ::getpid();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t m = ::fork();
  ASSERT_GE(m, 0);
  if (m == 0) {
    if (::fork() == 0) {
      if (::fork() == 0) {
        const pid_t w = ::getppid();
        auto direct = parent_watch::start(w);
        auto through = parent_watch::start(t);
        char c = direct && through && direct->holds() && through->holds() ? 'h' : 'x';
        (void)::write(fds[1], &c, 1);
        if (c == 'h') {
          for (int i = 0; i < 250 && through->holds(); ++i) ::usleep(20'000);
          c = through->holds() ? 'x' : direct->holds() ? 'b' : 'w';
          (void)::write(fds[1], &c, 1);
        }
        ::kill(w, SIGKILL);
        ::_exit(0);
      }
    }
    for (;;) ::pause();
  }
  ::close(fds[1]);
  const char held = read_within(fds[0], 10s);
  ::kill(m, SIGKILL);
  int status = 0;
  ::waitpid(m, &status, 0);
  const char broke = read_within(fds[0], 10s);
  ::close(fds[0]);
  EXPECT_EQ(held, 'h') << "a watch of the parent or of an ancestor did not hold";
  EXPECT_NE(broke, 'x') << "the watch of T held after M, between them, died";
  EXPECT_NE(broke, 'w') << "the watch of the living parent broke";
  EXPECT_EQ(broke, 'b');
}

// The watched process is still an ancestor after a process between them dies
// when the orphan is given to it (a subreaper) or to one of its descendants:
// a watch of pid 1, or of a subreaper, holds while that process lives.
TEST(ParentWatch, HoldsWhileTheWatchedProcessIsStillAnAncestor) {
  // This process T forks S, a subreaper; S forks M, M forks B. B watches S
  // and pid 1 through M, then kills M and, once S's child, says whether both
  // watches still hold.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t s = ::fork();
  ASSERT_GE(s, 0);
  if (s == 0) {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    const pid_t subreaper = ::getpid();
    if (::fork() == 0) {
      if (::fork() == 0) {
        auto watched = parent_watch::start(subreaper);
        auto init = parent_watch::start(1);
        char c = watched && init && watched->holds() && init->holds() ? 'h' : 'x';
        (void)::write(fds[1], &c, 1);
        ::kill(::getppid(), SIGKILL);
        for (int i = 0; i < 250 && ::getppid() != subreaper; ++i) ::usleep(20'000);
        c = ::getppid() != subreaper ? 'p' : !watched->holds() ? 's' : !init->holds() ? '1' : 'h';
        (void)::write(fds[1], &c, 1);
        ::_exit(0);
      }
      for (;;) ::pause();
    }
    // Reaps M, then B (given to S, a subreaper).
    while (::wait(nullptr) > 0) {
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  const char held = read_within(fds[0], 10s);
  const char after = read_within(fds[0], 10s);
  ::close(fds[0]);
  ::kill(s, SIGKILL);
  ::waitpid(s, nullptr, 0);
  EXPECT_EQ(held, 'h') << "a watch of the subreaper or of pid 1 did not hold";
  EXPECT_NE(after, 'p') << "B was not given to the subreaper";
  EXPECT_NE(after, 's') << "the watch of the subreaper broke while it was B's parent";
  EXPECT_NE(after, '1') << "the watch of pid 1 broke while pid 1 lived";
  EXPECT_EQ(after, 'h');
}

}  // namespace
}  // namespace slither
