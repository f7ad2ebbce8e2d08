#include "worker_protocol.hpp"

#include <algorithm>
#include <optional>
#include <utility>

#include "le_fields.hpp"

namespace slither::worker_protocol {
namespace {

constexpr std::byte magic0{'S'};
constexpr std::byte magic1{'W'};

// Frames after the header that each type has, and which way it travels.
struct shape {
  std::size_t frames;
  bool to_worker;
  bool to_broker;
};

std::optional<shape> shape_of(std::uint8_t raw) noexcept {
  switch (static_cast<message_type>(raw)) {
    case message_type::batch:
      return shape{2, true, false};
    case message_type::heartbeat:
      return shape{0, true, true};
    case message_type::stop:
      return shape{0, true, false};
    case message_type::hello:
      return shape{0, false, true};
    case message_type::result:
      return shape{2, false, true};
    case message_type::batch_error:
      return shape{1, false, true};
    case message_type::bye:
      return shape{0, false, true};
  }
  return std::nullopt;
}

decode_limits small_limits() {
  decode_limits l;
  l.max_message_bytes = max_small_frame;
  l.max_depth = 16;
  return l;
}

result<Value> decode_small(frame bytes, std::string_view what) {
  if (bytes.size() > max_small_frame) {
    return fail(errc::limit_exceeded,
                std::string(what) + " frame of " + std::to_string(bytes.size()) +
                    " bytes is over the limit of " + std::to_string(max_small_frame));
  }
  auto v = decode(bytes, small_limits());
  if (!v) {
    auto err = std::move(v).error();
    err.message = std::string(what) + " frame: " + err.message;
    return err;
  }
  return v;
}

std::string cut(std::string text) {
  if (text.size() > max_error_text) {
    text.resize(max_error_text);
    text += "... (cut)";
  }
  return text;
}

// A string field of a map, or "" when absent; an error when of another kind.
result<std::string> text_field(const Value& map, std::string_view key, std::string_view what) {
  const Value* v = map.find(key);
  if (v == nullptr) return std::string();
  if (!v->is_string()) {
    return fail(errc::protocol_error,
                std::string(what) + " field '" + std::string(key) + "' is not a string");
  }
  return cut(v->as<std::string>());
}

}  // namespace

std::string_view to_string(message_type type) noexcept {
  switch (type) {
    case message_type::batch:
      return "batch";
    case message_type::heartbeat:
      return "heartbeat";
    case message_type::stop:
      return "stop";
    case message_type::hello:
      return "hello";
    case message_type::result:
      return "result";
    case message_type::batch_error:
      return "batch_error";
    case message_type::bye:
      return "bye";
  }
  return "unknown";
}

std::array<std::byte, header_size> encode_header(const header& head) noexcept {
  std::array<std::byte, header_size> out{};
  out[0] = magic0;
  out[1] = magic1;
  detail::store_le<2>(&out[2], version);
  out[4] = std::byte(static_cast<std::uint8_t>(head.type));
  detail::store_le<8>(&out[8], head.worker);
  detail::store_le<8>(&out[16], head.job);
  detail::store_le<8>(&out[24], head.batch);
  detail::store_le<4>(&out[32], head.attempt);
  detail::store_le<4>(&out[36], head.count);
  detail::store_le<8>(&out[40], head.aux);
  return out;
}

result<header> decode_message(std::span<const frame> frames, direction way) {
  if (frames.empty()) return fail(errc::protocol_error, "a worker message with no frames");
  const frame bytes = frames[0];
  if (bytes.size() != header_size) {
    return fail(errc::protocol_error, "worker header frame has " + std::to_string(bytes.size()) +
                                          " bytes, expected " + std::to_string(header_size));
  }
  if (bytes[0] != magic0 || bytes[1] != magic1) {
    return fail(errc::protocol_error, "worker header frame does not start with the magic \"SW\"");
  }
  const auto v = static_cast<std::uint16_t>(detail::load_le<2>(bytes, 2));
  if (v != version) {
    return fail(errc::protocol_error, "worker protocol version " + std::to_string(v) +
                                          ", this build speaks " + std::to_string(version));
  }
  if (detail::load_le<3>(bytes, 5) != 0) {
    return fail(errc::protocol_error, "worker header frame has non-zero reserved bytes");
  }
  const auto raw = std::to_integer<std::uint8_t>(bytes[4]);
  const auto s = shape_of(raw);
  if (!s) return fail(errc::protocol_error, "unknown worker message type " + std::to_string(raw));
  const auto type = static_cast<message_type>(raw);
  if ((way == direction::to_worker && !s->to_worker) ||
      (way == direction::to_broker && !s->to_broker)) {
    return fail(errc::protocol_error, "worker message type '" + std::string(to_string(type)) +
                                          "' cannot travel to the " +
                                          (way == direction::to_worker ? "worker" : "broker"));
  }
  if (frames.size() != 1 + s->frames) {
    return fail(errc::protocol_error, "worker message '" + std::string(to_string(type)) + "' has " +
                                          std::to_string(frames.size()) + " frames, expected " +
                                          std::to_string(1 + s->frames));
  }
  header h;
  h.type = type;
  h.worker = detail::load_le<8>(bytes, 8);
  h.job = detail::load_le<8>(bytes, 16);
  h.batch = detail::load_le<8>(bytes, 24);
  h.attempt = static_cast<std::uint32_t>(detail::load_le<4>(bytes, 32));
  h.count = static_cast<std::uint32_t>(detail::load_le<4>(bytes, 36));
  h.aux = detail::load_le<8>(bytes, 40);
  return h;
}

buffer encode_meta(const job_target& target) {
  const Context& c = target.context;
  return encode(Value(Map{{"function", target.function},
                          {"pipe", c.pipe},
                          {"stage", c.stage},
                          {"session_id", c.session_id},
                          {"metadata", Value(c.metadata)}}));
}

result<batch_meta> decode_meta(frame bytes) {
  auto v = decode_small(bytes, "meta");
  if (!v) return std::move(v).error();
  if (!v->is_map()) return fail(errc::protocol_error, "meta frame is not a map");
  batch_meta meta;
  auto function = text_field(*v, "function", "meta");
  auto pipe = text_field(*v, "pipe", "meta");
  auto stage = text_field(*v, "stage", "meta");
  auto session = text_field(*v, "session_id", "meta");
  for (auto* r : {&function, &pipe, &stage, &session}) {
    if (!*r) return std::move(*r).error();
  }
  meta.function = std::move(*function);
  meta.context.pipe = std::move(*pipe);
  meta.context.stage = std::move(*stage);
  meta.context.session_id = std::move(*session);
  if (const Value* m = v->find("metadata"); m != nullptr) {
    if (!m->is_map()) return fail(errc::protocol_error, "meta field 'metadata' is not a map");
    meta.context.metadata = m->as<Map>();
  }
  return meta;
}

buffer encode_item_errors(std::span<const indexed_error> errors) {
  if (errors.empty()) return {};
  List list;
  list.reserve(errors.size());
  for (const auto& e : errors) {
    list.push_back(Value::list(
        {static_cast<std::int64_t>(e.index), e.error.type, e.error.message, e.error.traceback}));
  }
  return encode(Value(std::move(list)));
}

result<std::vector<indexed_error>> decode_item_errors(frame bytes, std::uint32_t count) {
  std::vector<indexed_error> out;
  if (bytes.empty()) return out;
  auto v = decode_small(bytes, "item-error");
  if (!v) return std::move(v).error();
  if (!v->is_list()) return fail(errc::protocol_error, "item-error frame is not a list");
  const auto& list = v->as<List>();
  if (list.size() > count) {
    return fail(errc::protocol_error, "item-error frame lists " + std::to_string(list.size()) +
                                          " errors for " + std::to_string(count) + " items");
  }
  out.reserve(list.size());
  for (const auto& entry : list) {
    if (!entry.is_list() || entry.as<List>().size() < 3 || entry.as<List>().size() > 4) {
      return fail(errc::protocol_error,
                  "an item error is not a list [index, type, message, traceback]");
    }
    const auto& f = entry.as<List>();
    if (!f[0].is_int() || f[0].as<std::int64_t>() < 0 ||
        f[0].as<std::int64_t>() >= static_cast<std::int64_t>(count)) {
      return fail(errc::protocol_error,
                  "an item error's index is not an item of the batch of " + std::to_string(count));
    }
    for (std::size_t i = 1; i < f.size(); ++i) {
      if (!f[i].is_string()) {
        return fail(errc::protocol_error,
                    "an item error's type, message and traceback must be "
                    "strings");
      }
    }
    indexed_error e;
    e.index = static_cast<std::uint32_t>(f[0].as<std::int64_t>());
    e.error.kind = failure_kind::item_error;
    e.error.type = cut(f[1].as<std::string>());
    e.error.message = cut(f[2].as<std::string>());
    if (f.size() == 4) e.error.traceback = cut(f[3].as<std::string>());
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(),
            [](const indexed_error& a, const indexed_error& b) { return a.index < b.index; });
  for (std::size_t i = 1; i < out.size(); ++i) {
    if (out[i].index == out[i - 1].index) {
      return fail(errc::protocol_error,
                  "item-error frame names item " + std::to_string(out[i].index) + " twice");
    }
  }
  return out;
}

buffer encode_error(const dispatch_error& error) {
  return encode(
      Value(Map{{"type", error.type}, {"message", error.message}, {"traceback", error.traceback}}));
}

result<dispatch_error> decode_error(frame bytes) {
  auto v = decode_small(bytes, "error");
  if (!v) return std::move(v).error();
  if (!v->is_map()) return fail(errc::protocol_error, "error frame is not a map");
  auto type = text_field(*v, "type", "error");
  auto message = text_field(*v, "message", "error");
  auto traceback = text_field(*v, "traceback", "error");
  for (auto* r : {&type, &message, &traceback}) {
    if (!*r) return std::move(*r).error();
  }
  dispatch_error e;
  e.kind = failure_kind::exception;
  e.type = type->empty() ? "Exception" : std::move(*type);
  e.message = std::move(*message);
  e.traceback = std::move(*traceback);
  return e;
}

}  // namespace slither::worker_protocol
