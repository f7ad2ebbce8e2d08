// The codec's wire format: its tags, a writer that emits them, and the one
// bounded parser that every decoder of the format instantiates (the C++
// `Value` decoder, the Python extension's direct decoder, the splicing
// writer), so that they all accept exactly the same bytes.
//
// Format (version `codec_version`; multi-byte fixed fields little-endian):
//
//   message  := version:u8 value
//   item     := version:u8 item-body
//   batch    := version:u8 count:uvar item-body[count]
//   item-body:= id:uvar payload:value meta:map route:string
//
//   tag 0x00-0x7f  int 0..127                  tag 0xe0-0xff  int -32..-1
//   tag 0x80-0x9f  string of 0..31 bytes       tag 0xa0-0xaf  list of 0..15 values
//   tag 0xb0-0xbf  map of 0..15 entries        (entry := key:string value)
//   0xc0 null   0xc1 false   0xc2 true
//   0xc3 int      zigzag:uvar (outside -32..127)
//   0xc4 float64  f64
//   0xc5 string   len:uvar (>= 32) bytes[len]  0xc6 bytes  len:uvar bytes[len]
//   0xc7 list     count:uvar (>= 16) value[count]
//   0xc8 map      count:uvar (>= 16) entry[count]
//   0xc9 ndarray  dtype:u8 ndim:u8 dim:uvar[ndim] pad data[nbytes]
//   0xca ndarray, out of band: dtype:u8 ndim:u8 dim:uvar[ndim]; its data is
//                 the next buffer passed beside the message (exactly nbytes)
//   0xcb-0xdf     reserved
//
// `uvar` is an unsigned LEB128 varint in its shortest form. `pad` is the zero
// bytes that put the data of an array of at least 64 bytes at an offset that
// is a multiple of 64 from the start of the message, so that a message placed
// at an aligned address holds aligned arrays. Map keys are unique and keep
// their order. Every choice above is forced (shortest forms, fixed forms for
// small values, pad determined by the offset), so a value has exactly one
// encoding and `decode(b)` re-encodes to `b`; decoders refuse any other form.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "slither/core/codec.hpp"
#include "slither/core/error.hpp"
#include "slither/core/export.hpp"
#include "slither/core/item.hpp"
#include "slither/core/value.hpp"

namespace slither::wire {

static_assert(std::endian::native == std::endian::little,
              "the wire format is little-endian; big-endian hosts are not supported");

/// Tags that are not ranges.
enum tag : std::uint8_t {
  fixint_last = 0x7f,    ///< 0x00..0x7f: ints 0..127
  fixstr_first = 0x80,   ///< 0x80..0x9f: strings of up to 31 bytes
  fixlist_first = 0xa0,  ///< 0xa0..0xaf: lists of up to 15 values
  fixmap_first = 0xb0,   ///< 0xb0..0xbf: maps of up to 15 entries
  null_tag = 0xc0,
  false_tag = 0xc1,
  true_tag = 0xc2,
  int_tag = 0xc3,
  float_tag = 0xc4,
  string_tag = 0xc5,
  bytes_tag = 0xc6,
  list_tag = 0xc7,
  map_tag = 0xc8,
  array_tag = 0xc9,
  oob_array_tag = 0xca,
  negfixint_first = 0xe0,  ///< 0xe0..0xff: ints -32..-1
};

/// Smallest and largest ints with a one-byte form.
inline constexpr std::int64_t fixint_min = -32;
inline constexpr std::int64_t fixint_max = 127;
/// Longest string and largest list or map with a one-byte header.
inline constexpr std::size_t fixstr_max = 31;
inline constexpr std::size_t fixcount_max = 15;
/// Arrays of at least this many bytes have their data aligned to it.
inline constexpr std::size_t array_alignment = 64;
/// Longest uvar: 64 bits in 7-bit groups.
inline constexpr std::size_t max_varint_bytes = 10;

/// What `decode_limits::max_decoded_bytes` counts: every value costs
/// `value_cost`, every map key `key_cost`, every item `item_cost`, plus the
/// bytes of every string, bytes, key and array (shape included). Both the C++
/// and the Python decoders count the same way, so they refuse the same input.
inline constexpr std::size_t value_cost = sizeof(Value);
inline constexpr std::size_t key_cost = sizeof(std::string);
inline constexpr std::size_t item_cost = sizeof(Item);

/// Zigzag form of a signed int: small magnitudes give small uvars.
constexpr std::uint64_t zigzag(std::int64_t v) noexcept {
  return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}
/// Inverse of `zigzag`.
constexpr std::int64_t unzigzag(std::uint64_t u) noexcept {
  return static_cast<std::int64_t>((u >> 1) ^ (~(u & 1) + 1));
}
/// Zero bytes that put data at `offset` on an `array_alignment` boundary.
constexpr std::size_t pad_for(std::size_t offset) noexcept {
  return (array_alignment - offset % array_alignment) % array_alignment;
}

/// Throws `slither::error(code, message)`: how the parser fails.
[[noreturn, gnu::cold]] SLITHER_CORE_EXPORT void raise(errc code, std::string message);

// ---- writing ----------------------------------------------------------------

/// Appends one message to a `buffer`: the version byte on construction, then
/// whatever is written. Writes go straight into the buffer's storage; the
/// buffer is trimmed to what was written by `finish` (or the destructor).
/// The caller writes a well-formed message (a value; an item; a count and
/// that many items): the writer does not check the structure.
class SLITHER_CORE_EXPORT writer {
 public:
  /// Starts a message at the end of `out`.
  explicit writer(buffer& out) : out_(&out), base_(out.size()), used_(out.size()) {
    put_u8(codec_version);
  }
  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;
  ~writer() { finish(); }

  /// Trims the buffer to the bytes written. Safe twice.
  void finish() noexcept {
    // Shrinking never allocates, so this cannot throw.
    if (out_->size() != used_) out_->resize(used_);
  }

  /// Bytes written since the start of this message (its version byte included).
  std::size_t offset() const noexcept { return used_ - base_; }

  void null() { put_u8(null_tag); }
  void boolean(bool b) { put_u8(b ? true_tag : false_tag); }
  void integer(std::int64_t v) {
    if (v >= fixint_min && v <= fixint_max) {
      put_u8(static_cast<std::uint8_t>(v));
    } else {
      std::byte* p = room(1 + max_varint_bytes);
      *p = std::byte{int_tag};
      used_ -= max_varint_bytes - varint_at(p + 1, zigzag(v));
    }
  }
  void real(double d) {
    std::byte* p = room(9);
    *p = std::byte{float_tag};
    std::memcpy(p + 1, &d, 8);
  }
  void string(std::string_view s) {
    if (s.size() <= fixstr_max) {
      std::byte* p = room(1 + s.size());
      *p = static_cast<std::byte>(fixstr_first | s.size());
      if (!s.empty()) std::memcpy(p + 1, s.data(), s.size());
    } else {
      header(string_tag, s.size());
      data(s.data(), s.size());
    }
  }
  void bytes(std::string_view s) {
    bytes_header(s.size());
    data(s.data(), s.size());
  }
  /// What `bytes` writes before the `n` bytes themselves: for a value whose
  /// bytes are put after the message by other means (written in place in
  /// shared memory by another process); the message is complete once they are.
  void bytes_header(std::uint64_t n) { header(bytes_tag, n); }
  /// A list of `n` values follows.
  void list_header(std::size_t n) {
    if (n <= fixcount_max) {
      put_u8(static_cast<std::uint8_t>(fixlist_first | n));
    } else {
      header(list_tag, n);
    }
  }
  /// A map of `n` entries follows, each a `string` key then a value.
  void map_header(std::size_t n) {
    if (n <= fixcount_max) {
      put_u8(static_cast<std::uint8_t>(fixmap_first | n));
    } else {
      header(map_tag, n);
    }
  }
  /// An array with its data in the message. `bytes.size()` must be the shape's byte size.
  void array(dtype type, std::span<const std::uint64_t> shape, std::span<const std::byte> bytes) {
    array_header(array_tag, type, shape);
    if (bytes.size() >= array_alignment) {
      const std::size_t pad = pad_for(offset());
      if (pad != 0) std::memset(room(pad), 0, pad);
    }
    data(bytes.data(), bytes.size());
  }
  /// An array whose data travels as the next out-of-band buffer.
  void array_out_of_band(dtype type, std::span<const std::uint64_t> shape) {
    array_header(oob_array_tag, type, shape);
  }
  /// An unsigned varint: an item's id or a batch's count.
  void uvar(std::uint64_t v) {
    std::byte* p = room(max_varint_bytes);
    used_ -= max_varint_bytes - varint_at(p, v);
  }

  /// Encodes `v`; arrays go in band, or, if `out_of_band` is given, are
  /// appended to it (sharing their buffers) and written as out-of-band
  /// references. Throws `slither::error(limit_exceeded)` for a value nested
  /// deeper than `decode_limits{}.max_depth` (it could not be decoded).
  void value(const Value& v, std::vector<ndarray>* out_of_band = nullptr);
  /// Writes the value of a complete encoding (version byte included) as the
  /// next value: checked like `decode` (throws `slither::error` with its
  /// code) and re-padded for its new offset, so it reads back the same.
  void splice(std::span<const std::byte> encoding, const decode_limits& limits = {});

 private:
  void put_u8(std::uint8_t b) { *room(1) = std::byte{b}; }
  void header(std::uint8_t t, std::uint64_t n) {
    std::byte* p = room(1 + max_varint_bytes);
    *p = std::byte{t};
    used_ -= max_varint_bytes - varint_at(p + 1, n);
  }
  void array_header(std::uint8_t t, dtype type, std::span<const std::uint64_t> shape) {
    std::byte* p = room(3 + shape.size() * max_varint_bytes);
    p[0] = std::byte{t};
    p[1] = static_cast<std::byte>(type);
    p[2] = static_cast<std::byte>(shape.size());
    std::size_t n = 3;
    for (const auto d : shape) n += varint_at(p + n, d);
    used_ -= 3 + shape.size() * max_varint_bytes - n;
  }
  void data(const void* p, std::size_t n) {
    if (n == 0) return;
    if (n >= bulk_bytes && used_ + n > out_->size()) {
      // Large payloads are appended without first zero-filling room for them.
      // Only when they do not fit in the room there is: dropped each time, the
      // room was made again (a move and a zero-fill of the whole buffer) by
      // the next small write, so a list of large values encoded in O(n^2).
      out_->resize(used_);
      const auto* b = static_cast<const std::byte*>(p);
      out_->insert(out_->end(), b, b + n);
      used_ += n;
      return;
    }
    std::memcpy(room(n), p, n);
  }
  static std::size_t varint_at(std::byte* p, std::uint64_t v) noexcept {
    std::size_t n = 0;
    while (v >= 0x80) {
      p[n++] = static_cast<std::byte>(v | 0x80);
      v >>= 7;
    }
    p[n++] = static_cast<std::byte>(v);
    return n;
  }
  std::byte* room(std::size_t n) {
    if (used_ + n > out_->size()) [[unlikely]]
      grow(n);
    std::byte* p = out_->data() + used_;
    used_ += n;
    return p;
  }
  void grow(std::size_t n);

  static constexpr std::size_t bulk_bytes = 4096;
  buffer* out_;
  std::size_t base_;
  std::size_t used_;  // bytes of *out_ in use; out_->size() beyond it is scratch room
};

// ---- reading ----------------------------------------------------------------

/// A bounded read position over one message: every read is checked against
/// the bytes that remain; `charge` keeps the decoded size under the limit.
class SLITHER_CORE_EXPORT cursor {
 public:
  cursor(std::span<const std::byte> in, const decode_limits& limits) noexcept
      : begin_(reinterpret_cast<const std::uint8_t*>(in.data())),
        p_(begin_),
        end_(begin_ + in.size()),
        limits_(&limits),
        budget_(limits.max_decoded_bytes) {}

  const decode_limits& limits() const noexcept { return *limits_; }
  std::size_t offset() const noexcept { return static_cast<std::size_t>(p_ - begin_); }
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }

  /// The next byte, without consuming it.
  std::uint8_t peek(const char* what) const {
    if (p_ == end_) [[unlikely]]
      truncated(1, what);
    return *p_;
  }
  std::uint8_t u8(const char* what) {
    if (p_ == end_) [[unlikely]]
      truncated(1, what);
    return *p_++;
  }
  /// `n` bytes, in place.
  const char* take(std::size_t n, const char* what) {
    if (n > remaining()) [[unlikely]]
      truncated(n, what);
    const char* s = reinterpret_cast<const char*>(p_);
    p_ += n;
    return s;
  }
  double f64() {
    double d;
    std::memcpy(&d, take(8, "float64"), 8);
    return d;
  }
  /// A uvar in its shortest form.
  std::uint64_t uvar(const char* what) {
    if (remaining() >= max_varint_bytes && *p_ < 0x80) return *p_++;  // the common one-byte case
    const std::size_t at = offset();
    std::uint64_t v = 0;
    for (unsigned shift = 0;; shift += 7) {
      const std::uint8_t b = u8(what);
      if (shift == 63 && b > 1) bad_varint(at, what, "overflows 64 bits");
      v |= std::uint64_t{b & 0x7fu} << shift;
      if (b < 0x80) {
        if (b == 0 && shift != 0) bad_varint(at, what, "is not in its shortest form");
        return v;
      }
    }
  }
  /// A length or count of things taking at least `unit` bytes each, checked
  /// against the bytes that remain.
  std::uint64_t count(const char* what, std::size_t unit) {
    const std::size_t at = offset();
    const std::uint64_t n = uvar(what);
    if (n > remaining() / unit) [[unlikely]]
      too_long(at, what, n);
    return n;
  }
  /// Counts `bytes` against `max_decoded_bytes`.
  void charge(std::uint64_t bytes) {
    if (bytes > budget_) [[unlikely]]
      over_budget(bytes);
    budget_ -= bytes;
  }
  /// Fails unless `depth` levels of lists and maps are allowed.
  void enter(std::uint32_t depth) const {
    if (depth > limits_->max_depth) [[unlikely]]
      too_deep();
  }

  [[noreturn, gnu::cold]] void truncated(std::size_t n, const char* what) const;
  [[noreturn, gnu::cold]] void bad_varint(std::size_t at, const char* what, const char* why) const;
  [[noreturn, gnu::cold]] void too_long(std::size_t at, const char* what, std::uint64_t n) const;
  [[noreturn, gnu::cold]] void over_budget(std::uint64_t bytes) const;
  [[noreturn, gnu::cold]] void too_deep() const;
  /// A decode error at `at`: "<what> at offset <at>".
  [[noreturn, gnu::cold]] void malformed(std::size_t at, const std::string& what) const;

 private:
  const std::uint8_t* begin_;
  const std::uint8_t* p_;
  const std::uint8_t* end_;
  const decode_limits* limits_;
  std::uint64_t budget_;
};

/// An array's dtype and shape as read from the wire; `shape` points into it.
struct SLITHER_CORE_EXPORT array_head {
  dtype type = dtype::u8;
  std::uint8_t ndim = 0;
  std::uint64_t dims[ndarray::max_ndim] = {};
  std::size_t nbytes = 0;
  std::span<const std::uint64_t> shape() const noexcept { return {dims, ndim}; }
};

/// Reads an array's dtype and shape (after its tag), checking that its data
/// fits in `available` bytes.
SLITHER_CORE_EXPORT array_head read_array_head(cursor& c, std::size_t at, std::size_t available);

/// The one parser of the format. `Builder` turns what it reads into objects:
///
///   using slot = ...;   // where one value goes (`Value&`, `PyObject*&`)
///   void null(slot); void boolean(slot, bool); void integer(slot, std::int64_t);
///   void real(slot, double); void string(slot, std::string_view);
///   void bytes(slot, std::string_view);
///   void array(slot, const array_head&, const std::byte* data);
///   void oob_array(slot, const array_head&, std::size_t buffer_index);
///   std::size_t buffer_count() const;
///   std::span<const std::byte> buffer(std::size_t index);  // out-of-band data
///   L begin_list(slot, std::size_t n);   slot element(L&, std::size_t i);
///   M begin_map(slot, std::size_t n);    E entry(M&, std::string_view key, std::size_t at);
///   slot value_of(E&);                   void commit(M&, E&, std::string_view key, std::size_t
///   at);
///
/// `entry` or `commit` rejects a repeated key with `duplicate_key`. Items add
/// `begin_item(I&, id)`, `slot payload(I&)`, `slot meta(I&)`, `slot route(I&)`
/// and `end_item(I&)` (`meta` and `route` are not called when they are empty),
/// batches `begin_batch(n)` and `I& batch_item(i)`. Everything is checked
/// here, before the builder allocates.
template <class Builder>
class parser {
 public:
  using slot = typename Builder::slot;

  parser(cursor& c, Builder& b) noexcept : c_(c), b_(b) {}

  /// Reads one value into `out` at nesting `depth` (0 for a message's value).
  /// The one-byte forms are handled here; the rest out of line, which keeps
  /// this recursive function's frame small.
  void value(slot out, std::uint32_t depth) {
    const std::uint8_t t = c_.u8("type tag");
    if (t < fixstr_first) return b_.integer(out, t);
    if (t < fixlist_first) return text(out, t & 0x1fu);
    if (t < fixmap_first) return list(out, t & 0x0fu, depth);
    if (t < null_tag) return map(out, t & 0x0fu, depth);
    if (t >= negfixint_first) return b_.integer(out, static_cast<std::int8_t>(t));
    if (t == float_tag) return b_.real(out, c_.f64());
    long_form(out, t, depth);
  }

  /// Reads a whole message's value (after its version byte) into `out`.
  void message(slot out) {
    c_.charge(value_cost);
    value(out, 0);
  }

  /// Reads an item body: id, payload, meta (a map), route (a string).
  template <class Item>
  void item(Item& it) {
    const std::uint64_t id = c_.uvar("item id");
    b_.begin_item(it, id);
    value(b_.payload(it), 0);
    // Meta and route are almost always empty: those take one byte and no call.
    const std::uint8_t m = c_.peek("item meta");
    if (m == fixmap_first) {
      c_.u8("item meta");
    } else if ((m > fixmap_first && m < null_tag) || m == map_tag) {
      value(b_.meta(it), 0);
    } else {
      c_.malformed(c_.offset(), "item meta is not a map");
    }
    const std::uint8_t r = c_.peek("item route");
    if (r == fixstr_first) {
      c_.u8("item route");
    } else if ((r > fixstr_first && r < fixlist_first) || r == string_tag) {
      value(b_.route(it), 0);
    } else {
      c_.malformed(c_.offset(), "item route is not a string");
    }
    b_.end_item(it);
  }

  /// Reads a batch body: a count (checked against `max_batch_items`), then
  /// that many items, handed to `b.batch_item(i)` in turn.
  void batch() {
    const std::size_t at = c_.offset();
    // An item takes at least 4 bytes: id, payload, meta and route.
    const auto n = static_cast<std::size_t>(c_.count("batch size", 4));
    if (n > c_.limits().max_batch_items) {
      raise(errc::limit_exceeded, "batch of " + std::to_string(n) + " items at offset " +
                                      std::to_string(at) + " exceeds the limit of " +
                                      std::to_string(c_.limits().max_batch_items));
    }
    c_.charge(std::uint64_t{n} * item_cost);
    b_.begin_batch(n);
    for (std::size_t i = 0; i < n; ++i) item(b_.batch_item(i));
  }

  /// Fails unless every out-of-band buffer was used.
  void check_buffers_used() const {
    if (next_buffer_ != b_.buffer_count()) {
      raise(errc::decode_error, std::to_string(b_.buffer_count()) +
                                    " out-of-band buffers were given but the message uses " +
                                    std::to_string(next_buffer_));
    }
  }

 private:
  void text(slot out, std::size_t n) {
    c_.charge(n);
    b_.string(out, {c_.take(n, "string"), n});
  }

  // Everything but the one-byte forms and floats; `t` was read already.
  [[gnu::noinline]] void long_form(slot out, std::uint8_t t, std::uint32_t depth) {
    const std::size_t at = c_.offset() - 1;
    switch (t) {
      case null_tag:
        return b_.null(out);
      case false_tag:
        return b_.boolean(out, false);
      case true_tag:
        return b_.boolean(out, true);
      case int_tag: {
        const std::int64_t v = unzigzag(c_.uvar("int"));
        if (v >= fixint_min && v <= fixint_max) {
          c_.malformed(at, "int " + std::to_string(v) + " not in its one-byte form");
        }
        return b_.integer(out, v);
      }
      case string_tag: {
        const std::uint64_t n = c_.count("string length", 1);
        if (n <= fixstr_max) {
          c_.malformed(at, "string of " + std::to_string(n) + " bytes not in its short form");
        }
        return text(out, static_cast<std::size_t>(n));
      }
      case bytes_tag: {
        const auto n = static_cast<std::size_t>(c_.count("bytes length", 1));
        c_.charge(n);
        return b_.bytes(out, {c_.take(n, "bytes"), n});
      }
      case list_tag: {
        const std::uint64_t n = c_.count("list size", 1);
        if (n <= fixcount_max) {
          c_.malformed(at, "list of " + std::to_string(n) + " not in its short form");
        }
        return list(out, static_cast<std::size_t>(n), depth);
      }
      case map_tag: {
        const std::uint64_t n = c_.count("map size", 2);
        if (n <= fixcount_max) {
          c_.malformed(at, "map of " + std::to_string(n) + " not in its short form");
        }
        return map(out, static_cast<std::size_t>(n), depth);
      }
      case array_tag:
        return array(out, at);
      case oob_array_tag:
        return oob_array(out, at);
      default:
        c_.malformed(at, "unknown type tag " + std::to_string(t));
    }
  }

  [[gnu::noinline]] void array(slot out, std::size_t at) {
    const array_head head = read_array_head(c_, at, c_.remaining());
    if (head.nbytes >= array_alignment) {
      const std::size_t pad = pad_for(c_.offset());
      const char* zeros = c_.take(pad, "ndarray padding");
      for (std::size_t i = 0; i < pad; ++i) {
        if (zeros[i] != 0) c_.malformed(at, "ndarray padding is not zero");
      }
    }
    c_.charge(head.nbytes + head.ndim * sizeof(std::uint64_t));
    const char* data = c_.take(head.nbytes, "ndarray data");
    const auto* bytes = reinterpret_cast<const std::byte*>(data);
    check_booleans(head, {bytes, head.nbytes}, at);
    b_.array(out, head, bytes);
  }

  [[gnu::noinline]] void oob_array(slot out, std::size_t at) {
    const array_head head = read_array_head(c_, at, static_cast<std::size_t>(-1));
    const std::size_t index = next_buffer_++;
    if (index >= b_.buffer_count()) {
      c_.malformed(at, "out-of-band ndarray #" + std::to_string(index) + " but " +
                           std::to_string(b_.buffer_count()) + " buffers were given");
    }
    const std::span<const std::byte> data = b_.buffer(index);
    const std::size_t size = data.size();
    if (size != head.nbytes) {
      c_.malformed(at, "out-of-band ndarray of " + std::to_string(head.nbytes) +
                           " bytes given buffer #" + std::to_string(index) + " of " +
                           std::to_string(size) + " bytes");
    }
    check_booleans(head, data, at);
    c_.charge(head.nbytes + head.ndim * sizeof(std::uint64_t));
    b_.oob_array(out, head, index);
  }

  // A bool element is a byte of 0 or 1: any other byte would make a C++ `bool`
  // read from it undefined, and has no second encoding to stand for.
  void check_booleans(const array_head& head, std::span<const std::byte> data, std::size_t at) {
    if (head.type != dtype::boolean) return;
    for (std::size_t i = 0; i < data.size(); ++i) {
      if (std::to_integer<unsigned>(data[i]) > 1) {
        c_.malformed(at, "bool ndarray element " + std::to_string(i) + " is " +
                             std::to_string(std::to_integer<unsigned>(data[i])) + ", not 0 or 1");
      }
    }
  }

  std::string_view key(std::size_t& at) {
    const std::uint8_t t = c_.u8("map key");
    if (t >= fixstr_first && t < fixlist_first) [[likely]] {
      const std::size_t n = t & 0x1fu;
      c_.charge(n);
      return {c_.take(n, "map key"), n};
    }
    at = c_.offset() - 1;
    return long_key(t, at);
  }

  [[gnu::noinline]] std::string_view long_key(std::uint8_t t, std::size_t at) {
    if (t != string_tag)
      c_.malformed(at, "map key with tag " + std::to_string(t) + " is not a string");
    const auto n = static_cast<std::size_t>(c_.count("map key length", 1));
    if (n <= fixstr_max) {
      c_.malformed(at, "map key of " + std::to_string(n) + " bytes not in its short form");
    }
    c_.charge(n);
    return {c_.take(n, "map key"), n};
  }

  void list(slot out, std::size_t n, std::uint32_t depth) {
    c_.enter(depth + 1);
    // A list of n values takes at least n bytes (checked by `count` for long lists).
    if (n > c_.remaining()) c_.truncated(n, "list");
    c_.charge(std::uint64_t{n} * value_cost);
    auto&& l = b_.begin_list(out, n);
    for (std::size_t i = 0; i < n; ++i) value(b_.element(l, i), depth + 1);
  }

  void map(slot out, std::size_t n, std::uint32_t depth) {
    c_.enter(depth + 1);
    if (n > c_.remaining() / 2) c_.truncated(2 * n, "map");
    c_.charge(std::uint64_t{n} * (value_cost + key_cost));
    auto&& m = b_.begin_map(out, n);
    for (std::size_t i = 0; i < n; ++i) {
      std::size_t at = c_.offset();
      const std::string_view k = key(at);
      auto&& e = b_.entry(m, k, at);
      value(b_.value_of(e), depth + 1);
      b_.commit(m, e, k, at);
    }
  }

  cursor& c_;
  Builder& b_;
  std::size_t next_buffer_ = 0;
};

/// Fails for a map key seen twice.
[[noreturn, gnu::cold]] SLITHER_CORE_EXPORT void duplicate_key(std::string_view key,
                                                               std::size_t at);

/// Checks the message size limit and the version byte; returns the cursor
/// placed after it.
SLITHER_CORE_EXPORT cursor open(std::span<const std::byte> bytes, const decode_limits& limits);
/// Fails if bytes remain after the message.
SLITHER_CORE_EXPORT void close(const cursor& c);

}  // namespace slither::wire
