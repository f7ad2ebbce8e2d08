// The write path: store writes prepared from requests on the serving thread,
// then applied in order through the write queue, on the writer thread or
// inline when the writer is idle.
#include <algorithm>
#include <future>

#include "broker_impl.hpp"
#include "guarded.hpp"
#include "request_args.hpp"
#include "request_limits.hpp"

namespace slither {
namespace {

using detail::take;
using detail::take_text;
using protocol::message_type;

// A store write, prepared on the serving thread and applied through the write
// queue (on the writer thread, or inline when the writer is idle).
using write_op = std::function<result<Value>(shm::writer&)>;

using entry_list = std::vector<std::pair<std::string, Value>>;

// The "entries" argument of put_many and reload: a list of [key (string), value] pairs.
result<entry_list> take_entries(Map& args, message_type type) {
  auto list = take(args, type, "entries", Value::kind::list, "a list");
  if (!list) return std::move(list).error();
  entry_list entries;
  entries.reserve(list->size());
  auto& items = list->as_mut<List>();
  for (std::size_t i = 0; i < items.size(); ++i) {
    auto& e = items[i];
    if (!e.is_list() || e.size() != 2 || !e[0].is_string()) {
      return fail(errc::invalid_argument, "'" + std::string(protocol::to_string(type)) +
                                              "' entry " + std::to_string(i) +
                                              " is not a [key (string), value] pair");
    }
    entries.emplace_back(std::move(e[0].as_mut<std::string>()), std::move(e[1]));
  }
  return entries;
}

// An optional argument of kind `kind`; nullopt when absent.
result<std::optional<Value>> take_optional(Map& args, message_type type, std::string_view name,
                                           Value::kind kind, std::string_view wanted) {
  if (args.find(name) == args.end()) return std::optional<Value>{};
  auto v = take(args, type, name, kind, wanted);
  if (!v) return std::move(v).error();
  return std::optional<Value>(std::move(*v));
}

// The "expected_version" argument of compare_and_set and compare_and_erase:
// an int, not negative (the u64 versions a store hands out stay below 2^63).
result<std::uint64_t> take_version(Map& args, message_type type) {
  auto expected = take(args, type, "expected_version", Value::kind::int64, "an int");
  if (!expected) return std::move(expected).error();
  if (expected->as<std::int64_t>() < 0) {
    return fail(errc::invalid_argument, "'" + std::string(protocol::to_string(type)) +
                                            "' expected_version " + expected->to_string() +
                                            " is negative");
  }
  return static_cast<std::uint64_t>(expected->as<std::int64_t>());
}

// The table a create_table request describes.
result<shm::table_spec> take_table_spec(Map& args, const std::string& table) {
  constexpr auto type = message_type::create_table;
  shm::table_spec spec;
  spec.name = table;
  auto kind = take_optional(args, type, "kind", Value::kind::string, "a string");
  if (!kind) return std::move(kind).error();
  if (*kind) {
    const auto& k = (*kind)->as<std::string>();
    const auto parsed = shm::parse_table_kind(k);
    if (!parsed) {
      return fail(errc::invalid_argument, "'create_table' kind " + detail::quoted(k) +
                                              " is not a table kind (set, bag, ordered_set)");
    }
    spec.kind = *parsed;
  }
  auto capacity = take_optional(args, type, "capacity", Value::kind::int64, "an int");
  if (!capacity) return std::move(capacity).error();
  if (*capacity) {
    const auto c = (*capacity)->as<std::int64_t>();
    if (c < 1 || c > (std::int64_t{1} << 32)) {
      return fail(errc::invalid_argument,
                  "'create_table' capacity " + std::to_string(c) + " is not in 1..2^32");
    }
    spec.initial_capacity = static_cast<std::uint64_t>(c);
  }
  return spec;
}

result<write_op> prepare_write(message_type type, Map& args, std::string& table) {
  auto t = take_text(args, type, "table");
  if (!t) return std::move(t).error();
  table = *t;
  switch (type) {
    case message_type::put: {
      auto key = take_text(args, type, "key");
      if (!key) return std::move(key).error();
      auto value = take(args, type, "value", std::nullopt, "a");
      if (!value) return std::move(value).error();
      return write_op([table, key = std::move(*key),
                       value = std::move(*value)](shm::writer& w) -> result<Value> {
        auto v = w.put(table, key, value);
        if (!v) return std::move(v).error();
        return Value(static_cast<std::int64_t>(*v));
      });
    }
    case message_type::put_many: {
      auto entries = take_entries(args, type);
      if (!entries) return std::move(entries).error();
      auto atomic = take_optional(args, type, "atomic", Value::kind::boolean, "a bool");
      if (!atomic) return std::move(atomic).error();
      const auto publish = *atomic && (*atomic)->as<bool>() ? shm::batch_publish::at_once
                                                            : shm::batch_publish::per_entry;
      return write_op(
          [table, entries = std::move(*entries), publish](shm::writer& w) -> result<Value> {
            auto r = w.put_many(table, entries, publish);
            if (!r) return std::move(r).error();
            return Value{};
          });
    }
    case message_type::reload: {
      auto entries = take_entries(args, type);
      if (!entries) return std::move(entries).error();
      return write_op([table, entries = std::move(*entries)](shm::writer& w) -> result<Value> {
        auto r = w.reload(table, [&](shm::loader& l) -> result<void> {
          for (const auto& [key, value] : entries) {
            if (auto put = l.put(key, value); !put) return put;
          }
          return {};
        });
        if (!r) return std::move(r).error();
        return Value{};
      });
    }
    case message_type::create_table: {
      auto spec = take_table_spec(args, table);
      if (!spec) return std::move(spec).error();
      return write_op([spec = std::move(*spec)](shm::writer& w) -> result<Value> {
        auto r = w.create_table(spec);
        if (!r) return std::move(r).error();
        return Value{};
      });
    }
    case message_type::drop_table:
      return write_op([table](shm::writer& w) -> result<Value> {
        auto r = w.drop_table(table);
        if (!r) return std::move(r).error();
        return Value{};
      });
    case message_type::erase: {
      auto key = take_text(args, type, "key");
      if (!key) return std::move(key).error();
      return write_op([table, key = std::move(*key)](shm::writer& w) -> result<Value> {
        auto r = w.erase(table, key);
        if (!r) return std::move(r).error();
        return Value(*r);
      });
    }
    case message_type::compare_and_set: {
      auto key = take_text(args, type, "key");
      if (!key) return std::move(key).error();
      auto version = take_version(args, type);
      if (!version) return std::move(version).error();
      auto value = take(args, type, "value", std::nullopt, "a");
      if (!value) return std::move(value).error();
      return write_op([table, key = std::move(*key), version = *version,
                       value = std::move(*value)](shm::writer& w) -> result<Value> {
        auto v = w.compare_and_set(table, key, version, value);
        if (!v) return std::move(v).error();
        return Value(static_cast<std::int64_t>(*v));
      });
    }
    case message_type::compare_and_erase: {
      auto key = take_text(args, type, "key");
      if (!key) return std::move(key).error();
      auto version = take_version(args, type);
      if (!version) return std::move(version).error();
      return write_op(
          [table, key = std::move(*key), version = *version](shm::writer& w) -> result<Value> {
            auto r = w.compare_and_erase(table, key, version);
            if (!r) return std::move(r).error();
            return Value(*r);
          });
    }
    case message_type::clear:
      return write_op([table](shm::writer& w) -> result<Value> {
        auto r = w.clear(table);
        if (!r) return std::move(r).error();
        return Value{};
      });
    default:
      return fail(errc::internal,
                  "'" + std::string(protocol::to_string(type)) + "' is not a store write");
  }
}

}  // namespace

namespace {

std::string busy_reason(detail::push_result why, const detail::write_queue& q) {
  switch (why) {
    case detail::push_result::full_jobs:
      return "write queue is full (" + std::to_string(q.limits().jobs) + " pending)";
    case detail::push_result::full_bytes:
      return "pending writes hold " + std::to_string(q.bytes()) + " bytes (write_queue_bytes " +
             std::to_string(q.limits().bytes) + ")";
    case detail::push_result::full_client:
      return "this client's pending writes are at client_write_queue_bytes (" +
             std::to_string(q.limits().client_bytes) + ")";
    default:
      return "write queue is closed";
  }
}

bool is_one_key(message_type type) {
  return type == message_type::put || type == message_type::erase ||
         type == message_type::compare_and_set || type == message_type::compare_and_erase;
}

}  // namespace

// Queues `job` for the writer thread; its result is the reply. A job that
// `may_run_inline` (a small one-key write) runs right here when the writer is
// idle: the hand-off to the writer thread and back costs more than the write.
void Broker::impl::enqueue_job(std::string identity, std::uint64_t id, std::string_view what,
                               std::function<result<Value>()> job, std::size_t bytes,
                               bool may_run_inline) {
  if (may_run_inline &&
      s->queue.try_run_inline([&] { reply(identity, id, detail::guarded(job)); })) {
    return;
  }
  detail::write_job j;
  j.run = [this, identity, id, job = std::move(job)] {
    post_reply(identity, id, detail::guarded(job));
  };
  j.cancel = [this, identity, id, what = std::string(what)] {
    post_reply(identity, id,
               fail(errc::shutting_down,
                    "broker stopped before applying '" + what + "'; it was not applied"));
  };
  j.bytes = bytes;
  j.client = identity;
  const auto queued = s->queue.try_push(std::move(j));
  if (queued == detail::push_result::queued) return;
  if (queued == detail::push_result::closed) {
    return reply(identity, id,
                 fail(errc::shutting_down,
                      "broker is stopping; '" + std::string(what) + "' was not applied"));
  }
  ++busy;
  reply(identity, id,
        fail(errc::busy, busy_reason(queued, s->queue) + "; '" + std::string(what) +
                             "' not accepted, retry later"));
}

namespace {

// The job that applies a prepared write, with its telemetry.
std::function<result<Value>()> write_job_for(shm::writer* w, message_type type, std::string store,
                                             std::string table, write_op op) {
  // A reload has events of its own, as in the original; every other write is a store write.
  const std::string_view event =
      type == message_type::reload ? "slither.store.reload" : "slither.store.write";
  return [w, event, name = protocol::to_string(type), store = std::move(store),
          table = std::move(table), op = std::move(op)]() -> result<Value> {
    return detail::with_telemetry(
        event,
        [&] {
          return Map{{"store", store}, {"table", table}, {"op", name}};
        },
        [&] { return op(*w); });
  };
}

}  // namespace

void Broker::impl::enqueue_write(std::string identity, std::uint64_t id, message_type type,
                                 Map args, std::size_t bytes) {
  std::string store;
  auto w = target_store(type, args, store);
  if (!w) return reply(identity, id, std::move(w).error());
  std::string table;
  auto op = prepare_write(type, args, table);
  if (!op) return reply(identity, id, std::move(op).error());
  enqueue_job(std::move(identity), id, protocol::to_string(type),
              write_job_for(*w, type, std::move(store), std::move(table), std::move(*op)), bytes,
              is_one_key(type));
}

void Broker::impl::enqueue_large_write(std::string identity, std::uint64_t id, message_type type,
                                       zmq::message_t payload) {
  // Decoding and preparing a large write takes as long as applying it: both
  // run on the writer thread, so the serving thread stays free for others.
  const std::size_t bytes = payload.size();
  auto held = std::make_shared<zmq::message_t>(std::move(payload));
  enqueue_job(
      std::move(identity), id, protocol::to_string(type),
      [this, type, held]() -> result<Value> {
        auto args = decode_args(type, *held);
        *held = zmq::message_t();  // the decoded form replaces the bytes
        if (!args) return std::move(args).error();
        std::string store;
        auto w = target_store(type, *args, store);
        if (!w) return std::move(w).error();
        std::string table;
        auto op = prepare_write(type, *args, table);
        if (!op) return std::move(op).error();
        return write_job_for(*w, type, std::move(store), std::move(table), std::move(*op))();
      },
      bytes, false);
}

void Broker::impl::schedule_reclaim() {
  s->reclaim_timer->expires_after(detail::reclaim_interval);
  s->reclaim_timer->async_wait([this](const boost::system::error_code& ec) {
    if (ec || s->stopping) return;
    // A job like any write, so that it never runs beside one; one at a time
    // (a stalled writer does not collect them). Its reclaim is skipped when
    // the queue has work (writes reclaim as they go), but not its end of
    // leases, which no write does: a broker never idle kept a dead client's
    // reservation for as long as its load lasted.
    if (!s->housekeeping_queued.exchange(true)) {
      const bool idle = s->queue.depth() == 0;
      detail::write_job j;
      j.run = [this, idle] {
        s->housekeeping_queued = false;
        expire_leases();
        start_growth();
        if (!idle) return;
        for (auto& [name, w] : s->stores) (void)w.reclaim();
      };
      if (s->queue.try_push(std::move(j)) != detail::push_result::queued) {
        s->housekeeping_queued = false;
      }
    }
    schedule_reclaim();
  });
}

void Broker::impl::start_growth() {
  const bool growing = std::any_of(s->stores.begin(), s->stores.end(),
                                   [](const auto& w) { return w.second.growing(); });
  if (!growing || s->growth_scheduled.exchange(true)) return;
  asio::post(s->io, [this] {
    if (s->stopping) {
      s->growth_scheduled = false;
      return;
    }
    schedule_growth();
  });
}

void Broker::impl::schedule_growth() {
  s->growth_timer->expires_after(detail::growth_interval);
  s->growth_timer->async_wait([this](const boost::system::error_code& ec) {
    if (ec || s->stopping) {
      s->growth_scheduled = false;
      return;
    }
    // Between other writes, like one (a table's asked index made ready
    // in seconds rather than minutes; growing indexes finished sooner).
    detail::write_job j;
    j.run = [this] {
      // One budget for the broker, shared by the stores that grow: a store's
      // own would make a step of n stores n times as long.
      const auto n = std::count_if(s->stores.begin(), s->stores.end(),
                                   [](const auto& w) { return w.second.growing(); });
      bool more = false;
      for (auto& [name, w] : s->stores) {
        if (!w.growing()) continue;
        w.grow(detail::growth_budget / n);
        more = more || w.growing();
      }
      if (!more) {
        s->growth_scheduled = false;
        return;
      }
      asio::post(s->io, [this] {
        if (s->stopping) {
          s->growth_scheduled = false;
          return;
        }
        schedule_growth();
      });
    };
    // A full queue: the next housekeeping starts the steps again.
    if (s->queue.try_push(std::move(j)) != detail::push_result::queued) {
      s->growth_scheduled = false;
    }
  });
}

result<void> Broker::write(std::string_view store, function_ref<result<void>(shm::writer&)> fn) {
  if (detail::own_thread_of == p_.get()) {
    return fail(errc::invalid_argument,
                "Broker::write to '" + std::string(store) +
                    "' from the broker's own writer or serving thread (inside a write's "
                    "function, or a telemetry handler it runs): it would wait for itself; use "
                    "the shm::writer the running write was given, or another thread");
  }
  std::promise<result<void>> done;
  auto answer = done.get_future();
  {
    // Held until the write is queued, so that a concurrent stop cannot tear
    // the queue down under it (the stop then waits: queued writes still run).
    std::lock_guard lock(p_->life_mutex);
    if (p_->state == impl::phase::stopping) {
      return fail(errc::shutting_down,
                  "broker is stopping; the write to '" + std::string(store) + "' was not applied");
    }
    if (p_->state != impl::phase::running) {
      return fail(errc::unavailable,
                  "broker is not running; cannot write to '" + std::string(store) + "'");
    }
    auto* w = p_->find_store(store);
    if (w == nullptr) return p_->no_store(store);
    detail::write_job j;
    j.run = [&done, w, store, &fn] {
      auto r = detail::with_telemetry(
          "slither.store.write",
          [&] {
            return Map{{"store", std::string(store)}, {"op", "write"}};
          },
          [&] {
            return detail::guarded([&]() -> result<Value> {
              auto v = fn(*w);
              if (!v) return std::move(v).error();
              return Value{};
            });
          });
      done.set_value(r ? result<void>{} : result<void>(std::move(r).error()));
    };
    j.cancel = [&done, store] {
      done.set_value(fail(errc::shutting_down, "broker stopped before applying the write to '" +
                                                   std::string(store) + "'"));
    };
    if (!p_->s->queue.push_wait(std::move(j))) {
      return fail(errc::shutting_down,
                  "broker is stopping; the write to '" + std::string(store) + "' was not applied");
    }
  }
  return answer.get();
}

}  // namespace slither
