#include "block.hpp"

#include <cstring>

#include "slither/core/codec.hpp"

namespace slither::shm::detail {

std::vector<std::uint64_t> shape_of(const entry_header* e) {
  std::vector<std::uint64_t> shape(e->ndim);
  std::memcpy(shape.data(), reinterpret_cast<const std::byte*>(e) + shape_offset(e->key_bytes),
              e->ndim * sizeof(std::uint64_t));
  return shape;
}

result<Value> decode_entry(const entry_header* e) {
  if (e->format == static_cast<std::uint8_t>(value_format::ndarray)) {
    if (!is_valid_dtype(e->dtype)) {
      return fail(errc::decode_error,
                  "stored ndarray has unknown dtype " + std::to_string(e->dtype));
    }
    try {
      return Value(ndarray::from_bytes(static_cast<dtype>(e->dtype), shape_of(e), value_of(e)));
    } catch (const slither::error& err) {
      return fail(err.code(), err.what());
    }
  }
  decode_limits limits;
  limits.max_message_bytes = std::max<std::size_t>(limits.max_message_bytes, e->value_bytes);
  return decode(value_of(e), limits);
}

std::string printable(std::string_view key) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "'";
  for (std::size_t i = 0; i < key.size() && i < 64; ++i) {
    const auto c = static_cast<unsigned char>(key[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (key.size() > 64) out += "...";
  return out + "'";
}

}  // namespace slither::shm::detail
