#include "slither/core/value.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>

namespace slither {

namespace {

// One row per dtype: its element size, numpy name and the other names parse_dtype accepts.
struct dtype_info {
  dtype type;
  std::size_t size;
  std::string_view name;
  std::string_view aliases[3];
};

constexpr dtype_info dtype_table[] = {
    {dtype::u8, 1, "uint8", {"u1", "u8", "B"}},
    {dtype::i32, 4, "int32", {"i4", "i32", "i"}},
    {dtype::i64, 8, "int64", {"i8", "i64", "q"}},
    {dtype::f32, 4, "float32", {"f4", "f32", "f"}},
    {dtype::f64, 8, "float64", {"f8", "f64", "d"}},
    {dtype::boolean, 1, "bool", {"b1", "?", "boolean"}},
    {dtype::i8, 1, "int8", {"i1", "b", {}}},
    {dtype::i16, 2, "int16", {"i2", "i16", "h"}},
    {dtype::u16, 2, "uint16", {"u2", "u16", "H"}},
    {dtype::u32, 4, "uint32", {"u4", "u32", "I"}},
    {dtype::u64, 8, "uint64", {"u64", "Q", {}}},
    {dtype::f16, 2, "float16", {"f2", "f16", "e"}},
};

const dtype_info* info_of(dtype t) noexcept {
  for (const auto& row : dtype_table) {
    if (row.type == t) return &row;
  }
  return nullptr;
}

}  // namespace

std::size_t dtype_size(dtype t) noexcept {
  const dtype_info* row = info_of(t);
  return row ? row->size : 1;
}

std::string_view to_string(dtype t) noexcept {
  const dtype_info* row = info_of(t);
  return row ? row->name : "unknown";
}

std::optional<dtype> parse_dtype(std::string_view name) noexcept {
  if (!name.empty() && (name.front() == '<' || name.front() == '=' || name.front() == '|')) {
    name.remove_prefix(1);
    // A numpy type string: "u8" is its uint64 (the enumerator dtype::u8 is uint8).
    if (name == "u8") return dtype::u64;
  }
  if (name.empty()) return std::nullopt;
  for (const auto& row : dtype_table) {
    if (name == row.name) return row.type;
    for (std::string_view alias : row.aliases) {
      if (!alias.empty() && name == alias) return row.type;
    }
  }
  return std::nullopt;
}

bool is_valid_dtype(std::uint8_t raw) noexcept {
  return raw >= static_cast<std::uint8_t>(dtype::u8) &&
         raw <= static_cast<std::uint8_t>(dtype::f16);
}

// ---- ndarray ---------------------------------------------------------------

namespace {

std::shared_ptr<std::byte> allocate_aligned(std::size_t nbytes) {
  const std::size_t n = nbytes == 0 ? ndarray::alignment : nbytes;
  auto* p = static_cast<std::byte*>(::operator new (n, std::align_val_t{ndarray::alignment}));
  return {p, [](std::byte* q) { ::operator delete (q, std::align_val_t{ndarray::alignment}); }};
}

std::size_t checked_nbytes(dtype type, std::span<const std::uint64_t> shape) {
  if (shape.size() > ndarray::max_ndim) {
    throw error(errc::invalid_argument, "ndarray has " + std::to_string(shape.size()) +
                                            " dimensions; at most " +
                                            std::to_string(ndarray::max_ndim) + " are allowed");
  }
  auto n = ndarray::nbytes_for(type, shape);
  if (!n) throw error(errc::invalid_argument, "ndarray shape overflows the address space");
  return *n;
}

// A list's element access, const or not, past its end.
void check_index(std::size_t index, std::size_t size) {
  if (index >= size) {
    throw error(errc::not_found, "index " + std::to_string(index) + " out of range for a list of " +
                                     std::to_string(size));
  }
}

}  // namespace

ndarray::ndarray() = default;

void ndarray::set_shape(std::span<const std::uint64_t> shape) noexcept {
  // checked_nbytes refused more than max_ndim dimensions.
  ndim_ = static_cast<std::uint32_t>(shape.size());
  std::copy(shape.begin(), shape.end(), dims_.begin());
}

std::optional<std::size_t> ndarray::nbytes_for(dtype type,
                                               std::span<const std::uint64_t> shape) noexcept {
  // The product of the non-zero dimensions must fit even when another is zero:
  // numpy (and any index arithmetic over the shape) refuses such a shape too.
  constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::ptrdiff_t>::max());
  std::uint64_t n = dtype_size(type);
  bool empty = false;
  for (auto d : shape) {
    if (d == 0) {
      empty = true;
      continue;
    }
    if (n > max / d) return std::nullopt;
    n *= d;
  }
  return empty ? 0 : static_cast<std::size_t>(n);
}

ndarray ndarray::zeros(dtype type, std::vector<std::uint64_t> shape) {
  ndarray a;
  a.nbytes_ = checked_nbytes(type, shape);
  auto buf = allocate_aligned(a.nbytes_);
  std::memset(buf.get(), 0, a.nbytes_);
  a.type_ = type;
  a.set_shape(shape);
  a.data_ = buf.get();
  a.owner_ = std::move(buf);
  a.writable_ = true;
  return a;
}

ndarray ndarray::from_bytes(dtype type, std::vector<std::uint64_t> shape,
                            std::span<const std::byte> bytes) {
  ndarray a;
  a.nbytes_ = checked_nbytes(type, shape);
  if (bytes.size() != a.nbytes_) {
    throw error(errc::invalid_argument, "ndarray of " + std::to_string(a.nbytes_) +
                                            " bytes given " + std::to_string(bytes.size()) +
                                            " bytes of data");
  }
  auto buf = allocate_aligned(a.nbytes_);
  if (a.nbytes_ != 0) std::memcpy(buf.get(), bytes.data(), a.nbytes_);
  a.type_ = type;
  a.set_shape(shape);
  a.data_ = buf.get();
  a.owner_ = std::move(buf);
  a.writable_ = true;
  return a;
}

ndarray ndarray::view(dtype type, std::span<const std::uint64_t> shape, const std::byte* data,
                      std::shared_ptr<const void> owner) {
  ndarray a;
  a.nbytes_ = checked_nbytes(type, shape);
  a.type_ = type;
  a.set_shape(shape);
  a.data_ = data;
  a.owner_ = std::move(owner);
  a.writable_ = false;
  return a;
}

std::byte* ndarray::mutable_data() {
  if (!writable_) throw error(errc::invalid_argument, "ndarray is a read-only view");
  return const_cast<std::byte*>(data_);
}

void ndarray::check_element_type(dtype expected) const {
  if (type_ != expected) {
    throw error(errc::invalid_argument, "ndarray holds " + std::string(to_string(type_)) +
                                            ", not " + std::string(to_string(expected)));
  }
}

bool operator==(const ndarray& a, const ndarray& b) noexcept {
  return a.type_ == b.type_ && std::ranges::equal(a.shape(), b.shape()) && a.nbytes_ == b.nbytes_ &&
         (a.nbytes_ == 0 || std::memcmp(a.data_, b.data_, a.nbytes_) == 0);
}

// ---- Value -----------------------------------------------------------------

std::string_view to_string(Value::kind k) noexcept {
  switch (k) {
    case Value::kind::null:
      return "null";
    case Value::kind::boolean:
      return "bool";
    case Value::kind::int64:
      return "int64";
    case Value::kind::float64:
      return "float64";
    case Value::kind::string:
      return "string";
    case Value::kind::bytes:
      return "bytes";
    case Value::kind::list:
      return "list";
    case Value::kind::map:
      return "map";
    case Value::kind::ndarray:
      return "ndarray";
  }
  return "unknown";
}

Value Value::map(std::initializer_list<Map::value_type> entries) {
  return Value(Map(entries));
}

Value Value::map(std::vector<Map::value_type> entries) {
  Map m;
  m.reserve(entries.size());
  for (auto& [k, v] : entries) m.try_emplace(std::move(k), std::move(v));
  return Value(std::move(m));
}

Value Value::map(Map entries) noexcept {
  return Value(std::move(entries));
}

Value Value::list(std::initializer_list<Value> entries) {
  return Value(List(entries));
}

Value Value::list(std::vector<Value> entries) {
  return Value(
      List(std::make_move_iterator(entries.begin()), std::make_move_iterator(entries.end())));
}

Value Value::list(List entries) noexcept {
  return Value(std::move(entries));
}

void Value::throw_out_of_int64(unsigned long long i) {
  throw error(errc::invalid_argument, "integer " + std::to_string(i) +
                                          " does not fit a Value's int64 (at most " +
                                          std::to_string(INT64_MAX) + ")");
}

void Value::throw_kind_mismatch(kind wanted) const {
  throw error(errc::invalid_argument, "expected a " + std::string(slither::to_string(wanted)) +
                                          " value, found " +
                                          std::string(slither::to_string(type())));
}

void Value::destroy() noexcept {
  switch (k_) {
    case kind::string:
      s_.~basic_string();
      break;
    case kind::bytes:
      y_.~Bytes();
      break;
    case kind::list:
      l_.~List();
      break;
    case kind::map:
      m_.~Map();
      break;
    case kind::ndarray:
      delete a_;
      break;
    default:
      break;
  }
}

void Value::steal(Value& other) noexcept {
  switch (k_) {
    case kind::string:
      ::new (static_cast<void*>(&s_)) std::string(std::move(other.s_));
      break;
    case kind::bytes:
      ::new (static_cast<void*>(&y_)) Bytes(std::move(other.y_));
      break;
    case kind::list:
      ::new (static_cast<void*>(&l_)) List(std::move(other.l_));
      break;
    case kind::map:
      ::new (static_cast<void*>(&m_)) Map(std::move(other.m_));
      break;
    case kind::ndarray:
      a_ = other.a_;
      other.k_ = kind::null;  // the pointer now belongs to this value
      return;
    default:
      return;
  }
  other.reset();
}

void Value::copy_from(const Value& other) {
  switch (other.k_) {
    case kind::null:
      break;
    case kind::boolean:
      b_ = other.b_;
      break;
    case kind::int64:
      i_ = other.i_;
      break;
    case kind::float64:
      d_ = other.d_;
      break;
    case kind::string:
      ::new (static_cast<void*>(&s_)) std::string(other.s_);
      break;
    case kind::bytes:
      ::new (static_cast<void*>(&y_)) Bytes(other.y_);
      break;
    case kind::list:
      ::new (static_cast<void*>(&l_)) List(other.l_);
      break;
    case kind::map:
      ::new (static_cast<void*>(&m_)) Map(other.m_);
      break;
    case kind::ndarray:
      a_ = new ndarray(*other.a_);
      break;
  }
  k_ = other.k_;
}

const Value* Value::find(std::string_view key) const noexcept {
  const Map* m = get_if<Map>();
  if (!m) return nullptr;
  auto it = m->find(key);
  return it == m->end() ? nullptr : &it->second;
}

const Value& Value::operator[](std::string_view key) const {
  const auto& m = as<Map>();
  auto it = m.find(key);
  if (it == m.end()) throw error(errc::not_found, "no key '" + std::string(key) + "' in map");
  return it->second;
}

Value& Value::operator[](std::string_view key) {
  if (is_null()) emplace<Map>();
  return as_mut<Map>()[key];
}

const Value& Value::operator[](std::size_t index) const {
  const auto& l = as<List>();
  check_index(index, l.size());
  return l[index];
}

Value& Value::operator[](std::size_t index) {
  auto& l = as_mut<List>();
  check_index(index, l.size());
  return l[index];
}

std::size_t Value::size() const noexcept {
  switch (k_) {
    case kind::string:
      return s_.size();
    case kind::bytes:
      return y_.data.size();
    case kind::list:
      return l_.size();
    case kind::map:
      return m_.size();
    default:
      return 0;
  }
}

bool operator==(const Value& a, const Value& b) noexcept {
  if (a.k_ != b.k_) return false;
  switch (a.k_) {
    case Value::kind::null:
      return true;
    case Value::kind::boolean:
      return a.b_ == b.b_;
    case Value::kind::int64:
      return a.i_ == b.i_;
    case Value::kind::float64:
      return a.d_ == b.d_;
    case Value::kind::string:
      return a.s_ == b.s_;
    case Value::kind::bytes:
      return a.y_ == b.y_;
    case Value::kind::list:
      return a.l_ == b.l_;
    case Value::kind::map:
      return a.m_ == b.m_;
    case Value::kind::ndarray:
      return *a.a_ == *b.a_;
  }
  return false;
}

namespace {

constexpr std::uint32_t max_json_depth = 128;

// ordered_json keeps object keys in insertion order, as Map does.
using json = nlohmann::ordered_json;

json to_json(const Value& v) {
  switch (v.type()) {
    case Value::kind::null:
      return nullptr;
    case Value::kind::boolean:
      return v.as<bool>();
    case Value::kind::int64:
      return v.as<std::int64_t>();
    case Value::kind::float64:
      return v.as<double>();
    case Value::kind::string:
      return v.as<std::string>();
    case Value::kind::bytes: {
      static constexpr char hex[] = "0123456789abcdef";
      std::string out;
      for (char c : v.as<Bytes>().data) {
        auto u = static_cast<unsigned char>(c);
        out += hex[u >> 4];
        out += hex[u & 15];
      }
      return json{{"$bytes", out}};
    }
    case Value::kind::list: {
      json arr = json::array();
      for (const auto& e : v.as<List>()) arr.push_back(to_json(e));
      return arr;
    }
    case Value::kind::map: {
      json obj = json::object();
      for (const auto& [k, e] : v.as<Map>()) obj[k] = to_json(e);
      return obj;
    }
    case Value::kind::ndarray: {
      const auto& a = v.as<ndarray>();
      return json{{"$ndarray",
                   {{"dtype", to_string(a.type())},
                    {"shape", std::vector<std::uint64_t>(a.shape().begin(), a.shape().end())}}}};
    }
  }
  return nullptr;
}

result<Value> from_json(const json& j, std::uint32_t depth) {
  if (depth > max_json_depth) {
    return fail(errc::limit_exceeded,
                "JSON nests deeper than " + std::to_string(max_json_depth) + " levels");
  }
  switch (j.type()) {
    case json::value_t::null:
      return Value{};
    case json::value_t::boolean:
      return Value(j.get<bool>());
    case json::value_t::number_integer:
      return Value(j.get<std::int64_t>());
    case json::value_t::number_unsigned: {
      auto u = j.get<std::uint64_t>();
      if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        return Value(static_cast<std::int64_t>(u));
      }
      return Value(static_cast<double>(u));
    }
    case json::value_t::number_float:
      return Value(j.get<double>());
    case json::value_t::string:
      return Value(j.get<std::string>());
    case json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) {
        SLITHER_TRY_ASSIGN(Value v, from_json(e, depth + 1));
        l.push_back(std::move(v));
      }
      return Value(std::move(l));
    }
    case json::value_t::object: {
      Map m;
      m.reserve(j.size());
      for (const auto& [k, e] : j.items()) {
        SLITHER_TRY_ASSIGN(Value v, from_json(e, depth + 1));
        m.emplace(k, std::move(v));
      }
      return Value(std::move(m));
    }
    default:
      return fail(errc::invalid_argument, "JSON value of unsupported type");
  }
}

}  // namespace

std::string Value::to_string() const {
  return to_json(*this).dump();
}

result<Value> Value::from_json(std::string_view text) {
  auto j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    std::string head(text.substr(0, 60));
    return fail(errc::invalid_argument, "not valid JSON: '" + head + "'");
  }
  return slither::from_json(j, 0);
}

}  // namespace slither
