// broker_options::log: an embedding program gets the broker's log lines (from
// the caller's thread and from the serving thread) instead of spdlog's
// default logger, at the level it asks for, each broker its own.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "broker_fixture.hpp"
#include "log_tap.hpp"

namespace slither::test_support {
namespace {

struct captured_line {
  log_level level;
  std::string text;
  std::thread::id thread;
};

// What a broker's log callback received.
struct capture {
  std::mutex mutex;
  std::vector<captured_line> lines;

  log_fn fn() {
    return [this](log_level level, std::string_view text) {
      std::lock_guard lock(mutex);
      lines.push_back({level, std::string(text), std::this_thread::get_id()});
    };
  }
  std::vector<captured_line> containing(std::string_view part) {
    std::lock_guard lock(mutex);
    std::vector<captured_line> found;
    for (const auto& l : lines) {
      if (l.text.find(part) != std::string::npos) found.push_back(l);
    }
    return found;
  }
};

TEST_F(BrokerTest, LogCallbackGetsTheBrokersLinesInsteadOfTheDefaultLogger) {
  test_support::default_logger_tap tap(spdlog::level::trace);
  capture got;
  auto o = options();
  o.log = got.fn();
  o.log_min_level = log_level::debug;
  auto& b = start(std::move(o));
  ASSERT_TRUE(b.start());
  ASSERT_TRUE(connect().ping());
  b.stop();

  const auto serving = got.containing("broker for namespace '" + ns_ + "' serving");
  ASSERT_EQ(serving.size(), 1u);
  EXPECT_EQ(serving[0].level, log_level::info);
  EXPECT_EQ(got.containing("broker for namespace '" + ns_ + "' stopped").size(), 1u);
  // Requests are logged (at debug) on the serving thread, not the caller's.
  const auto requests = got.containing("'ping'");
  ASSERT_FALSE(requests.empty());
  EXPECT_EQ(requests[0].level, log_level::debug);
  EXPECT_NE(requests[0].thread, std::this_thread::get_id());
  // Nothing of this broker's went to the default logger.
  EXPECT_FALSE(tap.saw(ns_));
  EXPECT_FALSE(tap.saw("'ping'"));
}

TEST_F(BrokerTest, LogCallbackGetsOnlyLinesAtItsLevelAndAbove) {
  capture got;
  auto o = options();
  o.log = got.fn();
  o.log_min_level = log_level::warn;
  // A CURVE key on an ipc endpoint is ignored, with a warning.
  o.curve_secret_key_file = dir_ / "unused.key";
  auto& b = start(std::move(o));
  ASSERT_TRUE(b.start());
  ASSERT_TRUE(connect().ping());
  b.stop();
  EXPECT_EQ(got.containing("CURVE keys apply to tcp endpoints only").size(), 1u);
  EXPECT_TRUE(got.containing("'ping'").empty());
  EXPECT_TRUE(got.containing("serving").empty());
  std::lock_guard lock(got.mutex);
  for (const auto& l : got.lines) {
    EXPECT_GE(static_cast<int>(l.level), static_cast<int>(log_level::warn)) << l.text;
  }
}

TEST_F(BrokerTest, TwoBrokersInOneProcessLogToTheirOwnCallbacks) {
  capture first, second;
  auto o1 = options();
  o1.log = first.fn();
  Broker one(std::move(o1));
  auto o2 = options();
  o2.ns = ns_ + "-b";
  o2.runtime_dir = dir_.string() + "-b";
  o2.log = second.fn();
  Broker two(std::move(o2));
  ASSERT_TRUE(one.start());
  ASSERT_TRUE(two.start());
  one.stop();
  two.stop();
  EXPECT_EQ(first.containing("'" + ns_ + "' serving").size(), 1u);
  EXPECT_EQ(second.containing("'" + ns_ + "-b' serving").size(), 1u);
  EXPECT_TRUE(first.containing("'" + ns_ + "-b'").empty());
  EXPECT_TRUE(second.containing("'" + ns_ + "'").empty());
}

}  // namespace
}  // namespace slither::test_support
