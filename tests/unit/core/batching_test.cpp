#include "slither/core/batching.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace slither {
namespace {

std::vector<Item> numbered(int n, int first = 0) {
  std::vector<Value> payloads;
  for (int i = 0; i < n; ++i) payloads.emplace_back(first + i);
  return wrap_many(std::move(payloads), static_cast<std::uint64_t>(first));
}

// The ids of each batch, to compare shapes at a glance.
std::vector<std::vector<std::uint64_t>> ids(const std::vector<std::vector<Item>>& batches) {
  std::vector<std::vector<std::uint64_t>> out;
  for (const auto& b : batches) {
    out.emplace_back();
    for (const auto& item : b) out.back().push_back(item.id);
  }
  return out;
}

using shape = std::vector<std::vector<std::uint64_t>>;

TEST(FixedBatch, SplitsInInputOrderWithAShortLastBatch) {
  auto batches = make_batches(numbered(7), fixed_batch{3}).value();
  EXPECT_EQ(ids(batches), (shape{{0, 1, 2}, {3, 4, 5}, {6}}));
}

TEST(FixedBatch, ExactMultipleLeavesNoEmptyBatch) {
  auto batches = make_batches(numbered(6), fixed_batch{3}).value();
  EXPECT_EQ(ids(batches), (shape{{0, 1, 2}, {3, 4, 5}}));
}

TEST(FixedBatch, BatchSizeOneAndEmptyInput) {
  EXPECT_EQ(ids(make_batches(numbered(3), fixed_batch{1}).value()), (shape{{0}, {1}, {2}}));
  EXPECT_TRUE(make_batches({}, fixed_batch{4}).value().empty());
}

TEST(FixedBatch, BatcherHandsOutFullBatchesAsTheyFillAndPositions) {
  auto b = batcher::create(fixed_batch{2}).value();
  auto items = numbered(3, 10);
  ASSERT_TRUE(b.push(std::move(items[0])));
  EXPECT_FALSE(b.pop());
  EXPECT_EQ(b.open_items(), 1u);
  ASSERT_TRUE(b.push(std::move(items[1])));
  EXPECT_EQ(b.ready_items(), 2u);
  auto first = b.pop();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->positions, (std::vector<std::uint64_t>{0, 1}));
  ASSERT_TRUE(b.push(std::move(items[2])));
  EXPECT_FALSE(b.pop());
  b.flush();
  auto last = b.pop();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->items[0].id, 12u);
  EXPECT_EQ(last->positions, (std::vector<std::uint64_t>{2}));
  EXPECT_EQ(b.pushed(), 3u);
  EXPECT_EQ(b.open_items() + b.ready_items(), 0u);
}

weighted_batch by_payload(double max_weight, std::size_t max_items = 1024) {
  return weighted_batch{max_weight, [](const Item& i) { return i.payload.as<double>(); },
                        max_items};
}

std::vector<Item> weighted_items(std::vector<double> weights) {
  std::vector<Value> payloads;
  for (double w : weights) payloads.emplace_back(w);
  return wrap_many(std::move(payloads));
}

TEST(WeightedBatch, ClosesBeforeAnItemThatWouldOverflow) {
  auto batches = make_batches(weighted_items({3, 4, 2, 5, 1}), by_payload(7)).value();
  // 3+4 = 7 reaches the budget; 2+5 = 7 again; 1 alone at the end.
  EXPECT_EQ(ids(batches), (shape{{0, 1}, {2, 3}, {4}}));
}

TEST(WeightedBatch, ItemHeavierThanMaxWeightTravelsAlone) {
  auto batches = make_batches(weighted_items({1, 50, 1, 1}), by_payload(10)).value();
  EXPECT_EQ(ids(batches), (shape{{0}, {1}, {2, 3}}));
}

TEST(WeightedBatch, ZeroWeightsAreCappedByMaxItems) {
  auto batches = make_batches(weighted_items({0, 0, 0, 0, 0}), by_payload(10, 2)).value();
  EXPECT_EQ(ids(batches), (shape{{0, 1}, {2, 3}, {4}}));
}

TEST(WeightedBatch, BadWeightsAreRefusedNamingTheItemAndLeaveItUntouched) {
  for (double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    auto b = batcher::create(by_payload(10)).value();
    Item item = wrap(Value(bad), 42);
    auto r = b.push(std::move(item));
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find("item 42"), std::string::npos) << r.error().message;
    EXPECT_EQ(b.pushed(), 0u);
    EXPECT_TRUE(item.payload.is_float()) << "a refused item must not be moved from";
  }
}

TEST(WeightedBatch, ThrowingWeightFnBecomesAnError) {
  const auto throwing = [](const Item&) -> double { throw std::runtime_error("no weight here"); };
  auto b = batcher::create(weighted_batch{10, throwing, 1024}).value();
  Item item = wrap(Value("x"), 7);
  auto r = b.push(std::move(item));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("weight_fn threw for item 7: no weight here"), std::string::npos)
      << r.error().message;
}

key_partition by_key(std::size_t max_items = 64) {
  return key_partition{[](const Item& i) { return i.payload["k"].as<std::string>(); }, max_items};
}

std::vector<Item> keyed(const std::vector<std::string>& keys) {
  std::vector<Value> payloads;
  for (const auto& k : keys) payloads.push_back(Value::map({{"k", k}}));
  return wrap_many(std::move(payloads));
}

TEST(KeyPartition, SameKeySameBatchInFirstArrivalOrder) {
  auto batches = make_batches(keyed({"b", "a", "b", "c", "a", "b"}), by_key()).value();
  EXPECT_EQ(ids(batches), (shape{{0, 2, 5}, {1, 4}, {3}}));
}

TEST(KeyPartition, GroupClosesAtMaxItemsAndTheKeyStartsAgain) {
  auto batches = make_batches(keyed({"a", "a", "b", "a", "a"}), by_key(2)).value();
  EXPECT_EQ(ids(batches), (shape{{0, 1}, {3, 4}, {2}}));
}

TEST(KeyPartition, FlushLargestClosesTheBiggestOpenGroupOldestFirstOnTies) {
  auto b = batcher::create(by_key()).value();
  for (auto& item : keyed({"a", "b", "b", "c", "c"})) ASSERT_TRUE(b.push(std::move(item)));
  ASSERT_TRUE(b.flush_largest());
  auto first = b.pop();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->positions, (std::vector<std::uint64_t>{1, 2}));  // "b", older than "c"
  EXPECT_EQ(b.open_items(), 3u);
  ASSERT_TRUE(b.flush_largest());
  EXPECT_EQ(b.pop()->positions, (std::vector<std::uint64_t>{3, 4}));
  ASSERT_TRUE(b.flush_largest());
  EXPECT_EQ(b.pop()->positions, (std::vector<std::uint64_t>{0}));
  EXPECT_FALSE(b.flush_largest());
}

TEST(KeyPartition, ThrowingKeyFnNamesTheItem) {
  auto b = batcher::create(by_key()).value();
  Item item = wrap(Value(5), 9);  // not a map: operator[] throws
  auto r = b.push(std::move(item));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("key_fn threw for item 9"), std::string::npos)
      << r.error().message;
}

TEST(PreformedBatch, EachPushIsOneBatchAndSizesAreChecked) {
  auto b = batcher::create(preformed_batch{3}).value();
  ASSERT_TRUE(b.push_batch(numbered(2)));
  auto too_big = numbered(4);
  auto r = b.push_batch(std::move(too_big));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_EQ(too_big.size(), 4u) << "a refused batch must be left untouched";
  EXPECT_FALSE(b.push_batch({}));
  Item single = wrap(Value(1), 1);
  EXPECT_FALSE(b.push(std::move(single)));
  auto first = b.pop();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->items.size(), 2u);
  EXPECT_FALSE(make_batches(numbered(2), preformed_batch{}));
}

TEST(BatchingValidation, ErrorsNameTheBadOption) {
  const auto message = [](const batch_strategy& s) { return validate(s).error().message; };
  EXPECT_NE(message(fixed_batch{0}).find("'batch_size' must be at least 1 (got 0)"),
            std::string::npos);
  EXPECT_NE(message(fixed_batch{std::size_t{1} << 21}).find("'batch_size'"), std::string::npos);
  EXPECT_NE(message(weighted_batch{0, [](const Item&) { return 1.0; }, 1024}).find("'max_weight'"),
            std::string::npos);
  EXPECT_NE(message(weighted_batch{std::nan(""), [](const Item&) { return 1.0; }, 1024})
                .find("'max_weight'"),
            std::string::npos);
  EXPECT_NE(message(weighted_batch{10, {}, 1024}).find("'weight_fn' is required"),
            std::string::npos);
  EXPECT_NE(message(weighted_batch{10, [](const Item&) { return 1.0; }, 0}).find("'max_items'"),
            std::string::npos);
  EXPECT_NE(message(key_partition{}).find("'key_fn' is required"), std::string::npos);
  EXPECT_NE(message(preformed_batch{0}).find("'max_items'"), std::string::npos);
  EXPECT_FALSE(batcher::create(fixed_batch{0}));
  EXPECT_TRUE(validate(fixed_batch{1}));
}

}  // namespace
}  // namespace slither
