// dispatch_job: one dispatch job on its own DEALER connection to a broker's
// control socket. The client half of the protocol in slither/broker/dispatch.hpp.
#include <cerrno>
#include <deque>
#include <iterator>
#include <map>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "control_channel.hpp"
#include "dispatch_job_maker.hpp"
#include "job_wire.hpp"
#include "slither/broker/dispatch.hpp"
#include "slither/broker/protocol.hpp"
#include "zmq_frames.hpp"

namespace slither {

using clock = std::chrono::steady_clock;
using protocol::message_type;
namespace wire = detail::job_wire;

namespace {

// Longest quiet spell before the job asks the broker whether it still lives.
constexpr std::chrono::milliseconds probe_after{1000};

}  // namespace

struct SLITHER_BROKER_NO_EXPORT dispatch_job::impl {
  std::shared_ptr<zmq::context_t> context;
  zmq::socket_t socket;
  std::string endpoint;
  std::chrono::milliseconds timeout{5000};
  job_id job = 0;
  std::size_t window = 0;
  std::size_t batch_size = 0;
  std::string route;  // where failed items go under the job's policy

  std::uint64_t next_seq = 0;
  std::uint64_t submitted = 0;                       // items
  std::uint64_t consumed = 0;                        // items handed out by next()
  std::map<std::uint64_t, std::size_t> outstanding;  // seq → items, not yet answered
  std::uint64_t unacked = 0;                         // batches consumed, not yet acked
  std::deque<batch_output> ready;
  bool input_closed = false;
  bool ended = false;  // dispatch_end came
  bool closed = false;
  std::optional<dispatch_error> error;
  std::vector<session_moved> moves;
  std::uint64_t next_control = wire::control_ids;

  clock::time_point last_heard = clock::now();
  std::optional<std::uint64_t> ping_id;
  clock::time_point ping_sent{};

  std::string name() const { return "dispatch job " + std::to_string(job); }

  error_info gone(const std::string& what) const {
    return fail(errc::unavailable, name() + ": the broker at '" + endpoint + "' " + what);
  }

  // Sends a whole message without blocking longer than `timeout`.
  result<void> send(std::vector<zmq::message_t>& frames) {
    auto sent = detail::send_by(socket, frames, clock::now() + timeout);
    if (!sent) return gone("cannot be sent to: " + sent.error().message);
    if (!*sent) return gone("took nothing for " + std::to_string(timeout.count()) + " ms");
    return {};
  }

  result<void> send_request(message_type type, std::uint64_t id, Value args) {
    std::vector<zmq::message_t> frames;
    frames.push_back(
        detail::header_message(protocol::encode_header({protocol::protocol_version, type, id})));
    frames.push_back(detail::adopt_message(encode(args)));
    return send(frames);
  }

  result<void> notify(message_type type, Map args) {
    args.emplace("job", static_cast<std::int64_t>(job));
    return send_request(type, next_control++, Value(std::move(args)));
  }

  result<void> send_ack() {
    if (unacked == 0) return {};
    const auto n = unacked;
    unacked = 0;
    return notify(message_type::dispatch_ack, Map{{"batches", static_cast<std::int64_t>(n)}});
  }

  // A submit the broker refused: its items end here, cancelled.
  void refused(std::uint64_t seq, const error_info& why) {
    const auto it = outstanding.find(seq);
    if (it == outstanding.end()) return;
    batch_output out;
    out.seq = seq;
    out.count = it->second;
    out.has_results = false;
    out.status = item_status::cancelled;
    dispatch_error e;
    e.kind = failure_kind::cancelled;
    e.type = std::string(to_string(why.code));
    e.message = "the broker refused the batch: " + why.message;
    out.error = std::make_shared<const dispatch_error>(std::move(e));
    outstanding.erase(it);
    ready.push_back(std::move(out));
  }

  // Takes in one message; an error only for a broken protocol.
  result<void> on_message(std::vector<zmq::message_t>& parts) {
    last_heard = clock::now();
    if (parts.empty()) return {};
    auto head = protocol::decode_header({parts[0].data<std::byte>(), parts[0].size()});
    if (!head) return std::move(head).error();
    const auto frames = detail::frames_of(parts);
    switch (head->type) {
      case message_type::dispatch_batch: {
        if (parts.size() != 3) return fail(errc::protocol_error, "a result batch has 3 frames");
        auto out = wire::decode_status(frames[1], detail::to_opaque(std::move(parts[2])));
        if (!out) return std::move(out).error();
        outstanding.erase(out->seq);
        ready.push_back(std::move(*out));
        return {};
      }
      case message_type::dispatch_moved:
      case message_type::dispatch_end: {
        if (frames.size() != 2) return fail(errc::protocol_error, "a job message has 2 frames");
        auto body = decode(frames[1]);
        if (!body) return std::move(body).error();
        if (head->type == message_type::dispatch_moved) {
          auto moved = wire::read_moved(*body);
          if (!moved) return std::move(moved).error();
          moves.push_back(std::move(*moved));
          return {};
        }
        auto end = wire::read_end(*body);
        if (!end) return std::move(end).error();
        if (*end && !error) error = std::move(*end);
        ended = true;
        return {};
      }
      case message_type::reply_ok:
      case message_type::reply_error:
        break;
      default:
        return {};  // nothing else is meant for a job
    }
    auto msg = protocol::decode_reply(frames);
    if (!msg) return std::move(msg).error();
    if (ping_id && msg->head.request_id == *ping_id) {
      ping_id.reset();
      return {};
    }
    if (msg->head.type == message_type::reply_error && msg->head.request_id < wire::control_ids) {
      refused(msg->head.request_id, protocol::read_error_body(msg->body));
    }
    return {};
  }

  // Receives what has arrived, waiting at most `wait` for something to.
  result<void> receive(std::chrono::milliseconds wait) {
    // What is already here is taken without a poll first (two system calls
    // a batch, when results arrive faster than they are consumed).
    auto took = drain();
    if (!took) return std::move(took).error();
    if (*took > 0) return {};
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, wait) == 0) return {};
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return {};
      return gone(std::string("cannot be read from: ") + e.what());
    }
    took = drain();
    if (!took) return std::move(took).error();
    return {};
  }

  // Takes in the messages that are ready (up to 256); how many.
  result<int> drain() {
    int n = 0;
    while (n < 256) {
      std::vector<zmq::message_t> parts;
      try {
        if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
          break;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        return gone(std::string("cannot be read from: ") + e.what());
      }
      ++n;
      if (auto r = on_message(parts); !r) {
        auto err = std::move(r).error();
        err.message = name() + ": " + err.message;
        return err;
      }
    }
    return n;
  }

  // While results are due and the broker is quiet, asks whether it lives.
  result<void> probe() {
    const auto now = clock::now();
    if (ping_id) {
      if (now - ping_sent > timeout) {
        return gone(
            "did not answer for " +
            std::to_string(
                std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heard).count()) +
            " ms (it died, or is unreachable)");
      }
      return {};
    }
    if (now - last_heard < std::min(probe_after, timeout)) return {};
    ping_id = next_control++;
    ping_sent = now;
    return send_request(message_type::ping, *ping_id, Value(Map{}));
  }

  bool finished() const { return ended && outstanding.empty() && ready.empty(); }
};

dispatch_job::dispatch_job(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}
dispatch_job::dispatch_job(dispatch_job&&) noexcept = default;

dispatch_job& dispatch_job::operator=(dispatch_job&& other) noexcept {
  if (this != &other) {
    close();
    p_ = std::move(other.p_);
  }
  return *this;
}

dispatch_job::~dispatch_job() {
  close();
}

void dispatch_job::close() noexcept {
  if (!p_ || p_->closed) return;
  p_->closed = true;
  if (!p_->ended) {
    // Forget the job on the broker (cancelling it); nobody waits for the answer.
    (void)p_->notify(message_type::dispatch_close, Map{});
  }
}

namespace detail {

result<dispatch_job> dispatch_job_maker::open(std::shared_ptr<zmq::context_t> context,
                                              const std::string& endpoint,
                                              const client_options& where,
                                              const job_options& options) {
  if (auto v = validate(options); !v) return std::move(v).error();
  auto p = std::make_unique<dispatch_job::impl>();
  p->context = std::move(context);
  p->endpoint = endpoint;
  p->timeout = where.timeout;
  auto socket = open_control_socket(*p->context, where, endpoint);
  if (!socket) return std::move(socket).error();
  p->socket = std::move(*socket);
  // What is still queued when the job is dropped (its close) may leave for a while.
  p->socket.set(zmq::sockopt::linger, 200);
  auto reply = control_request(p->socket, endpoint, message_type::dispatch_open, p->next_control++,
                               job_wire::open_args(options), where.timeout);
  if (!reply) return std::move(reply).error();
  const Value* job = reply->find("job");
  const Value* window = reply->find("window");
  if (job == nullptr || !job->is_int() || window == nullptr || !window->is_int() ||
      window->as<std::int64_t>() <= 0) {
    return fail(errc::protocol_error, "malformed dispatch_open reply: " + reply->to_string());
  }
  p->job = static_cast<job_id>(job->as<std::int64_t>());
  p->window = static_cast<std::size_t>(window->as<std::int64_t>());
  p->batch_size = max_batch_items(options.batching);
  if (const auto* r = std::get_if<route_policy>(&options.on_error)) {
    p->route = r->output;
  } else if (const auto* retry = std::get_if<retry_policy>(&options.on_error)) {
    if (const auto* then = std::get_if<route_policy>(&retry->then)) p->route = then->output;
  }
  p->last_heard = clock::now();
  return dispatch_job(std::move(p));
}

}  // namespace detail

result<dispatch_job> dispatch_job::open(const client_options& where, const job_options& options) {
  return detail::dispatch_job_maker::open(std::make_shared<zmq::context_t>(1),
                                          detail::control_endpoint_of(where), where, options);
}

job_id dispatch_job::id() const noexcept {
  return p_->job;
}

std::size_t dispatch_job::window() const noexcept {
  return p_->window;
}

std::size_t dispatch_job::batch_size() const noexcept {
  return p_->batch_size;
}

const std::string& dispatch_job::route_output() const noexcept {
  return p_->route;
}

std::size_t dispatch_job::capacity() const noexcept {
  const auto held = p_->submitted - p_->consumed;
  return held >= p_->window ? 0 : p_->window - static_cast<std::size_t>(held);
}

result<void> dispatch_job::submit(std::span<const std::byte> payload, std::size_t count) {
  return submit(std::vector<std::byte>(payload.begin(), payload.end()), count);
}

result<void> dispatch_job::submit(std::vector<std::byte>&& payload, std::size_t count) {
  impl& s = *p_;
  if (s.ended || s.closed) {
    return fail(errc::invalid_argument, s.name() + " has ended" +
                                            (s.error ? " (" + s.error->describe() + ")" : "") +
                                            "; it takes no more batches");
  }
  if (s.input_closed) return fail(errc::invalid_argument, s.name() + ": its input is closed");
  if (count == 0 || count > s.batch_size) {
    return fail(errc::invalid_argument, s.name() + " takes batches of 1 to " +
                                            std::to_string(s.batch_size) + " items, not " +
                                            std::to_string(count));
  }
  if (count > capacity()) {
    return fail(errc::busy, s.name() + " can take " + std::to_string(capacity()) +
                                " more items now, not " + std::to_string(count) +
                                "; consume results first");
  }
  const std::uint64_t seq = s.next_seq;
  std::vector<zmq::message_t> frames;
  frames.push_back(detail::header_message(
      protocol::encode_header({protocol::protocol_version, message_type::dispatch_submit, seq})));
  frames.push_back(
      detail::adopt_message(encode(Value(Map{{"job", static_cast<std::int64_t>(s.job)},
                                             {"count", static_cast<std::int64_t>(count)},
                                             {"ack", static_cast<std::int64_t>(s.unacked)}}))));
  frames.push_back(detail::adopt_message(std::move(payload)));
  if (auto r = s.send(frames); !r) return r;
  s.unacked = 0;
  ++s.next_seq;
  s.submitted += count;
  s.outstanding.emplace(seq, count);
  return {};
}

result<void> dispatch_job::close_input() {
  impl& s = *p_;
  if (s.input_closed || s.ended) return {};
  s.input_closed = true;
  return s.notify(message_type::dispatch_input_end, Map{});
}

result<void> dispatch_job::cancel() {
  if (p_->ended) return {};
  return p_->notify(message_type::dispatch_cancel, Map{});
}

result<std::optional<batch_output>> dispatch_job::next(
    std::optional<std::chrono::milliseconds> timeout) {
  impl& s = *p_;
  const auto deadline = timeout ? std::optional(clock::now() + *timeout) : std::nullopt;
  for (;;) {
    if (!s.ready.empty()) {
      batch_output out = std::move(s.ready.front());
      s.ready.pop_front();
      s.consumed += out.count;
      if (++s.unacked >= wire::ack_every) {
        if (auto r = s.send_ack(); !r) return std::move(r).error();
      }
      return std::optional<batch_output>(std::move(out));
    }
    if (s.finished()) return std::optional<batch_output>();
    // Nothing submitted and more may come: there is nothing to wait for.
    if (s.outstanding.empty() && !s.input_closed && !s.ended) return std::optional<batch_output>();
    if (auto r = s.send_ack(); !r) return std::move(r).error();
    auto wait = probe_after;
    if (deadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - clock::now());
      if (left.count() <= 0) return std::optional<batch_output>();
      wait = std::min(wait, left);
    }
    if (auto r = s.receive(wait); !r) return std::move(r).error();
    // Still waiting (for results, the end, or answers to submits after it):
    // a broker that stays quiet is asked whether it lives.
    if (s.ready.empty()) {
      if (auto r = s.probe(); !r) return std::move(r).error();
    }
  }
}

bool dispatch_job::finished() const noexcept {
  return p_->finished();
}

const std::optional<dispatch_error>& dispatch_job::error() const noexcept {
  return p_->error;
}

const std::vector<session_moved>& dispatch_job::moves() const noexcept {
  return p_->moves;
}

}  // namespace slither
