// libFuzzer target: decode must return a value or an error for any input.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "slither/core/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> in{reinterpret_cast<const std::byte*>(data), size};
  slither::decode_limits limits;
  limits.max_message_bytes = 1 << 20;
  if (auto v = slither::decode(in, limits)) {
    // What decodes must encode back to the same bytes (the format is canonical).
    const auto again = slither::encode(*v);
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0) __builtin_trap();
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
  (void)slither::decode_batch(in, limits);
  (void)slither::decode_item(in, limits);
  return 0;
}
