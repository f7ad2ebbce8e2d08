// The worker wire protocol: headers, message shapes, and the small frames.
#include "worker_protocol.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace slither::worker_protocol {
namespace {

std::string message_of(const result<header>& r) {
  return r ? std::string() : r.error().message;
}

header full_header(message_type type) {
  header h;
  h.type = type;
  h.worker = 0x0102030405060708ULL;
  h.job = 9;
  h.batch = 0xfedcba9876543210ULL;
  h.attempt = 3;
  h.count = 64;
  h.aux = 123456789;
  return h;
}

std::vector<frame> frames_with(const std::array<std::byte, header_size>& head, std::size_t extra) {
  static const std::vector<std::byte> empty;
  std::vector<frame> out{frame(head.data(), head.size())};
  for (std::size_t i = 0; i < extra; ++i) out.emplace_back(empty.data(), 0);
  return out;
}

TEST(WorkerProtocol, HeaderRoundTripsEveryField) {
  const auto bytes = encode_header(full_header(message_type::batch));
  auto h = decode_message(frames_with(bytes, 2), direction::to_worker);
  ASSERT_TRUE(h) << message_of(h);
  EXPECT_EQ(h->type, message_type::batch);
  EXPECT_EQ(h->worker, 0x0102030405060708ULL);
  EXPECT_EQ(h->job, 9u);
  EXPECT_EQ(h->batch, 0xfedcba9876543210ULL);
  EXPECT_EQ(h->attempt, 3u);
  EXPECT_EQ(h->count, 64u);
  EXPECT_EQ(h->aux, 123456789u);
  EXPECT_EQ(bytes[0], std::byte{'S'});
  EXPECT_EQ(bytes[1], std::byte{'W'});
}

TEST(WorkerProtocol, EachTypeHasItsFramesAndItsDirection) {
  struct shape {
    message_type type;
    std::size_t extra;
    bool to_worker;
    bool to_broker;
  };
  for (const shape s :
       {shape{message_type::batch, 2, true, false}, shape{message_type::heartbeat, 0, true, true},
        shape{message_type::stop, 0, true, false}, shape{message_type::hello, 0, false, true},
        shape{message_type::result, 2, false, true},
        shape{message_type::batch_error, 1, false, true},
        shape{message_type::bye, 0, false, true}}) {
    SCOPED_TRACE(std::string(to_string(s.type)));
    const auto bytes = encode_header(full_header(s.type));
    EXPECT_EQ(bool(decode_message(frames_with(bytes, s.extra), direction::to_worker)), s.to_worker);
    EXPECT_EQ(bool(decode_message(frames_with(bytes, s.extra), direction::to_broker)), s.to_broker);
    const auto way = s.to_worker ? direction::to_worker : direction::to_broker;
    auto more = decode_message(frames_with(bytes, s.extra + 1), way);
    ASSERT_FALSE(more);
    EXPECT_NE(more.error().message.find("frames, expected"), std::string::npos)
        << more.error().message;
    if (s.extra > 0) {
      EXPECT_FALSE(decode_message(frames_with(bytes, s.extra - 1), way));
    }
  }
}

TEST(WorkerProtocol, BadHeadersAreErrorsNamingWhatIsWrong) {
  const auto good = encode_header(full_header(message_type::heartbeat));
  const auto check = [](std::array<std::byte, header_size> bytes, const std::string& want) {
    auto r = decode_message(frames_with(bytes, 0), direction::to_broker);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::protocol_error);
    EXPECT_NE(r.error().message.find(want), std::string::npos) << r.error().message;
  };
  auto bytes = good;
  bytes[1] = std::byte{'L'};
  check(bytes, "magic");
  bytes = good;
  bytes[2] = std::byte{7};
  check(bytes, "version 7");
  bytes = good;
  bytes[6] = std::byte{1};
  check(bytes, "reserved");
  bytes = good;
  bytes[4] = std::byte{200};
  check(bytes, "unknown worker message type 200");

  const std::vector<std::byte> shorter(good.begin(), good.end() - 1);
  const std::vector<frame> short_frames{frame(shorter)};
  auto r = decode_message(short_frames, direction::to_broker);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("expected 48"), std::string::npos);
  EXPECT_FALSE(decode_message({}, direction::to_broker));
}

TEST(WorkerProtocol, MetaCarriesTheFunctionAndContext) {
  job_target target;
  target.function = "features:score";
  target.context.pipe = "p";
  target.context.stage = "score";
  target.context.session_id = "user-1";
  target.context.metadata = Map{{"model", "v2"}, {"n", 3}};
  auto back = decode_meta(encode_meta(target));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->function, "features:score");
  EXPECT_EQ(back->context, target.context);
}

TEST(WorkerProtocol, MalformedMetaIsAnError) {
  EXPECT_EQ(decode_meta(encode(Value(List{}))).error().code, errc::protocol_error);
  EXPECT_EQ(decode_meta(encode(Value(Map{{"function", 3}}))).error().code, errc::protocol_error);
  EXPECT_EQ(decode_meta(encode(Value(Map{{"metadata", "x"}}))).error().code, errc::protocol_error);
  const std::vector<std::byte> junk{std::byte{0xff}, std::byte{0x00}};
  EXPECT_FALSE(decode_meta(junk));
  const std::vector<std::byte> huge(max_small_frame + 1);
  EXPECT_EQ(decode_meta(huge).error().code, errc::limit_exceeded);
}

TEST(WorkerProtocol, ItemErrorsRoundTripSortedAndEmptyMeansNone) {
  std::vector<indexed_error> errors(2);
  errors[0].index = 5;
  errors[0].error.type = "ValueError";
  errors[0].error.message = "bad 5";
  errors[0].error.traceback = "Traceback...";
  errors[1].index = 1;
  errors[1].error.type = "KeyError";
  errors[1].error.message = "bad 1";
  auto back = decode_item_errors(encode_item_errors(errors), 8);
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].index, 1u);
  EXPECT_EQ((*back)[0].error.type, "KeyError");
  EXPECT_EQ((*back)[1].error.traceback, "Traceback...");
  EXPECT_EQ((*back)[1].error.kind, failure_kind::item_error);
  EXPECT_TRUE(encode_item_errors({}).empty());
  EXPECT_TRUE(decode_item_errors({}, 8).value().empty());
}

TEST(WorkerProtocol, ItemErrorsOutsideTheBatchOrTwiceAreErrors) {
  const auto one = [](std::int64_t index) { return Value::list({index, "ValueError", "x", ""}); };
  const auto check = [](const Value& frame_value, std::uint32_t count, const std::string& want) {
    auto r = decode_item_errors(encode(frame_value), count);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::protocol_error);
    EXPECT_NE(r.error().message.find(want), std::string::npos) << r.error().message;
  };
  check(Value(List{one(4)}), 4, "index");
  check(Value(List{one(-1)}), 4, "index");
  check(Value(List{one(1), one(1)}), 4, "twice");
  check(Value(List{one(0), one(1), one(2)}), 2, "3 errors for 2 items");
  check(Value(List{Value::list({0, 1, "x"})}), 4, "strings");
  check(Value(List{Value("x")}), 4, "not a list");
  check(Value(Map{}), 4, "not a list");
}

TEST(WorkerProtocol, LongErrorTextsAreCutNotRefused) {
  dispatch_error e;
  e.type = "RuntimeError";
  e.message = std::string(max_error_text * 2, 'm');
  e.traceback = "tb";
  auto back = decode_error(encode_error(e));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->kind, failure_kind::exception);
  EXPECT_EQ(back->type, "RuntimeError");
  EXPECT_LT(back->message.size(), max_error_text + 32);
  EXPECT_NE(back->message.find("(cut)"), std::string::npos);
  EXPECT_EQ(back->traceback, "tb");
  EXPECT_EQ(decode_error(encode(Value(Map{}))).value().type, "Exception");
  EXPECT_FALSE(decode_error(encode(Value(Map{{"message", 1}}))));
}

}  // namespace
}  // namespace slither::worker_protocol
