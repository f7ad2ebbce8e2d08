// The dispatch-job protocol's pieces: open arguments, batch statuses, ends, moves.
#include "job_wire.hpp"

#include <gtest/gtest.h>

#include <string>

namespace slither::detail::job_wire {
namespace {

using namespace std::chrono_literals;

open_request round_trip(const job_options& o) {
  auto args = open_args(o);
  auto r = read_open(args.as<Map>());
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  return r.value();
}

TEST(JobWire, OpenArgumentsRoundTrip) {
  job_options o;
  o.pool = "gpu";
  o.function = "mod:fn";
  o.batching = fixed_batch{32};
  o.max_in_flight = 5;
  o.ordering = order_mode::as_completed;
  o.affinity = affinity_mode::strict;
  o.timeout = 1500ms;
  o.context.session_id = "s";
  o.context.stage = "st";
  o.context.pipe = "p";
  o.context.metadata = Map{{"k", 1}};
  o.idle_timeout = 7000ms;
  retry_policy r;
  r.max_attempts = 4;
  r.delay = backoff{10ms, 3.0, 500ms};
  r.then = route_policy{"errors"};
  o.on_error = r;
  const auto back = round_trip(o);
  EXPECT_EQ(back.pool, "gpu");
  EXPECT_EQ(back.idle_timeout, 7000ms);
  const dispatch_options& d = back.options;
  EXPECT_EQ(d.function, "mod:fn");
  const auto* pre = std::get_if<preformed_batch>(&d.batching);
  ASSERT_NE(pre, nullptr);
  EXPECT_EQ(pre->max_items, 32u);
  EXPECT_TRUE(pre->encoded);
  EXPECT_EQ(d.max_in_flight, 5u);
  EXPECT_EQ(d.ordering, order_mode::as_completed);
  EXPECT_EQ(d.affinity, affinity_mode::strict);
  EXPECT_EQ(d.timeout, 1500ms);
  EXPECT_EQ(d.context, o.context);
  const auto* retry = std::get_if<retry_policy>(&d.on_error);
  ASSERT_NE(retry, nullptr);
  EXPECT_EQ(retry->max_attempts, 4u);
  EXPECT_EQ(retry->delay.initial, 10ms);
  EXPECT_EQ(retry->delay.multiplier, 3.0);
  EXPECT_EQ(retry->delay.max, 500ms);
  ASSERT_TRUE(std::holds_alternative<route_policy>(retry->then));
  EXPECT_EQ(std::get<route_policy>(retry->then).output, "errors");

  for (const error_policy& p : {error_policy(halt_policy{}), error_policy(skip_policy{}),
                                error_policy(route_policy{"x"})}) {
    o.on_error = p;
    EXPECT_EQ(round_trip(o).options.on_error.index(), p.index());
  }
  o.timeout.reset();
  EXPECT_FALSE(round_trip(o).options.timeout);
}

TEST(JobWire, BadOpenArgumentsAreNamed) {
  const auto error_of = [](Map args) {
    args.emplace("function", "m:f");
    auto r = read_open(args);
    EXPECT_FALSE(r);
    return r ? std::string() : r.error().message;
  };
  EXPECT_NE(error_of(Map{{"batch_size", "x"}}).find("'batch_size'"), std::string::npos);
  EXPECT_NE(error_of(Map{{"batch_size", -1}}).find("'batch_size'"), std::string::npos);
  EXPECT_NE(error_of(Map{{"batch_size", 0}}).find("'max_items'"), std::string::npos);
  EXPECT_NE(error_of(Map{{"ordering", "random"}}).find("'ordering'"), std::string::npos);
  EXPECT_NE(error_of(Map{{"affinity", "loose"}}).find("'affinity'"), std::string::npos);
  EXPECT_NE(error_of(Map{{"on_error", Value(Map{{"policy", "explode"}})}}).find("explode"),
            std::string::npos);
  EXPECT_NE(error_of(Map{{"on_error", "skip"}}).find("'on_error'"), std::string::npos);
  EXPECT_NE(error_of(Map{{"max_in_flight", 0}}).find("'max_in_flight'"), std::string::npos);
  EXPECT_NE(error_of(Map{{"metadata", 1}}).find("'metadata'"), std::string::npos);
  auto no_function = read_open(Map{});
  ASSERT_FALSE(no_function);
  EXPECT_NE(no_function.error().message.find("'function'"), std::string::npos);
}

std::span<const std::byte> bytes_of(const buffer& b) {
  return {b.data(), b.size()};
}

TEST(JobWire, StatusOfResultsWithFailuresRoundTrips) {
  batch_output out;
  out.seq = 12;
  out.count = 4;
  dispatch_error e;
  e.kind = failure_kind::item_error;
  e.type = "ValueError";
  e.message = "bad";
  e.traceback = "tb";
  e.batch = 7;
  e.attempt = 2;
  e.worker = 3;
  out.failures.push_back({1, item_status::skipped, std::make_shared<const dispatch_error>(e)});
  out.failures.push_back({3, item_status::routed, std::make_shared<const dispatch_error>(e)});
  const buffer status = encode_status(out);
  const auto payload = opaque_bytes::adopt({std::byte{1}, std::byte{2}});
  auto back = decode_status(bytes_of(status), payload);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->seq, 12u);
  EXPECT_EQ(back->count, 4u);
  EXPECT_TRUE(back->has_results);
  EXPECT_EQ(back->payload.bytes.data(), payload.bytes.data());
  ASSERT_EQ(back->failures.size(), 2u);
  EXPECT_EQ(back->failures[1].index, 3u);
  EXPECT_EQ(back->failures[1].status, item_status::routed);
  EXPECT_EQ(*back->failures[0].error, e);
}

TEST(JobWire, StatusOfAWholeBatchRoundTrips) {
  batch_output out;
  out.seq = 1;
  out.count = 2;
  out.has_results = false;
  out.status = item_status::cancelled;
  dispatch_error e;
  e.kind = failure_kind::cancelled;
  e.message = "stopped";
  out.error = std::make_shared<const dispatch_error>(e);
  auto back = decode_status(bytes_of(encode_status(out)), {});
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_FALSE(back->has_results);
  EXPECT_EQ(back->status, item_status::cancelled);
  ASSERT_TRUE(back->error);
  EXPECT_EQ(back->error->message, "stopped");
}

TEST(JobWire, MalformedStatusesAreProtocolErrors) {
  const auto bad = [](const Value& v) {
    auto r = decode_status(bytes_of(encode(v)), {});
    EXPECT_FALSE(r);
    return r ? errc::ok : r.error().code;
  };
  EXPECT_EQ(bad(Value(List{})), errc::protocol_error);
  EXPECT_EQ(bad(Value(Map{{"seq", 1}, {"count", 2}})), errc::protocol_error);
  EXPECT_EQ(bad(Value(Map{{"seq", 1},
                          {"count", 2},
                          {"results", true},
                          {"failures", Value(List{Value::list({5, "skipped", Value()})})}})),
            errc::protocol_error);
  EXPECT_EQ(bad(Value(Map{{"seq", 1}, {"count", 2}, {"results", false}, {"status", "weird"}})),
            errc::protocol_error);
  EXPECT_EQ(bad(Value(Map{{"seq", -1}, {"count", 2}, {"results", true}})), errc::protocol_error);
}

TEST(JobWire, EndsAndMovesRoundTrip) {
  EXPECT_FALSE(read_end(end_value(std::nullopt)).value());
  dispatch_error e;
  e.kind = failure_kind::circuit_open;
  e.message = "pool broken";
  const auto end = read_end(end_value(e)).value();
  ASSERT_TRUE(end);
  EXPECT_EQ(*end, e);
  const session_moved m{3, "sess", 4, 9};
  const auto back = read_moved(moved_value(m)).value();
  EXPECT_EQ(back.job, 3u);
  EXPECT_EQ(back.session, "sess");
  EXPECT_EQ(back.from, 4u);
  EXPECT_EQ(back.to, 9u);
  EXPECT_FALSE(read_moved(Value(Map{{"job", 1}})));
}

}  // namespace
}  // namespace slither::detail::job_wire
