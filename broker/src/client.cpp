#include "slither/broker/client.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <variant>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "control_channel.hpp"
#include "slither/broker/protocol.hpp"
#include "slither/core/wire.hpp"

namespace slither {

namespace {

using clock = std::chrono::steady_clock;
using protocol::message_type;

/// Longest wait for the ping that tells a slow broker from an absent one.
constexpr std::chrono::milliseconds probe_timeout{1000};

// Counts fork()s in this process, so a client can tell it now lives in a child.
std::atomic<std::uint64_t> forks{0};

std::uint64_t fork_generation() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { forks.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  return forks.load(std::memory_order_relaxed);
}

// The ZeroMQ context every client of this process shares (one I/O thread and
// one reaper, not two threads per client). A fork() child makes its own: the
// parent's belongs to threads that do not exist there, and terminating it
// could hang, so the child leaves it behind as clients do their sockets.
std::shared_ptr<zmq::context_t> shared_context() {
  static std::mutex mutex;
  static std::shared_ptr<zmq::context_t> context;
  static std::uint64_t generation = 0;
  std::lock_guard lock(mutex);
  const std::uint64_t now = fork_generation();
  if (context && generation != now) {
    (void)new std::shared_ptr<zmq::context_t>(std::move(context));
  }
  if (!context) {
    context = std::make_shared<zmq::context_t>(1);
    generation = now;
  }
  return context;
}

result<void> check_options(const client_options& options) {
  if (!valid_namespace(options.ns)) {
    return fail(errc::invalid_argument,
                "namespace '" + options.ns + "' must be 1-64 characters of [A-Za-z0-9_-]");
  }
  if (options.timeout.count() <= 0 || options.timeout > client_options::max_timeout) {
    return fail(errc::invalid_argument, "timeout of " + std::to_string(options.timeout.count()) +
                                            " ms is out of range: give more than 0 and at most " +
                                            std::to_string(client_options::max_timeout.count()) +
                                            " ms (one year)");
  }
  if (options.max_reply_bytes <= 0) {
    return fail(errc::invalid_argument, "max_reply_bytes must be more than 0, not " +
                                            std::to_string(options.max_reply_bytes));
  }
  if (options.interrupt && options.interrupt_interval.count() <= 0) {
    return fail(errc::invalid_argument, "interrupt_interval must be more than 0 ms");
  }
  return {};
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

std::string ms_text(std::chrono::milliseconds ms) {
  return std::to_string(ms.count()) + " ms";
}

}  // namespace

struct SLITHER_BROKER_NO_EXPORT client::impl {
  client_options options;
  std::string endpoint;
  std::shared_ptr<zmq::context_t> context = shared_context();
  zmq::socket_t socket;
  std::uint64_t next_id = 1;
  std::string ns;
  std::size_t max_message_bytes = decode_limits{}.max_message_bytes;
  std::uint64_t forked = fork_generation();
  // The incarnation of each store this client was told about.
  std::map<std::string, std::uint64_t, std::less<>> incarnations;

  result<void> open() {
    try {
      socket = zmq::socket_t(*context, zmq::socket_type::dealer);
      socket.set(zmq::sockopt::linger, 0);
      // Queue a request only on a finished connection: a send that cannot go
      // out before the deadline then means "no broker", with no ping needed.
      socket.set(zmq::sockopt::immediate, true);
      // A reply over this is dropped by ZeroMQ before it is buffered.
      socket.set(zmq::sockopt::maxmsgsize, options.max_reply_bytes);
      if (auto r = detail::set_curve_client(socket, options); !r) return r;
      socket.connect(endpoint);
    } catch (const zmq::error_t& e) {
      return fail(errc::invalid_argument, "cannot connect to '" + endpoint + "': " + e.what());
    }
    return {};
  }

  // Drops the socket, with whatever it still holds, so that a reply that
  // arrives after a timeout is never read as the reply to a later request.
  void reset() {
    socket.close();
    (void)open();
  }

  // In a fork() child, the context and socket belong to the parent's I/O
  // threads, which do not exist here: closing them could hang or disturb the
  // parent's connection (shared file descriptors). They are left behind, a
  // few hundred bytes per fork, and this process connects anew.
  void renew_after_fork() {
    forked = fork_generation();
    (void)new zmq::socket_t(std::move(socket));
    (void)new std::shared_ptr<zmq::context_t>(std::move(context));
    context = shared_context();
    (void)open();
  }

  // Waits for `events` on the socket until `deadline`: true when they came,
  // false when the deadline passed, or the error `options.interrupt` returned.
  result<bool> wait(short events, clock::time_point deadline) {
    for (;;) {
      const auto now = clock::now();
      if (now >= deadline) return false;
      auto slice = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
      if (options.interrupt) slice = std::min(slice, options.interrupt_interval);
      zmq::pollitem_t item{socket.handle(), 0, events, 0};
      try {
        if (zmq::poll(&item, 1, slice) > 0) return true;
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) return false;
      }
      if (options.interrupt) {
        if (auto r = options.interrupt(); !r) return std::move(r).error();
      }
    }
  }

  // One request and its reply, within `budget`: the reply's Value, or with
  // `raw` an ok reply's payload bytes, undecoded. Every failure but a reply
  // from the broker resets the socket.
  struct outcome {
    result<std::variant<Value, buffer>> reply;
    bool missed = false;       // sent, but no reply came in time
    bool interrupted = false;  // `options.interrupt` ended the wait
  };

  outcome exchange(message_type type, buffer payload, bool raw, std::chrono::milliseconds budget) {
    const std::uint64_t id = next_id++;
    const auto head = protocol::encode_header({protocol::protocol_version, type, id});
    std::vector<buffer> frames;
    frames.emplace_back(head.begin(), head.end());
    frames.push_back(std::move(payload));
    if (frames[1].size() > max_message_bytes) {
      return {fail(errc::limit_exceeded, std::string(protocol::to_string(type)) + " request of " +
                                             std::to_string(frames[1].size()) +
                                             " bytes is over the broker's limit of " +
                                             std::to_string(max_message_bytes))};
    }
    const auto deadline = clock::now() + budget;
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const auto flags = i + 1 < frames.size()
                             ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                             : zmq::send_flags::dontwait;
      for (;;) {
        std::optional<std::size_t> sent;
        try {
          sent = socket.send(zmq::buffer(frames[i].data(), frames[i].size()), flags);
        } catch (const zmq::error_t& e) {
          if (e.num() == EINTR) continue;
          reset();
          return {fail(errc::unavailable, "cannot send '" + std::string(protocol::to_string(type)) +
                                              "' to '" + endpoint + "': " + e.what())};
        }
        if (sent) break;
        auto ready = wait(ZMQ_POLLOUT, deadline);
        if (!ready || !*ready) {
          reset();
          if (!ready) return {std::move(ready).error(), false, true};
          // Nothing took the request: no connection to a broker came up.
          return {fail(errc::unavailable, "no broker answered at '" + endpoint + "' within " +
                                              ms_text(budget) + " (sending '" +
                                              std::string(protocol::to_string(type)) + "')")};
        }
      }
    }
    for (;;) {
      auto ready = wait(ZMQ_POLLIN, deadline);
      if (!ready) {
        reset();
        return {std::move(ready).error(), false, true};
      }
      if (!*ready) {
        reset();
        return {fail(errc::unavailable, "no reply"), true};
      }
      std::vector<zmq::message_t> parts;
      try {
        if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
          continue;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        reset();
        return {fail(errc::unavailable, "cannot receive the reply to '" +
                                            std::string(protocol::to_string(type)) + "' from '" +
                                            endpoint + "': " + e.what())};
      }
      std::vector<protocol::frame> spans;
      for (const auto& p : parts) spans.emplace_back(p.data<std::byte>(), p.size());
      if (raw && spans.size() == 2) {
        // An ok reply is handed on undecoded; anything else is decoded below.
        const auto h = protocol::decode_header(spans[0]);
        if (h && h->version == protocol::protocol_version && h->request_id != id) continue;
        if (h && h->version == protocol::protocol_version && h->type == message_type::reply_ok) {
          return {std::variant<Value, buffer>(buffer(spans[1].begin(), spans[1].end()))};
        }
      }
      auto reply = protocol::decode_reply(spans);
      if (!reply) {
        reset();
        auto err = std::move(reply).error();
        err.message = "reply to '" + std::string(protocol::to_string(type)) + "' from '" +
                      endpoint + "': " + err.message;
        return {std::move(err)};
      }
      if (reply->head.request_id != id) continue;  // a stale reply to an abandoned request
      if (reply->head.type == message_type::reply_error) {
        return {protocol::read_error_body(reply->body)};
      }
      return {std::variant<Value, buffer>(std::move(reply->body))};
    }
  }

  // `exchange` within the client's timeout, in a fresh connection after a
  // fork; a request that got no reply is told apart by a ping: a broker that
  // still answers one is alive but slow (`timeout`), else `unavailable`.
  result<std::variant<Value, buffer>> call(message_type type, buffer payload, bool raw) {
    if (forked != fork_generation()) renew_after_fork();
    if (!socket) return fail(errc::unavailable, "client for '" + endpoint + "' has no socket");
    auto out = exchange(type, std::move(payload), raw, options.timeout);
    if (!out.missed) return std::move(out.reply);
    const auto probe_budget = std::min(options.timeout, probe_timeout);
    auto probe = exchange(message_type::ping, encode(Value(Map{})), false, probe_budget);
    std::string what = "'";  // piecewise: GCC 12 warns falsely (-Wrestrict) on "x" + string
    what += protocol::to_string(type);
    what += '\'';
    if (probe.reply) {
      return fail(errc::timeout, "the broker at '" + endpoint + "' is alive but did not answer " +
                                     what + " within " + ms_text(options.timeout));
    }
    if (probe.interrupted) return std::move(probe.reply).error();
    return fail(errc::unavailable, "broker at '" + endpoint + "' did not answer " + what +
                                       " within " + ms_text(options.timeout) +
                                       ", nor a ping within " + ms_text(probe_budget));
  }

  result<Value> request(message_type type, const Value& args) {
    auto reply = call(type, encode(args), false);
    if (!reply) return std::move(reply).error();
    return std::move(std::get<Value>(*reply));
  }

  // A request whose payload the caller encoded, and whose ok reply is
  // returned as its payload bytes, undecoded.
  result<buffer> request_encoded(message_type type, buffer payload) {
    auto reply = call(type, std::move(payload), true);
    if (!reply) return std::move(reply).error();
    return std::move(std::get<buffer>(*reply));
  }

  // The "incarnation" argument of `store`'s requests, if this client knows it.
  std::optional<std::int64_t> incarnation_of(std::string_view store) const {
    if (const auto it = incarnations.find(store); it != incarnations.end()) {
      return static_cast<std::int64_t>(it->second);
    }
    return std::nullopt;
  }

  // A store request's arguments: `store`, and its incarnation if known.
  Map store_args(std::string_view store) const {
    Map args{{"store", Value(store)}};
    if (const auto inc = incarnation_of(store)) args.emplace("incarnation", *inc);
    return args;
  }

  // The integer arguments of an encoded store request: `ints`, and the
  // store's incarnation if known.
  std::vector<std::pair<std::string_view, std::int64_t>> store_ints(
      std::string_view store,
      std::initializer_list<std::pair<std::string_view, std::int64_t>> ints = {}) const {
    std::vector<std::pair<std::string_view, std::int64_t>> out(ints);
    if (const auto inc = incarnation_of(store)) out.emplace_back("incarnation", *inc);
    return out;
  }
};

client::client(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}
client::client(client&&) noexcept = default;
client& client::operator=(client&&) noexcept = default;
client::~client() = default;

result<client> client::connect(const client_options& options) {
  if (auto ok = check_options(options); !ok) return std::move(ok).error();
  auto p = std::make_unique<impl>();
  p->options = options;
  p->endpoint = detail::control_endpoint_of(options);
  if (auto r = detail::check_control_endpoint(options, p->endpoint); !r) {
    return std::move(r).error();
  }
  if (auto opened = p->open(); !opened) return std::move(opened).error();
  auto reply =
      p->request(message_type::hello,
                 Value::map({{"protocol", static_cast<std::int64_t>(protocol::protocol_version)},
                             {"pid", static_cast<std::int64_t>(::getpid())}}));
  if (!reply) return std::move(reply).error();
  const Value* ns = reply->find("ns");
  const Value* max_bytes = reply->find("max_message_bytes");
  if (ns == nullptr || !ns->is_string() || max_bytes == nullptr || !max_bytes->is_int() ||
      max_bytes->as<std::int64_t>() <= 0) {
    return fail(errc::protocol_error, "hello reply from '" + p->endpoint +
                                          "' lacks 'ns' or a positive 'max_message_bytes'");
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
  const Value* incarnation = reply->find("incarnation");
  if (ns == nullptr || !ns->is_string() || name == nullptr || !name->is_string() ||
      tables == nullptr || !tables->is_list() || layout == nullptr || !layout->is_int() ||
      (incarnation != nullptr && !incarnation->is_int())) {
    return fail(errc::protocol_error, "malformed attach_info reply: " + reply->to_string());
  }
  store_info info{ns->as<std::string>(),
                  name->as<std::string>(),
                  {},
                  static_cast<std::uint32_t>(layout->as<std::int64_t>()),
                  0};
  for (const auto& t : tables->as<List>()) {
    if (!t.is_string())
      return fail(errc::protocol_error, "attach_info: a table name is not a string");
    info.tables.push_back(t.as<std::string>());
  }
  if (incarnation != nullptr) {
    info.incarnation = static_cast<std::uint64_t>(incarnation->as<std::int64_t>());
    set_incarnation(store, info.incarnation);
  }
  return info;
}

void client::set_incarnation(std::string_view store, std::uint64_t incarnation) {
  if (const auto it = p_->incarnations.find(store); it != p_->incarnations.end()) {
    it->second = incarnation;
  } else {
    p_->incarnations.emplace(std::string(store), incarnation);
  }
}

result<std::uint64_t> client::put(std::string_view store, std::string_view table,
                                  std::string_view key, const Value& value) {
  Map args = p_->store_args(store);
  args.emplace("table", table);
  args.emplace("key", key);
  args.emplace("value", value);
  auto reply = p_->request(message_type::put, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  return as_version(*reply, "put");
}

namespace {

Value entry_list(std::span<const std::pair<std::string, Value>> entries) {
  List list;
  list.reserve(entries.size());
  for (const auto& [key, value] : entries) list.push_back(Value::list({key, value}));
  return Value(std::move(list));
}

}  // namespace

result<void> client::put_many(std::string_view store, std::string_view table,
                              std::span<const std::pair<std::string, Value>> entries, bool atomic) {
  Map args = p_->store_args(store);
  args.emplace("table", table);
  args.emplace("entries", entry_list(entries));
  if (atomic) args.emplace("atomic", true);
  auto reply = p_->request(message_type::put_many, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  return {};
}

result<void> client::reload(std::string_view store, std::string_view table,
                            std::span<const std::pair<std::string, Value>> entries) {
  Map args = p_->store_args(store);
  args.emplace("table", table);
  args.emplace("entries", entry_list(entries));
  auto reply = p_->request(message_type::reload, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  return {};
}

result<void> client::create_table(std::string_view store, std::string_view table,
                                  std::string_view kind, std::uint64_t capacity) {
  // The wire's ints are int64: a larger capacity would reach the broker as a
  // negative one, and its error would name that number instead.
  if (capacity > static_cast<std::uint64_t>(INT64_MAX)) {
    return fail(errc::invalid_argument,
                "'create_table' capacity " + std::to_string(capacity) + " is not in 1..2^32");
  }
  Map args = p_->store_args(store);
  args.emplace("table", table);
  args.emplace("kind", kind);
  args.emplace("capacity", static_cast<std::int64_t>(capacity));
  auto reply = p_->request(message_type::create_table, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  return {};
}

result<void> client::drop_table(std::string_view store, std::string_view table) {
  Map args = p_->store_args(store);
  args.emplace("table", table);
  auto reply = p_->request(message_type::drop_table, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  return {};
}

result<bool> client::erase(std::string_view store, std::string_view table, std::string_view key) {
  Map args = p_->store_args(store);
  args.emplace("table", table);
  args.emplace("key", key);
  auto reply = p_->request(message_type::erase, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  if (!reply->is_bool()) return fail(errc::protocol_error, "erase reply is not a bool");
  return reply->as<bool>();
}

namespace {

// The wire carries a version as an int64; a larger one is named as the caller
// gave it rather than sent as the negative number the broker would name.
result<std::int64_t> wire_version(std::uint64_t version, std::string_view request) {
  if (version > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return fail(errc::invalid_argument, std::string(request) + " expected_version " +
                                            std::to_string(version) +
                                            " is not a version (0 to 2**63 - 1)");
  }
  return static_cast<std::int64_t>(version);
}

}  // namespace

result<std::uint64_t> client::compare_and_set(std::string_view store, std::string_view table,
                                              std::string_view key, std::uint64_t expected_version,
                                              const Value& value) {
  Map args = p_->store_args(store);
  args.emplace("table", table);
  args.emplace("key", key);
  auto version = wire_version(expected_version, "compare_and_set");
  if (!version) return std::move(version).error();
  args.emplace("expected_version", *version);
  args.emplace("value", value);
  auto reply = p_->request(message_type::compare_and_set, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  return as_version(*reply, "compare_and_set");
}

result<bool> client::compare_and_erase(std::string_view store, std::string_view table,
                                       std::string_view key, std::uint64_t expected_version) {
  Map args = p_->store_args(store);
  args.emplace("table", table);
  args.emplace("key", key);
  auto version = wire_version(expected_version, "compare_and_erase");
  if (!version) return std::move(version).error();
  args.emplace("expected_version", *version);
  auto reply = p_->request(message_type::compare_and_erase, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  if (!reply->is_bool()) return fail(errc::protocol_error, "compare_and_erase reply is not a bool");
  return reply->as<bool>();
}

namespace {

result<std::uint64_t> int_field(const Value& reply, std::string_view name) {
  const Value* v = reply.is_map() ? reply.find(name) : nullptr;
  if (v == nullptr || !v->is_int() || v->as<std::int64_t>() < 0) {
    return fail(errc::protocol_error,
                "put_reserve reply has no non-negative int '" + std::string(name) + "'");
  }
  return static_cast<std::uint64_t>(v->as<std::int64_t>());
}

}  // namespace

namespace {

result<put_reservation> as_reservation(const Value& reply) {
  put_reservation r;
  const Value* object = reply.is_map() ? reply.find("object") : nullptr;
  if (object == nullptr || !object->is_string()) {
    return fail(errc::protocol_error, "put_reserve reply has no 'object'");
  }
  r.object = object->as<std::string>();
  std::uint64_t lease_ms = 0;
  for (auto [name, field] :
       {std::pair{"id", &r.id}, std::pair{"offset", &r.offset}, std::pair{"bytes", &r.bytes},
        std::pair{"map_bytes", &r.map_bytes}, std::pair{"lease_ms", &lease_ms}}) {
    auto v = int_field(reply, name);
    if (!v) return std::move(v).error();
    *field = *v;
  }
  r.lease = std::chrono::milliseconds(lease_ms);
  // Absent from an older broker's reply: it reserved the pages itself.
  const Value* backs = reply.find("client_backs");
  r.client_backs = backs != nullptr && backs->is_bool() && backs->as<bool>();
  return r;
}

// Whether this kernel knows MADV_POPULATE_WRITE: the advice is checked
// before the range, so an empty range tells without touching anything.
bool can_populate_write() noexcept {
  static const bool known = [] {
    alignas(4096) static char page[4096];
    return ::madvise(page, 0, MADV_POPULATE_WRITE) == 0;
  }();
  return known;
}

}  // namespace

result<put_reservation> client::reserve_put(std::string_view store, std::string_view table,
                                            std::string_view key, dtype type,
                                            std::span<const std::uint64_t> shape,
                                            bool client_backs) {
  for (const std::uint64_t d : shape) {
    // Sent as int64, it would arrive negative, refused as if not a size.
    if (d > static_cast<std::uint64_t>(INT64_MAX)) {
      return fail(errc::limit_exceeded, "an array with a dimension of " + std::to_string(d) +
                                            " elements cannot be reserved");
    }
  }
  Map args = p_->store_args(store);
  if (client_backs) args.emplace("client_backs", true);
  args.emplace("table", table);
  args.emplace("key", key);
  args.emplace("dtype", static_cast<std::int64_t>(type));
  List dims;
  for (const std::uint64_t d : shape) dims.emplace_back(static_cast<std::int64_t>(d));
  args.emplace("shape", std::move(dims));
  auto reply = p_->request(message_type::put_reserve, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  return as_reservation(*reply);
}

result<put_reservation> client::reserve_put_bytes(std::string_view store, std::string_view table,
                                                  std::string_view key, std::uint64_t bytes,
                                                  bool client_backs) {
  if (bytes > static_cast<std::uint64_t>(INT64_MAX)) {
    return fail(errc::limit_exceeded,
                "a bytes value of " + std::to_string(bytes) + " bytes cannot be reserved");
  }
  Map args = p_->store_args(store);
  args.emplace("table", table);
  args.emplace("key", key);
  args.emplace("bytes", static_cast<std::int64_t>(bytes));
  if (client_backs) args.emplace("client_backs", true);
  auto reply = p_->request(message_type::put_reserve, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  return as_reservation(*reply);
}

result<std::uint64_t> client::commit_put(std::string_view store, std::uint64_t id) {
  auto reply = p_->request(message_type::put_commit,
                           Value::map({{"store", store}, {"id", static_cast<std::int64_t>(id)}}));
  if (!reply) return std::move(reply).error();
  return as_version(*reply, "put_commit");
}

result<void> client::abort_put(std::string_view store, std::uint64_t id) {
  auto reply = p_->request(message_type::put_abort,
                           Value::map({{"store", store}, {"id", static_cast<std::int64_t>(id)}}));
  if (!reply) return std::move(reply).error();
  return {};
}

result<std::uint64_t> client::fill_and_commit(std::string_view store, const put_reservation& r,
                                              std::span<const std::byte> data) {
  auto give_up = [&](error_info e) -> error_info {
    (void)abort_put(store, r.id);
    return e;
  };
  if (r.bytes != data.size() || r.map_bytes < r.bytes) {
    return give_up(fail(errc::protocol_error, "the broker reserved " + std::to_string(r.bytes) +
                                                  " bytes for a value of " +
                                                  std::to_string(data.size())));
  }
  // Verified before it is written through: this user's object, writable by
  // no one else, and as large as what is mapped (or the copy would SIGBUS).
  const int fd = ::shm_open(r.object.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
  if (fd < 0) {
    return give_up(fail(errc::io_error, "cannot open shared memory '" + r.object +
                                            "' for a large write: " + std::strerror(errno)));
  }
  struct stat st {};
  const bool trusted = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() &&
                       (st.st_mode & (S_IWGRP | S_IWOTH)) == 0 &&
                       static_cast<std::uint64_t>(st.st_size) >= r.offset + r.map_bytes;
  // Pages the broker backed (reserved, or left by the value this one
  // replaces) are faulted in by the copy, a page at a time. Mapped in one
  // pass (MAP_POPULATE, or MADV_POPULATE_WRITE), a 256 MiB put ran at 4,400
  // MiB/s instead of 2,400, but that one system call made other clients'
  // requests wait: their p99 round trip during such puts was 1–2 ms, against
  // 0.2 ms with faults (tests/bench/python/bench_large_put.py). Pages left
  // to this process are populated below, where a failure is an error.
  void* p = trusted ? ::mmap(nullptr, r.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                             static_cast<off_t>(r.offset))
                    : MAP_FAILED;
  ::close(fd);
  if (!trusted) {
    return give_up(fail(errc::io_error, "shared memory '" + r.object +
                                            "' is not this user's, is writable by others, or is "
                                            "smaller than the reservation: refusing to write it"));
  }
  if (p == MAP_FAILED) {
    return give_up(fail(errc::io_error, "cannot map shared memory '" + r.object +
                                            "' for a large write: " + std::strerror(errno)));
  }
  auto* const dst = static_cast<std::byte*>(p);
  if (!r.client_backs) {
    if (!data.empty()) std::memcpy(dst, data.data(), data.size());
  } else {
    // Advice only (where /dev/shm gives huge pages to mappings that ask):
    // populated through this mapping, the pages are huge ones there.
    if (r.map_bytes >= (std::uint64_t{2} << 20)) ::madvise(p, r.map_bytes, MADV_HUGEPAGE);
    // A slice at a time: backed, filled while its zeroed pages are still in
    // cache, then the CPU offered to whoever waits for it. Populated in one
    // call, a 256 MiB value held this CPU for 50 ms or more in the kernel,
    // and threads the scheduler had queued on it (another client's, the
    // broker's) waited there for a tick: other clients' requests took 3 ms
    // at p99 during such puts (tests/bench/python/bench_large_put.py);
    // 0.3-0.7 ms in slices of 128-256 KiB, 0.8 ms in 1 MiB ones, 1.8 ms in 4 MiB.
    constexpr std::uint64_t slice = std::uint64_t{256} << 10;
    for (std::uint64_t at = 0; at < r.map_bytes; at += slice) {
      const std::uint64_t n = std::min(slice, r.map_bytes - at);
      if (::madvise(dst + at, n, MADV_POPULATE_WRITE) != 0) {
        // EFAULT: a fault would have raised SIGBUS, which for shared memory
        // means no page to be had.
        const int err = errno;
        ::munmap(p, r.map_bytes);
        return give_up(fail(err == EFAULT || err == ENOMEM ? errc::no_space : errc::io_error,
                            "cannot back " + std::to_string(r.map_bytes) +
                                " bytes of shared memory '" + r.object +
                                "' for a large write (is /dev/shm full?): " + std::strerror(err)));
      }
      if (at < data.size()) std::memcpy(dst + at, data.data() + at, std::min(n, data.size() - at));
      ::sched_yield();
    }
  }
  ::munmap(p, r.map_bytes);  // sealed: nothing of ours writes to it after the commit
  return commit_put(store, r.id);
}

result<std::uint64_t> client::put_in_place(std::string_view store, std::string_view table,
                                           std::string_view key, const ndarray& array) {
  auto r = reserve_put(store, table, key, array.type(), array.shape(), can_populate_write());
  if (!r) return std::move(r).error();
  return fill_and_commit(store, *r, array.bytes());
}

result<std::uint64_t> client::put_bytes_in_place(std::string_view store, std::string_view table,
                                                 std::string_view key,
                                                 std::span<const std::byte> bytes) {
  auto r = reserve_put_bytes(store, table, key, bytes.size(), can_populate_write());
  if (!r) return std::move(r).error();
  return fill_and_commit(store, *r, bytes);
}

result<void> client::clear(std::string_view store, std::string_view table) {
  Map args = p_->store_args(store);
  args.emplace("table", table);
  auto reply = p_->request(message_type::clear, Value(std::move(args)));
  if (!reply) return std::move(reply).error();
  return {};
}

result<Value> client::call_view(std::string_view store, std::string_view view, const Value& arg,
                                std::string_view session_id) {
  Map args = p_->store_args(store);
  args.emplace("view", view);
  args.emplace("arg", arg);
  args.emplace("session_id", session_id);
  return p_->request(message_type::call_view, Value(std::move(args)));
}

namespace {

// A request's argument map: `fields` (name, text) then, last, `name` with a
// value given as its encoding, spliced in (checked, arrays re-padded).
result<buffer> splice_args(
    std::initializer_list<std::pair<std::string_view, std::string_view>> fields,
    std::span<const std::pair<std::string_view, std::int64_t>> ints, std::string_view name,
    std::span<const std::byte> encoded,
    std::optional<std::pair<std::string_view, bool>> flag = std::nullopt) {
  buffer payload;
  try {
    wire::writer w(payload);
    w.map_header(fields.size() + ints.size() + 1 + (flag ? 1 : 0));
    if (flag) {
      w.string(flag->first);
      w.boolean(flag->second);
    }
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
  auto payload = splice_args({{"store", store}, {"table", table}, {"key", key}},
                             p_->store_ints(store), "value", value);
  if (!payload) return std::move(payload).error();
  auto reply = p_->request_encoded(message_type::put, std::move(*payload));
  if (!reply) return std::move(reply).error();
  auto v = decode(*reply);
  if (!v) return fail(errc::protocol_error, "put reply: " + v.error().message);
  return as_version(*v, "put");
}

result<void> client::put_many_encoded(std::string_view store, std::string_view table,
                                      std::span<const std::byte> entries, bool atomic) {
  auto payload = splice_args(
      {{"store", store}, {"table", table}}, p_->store_ints(store), "entries", entries,
      atomic ? std::optional<std::pair<std::string_view, bool>>({"atomic", true}) : std::nullopt);
  if (!payload) return std::move(payload).error();
  auto reply = p_->request_encoded(message_type::put_many, std::move(*payload));
  if (!reply) return std::move(reply).error();
  return {};
}

result<void> client::reload_encoded(std::string_view store, std::string_view table,
                                    std::span<const std::byte> entries) {
  auto payload =
      splice_args({{"store", store}, {"table", table}}, p_->store_ints(store), "entries", entries);
  if (!payload) return std::move(payload).error();
  auto reply = p_->request_encoded(message_type::reload, std::move(*payload));
  if (!reply) return std::move(reply).error();
  return {};
}

result<std::uint64_t> client::compare_and_set_encoded(std::string_view store,
                                                      std::string_view table, std::string_view key,
                                                      std::uint64_t expected_version,
                                                      std::span<const std::byte> value) {
  auto version = wire_version(expected_version, "compare_and_set");
  if (!version) return std::move(version).error();
  const auto ints = p_->store_ints(store, {{"expected_version", *version}});
  auto payload =
      splice_args({{"store", store}, {"table", table}, {"key", key}}, ints, "value", value);
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
  auto payload = splice_args({{"store", store}, {"view", view}, {"session_id", session_id}},
                             p_->store_ints(store), "arg", arg);
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

bool valid_namespace(std::string_view ns) noexcept {
  if (ns.empty() || ns.size() > 64) return false;
  return std::all_of(ns.begin(), ns.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

}  // namespace slither
