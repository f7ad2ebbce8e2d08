// The wire format's exact forms, the canonical-form checks, the decoded-size
// limit, out-of-band arrays, alignment and splicing.
#include "slither/core/wire.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "slither/core/codec.hpp"

namespace slither {
namespace {

std::span<const std::byte> span_of(const buffer& b) {
  return {b.data(), b.size()};
}

buffer raw(std::initializer_list<int> body) {
  buffer b{std::byte{codec_version}};
  for (int x : body) b.push_back(static_cast<std::byte>(x));
  return b;
}

// The bytes after the version byte, as ints, for readable expectations.
std::vector<int> body_of(const Value& v) {
  const buffer b = encode(v);
  std::vector<int> out;
  for (std::size_t i = 1; i < b.size(); ++i) out.push_back(std::to_integer<int>(b[i]));
  return out;
}

TEST(Wire, ScalarsTakeTheirShortestForms) {
  EXPECT_EQ(body_of(Value{}), (std::vector<int>{0xc0}));
  EXPECT_EQ(body_of(Value(false)), (std::vector<int>{0xc1}));
  EXPECT_EQ(body_of(Value(true)), (std::vector<int>{0xc2}));
  EXPECT_EQ(body_of(Value(0)), (std::vector<int>{0x00}));
  EXPECT_EQ(body_of(Value(127)), (std::vector<int>{0x7f}));
  EXPECT_EQ(body_of(Value(-1)), (std::vector<int>{0xff}));
  EXPECT_EQ(body_of(Value(-32)), (std::vector<int>{0xe0}));
  // Outside the one-byte range: a zigzag varint (128 -> 256, -33 -> 65).
  EXPECT_EQ(body_of(Value(128)), (std::vector<int>{0xc3, 0x80, 0x02}));
  EXPECT_EQ(body_of(Value(-33)), (std::vector<int>{0xc3, 0x41}));
  EXPECT_EQ(body_of(Value(std::numeric_limits<std::int64_t>::min())).size(), 11u);
  EXPECT_EQ(body_of(Value(1.5)).size(), 9u);
  EXPECT_EQ(body_of(Value("ab")), (std::vector<int>{0x82, 'a', 'b'}));
  EXPECT_EQ(body_of(Value(std::string(31, 'x'))).size(), 32u);
  EXPECT_EQ(body_of(Value(std::string(32, 'x')))[0], 0xc5);
  EXPECT_EQ(body_of(Value(Bytes{"ab"})), (std::vector<int>{0xc6, 0x02, 'a', 'b'}));
}

TEST(Wire, ContainersTakeTheirShortestForms) {
  EXPECT_EQ(body_of(Value(List{})), (std::vector<int>{0xa0}));
  EXPECT_EQ(body_of(Value(List(15)))[0], 0xaf);
  EXPECT_EQ(body_of(Value(List(16))).front(), 0xc7);
  EXPECT_EQ(body_of(Value::map({{"a", 1}})), (std::vector<int>{0xb1, 0x81, 'a', 0x01}));
  Map m16;
  for (int i = 0; i < 16; ++i) m16[std::string(1, static_cast<char>('a' + i))] = i;
  const auto b = body_of(Value(m16));
  EXPECT_EQ(b[0], 0xc8);
  EXPECT_EQ(b[1], 16);
}

TEST(Wire, EncodedSizeIsExactForEveryForm) {
  std::vector<Value> values = {Value(127),
                               Value(128),
                               Value(-33),
                               Value(std::string(31, 'a')),
                               Value(std::string(32, 'a')),
                               Value(std::string(200, 'a')),
                               Value(List(15)),
                               Value(List(16)),
                               Value(List(200)),
                               Value(ndarray::zeros(dtype::f32, {15})),
                               Value(ndarray::zeros(dtype::f32, {16})),
                               Value(ndarray::zeros(dtype::u8, {300, 7}))};
  for (const auto& v : values) {
    EXPECT_EQ(encode(v).size(), encoded_size(v)) << v.to_string();
    // Inside a list the offsets, and so the array padding, differ.
    const Value wrapped = Value::list({"x", v});
    EXPECT_EQ(encode(wrapped).size(), encoded_size(wrapped)) << v.to_string();
  }
}

TEST(Wire, NonCanonicalFormsAreRefused) {
  struct bad {
    buffer bytes;
    const char* why;
  };
  const std::vector<bad> cases = {
      {raw({0xc3, 0x02}), "one-byte form"},                // int 1 as a varint
      {raw({0xc3, 0x80, 0x00}), "shortest form"},          // a varint with a zero last group
      {raw({0xc5, 0x01, 'x'}), "short form"},              // a 1-byte string in the long form
      {raw({0xc7, 0x01, 0xc0}), "short form"},             // a 1-element list in the long form
      {raw({0xc8, 0x01, 0x81, 'a', 0xc0}), "short form"},  // a 1-entry map in the long form
      {raw({0xb1, 0xc5, 0x01, 'a', 0xc0}), "short form"},  // a short key in the long form
      {raw({0xc3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}), "64 bits"},
  };
  for (const auto& c : cases) {
    auto r = decode(span_of(c.bytes));
    ASSERT_FALSE(r) << c.why;
    EXPECT_EQ(r.error().code, errc::decode_error);
    EXPECT_NE(r.error().message.find(c.why), std::string::npos) << r.error().message;
  }
}

TEST(Wire, LargeArraysAreAlignedInTheMessage) {
  for (const Value& prefix : {Value{}, Value("x"), Value(std::string(40, 'y'))}) {
    auto a = ndarray::zeros(dtype::f64, {20});
    a.mutable_values<double>()[3] = 2.5;
    const Value v = Value::list({prefix, a});
    const buffer b = encode(v);
    // The data is the array's last 160 bytes; it starts on a 64-byte boundary.
    const std::size_t data_at = b.size() - a.nbytes();
    EXPECT_EQ(data_at % 64, 0u);
    auto back = decode(span_of(b));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, v);
  }
  // Small arrays are not padded.
  EXPECT_EQ(body_of(Value(ndarray::zeros(dtype::u8, {3}))),
            (std::vector<int>{0xc9, 1, 1, 3, 0, 0, 0}));
}

TEST(Wire, NonZeroPaddingIsRefused) {
  buffer b = encode(Value(ndarray::zeros(dtype::u8, {64})));
  ASSERT_EQ(b.size(), 128u);  // version, tag, dtype, ndim, dim, 59 padding bytes, data
  b[10] = std::byte{1};
  auto r = decode(span_of(b));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("padding"), std::string::npos);
}

TEST(Wire, DecodedSizeIsBounded) {
  // 100k nulls: 100 kB on the wire, 100k Values in memory.
  const std::size_t n = 100'000;
  buffer b = raw({0xc7});
  for (std::uint64_t v = n; v != 0; v >>= 7) {
    b.push_back(static_cast<std::byte>(v >= 0x80 ? (v & 0x7f) | 0x80 : v));
  }
  b.insert(b.end(), n, std::byte{0xc0});
  decode_limits limits;
  limits.max_decoded_bytes = n * sizeof(Value);  // short by the list's own node
  auto r = decode(span_of(b), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("max_decoded_bytes"), std::string::npos) << r.error().message;
  limits.max_decoded_bytes = (n + 1) * sizeof(Value);
  auto ok = decode(span_of(b), limits);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->size(), n);

  // Strings and keys count their bytes too.
  const buffer s = encode(Value::map({{"key", std::string(1000, 'v')}}));
  limits.max_decoded_bytes = sizeof(Value) * 2 + sizeof(std::string) + 3 + 999;
  EXPECT_FALSE(decode(span_of(s), limits));
  limits.max_decoded_bytes += 1;
  EXPECT_TRUE(decode(span_of(s), limits));
}

TEST(Wire, OutOfBandArraysTravelBesideTheMessage) {
  auto a = ndarray::zeros(dtype::i32, {4, 1000});
  a.mutable_values<std::int32_t>()[7] = 42;
  const Value v = Value::map({{"x", a}, {"n", 3}});
  std::vector<ndarray> out;
  const buffer b = encode(v, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data(), a.data()) << "the buffer is shared, not copied";
  EXPECT_LT(b.size(), 32u);

  const std::span<const std::byte> frames[] = {out[0].bytes()};
  auto back = decode(span_of(b), frames);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, v);

  auto missing = decode(span_of(b));
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("0 buffers were given"), std::string::npos);
  const std::span<const std::byte> short_frame[] = {out[0].bytes().first(100)};
  EXPECT_FALSE(decode(span_of(b), short_frame));
  const std::span<const std::byte> extra[] = {out[0].bytes(), out[0].bytes()};
  auto unused = decode(span_of(b), extra);
  ASSERT_FALSE(unused);
  EXPECT_NE(unused.error().message.find("uses 1"), std::string::npos);
}

TEST(Wire, SpliceWritesAnEncodingAsTheNextValue) {
  auto a = ndarray::zeros(dtype::f32, {100});
  a.mutable_values<float>()[1] = 1.5f;
  const Value inner = Value::map({{"w", a}, {"s", "text"}});
  const buffer encoded = encode(inner);

  buffer spliced;
  {
    wire::writer w(spliced);
    w.map_header(2);
    w.string("store");
    w.string("kv");  // moves the spliced value to another offset modulo 64
    w.string("value");
    w.splice(span_of(encoded));
  }
  const Value whole = Value::map({{"store", "kv"}, {"value", inner}});
  EXPECT_EQ(spliced, encode(whole)) << "re-padded exactly as a direct encoding";
  auto back = decode(span_of(spliced));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, whole);

  buffer junk;
  wire::writer w(junk);
  EXPECT_THROW(w.splice(span_of(raw({0xb2, 0x81, 'a', 0x01, 0x81, 'a', 0x02}))), error);
  EXPECT_THROW(w.splice(span_of(raw({0x01, 0x02}))), error);
}

TEST(Wire, WriterAppendsToWhatTheBufferHolds) {
  buffer b{std::byte{0xee}};
  {
    wire::writer w(b);
    w.integer(5);
  }
  EXPECT_EQ(b, (buffer{std::byte{0xee}, std::byte{codec_version}, std::byte{5}}));
  const std::string big(10000, 'q');  // past the bulk threshold
  buffer c;
  {
    wire::writer w(c);
    w.list_header(2);
    w.bytes(big);
    w.integer(-7);
  }
  auto back = decode(span_of(c));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, Value::list({Bytes{big}, -7}));
}

TEST(Wire, ManyLargeValuesMoveTheBufferLogarithmicallyOften) {
  // A put_many or reload of many large values, as Python encodes it: each large
  // value used to throw away the room the writer had made and had zero-filled,
  // so the next small write doubled the buffer again: a move and a zero-fill of
  // everything so far per value. 300 values of 1 MiB took 100 s to encode.
  const std::string big(std::size_t{1} << 20, 'v');
  constexpr int values = 64;
  buffer b;
  int moves = 0;
  {
    wire::writer w(b);
    w.list_header(values);
    const std::byte* at = b.data();
    for (int i = 0; i < values; ++i) {
      w.list_header(2);
      w.string("key" + std::to_string(i));
      w.bytes(big);
      if (b.data() != at) ++moves;
      at = b.data();
    }
  }
  // Doubling: 64 MiB is reached from 1 MiB in 6 doublings, each moving it at most twice.
  EXPECT_LE(moves, 16);
  auto back = decode(span_of(b));
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_EQ(back->as<List>().size(), std::size_t{values});
  EXPECT_EQ(back->as<List>()[values - 1], Value::list({"key63", Bytes{big}}));
}

TEST(Wire, ZigzagCoversTheWholeRange) {
  for (std::int64_t v :
       {std::int64_t{0}, std::int64_t{-1}, std::int64_t{1},
        std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()}) {
    EXPECT_EQ(wire::unzigzag(wire::zigzag(v)), v);
  }
  EXPECT_EQ(wire::zigzag(-1), 1u);
  EXPECT_EQ(wire::zigzag(1), 2u);
}

}  // namespace
}  // namespace slither
