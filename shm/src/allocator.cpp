#include "allocator.hpp"

#include <algorithm>
#include <bit>
#include <new>

#include "slither/shm/store.hpp"

namespace slither::shm::detail {

namespace {
constexpr std::uint64_t min_segment_bytes = std::uint64_t{64} << 10;
}  // namespace

void allocator::init(std::string ns, std::string name, std::string label, std::uint64_t incarnation,
                     std::uint64_t initial_segment_bytes) {
  ns_ = std::move(ns);
  name_ = std::move(name);
  label_ = std::move(label);
  incarnation_ = incarnation;
  initial_segment_bytes_ = initial_segment_bytes;
}

result<void> allocator::add_segment(std::uint64_t payload_bytes) {
  const auto n = static_cast<std::uint32_t>(segments_.size());
  if (n >= max_segments) {
    return fail(errc::no_space, "store '" + label_ + "' has reached its limit of " +
                                    std::to_string(max_segments) + " segments");
  }
  std::uint64_t bytes;
  if (n == 0) {
    bytes =
        std::max({initial_segment_bytes_, min_segment_bytes, segment0_data_start + payload_bytes});
  } else {
    bytes = std::max(segments_.back().bytes * 2, segment_data_start + payload_bytes);
  }
  bytes = align_up(bytes, page_bytes);
  std::string name = segment_name(ns_, name_, n);
  auto obj = create_object(name, bytes);
  if (!obj) return std::move(obj).error();
  created_.push_back(std::move(name));
  std::byte* base = obj->map.data();
  new (base) segment_header{store_magic, layout_version, incarnation_, n, bytes, {}};
  segments_.push_back(
      {std::move(obj->map), base, bytes, n == 0 ? segment0_data_start : segment_data_start});
  if (header_ != nullptr) {
    header_->segment_bytes[n].store(bytes, std::memory_order_release);
    header_->segment_count.store(n + 1, std::memory_order_release);
  }
  return {};
}

}  // namespace slither::shm::detail
