// The store requests added for Python users: reload, create_table,
// drop_table and put_many's atomic flag, through a real client and broker.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "broker_fixture.hpp"
#include "slither/core/telemetry.hpp"
#include "slither/shm/store.hpp"

namespace slither::test_support {
namespace {

using Entries = std::vector<std::pair<std::string, Value>>;

TEST_F(BrokerTest, ReloadReplacesATablesContentsWithItsOwnTelemetry) {
  std::mutex m;
  std::vector<std::string> events;
  auto listening =
      telemetry::attach("slither.store.", [&](std::string_view event, const Map&, const Map& tags) {
        std::lock_guard lock(m);
        const Value* op = tags.count("op") ? &tags.at("op") : nullptr;
        events.emplace_back(std::string(event) + (op ? ":" + op->as<std::string>() : ""));
      });
  start();
  auto c = connect();
  ASSERT_TRUE(c.put_many("main", "kv", Entries{{"a", 1}, {"b", 2}}));
  auto r = shm::reader::attach(ns_, "main");
  ASSERT_TRUE(r);
  ASSERT_TRUE(c.reload("main", "kv", Entries{{"b", 20}, {"c", 30}}));
  EXPECT_FALSE(r->get("kv", "a").value().has_value());
  EXPECT_EQ(r->get("kv", "b").value(), std::optional<Value>(20));
  EXPECT_EQ(r->get("kv", "c").value(), std::optional<Value>(30));

  // A refused entry leaves the old contents.
  const auto failed = c.reload("main", "kv", Entries{{"d", 1}, {std::string(5000, 'k'), 2}});
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, errc::limit_exceeded);
  EXPECT_EQ(r->size("kv").value(), 2u);
  EXPECT_EQ(c.reload("main", "nope", Entries{}).error().code, errc::not_found);

  std::lock_guard lock(m);
  EXPECT_NE(std::find(events.begin(), events.end(), "slither.store.reload.start:reload"),
            events.end());
  EXPECT_NE(std::find(events.begin(), events.end(), "slither.store.reload.stop:reload"),
            events.end());
  EXPECT_EQ(std::find(events.begin(), events.end(), "slither.store.write.start:reload"),
            events.end());
}

TEST_F(BrokerTest, TablesAreCreatedAndDroppedAtRunTime) {
  start();
  auto c = connect();
  auto r = shm::reader::attach(ns_, "main");
  ASSERT_TRUE(r);
  ASSERT_TRUE(c.create_table("main", "extra", "bag", 16));
  ASSERT_TRUE(c.put("main", "extra", "k", 1));
  ASSERT_TRUE(c.put("main", "extra", "k", 2));
  EXPECT_EQ(r->get_all("extra", "k").value(), (std::vector<Value>{1, 2}));
  auto info = c.attach_info("main");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->tables, (std::vector<std::string>{"kv", "events", "extra"}));

  EXPECT_EQ(c.create_table("main", "extra").error().code, errc::already_exists);
  EXPECT_EQ(c.create_table("main", "x", "tree").error().code, errc::invalid_argument);
  EXPECT_EQ(c.create_table("main", "x", "set", 0).error().code, errc::invalid_argument);
  EXPECT_EQ(c.create_table("nope", "x").error().code, errc::not_found);

  const auto declared = c.drop_table("main", "kv");
  ASSERT_FALSE(declared);
  EXPECT_EQ(declared.error().code, errc::invalid_argument);
  ASSERT_TRUE(c.drop_table("main", "extra"));
  EXPECT_EQ(r->get("extra", "k").error().code, errc::not_found);
  EXPECT_EQ(c.drop_table("main", "extra").error().code, errc::not_found);
}

TEST_F(BrokerTest, PutManyAtomicReachesTheStore) {
  start();
  auto c = connect();
  ASSERT_TRUE(c.put_many("main", "kv", Entries{{"a", 1}, {"b", 2}}, true));
  auto r = shm::reader::attach(ns_, "main");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get("kv", "b").value(), std::optional<Value>(2));
  // The encoded form carries the flag too.
  const buffer entries = encode(Value::list({Value::list({"c", 3})}));
  ASSERT_TRUE(c.put_many_encoded("main", "kv", entries, true));
  EXPECT_EQ(r->get("kv", "c").value(), std::optional<Value>(3));
}

}  // namespace
}  // namespace slither::test_support
