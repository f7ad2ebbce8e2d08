#include "job_wire.hpp"

#include <limits>
#include <utility>

namespace slither::detail::job_wire {
namespace {

error_info bad(std::string_view name, std::string_view why) {
  return fail(errc::invalid_argument,
              "'dispatch_open' argument '" + std::string(name) + "' " + std::string(why));
}

// An optional argument of one kind; `fallback` when absent.
template <class T>
result<T> arg(const Map& args, std::string_view name, T fallback) {
  const auto it = args.find(name);
  if (it == args.end() || it->second.is_null()) return fallback;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->second.is_string()) return bad(name, "must be a string");
    return it->second.as<std::string>();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!it->second.is_int() && !it->second.is_float()) return bad(name, "must be a number");
    return it->second.as<double>();
  } else {
    if (!it->second.is_int()) return bad(name, "must be an int");
    const auto v = it->second.as<std::int64_t>();
    if (v < 0 || static_cast<std::uint64_t>(v) > std::numeric_limits<T>::max()) {
      return bad(name, "is out of range (got " + std::to_string(v) + ")");
    }
    return static_cast<T>(v);
  }
}

Value fallback_value(const fallback_policy& f) {
  if (std::holds_alternative<skip_policy>(f)) return Value(Map{{"policy", "skip"}});
  if (const auto* r = std::get_if<route_policy>(&f)) {
    return Value(Map{{"policy", "route"}, {"output", r->output}});
  }
  return Value(Map{{"policy", "halt"}});
}

Value policy_value(const error_policy& p) {
  if (const auto* r = std::get_if<retry_policy>(&p)) {
    return Value(Map{{"policy", "retry"},
                     {"max_attempts", static_cast<std::int64_t>(r->max_attempts)},
                     {"backoff_initial_ms", static_cast<std::int64_t>(r->delay.initial.count())},
                     {"backoff_multiplier", r->delay.multiplier},
                     {"backoff_max_ms", static_cast<std::int64_t>(r->delay.max.count())},
                     {"then", fallback_value(r->then)}});
  }
  if (std::holds_alternative<skip_policy>(p)) return fallback_value(skip_policy{});
  if (const auto* r = std::get_if<route_policy>(&p)) return fallback_value(*r);
  return fallback_value(halt_policy{});
}

result<error_policy> read_policy(const Value& v, bool allow_retry, std::string_view name) {
  if (!v.is_map()) return bad(name, "must be a map {policy: halt|skip|route|retry, ...}");
  const Map& m = v.as<Map>();
  auto policy = arg<std::string>(m, "policy", "halt");
  if (!policy) return std::move(policy).error();
  if (*policy == "halt") return error_policy(halt_policy{});
  if (*policy == "skip") return error_policy(skip_policy{});
  if (*policy == "route") {
    auto output = arg<std::string>(m, "output", "");
    if (!output) return std::move(output).error();
    return error_policy(route_policy{std::move(*output)});
  }
  if (*policy == "retry" && allow_retry) {
    retry_policy r;
    auto attempts = arg<std::uint32_t>(m, "max_attempts", r.max_attempts);
    auto initial = arg<std::uint32_t>(m, "backoff_initial_ms",
                                      static_cast<std::uint32_t>(r.delay.initial.count()));
    auto multiplier = arg<double>(m, "backoff_multiplier", r.delay.multiplier);
    auto max =
        arg<std::uint32_t>(m, "backoff_max_ms", static_cast<std::uint32_t>(r.delay.max.count()));
    if (!attempts) return std::move(attempts).error();
    if (!initial) return std::move(initial).error();
    if (!multiplier) return std::move(multiplier).error();
    if (!max) return std::move(max).error();
    r.max_attempts = *attempts;
    r.delay =
        backoff{std::chrono::milliseconds(*initial), *multiplier, std::chrono::milliseconds(*max)};
    if (const auto it = m.find("then"); it != m.end()) {
      auto then = read_policy(it->second, false, "on_error.then");
      if (!then) return std::move(then).error();
      if (std::holds_alternative<skip_policy>(*then)) {
        r.then = skip_policy{};
      } else if (auto* route = std::get_if<route_policy>(&*then)) {
        r.then = std::move(*route);
      }
    }
    return error_policy(std::move(r));
  }
  return bad(name, "names an unknown policy '" + *policy + "'");
}

result<item_status> read_status(const Value& v) {
  if (!v.is_string()) return fail(errc::protocol_error, "an item status is not a string");
  const auto& s = v.as<std::string>();
  for (const auto st : {item_status::ok, item_status::skipped, item_status::routed,
                        item_status::failed, item_status::cancelled}) {
    if (to_string(st) == s) return st;
  }
  return fail(errc::protocol_error, "unknown item status '" + s + "'");
}

result<failure_kind> read_kind(const std::string& s) {
  for (const auto k : {failure_kind::item_error, failure_kind::exception, failure_kind::bad_result,
                       failure_kind::worker_died, failure_kind::timeout, failure_kind::quarantined,
                       failure_kind::circuit_open, failure_kind::cancelled}) {
    if (to_string(k) == s) return k;
  }
  return fail(errc::protocol_error, "unknown failure kind '" + s + "'");
}

result<std::uint64_t> read_u64(const Map& m, std::string_view key) {
  const auto it = m.find(key);
  if (it == m.end() || !it->second.is_int() || it->second.as<std::int64_t>() < 0) {
    return fail(errc::protocol_error, "missing or bad '" + std::string(key) + "'");
  }
  return static_cast<std::uint64_t>(it->second.as<std::int64_t>());
}

}  // namespace

Value open_args(const job_options& o) {
  Map args{{"pool", o.pool},
           {"function", o.function},
           {"batch_size", i64(max_batch_items(o.batching))},
           {"max_in_flight", static_cast<std::int64_t>(o.max_in_flight)},
           {"ordering", o.ordering == order_mode::preserve ? "preserve" : "as_completed"},
           {"on_error", policy_value(o.on_error)},
           {"affinity", o.affinity == affinity_mode::none   ? "none"
                        : o.affinity == affinity_mode::hint ? "hint"
                                                            : "strict"},
           {"session_id", o.context.session_id},
           {"pipe", o.context.pipe},
           {"stage", o.context.stage},
           {"metadata", Value(o.context.metadata)},
           {"idle_timeout_ms", static_cast<std::int64_t>(o.idle_timeout.count())}};
  if (o.timeout) args.emplace("timeout_ms", static_cast<std::int64_t>(o.timeout->count()));
  return Value(std::move(args));
}

result<open_request> read_open(const Map& args) {
  open_request out;
  auto pool = arg<std::string>(args, "pool", "");
  auto function = arg<std::string>(args, "function", "");
  auto batch = arg<std::uint32_t>(args, "batch_size", 64);
  auto in_flight = arg<std::uint32_t>(args, "max_in_flight", 8);
  auto ordering = arg<std::string>(args, "ordering", "preserve");
  auto affinity = arg<std::string>(args, "affinity", "hint");
  auto session = arg<std::string>(args, "session_id", "");
  auto pipe = arg<std::string>(args, "pipe", "");
  auto stage = arg<std::string>(args, "stage", "");
  auto idle = arg<std::uint32_t>(args, "idle_timeout_ms", 300'000);
  for (auto* r : {&pool, &function, &ordering, &affinity, &session, &pipe, &stage}) {
    if (!*r) return std::move(*r).error();
  }
  for (auto* r : {&batch, &in_flight, &idle}) {
    if (!*r) return std::move(*r).error();
  }
  out.pool = std::move(*pool);
  dispatch_options& o = out.options;
  o.function = std::move(*function);
  o.batching = preformed_batch{*batch, true};
  o.max_in_flight = *in_flight;
  if (*ordering == "preserve") {
    o.ordering = order_mode::preserve;
  } else if (*ordering == "as_completed") {
    o.ordering = order_mode::as_completed;
  } else {
    return bad("ordering", "must be 'preserve' or 'as_completed' (got '" + *ordering + "')");
  }
  if (*affinity == "none") {
    o.affinity = affinity_mode::none;
  } else if (*affinity == "hint") {
    o.affinity = affinity_mode::hint;
  } else if (*affinity == "strict") {
    o.affinity = affinity_mode::strict;
  } else {
    return bad("affinity", "must be 'none', 'hint' or 'strict' (got '" + *affinity + "')");
  }
  if (const auto it = args.find("on_error"); it != args.end()) {
    auto policy = read_policy(it->second, true, "on_error");
    if (!policy) return std::move(policy).error();
    o.on_error = std::move(*policy);
  }
  if (const auto it = args.find("timeout_ms"); it != args.end() && !it->second.is_null()) {
    auto ms = arg<std::uint32_t>(args, "timeout_ms", 0);
    if (!ms) return std::move(ms).error();
    o.timeout = std::chrono::milliseconds(*ms);
  }
  if (const auto it = args.find("metadata"); it != args.end() && !it->second.is_null()) {
    if (!it->second.is_map()) return bad("metadata", "must be a map");
    o.context.metadata = it->second.as<Map>();
  }
  o.context.session_id = std::move(*session);
  o.context.pipe = std::move(*pipe);
  o.context.stage = std::move(*stage);
  out.idle_timeout = std::chrono::milliseconds(*idle);
  if (auto v = validate(o); !v) return std::move(v).error();
  return out;
}

Value error_value(const dispatch_error& e) {
  return Value(Map{{"kind", std::string(to_string(e.kind))},
                   {"type", e.type},
                   {"message", e.message},
                   {"traceback", e.traceback},
                   {"batch", i64(e.batch)},
                   {"attempt", static_cast<std::int64_t>(e.attempt)},
                   {"worker", i64(e.worker)}});
}

result<dispatch_error> read_error(const Value& v) {
  if (!v.is_map()) return fail(errc::protocol_error, "an error is not a map");
  const Map& m = v.as<Map>();
  dispatch_error e;
  const auto text = [&](std::string_view key, std::string& out) -> bool {
    const auto it = m.find(key);
    if (it == m.end()) return true;
    if (!it->second.is_string()) return false;
    out = it->second.as<std::string>();
    return true;
  };
  std::string kind;
  if (!text("kind", kind) || !text("type", e.type) || !text("message", e.message) ||
      !text("traceback", e.traceback)) {
    return fail(errc::protocol_error, "an error's kind, type, message and traceback are strings");
  }
  auto k = read_kind(kind);
  if (!k) return std::move(k).error();
  e.kind = *k;
  auto batch = read_u64(m, "batch");
  auto attempt = read_u64(m, "attempt");
  auto worker = read_u64(m, "worker");
  if (!batch || !attempt || !worker) {
    return fail(errc::protocol_error, "an error lacks its batch, attempt or worker");
  }
  e.batch = *batch;
  e.attempt = static_cast<std::uint32_t>(*attempt);
  e.worker = *worker;
  return e;
}

buffer encode_status(const batch_output& out) {
  Map m{{"seq", i64(out.seq)}, {"count", i64(out.count)}, {"results", out.has_results}};
  if (out.has_results) {
    if (!out.failures.empty()) {
      List failures;
      failures.reserve(out.failures.size());
      for (const auto& f : out.failures) {
        failures.push_back(
            Value::list({static_cast<std::int64_t>(f.index), std::string(to_string(f.status)),
                         f.error ? error_value(*f.error) : Value()}));
      }
      m.emplace("failures", std::move(failures));
    }
  } else {
    m.emplace("status", std::string(to_string(out.status)));
    if (out.error) m.emplace("error", error_value(*out.error));
  }
  return encode(Value(std::move(m)));
}

result<batch_output> decode_status(std::span<const std::byte> status, opaque_bytes payload) {
  auto v = decode(status);
  if (!v) return std::move(v).error();
  if (!v->is_map()) return fail(errc::protocol_error, "a batch status is not a map");
  const Map& m = v->as<Map>();
  batch_output out;
  auto seq = read_u64(m, "seq");
  auto count = read_u64(m, "count");
  if (!seq || !count) return fail(errc::protocol_error, "a batch status lacks its seq or count");
  out.seq = *seq;
  out.count = *count;
  out.payload = std::move(payload);
  const auto results = m.find("results");
  if (results == m.end() || !results->second.is_bool()) {
    return fail(errc::protocol_error, "a batch status lacks 'results'");
  }
  out.has_results = results->second.as<bool>();
  if (out.has_results) {
    if (const auto f = m.find("failures"); f != m.end()) {
      if (!f->second.is_list()) return fail(errc::protocol_error, "'failures' is not a list");
      for (const auto& entry : f->second.as<List>()) {
        if (!entry.is_list() || entry.as<List>().size() != 3 || !entry.as<List>()[0].is_int()) {
          return fail(errc::protocol_error, "a failure is not [index, status, error]");
        }
        const auto& parts = entry.as<List>();
        const auto index = parts[0].as<std::int64_t>();
        if (index < 0 || static_cast<std::uint64_t>(index) >= out.count) {
          return fail(errc::protocol_error, "a failure's index is past its batch");
        }
        auto st = read_status(parts[1]);
        if (!st) return std::move(st).error();
        auto err = read_error(parts[2]);
        if (!err) return std::move(err).error();
        out.failures.push_back({static_cast<std::uint32_t>(index), *st,
                                std::make_shared<const dispatch_error>(std::move(*err))});
      }
    }
  } else {
    const auto st = m.find("status");
    if (st == m.end()) return fail(errc::protocol_error, "a whole-batch status lacks 'status'");
    auto s = read_status(st->second);
    if (!s) return std::move(s).error();
    out.status = *s;
    if (const auto e = m.find("error"); e != m.end()) {
      auto err = read_error(e->second);
      if (!err) return std::move(err).error();
      out.error = std::make_shared<const dispatch_error>(std::move(*err));
    }
  }
  return out;
}

Value end_value(const std::optional<dispatch_error>& error) {
  Map m{{"ok", !error.has_value()}};
  if (error) m.emplace("error", error_value(*error));
  return Value(std::move(m));
}

result<std::optional<dispatch_error>> read_end(const Value& body) {
  if (!body.is_map()) return fail(errc::protocol_error, "a job's end is not a map");
  const Value* e = body.find("error");
  if (e == nullptr) return std::optional<dispatch_error>();
  auto err = read_error(*e);
  if (!err) return std::move(err).error();
  return std::optional<dispatch_error>(std::move(*err));
}

Value moved_value(const session_moved& moved) {
  return Value(Map{{"job", i64(moved.job)},
                   {"session", moved.session},
                   {"from", i64(moved.from)},
                   {"to", i64(moved.to)}});
}

result<session_moved> read_moved(const Value& body) {
  if (!body.is_map()) return fail(errc::protocol_error, "a session move is not a map");
  const Map& m = body.as<Map>();
  auto job = read_u64(m, "job");
  auto from = read_u64(m, "from");
  auto to = read_u64(m, "to");
  const Value* session = body.find("session");
  if (!job || !from || !to || session == nullptr || !session->is_string()) {
    return fail(errc::protocol_error, "a session move lacks job, session, from or to");
  }
  return session_moved{*job, session->as<std::string>(), *from, *to};
}

}  // namespace slither::detail::job_wire
