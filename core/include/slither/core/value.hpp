// slither::Value: the dynamic value that flows through stores, dispatch and pipes.
#pragma once

#include <array>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "slither/core/error.hpp"
#include "slither/core/export.hpp"
#include "slither/core/pool.hpp"

namespace slither {

/// Element type of an `ndarray`. The numeric values are part of the wire
/// format and the shared-memory layout: never renumber them.
///
/// `boolean` elements are bytes holding 0 or 1 (numpy's `bool`; decoders refuse
/// any other byte). `f16` is IEEE 754 binary16 (numpy's `float16`); C++20 has no
/// type for it, so its elements are read through `bytes()`.
enum class dtype : std::uint8_t {
  u8 = 1,
  i32 = 2,
  i64 = 3,
  f32 = 4,
  f64 = 5,
  boolean = 6,
  i8 = 7,
  i16 = 8,
  u16 = 9,
  u32 = 10,
  u64 = 11,
  f16 = 12,
};

/// Size in bytes of one element of `t`.
SLITHER_CORE_EXPORT std::size_t dtype_size(dtype t) noexcept;
/// numpy-style name of `t` ("float32").
SLITHER_CORE_EXPORT std::string_view to_string(dtype t) noexcept;
/// Parses a name produced by `to_string(dtype)`, an enumerator's name ("f32"), or
/// a numpy type string ("<f4", "f4", "|b1"). With a byte-order prefix the
/// string is read as numpy's (so "<u8" is uint64); without one, "u8" names the
/// enumerator `dtype::u8` (uint8) and "i8" numpy's int64, as before.
SLITHER_CORE_EXPORT std::optional<dtype> parse_dtype(std::string_view name) noexcept;
/// True if `raw` is the numeric value of a `dtype` enumerator.
SLITHER_CORE_EXPORT bool is_valid_dtype(std::uint8_t raw) noexcept;

/// A dense, C-contiguous n-dimensional array with a 64-byte-aligned buffer.
///
/// The buffer is shared: copies of an `ndarray` refer to the same memory.
/// An array is either *owned* (allocated by `zeros`/`from_bytes`, writable)
/// or a *view* over memory kept alive by an owner handle (for example a pin
/// on a shared-memory block), which is read-only.
class SLITHER_CORE_EXPORT ndarray {
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
  /// must hold `nbytes_for(type, shape)` bytes. The shape is copied into the
  /// array, so it may live anywhere: a view allocates nothing.
  static ndarray view(dtype type, std::span<const std::uint64_t> shape, const std::byte* data,
                      std::shared_ptr<const void> owner);
  /// Byte size of an array of this type and shape, or nullopt if the product of
  /// its non-zero dimensions and element size overflows `std::ptrdiff_t`
  /// (even when another dimension is zero).
  static std::optional<std::size_t> nbytes_for(dtype type,
                                               std::span<const std::uint64_t> shape) noexcept;

  dtype type() const noexcept { return type_; }
  /// The dimensions, kept in the array itself (no allocation); valid while it lives.
  std::span<const std::uint64_t> shape() const noexcept { return {dims_.data(), ndim_}; }
  std::size_t ndim() const noexcept { return ndim_; }
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

  /// Typed read access; throws if `T` does not match `type()` (`std::byte`
  /// and `std::uint8_t` read `u8`, `bool` reads `boolean`; `f16` has no `T`).
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
  friend SLITHER_CORE_EXPORT bool operator==(const ndarray& a, const ndarray& b) noexcept;

 private:
  template <class T>
  void check_element() const;
  void check_element_type(dtype expected) const;
  void set_shape(std::span<const std::uint64_t> shape) noexcept;

  dtype type_ = dtype::u8;
  std::uint32_t ndim_ = 1;
  // Inline, not a vector: a view of a stored array (`shm::view::array()`)
  // would otherwise allocate for its shape alone.
  std::array<std::uint64_t, max_ndim> dims_{};
  std::shared_ptr<const void> owner_;
  const std::byte* data_ = nullptr;
  std::size_t nbytes_ = 0;
  bool writable_ = false;
};

/// Raw bytes, kept distinct from text so Python sees `bytes`, not `str`.
struct SLITHER_CORE_EXPORT Bytes {
  std::string data;
  friend bool operator==(const Bytes&, const Bytes&) = default;
};

class Value;
/// A list of values. Its storage comes from a per-thread cache of small blocks
/// (`pool_allocator`): decoding makes and frees many small lists at once.
using List = std::vector<Value, pool_allocator<Value>>;

/// A map with string keys that keeps its entries in insertion order, as a
/// Python dict does: iteration, `to_string` and the encoding follow the order
/// in which keys were first inserted, and a decoded map has the order it was
/// encoded with. Replacing a key's value keeps its place; `erase` keeps the
/// order of the others.
///
/// Entries are stored contiguously (one allocation); lookups scan them while
/// the map is small and use a hash index once it has more than
/// `linear_limit` entries. The interface follows `std::map` where it can:
/// `find`, `contains`, `count`, `at`, `operator[]`, `emplace`, `try_emplace`,
/// `insert_or_assign`, `erase`, iteration over `std::pair<std::string, Value>`.
/// Two maps are equal when they hold the same keys with equal values, in any
/// order (as Python dicts compare).
///
/// Caveats: do not modify a key through an iterator (the index would no longer
/// find it); inserting may move entries, invalidating iterators and references,
/// as `std::vector` does.
class SLITHER_CORE_EXPORT Map {
 public:
  using key_type = std::string;
  using mapped_type = Value;
  using value_type = std::pair<std::string, Value>;
  using size_type = std::size_t;
  using iterator = std::vector<value_type, pool_allocator<value_type>>::iterator;
  using const_iterator = std::vector<value_type, pool_allocator<value_type>>::const_iterator;

  /// Maps up to this many entries have no index: a scan is faster.
  static constexpr size_type linear_limit = 8;

  Map() noexcept = default;
  Map(const Map& other);
  Map(Map&&) noexcept = default;
  Map& operator=(const Map& other);
  Map& operator=(Map&&) noexcept = default;
  ~Map() = default;
  /// Entries in the order given; of repeated keys the first wins (as `std::map`).
  Map(std::initializer_list<value_type> entries);
  /// Entries of `[first, last)` in order; of repeated keys the first wins.
  template <class It>
  Map(It first, It last);

  // (Members that touch entries_ are defined after Value, which they need complete.)
  iterator begin() noexcept;
  iterator end() noexcept;
  const_iterator begin() const noexcept;
  const_iterator end() const noexcept;
  const_iterator cbegin() const noexcept;
  const_iterator cend() const noexcept;

  size_type size() const noexcept;
  bool empty() const noexcept;
  /// Room for `n` entries without reallocating.
  void reserve(size_type n);
  /// Removes every entry.
  void clear() noexcept;

  /// The entry of `key`, or `end()`.
  iterator find(std::string_view key) noexcept;
  const_iterator find(std::string_view key) const noexcept;
  bool contains(std::string_view key) const noexcept;
  size_type count(std::string_view key) const noexcept;
  /// The value of `key`; throws `slither::error(not_found)` naming the key if absent.
  Value& at(std::string_view key);
  const Value& at(std::string_view key) const;
  /// The value of `key`, appended as null if absent.
  Value& operator[](std::string_view key);

  /// Appends `key` with a value built from `args` unless `key` is present;
  /// returns the key's entry and whether it was inserted.
  template <class... Args>
  std::pair<iterator, bool> try_emplace(std::string key, Args&&... args);
  /// Appends `key` with a null value unless `key` is present; returns the
  /// key's entry and whether it was added. The key is copied straight into
  /// its entry: what a decoder uses, reading keys in place.
  std::pair<iterator, bool> try_append(std::string_view key);
  /// Same as `try_emplace(key, value)`.
  template <class V>
  std::pair<iterator, bool> emplace(std::string key, V&& value);
  /// Inserts `entry` unless its key is present.
  std::pair<iterator, bool> insert(value_type entry);
  /// Sets `key` to `value`: replaced in place if present, appended otherwise.
  template <class V>
  std::pair<iterator, bool> insert_or_assign(std::string key, V&& value);
  /// Removes `key`; returns how many entries were removed (0 or 1).
  size_type erase(std::string_view key);
  /// Removes the entry at `pos`; returns the iterator to the entry after it.
  iterator erase(const_iterator pos);

  /// Same keys with equal values, whatever their order.
  friend SLITHER_CORE_EXPORT bool operator==(const Map& a, const Map& b) noexcept;

 private:
  // Position of `key` in entries_, or npos. Small maps are scanned inline:
  // most keys differ in length or first byte, tested before memcmp.
  size_type position(std::string_view key) const noexcept;
  size_type indexed_position(std::string_view key) const noexcept;
  // Indexes the entry just appended (its key known to be absent).
  void appended();
  void index_appended();
  void rebuild_index();
  static constexpr size_type npos = static_cast<size_type>(-1);

  // Pooled: decoding a batch makes and later frees many small maps at once.
  std::vector<value_type, pool_allocator<value_type>> entries_;
  // Open addressing over entries_, null while size() <= linear_limit:
  // index_[0] is the number of slots (a power of two, at least 2 * size()),
  // index_[1 + i] is slot i (an entry's position + 1, or 0 when empty).
  std::unique_ptr<std::uint32_t[]> index_;
};

/// A dynamic value: null, bool, int64, float64, string, bytes, list, map or ndarray.
///
/// A tagged union of 40 bytes: scalars are stored inline and copied, moved and
/// destroyed without a call; an ndarray is held through a pointer (it is the
/// largest alternative and the rarest). A moved-from `Value` is null.
///
/// Copying a `Value` deep-copies strings, bytes, lists and maps, but not an
/// ndarray's buffer: copies of an ndarray `Value` (or of a list or map holding
/// one) share its memory, as `ndarray` copies do, so writing through
/// `as_mut<ndarray>().mutable_data()` of one copy shows in the others.
///
/// Integers are int64: unsigned ones up to INT64_MAX convert, larger ones throw
/// (never wrap to a negative number). A pointer other than `const char*` does
/// not convert (it would silently become a bool).
class SLITHER_CORE_EXPORT Value {
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

  Value() noexcept : i_(0) {}
  Value(std::nullptr_t) noexcept : i_(0) {}                // NOLINT: implicit by design
  Value(bool b) noexcept : b_(b), k_(kind::boolean) {}     // NOLINT
  Value(int i) noexcept : i_(i), k_(kind::int64) {}        // NOLINT
  Value(long i) noexcept : i_(i), k_(kind::int64) {}       // NOLINT
  Value(long long i) noexcept : i_(i), k_(kind::int64) {}  // NOLINT
  Value(unsigned i) noexcept : i_(i), k_(kind::int64) {}   // NOLINT
  /// Throws `slither::error(invalid_argument)` above INT64_MAX.
  Value(unsigned long i) : i_(checked_int64(i)), k_(kind::int64) {}  // NOLINT
  /// Throws `slither::error(invalid_argument)` above INT64_MAX.
  Value(unsigned long long i) : i_(checked_int64(i)), k_(kind::int64) {}  // NOLINT
  /// Null, as for nullptr: `return std::nullopt;` into a `result<Value>`.
  Value(std::nullopt_t) noexcept : i_(0) {}                               // NOLINT
  Value(double d) noexcept : d_(d), k_(kind::float64) {}                  // NOLINT
  Value(const char* s) : s_(s), k_(kind::string) {}                       // NOLINT
  Value(std::string s) noexcept : s_(std::move(s)), k_(kind::string) {}   // NOLINT
  Value(std::string_view s) : s_(s), k_(kind::string) {}                  // NOLINT
  Value(Bytes b) noexcept : y_(std::move(b)), k_(kind::bytes) {}          // NOLINT
  Value(List l) noexcept : l_(std::move(l)), k_(kind::list) {}            // NOLINT
  Value(Map m) noexcept : m_(std::move(m)), k_(kind::map) {}              // NOLINT
  Value(ndarray a) : a_(new ndarray(std::move(a))), k_(kind::ndarray) {}  // NOLINT
  /// Deleted: a pointer (other than a string) would otherwise become a bool.
  template <class P>
  requires(!std::is_same_v<std::remove_cv_t<P>, char>) Value(P*)
  = delete;

  Value(const Value& other) : i_(0) { copy_from(other); }
  Value(Value&& other) noexcept : k_(other.k_) {
    if (k_ <= kind::float64) {
      std::memcpy(&i_, &other.i_, sizeof i_);  // whichever scalar it holds
    } else {
      steal(other);
    }
  }
  Value& operator=(const Value& other) {
    if (this != &other) *this = Value(other);
    return *this;
  }
  Value& operator=(Value&& other) noexcept {
    if (this != &other) {
      // `other` may live inside this value: take it before releasing ours.
      Value taken(std::move(other));
      reset();
      k_ = taken.k_;
      if (k_ <= kind::float64) {
        std::memcpy(&i_, &taken.i_, sizeof i_);
      } else {
        steal(taken);
      }
    }
    return *this;
  }
  ~Value() {
    // Strings are the common owning kind: their (usually no-op) destructor inline.
    if (k_ == kind::string) {
      s_.~basic_string();
    } else if (k_ > kind::float64) {
      destroy();
    }
  }

  /// A map from `{key, value}` pairs, in that order: `Value::map({{"score", 0.5}})`.
  /// The entries are copied (an initializer list cannot be moved from): for
  /// large values use the overloads below, which move.
  static Value map(std::initializer_list<Map::value_type> entries);
  /// A map from entries moved out of `entries`, in order (of repeated keys the first wins).
  static Value map(std::vector<Map::value_type> entries);
  /// A map value holding `entries` (moved).
  static Value map(Map entries) noexcept;
  /// A list: `Value::list({1, "two", 3.0})`. The elements are copied: for
  /// large values use the overloads below, which move.
  static Value list(std::initializer_list<Value> entries);
  /// A list of the elements moved out of `entries`.
  static Value list(std::vector<Value> entries);
  /// A list value holding `entries` (moved).
  static Value list(List entries) noexcept;

  kind type() const noexcept { return k_; }
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
  /// The `T` this value holds, or nullptr for another kind (no conversion:
  /// `try_as<double>()` of an int64 is nullptr). `T` as for `as<T>()`.
  template <class T>
  const T* try_as() const noexcept {
    return get_if<T>();
  }
  template <class T>
  T* try_as() noexcept {
    return get_if<T>();
  }
  /// Calls `f` with what this value holds: `std::nullptr_t` for null, then
  /// `bool`, `std::int64_t`, `double`, `const std::string&`, `const Bytes&`,
  /// `const List&`, `const Map&` or `const ndarray&`; returns what `f`
  /// returns (the same type for every kind).
  template <class F>
  decltype(auto) visit(F&& f) const;
  /// As above, with mutable references to the non-scalar kinds.
  template <class F>
  decltype(auto) visit(F&& f);
  /// Replaces this value with a `T` built from `args` and returns it; `T` is
  /// one of the types `as<T>()` accepts. Lets a decoder build values in place.
  template <class T, class... Args>
  T& emplace(Args&&... args);

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

  /// Same kind and equal contents (maps in any order; an int never equals a float).
  friend SLITHER_CORE_EXPORT bool operator==(const Value& a, const Value& b) noexcept;

 private:
  template <class T>
  const T* get_if() const noexcept;
  template <class T>
  T* get_if() noexcept {
    return const_cast<T*>(static_cast<const Value*>(this)->get_if<T>());
  }
  // Releases what this value owns and makes it null.
  void reset() noexcept {
    if (k_ > kind::float64) destroy();
    k_ = kind::null;
  }
  void destroy() noexcept;
  // Move-constructs from `other` (of a non-scalar kind, already in k_), which becomes null.
  void steal(Value& other) noexcept;
  // Copy-constructs from `other` into this null value.
  void copy_from(const Value& other);
  [[noreturn]] void throw_kind_mismatch(kind wanted) const;
  [[noreturn]] static void throw_out_of_int64(unsigned long long i);
  static std::int64_t checked_int64(unsigned long long i) {
    if (i > static_cast<unsigned long long>(INT64_MAX)) throw_out_of_int64(i);
    return static_cast<std::int64_t>(i);
  }
  template <class Self, class F>
  static decltype(auto) visit_impl(Self& self, F&& f);

  union {
    bool b_;
    std::int64_t i_;
    double d_;
    std::string s_;
    Bytes y_;
    List l_;
    Map m_;
    ndarray* a_;
  };
  kind k_ = kind::null;
};

/// Stable lower-case name of a kind ("float64").
SLITHER_CORE_EXPORT std::string_view to_string(Value::kind k) noexcept;

template <class T>
void ndarray::check_element() const {
  if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::byte>) {
    check_element_type(dtype::u8);
  } else if constexpr (std::is_same_v<T, bool>) {
    static_assert(sizeof(bool) == 1, "boolean arrays are read as one-byte bools");
    check_element_type(dtype::boolean);
  } else if constexpr (std::is_same_v<T, std::int8_t>) {
    check_element_type(dtype::i8);
  } else if constexpr (std::is_same_v<T, std::int16_t>) {
    check_element_type(dtype::i16);
  } else if constexpr (std::is_same_v<T, std::uint16_t>) {
    check_element_type(dtype::u16);
  } else if constexpr (std::is_same_v<T, std::int32_t>) {
    check_element_type(dtype::i32);
  } else if constexpr (std::is_same_v<T, std::uint32_t>) {
    check_element_type(dtype::u32);
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    check_element_type(dtype::i64);
  } else if constexpr (std::is_same_v<T, std::uint64_t>) {
    check_element_type(dtype::u64);
  } else if constexpr (std::is_same_v<T, float>) {
    check_element_type(dtype::f32);
  } else if constexpr (std::is_same_v<T, double>) {
    check_element_type(dtype::f64);
  } else {
    static_assert(sizeof(T) == 0,
                  "ndarray element type must be bool, a fixed-width integer, float or double");
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
const T* Value::get_if() const noexcept {
  if (k_ != detail::kind_of<T>()) return nullptr;
  if constexpr (std::is_same_v<T, bool>) {
    return &b_;
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    return &i_;
  } else if constexpr (std::is_same_v<T, double>) {
    return &d_;
  } else if constexpr (std::is_same_v<T, std::string>) {
    return &s_;
  } else if constexpr (std::is_same_v<T, Bytes>) {
    return &y_;
  } else if constexpr (std::is_same_v<T, List>) {
    return &l_;
  } else if constexpr (std::is_same_v<T, Map>) {
    return &m_;
  } else {
    return a_;
  }
}

template <class T>
std::conditional_t<std::is_arithmetic_v<T>, T, const T&> Value::as() const {
  constexpr kind wanted = detail::kind_of<T>();
  if constexpr (wanted == kind::float64) {
    if (k_ == kind::float64) return d_;
    if (k_ == kind::int64) return static_cast<double>(i_);
    throw_kind_mismatch(wanted);
  } else {
    if (const T* p = get_if<T>()) return *p;
    throw_kind_mismatch(wanted);
  }
}

template <class T>
T& Value::as_mut() {
  if (T* p = get_if<T>()) return *p;
  throw_kind_mismatch(detail::kind_of<T>());
}

template <class Self, class F>
decltype(auto) Value::visit_impl(Self& self, F&& f) {
  switch (self.k_) {
    case kind::boolean:
      return std::forward<F>(f)(self.b_);
    case kind::int64:
      return std::forward<F>(f)(self.i_);
    case kind::float64:
      return std::forward<F>(f)(self.d_);
    case kind::string:
      return std::forward<F>(f)(self.s_);
    case kind::bytes:
      return std::forward<F>(f)(self.y_);
    case kind::list:
      return std::forward<F>(f)(self.l_);
    case kind::map:
      return std::forward<F>(f)(self.m_);
    case kind::ndarray:
      return std::forward<F>(f)(*self.a_);
    case kind::null:
      break;
  }
  return std::forward<F>(f)(nullptr);
}

template <class F>
decltype(auto) Value::visit(F&& f) const {
  return visit_impl(*this, std::forward<F>(f));
}

template <class F>
decltype(auto) Value::visit(F&& f) {
  // Scalars go by value, as from the const overload.
  return visit_impl(*this, [&f](auto&& held) -> decltype(auto) {
    using H = std::remove_cvref_t<decltype(held)>;
    if constexpr (std::is_arithmetic_v<H>) {
      return std::forward<F>(f)(H(held));
    } else {
      return std::forward<F>(f)(held);
    }
  });
}

template <class T, class... Args>
T& Value::emplace(Args&&... args) {
  constexpr kind k = detail::kind_of<T>();
  reset();
  if constexpr (k == kind::ndarray) {
    a_ = new ndarray(std::forward<Args>(args)...);
    k_ = k;
    return *a_;
  } else {
    T* p;
    if constexpr (k == kind::boolean) {
      p = ::new (static_cast<void*>(&b_)) T(std::forward<Args>(args)...);
    } else if constexpr (k == kind::int64) {
      p = ::new (static_cast<void*>(&i_)) T(std::forward<Args>(args)...);
    } else if constexpr (k == kind::float64) {
      p = ::new (static_cast<void*>(&d_)) T(std::forward<Args>(args)...);
    } else if constexpr (k == kind::string) {
      p = ::new (static_cast<void*>(&s_)) T(std::forward<Args>(args)...);
    } else if constexpr (k == kind::bytes) {
      p = ::new (static_cast<void*>(&y_)) T(std::forward<Args>(args)...);
    } else if constexpr (k == kind::list) {
      p = ::new (static_cast<void*>(&l_)) T(std::forward<Args>(args)...);
    } else {
      p = ::new (static_cast<void*>(&m_)) T(std::forward<Args>(args)...);
    }
    k_ = k;
    return *p;
  }
}

inline Map::iterator Map::begin() noexcept {
  return entries_.begin();
}
inline Map::iterator Map::end() noexcept {
  return entries_.end();
}
inline Map::const_iterator Map::begin() const noexcept {
  return entries_.begin();
}
inline Map::const_iterator Map::end() const noexcept {
  return entries_.end();
}
inline Map::const_iterator Map::cbegin() const noexcept {
  return entries_.cbegin();
}
inline Map::const_iterator Map::cend() const noexcept {
  return entries_.cend();
}
inline Map::size_type Map::size() const noexcept {
  return entries_.size();
}
inline bool Map::empty() const noexcept {
  return entries_.empty();
}
inline bool Map::contains(std::string_view key) const noexcept {
  return position(key) != npos;
}
inline Map::size_type Map::count(std::string_view key) const noexcept {
  return contains(key) ? 1 : 0;
}

template <class V>
std::pair<Map::iterator, bool> Map::emplace(std::string key, V&& value) {
  return try_emplace(std::move(key), std::forward<V>(value));
}

inline Map::size_type Map::position(std::string_view key) const noexcept {
  if (index_) return indexed_position(key);
  for (size_type i = 0; i < entries_.size(); ++i) {
    const std::string& k = entries_[i].first;
    if (k.size() == key.size() &&
        (key.empty() || (k[0] == key[0] && std::memcmp(k.data(), key.data(), key.size()) == 0))) {
      return i;
    }
  }
  return npos;
}

inline void Map::appended() {
  if (entries_.size() > linear_limit) index_appended();
}

template <class It>
Map::Map(It first, It last) {
  for (; first != last; ++first) try_emplace(first->first, first->second);
}

template <class... Args>
std::pair<Map::iterator, bool> Map::try_emplace(std::string key, Args&&... args) {
  if (const size_type at = position(key); at != npos) return {entries_.begin() + at, false};
  entries_.emplace_back(std::piecewise_construct, std::forward_as_tuple(std::move(key)),
                        std::forward_as_tuple(std::forward<Args>(args)...));
  appended();
  return {entries_.end() - 1, true};
}

inline std::pair<Map::iterator, bool> Map::try_append(std::string_view key) {
  if (const size_type at = position(key); at != npos) return {entries_.begin() + at, false};
  entries_.emplace_back(std::piecewise_construct, std::forward_as_tuple(key.data(), key.size()),
                        std::forward_as_tuple());
  appended();
  return {entries_.end() - 1, true};
}

template <class V>
std::pair<Map::iterator, bool> Map::insert_or_assign(std::string key, V&& value) {
  if (const size_type at = position(key); at != npos) {
    entries_[at].second = std::forward<V>(value);
    return {entries_.begin() + at, false};
  }
  entries_.emplace_back(std::move(key), std::forward<V>(value));
  appended();
  return {entries_.end() - 1, true};
}

}  // namespace slither
