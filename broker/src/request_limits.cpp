#include "request_limits.hpp"

namespace slither::detail {
namespace {

// A map entry's own cost beyond its key's characters and its Value: the tree
// node (links, color) and the key's string object.
constexpr std::size_t map_entry_overhead = 64;

std::size_t footprint(const Value& v, std::size_t limit, std::size_t sum) {
  sum += sizeof(Value);
  if (sum > limit) return sum;
  switch (v.type()) {
    case Value::kind::string:
      return sum + v.as<std::string>().size();
    case Value::kind::bytes:
      return sum + v.as<Bytes>().data.size();
    case Value::kind::ndarray:
      return sum + v.as<ndarray>().nbytes();
    case Value::kind::list:
      for (const auto& item : v.as<List>()) {
        sum = footprint(item, limit, sum);
        if (sum > limit) return sum;
      }
      return sum;
    case Value::kind::map:
      for (const auto& [key, item] : v.as<Map>()) {
        sum += map_entry_overhead + key.size();
        sum = footprint(item, limit, sum);
        if (sum > limit) return sum;
      }
      return sum;
    default:
      return sum;
  }
}

}  // namespace

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

std::size_t decoded_footprint(const Value& v, std::size_t limit) {
  return footprint(v, limit, 0);
}

}  // namespace slither::detail
