// Signals: the first SIGTERM/SIGINT stops gracefully, a second one at once:
// queued writes are answered shutting_down and running views abandoned.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <thread>

#include "broker_fixture.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
using protocol::message_type;
using test_support::BrokerTest;
using test_support::error_code_of;
using test_support::RawPeer;
using test_support::writer_hold;
using clock = std::chrono::steady_clock;

TEST_F(BrokerTest, ASecondSignalStopsAtOnce) {
  for (const int sig : {SIGTERM, SIGINT}) {
    auto o = options();
    o.view_timeout = 60s;
    o.stop_grace = 60s;
    auto& b = start(std::move(o));
    std::promise<void> open_view;
    auto view_gate = open_view.get_future().share();
    std::atomic<int> view_runs{0};
    ASSERT_TRUE(b.register_view("main", "stuck", view_scope::global,
                                [&view_runs, view_gate](const Value&, const shm::reader&,
                                                        std::string_view) -> result<Value> {
                                  ++view_runs;
                                  view_gate.wait();
                                  return Value{};
                                }));
    b.handle_signals(true);
    ASSERT_TRUE(b.start());

    // A write holds the writer, a client's put waits behind it, a view hangs.
    writer_hold held(b);
    RawPeer peer(b.control_endpoint(), 10000);
    peer.request(message_type::put, 1,
                 Value::map({{"store", "main"}, {"table", "kv"}, {"key", "k"}, {"value", 1}}));
    peer.request(message_type::call_view, 2, Value::map({{"store", "main"}, {"view", "stuck"}}));
    while (view_runs.load() < 1) std::this_thread::sleep_for(1ms);

    auto waiting = std::async(std::launch::async, [&] { b.wait(); });
    ASSERT_EQ(std::raise(sig), 0);
    // The graceful stop waits for the writer and the view...
    EXPECT_EQ(waiting.wait_for(300ms), std::future_status::timeout);
    const auto t0 = clock::now();
    ASSERT_EQ(std::raise(sig), 0);
    // ... a second signal answers the queued put at once; the running write
    // still finishes, and the view is abandoned.
    auto m = peer.receive();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->head.request_id, 1u);
    EXPECT_EQ(error_code_of(*m), errc::shutting_down);
    held.release();
    const bool stopped = waiting.wait_for(5s) == std::future_status::ready;
    open_view.set_value();
    ASSERT_TRUE(stopped) << "a second signal did not stop the broker";
    EXPECT_LT(clock::now() - t0, 5s);
    m = peer.receive();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->head.request_id, 2u);
    EXPECT_EQ(error_code_of(*m), errc::shutting_down);
    broker_.reset();
  }
}

TEST_F(BrokerTest, ItsThreadsAreNamedAfterTheirWork) {
  // So that a profile, or the run delay in /proc/<pid>/task/*/schedstat,
  // tells the writer from the serving thread.
  start();
  // Each thread names itself when it starts, which may be after start() returns.
  auto names = [] {
    std::set<std::string> out;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      std::getline(comm, name);
      out.insert(name);
    }
    return out;
  };
  const auto deadline = clock::now() + 10s;
  while (!(names().contains("slither-writer") && names().contains("slither-serve")) &&
         clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(names().contains("slither-writer"));
  EXPECT_TRUE(names().contains("slither-serve"));
}

}  // namespace
}  // namespace slither
