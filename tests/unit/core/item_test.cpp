#include "slither/core/item.hpp"

#include <gtest/gtest.h>

namespace slither {
namespace {

TEST(Item, WrapManyAssignsSequentialIds) {
  auto items = wrap_many({Value(1), Value("b"), Value(nullptr)}, 10);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].id, 10u);
  EXPECT_EQ(items[2].id, 12u);
  EXPECT_EQ(items[1].payload, Value("b"));
  EXPECT_TRUE(items[0].meta.empty());
  EXPECT_TRUE(items[0].route.empty());
}

TEST(Item, WrapKeepsPayload) {
  auto item = wrap(Value::map({{"k", 1}}), 5);
  EXPECT_EQ(item.id, 5u);
  EXPECT_EQ(item.payload["k"].as<std::int64_t>(), 1);
}

}  // namespace
}  // namespace slither
