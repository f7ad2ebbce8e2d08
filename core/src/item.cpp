#include "slither/core/item.hpp"

namespace slither {

Item wrap(Value payload, std::uint64_t id) {
  Item item;
  item.id = id;
  item.payload = std::move(payload);
  return item;
}

std::vector<Item> wrap_many(std::vector<Value> payloads, std::uint64_t first_id) {
  std::vector<Item> items;
  items.reserve(payloads.size());
  for (auto& p : payloads) items.push_back(wrap(std::move(p), first_id++));
  return items;
}

}  // namespace slither
