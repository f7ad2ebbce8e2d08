#include "slither/core/batching.hpp"

#include <algorithm>
#include <cmath>
#include <exception>
#include <string_view>
#include <utility>

#include "slither/core/codec.hpp"

namespace slither {
namespace {

error_info bad_batching_option(std::string_view name, std::string_view why) {
  return fail(errc::invalid_argument,
              "batching option '" + std::string(name) + "' " + std::string(why));
}

result<void> check_count(std::string_view name, std::size_t n) {
  const std::size_t limit = decode_limits{}.max_batch_items;
  if (n == 0) return bad_batching_option(name, "must be at least 1 (got 0)");
  if (n > limit) {
    return bad_batching_option(name, "is " + std::to_string(n) + "; a batch holds at most " +
                                         std::to_string(limit) + " items");
  }
  return {};
}

std::string describe_exception(std::exception_ptr e) {
  try {
    std::rethrow_exception(std::move(e));
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

}  // namespace

result<void> validate(const batch_strategy& strategy) {
  return std::visit(
      [](const auto& s) -> result<void> {
        using T = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<T, fixed_batch>) {
          return check_count("batch_size", s.batch_size);
        } else if constexpr (std::is_same_v<T, weighted_batch>) {
          if (!std::isfinite(s.max_weight) || s.max_weight <= 0) {
            return bad_batching_option("max_weight", "must be a finite number above 0 (got " +
                                                         std::to_string(s.max_weight) + ")");
          }
          if (!s.weight_fn)
            return bad_batching_option("weight_fn", "is required by weighted batching");
          return check_count("max_items", s.max_items);
        } else if constexpr (std::is_same_v<T, key_partition>) {
          if (!s.key_fn) return bad_batching_option("key_fn", "is required by key partitioning");
          return check_count("max_items", s.max_items);
        } else {
          return check_count("max_items", s.max_items);
        }
      },
      strategy);
}

std::size_t max_batch_items(const batch_strategy& strategy) noexcept {
  return std::visit(
      [](const auto& s) -> std::size_t {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, fixed_batch>) {
          return s.batch_size;
        } else {
          return s.max_items;
        }
      },
      strategy);
}

batcher::batcher(batch_strategy strategy)
    : strategy_(std::move(strategy)), max_items_(max_batch_items(strategy_)) {}

result<batcher> batcher::create(batch_strategy strategy) {
  SLITHER_TRY(validate(strategy));
  return batcher(std::move(strategy));
}

void batcher::add(group& g, Item&& item, double weight) {
  // A fixed batch's size is known: grow its vectors once, not seven times.
  if (g.batch.items.empty() && std::holds_alternative<fixed_batch>(strategy_)) {
    g.batch.items.reserve(std::min<std::size_t>(max_items_, 4096));
    g.batch.positions.reserve(std::min<std::size_t>(max_items_, 4096));
  }
  g.batch.items.push_back(std::move(item));
  g.batch.positions.push_back(pushed_++);
  g.weight += weight;
  ++open_items_;
}

void batcher::close(group& g) {
  const std::size_t n = g.batch.items.size();
  if (n == 0) return;
  open_items_ -= n;
  ready_items_ += n;
  ready_.push_back(std::move(g.batch));
  g.batch = {};
  g.weight = 0;
}

void batcher::close_key(std::list<group>::iterator it) {
  close(*it);
  by_key_.erase(it->key);
  groups_.erase(it);
}

result<void> batcher::push(Item&& item) {
  if (std::holds_alternative<fixed_batch>(strategy_)) {
    add(current_, std::move(item), 0);
    if (current_.batch.items.size() >= max_items_) close(current_);
    return {};
  }
  if (const auto* w = std::get_if<weighted_batch>(&strategy_)) {
    double weight = 0;
    try {
      weight = w->weight_fn(item);
    } catch (...) {
      return fail(errc::invalid_argument, "weight_fn threw for item " + std::to_string(item.id) +
                                              ": " + describe_exception(std::current_exception()));
    }
    if (!std::isfinite(weight) || weight < 0) {
      return fail(errc::invalid_argument, "weight_fn gave " + std::to_string(weight) +
                                              " for item " + std::to_string(item.id) +
                                              "; weights must be finite and not negative");
    }
    // The open batch closes before an item that would overflow it, so an
    // item heavier than max_weight starts (and, below, ends) its own batch.
    if (!current_.batch.items.empty() && current_.weight + weight > w->max_weight) {
      close(current_);
    }
    add(current_, std::move(item), weight);
    if (current_.weight >= w->max_weight || current_.batch.items.size() >= max_items_) {
      close(current_);
    }
    return {};
  }
  if (const auto* k = std::get_if<key_partition>(&strategy_)) {
    std::string key;
    try {
      key = k->key_fn(item);
    } catch (...) {
      return fail(errc::invalid_argument, "key_fn threw for item " + std::to_string(item.id) +
                                              ": " + describe_exception(std::current_exception()));
    }
    auto found = by_key_.find(key);
    if (found == by_key_.end()) {
      groups_.push_back(group{.key = key, .batch = {}, .weight = 0});
      found = by_key_.emplace(std::move(key), std::prev(groups_.end())).first;
    }
    const auto it = found->second;
    add(*it, std::move(item), 0);
    if (it->batch.items.size() >= max_items_) close_key(it);
    return {};
  }
  return fail(errc::invalid_argument, "item " + std::to_string(item.id) +
                                          " pushed alone to a preformed-batch batcher; "
                                          "use push_batch");
}

result<void> batcher::push_batch(std::vector<Item>&& items) {
  if (!std::holds_alternative<preformed_batch>(strategy_)) {
    return fail(errc::invalid_argument,
                "push_batch needs a preformed_batch strategy; this batcher forms its own");
  }
  if (items.empty()) return fail(errc::invalid_argument, "a preformed batch holds no items");
  if (items.size() > max_items_) {
    return fail(errc::limit_exceeded, "a preformed batch of " + std::to_string(items.size()) +
                                          " items is over max_items " + std::to_string(max_items_));
  }
  for (auto& item : items) add(current_, std::move(item), 0);
  items.clear();
  close(current_);
  return {};
}

void batcher::flush() {
  close(current_);
  while (!groups_.empty()) close_key(groups_.begin());
}

bool batcher::flush_largest() {
  if (!current_.batch.items.empty()) {
    close(current_);
    return true;
  }
  auto largest = groups_.end();
  for (auto it = groups_.begin(); it != groups_.end(); ++it) {
    if (largest == groups_.end() || it->batch.items.size() > largest->batch.items.size()) {
      largest = it;
    }
  }
  if (largest == groups_.end()) return false;
  close_key(largest);
  return true;
}

std::optional<formed_batch> batcher::pop() {
  if (ready_.empty()) return std::nullopt;
  formed_batch b = std::move(ready_.front());
  ready_.pop_front();
  ready_items_ -= b.items.size();
  return b;
}

result<std::vector<std::vector<Item>>> make_batches(std::vector<Item> items,
                                                    const batch_strategy& strategy) {
  if (std::holds_alternative<preformed_batch>(strategy)) {
    return fail(errc::invalid_argument, "make_batches: preformed batches are already made");
  }
  SLITHER_TRY_ASSIGN(batcher b, batcher::create(strategy));
  for (auto& item : items) SLITHER_TRY(b.push(std::move(item)));
  b.flush();
  std::vector<std::vector<Item>> out;
  while (auto batch = b.pop()) out.push_back(std::move(batch->items));
  return out;
}

}  // namespace slither
