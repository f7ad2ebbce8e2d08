// Batching strategies: how Dispatch groups a stream of items into batches.
//
// The strategies are those of the original: fixed size, weighted (a weight
// budget per batch) and key partition (every batch holds one key's items),
// plus `preformed_batch` for producers that batch on their side (a Python
// client whose `key_fn` is a Python callable). A `batcher` applies one
// strategy to a stream: items go in one at a time, completed batches come
// out, so an endless input never has to be held whole. `make_batches` does
// the same for a whole input at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "slither/core/error.hpp"
#include "slither/core/export.hpp"
#include "slither/core/item.hpp"

namespace slither {

/// Batches of `batch_size` items, in input order; the last one may be shorter.
struct SLITHER_CORE_EXPORT fixed_batch {
  std::size_t batch_size = 64;
};

/// Batches in input order whose items' weights add up to at most
/// `max_weight` (token counts, byte sizes). A batch closes as soon as it
/// reaches `max_weight` or `max_items`; an item heavier than `max_weight`
/// travels alone. Weights must be finite and not negative.
struct SLITHER_CORE_EXPORT weighted_batch {
  double max_weight = 1000;
  /// The weight of one item. Required.
  std::function<double(const Item&)> weight_fn;
  /// Most items per batch, whatever their weights (zero-weight items).
  std::size_t max_items = 1024;
};

/// Batches that each hold the items of one key, in input order. A key's
/// group closes when it reaches `max_items`, when the input ends, or when
/// the memory bound forces the largest open group out (see `batcher`); so
/// all items of a key share one batch when they number at most `max_items`
/// and fit the window, and otherwise span several batches in order.
struct SLITHER_CORE_EXPORT key_partition {
  /// The partition key of one item. Required.
  std::function<std::string(const Item&)> key_fn;
  std::size_t max_items = 64;
};

/// Batches formed by the producer: each `batcher::push_batch` call is one
/// batch of 1 to `max_items` items, passed on unchanged.
struct SLITHER_CORE_EXPORT preformed_batch {
  std::size_t max_items = 1024;
  /// The producer also encodes its batches, and the job's consumer decodes
  /// the results: the job takes `opaque_batch`es (`dispatch_engine::
  /// offer_batch`) and gives `batch_output`s (`take_batches`), and the engine
  /// and executor pass the bytes on without reading them (a broker
  /// forwarding a Python client's batches to Python workers).
  bool encoded = false;
};

/// One of the batching strategies.
using batch_strategy = std::variant<fixed_batch, weighted_batch, key_partition, preformed_batch>;

/// Checks a strategy; the error names the bad option ("batching option
/// 'batch_size' must be at least 1 (got 0)"). A batch may hold at most
/// `decode_limits{}.max_batch_items` items, since it must decode again.
SLITHER_CORE_EXPORT result<void> validate(const batch_strategy& strategy);

/// The most items one batch of this strategy can hold.
SLITHER_CORE_EXPORT std::size_t max_batch_items(const batch_strategy& strategy) noexcept;

/// A completed batch and, for each item, its position in the input (the
/// count of items pushed before it), so results can be put back in order.
struct SLITHER_CORE_EXPORT formed_batch {
  std::vector<Item> items;
  std::vector<std::uint64_t> positions;
};

/// Applies a strategy to a stream of items.
///
/// `push` feeds one item and may complete batches, which `pop` hands out in
/// the order they completed. `flush` closes every open batch (the input
/// ended); `flush_largest` closes one when the caller cannot take more
/// input and must make progress with what it holds.
class SLITHER_CORE_EXPORT batcher {
 public:
  /// A batcher for `strategy`, or the error `validate` reports.
  static result<batcher> create(batch_strategy strategy);

  /// Feeds one item. On error (a `preformed_batch` batcher; `weight_fn` or
  /// `key_fn` threw or gave an unusable answer) the message names the item
  /// and `item` is left untouched; on success it is moved from.
  result<void> push(Item&& item);
  /// Feeds one whole batch (`preformed_batch` only): 1 to `max_items` items.
  /// On error `items` is left untouched.
  result<void> push_batch(std::vector<Item>&& items);
  /// Closes every open batch, oldest first.
  void flush();
  /// Closes the open batch holding the most items (the oldest among equals).
  /// Returns false if none is open.
  bool flush_largest();
  /// The next completed batch, if any.
  std::optional<formed_batch> pop();

  /// Items in batches still open.
  std::size_t open_items() const noexcept { return open_items_; }
  /// Items in completed batches not yet popped.
  std::size_t ready_items() const noexcept { return ready_items_; }
  /// Items pushed so far (the next item's position).
  std::uint64_t pushed() const noexcept { return pushed_; }
  /// The strategy this batcher applies.
  const batch_strategy& strategy() const noexcept { return strategy_; }

 private:
  struct group {
    std::string key;
    formed_batch batch;
    double weight = 0;
  };

  explicit batcher(batch_strategy strategy);
  void add(group& g, Item&& item, double weight);
  void close(group& g);
  void close_key(std::list<group>::iterator it);

  batch_strategy strategy_;
  std::size_t max_items_;
  group current_;            // fixed and weighted: the one open batch
  std::list<group> groups_;  // key partition: open groups, oldest first
  std::unordered_map<std::string, std::list<group>::iterator> by_key_;
  std::deque<formed_batch> ready_;
  std::size_t open_items_ = 0;
  std::size_t ready_items_ = 0;
  std::uint64_t pushed_ = 0;
};

/// Splits a whole input into batches with `strategy` (every batch closed at
/// the end). `preformed_batch` is refused: its batches are already made.
SLITHER_CORE_EXPORT result<std::vector<std::vector<Item>>> make_batches(
    std::vector<Item> items, const batch_strategy& strategy);

}  // namespace slither
