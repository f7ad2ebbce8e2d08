#include "slither/broker/protocol.hpp"

#include <string>

#include "le_fields.hpp"

namespace slither::protocol {
namespace {

constexpr std::byte magic0{'S'};
constexpr std::byte magic1{'L'};

bool is_known(std::uint8_t raw) noexcept {
  return is_request(static_cast<message_type>(raw)) ||
         raw == static_cast<std::uint8_t>(message_type::reply_ok) ||
         raw == static_cast<std::uint8_t>(message_type::reply_error);
}

// Version and type of a decoded header; `want_request` selects which types are accepted.
result<void> check_header(const header& head, bool want_request) {
  if (head.version != protocol_version) {
    return fail(errc::protocol_error, "peer speaks protocol version " +
                                          std::to_string(head.version) + ", this build speaks " +
                                          std::to_string(protocol_version));
  }
  const auto raw_type = static_cast<std::uint8_t>(head.type);
  if (!is_known(raw_type)) {
    return fail(errc::protocol_error, "unknown message type " + std::to_string(raw_type));
  }
  if (is_request(head.type) != want_request) {
    return fail(errc::protocol_error, std::string("message type '") +
                                          std::string(to_string(head.type)) + "' is not a " +
                                          (want_request ? "request" : "reply"));
  }
  return {};
}

result<Value> decode_body(message_type type, frame bytes, const decode_limits& limits,
                          bool want_request) {
  if (bytes.size() > limits.max_message_bytes) {
    return fail(errc::limit_exceeded, "payload of " + std::to_string(bytes.size()) +
                                          " bytes is over the limit of " +
                                          std::to_string(limits.max_message_bytes));
  }
  auto body = decode(bytes, limits);
  if (!body) {
    auto err = std::move(body).error();
    err.message = "payload of '" + std::string(to_string(type)) + "': " + err.message;
    return err;
  }
  if (want_request && !body->is_map()) {
    return fail(errc::protocol_error, "arguments of '" + std::string(to_string(type)) +
                                          "' must be a map, got " +
                                          std::string(to_string(body->type())));
  }
  return body;
}

// Shared by requests and replies; `want_request` selects which types are accepted.
result<message> decode_message(std::span<const frame> frames, const decode_limits& limits,
                               bool want_request) {
  if (frames.size() != 2) {
    return fail(errc::protocol_error,
                "a message has 2 frames (header, payload), got " + std::to_string(frames.size()));
  }
  auto head = decode_header(frames[0]);
  if (!head) return std::move(head).error();
  if (auto r = check_header(*head, want_request); !r) return std::move(r).error();
  auto body = decode_body(head->type, frames[1], limits, want_request);
  if (!body) return std::move(body).error();
  // Member by member: GCC 12 sees a temporary `message{...}` as maybe-uninitialized.
  result<message> out{message{}};
  out->head = *head;
  out->body = std::move(*body);
  return out;
}

}  // namespace

std::string_view to_string(message_type type) noexcept {
  switch (type) {
    case message_type::hello:
      return "hello";
    case message_type::attach_info:
      return "attach_info";
    case message_type::put:
      return "put";
    case message_type::put_many:
      return "put_many";
    case message_type::erase:
      return "erase";
    case message_type::compare_and_set:
      return "compare_and_set";
    case message_type::clear:
      return "clear";
    case message_type::call_view:
      return "call_view";
    case message_type::stats:
      return "stats";
    case message_type::ping:
      return "ping";
    case message_type::worker_join:
      return "worker_join";
    case message_type::dispatch_open:
      return "dispatch_open";
    case message_type::dispatch_submit:
      return "dispatch_submit";
    case message_type::dispatch_ack:
      return "dispatch_ack";
    case message_type::dispatch_input_end:
      return "dispatch_input_end";
    case message_type::dispatch_cancel:
      return "dispatch_cancel";
    case message_type::dispatch_close:
      return "dispatch_close";
    case message_type::reload:
      return "reload";
    case message_type::create_table:
      return "create_table";
    case message_type::drop_table:
      return "drop_table";
    case message_type::compare_and_erase:
      return "compare_and_erase";
    case message_type::put_reserve:
      return "put_reserve";
    case message_type::put_commit:
      return "put_commit";
    case message_type::put_abort:
      return "put_abort";
    case message_type::reply_ok:
      return "reply_ok";
    case message_type::reply_error:
      return "reply_error";
    case message_type::dispatch_batch:
      return "dispatch_batch";
    case message_type::dispatch_end:
      return "dispatch_end";
    case message_type::dispatch_moved:
      return "dispatch_moved";
  }
  return "unknown";
}

bool is_request(message_type type) noexcept {
  return (type >= message_type::hello && type <= message_type::dispatch_close) ||
         (type >= message_type::reload && type <= message_type::compare_and_erase) ||
         (type >= message_type::put_reserve && type <= message_type::put_abort);
}

bool is_notification(message_type type) noexcept {
  return type >= message_type::dispatch_submit && type <= message_type::dispatch_cancel;
}

std::array<std::byte, header_size> encode_header(const header& head) noexcept {
  std::array<std::byte, header_size> out{};
  out[0] = magic0;
  out[1] = magic1;
  detail::store_le<2>(&out[2], head.version);
  out[4] = std::byte(static_cast<std::uint8_t>(head.type));
  detail::store_le<8>(&out[8], head.request_id);
  return out;
}

result<header> decode_header(frame bytes) {
  if (bytes.size() != header_size) {
    return fail(errc::protocol_error, "header frame has " + std::to_string(bytes.size()) +
                                          " bytes, expected " + std::to_string(header_size));
  }
  if (bytes[0] != magic0 || bytes[1] != magic1) {
    return fail(errc::protocol_error, "header frame does not start with the magic \"SL\"");
  }
  if (detail::load_le<3>(bytes, 5) != 0) {
    return fail(errc::protocol_error, "header frame has non-zero reserved bytes");
  }
  return header{static_cast<std::uint16_t>(detail::load_le<2>(bytes, 2)),
                static_cast<message_type>(std::to_integer<std::uint8_t>(bytes[4])),
                detail::load_le<8>(bytes, 8)};
}

std::vector<buffer> encode_message(const message& msg) {
  const auto head = encode_header(msg.head);
  std::vector<buffer> frames;
  frames.emplace_back(head.begin(), head.end());
  frames.push_back(encode(msg.body));
  return frames;
}

result<header> decode_request_header(frame bytes) {
  auto head = decode_header(bytes);
  if (!head) return head;
  if (auto r = check_header(*head, true); !r) return std::move(r).error();
  return head;
}

result<Value> decode_request_body(message_type type, frame bytes, const decode_limits& limits) {
  return decode_body(type, bytes, limits, true);
}

result<message> decode_request(std::span<const frame> frames, const decode_limits& limits) {
  return decode_message(frames, limits, true);
}

result<message> decode_reply(std::span<const frame> frames, const decode_limits& limits) {
  return decode_message(frames, limits, false);
}

Value error_body(const error_info& err) {
  return Value::map({{"code", static_cast<std::int64_t>(err.code)}, {"message", err.message}});
}

error_info read_error_body(const Value& body) {
  const Value* code = body.find("code");
  const Value* text = body.find("message");
  if (code == nullptr || !code->is_int() || text == nullptr || !text->is_string()) {
    return fail(errc::protocol_error, "error reply without an int 'code' and a string 'message'");
  }
  const auto raw = code->as<std::int64_t>();
  if (raw <= static_cast<std::int64_t>(errc::ok) ||
      raw > static_cast<std::int64_t>(errc::shutting_down)) {
    return fail(errc::protocol_error, "error reply with unknown code " + std::to_string(raw) +
                                          ": " + text->as<std::string>());
  }
  return fail(static_cast<errc>(raw), text->as<std::string>());
}

}  // namespace slither::protocol
