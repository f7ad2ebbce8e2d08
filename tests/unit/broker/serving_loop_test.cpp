// The serving loop answers every request, never repeats a request's bulk in
// its errors, and keeps answering while it stops.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "broker_fixture.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
using protocol::message_type;
using test_support::BrokerTest;
using test_support::error_code_of;
using test_support::header_frame;
using test_support::RawPeer;
using test_support::writer_hold;

TEST_F(BrokerTest, MessagesWithOtherThanTwoFramesAreAnsweredWithTheirRequestId) {
  auto& b = start();
  RawPeer peer(b.control_endpoint());
  const auto ping = protocol::encode_message(
      {{protocol::protocol_version, message_type::ping, 21}, Value(Map{})});
  auto frames = ping;
  for (int i = 0; i < 3; ++i) frames.push_back(buffer(1024, std::byte{7}));
  peer.send(frames);
  auto m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.request_id, 21u);
  EXPECT_EQ(error_code_of(*m), errc::protocol_error);
  EXPECT_NE(protocol::read_error_body(m->body).message.find("got 5"), std::string::npos);

  peer.send({header_frame(message_type::ping, 22)});
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.request_id, 22u);
  EXPECT_EQ(error_code_of(*m), errc::protocol_error);

  peer.send(ping);
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.type, message_type::reply_ok);
}

TEST_F(BrokerTest, ErrorRepliesNeverRepeatTheRequestsBulk) {
  start();
  auto c = connect();
  const std::string huge(1 << 20, 'n');
  // A name the broker quotes, and one the store quotes.
  auto no_store = c.put(huge, "kv", "k", Value(1));
  ASSERT_FALSE(no_store);
  EXPECT_EQ(no_store.error().code, errc::not_found);
  EXPECT_LT(no_store.error().message.size(), 1024u) << no_store.error().message.substr(0, 200);
  EXPECT_NE(no_store.error().message.find("(1048576 bytes)"), std::string::npos);
  auto no_table = c.put("main", huge, "k", Value(1));
  ASSERT_FALSE(no_table);
  EXPECT_EQ(no_table.error().code, errc::not_found);
  EXPECT_LT(no_table.error().message.size(), 1024u);
  auto no_view = c.call_view("main", huge, Value{});
  ASSERT_FALSE(no_view);
  EXPECT_LT(no_view.error().message.size(), 1024u);
}

TEST_F(BrokerTest, RequestsThatArriveWhileTheBrokerStopsAreAnsweredShuttingDown) {
  auto& b = start();
  auto c = connect();
  // The writer is busy, so the stop waits for it; meanwhile requests arrive.
  writer_hold held(b);
  RawPeer queued(b.control_endpoint(), 5000);
  queued.request(message_type::put, 1,
                 Value::map({{"store", "main"}, {"table", "kv"}, {"key", "q"}, {"value", 1}}));
  // Answered after the put was taken in (one connection is read in order).
  queued.request(message_type::ping, 2, Value(Map{}));
  auto pong = queued.receive();
  ASSERT_TRUE(pong);
  EXPECT_EQ(pong->head.request_id, 2u);
  auto stopping = std::async(std::launch::async, [&] { b.stop(); });

  // Until the stop has begun, a request may still be queued; from then on
  // it is refused, with a reply that says why.
  std::optional<error_info> refused;
  for (const auto deadline = std::chrono::steady_clock::now() + 10s;
       !refused && std::chrono::steady_clock::now() < deadline;) {
    auto r = c.ping();
    if (!r) refused = r.error();
  }
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code, errc::shutting_down) << refused->message;
  auto put = c.put("main", "kv", "late", Value(2));
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, errc::shutting_down);

  held.release();
  // The write queued before the stop was applied and answered.
  auto m = queued.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.request_id, 1u);
  EXPECT_EQ(m->head.type, message_type::reply_ok);
  ASSERT_EQ(stopping.wait_for(10s), std::future_status::ready);
}

}  // namespace
}  // namespace slither
