#include "request_limits.hpp"

namespace slither::detail {

std::string quoted(std::string_view text) {
  std::string out = "'";
  out.append(text.substr(0, max_quote_bytes));
  out += '\'';
  if (text.size() > max_quote_bytes) {
    out += "... (" + std::to_string(text.size()) + " bytes)";
  }
  return out;
}

std::string capped_message(std::string message) {
  if (message.size() <= max_error_message_bytes) return message;
  const auto full = message.size();
  message.resize(max_error_message_bytes);
  message += "... (message of " + std::to_string(full) + " bytes cut)";
  return message;
}

}  // namespace slither::detail
