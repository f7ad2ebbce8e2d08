// The out-of-line parts of the wire format: error reporting, array heads,
// message framing, buffer growth, and splicing one encoding into another.
#include "slither/core/wire.hpp"

#include <algorithm>
#include <unordered_set>
#include <vector>

namespace slither::wire {

void raise(errc code, std::string message) {
  throw error(code, message);
}

namespace {

// A key quoted for a message: printable ASCII as is, other bytes as \xNN (a
// message must be valid text whatever the input), cut at 64 bytes.
std::string printable(std::string_view key) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < key.size() && i < 64; ++i) {
    const auto c = static_cast<unsigned char>(key[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (key.size() > 64) out += "...";
  return out;
}

}  // namespace

void duplicate_key(std::string_view key, std::size_t at) {
  raise(errc::decode_error, "map key '" + printable(key) + "' at offset " + std::to_string(at) +
                                " repeats an earlier key");
}

// ---- cursor --------------------------------------------------------------------

void cursor::truncated(std::size_t n, const char* what) const {
  raise(errc::decode_error, "truncated input: " + std::string(what) + " needs " +
                                std::to_string(n) + " bytes at offset " + std::to_string(offset()) +
                                ", only " + std::to_string(remaining()) + " remain");
}

void cursor::bad_varint(std::size_t at, const char* what, const char* why) const {
  raise(errc::decode_error,
        std::string(what) + " at offset " + std::to_string(at) + " " + std::string(why));
}

void cursor::too_long(std::size_t at, const char* what, std::uint64_t n) const {
  raise(errc::decode_error, std::string(what) + " " + std::to_string(n) + " at offset " +
                                std::to_string(at) + " exceeds the " + std::to_string(remaining()) +
                                " bytes that remain");
}

void cursor::over_budget(std::uint64_t bytes) const {
  raise(errc::limit_exceeded, "decoding the message at offset " + std::to_string(offset()) +
                                  " would take more than max_decoded_bytes (" +
                                  std::to_string(limits_->max_decoded_bytes) + ") in memory (" +
                                  std::to_string(bytes) + " more bytes wanted)");
}

void cursor::too_deep() const {
  raise(errc::limit_exceeded, "input nests deeper than the limit of " +
                                  std::to_string(limits_->max_depth) + " levels at offset " +
                                  std::to_string(offset()));
}

void cursor::malformed(std::size_t at, const std::string& what) const {
  raise(errc::decode_error, what + " at offset " + std::to_string(at));
}

array_head read_array_head(cursor& c, std::size_t at, std::size_t available) {
  array_head head;
  const std::uint8_t raw_type = c.u8("ndarray dtype");
  if (!is_valid_dtype(raw_type)) {
    c.malformed(at, "ndarray of unknown dtype " + std::to_string(raw_type));
  }
  head.type = static_cast<dtype>(raw_type);
  head.ndim = c.u8("ndarray ndim");
  if (head.ndim > ndarray::max_ndim) {
    c.malformed(at, "ndarray of " + std::to_string(head.ndim) + " dimensions (at most " +
                        std::to_string(ndarray::max_ndim) + ")");
  }
  for (std::uint8_t i = 0; i < head.ndim; ++i) head.dims[i] = c.uvar("ndarray dimension");
  const auto nbytes = ndarray::nbytes_for(head.type, head.shape());
  if (!nbytes) c.malformed(at, "ndarray shape overflows the address space");
  if (*nbytes > available) {
    c.malformed(at, "ndarray of " + std::to_string(*nbytes) + " bytes exceeds the " +
                        std::to_string(available) + " bytes that remain");
  }
  head.nbytes = *nbytes;
  return head;
}

cursor open(std::span<const std::byte> bytes, const decode_limits& limits) {
  if (bytes.size() > limits.max_message_bytes) {
    raise(errc::limit_exceeded, "message of " + std::to_string(bytes.size()) +
                                    " bytes exceeds the limit of " +
                                    std::to_string(limits.max_message_bytes));
  }
  cursor c(bytes, limits);
  const std::uint8_t version = c.u8("codec version");
  if (version != codec_version) {
    raise(errc::decode_error, "codec version " + std::to_string(version) + ", expected " +
                                  std::to_string(codec_version));
  }
  return c;
}

void close(const cursor& c) {
  if (c.remaining() != 0) {
    raise(errc::decode_error, std::to_string(c.remaining()) + " trailing bytes after offset " +
                                  std::to_string(c.offset()));
  }
}

// ---- writer ---------------------------------------------------------------------

void writer::grow(std::size_t n) {
  // The room beyond used_ is zero-filled once, then reused by later writes.
  const std::size_t want = std::max({used_ + n, 2 * out_->size(), used_ + 256});
  out_->resize(want);
}

namespace {

// Re-emits what the parser reads, so a spliced encoding is checked like a
// decode and its arrays are re-padded for their new offsets.
class splice_builder {
 public:
  struct none {};
  using slot = none;
  // Keys seen in one map, to refuse repeats as a decoder does.
  struct seen_keys {
    bool hashed = false;
    std::vector<std::string_view> few;
    std::unordered_set<std::string_view> many;
  };

  explicit splice_builder(writer& w) noexcept : w_(w) {}

  void null(none) { w_.null(); }
  void boolean(none, bool b) { w_.boolean(b); }
  void integer(none, std::int64_t v) { w_.integer(v); }
  void real(none, double d) { w_.real(d); }
  void string(none, std::string_view s) { w_.string(s); }
  void bytes(none, std::string_view s) { w_.bytes(s); }
  void array(none, const array_head& head, const std::byte* data) {
    w_.array(head.type, head.shape(), {data, head.nbytes});
  }
  void oob_array(none, const array_head&, std::size_t) {}
  std::size_t buffer_count() const noexcept { return 0; }
  std::span<const std::byte> buffer(std::size_t) const noexcept { return {}; }

  none begin_list(none, std::size_t n) {
    w_.list_header(n);
    return {};
  }
  none element(none, std::size_t) { return {}; }
  seen_keys begin_map(none, std::size_t n) {
    w_.map_header(n);
    seen_keys seen;
    seen.hashed = n > Map::linear_limit;
    if (seen.hashed) seen.many.reserve(n);
    return seen;
  }
  none entry(seen_keys& seen, std::string_view key, std::size_t at) {
    if (seen.hashed) {
      if (!seen.many.insert(key).second) duplicate_key(key, at);
    } else {
      if (std::find(seen.few.begin(), seen.few.end(), key) != seen.few.end()) {
        duplicate_key(key, at);
      }
      seen.few.push_back(key);
    }
    w_.string(key);
    return {};
  }
  none value_of(none) { return {}; }
  void commit(seen_keys&, none, std::string_view, std::size_t) {}

 private:
  writer& w_;
};

}  // namespace

void writer::splice(std::span<const std::byte> encoding, const decode_limits& limits) {
  cursor c = open(encoding, limits);
  splice_builder b(*this);
  parser<splice_builder> p(c, b);
  p.message({});
  close(c);
  p.check_buffers_used();
}

}  // namespace slither::wire
