// Shared-memory objects of a store: their names, creation, and removal.
#pragma once

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "slither/core/error.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::detail {

namespace bip = boost::interprocess;

inline constexpr std::uint64_t page_bytes = 4096;

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) noexcept {
  return (v + a - 1) / a * a;
}

/// True for 1-64 characters of [A-Za-z0-9_-]: a namespace or store name.
bool valid_name(std::string_view s) noexcept;

/// A Boost.Interprocess failure as text, with its errno.
std::string os_error(const bip::interprocess_exception& e);

/// Creates and maps a shared-memory object of `bytes` bytes, owner-only,
/// with its pages reserved so later stores into it cannot fault for lack of space.
result<bip::mapped_region> create_segment(const std::string& name, std::uint64_t bytes);

/// Refuses a store name held by a live writer; removes the objects of a dead one.
result<void> clear_stale(const store_options& o);

/// Unlinks every object a store of this name may have: segments and registry.
void remove_store_objects(std::string_view ns, std::string_view name) noexcept;

}  // namespace slither::shm::detail
