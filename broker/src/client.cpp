#include "slither/broker/client.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <iterator>
#include <optional>
#include <variant>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "slither/broker/protocol.hpp"
#include "slither/core/wire.hpp"

namespace slither {

namespace {

using clock = std::chrono::steady_clock;
using protocol::message_type;

std::string resolve_endpoint(const client_options& options) {
  if (!options.endpoint.empty()) return options.endpoint;
  const auto dir =
      options.runtime_dir.empty() ? default_runtime_dir(options.ns) : options.runtime_dir;
  return "ipc://" + (dir / "control").string();
}

// The part of a reply's Value a typed call expects; a broker that answers
// with another shape broke the protocol.
result<std::uint64_t> as_version(const Value& v, std::string_view what) {
  if (!v.is_int() || v.as<std::int64_t>() < 0) {
    return fail(errc::protocol_error,
                std::string(what) + " reply is not a version number: " + v.to_string());
  }
  return static_cast<std::uint64_t>(v.as<std::int64_t>());
}

}  // namespace

struct client::impl {
  client_options options;
  std::string endpoint;
  zmq::context_t context{1};
  zmq::socket_t socket;
  std::uint64_t next_id = 1;
  std::string ns;
  std::size_t max_message_bytes = decode_limits{}.max_message_bytes;

  result<void> open() {
    try {
      socket = zmq::socket_t(context, zmq::socket_type::dealer);
      socket.set(zmq::sockopt::linger, 0);
      if (!options.curve_server_key.empty()) {
        if (auto r = set_curve_keys(); !r) return r;
      }
      socket.connect(endpoint);
    } catch (const zmq::error_t& e) {
      return fail(errc::invalid_argument, "cannot connect to '" + endpoint + "': " + e.what());
    }
    return {};
  }

  // CURVE: the broker's public key and this client's key pair.
  result<void> set_curve_keys() {
    char pub[41] = {};
    const std::string& secret = options.curve_secret_key;
    if (options.curve_server_key.size() != 40 || secret.size() != 40 ||
        (!options.curve_public_key.empty() && options.curve_public_key.size() != 40)) {
      return fail(errc::invalid_argument,
                  "CURVE keys are 40-character Z85 strings (curve_server_key, curve_secret_key, "
                  "curve_public_key)");
    }
    if (options.curve_public_key.empty() && zmq_curve_public(pub, secret.c_str()) != 0) {
      return fail(errc::invalid_argument, "curve_secret_key is not a Z85 key");
    }
    socket.set(zmq::sockopt::curve_serverkey, options.curve_server_key);
    socket.set(zmq::sockopt::curve_secretkey, secret);
    socket.set(zmq::sockopt::curve_publickey,
               options.curve_public_key.empty() ? std::string(pub, 40) : options.curve_public_key);
    return {};
  }

  // Drops the socket, with whatever it still holds, so that a reply that
  // arrives after a timeout is never read as the reply to a later request.
  void reset() {
    socket.close();
    (void)open();
  }

  error_info unavailable(message_type type) {
    reset();
    return fail(errc::unavailable, "broker at '" + endpoint + "' did not answer '" +
                                       std::string(protocol::to_string(type)) + "' within " +
                                       std::to_string(options.timeout.count()) + " ms");
  }

  // Waits for `events` on the socket until `deadline`; false when it passed.
  bool wait(short events, clock::time_point deadline) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      if (left.count() <= 0) return false;
      zmq::pollitem_t item{socket.handle(), 0, events, 0};
      try {
        if (zmq::poll(&item, 1, left) > 0) return true;
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) return false;
      }
    }
  }

  result<Value> request(message_type type, const Value& args) {
    auto reply = exchange(type, encode(args), false);
    if (!reply) return std::move(reply).error();
    return std::move(std::get<Value>(*reply));
  }

  // A request whose payload the caller encoded, and whose ok reply is
  // returned as its payload bytes, undecoded.
  result<buffer> request_encoded(message_type type, buffer payload) {
    auto reply = exchange(type, std::move(payload), true);
    if (!reply) return std::move(reply).error();
    return std::move(std::get<buffer>(*reply));
  }

  // Sends the request and waits for its reply: the reply's Value, or with
  // `raw` its payload bytes.
  result<std::variant<Value, buffer>> exchange(message_type type, buffer payload, bool raw) {
    if (!socket) return fail(errc::unavailable, "client for '" + endpoint + "' has no socket");
    const std::uint64_t id = next_id++;
    const auto head = protocol::encode_header({protocol::protocol_version, type, id});
    std::vector<buffer> frames;
    frames.emplace_back(head.begin(), head.end());
    frames.push_back(std::move(payload));
    if (frames[1].size() > max_message_bytes) {
      return fail(errc::limit_exceeded, std::string(protocol::to_string(type)) + " request of " +
                                            std::to_string(frames[1].size()) +
                                            " bytes is over the broker's limit of " +
                                            std::to_string(max_message_bytes));
    }
    const auto deadline = clock::now() + options.timeout;
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const auto flags = i + 1 < frames.size()
                             ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                             : zmq::send_flags::dontwait;
      for (;;) {
        std::optional<std::size_t> sent;
        try {
          sent = socket.send(zmq::buffer(frames[i].data(), frames[i].size()), flags);
        } catch (const zmq::error_t& e) {
          if (e.num() != EINTR) return unavailable(type);
          continue;
        }
        if (sent) break;
        if (!wait(ZMQ_POLLOUT, deadline)) return unavailable(type);
      }
    }
    for (;;) {
      if (!wait(ZMQ_POLLIN, deadline)) return unavailable(type);
      std::vector<zmq::message_t> parts;
      try {
        if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
          continue;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        return unavailable(type);
      }
      std::vector<protocol::frame> spans;
      for (const auto& p : parts) spans.emplace_back(p.data<std::byte>(), p.size());
      if (raw && spans.size() == 2) {
        // An ok reply is handed on undecoded; anything else is decoded below.
        const auto h = protocol::decode_header(spans[0]);
        if (h && h->version == protocol::protocol_version && h->request_id != id) continue;
        if (h && h->version == protocol::protocol_version && h->type == message_type::reply_ok) {
          return std::variant<Value, buffer>(buffer(spans[1].begin(), spans[1].end()));
        }
      }
      auto reply = protocol::decode_reply(spans);
      if (!reply) {
        reset();
        auto err = std::move(reply).error();
        err.message = "reply to '" + std::string(protocol::to_string(type)) + "' from '" +
                      endpoint + "': " + err.message;
        return err;
      }
      if (reply->head.request_id != id) continue;  // a stale reply to an abandoned request
      if (reply->head.type == message_type::reply_error) {
        return protocol::read_error_body(reply->body);
      }
      return std::variant<Value, buffer>(std::move(reply->body));
    }
  }
};

client::client(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}
client::client(client&&) noexcept = default;
client& client::operator=(client&&) noexcept = default;
client::~client() = default;

result<client> client::connect(const client_options& options) {
  auto p = std::make_unique<impl>();
  p->options = options;
  p->endpoint = resolve_endpoint(options);
  if (p->endpoint.starts_with("ipc://")) {
    // An ipc endpoint with no socket file has no broker: say so at once
    // rather than after the timeout.
    std::error_code ec;
    const std::filesystem::path file = p->endpoint.substr(6);
    if (!std::filesystem::exists(file, ec)) {
      return fail(errc::unavailable, "no broker at '" + p->endpoint + "': " + file.string() +
                                         " does not exist (is slither-broker running for "
                                         "namespace '" +
                                         options.ns + "'?)");
    }
  }
  if (auto opened = p->open(); !opened) return std::move(opened).error();
  auto reply =
      p->request(message_type::hello,
                 Value::map({{"protocol", static_cast<std::int64_t>(protocol::protocol_version)},
                             {"pid", static_cast<std::int64_t>(::getpid())}}));
  if (!reply) return std::move(reply).error();
  const Value* ns = reply->find("ns");
  const Value* max_bytes = reply->find("max_message_bytes");
  if (ns == nullptr || !ns->is_string() || max_bytes == nullptr || !max_bytes->is_int()) {
    return fail(errc::protocol_error,
                "hello reply from '" + p->endpoint + "' lacks 'ns' or 'max_message_bytes'");
  }
  p->ns = ns->as<std::string>();
  p->max_message_bytes = static_cast<std::size_t>(max_bytes->as<std::int64_t>());
  return client(std::move(p));
}

result<store_info> client::attach_info(std::string_view store) {
  auto reply = p_->request(message_type::attach_info, Value::map({{"store", store}}));
  if (!reply) return std::move(reply).error();
  const Value* ns = reply->find("ns");
  const Value* name = reply->find("name");
  const Value* tables = reply->find("tables");
  const Value* layout = reply->find("layout_version");
  if (ns == nullptr || !ns->is_string() || name == nullptr || !name->is_string() ||
      tables == nullptr || !tables->is_list() || layout == nullptr || !layout->is_int()) {
    return fail(errc::protocol_error, "malformed attach_info reply: " + reply->to_string());
  }
  store_info info{ns->as<std::string>(),
                  name->as<std::string>(),
                  {},
                  static_cast<std::uint32_t>(layout->as<std::int64_t>())};
  for (const auto& t : tables->as<List>()) {
    if (!t.is_string())
      return fail(errc::protocol_error, "attach_info: a table name is not a string");
    info.tables.push_back(t.as<std::string>());
  }
  return info;
}

result<std::uint64_t> client::put(std::string_view store, std::string_view table,
                                  std::string_view key, const Value& value) {
  auto reply =
      p_->request(message_type::put,
                  Value::map({{"store", store}, {"table", table}, {"key", key}, {"value", value}}));
  if (!reply) return std::move(reply).error();
  return as_version(*reply, "put");
}

result<void> client::put_many(std::string_view store, std::string_view table,
                              std::span<const std::pair<std::string, Value>> entries) {
  List list;
  list.reserve(entries.size());
  for (const auto& [key, value] : entries) list.push_back(Value::list({key, value}));
  auto reply =
      p_->request(message_type::put_many,
                  Value::map({{"store", store}, {"table", table}, {"entries", std::move(list)}}));
  if (!reply) return std::move(reply).error();
  return {};
}

result<bool> client::erase(std::string_view store, std::string_view table, std::string_view key) {
  auto reply = p_->request(message_type::erase,
                           Value::map({{"store", store}, {"table", table}, {"key", key}}));
  if (!reply) return std::move(reply).error();
  if (!reply->is_bool()) return fail(errc::protocol_error, "erase reply is not a bool");
  return reply->as<bool>();
}

result<std::uint64_t> client::compare_and_set(std::string_view store, std::string_view table,
                                              std::string_view key, std::uint64_t expected_version,
                                              const Value& value) {
  auto reply =
      p_->request(message_type::compare_and_set,
                  Value::map({{"store", store},
                              {"table", table},
                              {"key", key},
                              {"expected_version", static_cast<std::int64_t>(expected_version)},
                              {"value", value}}));
  if (!reply) return std::move(reply).error();
  return as_version(*reply, "compare_and_set");
}

result<void> client::clear(std::string_view store, std::string_view table) {
  auto reply = p_->request(message_type::clear, Value::map({{"store", store}, {"table", table}}));
  if (!reply) return std::move(reply).error();
  return {};
}

result<Value> client::call_view(std::string_view store, std::string_view view, const Value& arg,
                                std::string_view session_id) {
  return p_->request(
      message_type::call_view,
      Value::map({{"store", store}, {"view", view}, {"arg", arg}, {"session_id", session_id}}));
}

namespace {

// A request's argument map: `fields` (name, text) then, last, `name` with a
// value given as its encoding, spliced in (checked, arrays re-padded).
result<buffer> splice_args(
    std::initializer_list<std::pair<std::string_view, std::string_view>> fields,
    std::span<const std::pair<std::string_view, std::int64_t>> ints, std::string_view name,
    std::span<const std::byte> encoded) {
  buffer payload;
  try {
    wire::writer w(payload);
    w.map_header(fields.size() + ints.size() + 1);
    for (const auto& [k, v] : fields) {
      w.string(k);
      w.string(v);
    }
    for (const auto& [k, v] : ints) {
      w.string(k);
      w.integer(v);
    }
    w.string(name);
    w.splice(encoded);
  } catch (const slither::error& e) {
    return fail(e.code(), "encoded '" + std::string(name) + "': " + e.what());
  }
  return payload;
}

}  // namespace

result<std::uint64_t> client::put_encoded(std::string_view store, std::string_view table,
                                          std::string_view key, std::span<const std::byte> value) {
  auto payload =
      splice_args({{"store", store}, {"table", table}, {"key", key}}, {}, "value", value);
  if (!payload) return std::move(payload).error();
  auto reply = p_->request_encoded(message_type::put, std::move(*payload));
  if (!reply) return std::move(reply).error();
  auto v = decode(*reply);
  if (!v) return fail(errc::protocol_error, "put reply: " + v.error().message);
  return as_version(*v, "put");
}

result<void> client::put_many_encoded(std::string_view store, std::string_view table,
                                      std::span<const std::byte> entries) {
  auto payload = splice_args({{"store", store}, {"table", table}}, {}, "entries", entries);
  if (!payload) return std::move(payload).error();
  auto reply = p_->request_encoded(message_type::put_many, std::move(*payload));
  if (!reply) return std::move(reply).error();
  return {};
}

result<std::uint64_t> client::compare_and_set_encoded(std::string_view store,
                                                      std::string_view table, std::string_view key,
                                                      std::uint64_t expected_version,
                                                      std::span<const std::byte> value) {
  const std::pair<std::string_view, std::int64_t> expected[] = {
      {"expected_version", static_cast<std::int64_t>(expected_version)}};
  auto payload =
      splice_args({{"store", store}, {"table", table}, {"key", key}}, expected, "value", value);
  if (!payload) return std::move(payload).error();
  auto reply = p_->request_encoded(message_type::compare_and_set, std::move(*payload));
  if (!reply) return std::move(reply).error();
  auto v = decode(*reply);
  if (!v) return fail(errc::protocol_error, "compare_and_set reply: " + v.error().message);
  return as_version(*v, "compare_and_set");
}

result<buffer> client::call_view_encoded(std::string_view store, std::string_view view,
                                         std::span<const std::byte> arg,
                                         std::string_view session_id) {
  auto payload =
      splice_args({{"store", store}, {"view", view}, {"session_id", session_id}}, {}, "arg", arg);
  if (!payload) return std::move(payload).error();
  return p_->request_encoded(message_type::call_view, std::move(*payload));
}

result<Value> client::stats() {
  return p_->request(message_type::stats, Value(Map{}));
}

result<void> client::ping() {
  auto reply = p_->request(message_type::ping, Value(Map{}));
  if (!reply) return std::move(reply).error();
  return {};
}

const std::string& client::ns() const noexcept {
  return p_->ns;
}

std::filesystem::path default_runtime_dir(std::string_view ns) {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && *xdg != '\0') return std::filesystem::path(xdg) / "slither" / ns;
  return std::filesystem::path("/tmp") / ("slither-" + std::to_string(::geteuid())) / ns;
}

}  // namespace slither
