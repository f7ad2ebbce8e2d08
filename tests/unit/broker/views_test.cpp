// Views: slow views of one store leave other stores' views alone, a call whose
// caller gave up is not run, and a stop does not wait forever for a view.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <future>
#include <thread>

#include "broker_fixture.hpp"
#include "log_tap.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
using protocol::message_type;
using test_support::BrokerTest;
using test_support::error_code_of;
using test_support::RawPeer;
using test_support::store_def;
using clock = std::chrono::steady_clock;

// A gate views wait on; opened by the test (or its end).
struct gate {
  std::promise<void> open_;
  std::shared_future<void> opened = open_.get_future().share();
  bool is_open = false;
  void open() {
    if (!is_open) open_.set_value();
    is_open = true;
  }
  ~gate() { open(); }
};

view_fn blocking_view(std::shared_ptr<gate> g, std::shared_ptr<std::atomic<int>> runs) {
  return [g, runs](const Value&, const shm::reader&, std::string_view) -> result<Value> {
    ++*runs;
    g->opened.wait();
    return Value("done");
  };
}

TEST_F(BrokerTest, SlowViewsOfOneStoreDoNotHoldUpAnotherStoresViews) {
  auto o = options();
  o.stores.push_back(store_def("other"));
  o.view_timeout = 5s;
  auto& b = start(std::move(o));
  auto g = std::make_shared<gate>();
  auto runs = std::make_shared<std::atomic<int>>(0);
  ASSERT_TRUE(b.register_view("main", "slow", view_scope::global, blocking_view(g, runs)));
  ASSERT_TRUE(b.register_view("other", "quick", view_scope::global,
                              [](const Value&, const shm::reader&, std::string_view) {
                                return result<Value>(Value("quick"));
                              }));
  ASSERT_TRUE(b.start());
  RawPeer slow(b.control_endpoint(), 10000);
  for (std::uint64_t i = 1; i <= 3; ++i) {
    slow.request(message_type::call_view, i, Value::map({{"store", "main"}, {"view", "slow"}}));
  }
  while (runs->load() < 2) std::this_thread::sleep_for(1ms);
  auto c = connect(3s);
  EXPECT_EQ(c.call_view("other", "quick", Value{}).value(), Value("quick"));
  // At most two views of one store run at once: the third waits its turn.
  EXPECT_EQ(runs->load(), 2);
  g->open();
  for (int i = 0; i < 3; ++i) {
    auto m = slow.receive();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->head.type, message_type::reply_ok);
  }
  EXPECT_EQ(runs->load(), 3);
}

TEST_F(BrokerTest, ACallWhoseCallerTimedOutIsDroppedNotRun) {
  auto o = options();
  o.view_timeout = 200ms;
  o.view_concurrency = 1;
  auto& b = start(std::move(o));
  auto g = std::make_shared<gate>();
  auto runs = std::make_shared<std::atomic<int>>(0);
  ASSERT_TRUE(b.register_view("main", "slow", view_scope::global, blocking_view(g, runs)));
  ASSERT_TRUE(b.start());
  RawPeer peer(b.control_endpoint(), 5000);
  peer.request(message_type::call_view, 1, Value::map({{"store", "main"}, {"view", "slow"}}));
  while (runs->load() < 1) std::this_thread::sleep_for(1ms);
  peer.request(message_type::call_view, 2, Value::map({{"store", "main"}, {"view", "slow"}}));
  for (std::uint64_t id : {1, 2}) {
    auto m = peer.receive();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->head.request_id, id);
    EXPECT_EQ(error_code_of(*m), errc::timeout);
  }
  g->open();
  // The running one returns; the queued one, whose caller has had its
  // timeout, must not run at all.
  auto c = connect();
  for (const auto deadline = clock::now() + 2s; clock::now() < deadline;) {
    if (c.stats().value()["views_in_flight"] == Value(0)) break;
  }
  EXPECT_EQ(c.stats().value()["views_in_flight"], Value(0));
  EXPECT_EQ(runs->load(), 1);
}

TEST_F(BrokerTest, StopAbandonsAViewThatDoesNotReturnAndSaysSo) {
  test_support::default_logger_tap tap;

  auto o = options();
  o.view_timeout = 10s;
  o.stop_grace = 200ms;
  auto& b = start(std::move(o));
  auto g = std::make_shared<gate>();
  auto runs = std::make_shared<std::atomic<int>>(0);
  ASSERT_TRUE(b.register_view("main", "stuck", view_scope::global, blocking_view(g, runs)));
  ASSERT_TRUE(b.start());
  RawPeer peer(b.control_endpoint(), 5000);
  peer.request(message_type::call_view, 1, Value::map({{"store", "main"}, {"view", "stuck"}}));
  while (runs->load() < 1) std::this_thread::sleep_for(1ms);

  const auto t0 = clock::now();
  auto stopping = std::async(std::launch::async, [&] { b.stop(); });
  const bool stopped = stopping.wait_for(5s) == std::future_status::ready;
  g->open();  // lets the abandoned view's thread finish either way
  ASSERT_TRUE(stopped) << "stop() waited for a view that does not return";
  EXPECT_LT(clock::now() - t0, 3s);
  // Its caller was told.
  auto m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(error_code_of(*m), errc::shutting_down);
  EXPECT_TRUE(tap.saw("abandoned"));
}

TEST_F(BrokerTest, ViewResultOverMaxReplyBytesIsALimitError) {
  auto o = options();
  o.max_reply_bytes = 1 << 20;
  auto& b = start(std::move(o));
  ASSERT_TRUE(b.register_view("main", "big", view_scope::global,
                              [](const Value& arg, const shm::reader&, std::string_view) {
                                return result<Value>(
                                    Value(Bytes{std::string(arg.as<std::int64_t>(), 'x')}));
                              }));
  ASSERT_TRUE(b.start());
  auto c = connect();
  auto big = c.call_view("main", "big", Value(std::int64_t{2} << 20));
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, errc::limit_exceeded);
  EXPECT_NE(big.error().message.find("max_reply_bytes"), std::string::npos);
  EXPECT_TRUE(c.call_view("main", "big", Value(std::int64_t{1000})));
}

TEST_F(BrokerTest, LargeViewArgumentsAreServed) {
  auto& b = start(options());
  ASSERT_TRUE(b.register_view("main", "size", view_scope::global,
                              [](const Value& arg, const shm::reader&, std::string_view) {
                                return result<Value>(
                                    Value(static_cast<std::int64_t>(arg.as<Bytes>().data.size())));
                              }));
  ASSERT_TRUE(b.start());
  auto c = connect();
  // Over inline_write_bytes: decoded on a view thread, then called as usual.
  EXPECT_EQ(c.call_view("main", "size", Value(Bytes{std::string(1 << 20, 'a')})).value(),
            Value(std::int64_t{1} << 20));
  auto missing = c.call_view("main", "nope", Value(Bytes{std::string(1 << 20, 'a')}));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
}

}  // namespace
}  // namespace slither
