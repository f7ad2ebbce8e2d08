// Wire format (all integers little-endian, as cereal's binary archive writes
// them on the machines we support):
//
//   encoding := version:u8 value          (codec_version)
//   value    := tag:u8 body               (tag = Value::kind)
//   null     := -
//   bool     := u8 (0 or 1)
//   int64    := i64          float64 := f64
//   string   := len:u64 bytes[len]        bytes := len:u64 bytes[len]
//   list     := count:u64 value[count]
//   map      := count:u64 (keylen:u64 key value)[count], keys strictly ascending
//   ndarray  := dtype:u8 ndim:u8 dim:u64[ndim] data[product(dim) * dtype_size]
//   item     := version:u8 id:u64 value(payload) map-body(meta) string-body(route)
//   batch    := version:u8 count:u64 (id value map-body string-body)[count]
//
// Decoding checks every length against the bytes that remain before it
// allocates, so a hostile length can never cause a large allocation.
#include "slither/core/codec.hpp"

#include <cereal/archives/binary.hpp>
#include <cstring>
#include <istream>
#include <ostream>
#include <streambuf>

namespace slither {
namespace {

static_assert(sizeof(double) == 8 && sizeof(std::uint64_t) == 8);

// ---- streams over our buffers -----------------------------------------------

class append_buf final : public std::streambuf {
 public:
  void reset(buffer* out) noexcept { out_ = out; }

 protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    const auto* b = reinterpret_cast<const std::byte*>(s);
    out_->insert(out_->end(), b, b + n);
    return n;
  }
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      out_->push_back(static_cast<std::byte>(c));
    }
    return traits_type::not_eof(c);
  }

 private:
  buffer* out_ = nullptr;
};

class span_buf final : public std::streambuf {
 public:
  void reset(std::span<const std::byte> in) noexcept {
    auto* b = const_cast<char*>(reinterpret_cast<const char*>(in.data()));
    setg(b, b, b + in.size());
  }
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(egptr() - gptr()); }
  std::size_t consumed() const noexcept { return static_cast<std::size_t>(gptr() - eback()); }
  const std::byte* current() const noexcept { return reinterpret_cast<const std::byte*>(gptr()); }

 protected:
  // cereal reads every field through sgetn; a straight copy beats the
  // generic streambuf loop.
  std::streamsize xsgetn(char* s, std::streamsize n) override {
    const auto k = std::min<std::streamsize>(n, egptr() - gptr());
    std::memcpy(s, gptr(), static_cast<std::size_t>(k));
    skip(static_cast<std::size_t>(k));
    return k;
  }

 public:
  void skip(std::size_t n) noexcept {
    while (n > 0) {
      const std::size_t step = std::min<std::size_t>(n, 1u << 30);
      gbump(static_cast<int>(step));
      n -= step;
    }
  }
};

// ---- encoding ------------------------------------------------------------------

using out_archive = cereal::BinaryOutputArchive;

void write_value(out_archive& ar, const Value& v, std::uint32_t depth);

void write_string(out_archive& ar, std::string_view s) {
  ar(static_cast<std::uint64_t>(s.size()));
  ar(cereal::binary_data(s.data(), s.size()));
}

void write_map_body(out_archive& ar, const Map& m, std::uint32_t depth) {
  ar(static_cast<std::uint64_t>(m.size()));
  for (const auto& [k, e] : m) {
    write_string(ar, k);
    write_value(ar, e, depth + 1);
  }
}

void check_depth(std::uint32_t depth) {
  const auto limit = decode_limits{}.max_depth;
  if (depth > limit) {
    throw error(errc::limit_exceeded,
                "value nests deeper than " + std::to_string(limit) + " levels; cannot encode it");
  }
}

void write_value(out_archive& ar, const Value& v, std::uint32_t depth) {
  ar(static_cast<std::uint8_t>(v.type()));
  switch (v.type()) {
    case Value::kind::null:
      break;
    case Value::kind::boolean:
      ar(static_cast<std::uint8_t>(v.as<bool>() ? 1 : 0));
      break;
    case Value::kind::int64:
      ar(v.as<std::int64_t>());
      break;
    case Value::kind::float64:
      ar(v.as<double>());
      break;
    case Value::kind::string:
      write_string(ar, v.as<std::string>());
      break;
    case Value::kind::bytes:
      write_string(ar, v.as<Bytes>().data);
      break;
    case Value::kind::list: {
      check_depth(depth + 1);
      const auto& l = v.as<List>();
      ar(static_cast<std::uint64_t>(l.size()));
      for (const auto& e : l) write_value(ar, e, depth + 1);
      break;
    }
    case Value::kind::map:
      check_depth(depth + 1);
      write_map_body(ar, v.as<Map>(), depth);
      break;
    case Value::kind::ndarray: {
      const auto& a = v.as<ndarray>();
      ar(static_cast<std::uint8_t>(a.type()), static_cast<std::uint8_t>(a.ndim()));
      for (auto d : a.shape()) ar(d);
      ar(cereal::binary_data(a.data(), a.nbytes()));
      break;
    }
  }
}

std::size_t map_body_size(const Map& m);

std::size_t value_size(const Value& v) {
  switch (v.type()) {
    case Value::kind::null:
      return 1;
    case Value::kind::boolean:
      return 2;
    case Value::kind::int64:
    case Value::kind::float64:
      return 9;
    case Value::kind::string:
    case Value::kind::bytes:
      return 9 + v.size();
    case Value::kind::list: {
      std::size_t n = 9;
      for (const auto& e : v.as<List>()) n += value_size(e);
      return n;
    }
    case Value::kind::map:
      return 1 + map_body_size(v.as<Map>());
    case Value::kind::ndarray: {
      const auto& a = v.as<ndarray>();
      return 3 + 8 * a.ndim() + a.nbytes();
    }
  }
  return 0;
}

std::size_t map_body_size(const Map& m) {
  std::size_t n = 8;
  for (const auto& [k, e] : m) n += 8 + k.size() + value_size(e);
  return n;
}

void write_item_body(out_archive& ar, const Item& item) {
  ar(item.id);
  write_value(ar, item.payload, 0);
  write_map_body(ar, item.meta, 0);
  write_string(ar, item.route);
}

std::size_t item_body_size(const Item& item) {
  return 8 + value_size(item.payload) + map_body_size(item.meta) + 8 + item.route.size();
}

// ---- decoding ------------------------------------------------------------------

struct decode_failure {
  error_info info;
};

struct decode_ctx {
  span_buf* in;
  const decode_limits* limits;
};

using in_archive = cereal::BinaryInputArchive;

[[noreturn]] void bad(errc code, std::string msg) {
  throw decode_failure{{code, std::move(msg)}};
}

[[noreturn, gnu::cold, gnu::noinline]] void truncated(const decode_ctx& ctx, std::size_t n,
                                                      std::string_view what) {
  bad(errc::decode_error, "truncated input: " + std::string(what) + " needs " + std::to_string(n) +
                              " bytes at offset " + std::to_string(ctx.in->consumed()) + ", only " +
                              std::to_string(ctx.in->remaining()) + " remain");
}

inline void need(const decode_ctx& ctx, std::size_t n, std::string_view what) {
  if (ctx.in->remaining() < n) [[unlikely]]
    truncated(ctx, n, what);
}

// Fixed-size fields are copied straight from the checked input: going through
// the archive's stream for 1-8 bytes cost a third of a small value's decode.
// Strings and array data still go through the archive (`binary_data`).
template <class T>
T read_pod(in_archive&, const decode_ctx& ctx, std::string_view what) {
  need(ctx, sizeof(T), what);
  T v;
  std::memcpy(&v, ctx.in->current(), sizeof(T));
  ctx.in->skip(sizeof(T));
  return v;
}

// Reads a length and checks that `length * min_unit` bytes remain.
std::uint64_t read_length(in_archive& ar, const decode_ctx& ctx, std::string_view what,
                          std::size_t min_unit) {
  const auto at = ctx.in->consumed();
  const auto n = read_pod<std::uint64_t>(ar, ctx, what);
  const auto remaining = ctx.in->remaining();
  if (n > remaining / min_unit) {
    bad(errc::decode_error, std::string(what) + " " + std::to_string(n) + " at offset " +
                                std::to_string(at) + " exceeds the " + std::to_string(remaining) +
                                " bytes that remain");
  }
  return n;
}

std::string read_string_body(in_archive& ar, const decode_ctx& ctx, std::string_view what) {
  const auto n = read_length(ar, ctx, what, 1);
  std::string s(static_cast<std::size_t>(n), '\0');
  ar(cereal::binary_data(s.data(), s.size()));
  return s;
}

Value read_value(in_archive& ar, decode_ctx& ctx, std::uint32_t depth);

void enter(const decode_ctx& ctx, std::uint32_t depth) {
  if (depth > ctx.limits->max_depth) {
    bad(errc::limit_exceeded, "input nests deeper than the limit of " +
                                  std::to_string(ctx.limits->max_depth) + " levels at offset " +
                                  std::to_string(ctx.in->consumed()));
  }
}

Map read_map_body(in_archive& ar, decode_ctx& ctx, std::uint32_t depth) {
  // Each entry takes at least a key length (8) and a tag (1).
  const auto n = read_length(ar, ctx, "map size", 9);
  Map m;
  for (std::uint64_t i = 0; i < n; ++i) {
    auto key = read_string_body(ar, ctx, "map key length");
    auto value = read_value(ar, ctx, depth + 1);
    if (!m.empty() && !(m.rbegin()->first < key)) {
      bad(errc::decode_error, "map key '" + key.substr(0, 64) + "' out of order or repeated");
    }
    m.emplace_hint(m.end(), std::move(key), std::move(value));
  }
  return m;
}

Value read_ndarray(in_archive& ar, decode_ctx& ctx) {
  const auto at = ctx.in->consumed();
  const auto raw_type = read_pod<std::uint8_t>(ar, ctx, "ndarray dtype");
  if (!is_valid_dtype(raw_type)) {
    bad(errc::decode_error,
        "unknown ndarray dtype " + std::to_string(raw_type) + " at offset " + std::to_string(at));
  }
  const auto ndim = read_pod<std::uint8_t>(ar, ctx, "ndarray ndim");
  if (ndim > ndarray::max_ndim) {
    bad(errc::decode_error, "ndarray has " + std::to_string(ndim) + " dimensions; at most " +
                                std::to_string(ndarray::max_ndim) + " are allowed");
  }
  need(ctx, std::size_t{8} * ndim, "ndarray shape");
  std::vector<std::uint64_t> shape(ndim);
  for (auto& d : shape) ar(d);
  const auto type = static_cast<dtype>(raw_type);
  const auto nbytes = ndarray::nbytes_for(type, shape);
  if (!nbytes || *nbytes > ctx.in->remaining()) {
    bad(errc::decode_error,
        "ndarray data at offset " + std::to_string(at) + " exceeds the bytes that remain");
  }
  // The bulk copy goes straight from the input into the aligned array.
  auto a = ndarray::from_bytes(type, std::move(shape), {ctx.in->current(), *nbytes});
  ctx.in->skip(*nbytes);
  return Value(std::move(a));
}

Value read_value(in_archive& ar, decode_ctx& ctx, std::uint32_t depth) {
  const auto at = ctx.in->consumed();
  const auto tag = read_pod<std::uint8_t>(ar, ctx, "type tag");
  switch (static_cast<Value::kind>(tag)) {
    case Value::kind::null:
      return Value{};
    case Value::kind::boolean: {
      const auto b = read_pod<std::uint8_t>(ar, ctx, "bool");
      if (b > 1) bad(errc::decode_error, "bool byte " + std::to_string(b) + " is not 0 or 1");
      return Value(b == 1);
    }
    case Value::kind::int64:
      return Value(read_pod<std::int64_t>(ar, ctx, "int64"));
    case Value::kind::float64:
      return Value(read_pod<double>(ar, ctx, "float64"));
    case Value::kind::string:
      return Value(read_string_body(ar, ctx, "string length"));
    case Value::kind::bytes:
      return Value(Bytes{read_string_body(ar, ctx, "bytes length")});
    case Value::kind::list: {
      enter(ctx, depth + 1);
      const auto n = read_length(ar, ctx, "list size", 1);
      List l;
      l.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t i = 0; i < n; ++i) l.push_back(read_value(ar, ctx, depth + 1));
      return Value(std::move(l));
    }
    case Value::kind::map:
      enter(ctx, depth + 1);
      return Value(read_map_body(ar, ctx, depth));
    case Value::kind::ndarray:
      return read_ndarray(ar, ctx);
  }
  bad(errc::decode_error,
      "unknown type tag " + std::to_string(tag) + " at offset " + std::to_string(at));
}

Item read_item_body(in_archive& ar, decode_ctx& ctx) {
  Item item;
  item.id = read_pod<std::uint64_t>(ar, ctx, "item id");
  item.payload = read_value(ar, ctx, 0);
  enter(ctx, 1);
  item.meta = read_map_body(ar, ctx, 0);
  item.route = read_string_body(ar, ctx, "route length");
  return item;
}

// Building a std::istream and a cereal archive costs more than decoding a
// small value, so each thread keeps one of each and points it at new input.
// `busy` guards against reentry (a decode started from inside a decode).
struct decoder_state {
  span_buf sb;
  std::istream is{&sb};
  in_archive ar{is};
  bool busy = false;
};

struct encoder_state {
  append_buf sb;
  std::ostream os{&sb};
  out_archive ar{os};
  bool busy = false;
};

// Runs `fn(state)` on this thread's cached state, or on a fresh one if it is in use.
template <class State, class F>
decltype(auto) with_state(F&& fn) {
  thread_local State cached;
  if (cached.busy) {
    State local;
    return fn(local);
  }
  cached.busy = true;
  struct release {
    State& s;
    ~release() { s.busy = false; }
  } guard{cached};
  return fn(cached);
}

// Runs `body` over `bytes` with the version byte and trailing bytes checked.
template <class F>
auto run_decoder(std::span<const std::byte> bytes, const decode_limits& limits, F&& body)
    -> result<decltype(body(std::declval<in_archive&>(), std::declval<decode_ctx&>()))> {
  if (bytes.size() > limits.max_message_bytes) {
    return fail(errc::limit_exceeded, "message of " + std::to_string(bytes.size()) +
                                          " bytes exceeds the limit of " +
                                          std::to_string(limits.max_message_bytes));
  }
  return with_state<decoder_state>(
      [&](decoder_state& st)
          -> result<decltype(body(std::declval<in_archive&>(), std::declval<decode_ctx&>()))> {
        st.sb.reset(bytes);
        decode_ctx ctx{&st.sb, &limits};
        try {
          const auto version = read_pod<std::uint8_t>(st.ar, ctx, "codec version");
          if (version != codec_version) {
            bad(errc::decode_error, "codec version " + std::to_string(version) + ", expected " +
                                        std::to_string(codec_version));
          }
          auto out = body(st.ar, ctx);
          if (st.sb.remaining() != 0) {
            bad(errc::decode_error, std::to_string(st.sb.remaining()) +
                                        " trailing bytes after offset " +
                                        std::to_string(st.sb.consumed()));
          }
          return out;
        } catch (decode_failure& f) {
          return std::move(f.info);
        } catch (const slither::error& e) {
          return fail(e.code(), e.what());
        } catch (const cereal::Exception& e) {
          return fail(errc::decode_error, e.what());
        } catch (const std::bad_alloc&) {
          return fail(errc::limit_exceeded, "out of memory while decoding");
        }
      });
}

// Appends `codec_version` and whatever `body` writes to `out`.
template <class F>
void run_encoder(buffer& out, F&& body) {
  with_state<encoder_state>([&](encoder_state& st) {
    st.sb.reset(&out);
    struct detach {
      append_buf& sb;
      ~detach() { sb.reset(nullptr); }
    } guard{st.sb};
    st.ar(codec_version);
    body(st.ar);
  });
}

template <class F>
buffer encode_new(std::size_t size, F&& body) {
  buffer out;
  out.reserve(size);
  run_encoder(out, std::forward<F>(body));
  return out;
}

}  // namespace

std::size_t encoded_size(const Value& value) {
  return 1 + value_size(value);
}

buffer encode(const Value& value) {
  return encode_new(encoded_size(value), [&](out_archive& ar) { write_value(ar, value, 0); });
}

void encode_to(const Value& value, buffer& out) {
  out.reserve(out.size() + encoded_size(value));
  run_encoder(out, [&](out_archive& ar) { write_value(ar, value, 0); });
}

result<Value> decode(std::span<const std::byte> bytes, const decode_limits& limits) {
  return run_decoder(bytes, limits,
                     [](in_archive& ar, decode_ctx& ctx) { return read_value(ar, ctx, 0); });
}

std::optional<std::pair<Value::kind, std::string_view>> peek_text(
    std::span<const std::byte> bytes) noexcept {
  constexpr std::size_t header = 1 + 1 + 8;  // version, tag, length
  if (bytes.size() < header || bytes[0] != std::byte{codec_version}) return std::nullopt;
  const auto kind = static_cast<Value::kind>(bytes[1]);
  if (kind != Value::kind::string && kind != Value::kind::bytes) return std::nullopt;
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data() + 2, 8);
  if (n != bytes.size() - header) return std::nullopt;
  return std::pair{kind, std::string_view(reinterpret_cast<const char*>(bytes.data()) + header,
                                          static_cast<std::size_t>(n))};
}

buffer encode(const Item& item) {
  return encode_new(1 + item_body_size(item), [&](out_archive& ar) { write_item_body(ar, item); });
}

result<Item> decode_item(std::span<const std::byte> bytes, const decode_limits& limits) {
  return run_decoder(bytes, limits,
                     [](in_archive& ar, decode_ctx& ctx) { return read_item_body(ar, ctx); });
}

buffer encode_batch(std::span<const Item> items) {
  std::size_t size = 9;
  for (const auto& item : items) size += item_body_size(item);
  return encode_new(size, [&](out_archive& ar) {
    ar(static_cast<std::uint64_t>(items.size()));
    for (const auto& item : items) write_item_body(ar, item);
  });
}

result<std::vector<Item>> decode_batch(std::span<const std::byte> bytes,
                                       const decode_limits& limits) {
  return run_decoder(bytes, limits, [&](in_archive& ar, decode_ctx& ctx) {
    // An item takes at least 8 (id) + 1 (tag) + 8 (meta size) + 8 (route length) bytes.
    const auto n = read_length(ar, ctx, "batch size", 25);
    if (n > limits.max_batch_items) {
      bad(errc::limit_exceeded, "batch of " + std::to_string(n) + " items exceeds the limit of " +
                                    std::to_string(limits.max_batch_items));
    }
    std::vector<Item> items;
    items.reserve(static_cast<std::size_t>(n));
    for (std::uint64_t i = 0; i < n; ++i) items.push_back(read_item_body(ar, ctx));
    return items;
  });
}

}  // namespace slither
