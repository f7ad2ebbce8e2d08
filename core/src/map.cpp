// Map: an insertion-ordered flat map with a hash index for larger maps.
#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <limits>

#include "slither/core/value.hpp"

namespace slither {
namespace {

// The index only lives inside one process, so std::hash is fine here (the
// store's shared-memory index uses its own stable hash).
std::size_t hash_of(std::string_view key) noexcept {
  return std::hash<std::string_view>{}(key);
}

}  // namespace

Map::Map(const Map& other) : entries_(other.entries_) {
  rebuild_index();
}

Map& Map::operator=(const Map& other) {
  if (this != &other) {
    entries_ = other.entries_;
    rebuild_index();
  }
  return *this;
}

Map::Map(std::initializer_list<value_type> entries) {
  reserve(entries.size());
  for (const auto& [k, v] : entries) try_emplace(k, v);
}

void Map::reserve(size_type n) {
  entries_.reserve(n);
}

void Map::clear() noexcept {
  entries_.clear();
  index_.reset();
}

Map::size_type Map::indexed_position(std::string_view key) const noexcept {
  const size_type mask = index_[0] - 1;
  const std::uint32_t* slots = index_.get() + 1;
  for (size_type slot = hash_of(key) & mask;; slot = (slot + 1) & mask) {
    const std::uint32_t at = slots[slot];
    if (at == 0) return npos;
    if (entries_[at - 1].first == key) return at - 1;
  }
}

void Map::index_appended() {
  const size_type n = entries_.size();
  if (!index_ || index_[0] < 2 * n) {
    rebuild_index();
    return;
  }
  const size_type mask = index_[0] - 1;
  std::uint32_t* slots = index_.get() + 1;
  size_type slot = hash_of(entries_.back().first) & mask;
  while (slots[slot] != 0) slot = (slot + 1) & mask;
  slots[slot] = static_cast<std::uint32_t>(n);
}

void Map::rebuild_index() {
  // Until the new index is complete, lookups scan: correct, if slower.
  index_.reset();
  const size_type n = entries_.size();
  if (n <= linear_limit) return;
  if (n > std::numeric_limits<std::uint32_t>::max() / 8) {
    throw error(errc::limit_exceeded, "a map of " + std::to_string(n) + " entries is too large");
  }
  const size_type capacity = std::bit_ceil(4 * n);
  auto index = std::make_unique<std::uint32_t[]>(capacity + 1);  // zero-filled
  index[0] = static_cast<std::uint32_t>(capacity);
  const size_type mask = capacity - 1;
  std::uint32_t* slots = index.get() + 1;
  for (size_type i = 0; i < n; ++i) {
    size_type slot = hash_of(entries_[i].first) & mask;
    while (slots[slot] != 0) slot = (slot + 1) & mask;
    slots[slot] = static_cast<std::uint32_t>(i + 1);
  }
  index_ = std::move(index);
}

Map::iterator Map::find(std::string_view key) noexcept {
  const size_type at = position(key);
  return at == npos ? entries_.end() : entries_.begin() + at;
}

Map::const_iterator Map::find(std::string_view key) const noexcept {
  const size_type at = position(key);
  return at == npos ? entries_.end() : entries_.begin() + at;
}

Value& Map::at(std::string_view key) {
  const size_type at = position(key);
  if (at == npos) throw error(errc::not_found, "no key '" + std::string(key) + "' in map");
  return entries_[at].second;
}

const Value& Map::at(std::string_view key) const {
  return const_cast<Map&>(*this).at(key);
}

Value& Map::operator[](std::string_view key) {
  return try_emplace(std::string(key)).first->second;
}

std::pair<Map::iterator, bool> Map::insert(value_type entry) {
  return try_emplace(std::move(entry.first), std::move(entry.second));
}

Map::size_type Map::erase(std::string_view key) {
  const size_type at = position(key);
  if (at == npos) return 0;
  erase(entries_.begin() + at);
  return 1;
}

Map::iterator Map::erase(const_iterator pos) {
  const auto at = pos - entries_.cbegin();
  entries_.erase(pos);
  rebuild_index();
  return entries_.begin() + at;
}

bool operator==(const Map& a, const Map& b) noexcept {
  if (a.size() != b.size()) return false;
  return std::all_of(a.begin(), a.end(), [&](const Map::value_type& e) {
    const auto it = b.find(e.first);
    return it != b.end() && it->second == e.second;
  });
}

}  // namespace slither
