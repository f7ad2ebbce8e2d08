// The serving loop: the control socket (ROUTER) read on the serving thread's
// Asio loop frame by frame, each request framed and routed, replies sent.
#include <boost/asio/post.hpp>

#include "broker_impl.hpp"
#include "le_fields.hpp"
#include "request_limits.hpp"

namespace slither {

using protocol::message_type;

namespace {

// The request id of a header frame that is not a valid header: its bytes at
// the id's offset if it has the header's size, else 0 (the reply then names
// no request, but it is still a reply).
std::uint64_t id_of_bad_header(const zmq::message_t& header) {
  if (header.size() != protocol::header_size) return 0;
  return detail::load_le<8>(protocol::frame(header.data<std::byte>(), header.size()), 8);
}

}  // namespace

namespace detail {

std::vector<buffer> encode_reply(std::uint64_t id, const result<Value>& r,
                                 std::size_t max_reply_bytes) {
  auto error_frames = [id](error_info err) {
    err.message = capped_message(std::move(err.message));
    return protocol::encode_message(
        {{protocol::protocol_version, message_type::reply_error, id}, protocol::error_body(err)});
  };
  if (!r) return error_frames(r.error());
  std::vector<buffer> frames;
  try {
    frames =
        protocol::encode_message({{protocol::protocol_version, message_type::reply_ok, id}, *r});
  } catch (const slither::error& e) {
    // A result nested too deeply to encode: the caller still gets an answer.
    return error_frames(fail(e.code(), std::string("reply cannot be encoded: ") + e.what()));
  }
  if (frames[1].size() > max_reply_bytes) {
    return error_frames(fail(errc::limit_exceeded, "reply of " + std::to_string(frames[1].size()) +
                                                       " bytes is over max_reply_bytes (" +
                                                       std::to_string(max_reply_bytes) + ")"));
  }
  return frames;
}

}  // namespace detail

std::vector<buffer> Broker::impl::reply_frames(std::uint64_t id, const result<Value>& r) {
  if (!r) {
    detail::broker_log().debug("request {} failed: {}: {}", id, to_string(r.error().code),
                               detail::capped_message(r.error().message));
  }
  auto frames = detail::encode_reply(id, r, options.max_reply_bytes);
  if (protocol::decode_header(frames[0])->type == message_type::reply_error) {
    ++errors;
    // An ok result turned into an error is one past the reply limits.
    metrics.count_error(r ? errc::limit_exceeded : r.error().code);
  }
  return frames;
}

void Broker::impl::send(const std::string& identity, const std::vector<buffer>& frames) {
  if (!s->router) return;
  // ROUTER never blocks on send: a peer that is gone, or whose queue is at
  // its high-water mark (send_queue_messages), has the reply dropped
  // (ZMQ_ROUTER_MANDATORY is off), so a slow client cannot stall the others
  // nor make the broker hold more than that many replies for it.
  try {
    (void)s->router.send(zmq::buffer(identity),
                         zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    (void)s->router.send(zmq::buffer(frames[0].data(), frames[0].size()),
                         zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    (void)s->router.send(zmq::buffer(frames[1].data(), frames[1].size()),
                         zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    detail::broker_log().debug("a reply to a peer was dropped: {}", e.what());
  }
  // ZMQ_FD is edge-like: a send may have consumed the edge of a waiting request.
  if (s->control) s->control->kick();
}

void Broker::impl::reply(const std::string& identity, std::uint64_t id, const result<Value>& r) {
  send(identity, reply_frames(id, r));
}

void Broker::impl::post_reply(std::string identity, std::uint64_t id, const result<Value>& r) {
  asio::post(s->io, [this, identity = std::move(identity), frames = reply_frames(id, r)] {
    send(identity, frames);
  });
}

void Broker::impl::on_control(zmq::socket_t& socket) {
  // Frame by frame: a request is the peer's identity (added by ROUTER), a
  // header and a payload (and a dispatch batch). Frames past those are
  // received one at a time into the same message and dropped, never gathered.
  zmq::message_t identity, header, payload, batch, extra;
  if (!socket.recv(identity, zmq::recv_flags::dontwait)) return;
  std::size_t frames = 0;
  if (identity.more()) {
    (void)socket.recv(header, zmq::recv_flags::dontwait);
    frames = 1;
    if (header.more()) {
      (void)socket.recv(payload, zmq::recv_flags::dontwait);
      frames = 2;
      if (payload.more()) {
        (void)socket.recv(batch, zmq::recv_flags::dontwait);
        frames = 3;
        for (bool more = batch.more(); more; more = extra.more()) {
          (void)socket.recv(extra, zmq::recv_flags::dontwait);
          ++frames;
        }
      }
    }
  }
  if (frames == 0) return;  // no frame to answer: ROUTER never delivers this
  // The descriptor of the connection it came from: admission counts
  // connections in use by it (an in-process peer has none).
  const int fd = zmq_msg_get(header.handle(), ZMQ_SRCFD);
  if (fd >= 0) s->admission->on_message_from(fd);
  on_request(std::string(identity.data<char>(), identity.size()), header,
             frames >= 2 ? &payload : nullptr, frames >= 3 ? &batch : nullptr, frames, fd);
}

void Broker::impl::on_request(std::string identity, zmq::message_t& header, zmq::message_t* payload,
                              zmq::message_t* batch, std::size_t frames, int fd) {
  ++requests;
  const protocol::frame head_bytes(header.data<std::byte>(), header.size());
  auto head = protocol::decode_request_header(head_bytes);
  if (head) {
    metrics.count_request(head->type);
  } else {
    metrics.count_invalid_request();
    const auto raw = protocol::decode_header(head_bytes);
    return reply(identity, raw ? raw->request_id : id_of_bad_header(header),
                 std::move(head).error());
  }
  const auto id = head->request_id;
  const auto type = head->type;
  const std::size_t want = type == message_type::dispatch_submit ? 3 : 2;
  if (frames != want) {
    return reply(
        identity, id,
        fail(errc::protocol_error,
             want == 3
                 ? "'dispatch_submit' has 3 frames (header, arguments, batch), got " +
                       std::to_string(frames)
                 : "a request has 2 frames (header, payload), got " + std::to_string(frames)));
  }
  if (s->stopping) {
    return reply(
        identity, id,
        fail(errc::shutting_down, "broker is stopping; '" + std::string(protocol::to_string(type)) +
                                      "' was not applied"));
  }
  if (payload->size() > options.limits.max_message_bytes) {
    return reply(identity, id,
                 fail(errc::limit_exceeded, "payload of " + std::to_string(payload->size()) +
                                                " bytes is over the limit of " +
                                                std::to_string(options.limits.max_message_bytes)));
  }
  const bool large = payload->size() > options.inline_write_bytes;
  switch (type) {
    case message_type::put:
    case message_type::put_many:
    case message_type::erase:
    case message_type::compare_and_set:
    case message_type::compare_and_erase:
    case message_type::clear:
    case message_type::reload:
    case message_type::create_table:
    case message_type::drop_table:
      if (large) return enqueue_large_write(std::move(identity), id, type, std::move(*payload));
      break;
    case message_type::call_view:
      if (large) return start_large_view(std::move(identity), id, std::move(*payload));
      break;
    default:
      if (payload->size() > detail::max_small_request_bytes) {
        return reply(identity, id,
                     fail(errc::limit_exceeded,
                          "'" + std::string(protocol::to_string(type)) + "' payload of " +
                              std::to_string(payload->size()) + " bytes; at most " +
                              std::to_string(detail::max_small_request_bytes) + " are accepted"));
      }
      break;
  }
  auto args = decode_args(type, *payload);
  if (!args) return reply(identity, id, std::move(args).error());
  detail::broker_log().debug("request {} '{}'", id, protocol::to_string(type));
  if (detail::is_dispatch_request(type)) {
    return handle_dispatch(std::move(identity), fd, id, type, *args, batch);
  }
  handle(std::move(identity), id, type, std::move(*args), payload->size());
}

void Broker::impl::drain_at_stop() {
  // Whatever still sits in the socket gets an answer before it closes.
  for (int n = 0; n < 100000 && (s->router.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0; ++n) {
    on_control(s->router);
  }
}

}  // namespace slither
