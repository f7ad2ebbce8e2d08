// The binary codec: cereal binary archives behind one encode/decode pair.
//
// Decoding is bounded: every length is checked against the bytes that remain
// and against `decode_limits` before anything is allocated, so malformed or
// hostile input yields an error naming what is wrong, never a crash, a hang
// or a huge allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "slither/core/error.hpp"
#include "slither/core/item.hpp"
#include "slither/core/value.hpp"

namespace slither {

/// An encoded message.
using buffer = std::vector<std::byte>;

/// Bounds enforced while decoding (and, for depth, while encoding).
struct decode_limits {
  /// Largest input accepted at all.
  std::size_t max_message_bytes = std::size_t{1} << 30;
  /// Deepest nesting of lists and maps.
  std::uint32_t max_depth = 128;
  /// Most items in one batch.
  std::size_t max_batch_items = std::size_t{1} << 20;
};

/// Version byte that starts every encoding; bumped on any format change.
inline constexpr std::uint8_t codec_version = 1;

/// Encodes a value. Throws `slither::error(limit_exceeded)` if it nests deeper than
/// `decode_limits{}.max_depth` (it could not be decoded again).
buffer encode(const Value& value);
/// Appends the encoding of `value` to `out`.
void encode_to(const Value& value, buffer& out);
/// Exact size of `encode(value)`.
std::size_t encoded_size(const Value& value);
/// Decodes a value produced by `encode`.
result<Value> decode(std::span<const std::byte> bytes, const decode_limits& limits = {});

/// If `bytes` is the encoding of a string or bytes value, its kind and its
/// characters (pointing into `bytes`, no copy); nullopt for anything else,
/// including malformed input. Lets a reader build its own string object
/// straight from stored bytes.
std::optional<std::pair<Value::kind, std::string_view>> peek_text(
    std::span<const std::byte> bytes) noexcept;

/// Encodes an item (id, payload, meta, route).
buffer encode(const Item& item);
/// Decodes an item produced by `encode(const Item&)`.
result<Item> decode_item(std::span<const std::byte> bytes, const decode_limits& limits = {});

/// Encodes a batch of items.
buffer encode_batch(std::span<const Item> items);
/// Decodes a batch produced by `encode_batch`.
result<std::vector<Item>> decode_batch(std::span<const std::byte> bytes,
                                       const decode_limits& limits = {});

/// Views a string's characters as bytes (for `decode(as_bytes(s))`).
inline std::span<const std::byte> as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace slither
