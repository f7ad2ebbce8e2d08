#include "slither/core/codec.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

namespace slither {
namespace {

// Generates random Values of every kind, nested up to `depth`.
class value_gen {
 public:
  explicit value_gen(std::uint64_t seed) : rng_(seed) {}

  Value any(int depth) {
    const int kinds = depth > 0 ? 9 : 7;
    switch (pick(kinds)) {
      case 0:
        return Value{};
      case 1:
        return Value(pick(2) == 1);
      case 2:
        return Value(static_cast<std::int64_t>(rng_()));
      case 3:
        return Value(std::uniform_real_distribution<double>(-1e9, 1e9)(rng_));
      case 4:
        return Value(text(pick(3) == 0 ? 300 : 12));
      case 5:
        return Value(Bytes{text(pick(40))});
      case 6:
        return Value(array());
      case 7: {
        List l;
        for (int i = 0, n = pick(6); i < n; ++i) l.push_back(any(depth - 1));
        return Value(std::move(l));
      }
      default: {
        Map m;
        for (int i = 0, n = pick(6); i < n; ++i) m[text(8)] = any(depth - 1);
        return Value(std::move(m));
      }
    }
  }

  ndarray array() {
    const auto type = static_cast<dtype>(1 + pick(5));
    std::vector<std::uint64_t> shape(static_cast<std::size_t>(pick(4)));  // 0-d included
    for (auto& d : shape) d = static_cast<std::uint64_t>(pick(5));        // empty dims too
    auto a = ndarray::zeros(type, shape);
    auto* p = a.mutable_data();
    for (std::size_t i = 0; i < a.nbytes(); ++i) p[i] = static_cast<std::byte>(rng_());
    return a;
  }

  std::string text(int max_len) {
    std::string s(static_cast<std::size_t>(pick(max_len + 1)), '\0');
    for (auto& c : s) c = static_cast<char>(rng_());
    return s;
  }

  int pick(int n) { return static_cast<int>(rng_() % static_cast<unsigned>(n)); }

 private:
  std::mt19937_64 rng_;
};

std::span<const std::byte> span_of(const buffer& b) {
  return {b.data(), b.size()};
}

TEST(Codec, RandomValuesRoundTrip) {
  value_gen gen(42);
  for (int i = 0; i < 3000; ++i) {
    const Value v = gen.any(4);
    const auto bytes = encode(v);
    ASSERT_EQ(bytes.size(), encoded_size(v));
    auto back = decode(span_of(bytes));
    ASSERT_TRUE(back) << back.error().message << " for " << v.to_string();
    ASSERT_EQ(*back, v) << v.to_string();
  }
}

TEST(Codec, EdgeValuesRoundTrip) {
  std::vector<Value> values = {Value{},
                               Value(true),
                               Value(std::numeric_limits<std::int64_t>::min()),
                               Value(std::numeric_limits<double>::infinity()),
                               Value(""),
                               Value(Bytes{}),
                               Value(List{}),
                               Value(Map{}),
                               Value(ndarray::zeros(dtype::f32, {0})),
                               Value(ndarray::zeros(dtype::i64, {})),
                               Value(std::string(1 << 20, 'x')),
                               Value(ndarray::zeros(dtype::f64, {3, 4, 5, 6}))};
  for (const auto& v : values) {
    auto back = decode(span_of(encode(v)));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, v) << v.to_string();
  }
}

TEST(Codec, DecodedArraysAreAligned) {
  auto a = ndarray::zeros(dtype::f32, {1000});
  auto back = decode(span_of(encode(Value(a))));
  ASSERT_TRUE(back);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(back->as<ndarray>().data()) % 64, 0u);
}

TEST(Codec, EveryTruncationIsAnError) {
  value_gen gen(7);
  Value v = Value::map({{"a", gen.any(3)}, {"b", Value(gen.array())}, {"c", "text"}});
  const auto bytes = encode(v);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    auto r = decode({bytes.data(), n});
    ASSERT_FALSE(r) << "truncated at " << n << " decoded";
    EXPECT_EQ(r.error().code, errc::decode_error);
    EXPECT_FALSE(r.error().message.empty());
  }
}

// Overwrites the 8 bytes at `offset` with `value`.
void patch_u64(buffer& b, std::size_t offset, std::uint64_t value) {
  std::memcpy(b.data() + offset, &value, 8);
}

TEST(Codec, HugeLengthsAreRejectedBeforeAllocating) {
  for (auto kind : {Value("abc"), Value(Bytes{"abc"}), Value::list({1}), Value::map({{"k", 1}})}) {
    auto b = encode(kind);
    patch_u64(b, 2, std::uint64_t{1} << 63);  // version, tag, then the length
    auto r = decode(span_of(b));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::decode_error);
    EXPECT_NE(r.error().message.find("9223372036854775808"), std::string::npos)
        << r.error().message;
  }
}

TEST(Codec, HugeArrayShapeIsRejected) {
  auto b = encode(Value(ndarray::zeros(dtype::f64, {2, 2})));
  patch_u64(b, 4, std::uint64_t{1} << 40);  // version, tag, dtype, ndim, then dim 0
  auto r = decode(span_of(b));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("ndarray"), std::string::npos);
}

TEST(Codec, DeepNestingIsRejected) {
  // 10^6 nested one-element lists, written by hand (no Value that deep exists).
  const std::size_t depth = 1'000'000;
  buffer b;
  b.push_back(std::byte{codec_version});
  for (std::size_t i = 0; i < depth; ++i) {
    b.push_back(static_cast<std::byte>(Value::kind::list));
    const std::uint64_t one = 1;
    const auto* p = reinterpret_cast<const std::byte*>(&one);
    b.insert(b.end(), p, p + 8);
  }
  b.push_back(std::byte{0});
  auto r = decode(span_of(b));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("deeper"), std::string::npos);
}

TEST(Codec, EncodingTooDeepIsRefused) {
  Value v;
  for (int i = 0; i < 200; ++i) v = Value(List{std::move(v)});
  EXPECT_THROW((void)encode(v), error);
}

TEST(Codec, WrongTagsAreErrors) {
  auto b = encode(Value(1));
  b[1] = std::byte{99};
  auto r = decode(span_of(b));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("type tag 99"), std::string::npos);

  auto bad_bool = encode(Value(true));
  bad_bool[2] = std::byte{7};
  EXPECT_FALSE(decode(span_of(bad_bool)));

  auto bad_dtype = encode(Value(ndarray::zeros(dtype::u8, {1})));
  bad_dtype[2] = std::byte{0};
  EXPECT_FALSE(decode(span_of(bad_dtype)));

  auto bad_version = encode(Value(1));
  bad_version[0] = std::byte{200};
  EXPECT_FALSE(decode(span_of(bad_version)));
}

TEST(Codec, TrailingBytesAndUnorderedKeysAreErrors) {
  auto b = encode(Value(1));
  b.push_back(std::byte{0});
  EXPECT_FALSE(decode(span_of(b)));

  // Swap the two keys "a" and "b" so they are out of order.
  auto m = encode(Value::map({{"a", 1}, {"b", 2}}));
  std::size_t first = 2 + 8 + 8;           // version, tag, count, key length
  std::size_t second = first + 1 + 9 + 8;  // key, value, next key length
  std::swap(m[first], m[second]);
  auto r = decode(span_of(m));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("order"), std::string::npos);
}

TEST(Codec, PeekTextSeesStringsAndBytesInPlace) {
  const auto s = encode(Value("héllo"));
  auto t = peek_text(span_of(s));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->first, Value::kind::string);
  EXPECT_EQ(t->second, "héllo");
  EXPECT_EQ(static_cast<const void*>(t->second.data()), static_cast<const void*>(s.data() + 10));

  const auto b = encode(Value(Bytes{std::string("\0\1", 2)}));
  auto tb = peek_text(span_of(b));
  ASSERT_TRUE(tb);
  EXPECT_EQ(tb->first, Value::kind::bytes);
  EXPECT_EQ(tb->second, std::string_view("\0\1", 2));

  EXPECT_FALSE(peek_text(span_of(encode(Value(7)))));
  auto truncated = s;
  truncated.pop_back();
  EXPECT_FALSE(peek_text(span_of(truncated))) << "a length that disagrees is not text";
  EXPECT_FALSE(peek_text({s.data(), 5}));
}

TEST(Codec, MessageSizeLimit) {
  auto b = encode(Value(std::string(1000, 'x')));
  decode_limits limits;
  limits.max_message_bytes = 100;
  auto r = decode(span_of(b), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
}

TEST(Codec, RandomGarbageNeverCrashes) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 20000; ++i) {
    buffer b(static_cast<std::size_t>(rng() % 64));
    for (auto& x : b) x = static_cast<std::byte>(rng() % 12);  // small bytes hit valid tags
    if (!b.empty()) b[0] = std::byte{codec_version};
    (void)decode(span_of(b));
    (void)decode_batch(span_of(b));
  }
}

TEST(Codec, ItemsAndBatchesRoundTrip) {
  value_gen gen(3);
  std::vector<Item> items;
  for (int i = 0; i < 50; ++i) {
    Item it = wrap(gen.any(3), static_cast<std::uint64_t>(i) * 7);
    it.meta["attempt"] = i;
    it.route = i % 2 ? "left" : "";
    items.push_back(std::move(it));
  }
  auto one = decode_item(span_of(encode(items[3])));
  ASSERT_TRUE(one) << one.error().message;
  EXPECT_EQ(*one, items[3]);
  auto all = decode_batch(span_of(encode_batch(items)));
  ASSERT_TRUE(all) << all.error().message;
  EXPECT_EQ(*all, items);
}

TEST(Codec, BatchCountLimits) {
  std::vector<Item> items = wrap_many({Value(1), Value(2), Value(3)});
  auto b = encode_batch(items);
  decode_limits limits;
  limits.max_batch_items = 2;
  auto r = decode_batch(span_of(b), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  patch_u64(b, 1, std::uint64_t{1} << 62);
  EXPECT_FALSE(decode_batch(span_of(b)));
}

}  // namespace
}  // namespace slither
