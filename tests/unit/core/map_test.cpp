#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "slither/core/value.hpp"

namespace slither {
namespace {

std::vector<std::string> keys_of(const Map& m) {
  std::vector<std::string> out;
  for (const auto& [k, v] : m) out.push_back(k);
  return out;
}

TEST(Map, KeepsInsertionOrder) {
  Map m{{"b", 1}, {"a", 2}, {"c", 3}};
  m["z"] = 4;
  m.emplace("m", 5);
  m.insert_or_assign("a", 20);  // replaced in place
  EXPECT_EQ(keys_of(m), (std::vector<std::string>{"b", "a", "c", "z", "m"}));
  EXPECT_EQ(m.at("a"), Value(20));
}

TEST(Map, FirstOfRepeatedKeysWinsAsInStdMap) {
  Map m{{"a", 1}, {"a", 2}};
  EXPECT_EQ(m.size(), 1u);
  EXPECT_EQ(m.at("a"), Value(1));
  EXPECT_FALSE(m.emplace("a", 3).second);
  EXPECT_FALSE(m.try_append("a").second);
  EXPECT_EQ(m.at("a"), Value(1));
}

TEST(Map, LookupsAgreeBelowAndAboveTheIndexThreshold) {
  Map m;
  for (int i = 0; i < 200; ++i) {
    const std::string k = "key-" + std::to_string(i * 7919 % 1000);
    ASSERT_TRUE(m.try_emplace(k, i).second) << k;
    for (int j = 0; j <= i; ++j) {
      const std::string seen = "key-" + std::to_string(j * 7919 % 1000);
      ASSERT_TRUE(m.contains(seen)) << seen << " after " << i + 1 << " inserts";
      ASSERT_EQ(m.find(seen)->second, Value(j));
    }
    ASSERT_FALSE(m.contains("absent"));
  }
  EXPECT_EQ(m.count("key-0"), 1u);
  EXPECT_EQ(m.find("nope"), m.end());
}

TEST(Map, EraseKeepsTheOrderOfTheRest) {
  Map m;
  for (int i = 0; i < 20; ++i) m[std::to_string(i)] = i;
  EXPECT_EQ(m.erase("5"), 1u);
  EXPECT_EQ(m.erase("5"), 0u);
  auto it = m.erase(m.find("0"));
  EXPECT_EQ(it->first, "1");
  EXPECT_EQ(m.size(), 18u);
  EXPECT_FALSE(m.contains("5"));
  EXPECT_TRUE(m.contains("19"));
  EXPECT_EQ(keys_of(m).front(), "1");
  EXPECT_EQ(keys_of(m)[4], "6");
}

TEST(Map, EqualityIgnoresOrder) {
  const Map a{{"x", 1}, {"y", 2}};
  const Map b{{"y", 2}, {"x", 1}};
  EXPECT_EQ(a, b);
  EXPECT_NE(a, (Map{{"x", 1}, {"y", 3}}));
  EXPECT_NE(a, (Map{{"x", 1}}));
  EXPECT_EQ(Value(a), Value(b));
}

TEST(Map, CopiesAreIndependentAndIndexed) {
  Map a;
  for (int i = 0; i < 50; ++i) a[std::to_string(i)] = i;
  Map b = a;
  b["new"] = 1;
  b.erase("3");
  EXPECT_FALSE(a.contains("new"));
  EXPECT_TRUE(a.contains("3"));
  EXPECT_TRUE(b.contains("49"));
  Map c;
  c = b;
  EXPECT_EQ(c, b);
  Map d = std::move(c);
  EXPECT_TRUE(d.contains("new"));
}

TEST(Map, AtNamesAMissingKey) {
  const Map m{{"a", 1}};
  try {
    (void)m.at("zz");
    FAIL() << "expected an error";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::not_found);
    EXPECT_NE(std::string(e.what()).find("'zz'"), std::string::npos);
  }
}

TEST(Map, JsonKeepsKeyOrder) {
  auto v = Value::from_json(R"({"zeta": 1, "alpha": 2, "mid": {"y": 1, "b": 2}})");
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(keys_of(v->as<Map>()), (std::vector<std::string>{"zeta", "alpha", "mid"}));
  EXPECT_EQ(v->to_string(), R"({"zeta":1,"alpha":2,"mid":{"y":1,"b":2}})");
}

}  // namespace
}  // namespace slither
