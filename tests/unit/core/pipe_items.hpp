// Items for the pipe tests: integer payloads numbered from 0, read back as
// integers, and the simplest native stage.
#pragma once

#include <cstdint>
#include <vector>

#include "slither/core/item.hpp"
#include "slither/core/pipe.hpp"

namespace slither::testing {

/// Items 0 .. n-1, each its own id and payload.
inline std::vector<Item> numbered(std::int64_t n) {
  std::vector<Item> out;
  for (std::int64_t i = 0; i < n; ++i) out.push_back(wrap(Value(i), static_cast<std::uint64_t>(i)));
  return out;
}

/// An item's integer payload.
inline std::int64_t as_int(const Item& item) {
  return item.payload.as<std::int64_t>();
}

/// A native stage: the payload plus one.
inline step plus_one(Item& item, Context&) {
  return as_int(item) + 1;
}

}  // namespace slither::testing
