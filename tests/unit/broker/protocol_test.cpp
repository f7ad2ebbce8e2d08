#include "slither/broker/protocol.hpp"

#include <gtest/gtest.h>

namespace slither::protocol {
namespace {

std::vector<frame> spans(const std::vector<buffer>& frames) {
  return {frames.begin(), frames.end()};
}

TEST(Protocol, HeaderRoundTrips) {
  const header h{protocol_version, message_type::compare_and_set, 0x0123456789abcdefULL};
  const auto bytes = encode_header(h);
  auto back = decode_header(bytes);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->version, protocol_version);
  EXPECT_EQ(back->type, message_type::compare_and_set);
  EXPECT_EQ(back->request_id, 0x0123456789abcdefULL);
}

TEST(Protocol, HeaderOfWrongSizeIsRejected) {
  const auto bytes = encode_header({});
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, header_size - 1}) {
    auto r = decode_header(frame(bytes.data(), n));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::protocol_error);
    EXPECT_NE(r.error().message.find("expected 16"), std::string::npos) << r.error().message;
  }
  buffer longer(bytes.begin(), bytes.end());
  longer.push_back(std::byte{0});
  EXPECT_FALSE(decode_header(longer));
}

TEST(Protocol, HeaderWithBadMagicOrReservedBytesIsRejected) {
  auto bytes = encode_header({});
  bytes[0] = std::byte{'X'};
  EXPECT_FALSE(decode_header(bytes));
  bytes = encode_header({});
  bytes[6] = std::byte{1};
  auto r = decode_header(bytes);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("reserved"), std::string::npos);
}

TEST(Protocol, RequestRoundTrips) {
  const message msg{{protocol_version, message_type::put, 7},
                    Value::map({{"store", "s"}, {"key", "k"}, {"value", Value::list({1, 2.5})}})};
  const auto frames = encode_message(msg);
  ASSERT_EQ(frames.size(), 2u);
  auto back = decode_request(spans(frames));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->head.request_id, 7u);
  EXPECT_EQ(back->body, msg.body);
  // A request is not a reply.
  auto as_reply = decode_reply(spans(frames));
  ASSERT_FALSE(as_reply);
  EXPECT_EQ(as_reply.error().code, errc::protocol_error);
}

TEST(Protocol, CompareAndEraseIsAStoreRequestWithAName) {
  const message msg{
      {protocol_version, message_type::compare_and_erase, 3},
      Value::map({{"store", "s"}, {"table", "t"}, {"key", "k"}, {"expected_version", 5}})};
  auto back = decode_request(spans(encode_message(msg)));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->head.type, message_type::compare_and_erase);
  EXPECT_TRUE(is_request(message_type::compare_and_erase));
  EXPECT_FALSE(is_notification(message_type::compare_and_erase));
  EXPECT_EQ(to_string(message_type::compare_and_erase), "compare_and_erase");
}

TEST(Protocol, ReplyRoundTripsAndIsNotARequest) {
  const auto frames = encode_message({{protocol_version, message_type::reply_ok, 9}, Value(42)});
  auto back = decode_reply(spans(frames));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->body, Value(42));
  EXPECT_FALSE(decode_request(spans(frames)));
}

TEST(Protocol, OtherVersionIsAProtocolErrorNamingBoth) {
  const auto frames = encode_message({{protocol_version + 1, message_type::ping, 1}, Value(Map{})});
  auto r = decode_request(spans(frames));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::protocol_error);
  EXPECT_NE(r.error().message.find("version 2"), std::string::npos) << r.error().message;
  // The header alone still decodes, so the broker can answer it.
  EXPECT_TRUE(decode_header(frames[0]));
}

TEST(Protocol, UnknownTypeIsRejectedButItsHeaderIsReadable) {
  auto frames = encode_message({{protocol_version, message_type::ping, 5}, Value(Map{})});
  frames[0][4] = std::byte{55};
  auto head = decode_header(frames[0]);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->request_id, 5u);
  auto r = decode_request(spans(frames));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("unknown message type 55"), std::string::npos);
}

TEST(Protocol, WrongFrameCountIsRejected) {
  auto frames = encode_message({{protocol_version, message_type::ping, 1}, Value(Map{})});
  auto one = spans(frames);
  one.pop_back();
  EXPECT_FALSE(decode_request(one));
  auto three = spans(frames);
  three.push_back(three.back());
  auto r = decode_request(three);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("got 3"), std::string::npos);
}

TEST(Protocol, RequestArgumentsMustBeAMap) {
  const auto frames = encode_message({{protocol_version, message_type::ping, 1}, Value(3)});
  auto r = decode_request(spans(frames));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::protocol_error);
}

TEST(Protocol, OversizedPayloadIsALimitError) {
  const auto frames = encode_message({{protocol_version, message_type::put, 1},
                                      Value::map({{"value", Value(std::string(5000, 'x'))}})});
  decode_limits limits;
  limits.max_message_bytes = 1000;
  auto r = decode_request(spans(frames), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
}

TEST(Protocol, GarbagePayloadIsADecodeError) {
  const auto head = encode_header({protocol_version, message_type::put, 1});
  const buffer junk(37, std::byte{0xff});
  const std::vector<frame> frames{frame(head), frame(junk)};
  auto r = decode_request(frames);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("payload of 'put'"), std::string::npos) << r.error().message;
}

TEST(Protocol, ErrorBodyRoundTrips) {
  const auto info = read_error_body(error_body(fail(errc::conflict, "version 3 found")));
  EXPECT_EQ(info.code, errc::conflict);
  EXPECT_EQ(info.message, "version 3 found");
  EXPECT_EQ(read_error_body(Value::map({{"code", 250}, {"message", "x"}})).code,
            errc::protocol_error);
  EXPECT_EQ(read_error_body(Value(1)).code, errc::protocol_error);
}

TEST(Protocol, ShuttingDownIsAKnownErrorCode) {
  const auto info = read_error_body(error_body(fail(errc::shutting_down, "broker is stopping")));
  EXPECT_EQ(info.code, errc::shutting_down);
  EXPECT_EQ(to_string(errc::shutting_down), "shutting_down");
  const auto past = static_cast<std::int64_t>(errc::shutting_down) + 1;
  EXPECT_EQ(read_error_body(Value::map({{"code", past}, {"message", "x"}})).code,
            errc::protocol_error);
}

}  // namespace
}  // namespace slither::protocol
