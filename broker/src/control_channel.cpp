#include "control_channel.hpp"

#include <cerrno>
#include <iterator>
#include <optional>
#include <vector>
#include <zmq_addon.hpp>

#include "path_trust.hpp"

namespace slither::detail {

using clock = std::chrono::steady_clock;

std::string control_endpoint_of(const client_options& options) {
  if (!options.endpoint.empty()) return options.endpoint;
  const auto dir =
      options.runtime_dir.empty() ? default_runtime_dir(options.ns) : options.runtime_dir;
  return "ipc://" + (dir / "control").string();
}

result<void> check_control_endpoint(const client_options& options, const std::string& endpoint) {
  if (!endpoint.starts_with("ipc://")) return {};
  const auto rule = options.endpoint.empty() && endpoint == control_endpoint_of(options)
                        ? socket_dir_rule::runtime_dir
                        : socket_dir_rule::ancestor;
  auto trusted = check_control_socket(endpoint.substr(6), rule);
  if (trusted) return {};
  auto err = std::move(trusted).error();
  if (err.code == errc::not_found) {
    return fail(errc::unavailable, "no broker at '" + endpoint + "': " + err.message +
                                       " (is slither-broker running for namespace '" + options.ns +
                                       "'?)");
  }
  err.message = "refusing to connect to '" + endpoint + "': " + err.message;
  return err;
}

result<void> set_curve_client(zmq::socket_t& socket, const client_options& options) {
  if (options.curve_server_key.empty()) return {};
  const std::string& secret = options.curve_secret_key;
  if (options.curve_server_key.size() != 40 || secret.size() != 40 ||
      (!options.curve_public_key.empty() && options.curve_public_key.size() != 40)) {
    return fail(errc::invalid_argument,
                "CURVE keys are 40-character Z85 strings (curve_server_key, curve_secret_key, "
                "curve_public_key)");
  }
  char pub[41] = {};
  if (options.curve_public_key.empty() && zmq_curve_public(pub, secret.c_str()) != 0) {
    return fail(errc::invalid_argument, "curve_secret_key is not a Z85 key");
  }
  socket.set(zmq::sockopt::curve_serverkey, options.curve_server_key);
  socket.set(zmq::sockopt::curve_secretkey, secret);
  socket.set(zmq::sockopt::curve_publickey,
             options.curve_public_key.empty() ? std::string(pub, 40) : options.curve_public_key);
  return {};
}

result<zmq::socket_t> open_control_socket(zmq::context_t& context, const client_options& options,
                                          const std::string& endpoint) {
  if (auto r = check_control_endpoint(options, endpoint); !r) return std::move(r).error();
  try {
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::immediate, true);
    if (auto r = set_curve_client(socket, options); !r) return std::move(r).error();
    socket.connect(endpoint);
    return socket;
  } catch (const zmq::error_t& e) {
    return fail(errc::invalid_argument, "cannot connect to '" + endpoint + "': " + e.what());
  }
}

namespace {

// Waits for `events` until `deadline`; false when it passed.
bool wait_for(zmq::socket_t& socket, short events, clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0) return false;
    zmq::pollitem_t item{socket.handle(), 0, events, 0};
    try {
      if (zmq::poll(&item, 1, left) > 0) return true;
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) return false;
    }
  }
}

// GCC 12 reports a false maybe-uninitialized inside std::variant when a
// Value is moved into a result here (GCC bug 105562's family).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
result<Value> reply_value(protocol::message&& reply) {
  return std::move(reply.body);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace

result<Value> control_request(zmq::socket_t& socket, const std::string& endpoint,
                              protocol::message_type type, std::uint64_t id, Value args,
                              std::chrono::milliseconds timeout) {
  const std::string name(protocol::to_string(type));
  const auto frames = protocol::encode_message({{protocol::protocol_version, type, id}, args});
  const auto deadline = clock::now() + timeout;
  const auto unavailable = [&] {
    return fail(errc::unavailable, "broker at '" + endpoint + "' did not answer '" + name +
                                       "' within " + std::to_string(timeout.count()) + " ms");
  };
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                                             : zmq::send_flags::dontwait;
    for (;;) {
      try {
        if (socket.send(zmq::buffer(frames[i].data(), frames[i].size()), flags)) break;
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        return fail(errc::unavailable,
                    "cannot send '" + name + "' to '" + endpoint + "': " + e.what());
      }
      if (!wait_for(socket, ZMQ_POLLOUT, deadline)) return unavailable();
    }
  }
  for (;;) {
    if (!wait_for(socket, ZMQ_POLLIN, deadline)) return unavailable();
    std::vector<zmq::message_t> parts;
    try {
      if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
        continue;
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return fail(errc::unavailable, "cannot receive the reply to '" + name + "' from '" +
                                         endpoint + "': " + e.what());
    }
    std::vector<protocol::frame> spans;
    for (const auto& p : parts) spans.emplace_back(p.data<std::byte>(), p.size());
    auto reply = protocol::decode_reply(spans);
    if (!reply) {
      auto err = std::move(reply).error();
      err.message = "reply to '" + name + "' from '" + endpoint + "': " + err.message;
      return err;
    }
    if (reply->head.request_id != id) continue;  // a late reply to an abandoned request
    if (reply->head.type == protocol::message_type::reply_error) {
      return protocol::read_error_body(reply->body);
    }
    return reply_value(std::move(*reply));
  }
}

}  // namespace slither::detail
