// The serving loop: the control socket (ROUTER) read on the serving thread's
// Asio loop, messages framed and decoded, replies sent.
#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>
#include <iterator>
#include <zmq_addon.hpp>

#include "broker_impl.hpp"

namespace slither {

using protocol::message_type;

void Broker::impl::send(const std::string& identity, message_type type, std::uint64_t id,
                        const Value& body) {
  if (!s->router) return;
  std::vector<buffer> frames;
  try {
    frames = protocol::encode_message({{protocol::protocol_version, type, id}, body});
  } catch (const slither::error& e) {
    // A result nested too deeply to encode: the caller still gets an answer.
    ++errors;
    frames = protocol::encode_message(
        {{protocol::protocol_version, message_type::reply_error, id},
         protocol::error_body(
             fail(e.code(), std::string("reply cannot be encoded: ") + e.what()))});
  }
  // ROUTER never blocks on send: a peer that is gone, or whose queue is at
  // its high-water mark, has the reply dropped (ZMQ_ROUTER_MANDATORY is
  // off), so a slow client cannot stall the others.
  try {
    (void)s->router.send(zmq::buffer(identity),
                         zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    (void)s->router.send(zmq::buffer(frames[0].data(), frames[0].size()),
                         zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    (void)s->router.send(zmq::buffer(frames[1].data(), frames[1].size()),
                         zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    spdlog::debug("reply {} to a peer dropped: {}", id, e.what());
  }
  // ZMQ_FD is edge-like: a send may have consumed the edge of a waiting request.
  if (s->control) s->control->kick();
}

void Broker::impl::reply(const std::string& identity, std::uint64_t id, const result<Value>& r) {
  if (r) {
    send(identity, message_type::reply_ok, id, *r);
  } else {
    ++errors;
    spdlog::debug("request {} failed: {}: {}", id, to_string(r.error().code), r.error().message);
    send(identity, message_type::reply_error, id, protocol::error_body(r.error()));
  }
}

// From any thread: answer on the serving thread, which owns the socket.
void Broker::impl::post_reply(std::string identity, std::uint64_t id, result<Value> r) {
  asio::post(s->io, [this, identity = std::move(identity), id, r = std::move(r)] {
    reply(identity, id, r);
  });
}

void Broker::impl::on_control(zmq::socket_t& socket) {
  std::vector<zmq::message_t> parts;
  if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
  on_message(parts);
}

void Broker::impl::on_message(std::vector<zmq::message_t>& parts) {
  // parts[0] is the peer identity added by ROUTER; then header and payload.
  if (parts.size() < 2) {
    spdlog::debug("dropped a message with no header frame");
    return;
  }
  // The descriptor of the connection it came from: admission counts
  // connections in use by it.
  s->admission->on_message_from(zmq_msg_get(parts[1].handle(), ZMQ_SRCFD));
  std::string identity(parts[0].data<char>(), parts[0].size());
  std::vector<protocol::frame> frames;
  for (std::size_t i = 1; i < parts.size(); ++i) {
    frames.emplace_back(parts[i].data<std::byte>(), parts[i].size());
  }
  const auto head = protocol::decode_header(frames[0]);
  if (!head) {
    spdlog::debug("dropped a message that cannot be answered: {}", head.error().message);
    return;
  }
  ++requests;
  auto req = protocol::decode_request(frames, options.limits);
  if (!req) {
    reply(identity, head->request_id, std::move(req).error());
    return;
  }
  spdlog::debug("request {} '{}'", req->head.request_id, protocol::to_string(req->head.type));
  handle(std::move(identity), std::move(*req));
}

}  // namespace slither
