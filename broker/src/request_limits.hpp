// Bounds on what one request may cost the broker, and on what its error
// replies may repeat of it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "slither/core/value.hpp"

namespace slither::detail {

/// At most this many bytes of any input are quoted in an error message.
inline constexpr std::size_t max_quote_bytes = 100;
/// Error messages longer than this are cut (they may quote store errors).
inline constexpr std::size_t max_error_message_bytes = 512;

/// `'text'`, cut to `max_quote_bytes` with a note of the full size.
std::string quoted(std::string_view text);

/// `message`, cut to `max_error_message_bytes` with a note of the full size.
std::string capped_message(std::string message);

/// The memory a decoded Value takes: every node's footprint plus its payload
/// (string, bytes, ndarray data, map keys). Stops counting once past `limit`
/// and returns a value over it.
std::size_t decoded_footprint(const Value& v, std::size_t limit);

}  // namespace slither::detail
