// libFuzzer target: every decoder must return a value or an error for any
// input, and what decodes must encode back to the same bytes (the format is
// canonical), through every entry point: values, items, batches, splicing and
// out-of-band arrays.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include "slither/core/codec.hpp"
#include "slither/core/wire.hpp"

namespace {

using slither::buffer;

void same_or_trap(const buffer& again, const std::uint8_t* data, std::size_t size) {
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> in{reinterpret_cast<const std::byte*>(data), size};
  slither::decode_limits limits;
  limits.max_message_bytes = 1 << 20;
  limits.max_decoded_bytes = 64 << 20;

  if (auto v = slither::decode(in, limits)) {
    same_or_trap(slither::encode(*v), data, size);
    if (slither::encoded_size(*v) != size) __builtin_trap();
    // Spliced after a one-byte string, the value's arrays move to another
    // offset: the splice must re-pad them exactly as a direct encoding does.
    // (A value nested as deep as decode allows cannot be put in a list and
    // still be encoded: that comparison is skipped for it.)
    buffer spliced;
    {
      slither::wire::writer w(spliced);
      w.list_header(2);
      w.string("x");
      w.splice(in, limits);
    }
    std::optional<buffer> direct;
    try {
      direct = slither::encode(slither::Value::list({"x", *v}));
    } catch (const slither::error& e) {
      if (e.code() != slither::errc::limit_exceeded) throw;
    }
    if (direct && spliced != *direct) __builtin_trap();
    // The same value with its arrays out of band reads back the same (compared
    // encoded: a NaN is not equal to itself).
    std::vector<slither::ndarray> arrays;
    const buffer oob = slither::encode(*v, arrays);
    std::vector<std::span<const std::byte>> frames;
    for (const auto& a : arrays) frames.push_back(a.bytes());
    auto back = slither::decode({oob.data(), oob.size()}, frames, limits);
    if (!back || slither::encode(*back) != slither::encode(*v)) __builtin_trap();
  } else {
    // What decode refuses, splice refuses too.
    buffer spliced;
    slither::wire::writer w(spliced);
    bool refused = false;
    try {
      w.splice(in, limits);
    } catch (const slither::error&) {
      refused = true;
    }
    if (!refused) __builtin_trap();
  }

  // peek_text must agree with decode whenever it claims to see text.
  if (const auto text = slither::peek_text(in)) {
    auto v = slither::decode(in, limits);
    if (!v || v->type() != text->first) __builtin_trap();
    const std::string_view decoded = text->first == slither::Value::kind::string
                                         ? std::string_view(v->as<std::string>())
                                         : std::string_view(v->as<slither::Bytes>().data);
    if (decoded != text->second) __builtin_trap();
  }
  if (auto batch = slither::decode_batch(in, limits)) {
    same_or_trap(slither::encode_batch(*batch), data, size);
  }
  if (auto item = slither::decode_item(in, limits)) {
    same_or_trap(slither::encode(*item), data, size);
  }
  return 0;
}
