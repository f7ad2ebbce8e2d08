// Value, item and batch encoding and decoding over the wire format
// (`slither/core/wire.hpp`). Values are written straight into the output
// buffer and decoded in place into their containers: no streams, no archives,
// no per-call set-up.
#include "slither/core/codec.hpp"

#include <bit>
#include <new>

#include "slither/core/wire.hpp"

namespace slither {
namespace {

// ---- encoding -------------------------------------------------------------------

void check_depth(std::uint32_t depth) {
  const auto limit = decode_limits{}.max_depth;
  if (depth > limit) {
    throw error(errc::limit_exceeded,
                "value nests deeper than " + std::to_string(limit) + " levels; cannot encode it");
  }
}

void write(wire::writer& w, const Value& v, std::uint32_t depth, std::vector<ndarray>* oob) {
  switch (v.type()) {
    case Value::kind::null:
      return w.null();
    case Value::kind::boolean:
      return w.boolean(v.as<bool>());
    case Value::kind::int64:
      return w.integer(v.as<std::int64_t>());
    case Value::kind::float64:
      return w.real(v.as<double>());
    case Value::kind::string:
      return w.string(v.as<std::string>());
    case Value::kind::bytes:
      return w.bytes(v.as<Bytes>().data);
    case Value::kind::list: {
      check_depth(depth + 1);
      const List& l = v.as<List>();
      w.list_header(l.size());
      for (const Value& e : l) write(w, e, depth + 1, oob);
      return;
    }
    case Value::kind::map: {
      check_depth(depth + 1);
      const Map& m = v.as<Map>();
      w.map_header(m.size());
      for (const auto& [k, e] : m) {
        w.string(k);
        write(w, e, depth + 1, oob);
      }
      return;
    }
    case Value::kind::ndarray: {
      const ndarray& a = v.as<ndarray>();
      if (oob != nullptr) {
        w.array_out_of_band(a.type(), a.shape());
        oob->push_back(a);
      } else {
        w.array(a.type(), a.shape(), a.bytes());
      }
      return;
    }
  }
}

constexpr std::size_t uvar_size(std::uint64_t v) noexcept {
  return 1 + static_cast<std::size_t>(std::bit_width(v | 1) - 1) / 7;
}

constexpr std::size_t header_size(std::size_t n, std::size_t short_max) noexcept {
  return n <= short_max ? 1 : 1 + uvar_size(n);
}

// The offset after `v` when it starts at `offset` (array padding depends on it).
std::size_t end_of(const Value& v, std::size_t offset) {
  switch (v.type()) {
    case Value::kind::null:
    case Value::kind::boolean:
      return offset + 1;
    case Value::kind::int64: {
      const auto i = v.as<std::int64_t>();
      return offset +
             (i >= wire::fixint_min && i <= wire::fixint_max ? 1 : 1 + uvar_size(wire::zigzag(i)));
    }
    case Value::kind::float64:
      return offset + 9;
    case Value::kind::string:
      return offset + header_size(v.size(), wire::fixstr_max) + v.size();
    case Value::kind::bytes:
      return offset + 1 + uvar_size(v.size()) + v.size();
    case Value::kind::list: {
      offset += header_size(v.size(), wire::fixcount_max);
      for (const Value& e : v.as<List>()) offset = end_of(e, offset);
      return offset;
    }
    case Value::kind::map: {
      offset += header_size(v.size(), wire::fixcount_max);
      for (const auto& [k, e] : v.as<Map>()) {
        offset = end_of(e, offset + header_size(k.size(), wire::fixstr_max) + k.size());
      }
      return offset;
    }
    case Value::kind::ndarray: {
      const ndarray& a = v.as<ndarray>();
      offset += 3;
      for (const auto d : a.shape()) offset += uvar_size(d);
      if (a.nbytes() >= wire::array_alignment) offset += wire::pad_for(offset);
      return offset + a.nbytes();
    }
  }
  return offset;
}

void write_item(wire::writer& w, const Item& item) {
  w.uvar(item.id);
  write(w, item.payload, 0, nullptr);
  check_depth(1);
  w.map_header(item.meta.size());
  for (const auto& [k, e] : item.meta) {
    w.string(k);
    write(w, e, 1, nullptr);
  }
  w.string(item.route);
}

// ---- decoding ---------------------------------------------------------------------

// Builds `Value`s in place: containers are sized once from the checked count,
// and each element is decoded straight into its place.
class value_builder {
 public:
  using slot = Value&;

  explicit value_builder(std::span<const std::span<const std::byte>> oob = {}) noexcept
      : oob_(oob) {}

  // Slots start out null.
  void null(Value&) noexcept {}
  void boolean(Value& out, bool b) { out.emplace<bool>(b); }
  void integer(Value& out, std::int64_t v) { out.emplace<std::int64_t>(v); }
  void real(Value& out, double d) { out.emplace<double>(d); }
  void string(Value& out, std::string_view s) { out.emplace<std::string>(s); }
  void bytes(Value& out, std::string_view s) { out.emplace<Bytes>(Bytes{std::string(s)}); }
  void array(Value& out, const wire::array_head& head, const std::byte* data) {
    out.emplace<ndarray>(
        ndarray::from_bytes(head.type, {head.dims, head.dims + head.ndim}, {data, head.nbytes}));
  }
  void oob_array(Value& out, const wire::array_head& head, std::size_t index) {
    out.emplace<ndarray>(
        ndarray::from_bytes(head.type, {head.dims, head.dims + head.ndim}, oob_[index]));
  }
  std::size_t buffer_count() const noexcept { return oob_.size(); }
  std::span<const std::byte> buffer(std::size_t index) const noexcept { return oob_[index]; }

  List& begin_list(Value& out, std::size_t n) {
    List& l = out.emplace<List>();
    l.reserve(n);
    return l;
  }
  Value& element(List& l, std::size_t) { return l.emplace_back(); }
  Map& begin_map(Value& out, std::size_t n) {
    Map& m = out.emplace<Map>();
    m.reserve(n);
    return m;
  }
  Value& entry(Map& m, std::string_view key, std::size_t at) {
    auto [it, inserted] = m.try_append(key);
    if (!inserted) wire::duplicate_key(key, at);
    return it->second;
  }
  Value& value_of(Value& e) noexcept { return e; }
  void commit(Map&, Value&, std::string_view, std::size_t) noexcept {}

  void begin_item(Item& item, std::uint64_t id) noexcept { item.id = id; }
  Value& payload(Item& item) noexcept { return item.payload; }
  // Meta and route land in scratch values first (a slot is a Value), then
  // move into the item; the parser skips both when they are empty.
  Value& meta(Item&) noexcept { return meta_; }
  Value& route(Item&) noexcept { return route_; }
  void end_item(Item& item) {
    if (meta_.is_map()) {
      item.meta = std::move(meta_.as_mut<Map>());
      meta_ = Value{};
    }
    if (route_.is_string()) {
      item.route = std::move(route_.as_mut<std::string>());
      route_ = Value{};
    }
  }
  void begin_batch(std::size_t n) { items_.reserve(n); }
  Item& batch_item(std::size_t) { return items_.emplace_back(); }
  std::vector<Item>& items() noexcept { return items_; }

 private:
  std::span<const std::span<const std::byte>> oob_;
  Value meta_;
  Value route_;
  std::vector<Item> items_;
};

// Runs `body(cursor, builder, parser)` over a message; errors become results.
template <class T, class F>
result<T> run_decoder(std::span<const std::byte> bytes, const decode_limits& limits,
                      value_builder& b, F&& body) {
  try {
    wire::cursor c = wire::open(bytes, limits);
    wire::parser<value_builder> p(c, b);
    T out = body(c, p);
    wire::close(c);
    p.check_buffers_used();
    return out;
  } catch (const slither::error& e) {
    return fail(e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return fail(errc::limit_exceeded, "out of memory while decoding");
  }
}

result<Value> decode_value(std::span<const std::byte> bytes,
                           std::span<const std::span<const std::byte>> oob,
                           const decode_limits& limits) {
  value_builder b(oob);
  return run_decoder<Value>(bytes, limits, b, [](wire::cursor&, auto& p) {
    Value v;
    p.message(v);
    return v;
  });
}

}  // namespace

void wire::writer::value(const Value& v, std::vector<ndarray>* out_of_band) {
  write(*this, v, 0, out_of_band);
}

std::size_t encoded_size(const Value& value) {
  return end_of(value, 1);
}

buffer encode(const Value& value) {
  buffer out;
  out.reserve(encoded_size(value));
  wire::writer w(out);
  write(w, value, 0, nullptr);
  w.finish();
  return out;
}

buffer encode(const Value& value, std::vector<ndarray>& out_of_band) {
  buffer out;
  wire::writer w(out);
  write(w, value, 0, &out_of_band);
  w.finish();
  return out;
}

void encode_to(const Value& value, buffer& out) {
  out.reserve(out.size() + encoded_size(value));
  wire::writer w(out);
  write(w, value, 0, nullptr);
}

result<Value> decode(std::span<const std::byte> bytes, const decode_limits& limits) {
  return decode_value(bytes, {}, limits);
}

result<Value> decode(std::span<const std::byte> bytes,
                     std::span<const std::span<const std::byte>> out_of_band,
                     const decode_limits& limits) {
  return decode_value(bytes, out_of_band, limits);
}

std::optional<std::pair<Value::kind, std::string_view>> peek_text(
    std::span<const std::byte> bytes) noexcept {
  try {
    wire::cursor c = wire::open(bytes, decode_limits{});
    const std::uint8_t t = c.u8("type tag");
    std::size_t n = 0;
    auto kind = Value::kind::string;
    if (t >= wire::fixstr_first && t < wire::fixlist_first) {
      n = t & 0x1f;
    } else if (t == wire::string_tag || t == wire::bytes_tag) {
      n = static_cast<std::size_t>(c.count("length", 1));
      if (t == wire::string_tag && n <= wire::fixstr_max) return std::nullopt;
      if (t == wire::bytes_tag) kind = Value::kind::bytes;
    } else {
      return std::nullopt;
    }
    if (c.remaining() != n) return std::nullopt;
    return std::pair{kind, std::string_view(c.take(n, "text"), n)};
  } catch (const slither::error&) {
    return std::nullopt;
  }
}

buffer encode(const Item& item) {
  buffer out;
  wire::writer w(out);
  write_item(w, item);
  w.finish();
  return out;
}

result<Item> decode_item(std::span<const std::byte> bytes, const decode_limits& limits) {
  value_builder b;
  return run_decoder<Item>(bytes, limits, b, [&](wire::cursor& c, auto& p) {
    c.charge(wire::item_cost);
    Item item;
    p.item(item);
    return item;
  });
}

buffer encode_batch(std::span<const Item> items) {
  buffer out;
  wire::writer w(out);
  w.uvar(items.size());
  for (const Item& item : items) write_item(w, item);
  w.finish();
  return out;
}

result<std::vector<Item>> decode_batch(std::span<const std::byte> bytes,
                                       const decode_limits& limits) {
  value_builder b;
  return run_decoder<std::vector<Item>>(bytes, limits, b, [&](wire::cursor&, auto& p) {
    p.batch();
    return std::move(b.items());
  });
}

}  // namespace slither
