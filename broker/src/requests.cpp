// Request handling: each request type's arguments checked and its work started
// (answered at once, queued for the writer, or handed to the views).
#include <unistd.h>

#include "broker_impl.hpp"
#include "guarded.hpp"
#include "request_args.hpp"
#include "request_limits.hpp"

namespace slither {

using detail::take_text;
using protocol::message_type;

namespace detail {

result<Map> decode_request_args(message_type type, const zmq::message_t& payload,
                                const decode_limits& limits) {
  // The codec bounds the encoded size and what the request takes in memory
  // once decoded (limits.max_decoded_bytes), before it builds it.
  auto body = protocol::decode_request_body(
      type, protocol::frame(payload.data<std::byte>(), payload.size()), limits);
  if (!body) return std::move(body).error();
  return std::move(body->as_mut<Map>());
}

}  // namespace detail

result<Map> Broker::impl::decode_args(message_type type, const zmq::message_t& payload) {
  return detail::decode_request_args(type, payload, options.limits);
}

shm::writer* Broker::impl::find_store(std::string_view name) {
  const auto it = s->stores.find(name);
  return it == s->stores.end() ? nullptr : &it->second;
}

error_info Broker::impl::no_store(std::string_view name) const {
  std::string known;
  for (const auto& [n, w] : s->stores) known += (known.empty() ? "" : ", ") + n;
  return fail(errc::not_found, "no store " + detail::quoted(name) + " in namespace '" + options.ns +
                                   "' (stores: " + (known.empty() ? "none" : known) + ")");
}

result<shm::writer*> Broker::impl::target_store(message_type type, Map& args, std::string& name) {
  auto store = take_text(args, type, "store");
  if (!store) return std::move(store).error();
  name = std::move(*store);
  auto* w = find_store(name);
  if (w == nullptr) return no_store(name);
  if (const auto it = args.find("incarnation"); it != args.end()) {
    if (!it->second.is_int()) {
      return detail::bad_arg(type, "incarnation", "an int", &it->second);
    }
    // The u64 travels as the int64 with the same bits.
    if (static_cast<std::uint64_t>(it->second.as<std::int64_t>()) != w->incarnation()) {
      return fail(errc::writer_gone,
                  "store '" + name + "' was re-created by a restarted broker: attach again");
    }
  }
  return w;
}

void Broker::impl::handle(std::string identity, std::uint64_t id, message_type type, Map args,
                          std::size_t bytes) {
  switch (type) {
    case message_type::hello: {
      List stores;
      for (const auto& [name, w] : s->stores) stores.emplace_back(name);
      reply(identity, id,
            Value(Map{
                {"protocol", static_cast<std::int64_t>(protocol::protocol_version)},
                {"ns", options.ns},
                {"pid", static_cast<std::int64_t>(::getpid())},
                {"max_message_bytes", static_cast<std::int64_t>(options.limits.max_message_bytes)},
                {"stores", std::move(stores)}}));
      return;
    }
    case message_type::ping:
      reply(identity, id, Value{});
      return;
    case message_type::attach_info:
      reply(identity, id, attach_info(args));
      return;
    case message_type::put:
    case message_type::put_many:
    case message_type::erase:
    case message_type::compare_and_set:
    case message_type::compare_and_erase:
    case message_type::clear:
    case message_type::reload:
    case message_type::create_table:
    case message_type::drop_table:
      enqueue_write(std::move(identity), id, type, std::move(args), bytes);
      return;
    case message_type::put_reserve:
    case message_type::put_commit:
    case message_type::put_abort:
      enqueue_reservation(std::move(identity), id, type, std::move(args));
      return;
    case message_type::stats: {
      // The pools live on this thread; the stores' figures are read on the writer's.
      Value dispatch = s->dispatch ? s->dispatch->stats() : Value(Map{});
      enqueue_job(
          std::move(identity), id, "stats",
          [this, dispatch = std::move(dispatch)]() mutable -> result<Value> {
            return full_stats(std::move(dispatch));
          },
          0, true);
      return;
    }
    case message_type::call_view:
      start_view(std::move(identity), id, std::move(args));
      return;
    case message_type::worker_join:
    case message_type::dispatch_open:
    case message_type::dispatch_submit:
    case message_type::dispatch_ack:
    case message_type::dispatch_input_end:
    case message_type::dispatch_cancel:
    case message_type::dispatch_close:
    case message_type::reply_ok:
    case message_type::reply_error:
    case message_type::dispatch_batch:
    case message_type::dispatch_end:
    case message_type::dispatch_moved:
      break;
  }
  reply(identity, id, fail(errc::protocol_error, "unexpected message type"));
}

result<Value> Broker::impl::attach_info(Map& args) {
  auto name = take_text(args, message_type::attach_info, "store");
  if (!name) return std::move(name).error();
  auto* w = find_store(*name);
  if (w == nullptr) return no_store(*name);
  List tables;
  for (auto& t : w->read().tables()) tables.emplace_back(std::move(t));
  return Value(Map{{"ns", options.ns},
                   {"name", *name},
                   {"tables", std::move(tables)},
                   {"layout_version", static_cast<std::int64_t>(shm::layout_version)},
                   {"incarnation", static_cast<std::int64_t>(w->incarnation())}});
}

// Runs as a write-queue job: only one of those touches the writers at a time.
result<Value> Broker::impl::stats() {
  const auto clients = s->admission->counts();
  Map stores;
  for (const auto& [name, w] : s->stores) {
    const auto st = w.stats();
    stores.emplace(name,
                   Value::map({{"entries", static_cast<std::int64_t>(st.entries)},
                               {"bytes_used", static_cast<std::int64_t>(st.bytes_used)},
                               {"bytes_retired", static_cast<std::int64_t>(st.bytes_retired)},
                               {"bytes_free", static_cast<std::int64_t>(st.bytes_free)},
                               {"bytes_pinned", static_cast<std::int64_t>(st.bytes_pinned)},
                               {"oldest_epoch_pid", static_cast<std::int64_t>(st.oldest_epoch_pid)},
                               {"bytes_resident", static_cast<std::int64_t>(st.bytes_resident)},
                               {"segments", static_cast<std::int64_t>(st.segments)},
                               {"segment_bytes", static_cast<std::int64_t>(st.segment_bytes)},
                               {"readers", static_cast<std::int64_t>(st.readers)}}));
  }
  return Value(Map{
      {"ns", options.ns},
      {"pid", static_cast<std::int64_t>(::getpid())},
      {"uptime_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - s->started)
                        .count()},
      {"requests", static_cast<std::int64_t>(requests.load())},
      {"errors", static_cast<std::int64_t>(errors.load())},
      {"busy", static_cast<std::int64_t>(busy.load())},
      {"write_queue_depth", static_cast<std::int64_t>(s->queue.depth())},
      {"write_queue_limit", static_cast<std::int64_t>(s->queue.limits().jobs)},
      {"write_queue_bytes", static_cast<std::int64_t>(s->queue.bytes())},
      {"views_in_flight", static_cast<std::int64_t>(s->views->in_flight())},
      {"connections", static_cast<std::int64_t>(clients.connections)},
      {"clients", static_cast<std::int64_t>(clients.admitted)},
      {"max_clients", static_cast<std::int64_t>(max_clients)},
      {"refused_connections", static_cast<std::int64_t>(clients.refused)},
      {"stores", std::move(stores)},
  });
}

}  // namespace slither
