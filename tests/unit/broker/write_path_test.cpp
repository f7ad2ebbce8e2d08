// The write path bounds what writes may cost (bytes queued, decoded size),
// keeps large writes off the serving thread, and refuses writes meant for a
// store of another incarnation.
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
using test_support::RawPeer;
using test_support::writer_hold;

Value put_args(const std::string& key, std::size_t value_bytes) {
  return Value::map({{"store", "main"},
                     {"table", "kv"},
                     {"key", key},
                     {"value", Value(Bytes{std::string(value_bytes, 'v')})}});
}

TEST_F(BrokerTest, PendingWriteBytesAreBoundedPerClientAndInTotal) {
  auto o = options();
  o.write_queue_bytes = 1 << 20;
  o.client_write_queue_bytes = 512 << 10;
  auto& b = start(std::move(o));
  ASSERT_TRUE(b.start());
  writer_hold hold(b);
  RawPeer a(b.control_endpoint(), 2000), c(b.control_endpoint(), 2000),
      d(b.control_endpoint(), 2000);

  // One client: two 200 KiB puts fit its 512 KiB, a third does not.
  for (std::uint64_t i = 1; i <= 3; ++i) a.request(message_type::put, i, put_args("a", 200 << 10));
  auto m = a.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.request_id, 3u);
  EXPECT_EQ(error_code_of(*m), errc::busy);
  EXPECT_NE(protocol::read_error_body(m->body).message.find("client_write_queue_bytes"),
            std::string::npos);
  // All clients: 400 KiB + 400 KiB fit 1 MiB, another 400 KiB does not.
  c.request(message_type::put, 1, put_args("c", 400 << 10));
  c.request(message_type::ping, 2, Value(Map{}));
  ASSERT_EQ(c.receive()->head.request_id, 2u);  // the put is queued, not answered
  d.request(message_type::put, 1, put_args("d", 400 << 10));
  m = d.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(error_code_of(*m), errc::busy);
  EXPECT_NE(protocol::read_error_body(m->body).message.find("write_queue_bytes"),
            std::string::npos);

  hold.release();
  for (auto* peer : {&a, &a, &c}) {
    m = peer->receive();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->head.type, message_type::reply_ok);
  }
  EXPECT_TRUE(b.reader("main").contains("kv", "c").value());
  EXPECT_FALSE(b.reader("main").contains("kv", "d").value());
}

TEST_F(BrokerTest, RequestThatDecodesPastMaxDecodedBytesIsRefused) {
  auto o = options();
  o.limits.max_decoded_bytes = 4 << 20;
  auto& b = start(std::move(o));
  ASSERT_TRUE(b.start());
  auto c = connect();
  // A list of nulls: a byte each on the wire, sizeof(Value) each in memory.
  List nulls(200'000);
  auto r = c.put("main", "kv", "nulls", Value(std::move(nulls)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("max_decoded_bytes"), std::string::npos) << r.error().message;
  EXPECT_FALSE(b.reader("main").contains("kv", "nulls").value());
  EXPECT_TRUE(c.put("main", "kv", "few", Value(List(1000))));
}

TEST_F(BrokerTest, StaleIncarnationIsWriterGoneAndNothingIsApplied) {
  auto& b = start(options());
  ASSERT_TRUE(b.register_view(
      "main", "echo", view_scope::global,
      [](const Value& arg, const shm::reader&, std::string_view) { return result<Value>(arg); }));
  ASSERT_TRUE(b.start());
  RawPeer peer(b.control_endpoint(), 2000);
  peer.request(message_type::attach_info, 1, Value::map({{"store", "main"}}));
  auto info = peer.receive();
  ASSERT_TRUE(info);
  ASSERT_EQ(info->head.type, message_type::reply_ok);
  const Value* inc = info->body.find("incarnation");
  ASSERT_TRUE(inc && inc->is_int()) << info->body.to_string();
  EXPECT_EQ(static_cast<std::uint64_t>(inc->as<std::int64_t>()), b.reader("main").incarnation());
  const std::int64_t stale = inc->as<std::int64_t>() ^ 1;

  auto with = [](Value args, std::int64_t incarnation) {
    args.as_mut<Map>().insert_or_assign("incarnation", Value(incarnation));
    return args;
  };
  const Value put = Value::map({{"store", "main"}, {"table", "kv"}, {"key", "k"}, {"value", 1}});
  const std::pair<message_type, Value> requests[] = {
      {message_type::put, put},
      {message_type::put_many, Value::map({{"store", "main"},
                                           {"table", "kv"},
                                           {"entries", Value::list({Value::list({"k", 1})})}})},
      {message_type::erase, Value::map({{"store", "main"}, {"table", "kv"}, {"key", "k"}})},
      {message_type::compare_and_set, Value::map({{"store", "main"},
                                                  {"table", "kv"},
                                                  {"key", "k"},
                                                  {"expected_version", 0},
                                                  {"value", 1}})},
      {message_type::compare_and_erase,
       Value::map({{"store", "main"}, {"table", "kv"}, {"key", "k"}, {"expected_version", 0}})},
      {message_type::clear, Value::map({{"store", "main"}, {"table", "kv"}})},
      {message_type::call_view, Value::map({{"store", "main"}, {"view", "echo"}, {"arg", 1}})},
  };
  std::uint64_t id = 10;
  for (const auto& [type, args] : requests) {
    peer.request(type, ++id, with(args, stale));
    auto m = peer.receive();
    ASSERT_TRUE(m) << protocol::to_string(type);
    EXPECT_EQ(error_code_of(*m), errc::writer_gone) << protocol::to_string(type);
    EXPECT_NE(protocol::read_error_body(m->body).message.find("re-created by a restarted broker"),
              std::string::npos);
  }
  EXPECT_EQ(b.reader("main").size("kv").value(), 0u);

  // The store's own incarnation, or none at all, is served.
  peer.request(message_type::put, ++id, with(put, inc->as<std::int64_t>()));
  EXPECT_EQ(peer.receive()->head.type, message_type::reply_ok);
  peer.request(message_type::put, ++id, put);
  EXPECT_EQ(peer.receive()->head.type, message_type::reply_ok);
  auto not_int = put;
  not_int.as_mut<Map>().insert_or_assign("incarnation", Value("x"));
  peer.request(message_type::put, ++id, not_int);
  EXPECT_EQ(error_code_of(*peer.receive()), errc::invalid_argument);
}

}  // namespace
}  // namespace slither
