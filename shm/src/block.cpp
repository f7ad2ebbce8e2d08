#include "block.hpp"

#include <cstring>

#include "slither/core/codec.hpp"

namespace slither::shm::detail {

std::span<const std::uint64_t> shape_of(const entry_header* e) noexcept {
  return {reinterpret_cast<const std::uint64_t*>(reinterpret_cast<const std::byte*>(e) +
                                                 shape_offset(e->key_bytes)),
          e->ndim};
}

result<void> check_value(const entry_block* b) {
  const entry_header* e = full_of(b);
  if (e == nullptr || e->format != static_cast<std::uint8_t>(value_format::ndarray)) return {};
  auto bad = [&](const std::string& what) {
    return fail(errc::decode_error, "stored ndarray of key " + printable(key_of(b)) + what);
  };
  if (!is_valid_dtype(e->dtype)) return bad(" has unknown dtype " + std::to_string(e->dtype));
  // Blocks are only 8-byte aligned: the writer placed the elements on a
  // 64-byte boundary of the segment (whose mapping is page aligned).
  if ((reinterpret_cast<std::uintptr_t>(e) + e->value_offset) % ndarray::alignment != 0) {
    return bad(" is not aligned");
  }
  if (e->ndim > ndarray::max_ndim) return bad(" has " + std::to_string(e->ndim) + " dimensions");
  // The shape is 8-aligned in an 8-aligned block. Multiplications checked
  // for overflow without a division each: this runs for every view taken.
  const auto* shape = reinterpret_cast<const std::uint64_t*>(reinterpret_cast<const std::byte*>(e) +
                                                             shape_offset(e->key_bytes));
  std::uint64_t bytes = dtype_size(static_cast<dtype>(e->dtype));
  bool overflow = false;
  for (unsigned i = 0; i < e->ndim; ++i)
    overflow |= __builtin_mul_overflow(bytes, shape[i], &bytes);
  if (overflow || bytes != e->value_bytes) {
    return bad(" has a shape that does not fit its " + std::to_string(e->value_bytes) + " bytes");
  }
  return {};
}

result<Value> decode_entry(const entry_block* b) {
  if (auto ok = check_value(b); !ok) return std::move(ok).error();
  const std::span<const std::byte> bytes = value_of(b);
  if (format_of(b) == value_format::ndarray) {
    const entry_header* e = full_of(b);
    try {
      const auto shape = shape_of(e);
      return Value(
          ndarray::from_bytes(static_cast<dtype>(e->dtype), {shape.begin(), shape.end()}, bytes));
    } catch (const slither::error& err) {
      return fail(err.code(), err.what());
    }
  }
  decode_limits limits;
  limits.max_message_bytes = std::max<std::size_t>(limits.max_message_bytes, bytes.size());
  return decode(bytes, limits);
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
