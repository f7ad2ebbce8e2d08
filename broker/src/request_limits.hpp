// Bounds on what an error reply may repeat of its request.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace slither::detail {

/// At most this many bytes of any input are quoted in an error message.
inline constexpr std::size_t max_quote_bytes = 100;
/// Error messages longer than this are cut (they may quote store errors).
inline constexpr std::size_t max_error_message_bytes = 512;

/// `'text'`, cut to `max_quote_bytes` with a note of the full size.
std::string quoted(std::string_view text);

/// `message`, cut to `max_error_message_bytes` with a note of the full size.
std::string capped_message(std::string message);

}  // namespace slither::detail
