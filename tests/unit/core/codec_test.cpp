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
      case 2:  // every width of int: one-byte forms, short and long varints
        return Value(static_cast<std::int64_t>(rng_()) >> pick(64));
      case 3:
        return Value(std::uniform_real_distribution<double>(-1e9, 1e9)(rng_));
      case 4:  // around the short-string limit, and long
        return Value(text(pick(3) == 0 ? 300 : 40));
      case 5:
        return Value(Bytes{text(pick(40))});
      case 6:
        return Value(array());
      case 7: {  // around the short-list limit
        List l;
        for (int i = 0, n = pick(3) == 0 ? 14 + pick(6) : pick(6); i < n; ++i) {
          l.push_back(any(depth - 1));
        }
        return Value(std::move(l));
      }
      default: {  // around the short-map and indexed-map limits
        Map m;
        for (int i = 0, n = pick(3) == 0 ? 7 + pick(12) : pick(6); i < n; ++i) {
          m[text(8)] = any(depth - 1);
        }
        return Value(std::move(m));
      }
    }
  }

  ndarray array() {
    const auto type = static_cast<dtype>(1 + pick(static_cast<int>(dtype::f16)));  // every dtype
    std::vector<std::uint64_t> shape(static_cast<std::size_t>(pick(4)));           // 0-d included
    for (auto& d : shape) d = static_cast<std::uint64_t>(pick(9));                 // empty dims too
    auto a = ndarray::zeros(type, shape);
    auto* p = a.mutable_data();
    const unsigned mask = type == dtype::boolean ? 1u : 0xffu;  // a bool byte is 0 or 1
    for (std::size_t i = 0; i < a.nbytes(); ++i) p[i] = static_cast<std::byte>(rng_() & mask);
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

// A message made of raw bytes: the version byte, then `body`.
buffer raw(std::initializer_list<int> body) {
  buffer b{std::byte{codec_version}};
  for (int x : body) b.push_back(static_cast<std::byte>(x));
  return b;
}

// Appends `v` as an unsigned LEB128 varint.
void put_uvar(buffer& b, std::uint64_t v) {
  while (v >= 0x80) {
    b.push_back(static_cast<std::byte>(v | 0x80));
    v >>= 7;
  }
  b.push_back(static_cast<std::byte>(v));
}

TEST(Codec, HugeLengthsAreRejectedBeforeAllocating) {
  for (int tag : {0xc5, 0xc6, 0xc7, 0xc8}) {  // string, bytes, list, map
    buffer b = raw({tag});
    put_uvar(b, std::uint64_t{1} << 63);
    b.push_back(std::byte{0});
    auto r = decode(span_of(b));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::decode_error);
    EXPECT_NE(r.error().message.find("9223372036854775808"), std::string::npos)
        << r.error().message;
  }
}

TEST(Codec, HugeArrayShapeIsRejected) {
  buffer b = raw({0xc9, static_cast<int>(dtype::f64), 2});
  put_uvar(b, std::uint64_t{1} << 40);
  put_uvar(b, std::uint64_t{1} << 40);
  auto r = decode(span_of(b));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("ndarray"), std::string::npos) << r.error().message;
}

TEST(Codec, EveryDtypeRoundTripsWithItsCode) {
  // The codes are the wire format's and the store layout's: they must not move.
  const std::pair<dtype, int> codes[] = {{dtype::u8, 1},   {dtype::i32, 2},  {dtype::i64, 3},
                                         {dtype::f32, 4},  {dtype::f64, 5},  {dtype::boolean, 6},
                                         {dtype::i8, 7},   {dtype::i16, 8},  {dtype::u16, 9},
                                         {dtype::u32, 10}, {dtype::u64, 11}, {dtype::f16, 12}};
  for (const auto& [type, code] : codes) {
    SCOPED_TRACE(std::string(to_string(type)));
    auto a = ndarray::zeros(type, {3});
    a.mutable_data()[0] = std::byte{1};
    const buffer b = encode(Value(a));
    EXPECT_EQ(std::to_integer<int>(b[2]), code);
    auto back = decode(span_of(b));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(back->as<ndarray>(), a);
  }
  EXPECT_FALSE(is_valid_dtype(13));
}

TEST(Codec, BoolArrayBytesOtherThanZeroOrOneAreRefused) {
  auto a = ndarray::zeros(dtype::boolean, {4});
  a.mutable_values<bool>()[3] = true;
  buffer b = encode(Value(a));
  auto ok = decode(span_of(b));
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->as<ndarray>().values<bool>()[3], true);

  b.back() = std::byte{2};  // the last element's byte
  auto r = decode(span_of(b));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::decode_error);
  EXPECT_NE(r.error().message.find("bool ndarray element 3 is 2"), std::string::npos)
      << r.error().message;

  // Out of band too: the frame is checked before an array is made over it.
  std::vector<ndarray> arrays;
  const buffer head = encode(Value(a), arrays);
  std::vector<std::byte> frame(4, std::byte{0});
  frame[1] = std::byte{7};
  auto oob = decode(span_of(head), std::vector<std::span<const std::byte>>{frame});
  ASSERT_FALSE(oob);
  EXPECT_NE(oob.error().message.find("bool ndarray element 1 is 7"), std::string::npos)
      << oob.error().message;
}

TEST(Codec, DeepNestingIsRejected) {
  // 10^6 nested one-element lists, written by hand (no Value that deep exists).
  const std::size_t depth = 1'000'000;
  buffer b{std::byte{codec_version}};
  b.insert(b.end(), depth, std::byte{0xa1});
  b.push_back(std::byte{0});
  auto r = decode(span_of(b));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("deeper"), std::string::npos);
}

TEST(Codec, NestingUpToTheLimitDecodes) {
  Value v;
  for (int i = 0; i < 128; ++i) v = Value(List{std::move(v)});
  auto back = decode(span_of(encode(v)));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, v);
}

TEST(Codec, EncodingTooDeepIsRefused) {
  Value v;
  for (int i = 0; i < 129; ++i) v = Value(List{std::move(v)});
  EXPECT_THROW((void)encode(v), error);
}

TEST(Codec, WrongTagsAreErrors) {
  auto r = decode(span_of(raw({0xcb})));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("type tag 203"), std::string::npos) << r.error().message;

  auto bad_dtype = encode(Value(ndarray::zeros(dtype::u8, {1})));
  bad_dtype[2] = std::byte{0};
  EXPECT_FALSE(decode(span_of(bad_dtype)));

  auto bad_version = encode(Value(1));
  bad_version[0] = std::byte{200};
  auto v = decode(span_of(bad_version));
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().message.find("codec version 200"), std::string::npos);

  auto key_not_text = decode(span_of(raw({0xb1, 0x01, 0x01})));  // {1: 1}
  ASSERT_FALSE(key_not_text);
  EXPECT_NE(key_not_text.error().message.find("is not a string"), std::string::npos);
}

TEST(Codec, TrailingBytesAreErrors) {
  auto b = encode(Value(1));
  b.push_back(std::byte{0});
  auto r = decode(span_of(b));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("trailing"), std::string::npos);
}

TEST(Codec, MapsKeepInsertionOrder) {
  Map m;
  for (const char* k : {"zeta", "alpha", "mid", "beta"}) m[k] = std::string(k);
  const auto bytes = encode(Value(m));
  auto back = decode(span_of(bytes));
  ASSERT_TRUE(back);
  std::vector<std::string> keys;
  for (const auto& [k, v] : back->as<Map>()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"zeta", "alpha", "mid", "beta"}));
  EXPECT_EQ(encode(*back), bytes);
}

TEST(Codec, RepeatedKeysAreErrors) {
  // {"a": 1, "a": 2} in the short form, and a long map whose last key repeats its first.
  auto r = decode(span_of(raw({0xb2, 0x81, 'a', 0x01, 0x81, 'a', 0x02})));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::decode_error);
  EXPECT_NE(r.error().message.find("map key 'a'"), std::string::npos) << r.error().message;

  // A key that is not text is quoted printably.
  auto binary = decode(span_of(raw({0xb2, 0x81, 0xff, 0x01, 0x81, 0xff, 0x02})));
  ASSERT_FALSE(binary);
  EXPECT_NE(binary.error().message.find("map key '\\xff'"), std::string::npos)
      << binary.error().message;

  buffer big = raw({0xc8, 20});
  for (int i = 0; i < 20; ++i) {
    std::string key = "k";  // (not "k" + ...: GCC 12 warns falsely about that)
    key += std::to_string(i == 19 ? 0 : i);
    big.push_back(static_cast<std::byte>(0x80 | key.size()));
    for (char c : key) big.push_back(static_cast<std::byte>(c));
    big.push_back(std::byte{0xc0});
  }
  auto rb = decode(span_of(big));
  ASSERT_FALSE(rb);
  EXPECT_NE(rb.error().message.find("map key 'k0'"), std::string::npos) << rb.error().message;
}

TEST(Codec, PeekTextSeesStringsAndBytesInPlace) {
  const auto s = encode(Value("héllo"));
  auto t = peek_text(span_of(s));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->first, Value::kind::string);
  EXPECT_EQ(t->second, "héllo");
  EXPECT_EQ(static_cast<const void*>(t->second.data()), static_cast<const void*>(s.data() + 2));

  const std::string long_text(300, 'x');
  const auto l = encode(Value(long_text));
  auto tl = peek_text(span_of(l));
  ASSERT_TRUE(tl);
  EXPECT_EQ(tl->second, long_text);

  const auto b = encode(Value(Bytes{std::string("\0\1", 2)}));
  auto tb = peek_text(span_of(b));
  ASSERT_TRUE(tb);
  EXPECT_EQ(tb->first, Value::kind::bytes);
  EXPECT_EQ(tb->second, std::string_view("\0\1", 2));

  EXPECT_FALSE(peek_text(span_of(encode(Value(7)))));
  auto truncated = s;
  truncated.pop_back();
  EXPECT_FALSE(peek_text(span_of(truncated))) << "a length that disagrees is not text";
  EXPECT_FALSE(peek_text({s.data(), 1}));
  // A short string in the long form is not canonical: decode refuses it, so must peek_text.
  EXPECT_FALSE(peek_text(span_of(raw({0xc5, 0x01, 'x'}))));
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
    for (auto& x : b) {
      // Mostly tags and small lengths, so the parser gets past the first byte.
      const auto r = rng();
      x = static_cast<std::byte>(r % 3 == 0 ? 0xc0 + (r >> 8) % 12 : (r >> 8) % 256);
    }
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
  buffer huge{std::byte{codec_version}};
  put_uvar(huge, std::uint64_t{1} << 62);
  huge.insert(huge.end(), 16, std::byte{0});
  auto rh = decode_batch(span_of(huge));
  ASSERT_FALSE(rh);
  EXPECT_EQ(rh.error().code, errc::decode_error);
}

TEST(Codec, ItemMetaMustBeAMapAndRouteAString) {
  // id 1, payload null, then meta 7 (not a map) / then route 7 (not a string).
  auto bad_meta = decode_item(span_of(raw({0x01, 0xc0, 0x07, 0x80})));
  ASSERT_FALSE(bad_meta);
  EXPECT_NE(bad_meta.error().message.find("meta is not a map"), std::string::npos);
  auto bad_route = decode_item(span_of(raw({0x01, 0xc0, 0xb0, 0x07})));
  ASSERT_FALSE(bad_route);
  EXPECT_NE(bad_route.error().message.find("route is not a string"), std::string::npos);
  auto ok = decode_item(span_of(raw({0x01, 0xc0, 0xb0, 0x80})));
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->id, 1u);
}

}  // namespace
}  // namespace slither
