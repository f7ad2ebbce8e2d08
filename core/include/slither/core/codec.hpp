// The binary codec: one compact, canonical encoding of `Value`s, items and
// batches of items, behind one encode/decode pair. The format itself (tags,
// varints, array alignment) is described in `slither/core/wire.hpp`.
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
#include "slither/core/export.hpp"
#include "slither/core/item.hpp"
#include "slither/core/value.hpp"

namespace slither {

/// An encoded message.
using buffer = std::vector<std::byte>;

/// Bounds enforced while decoding (and, for depth, while encoding).
struct SLITHER_CORE_EXPORT decode_limits {
  /// Largest input accepted at all.
  std::size_t max_message_bytes = std::size_t{1} << 30;
  /// Deepest nesting of lists and maps.
  std::uint32_t max_depth = 128;
  /// Most items in one batch.
  std::size_t max_batch_items = std::size_t{1} << 20;
  /// Largest in-memory size of what one message decodes to: each value counts
  /// `sizeof(Value)`, each map key `sizeof(std::string)`, each item
  /// `sizeof(Item)`, plus the bytes of every string, bytes, key and array
  /// (out-of-band arrays included). A message of small scalars decodes to
  /// dozens of times its size (a null is 1 byte on the wire, a `Value` in
  /// memory); this bound stops such a message before it is built. The default
  /// (2 GiB, twice `max_message_bytes`) admits any message of strings, bytes
  /// and arrays up to the message limit.
  std::size_t max_decoded_bytes = std::size_t{2} << 30;
};

/// Version byte that starts every encoding; bumped on any format change.
inline constexpr std::uint8_t codec_version = 2;

/// Encodes a value. Throws `slither::error(limit_exceeded)` if it nests deeper than
/// `decode_limits{}.max_depth` (it could not be decoded again).
SLITHER_CORE_EXPORT buffer encode(const Value& value);
/// Encodes a value with its arrays out of band: their data is not copied into
/// the message but appended to `out_of_band` (sharing the arrays' buffers), to
/// travel beside it (as separate ZeroMQ frames, for example).
SLITHER_CORE_EXPORT buffer encode(const Value& value, std::vector<ndarray>& out_of_band);
/// Appends the encoding of `value` to `out`.
SLITHER_CORE_EXPORT void encode_to(const Value& value, buffer& out);
/// Exact size of `encode(value)`.
SLITHER_CORE_EXPORT std::size_t encoded_size(const Value& value);
/// Decodes a value produced by `encode`.
SLITHER_CORE_EXPORT result<Value> decode(std::span<const std::byte> bytes,
                                         const decode_limits& limits = {});
/// Decodes a value encoded with out-of-band arrays, given their buffers in
/// order; every buffer must be used, with exactly its array's byte size. The
/// arrays are copied into buffers of their own.
SLITHER_CORE_EXPORT result<Value> decode(std::span<const std::byte> bytes,
                                         std::span<const std::span<const std::byte>> out_of_band,
                                         const decode_limits& limits = {});

/// If `bytes` is the encoding of a string or bytes value, its kind and its
/// characters (pointing into `bytes`, no copy); nullopt for anything else,
/// including malformed input. Lets a reader build its own string object
/// straight from stored bytes.
SLITHER_CORE_EXPORT std::optional<std::pair<Value::kind, std::string_view>> peek_text(
    std::span<const std::byte> bytes) noexcept;

/// Encodes an item (id, payload, meta, route).
SLITHER_CORE_EXPORT buffer encode(const Item& item);
/// Decodes an item produced by `encode(const Item&)`.
SLITHER_CORE_EXPORT result<Item> decode_item(std::span<const std::byte> bytes,
                                             const decode_limits& limits = {});

/// Encodes a batch of items.
SLITHER_CORE_EXPORT buffer encode_batch(std::span<const Item> items);
/// Decodes a batch produced by `encode_batch`.
SLITHER_CORE_EXPORT result<std::vector<Item>> decode_batch(std::span<const std::byte> bytes,
                                                           const decode_limits& limits = {});

/// Views a string's characters as bytes (for `decode(as_bytes(s))`).
inline std::span<const std::byte> as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace slither
