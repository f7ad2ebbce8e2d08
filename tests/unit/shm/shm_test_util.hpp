// Helpers shared by the shm unit and integration tests.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdint>
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

/// Options for a test store with small limits.
inline store_options test_options(const std::string& what) {
  store_options o;
  o.ns = unique_ns(what);
  o.name = "s";
  o.initial_segment_bytes = std::uint64_t{1} << 20;
  o.max_key_bytes = 256;
  o.max_value_bytes = std::uint64_t{1} << 30;
  o.max_readers = 16;
  return o;
}

}  // namespace slither::shm::testing
