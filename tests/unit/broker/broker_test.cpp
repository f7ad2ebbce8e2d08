// A client talking to a broker embedded in the test process.
#include "slither/broker/broker.hpp"
#include "slither/core/telemetry.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <limits>
#include <mutex>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "broker_fixture.hpp"
#include "slither/broker/client.hpp"
#include "slither/broker/protocol.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using test_support::BrokerTest;
using test_support::error_code_of;
using test_support::header_frame;
using test_support::RawPeer;
using test_support::store_def;
using test_support::writer_hold;

TEST_F(BrokerTest, HelloAttachInfoAndPing) {
  start();
  auto c = connect();
  EXPECT_EQ(c.ns(), ns_);
  ASSERT_TRUE(c.ping());
  auto info = c.attach_info("main");
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->ns, ns_);
  EXPECT_EQ(info->name, "main");
  EXPECT_EQ(info->tables, (std::vector<std::string>{"kv", "events"}));
  EXPECT_GT(info->layout_version, 0u);
  auto missing = c.attach_info("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
  EXPECT_NE(missing.error().message.find("'nope'"), std::string::npos);
}

TEST_F(BrokerTest, EveryWriteRoundTripsAndIsVisibleToReaders) {
  auto& b = start();
  auto c = connect();
  const auto& r = b.reader("main");

  auto v1 = c.put("main", "kv", "a", Value::map({{"x", 1}}));
  ASSERT_TRUE(v1) << v1.error().message;
  EXPECT_EQ(r.get("kv", "a").value(), std::optional(Value::map({{"x", 1}})));
  auto v2 = c.put("main", "kv", "a", Value("two"));
  ASSERT_TRUE(v2);
  EXPECT_GT(*v2, *v1);

  const std::vector<std::pair<std::string, Value>> many{{"b", Value(2)}, {"c", Value(3.5)}};
  ASSERT_TRUE(c.put_many("main", "kv", many));
  EXPECT_EQ(r.get("kv", "c").value(), std::optional(Value(3.5)));

  auto erased = c.erase("main", "kv", "b");
  ASSERT_TRUE(erased);
  EXPECT_TRUE(*erased);
  EXPECT_FALSE(*c.erase("main", "kv", "b"));
  EXPECT_FALSE(r.contains("kv", "b").value());

  auto cas = c.compare_and_set("main", "kv", "a", *v2, Value("three"));
  ASSERT_TRUE(cas) << cas.error().message;
  auto stale = c.compare_and_set("main", "kv", "a", *v2, Value("four"));
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::conflict);
  EXPECT_EQ(r.get("kv", "a").value(), std::optional(Value("three")));
  auto fresh = c.compare_and_set("main", "kv", "new", 0, Value(1));
  ASSERT_TRUE(fresh) << fresh.error().message;

  ASSERT_TRUE(c.clear("main", "kv"));
  EXPECT_EQ(r.size("kv").value(), 0u);

  ASSERT_TRUE(c.put("main", "events", "k", Value(1)));
  ASSERT_TRUE(c.put("main", "events", "k", Value(2)));
  EXPECT_EQ(r.get_all("events", "k").value().size(), 2u);

  auto stats = c.stats();
  ASSERT_TRUE(stats) << stats.error().message;
  EXPECT_EQ((*stats)["ns"], Value(ns_));
  EXPECT_EQ((*stats)["stores"]["main"]["entries"], Value(2));
}

TEST_F(BrokerTest, CompareAndEraseRemovesOnlyTheVersionRead) {
  auto& b = start();
  auto c = connect();
  const auto& r = b.reader("main");
  const std::uint64_t v1 = c.put("main", "kv", "k", Value("one")).value();
  const std::uint64_t v2 = c.put("main", "kv", "k", Value("two")).value();

  // Another version: conflict naming the one found, and the entry stays.
  auto stale = c.compare_and_erase("main", "kv", "k", v1);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::conflict);
  EXPECT_NE(stale.error().message.find("version " + std::to_string(v2)), std::string::npos)
      << stale.error().message;
  EXPECT_EQ(r.get("kv", "k").value(), std::optional(Value("two")));

  // The version read: removed, readers see it gone once the reply comes.
  auto erased = c.compare_and_erase("main", "kv", "k", r.get_view("kv", "k").value()->version());
  ASSERT_TRUE(erased) << erased.error().message;
  EXPECT_TRUE(*erased);
  EXPECT_FALSE(r.contains("kv", "k").value());

  // Absent: version 0 matches and removes nothing; another names version 0.
  auto none = c.compare_and_erase("main", "kv", "k", 0);
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_FALSE(*none);
  auto gone = c.compare_and_erase("main", "kv", "k", v2);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::conflict);
  EXPECT_NE(gone.error().message.find("version 0"), std::string::npos) << gone.error().message;

  // A bag is refused as compare_and_set refuses it; unknown names are named.
  ASSERT_TRUE(c.put("main", "events", "e", Value(1)));
  auto bag = c.compare_and_erase("main", "events", "e", 0);
  ASSERT_FALSE(bag);
  EXPECT_EQ(bag.error().code, errc::invalid_argument);
  EXPECT_NE(bag.error().message.find("'events' is a bag"), std::string::npos);
  EXPECT_EQ(r.size("events").value(), 1u);
  auto table = c.compare_and_erase("main", "nope", "k", 0);
  ASSERT_FALSE(table);
  EXPECT_EQ(table.error().code, errc::not_found);
  EXPECT_NE(table.error().message.find("'nope'"), std::string::npos);

  // Bad arguments are named, and nothing is removed.
  ASSERT_TRUE(c.put("main", "kv", "k", Value(1)));
  RawPeer peer(b.control_endpoint());
  const std::pair<Value, std::string> bad[] = {
      {Value::map({{"store", "main"}, {"table", "kv"}, {"key", "k"}, {"expected_version", -1}}),
       "expected_version -1 is negative"},
      {Value::map({{"store", "main"}, {"table", "kv"}, {"key", "k"}, {"expected_version", "1"}}),
       "expected_version"},
      {Value::map({{"store", "main"}, {"table", "kv"}, {"expected_version", 1}}), "key"},
  };
  std::uint64_t id = 0;
  for (const auto& [args, named] : bad) {
    peer.request(protocol::message_type::compare_and_erase, ++id, args);
    auto m = peer.receive();
    ASSERT_TRUE(m);
    EXPECT_EQ(error_code_of(*m), errc::invalid_argument) << args.to_string();
    const std::string message = protocol::read_error_body(m->body).message;
    EXPECT_NE(message.find("'compare_and_erase'"), std::string::npos) << message;
    EXPECT_NE(message.find(named), std::string::npos) << message;
  }
  EXPECT_TRUE(r.contains("kv", "k").value());
}

TEST_F(BrokerTest, CompareAndEraseRefusesMalformedFramesAndKeepsTheEntry) {
  auto& b = start();
  auto c = connect();
  const auto& r = b.reader("main");
  const std::uint64_t v = c.put("main", "kv", "k", Value(1)).value();

  // A version past what the wire carries (an int64) is named as given, not
  // sent as a negative number the broker would name instead.
  constexpr std::uint64_t huge = std::numeric_limits<std::uint64_t>::max();
  for (auto got : {c.compare_and_erase("main", "kv", "k", huge).error(),
                   c.compare_and_set("main", "kv", "k", huge, Value(2)).error()}) {
    EXPECT_EQ(got.code, errc::invalid_argument);
    EXPECT_NE(got.message.find(std::to_string(huge)), std::string::npos) << got.message;
  }
  // The largest int64 is a version no entry has: a conflict naming the one found.
  auto top = c.compare_and_erase("main", "kv", "k", huge >> 1);
  ASSERT_FALSE(top);
  EXPECT_EQ(top.error().code, errc::conflict);
  EXPECT_NE(top.error().message.find("version " + std::to_string(v)), std::string::npos)
      << top.error().message;

  RawPeer peer(b.control_endpoint());
  const Map good{{"store", "main"}, {"table", "kv"}, {"key", "k"}, {"expected_version", 1}};
  auto with = [&](std::string_view name, Value arg) {
    Map args = good;
    args.insert_or_assign(std::string(name), std::move(arg));
    return Value(std::move(args));
  };
  auto without = [&](std::string_view name) {
    Map args = good;
    args.erase(args.find(name));
    return Value(std::move(args));
  };
  struct bad_frame {
    Value args;
    errc code;
    std::string named;
  };
  const bad_frame bad[] = {
      {without("store"), errc::invalid_argument, "store"},
      {without("table"), errc::invalid_argument, "table"},
      {without("expected_version"), errc::invalid_argument, "expected_version"},
      {with("store", Value("nope")), errc::not_found, "'nope'"},
      {with("store", Value(1)), errc::invalid_argument, "store"},
      {with("table", Value(Value::list({"kv"}))), errc::invalid_argument, "table"},
      {with("key", Value(7)), errc::invalid_argument, "key"},
      {with("expected_version", Value(1.0)), errc::invalid_argument, "expected_version"},
      {with("expected_version", Value{}), errc::invalid_argument, "expected_version"},
      {with("expected_version", Value(std::numeric_limits<std::int64_t>::min())),
       errc::invalid_argument, "is negative"},
      {with("incarnation", Value("x")), errc::invalid_argument, "incarnation"},
      // A body that is not a map breaks the protocol itself.
      {Value::list({"main", "kv", "k", 1}), errc::protocol_error, ""},
      {Value{}, errc::protocol_error, ""},
  };
  std::uint64_t id = 0;
  for (const auto& [args, code, named] : bad) {
    peer.request(protocol::message_type::compare_and_erase, ++id, args);
    auto m = peer.receive();
    ASSERT_TRUE(m) << args.to_string();
    ASSERT_EQ(m->head.type, protocol::message_type::reply_error) << args.to_string();
    EXPECT_EQ(error_code_of(*m), code) << args.to_string();
    const std::string message = protocol::read_error_body(m->body).message;
    EXPECT_NE(message.find(named), std::string::npos) << message;
  }
  EXPECT_EQ(r.get("kv", "k").value(), std::optional(Value(1)));
  // The broker still serves the client that sent them.
  peer.request(protocol::message_type::compare_and_erase, ++id,
               with("expected_version", Value(static_cast<std::int64_t>(v))));
  auto ok = peer.receive();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->body, Value(true)) << ok->body.to_string();
  EXPECT_FALSE(r.contains("kv", "k").value());
}

TEST_F(BrokerTest, ReadYourWritesFromAnAttachedReader) {
  start();
  auto c = connect();
  auto info = c.attach_info("main").value();
  auto reader = shm::reader::attach(info.ns, info.name).value();
  for (int i = 0; i < 300; ++i) {
    std::string key = "k";
    key += std::to_string(i % 17);
    ASSERT_TRUE(c.put("main", "kv", key, Value(i)));
    ASSERT_EQ(reader.get("kv", key).value(), std::optional(Value(i))) << "after put " << i;
  }
}

TEST_F(BrokerTest, ErrorRepliesCarryCodeAndMessage) {
  start();
  auto c = connect();
  auto no_store = c.put("nope", "kv", "k", Value(1));
  ASSERT_FALSE(no_store);
  EXPECT_EQ(no_store.error().code, errc::not_found);
  EXPECT_NE(no_store.error().message.find("stores: main"), std::string::npos);
  auto no_table = c.put("main", "nope", "k", Value(1));
  ASSERT_FALSE(no_table);
  EXPECT_EQ(no_table.error().code, errc::not_found);
  auto no_view = c.call_view("main", "nope", Value{});
  ASSERT_FALSE(no_view);
  EXPECT_EQ(no_view.error().code, errc::not_found);
  EXPECT_TRUE(c.ping());  // still serving
}

TEST_F(BrokerTest, FullWriteQueueAnswersBusy) {
  auto o = options();
  o.write_queue_limit = 1;
  auto& b = start(std::move(o));
  ASSERT_TRUE(b.start());
  auto c = connect();

  // One write holds the writer thread, a second fills the queue's one place.
  writer_hold first(b);
  auto second = std::async(std::launch::async, [&] {
    return b.write("main", [](shm::writer& w) -> result<void> {
      auto v = w.put("kv", "queued", Value(1));
      if (!v) return std::move(v).error();
      return {};
    });
  });
  // Give the second write time to take the queue's place (it queues at once:
  // the first one was already taken off the queue).
  std::this_thread::sleep_for(100ms);
  auto busy = c.put("main", "kv", "k", Value(1));
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, errc::busy);
  EXPECT_NE(busy.error().message.find("full"), std::string::npos);

  first.release();
  EXPECT_TRUE(second.get());
  EXPECT_TRUE(c.put("main", "kv", "k", Value(1)));
  EXPECT_TRUE(b.reader("main").contains("kv", "queued").value());
}

TEST_F(BrokerTest, GlobalAndSessionViews) {
  auto& b = start(options());
  ASSERT_TRUE(b.register_view("main", "double", view_scope::global,
                              [](const Value& arg, const shm::reader&, std::string_view session) {
                                EXPECT_TRUE(session.empty());
                                return result<Value>(Value(arg.as<std::int64_t>() * 2));
                              }));
  ASSERT_TRUE(b.register_view(
      "main", "lookup", view_scope::session,
      [](const Value& arg, const shm::reader& store, std::string_view session) -> result<Value> {
        auto v = store.get("kv", arg.as<std::string>());
        if (!v) return std::move(v).error();
        return Value::map({{"session", session}, {"value", v->value_or(Value{})}});
      }));
  ASSERT_TRUE(b.register_view("main", "fails", view_scope::global,
                              [](const Value&, const shm::reader&, std::string_view) {
                                return result<Value>(fail(errc::conflict, "view says no"));
                              }));
  ASSERT_TRUE(
      b.register_view("main", "throws", view_scope::global,
                      [](const Value&, const shm::reader&, std::string_view) -> result<Value> {
                        throw std::runtime_error("boom");
                      }));
  auto dup = b.register_view(
      "main", "double", view_scope::global,
      [](const Value&, const shm::reader&, std::string_view) { return result<Value>(Value{}); });
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, errc::already_exists);
  EXPECT_EQ(b.register_view("nope", "v", view_scope::global,
                            [](const Value&, const shm::reader&, std::string_view) {
                              return result<Value>(Value{});
                            })
                .error()
                .code,
            errc::not_found);

  std::mutex m;
  std::vector<std::string> events;
  auto listening =
      telemetry::attach("slither.", [&](std::string_view event, const Map&, const Map&) {
        std::lock_guard lock(m);
        events.emplace_back(event);
      });
  ASSERT_TRUE(b.start());
  auto c = connect();
  ASSERT_TRUE(c.put("main", "kv", "user", Value("ada")));

  EXPECT_EQ(c.call_view("main", "double", Value(21)).value(), Value(42));
  auto looked = c.call_view("main", "lookup", Value("user"), "s-1");
  ASSERT_TRUE(looked) << looked.error().message;
  EXPECT_EQ(*looked, Value::map({{"session", "s-1"}, {"value", "ada"}}));
  auto no_session = c.call_view("main", "lookup", Value("user"));
  ASSERT_FALSE(no_session);
  EXPECT_EQ(no_session.error().code, errc::invalid_argument);
  auto failed = c.call_view("main", "fails", Value{});
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, errc::conflict);
  EXPECT_EQ(failed.error().message, "view says no");
  auto thrown = c.call_view("main", "throws", Value{});
  ASSERT_FALSE(thrown);
  EXPECT_EQ(thrown.error().code, errc::internal);
  EXPECT_NE(thrown.error().message.find("boom"), std::string::npos);

  std::lock_guard lock(m);
  EXPECT_NE(std::find(events.begin(), events.end(), "slither.bridge.view.start"), events.end());
  EXPECT_NE(std::find(events.begin(), events.end(), "slither.bridge.view.stop"), events.end());
  EXPECT_NE(std::find(events.begin(), events.end(), "slither.store.write.start"), events.end());
  EXPECT_NE(std::find(events.begin(), events.end(), "slither.store.write.stop"), events.end());
}

TEST_F(BrokerTest, ViewResultThatCannotBeEncodedBecomesAnErrorReply) {
  auto& b = start(options());
  ASSERT_TRUE(b.register_view("main", "deep", view_scope::global,
                              [](const Value&, const shm::reader&, std::string_view) {
                                Value v = Value::list({});
                                for (int i = 0; i < 300; ++i) v = Value::list({std::move(v)});
                                return result<Value>(std::move(v));
                              }));
  ASSERT_TRUE(b.start());
  auto c = connect();
  auto r = c.call_view("main", "deep", Value{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("reply cannot be encoded"), std::string::npos);
  EXPECT_TRUE(c.ping());
}

TEST_F(BrokerTest, SlowViewTimesOutAndItsLateResultIsDropped) {
  auto& b = start(options());
  std::promise<void> finish;
  auto gate = finish.get_future().share();
  ASSERT_TRUE(b.register_view("main", "slow", view_scope::global,
                              [gate](const Value&, const shm::reader&, std::string_view) {
                                gate.wait_for(2s);
                                return result<Value>(Value("late"));
                              }));
  ASSERT_TRUE(b.start());
  auto c = connect();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = c.call_view("main", "slow", Value{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  finish.set_value();
  // The late result must not be taken for the reply to the next request.
  EXPECT_TRUE(c.ping());
  EXPECT_EQ(c.call_view("main", "slow", Value{}).value(), Value("late"));
}

TEST_F(BrokerTest, UnreachableBrokerIsUnavailableWithinTheTimeout) {
  client_options o;
  o.runtime_dir = dir_;
  auto none = client::connect(o);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, errc::unavailable);

  start();
  auto c = connect(300ms);
  ASSERT_TRUE(c.ping());
  broker_->stop();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = c.ping();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

TEST_F(BrokerTest, SecondBrokerOnTheNamespaceRefusesAndStopCleansUp) {
  auto& first = start();
  Broker second(options());
  auto r = second.start();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::already_exists);
  EXPECT_NE(r.error().message.find(std::to_string(::getpid())), std::string::npos)
      << r.error().message;
  EXPECT_TRUE(connect().ping());  // the first is untouched

  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  first.stop();
  first.stop();  // safe twice
  EXPECT_FALSE(fs::exists(dir_));
  EXPECT_FALSE(fs::exists("/dev/shm" + shm::segment_name(ns_, "main", 0)));
  auto gone = shm::reader::attach(ns_, "main");
  EXPECT_FALSE(gone);
  // And the namespace can be served again.
  Broker again(options());
  ASSERT_TRUE(again.start());
}

TEST_F(BrokerTest, UnsafeRuntimeDirectoryIsRefused) {
  fs::create_directories(dir_);
  fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec);
  Broker b(options());
  auto r = b.start();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("0750"), std::string::npos) << r.error().message;
}

TEST_F(BrokerTest, EmbeddedWritesRunOnTheWriterThread) {
  auto& b = start();
  ASSERT_TRUE(b.write("main", [](shm::writer& w) -> result<void> {
    auto v = w.put("kv", "cpp", Value(7));
    if (!v) return std::move(v).error();
    return {};
  }));
  EXPECT_EQ(b.reader("main").get("kv", "cpp").value(), std::optional(Value(7)));
  auto failed = b.write(
      "main", [](shm::writer&) -> result<void> { return fail(errc::invalid_argument, "nope"); });
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().message, "nope");
  EXPECT_EQ(b.write("other", [](shm::writer&) -> result<void> { return {}; }).error().code,
            errc::not_found);
  EXPECT_THROW((void)b.reader("other"), slither::error);
}

TEST_F(BrokerTest, AWriteFromInsideAWriteIsAClearErrorNotAHang) {
  auto& b = start();
  result<void> inner = fail(errc::internal, "not called");
  auto outer = std::async(std::launch::async, [&] {
    return b.write("main", [&](shm::writer& w) -> result<void> {
      inner = b.write("main", [](shm::writer&) -> result<void> { return {}; });
      SLITHER_TRY(w.put("kv", "outer", Value(1)));
      return {};
    });
  });
  ASSERT_EQ(outer.wait_for(10s), std::future_status::ready) << "the nested write hung";
  EXPECT_TRUE(outer.get());
  ASSERT_FALSE(inner);
  EXPECT_EQ(inner.error().code, errc::invalid_argument);
  EXPECT_NE(inner.error().message.find("wait for itself"), std::string::npos)
      << inner.error().message;
  // The broker writes on.
  EXPECT_TRUE(b.write("main", [](shm::writer& w) -> result<void> {
    SLITHER_TRY(w.put("kv", "after", Value(2)));
    return {};
  }));
  EXPECT_EQ(b.reader("main").get("kv", "after").value(), std::optional(Value(2)));
}

TEST_F(BrokerTest, AWriteFromATelemetryHandlerOfAClientsWriteIsRefusedNotAHang) {
  auto& b = start();
  std::mutex mutex;
  std::vector<result<void>> nested;
  // The client's small put runs on the serving thread (writer idle) or the
  // writer thread: from either, a Broker::write would wait for itself.
  auto handler = telemetry::attach(
      "slither.store.write.start", [&](std::string_view, const Map&, const Map& meta) {
        if (meta.contains("op") && meta.at("op") == Value("write")) return;
        auto r = b.write("main", [](shm::writer&) -> result<void> { return {}; });
        std::lock_guard lock(mutex);
        nested.push_back(std::move(r));
      });
  auto c = connect();
  ASSERT_TRUE(c.put("main", "kv", "k", Value(1)));
  handler.detach();
  std::lock_guard lock(mutex);
  ASSERT_EQ(nested.size(), 1u);
  ASSERT_FALSE(nested[0]);
  EXPECT_EQ(nested[0].error().code, errc::invalid_argument);
}

TEST_F(BrokerTest, MalformedMessagesAreAnsweredAndServingGoesOn) {
  auto o = options();
  o.limits.max_message_bytes = 4096;
  auto& b = start(std::move(o));
  ASSERT_TRUE(b.start());
  RawPeer peer(b.control_endpoint());
  using protocol::message_type;

  // No valid header: still answered, with the id the frame carries, else 0.
  peer.send({buffer(3, std::byte{1})});
  auto m = peer.receive();
  ASSERT_TRUE(m) << "a message without a valid header got no reply";
  EXPECT_EQ(m->head.request_id, 0u);
  EXPECT_EQ(error_code_of(*m), errc::protocol_error);
  auto no_magic = header_frame(message_type::ping, 10);
  no_magic[0] = std::byte{'X'};
  peer.send({no_magic, buffer(4, std::byte{0})});
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.request_id, 10u);
  EXPECT_EQ(error_code_of(*m), errc::protocol_error);
  EXPECT_NE(protocol::read_error_body(m->body).message.find("magic"), std::string::npos);
  // A header, but garbage, an unknown type, another version, or too much.
  peer.send({header_frame(message_type::put, 11), buffer(9, std::byte{0xee})});
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.request_id, 11u);
  EXPECT_EQ(error_code_of(*m), errc::decode_error);

  auto unknown = header_frame(message_type::ping, 12);
  unknown[4] = std::byte{77};
  peer.send({unknown, encode(Value(Map{}))});
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.request_id, 12u);
  EXPECT_EQ(error_code_of(*m), errc::protocol_error);

  peer.send({header_frame(message_type::ping, 13, 9), encode(Value(Map{}))});
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(error_code_of(*m), errc::protocol_error);

  peer.send({header_frame(message_type::put, 14),
             encode(Value::map({{"value", std::string(4200, 'x')}}))});
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.request_id, 14u);
  EXPECT_EQ(error_code_of(*m), errc::limit_exceeded);

  peer.send({header_frame(message_type::put, 15), encode(Value::map({{"store", "main"}}))});
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(error_code_of(*m), errc::invalid_argument);
  EXPECT_NE(protocol::read_error_body(m->body).message.find("'table'"), std::string::npos);

  peer.send({header_frame(message_type::reply_ok, 16), encode(Value{})});
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(error_code_of(*m), errc::protocol_error);

  peer.send({header_frame(message_type::ping, 17), encode(Value(Map{}))});
  m = peer.receive();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.request_id, 17u);
  EXPECT_EQ(m->head.type, message_type::reply_ok);
  EXPECT_TRUE(connect().ping());
}

TEST_F(BrokerTest, ClientThatNeverReadsRepliesDoesNotStallOthers) {
  auto& b = start();
  zmq::context_t context{1};
  zmq::socket_t slow(context, zmq::socket_type::dealer);
  slow.set(zmq::sockopt::linger, 0);
  slow.set(zmq::sockopt::rcvhwm, 1);
  slow.connect(b.control_endpoint());
  const auto ping = protocol::encode_message(
      {{protocol::protocol_version, protocol::message_type::ping, 1}, Value(Map{})});
  for (int i = 0; i < 5000; ++i) {
    (void)slow.send(zmq::buffer(ping[0].data(), ping[0].size()), zmq::send_flags::sndmore);
    (void)slow.send(zmq::buffer(ping[1].data(), ping[1].size()), zmq::send_flags::none);
  }
  auto c = connect(1000ms);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c.ping()) << "ping " << i;
}

}  // namespace
}  // namespace slither
