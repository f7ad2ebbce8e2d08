// A python stage's batching on a local_pool: Dispatch's strategies (fixed,
// weighted, key partition) as the handler sees them, items whose weight or
// key cannot be had failing under the stage's policy, and the validation of
// the batching options.
#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "local_pool_fixture.hpp"
#include "pipe_items.hpp"
#include "slither/core/local_pool.hpp"
#include "slither/core/pipe.hpp"

namespace slither {
namespace {

using testing::as_int;
using testing::numbered;

// The weight of an item: its value mod 10, so 0 to 9.
double weight_of(const Item& item) {
  return static_cast<double>(as_int(item) % 10);
}

std::string key_of(const Item& item) {
  return std::to_string(as_int(item) % 3);
}

class PipeBatching : public testing::local_pool_test {
 protected:
  void SetUp() override {
    start_pool();
    // Each item comes back as the list of the values its batch held.
    pool_->add_function("model:batch_of", [](std::span<const Item> items, const batch_context&) {
      List batch;
      for (const auto& i : items) batch.emplace_back(as_int(i));
      std::vector<result<Value>> out;
      for (std::size_t k = 0; k < items.size(); ++k) out.emplace_back(Value(batch));
      return out;
    });
    start_runner();
  }

  // The batches the handler saw, each once, from the items' results.
  static std::set<std::vector<std::int64_t>> batches(const pipe_run& r) {
    std::set<std::vector<std::int64_t>> out;
    for (const Item& i : r.outputs.at("default")) {
      std::vector<std::int64_t> b;
      for (const auto& v : i.payload.as<List>()) b.push_back(v.as<std::int64_t>());
      out.insert(b);
    }
    return out;
  }
};

TEST_F(PipeBatching, FixedBatchesHoldBatchSizeItemsInInputOrder) {
  Pipe p("fixed");
  p.python("model", {.module = "model", .function = "batch_of", .batch_size = 8});
  auto r = run(p, numbered(64), opts()).value();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.outputs["default"].size(), 64u);
  for (const auto& b : batches(r)) {
    EXPECT_EQ(b.size(), 8u);
    EXPECT_EQ(b.back() - b.front(), 7);
  }
}

TEST_F(PipeBatching, WeightedBatchesStayWithinTheirBudget) {
  Pipe p("weighted");
  p.python("model", {.module = "model",
                     .function = "batch_of",
                     .batch_size = 6,
                     .max_in_flight = 2,
                     .weight_fn = weight_of,
                     .max_weight = 12});
  auto r = run(p, numbered(500), opts()).value();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.outputs["default"].size(), 500u);
  std::size_t seen = 0;
  std::set<std::size_t> sizes;
  for (const auto& b : batches(r)) {
    double weight = 0;
    for (auto v : b) weight += static_cast<double>(v % 10);
    EXPECT_TRUE(weight <= 12 || b.size() == 1) << "a batch of weight " << weight;
    EXPECT_LE(b.size(), 6u);
    for (std::size_t k = 1; k < b.size(); ++k) EXPECT_EQ(b[k], b[k - 1] + 1);  // input order
    sizes.insert(b.size());
    seen += b.size();
  }
  EXPECT_EQ(seen, 500u);
  EXPECT_GT(sizes.size(), 1u);  // the weights, not a count, closed them
}

TEST_F(PipeBatching, KeyPartitionPutsOneKeyInEachBatch) {
  Pipe p("keyed");
  p.native("same", [](Item& item, Context&) -> step { return as_int(item); })
      .python("model", {.module = "model",
                        .function = "batch_of",
                        .batch_size = 5,
                        .max_in_flight = 4,
                        .key_fn = key_of});
  auto r = run(p, numbered(300), opts()).value();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.outputs["default"].size(), 300u);
  std::size_t seen = 0;
  std::size_t full = 0;
  for (const auto& b : batches(r)) {
    for (auto v : b) EXPECT_EQ(v % 3, b.front() % 3) << "a batch mixes keys";
    for (std::size_t k = 1; k < b.size(); ++k) EXPECT_LT(b[k - 1], b[k]);
    EXPECT_LE(b.size(), 5u);
    full += b.size() == 5 ? 1 : 0;
    seen += b.size();
  }
  EXPECT_EQ(seen, 300u);
  EXPECT_GT(full, 0u);
}

TEST_F(PipeBatching, AnItemWithoutAWeightOrKeyFailsUnderTheStagePolicy) {
  Pipe p("bad_weight");
  p.python("model", {.module = "model",
                     .function = "batch_of",
                     .batch_size = 4,
                     .weight_fn =
                         [](const Item& item) {
                           if (as_int(item) == 7) throw std::runtime_error("no weight for 7");
                           return as_int(item) == 9 ? -1.0 : 1.0;
                         },
                     .max_weight = 3})
      .on_error("model", on_error::retry(3, {}, skip_policy{}));
  auto r = run(p, numbered(20), opts()).value();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.outputs["default"].size(), 18u);
  ASSERT_EQ(r.failures.size(), 2u);
  std::set<std::uint64_t> failed;
  for (const auto& f : r.failures) {
    failed.insert(f.item);
    EXPECT_EQ(f.stage, "model");
    EXPECT_EQ(f.cause.attempt, 1u);
  }
  EXPECT_EQ(failed, (std::set<std::uint64_t>{7, 9}));
  EXPECT_NE(r.failures[0].cause.message.find("no weight for 7"), std::string::npos)
      << r.failures[0].cause.message;

  Pipe halted("bad_key");
  halted.python(
      "model",
      {.module = "model", .function = "batch_of", .key_fn = [](const Item& item) -> std::string {
         if (as_int(item) == 3) throw std::runtime_error("no key");
         return "k";
       }});
  r = run(halted, numbered(10), opts()).value();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->stage, "model");
  EXPECT_EQ(r.error->item, 3u);
}

TEST_F(PipeBatching, NativeStagesNextToAPythonStageRunOnItsThread) {
  auto mark = [](std::string stage) {
    return [stage](Item& item, Context&) -> step {
      std::ostringstream id;
      id << std::this_thread::get_id();
      item.meta.insert_or_assign(stage, id.str());
      return step::keep();
    };
  };
  Pipe p("around");
  p.native("before", mark("before"))
      .python("model", {.module = "model", .function = "batch_of", .batch_size = 4})
      .native("after", mark("after"));
  auto r = run(p, numbered(100), opts()).value();
  ASSERT_EQ(r.outputs["default"].size(), 100u);
  for (const Item& i : r.outputs["default"]) EXPECT_EQ(i.meta.at("before"), i.meta.at("after"));
  auto o = opts();
  o.fuse_stages = false;
  r = run(p, numbered(100), o).value();
  ASSERT_EQ(r.outputs["default"].size(), 100u);
  for (const Item& i : r.outputs["default"]) EXPECT_NE(i.meta.at("before"), i.meta.at("after"));
}

TEST_F(PipeBatching, ValidationNamesTheBadBatchingOption) {
  auto error_of = [](python_options o) {
    o.module = "model";
    o.function = "batch_of";
    auto v = Pipe("p").python("s", std::move(o)).validate();
    return v ? std::string() : v.error().message;
  };
  EXPECT_EQ(error_of({.weight_fn = weight_of, .max_weight = 10, .key_fn = key_of}),
            "pipe 'p': stage 's': give a weight_fn or a key_fn, not both");
  EXPECT_EQ(error_of({.max_weight = 10}), "pipe 'p': stage 's': max_weight needs a weight_fn");
  EXPECT_NE(error_of({.weight_fn = weight_of}).find("'max_weight'"), std::string::npos);
  EXPECT_NE(error_of({.batch_size = 1u << 30, .key_fn = key_of}).find("'max_items'"),
            std::string::npos);
  EXPECT_EQ(error_of({.weight_fn = weight_of, .max_weight = 10}), "");
  EXPECT_EQ(error_of({.key_fn = key_of}), "");
}

}  // namespace
}  // namespace slither
