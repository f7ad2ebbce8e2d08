#include "request_args.hpp"

namespace slither::detail {

error_info bad_arg(protocol::message_type type, std::string_view name, std::string_view wanted,
                   const Value* got) {
  // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on the chained `+`.
  std::string text = "'";
  text.append(protocol::to_string(type)).append("' needs ").append(wanted);
  text.append(" argument '").append(name).append("'");
  if (got != nullptr) {
    text.append(", got ").append(to_string(got->type()));
  } else {
    text.append(", it is missing");
  }
  return fail(errc::invalid_argument, std::move(text));
}

result<Value> take(Map& args, protocol::message_type type, std::string_view name,
                   std::optional<Value::kind> kind, std::string_view wanted) {
  const auto it = args.find(name);
  if (it == args.end()) return bad_arg(type, name, wanted, nullptr);
  if (kind && it->second.type() != *kind) return bad_arg(type, name, wanted, &it->second);
  return std::move(it->second);
}

result<std::string> take_text(Map& args, protocol::message_type type, std::string_view name) {
  auto v = take(args, type, name, Value::kind::string, "a string");
  if (!v) return std::move(v).error();
  return std::move(v->as_mut<std::string>());
}

}  // namespace slither::detail
