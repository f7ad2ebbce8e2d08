// slither::Value: the dynamic value that flows through stores, dispatch and pipes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "slither/core/error.hpp"

namespace slither {

/// Element type of an `ndarray`.
enum class dtype : std::uint8_t { u8 = 1, i32 = 2, i64 = 3, f32 = 4, f64 = 5 };

/// Size in bytes of one element of `t`.
std::size_t dtype_size(dtype t) noexcept;
/// numpy-style name of `t` ("float32").
std::string_view to_string(dtype t) noexcept;
/// Parses a name produced by `to_string(dtype)` or a numpy type string ("<f4", "f4").
std::optional<dtype> parse_dtype(std::string_view name) noexcept;
/// True if `raw` is the numeric value of a `dtype` enumerator.
bool is_valid_dtype(std::uint8_t raw) noexcept;

/// A dense, C-contiguous n-dimensional array with a 64-byte-aligned buffer.
///
/// The buffer is shared: copies of an `ndarray` refer to the same memory.
/// An array is either *owned* (allocated by `zeros`/`from_bytes`, writable)
/// or a *view* over memory kept alive by an owner handle (for example a pin
/// on a shared-memory block), which is read-only.
class ndarray {
 public:
  /// Buffer alignment guaranteed for owned arrays and for stored arrays in shm.
  static constexpr std::size_t alignment = 64;
  /// Most dimensions an array may have.
  static constexpr std::size_t max_ndim = 32;

  /// An empty 1-d u8 array of length 0.
  ndarray();

  /// Allocates a zero-filled array. Throws `slither::error(invalid_argument)`
  /// if the shape has more than `max_ndim` dimensions or its byte size overflows.
  static ndarray zeros(dtype type, std::vector<std::uint64_t> shape);
  /// Allocates an array and copies `bytes` into it; `bytes.size()` must equal
  /// the shape's byte size.
  static ndarray from_bytes(dtype type, std::vector<std::uint64_t> shape,
                            std::span<const std::byte> bytes);
  /// Wraps read-only memory owned elsewhere; `owner` keeps it alive. `data`
  /// must hold `nbytes_for(type, shape)` bytes.
  static ndarray view(dtype type, std::vector<std::uint64_t> shape, const std::byte* data,
                      std::shared_ptr<const void> owner);
  /// Byte size of an array of this type and shape, or nullopt on overflow.
  static std::optional<std::size_t> nbytes_for(dtype type,
                                               std::span<const std::uint64_t> shape) noexcept;

  dtype type() const noexcept { return type_; }
  const std::vector<std::uint64_t>& shape() const noexcept { return shape_; }
  std::size_t ndim() const noexcept { return shape_.size(); }
  /// Number of elements (1 for a 0-d array).
  std::size_t size() const noexcept { return nbytes_ / dtype_size(type_); }
  std::size_t nbytes() const noexcept { return nbytes_; }
  const std::byte* data() const noexcept { return data_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, nbytes_}; }
  /// False for views over memory owned by someone else.
  bool writable() const noexcept { return writable_; }
  /// Writable buffer; throws `slither::error(invalid_argument)` for a read-only view.
  std::byte* mutable_data();
  /// The handle that keeps the buffer alive (shared by all copies).
  const std::shared_ptr<const void>& owner() const noexcept { return owner_; }

  /// Typed read access; throws if `T` does not match `type()`.
  template <class T>
  std::span<const T> values() const {
    check_element<T>();
    return {reinterpret_cast<const T*>(data_), size()};
  }
  /// Typed write access; throws if `T` does not match or the array is read-only.
  template <class T>
  std::span<T> mutable_values() {
    check_element<T>();
    return {reinterpret_cast<T*>(mutable_data()), size()};
  }

  /// Same dtype, shape and bytes.
  friend bool operator==(const ndarray& a, const ndarray& b) noexcept;

 private:
  template <class T>
  void check_element() const;
  void check_element_size(std::size_t size, std::string_view name) const;

  dtype type_ = dtype::u8;
  std::vector<std::uint64_t> shape_;
  std::shared_ptr<const void> owner_;
  const std::byte* data_ = nullptr;
  std::size_t nbytes_ = 0;
  bool writable_ = false;
};

/// Raw bytes, kept distinct from text so Python sees `bytes`, not `str`.
struct Bytes {
  std::string data;
  friend bool operator==(const Bytes&, const Bytes&) = default;
};

class Value;
/// A list of values.
using List = std::vector<Value>;
/// A map with string keys, ordered by key so encodings are deterministic.
using Map = std::map<std::string, Value, std::less<>>;

/// A dynamic value: null, bool, int64, float64, string, bytes, list, map or ndarray.
class Value {
 public:
  enum class kind : std::uint8_t {
    null = 0,
    boolean = 1,
    int64 = 2,
    float64 = 3,
    string = 4,
    bytes = 5,
    list = 6,
    map = 7,
    ndarray = 8,
  };

  Value() noexcept = default;
  Value(std::nullptr_t) noexcept {}                     // NOLINT: implicit by design
  Value(bool b) noexcept : v_(b) {}                     // NOLINT
  Value(int i) noexcept : v_(std::int64_t{i}) {}        // NOLINT
  Value(long i) noexcept : v_(std::int64_t{i}) {}       // NOLINT
  Value(long long i) noexcept : v_(std::int64_t{i}) {}  // NOLINT
  Value(unsigned i) noexcept : v_(std::int64_t{i}) {}   // NOLINT
  Value(double d) noexcept : v_(d) {}                   // NOLINT
  Value(const char* s) : v_(std::string(s)) {}          // NOLINT
  Value(std::string s) noexcept : v_(std::move(s)) {}   // NOLINT
  Value(std::string_view s) : v_(std::string(s)) {}     // NOLINT
  Value(Bytes b) noexcept : v_(std::move(b)) {}         // NOLINT
  Value(List l) noexcept : v_(std::move(l)) {}          // NOLINT
  Value(Map m) noexcept : v_(std::move(m)) {}           // NOLINT
  Value(ndarray a) noexcept : v_(std::move(a)) {}       // NOLINT

  /// A map from `{key, value}` pairs: `Value::map({{"score", 0.5}})`.
  static Value map(std::initializer_list<std::pair<const std::string, Value>> entries);
  /// A list: `Value::list({1, "two", 3.0})`.
  static Value list(std::initializer_list<Value> entries);

  kind type() const noexcept { return static_cast<kind>(v_.index()); }
  bool is_null() const noexcept { return type() == kind::null; }
  bool is_bool() const noexcept { return type() == kind::boolean; }
  bool is_int() const noexcept { return type() == kind::int64; }
  bool is_float() const noexcept { return type() == kind::float64; }
  bool is_string() const noexcept { return type() == kind::string; }
  bool is_bytes() const noexcept { return type() == kind::bytes; }
  bool is_list() const noexcept { return type() == kind::list; }
  bool is_map() const noexcept { return type() == kind::map; }
  bool is_ndarray() const noexcept { return type() == kind::ndarray; }

  /// Typed access. `T` is one of bool, std::int64_t, double, std::string,
  /// Bytes, List, Map, ndarray. `as<double>()` also accepts an int64.
  /// Throws `slither::error(invalid_argument)` naming both kinds on mismatch.
  template <class T>
  std::conditional_t<std::is_arithmetic_v<T>, T, const T&> as() const;
  template <class T>
  T& as_mut();

  /// Map lookup; nullptr if this is not a map or the key is absent.
  const Value* find(std::string_view key) const noexcept;
  /// Map element; throws `slither::error(not_found)` naming the key if absent.
  const Value& operator[](std::string_view key) const;
  /// Map element, inserted as null if absent; a null value becomes an empty map.
  Value& operator[](std::string_view key);
  /// List element; throws `slither::error(not_found)` if out of range.
  const Value& operator[](std::size_t index) const;
  Value& operator[](std::size_t index);
  const Value& operator[](int index) const { return (*this)[static_cast<std::size_t>(index)]; }
  Value& operator[](int index) { return (*this)[static_cast<std::size_t>(index)]; }

  /// Elements of a list or map, characters of a string or bytes; 0 otherwise.
  std::size_t size() const noexcept;

  /// A compact JSON rendering for logs. Bytes render as {"$bytes": "<hex>"}
  /// and arrays as {"$ndarray": {"dtype":..., "shape": [...]}} (no data).
  std::string to_string() const;
  /// Parses JSON text (a JSON Lines row, a config literal). Integers that fit
  /// int64 stay integers; other numbers become float64.
  static result<Value> from_json(std::string_view text);

  friend bool operator==(const Value& a, const Value& b) noexcept;

 private:
  std::variant<std::monostate, bool, std::int64_t, double, std::string, Bytes, List, Map, ndarray>
      v_;
  [[noreturn]] void throw_kind_mismatch(kind wanted) const;
};

/// Stable lower-case name of a kind ("float64").
std::string_view to_string(Value::kind k) noexcept;

template <class T>
void ndarray::check_element() const {
  if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::byte>) {
    check_element_size(1, "u8");
  } else if constexpr (std::is_same_v<T, std::int32_t>) {
    check_element_size(4, "i32");
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    check_element_size(8, "i64");
  } else if constexpr (std::is_same_v<T, float>) {
    check_element_size(4, "f32");
  } else if constexpr (std::is_same_v<T, double>) {
    check_element_size(8, "f64");
  } else {
    static_assert(sizeof(T) == 0, "ndarray element type must be u8, i32, i64, float or double");
  }
}

namespace detail {
template <class T>
constexpr Value::kind kind_of() {
  if constexpr (std::is_same_v<T, bool>)
    return Value::kind::boolean;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return Value::kind::int64;
  else if constexpr (std::is_same_v<T, double>)
    return Value::kind::float64;
  else if constexpr (std::is_same_v<T, std::string>)
    return Value::kind::string;
  else if constexpr (std::is_same_v<T, Bytes>)
    return Value::kind::bytes;
  else if constexpr (std::is_same_v<T, List>)
    return Value::kind::list;
  else if constexpr (std::is_same_v<T, Map>)
    return Value::kind::map;
  else if constexpr (std::is_same_v<T, ndarray>)
    return Value::kind::ndarray;
  else
    static_assert(sizeof(T) == 0, "Value::as<T>: T is not a Value alternative");
}
}  // namespace detail

template <class T>
std::conditional_t<std::is_arithmetic_v<T>, T, const T&> Value::as() const {
  constexpr kind wanted = detail::kind_of<T>();
  if constexpr (wanted == kind::float64) {
    if (const auto* i = std::get_if<std::int64_t>(&v_)) return static_cast<double>(*i);
    if (const auto* d = std::get_if<double>(&v_)) return *d;
    throw_kind_mismatch(wanted);
  } else if constexpr (wanted == kind::boolean || wanted == kind::int64) {
    if (const auto* p = std::get_if<T>(&v_)) return *p;
    throw_kind_mismatch(wanted);
  } else {
    if (const auto* p = std::get_if<T>(&v_)) return *p;
    throw_kind_mismatch(wanted);
  }
}

template <class T>
T& Value::as_mut() {
  if (auto* p = std::get_if<T>(&v_)) return *p;
  throw_kind_mismatch(detail::kind_of<T>());
}

}  // namespace slither
