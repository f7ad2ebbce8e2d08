// Reading a request's named arguments, with errors that name the request and argument.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "slither/broker/protocol.hpp"
#include "slither/core/error.hpp"
#include "slither/core/value.hpp"

namespace slither::detail {

/// "'<type>' needs <wanted> argument '<name>', got <kind>" (or "it is missing").
error_info bad_arg(protocol::message_type type, std::string_view name, std::string_view wanted,
                   const Value* got);

/// Moves argument `name` out of a request's map, checking its kind.
result<Value> take(Map& args, protocol::message_type type, std::string_view name,
                   std::optional<Value::kind> kind, std::string_view wanted);

/// Moves the string argument `name` out of a request's map.
result<std::string> take_text(Map& args, protocol::message_type type, std::string_view name);

}  // namespace slither::detail
