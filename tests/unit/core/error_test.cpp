// result<T> reads like std::expected<T, error_info>: values and errors build
// implicitly, the monadic members compose, SLITHER_TRY propagates, and misuse
// throws slither::error rather than std::bad_variant_access.
#include "slither/core/error.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "slither/core/value.hpp"

namespace slither {
namespace {

result<Value> answer() {
  return 42;
}
result<Value> greeting() {
  return "abc";
}
result<std::optional<int>> nothing() {
  return std::nullopt;
}
result<Value> missing() {
  return fail(errc::not_found, "no key 'k'");
}
result<std::unique_ptr<int>> boxed() {
  return std::make_unique<int>(7);
}

TEST(Result, ReturnStatementsBuildValuesThroughConversions) {
  EXPECT_EQ(answer().value(), Value(42));
  EXPECT_EQ(greeting().value(), Value("abc"));
  ASSERT_TRUE(nothing());
  EXPECT_FALSE(nothing()->has_value());
  EXPECT_EQ(*boxed().value(), 7);
  const result<std::vector<int>> empty;
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
  const result<std::vector<int>> three(std::in_place, 3, 1);
  EXPECT_EQ(*three, (std::vector<int>{1, 1, 1}));
  static_assert(std::is_same_v<result<int>::value_type, int>);
  static_assert(std::is_same_v<result<int>::error_type, error_info>);
}

TEST(Result, ValueOrGivesTheFallbackOnlyForAnError) {
  EXPECT_EQ(answer().value_or(0), Value(42));
  EXPECT_EQ(missing().value_or("fallback"), Value("fallback"));
  const result<std::string> kept = std::string("kept");
  EXPECT_EQ(kept.value_or("other"), "kept");
}

TEST(Result, AndThenChainsAndStopsAtTheFirstError) {
  int calls = 0;
  auto doubled = result<int>(21).and_then([&](int v) -> result<int> {
    ++calls;
    return v * 2;
  });
  EXPECT_EQ(doubled.value(), 42);
  auto failed = result<int>(fail(errc::busy, "full")).and_then([&](int v) -> result<int> {
    ++calls;
    return v;
  });
  EXPECT_EQ(calls, 1);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, errc::busy);
  EXPECT_EQ(failed.error().message, "full");
  // From void to a value and back.
  auto from_void = result<void>().and_then([]() -> result<std::string> { return "x"; });
  EXPECT_EQ(from_void.value(), "x");
  auto to_void = result<int>(1).and_then([](int) -> result<void> { return {}; });
  EXPECT_TRUE(to_void);
}

TEST(Result, TransformMapsTheValueAndKeepsTheError) {
  const result<int> one = 1;
  const auto text = one.transform([](int v) { return std::to_string(v); });
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(text)>, result<std::string>>);
  EXPECT_EQ(text.value(), "1");
  int seen = 0;
  auto v = one.transform([&](int x) { seen = x; });
  static_assert(std::is_same_v<decltype(v), result<void>>);
  EXPECT_TRUE(v);
  EXPECT_EQ(seen, 1);
  auto err = missing().transform([](const Value&) { return 1; });
  ASSERT_FALSE(err);
  EXPECT_EQ(err.error().code, errc::not_found);
  // Moves out of an rvalue result.
  auto moved = boxed().transform([](std::unique_ptr<int>&& p) { return *p + 1; });
  EXPECT_EQ(moved.value(), 8);
}

TEST(Result, OrElseRecoversFromAnErrorOnly) {
  auto recovered = missing().or_else([](const error_info& e) -> result<Value> {
    return e.code == errc::not_found ? result<Value>(Value()) : result<Value>(e);
  });
  ASSERT_TRUE(recovered);
  EXPECT_TRUE(recovered->is_null());
  int calls = 0;
  auto kept = answer().or_else([&](const error_info&) -> result<Value> {
    ++calls;
    return 0;
  });
  EXPECT_EQ(kept.value(), Value(42));
  EXPECT_EQ(calls, 0);
  auto void_recovered =
      result<void>(fail(errc::busy, "x")).or_else([](error_info) -> result<void> { return {}; });
  EXPECT_TRUE(void_recovered);
  auto renamed = missing().transform_error([](error_info e) {
    e.message = "store 's': " + e.message;
    return e;
  });
  EXPECT_EQ(renamed.error().message, "store 's': no key 'k'");
}

TEST(Result, MisuseThrowsSlitherErrorNotBadVariantAccess) {
  result<int> err = fail(errc::timeout, "late");
  EXPECT_THROW((void)*err, error);
  EXPECT_THROW((void)err.operator->(), error);
  try {
    (void)*err;
    FAIL() << "operator* on an error returned";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::internal);
  }
  try {
    (void)err.value();
    FAIL() << "value() on an error returned";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::timeout);
    EXPECT_NE(std::string(e.what()).find("late"), std::string::npos);
  }
  result<int> ok = 1;
  EXPECT_THROW((void)ok.error(), error);
  const result<void> fine;
  EXPECT_THROW((void)fine.error(), error);
  const result<void> bad = fail(errc::busy, "x");
  EXPECT_THROW(*bad, error);
}

result<int> parse_positive(int v) {
  if (v <= 0) return fail(errc::invalid_argument, "not positive: " + std::to_string(v));
  return v;
}
result<void> check(int v) {
  SLITHER_TRY(parse_positive(v));
  return {};
}
result<std::string> describe(int a, int b) {
  SLITHER_TRY_ASSIGN(const int x, parse_positive(a));
  SLITHER_TRY_ASSIGN(auto y, parse_positive(b));
  int z = 0;
  SLITHER_TRY_ASSIGN(z, parse_positive(a + b));
  return std::to_string(x) + "+" + std::to_string(y) + "=" + std::to_string(z);
}

TEST(Result, TryPropagatesTheFirstErrorAndAssignsValues) {
  EXPECT_TRUE(check(1));
  ASSERT_FALSE(check(-1));
  EXPECT_EQ(check(-1).error().message, "not positive: -1");
  EXPECT_EQ(describe(1, 2).value(), "1+2=3");
  ASSERT_FALSE(describe(1, -5));
  EXPECT_EQ(describe(1, -5).error().message, "not positive: -5");
  EXPECT_EQ(describe(-3, 5).error().message, "not positive: -3");
}

}  // namespace
}  // namespace slither
