// Large writes in place (Plasma's create/seal): a client reserves a block,
// maps the block's value pages read-write, fills them and commits; the
// writer links the block without copying it. The broker remains the only
// publisher; a reservation belongs to the client that made it and lapses
// (its block freed) when its lease ends, so a client that dies before its
// commit leaks nothing for longer than the lease.
#include "broker_impl.hpp"
#include "guarded.hpp"
#include "request_args.hpp"

namespace slither {

using detail::take;
using detail::take_text;
using protocol::message_type;

namespace {

constexpr std::size_t max_shape_dims = 32;

result<std::uint64_t> take_id(Map& args, message_type type) {
  auto id = take(args, type, "id", Value::kind::int64, "an int");
  if (!id) return std::move(id).error();
  if (id->as<std::int64_t>() <= 0) return detail::bad_arg(type, "id", "a positive int", &*id);
  return static_cast<std::uint64_t>(id->as<std::int64_t>());
}

// What a put_reserve reserves room for: a bytes value of `bytes` bytes, or
// an array of `type` and `shape`.
struct reserved_value {
  std::optional<std::uint64_t> bytes;
  dtype type{};
  std::vector<std::uint64_t> shape;
};

result<reserved_value> take_reserved_value(Map& args, message_type type) {
  reserved_value out;
  if (args.find("bytes") != args.end()) {
    if (args.find("dtype") != args.end() || args.find("shape") != args.end()) {
      return fail(errc::invalid_argument,
                  "'put_reserve' takes either bytes (a bytes value) or dtype and shape (an "
                  "array), not both");
    }
    auto n = take(args, type, "bytes", Value::kind::int64, "an int");
    if (!n) return std::move(n).error();
    if (n->as<std::int64_t>() < 0) return detail::bad_arg(type, "bytes", "an int >= 0", &*n);
    out.bytes = static_cast<std::uint64_t>(n->as<std::int64_t>());
    return out;
  }
  auto dt = take(args, type, "dtype", Value::kind::int64, "an int");
  if (!dt) return std::move(dt).error();
  if (dt->as<std::int64_t>() < 0 || dt->as<std::int64_t>() > 255 ||
      !is_valid_dtype(static_cast<std::uint8_t>(dt->as<std::int64_t>()))) {
    return detail::bad_arg(type, "dtype", "a dtype number", &*dt);
  }
  out.type = static_cast<dtype>(dt->as<std::int64_t>());
  auto shape = take(args, type, "shape", Value::kind::list, "a list");
  if (!shape) return std::move(shape).error();
  if (shape->size() > max_shape_dims) {
    return detail::bad_arg(type, "shape", "a list of at most 32 sizes", &*shape);
  }
  for (const Value& d : shape->as<List>()) {
    if (!d.is_int() || d.as<std::int64_t>() < 0) {
      return detail::bad_arg(type, "shape", "a list of sizes (ints >= 0)", &d);
    }
    out.shape.push_back(static_cast<std::uint64_t>(d.as<std::int64_t>()));
  }
  return out;
}

// Who backs the reserved pages: the client if it says it will, else the writer.
result<shm::reserve_pages> take_pages(Map& args, message_type type) {
  if (args.find("client_backs") == args.end()) return shm::reserve_pages::writer_reserves;
  auto v = take(args, type, "client_backs", Value::kind::boolean, "a bool");
  if (!v) return std::move(v).error();
  return v->as<bool>() ? shm::reserve_pages::client_backs : shm::reserve_pages::writer_reserves;
}

}  // namespace

void Broker::impl::enqueue_reservation(std::string identity, std::uint64_t id, message_type type,
                                       Map args) {
  std::string store;
  auto w = target_store(type, args, store);
  if (!w) return reply(identity, id, std::move(w).error());
  std::function<result<Value>()> job;
  if (type == message_type::put_reserve) {
    auto table = take_text(args, type, "table");
    if (!table) return reply(identity, id, std::move(table).error());
    auto key = take_text(args, type, "key");
    if (!key) return reply(identity, id, std::move(key).error());
    auto pages = take_pages(args, type);
    if (!pages) return reply(identity, id, std::move(pages).error());
    auto what = take_reserved_value(args, type);
    if (!what) return reply(identity, id, std::move(what).error());
    job = [this, w = *w, store, identity, table = std::move(*table), key = std::move(*key),
           what = std::move(*what), pages = *pages]() -> result<Value> {
      auto r = what.bytes ? w->reserve_bytes(table, key, *what.bytes, pages)
                          : w->reserve(table, key, what.type, what.shape, pages);
      if (!r) return std::move(r).error();
      s->leases[{store, r->id}] =
          write_lease{identity, std::chrono::steady_clock::now() + options.large_write_lease};
      return Value(Map{{"id", static_cast<std::int64_t>(r->id)},
                       {"object", r->object},
                       {"offset", static_cast<std::int64_t>(r->offset)},
                       {"bytes", static_cast<std::int64_t>(r->bytes)},
                       {"map_bytes", static_cast<std::int64_t>(r->map_bytes)},
                       {"lease_ms", static_cast<std::int64_t>(options.large_write_lease.count())},
                       {"client_backs", r->pages == shm::reserve_pages::client_backs}});
    };
  } else {
    auto rid = take_id(args, type);
    if (!rid) return reply(identity, id, std::move(rid).error());
    job = [this, w = *w, store, identity, type, rid = *rid]() -> result<Value> {
      const auto it = s->leases.find({store, rid});
      if (it == s->leases.end() || it->second.identity != identity) {
        // Another client's reservation is as good as none to this one.
        return fail(errc::not_found,
                    "no reservation " + std::to_string(rid) + " of this client in store '" + store +
                        "' (committed, given up, lease ended, or another client's)");
      }
      s->leases.erase(it);
      if (type == message_type::put_abort) {
        auto r = w->abandon(rid);
        if (!r) return std::move(r).error();
        return Value{};
      }
      auto v = w->commit(rid);
      if (!v) return std::move(v).error();
      return Value(static_cast<std::int64_t>(*v));
    };
  }
  enqueue_job(
      std::move(identity), id, protocol::to_string(type),
      [job = std::move(job), name = protocol::to_string(type), store]() {
        return detail::with_telemetry(
            "slither.store.write",
            [&] {
              return Map{{"store", store}, {"op", name}};
            },
            job);
      },
      // Never inline on the serving thread: a reservation may reserve (zero)
      // its pages, a commit may reserve those its client left holes, and one that replaces a large
      // value frees the old block's pages (hole punching), tens of milliseconds each for 256 MiB,
      // which every other client's request would wait for.
      0, false);
}

void Broker::impl::expire_leases() {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = s->leases.begin(); it != s->leases.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    if (auto* w = find_store(it->first.first)) (void)w->abandon(it->first.second);
    it = s->leases.erase(it);
  }
}

}  // namespace slither
