// The write path: store writes prepared from requests on the serving thread,
// then applied in order through the write queue, on the writer thread or
// inline when the writer is idle.
#include <future>

#include "broker_impl.hpp"
#include "guarded.hpp"
#include "request_args.hpp"

namespace slither {
namespace {

using detail::take;
using detail::take_text;
using protocol::message_type;

// A store write, prepared on the serving thread and applied through the write
// queue (on the writer thread, or inline when the writer is idle).
using write_op = std::function<result<Value>(shm::writer&)>;

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
      auto list = take(args, type, "entries", Value::kind::list, "a list");
      if (!list) return std::move(list).error();
      std::vector<std::pair<std::string, Value>> entries;
      entries.reserve(list->size());
      auto& items = list->as_mut<List>();
      for (std::size_t i = 0; i < items.size(); ++i) {
        auto& e = items[i];
        if (!e.is_list() || e.size() != 2 || !e[0].is_string()) {
          return fail(errc::invalid_argument, "'put_many' entry " + std::to_string(i) +
                                                  " is not a [key (string), value] pair");
        }
        entries.emplace_back(std::move(e[0].as_mut<std::string>()), std::move(e[1]));
      }
      return write_op([table, entries = std::move(entries)](shm::writer& w) -> result<Value> {
        auto r = w.put_many(table, entries);
        if (!r) return std::move(r).error();
        return Value{};
      });
    }
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
      auto expected = take(args, type, "expected_version", Value::kind::int64, "an int");
      if (!expected) return std::move(expected).error();
      if (expected->as<std::int64_t>() < 0) {
        return fail(errc::invalid_argument,
                    "'compare_and_set' expected_version " + expected->to_string() + " is negative");
      }
      auto value = take(args, type, "value", std::nullopt, "a");
      if (!value) return std::move(value).error();
      const auto version = static_cast<std::uint64_t>(expected->as<std::int64_t>());
      return write_op([table, key = std::move(*key), version,
                       value = std::move(*value)](shm::writer& w) -> result<Value> {
        auto v = w.compare_and_set(table, key, version, value);
        if (!v) return std::move(v).error();
        return Value(static_cast<std::int64_t>(*v));
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

// Queues `job` for the writer thread; its result is the reply. A `short_job`
// (one key) runs right here when the writer is idle: the hand-off to the
// writer thread and back cost more than the write itself.
void Broker::impl::enqueue_job(std::string identity, std::uint64_t id, std::string what,
                               std::function<result<Value>()> job, bool short_job) {
  if (short_job && s->queue.try_run_inline([&] { reply(identity, id, detail::guarded(job)); }))
    return;
  const bool queued = s->queue.try_push([this, identity, id, job = std::move(job)]() mutable {
    post_reply(identity, id, detail::guarded(job));
  });
  if (!queued) {
    ++busy;
    reply(identity, id,
          fail(errc::busy, "write queue is full (" + std::to_string(s->queue.limit()) +
                               " pending); '" + what + "' not accepted, retry later"));
  }
}

void Broker::impl::enqueue_write(std::string identity, std::uint64_t id, message_type type,
                                 Map& args) {
  auto store = take_text(args, type, "store");
  if (!store) return reply(identity, id, std::move(store).error());
  auto* w = find_store(*store);
  if (w == nullptr) return reply(identity, id, no_store(*store));
  std::string table;
  auto op = prepare_write(type, args, table);
  if (!op) return reply(identity, id, std::move(op).error());
  const std::string_view name = protocol::to_string(type);
  const bool one_key = type == message_type::put || type == message_type::erase ||
                       type == message_type::compare_and_set;
  enqueue_job(
      std::move(identity), id, std::string(name),
      [this, w, name, store = std::move(*store), table = std::move(table),
       op = std::move(*op)]() -> result<Value> {
        return detail::with_telemetry(
            "slither.store.write",
            [&] {
              return Map{{"store", store}, {"table", table}, {"op", name}};
            },
            [&] { return op(*w); });
      },
      one_key);
}

result<void> Broker::write(std::string_view store,
                           const std::function<result<void>(shm::writer&)>& fn) {
  {
    std::lock_guard lock(p_->life_mutex);
    if (p_->state != impl::phase::running) {
      return fail(errc::unavailable,
                  "broker is not running; cannot write to '" + std::string(store) + "'");
    }
  }
  auto* w = p_->find_store(store);
  if (w == nullptr) return p_->no_store(store);
  std::promise<result<void>> done;
  auto answer = done.get_future();
  const bool queued = p_->s->queue.push_wait([&] {
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
  });
  if (!queued)
    return fail(errc::unavailable,
                "broker is stopping; write to '" + std::string(store) + "' refused");
  return answer.get();
}

}  // namespace slither
