#include "slither/core/telemetry.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace slither {
namespace {

TEST(Telemetry, DeliversByPrefixUntilDetached) {
  std::vector<std::string> seen;
  {
    auto a = telemetry::attach(
        "slither.bridge.", [&](std::string_view event, const Map& m, const Map& meta) {
          seen.push_back(std::string(event) + ":" + std::to_string(m.at("n").as<std::int64_t>()) +
                         ":" + meta.at("view").as<std::string>());
        });
    EXPECT_TRUE(telemetry::enabled());
    telemetry::emit("slither.bridge.view.start", {{"n", 1}}, {{"view", "top"}});
    telemetry::emit("slither.store.write.start", {{"n", 2}}, {{"view", "x"}});
  }
  telemetry::emit("slither.bridge.view.stop", {{"n", 3}}, {{"view", "top"}});
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], "slither.bridge.view.start:1:top");
  EXPECT_FALSE(telemetry::enabled());
}

TEST(Telemetry, ThrowingHandlerDoesNotBreakEmitter) {
  int calls = 0;
  auto bad = telemetry::attach(
      "", [](std::string_view, const Map&, const Map&) { throw std::runtime_error("boom"); });
  auto good = telemetry::attach("", [&](std::string_view, const Map&, const Map&) { ++calls; });
  EXPECT_NO_THROW(telemetry::emit("slither.pipe.run.start", {}));
  EXPECT_EQ(calls, 1);
}

TEST(Telemetry, HandlerMayDetachItself) {
  telemetry::attachment self;
  int calls = 0;
  self = telemetry::attach("", [&](std::string_view, const Map&, const Map&) {
    ++calls;
    self.detach();
  });
  telemetry::emit("a", {});
  telemetry::emit("b", {});
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace slither
