#include "slither/core/value.hpp"

#include <gtest/gtest.h>

#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace slither {
namespace {

TEST(Value, AccessByKindAndKey) {
  Value v = Value::map({{"score", 0.5}, {"name", "ada"}, {"tags", Value::list({1, 2})}});
  EXPECT_TRUE(v.is_map());
  EXPECT_DOUBLE_EQ(v["score"].as<double>(), 0.5);
  EXPECT_EQ(v["name"].as<std::string>(), "ada");
  EXPECT_EQ(v["tags"][1].as<std::int64_t>(), 2);
  EXPECT_EQ(v.size(), 3u);
  EXPECT_EQ(v.find("missing"), nullptr);
}

TEST(Value, IntegerReadsAsDouble) {
  EXPECT_DOUBLE_EQ(Value(3).as<double>(), 3.0);
}

TEST(Value, KindMismatchNamesBothKinds) {
  Value v("text");
  try {
    (void)v.as<std::int64_t>();
    FAIL() << "expected an error";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("int64"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("string"), std::string::npos);
  }
}

TEST(Value, MissingKeyNamesTheKey) {
  const Value v = Value::map({{"a", 1}});
  try {
    (void)v["b"];
    FAIL() << "expected an error";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::not_found);
    EXPECT_NE(std::string(e.what()).find("'b'"), std::string::npos);
  }
}

TEST(Value, AnIndexPastTheEndNamesTheIndexAndTheSizeConstOrNot) {
  Value v = Value::list({1, 2});
  const Value& c = v;
  for (const bool mutable_access : {false, true}) {
    SCOPED_TRACE(mutable_access ? "mutable" : "const");
    try {
      (void)(mutable_access ? v[std::size_t{2}] : c[std::size_t{2}]);
      FAIL() << "expected an error";
    } catch (const error& e) {
      EXPECT_EQ(e.code(), errc::not_found);
      EXPECT_NE(std::string(e.what()).find("index 2 out of range for a list of 2"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(c[std::size_t{1}].as<std::int64_t>(), 2);
}

TEST(Value, MutableIndexBuildsMaps) {
  Value v;
  v["a"]["b"] = 7;
  EXPECT_EQ(v["a"]["b"].as<std::int64_t>(), 7);
}

TEST(Value, EqualityDistinguishesStringFromBytes) {
  EXPECT_NE(Value("ab"), Value(Bytes{"ab"}));
  EXPECT_EQ(Value(Bytes{"ab"}), Value(Bytes{"ab"}));
  EXPECT_NE(Value(1), Value(1.0));
}

TEST(Value, JsonRendering) {
  Value v = Value::map({{"b", Bytes{"\x01\xff"}}, {"n", nullptr}, {"x", Value::list({true, 2})}});
  EXPECT_EQ(v.to_string(), R"({"b":{"$bytes":"01ff"},"n":null,"x":[true,2]})");
  auto a = ndarray::zeros(dtype::f32, {2, 3});
  EXPECT_EQ(Value(a).to_string(), R"({"$ndarray":{"dtype":"float32","shape":[2,3]}})");
}

TEST(Value, FromJson) {
  auto v = Value::from_json(R"({"id": 3, "w": [0.5, 1], "big": 18446744073709551615})");
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ((*v)["id"].as<std::int64_t>(), 3);
  EXPECT_TRUE((*v)["w"][0].is_float());
  EXPECT_TRUE((*v)["big"].is_float());
  auto bad = Value::from_json("{nope");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_NE(bad.error().message.find("{nope"), std::string::npos);
}

TEST(Value, IsFortyBytes) {
  EXPECT_LE(sizeof(Value), 40u) << "a Value is a 32-byte union and a tag";
}

TEST(Value, CopiesAreDeepMovesLeaveNull) {
  Value a = Value::map({{"s", std::string(100, 'x')}, {"l", Value::list({1, 2})}});
  Value b = a;
  b["s"] = "changed";
  EXPECT_EQ(a["s"].as<std::string>(), std::string(100, 'x'));
  Value c = std::move(a);
  EXPECT_TRUE(a.is_null());  // NOLINT(bugprone-use-after-move): documented state
  EXPECT_EQ(c["l"][1], Value(2));
  Value d;
  d = std::move(c);
  EXPECT_TRUE(c.is_null());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(d.size(), 2u);
  Value s = 5;
  s = std::move(s);  // self-move keeps the value
  EXPECT_EQ(s, Value(5));
}

TEST(Value, AssigningAnElementToItsContainerIsSafe) {
  Value v = Value::list({Value::list({std::string(64, 'a')}), 2});
  v = std::move(v[0]);
  EXPECT_EQ(v, Value::list({std::string(64, 'a')}));
  Value m = Value::map({{"inner", Value::map({{"k", "v"}})}});
  m = m["inner"];  // a copy of its own element
  EXPECT_EQ(m, Value::map({{"k", "v"}}));
}

TEST(Value, EmplaceReplacesInPlace) {
  Value v = "text";
  auto& l = v.emplace<List>();
  l.push_back(1);
  EXPECT_EQ(v, Value::list({1}));
  v.emplace<std::int64_t>(7);
  EXPECT_EQ(v, Value(7));
  v.emplace<ndarray>(ndarray::zeros(dtype::u8, {3}));
  EXPECT_TRUE(v.is_ndarray());
  EXPECT_EQ(v.as<ndarray>().nbytes(), 3u);
}

TEST(Value, CopiedArraysShareTheirBuffer) {
  Value a(ndarray::zeros(dtype::f32, {4}));
  Value b = a;
  EXPECT_EQ(a.as<ndarray>().data(), b.as<ndarray>().data());
  EXPECT_EQ(a, b);
}

TEST(Ndarray, ZerosAreAlignedAndWritable) {
  auto a = ndarray::zeros(dtype::f64, {4, 5});
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.data()) % ndarray::alignment, 0u);
  EXPECT_EQ(a.nbytes(), 160u);
  EXPECT_EQ(a.size(), 20u);
  a.mutable_values<double>()[3] = 2.5;
  EXPECT_DOUBLE_EQ(a.values<double>()[3], 2.5);
  EXPECT_THROW((void)a.values<float>(), error);
}

TEST(Ndarray, ZeroDimensionalHoldsOneElement) {
  auto a = ndarray::zeros(dtype::i64, {});
  EXPECT_EQ(a.size(), 1u);
  EXPECT_EQ(a.nbytes(), 8u);
}

TEST(Ndarray, ViewsAreReadOnlyAndKeepOwnerAlive) {
  auto owner = std::make_shared<std::vector<std::byte>>(16, std::byte{1});
  auto v = ndarray::view(dtype::u8, std::vector<std::uint64_t>{16}, owner->data(), owner);
  std::weak_ptr<std::vector<std::byte>> weak = owner;
  owner.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_FALSE(v.writable());
  EXPECT_THROW((void)v.mutable_data(), error);
  EXPECT_EQ(v.values<std::uint8_t>()[15], 1);
}

TEST(Ndarray, RejectsOverflowingShapesAndTooManyDims) {
  EXPECT_THROW((void)ndarray::zeros(dtype::f64, {1ull << 62, 8}), error);
  EXPECT_THROW((void)ndarray::zeros(dtype::u8, std::vector<std::uint64_t>(33, 1)), error);
  EXPECT_THROW((void)ndarray::from_bytes(dtype::u8, {4}, {}), error);
  // Empty, yet its other dimensions overflow: refused, as numpy refuses it.
  EXPECT_EQ(ndarray::nbytes_for(dtype::f64, std::vector<std::uint64_t>{0, 1ull << 62}),
            std::nullopt);
  EXPECT_EQ(ndarray::nbytes_for(dtype::f64, std::vector<std::uint64_t>{0, 1ull << 20}), 0u);
}

TEST(Value, UnsignedIntegersConvertUpToInt64MaxAndThrowAbove) {
  EXPECT_EQ(Value(std::uint64_t{5}), Value(5));
  EXPECT_EQ(Value(std::size_t{7}).as<std::int64_t>(), 7);
  EXPECT_EQ(Value(static_cast<unsigned long long>(INT64_MAX)).as<std::int64_t>(), INT64_MAX);
  const std::uint64_t version = std::uint64_t{1} << 63;
  try {
    const Value v(version);
    FAIL() << "2^63 became " << v.to_string();
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("9223372036854775808"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Value(static_cast<unsigned long long>(-1)), error);
}

TEST(Value, PointersOtherThanStringsDoNotConvert) {
  static_assert(!std::is_constructible_v<Value, int*>);
  static_assert(!std::is_constructible_v<Value, const void*>);
  static_assert(!std::is_constructible_v<Value, const Value*>);
  static_assert(!std::is_convertible_v<double*, Value>);
  static_assert(std::is_constructible_v<Value, const char*>);
  static_assert(std::is_constructible_v<Value, char*>);
  char text[] = "abc";
  EXPECT_EQ(Value(text), Value("abc"));
  const char* p = text;
  EXPECT_TRUE(Value(p).is_string());
  EXPECT_TRUE(Value(nullptr).is_null());
  EXPECT_TRUE(Value(std::nullopt).is_null());
}

TEST(Value, MapAndListMoveTheirEntriesWhenGivenAVectorOrContainer) {
  std::string big(1 << 20, 'x');
  const char* big_data = big.data();
  std::vector<Map::value_type> entries;
  entries.emplace_back("big", std::move(big));
  entries.emplace_back("n", 1);
  entries.emplace_back("big", "ignored: the first of repeated keys wins");
  const Value m = Value::map(std::move(entries));
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m["big"].as<std::string>().data(), big_data) << "the string was copied";
  EXPECT_EQ(m["n"], Value(1));

  std::string other(1 << 20, 'y');
  const char* other_data = other.data();
  std::vector<Value> items;
  items.emplace_back(std::move(other));
  items.emplace_back(2);
  const Value l = Value::list(std::move(items));
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].as<std::string>().data(), other_data) << "the string was copied";

  Map built;
  built.emplace("k", Value::list({1, 2}));
  const Value from_map = Value::map(std::move(built));
  EXPECT_EQ(from_map["k"], Value::list({1, 2}));
  List list_entries{Value(1), Value("two")};
  EXPECT_EQ(Value::list(std::move(list_entries)), Value::list({1, "two"}));
  // The initializer-list forms still read as before.
  EXPECT_EQ(Value::map({{"a", 1}})["a"], Value(1));
  EXPECT_EQ(Value::map({}).size(), 0u);
  EXPECT_EQ(Value::list({}).size(), 0u);
}

TEST(Value, TryAsGivesThePointerOfTheHeldKindOnly) {
  Value i = 3;
  ASSERT_NE(i.try_as<std::int64_t>(), nullptr);
  EXPECT_EQ(*i.try_as<std::int64_t>(), 3);
  EXPECT_EQ(i.try_as<double>(), nullptr) << "no widening, unlike as<double>()";
  EXPECT_EQ(i.try_as<std::string>(), nullptr);
  Value s = "text";
  ASSERT_NE(s.try_as<std::string>(), nullptr);
  *s.try_as<std::string>() += "!";
  EXPECT_EQ(s, Value("text!"));
  const Value n;
  EXPECT_EQ(n.try_as<bool>(), nullptr);
}

TEST(Value, VisitCallsWithTheHeldAlternative) {
  const auto name = [](const Value& v) {
    return v.visit([](const auto& held) -> std::string {
      using H = std::remove_cvref_t<decltype(held)>;
      if constexpr (std::is_same_v<H, std::nullptr_t>) return "null";
      if constexpr (std::is_same_v<H, bool>) return held ? "true" : "false";
      if constexpr (std::is_same_v<H, std::int64_t>) return "int " + std::to_string(held);
      if constexpr (std::is_same_v<H, double>) return "float";
      if constexpr (std::is_same_v<H, std::string>) return "string " + held;
      if constexpr (std::is_same_v<H, Bytes>) return "bytes";
      if constexpr (std::is_same_v<H, List>) return "list of " + std::to_string(held.size());
      if constexpr (std::is_same_v<H, Map>) return "map of " + std::to_string(held.size());
      if constexpr (std::is_same_v<H, ndarray>) return "ndarray";
    });
  };
  EXPECT_EQ(name(Value()), "null");
  EXPECT_EQ(name(Value(true)), "true");
  EXPECT_EQ(name(Value(4)), "int 4");
  EXPECT_EQ(name(Value(0.5)), "float");
  EXPECT_EQ(name(Value("s")), "string s");
  EXPECT_EQ(name(Value(Bytes{"b"})), "bytes");
  EXPECT_EQ(name(Value::list({1, 2})), "list of 2");
  EXPECT_EQ(name(Value::map({{"a", 1}})), "map of 1");
  EXPECT_EQ(name(Value(ndarray::zeros(dtype::u8, {2}))), "ndarray");
  // The mutable form hands out the containers themselves.
  Value l = Value::list({1});
  l.visit([](auto&& held) {
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(held)>, List>) held.emplace_back(2);
  });
  EXPECT_EQ(l, Value::list({1, 2}));
}

TEST(Value, CopiesOfAnNdarrayValueShareItsBuffer) {
  Value a(ndarray::zeros(dtype::u8, {4}));
  const Value b = a;
  const Value in_list = Value::list({a});
  a.as_mut<ndarray>().mutable_data()[0] = std::byte{7};
  EXPECT_EQ(b.as<ndarray>().data()[0], std::byte{7});
  EXPECT_EQ(in_list[0].as<ndarray>().data(), a.as<ndarray>().data());
}

TEST(Dtype, ParsesNumpyNames) {
  EXPECT_EQ(parse_dtype("<f4"), dtype::f32);
  EXPECT_EQ(parse_dtype("float64"), dtype::f64);
  EXPECT_EQ(parse_dtype("|u1"), dtype::u8);
  EXPECT_EQ(parse_dtype("complex64"), std::nullopt);
  EXPECT_EQ(parse_dtype("|b1"), dtype::boolean);
  EXPECT_EQ(parse_dtype("bool"), dtype::boolean);
  EXPECT_EQ(parse_dtype("|i1"), dtype::i8);
  EXPECT_EQ(parse_dtype("<i2"), dtype::i16);
  EXPECT_EQ(parse_dtype("<u2"), dtype::u16);
  EXPECT_EQ(parse_dtype("<u4"), dtype::u32);
  EXPECT_EQ(parse_dtype("<u8"), dtype::u64);  // numpy's typestr: 8 bytes
  EXPECT_EQ(parse_dtype("u8"), dtype::u8);    // the enumerator's name, as before
  EXPECT_EQ(parse_dtype("<f2"), dtype::f16);
  EXPECT_EQ(parse_dtype("uint64"), dtype::u64);
  EXPECT_EQ(parse_dtype(""), std::nullopt);
  EXPECT_EQ(parse_dtype("<"), std::nullopt);
}

TEST(Dtype, EveryTypeHasANameThatParsesBackAndASize) {
  const std::tuple<dtype, std::string_view, std::size_t> rows[] = {
      {dtype::u8, "uint8", 1},    {dtype::i32, "int32", 4},   {dtype::i64, "int64", 8},
      {dtype::f32, "float32", 4}, {dtype::f64, "float64", 8}, {dtype::boolean, "bool", 1},
      {dtype::i8, "int8", 1},     {dtype::i16, "int16", 2},   {dtype::u16, "uint16", 2},
      {dtype::u32, "uint32", 4},  {dtype::u64, "uint64", 8},  {dtype::f16, "float16", 2}};
  for (const auto& [type, name, size] : rows) {
    EXPECT_TRUE(is_valid_dtype(static_cast<std::uint8_t>(type))) << name;
    EXPECT_EQ(to_string(type), name);
    EXPECT_EQ(parse_dtype(name), type) << name;
    EXPECT_EQ(dtype_size(type), size) << name;
  }
  EXPECT_FALSE(is_valid_dtype(0));
  EXPECT_FALSE(is_valid_dtype(static_cast<std::uint8_t>(dtype::f16) + 1));
}

TEST(Dtype, TypedAccessMatchesTheElementType) {
  auto a = ndarray::zeros(dtype::u16, {2});
  a.mutable_values<std::uint16_t>()[1] = 65535;
  EXPECT_EQ(a.values<std::uint16_t>()[1], 65535);
  EXPECT_THROW((void)a.values<std::int16_t>(), error);
  auto b = ndarray::zeros(dtype::boolean, {1});
  b.mutable_values<bool>()[0] = true;
  EXPECT_TRUE(b.values<bool>()[0]);
  EXPECT_THROW((void)b.values<std::uint8_t>(), error);
  EXPECT_EQ(ndarray::zeros(dtype::u64, {3}).values<std::uint64_t>().size(), 3u);
  EXPECT_EQ(ndarray::zeros(dtype::i8, {3}).values<std::int8_t>().size(), 3u);
  EXPECT_EQ(ndarray::zeros(dtype::u32, {3}).values<std::uint32_t>().size(), 3u);
  EXPECT_EQ(ndarray::zeros(dtype::f16, {3}).nbytes(), 6u);
}

}  // namespace
}  // namespace slither
