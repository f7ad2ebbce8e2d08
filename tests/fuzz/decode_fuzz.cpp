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
  (void)slither::decode_batch(in, limits);
  (void)slither::decode_item(in, limits);
  return 0;
}
