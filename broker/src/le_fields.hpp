// Fixed-width little-endian fields of a header frame. The control protocol's
// and the worker protocol's headers are both laid out this way; a header's
// size is checked before any field of it is read.
#pragma once

#include <boost/endian/conversion.hpp>
#include <cstddef>
#include <cstdint>
#include <span>

namespace slither::detail {

/// The unsigned `Width`-byte little-endian field at `offset` of `bytes`;
/// the caller has checked that `bytes` holds it.
template <std::size_t Width>
std::uint64_t load_le(std::span<const std::byte> bytes, std::size_t offset) noexcept {
  return boost::endian::endian_load<std::uint64_t, Width, boost::endian::order::little>(
      reinterpret_cast<const unsigned char*>(bytes.data() + offset));
}

/// Writes the low `Width` bytes of `value`, little-endian, at `out`.
template <std::size_t Width>
void store_le(std::byte* out, std::uint64_t value) noexcept {
  boost::endian::endian_store<std::uint64_t, Width, boost::endian::order::little>(
      reinterpret_cast<unsigned char*>(out), value);
}

}  // namespace slither::detail
