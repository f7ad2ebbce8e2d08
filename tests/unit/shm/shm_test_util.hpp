// Helpers shared by the shm unit and integration tests.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "slither/shm/store.hpp"

namespace slither::shm::testing {

/// Scales loop counts down in sanitizer builds (SLITHER_TEST_SMALL).
constexpr std::uint64_t scaled(std::uint64_t release, std::uint64_t sanitized) {
#ifdef SLITHER_TEST_SMALL
  (void)release;
  return sanitized;
#else
  (void)sanitized;
  return release;
#endif
}

/// A namespace no other test (or parallel ctest process) uses.
inline std::string unique_ns(const std::string& what) {
  static std::atomic<int> counter{0};
  // Appended piecewise: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string.
  std::string ns = "t";
  ns += std::to_string(::getpid());
  ns += '-';
  ns += std::to_string(counter++);
  ns += '-';
  ns += what;
  return ns;
}

/// `prefix` followed by `n` ("k17"); built piecewise, see `unique_ns`.
inline std::string numbered(const std::string& prefix, std::uint64_t n) {
  std::string key = prefix;
  key += std::to_string(n);
  return key;
}

/// Options for a test store with small limits.
inline store_options test_options(const std::string& what) {
  store_options o;
  o.ns = unique_ns(what);
  o.name = what;
  o.initial_segment_bytes = std::uint64_t{1} << 20;
  o.max_key_bytes = 256;
  o.max_value_bytes = std::uint64_t{1} << 30;
  o.max_readers = 16;
  return o;
}

/// A 64-byte value whose last 8 bytes are a checksum of the rest, so a torn
/// or reused block shows up in `verify`.
inline Value checked_value(std::uint64_t key, std::uint64_t round) {
  std::string s(56, '\0');
  for (std::size_t i = 0; i < s.size(); ++i) {
    s[i] = static_cast<char>((key * 31 + round * 7 + i) & 0xff);
  }
  std::uint64_t sum = key;
  for (char c : s) sum = sum * 131 + static_cast<unsigned char>(c);
  s.append(reinterpret_cast<const char*>(&sum), sizeof(sum));
  return Value(Bytes{std::move(s)});
}

/// True if `v` is a `checked_value` of `key`.
inline bool verify(std::uint64_t key, const Value& v) {
  if (!v.is_bytes()) return false;
  const std::string& s = v.as<Bytes>().data;
  if (s.size() != 64) return false;
  std::uint64_t sum = key;
  for (std::size_t i = 0; i < 56; ++i) sum = sum * 131 + static_cast<unsigned char>(s[i]);
  std::uint64_t stored;
  std::memcpy(&stored, s.data() + 56, sizeof(stored));
  return sum == stored;
}

/// A read-write mapping of one of a store's objects, as another process of
/// the store's user could make: for tests that damage what readers map.
class raw_object {
 public:
  explicit raw_object(const std::string& name) {
    fd_ = ::shm_open(name.c_str(), O_RDWR, 0);
    struct stat st {};
    if (fd_ < 0 || ::fstat(fd_, &st) != 0) throw std::runtime_error("cannot open " + name);
    size_ = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error("cannot map " + name);
    data_ = static_cast<std::byte*>(p);
  }
  ~raw_object() {
    ::munmap(data_, size_);
    ::close(fd_);
  }
  raw_object(const raw_object&) = delete;
  raw_object& operator=(const raw_object&) = delete;

  std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  int fd() const { return fd_; }
  /// The object at `offset`, as `T`.
  template <class T>
  T* at(std::uint64_t offset) const {
    return reinterpret_cast<T*>(data_ + offset);
  }

 private:
  int fd_ = -1;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace slither::shm::testing
