// Dispatch through an embedded broker to spawned test workers: results,
// errors and policies, ordering, backpressure, the C++ item APIs.
#include <gtest/gtest.h>

#include <numeric>
#include <ranges>

#include "dispatch_fixture.hpp"

namespace slither {
namespace {

using namespace test_support;

TEST_F(DispatchTest, RunsItemsThroughSpawnedWorkersInOrder) {
  Broker& b = start(2);
  auto report = dispatch(b, numbered(100), job("double")).value();
  ASSERT_EQ(report.results.size(), 100u);
  for (std::size_t i = 0; i < 100; ++i) {
    const auto& r = report.results[i];
    ASSERT_TRUE(r.ok()) << (r.error ? r.error->describe() : "");
    EXPECT_EQ(r.item.id, i);
    EXPECT_EQ(r.item.payload.as<std::int64_t>(), static_cast<std::int64_t>(2 * i));
  }
  EXPECT_FALSE(report.error);
}

TEST_F(DispatchTest, ItemsKeepTheirMetaAndTheRemoteFormWorksToo) {
  start(1);
  auto items = numbered(10);
  items[3].meta = Map{{"tag", "x"}};
  auto report = dispatch(where(), std::move(items), job("double")).value();
  ASSERT_EQ(report.results.size(), 10u);
  EXPECT_EQ(report.results[3].item.meta.at("tag").as<std::string>(), "x");
  EXPECT_EQ(report.results[9].item.payload.as<std::int64_t>(), 18);
}

job_options bad_items(error_policy policy) {
  auto o = job("work", 4, 4);
  o.context.metadata = Map{{"bad_mod", 5}, {"bad_rem", 3}};
  o.on_error = std::move(policy);
  return o;
}

TEST_F(DispatchTest, ItemErrorsAreSkippedOrRoutedWithTheirErrors) {
  Broker& b = start(2);
  for (const bool route : {false, true}) {
    SCOPED_TRACE(route ? "route" : "skip");
    auto report =
        dispatch(b, numbered(40),
                 bad_items(route ? error_policy(route_policy{"bad"}) : error_policy(skip_policy{})))
            .value();
    ASSERT_EQ(report.results.size(), 40u);
    EXPECT_FALSE(report.error);
    for (const auto& r : report.results) {
      if (r.item.id % 5 == 3) {
        EXPECT_EQ(r.status, route ? item_status::routed : item_status::skipped);
        ASSERT_TRUE(r.error);
        EXPECT_EQ(r.error->kind, failure_kind::item_error);
        EXPECT_EQ(r.error->type, "ValueError");
        EXPECT_EQ(r.error->message, "bad item " + std::to_string(r.item.id));
        EXPECT_EQ(r.item.payload.as<std::int64_t>(), static_cast<std::int64_t>(r.item.id))
            << "a failed item keeps its input";
        EXPECT_EQ(r.item.route, route ? "bad" : "");
      } else {
        EXPECT_TRUE(r.ok());
        EXPECT_EQ(r.item.payload.as<std::int64_t>(), static_cast<std::int64_t>(2 * r.item.id));
      }
    }
  }
}

TEST_F(DispatchTest, HaltStopsAtTheFirstErrorAndCancelsTheRest) {
  Broker& b = start(1);
  auto o = bad_items(halt_policy{});
  o.max_in_flight = 1;
  auto report = dispatch(b, numbered(40), o).value();
  ASSERT_EQ(report.results.size(), 40u) << "every item ends, once";
  ASSERT_TRUE(report.error);
  EXPECT_EQ(report.error->type, "ValueError");
  EXPECT_EQ(report.results[3].status, item_status::failed);
  EXPECT_TRUE(report.results[2].ok());
  EXPECT_EQ(report.results.back().status, item_status::cancelled);
}

TEST_F(DispatchTest, AnExceptionACppHandlerThrowsFailsItsBatchNamingTheExceptionsType) {
  Broker& b = start(1);
  auto report = dispatch(b, numbered(4), job("throw")).value();
  ASSERT_TRUE(report.error);
  EXPECT_EQ(report.error->kind, failure_kind::exception);
  EXPECT_EQ(report.error->type, "std::out_of_range") << "the type demangled";
  EXPECT_EQ(report.error->message, "thrown on purpose");
}

TEST_F(DispatchTest, AMissingFunctionIsAClearErrorAndThePoolDoesNotSpin) {
  Broker& b = start(2);
  ASSERT_TRUE(wait_workers(2));
  auto report = dispatch(b, numbered(8), job("no_such_function")).value();
  ASSERT_TRUE(report.error);
  EXPECT_EQ(report.error->kind, failure_kind::exception);
  EXPECT_EQ(report.error->type, "LookupError");
  EXPECT_NE(report.error->message.find("no_such_function"), std::string::npos);
  EXPECT_NE(report.error->traceback.find("Traceback"), std::string::npos);
  const Value st = pool_stats();
  EXPECT_EQ(count(st, "worker_deaths"), 0);
  EXPECT_EQ(count(st, "spawned"), 2) << "no restarts: the workers are fine";
  // And the pool still serves.
  EXPECT_TRUE(dispatch(b, numbered(4), job("double")).value().results.at(3).ok());
}

TEST_F(DispatchTest, AWrongLengthIsABadResultOfItsBatch) {
  Broker& b = start(1);
  auto o = job("wrong_length", 4, 1);
  o.on_error = skip_policy{};
  auto report = dispatch(b, numbered(8), o).value();
  ASSERT_EQ(report.results.size(), 8u);
  for (const auto& r : report.results) {
    EXPECT_EQ(r.status, item_status::skipped);
    ASSERT_TRUE(r.error);
    EXPECT_EQ(r.error->kind, failure_kind::bad_result);
    EXPECT_NE(r.error->message.find("3 results for a batch of 4"), std::string::npos)
        << r.error->message;
    EXPECT_NE(r.error->batch, 0u) << "attributed to its batch";
  }
}

TEST_F(DispatchTest, ResultsThatDoNotDecodeFailTheirBatch) {
  Broker& b = start(1);
  auto report = dispatch(b, numbered(4), job("garbage")).value();
  ASSERT_EQ(report.results.size(), 4u);
  ASSERT_TRUE(report.error);
  EXPECT_EQ(report.error->kind, failure_kind::bad_result);
  EXPECT_EQ(report.results[0].status, item_status::failed);
}

TEST_F(DispatchTest, ABatchThatRaisesFollowsThePolicy) {
  Broker& b = start(2);
  auto o = job("raise", 2, 2);
  retry_policy r;
  r.max_attempts = 2;
  r.delay = backoff{0ms, 1.0, 0ms};
  r.then = skip_policy{};
  o.on_error = r;
  auto report = dispatch(b, numbered(4), o).value();
  ASSERT_EQ(report.results.size(), 4u);
  for (const auto& res : report.results) {
    EXPECT_EQ(res.status, item_status::skipped);
    EXPECT_EQ(res.error->type, "RuntimeError");
    EXPECT_EQ(res.error->attempt, 2u) << "retried once, then skipped";
  }
}

// Items whose value is their delay in ms (delay_mod): a slow batch first.
TEST_F(DispatchTest, PreserveKeepsInputOrderAndAsCompletedGivesFasterBatchesFirst) {
  Broker& b = start(2);
  ASSERT_TRUE(wait_workers(2));
  for (const auto ordering : {order_mode::preserve, order_mode::as_completed}) {
    auto o = job("work", 1, 2);
    o.ordering = ordering;
    o.context.metadata = Map{{"delay_mod", 10000}};
    std::vector<Item> items{wrap(Value(600), 0), wrap(Value(1), 1)};
    auto report = dispatch(b, std::move(items), o).value();
    ASSERT_EQ(report.results.size(), 2u);
    if (ordering == order_mode::preserve) {
      EXPECT_EQ(report.results[0].item.id, 0u);
    } else {
      EXPECT_EQ(report.results[0].item.id, 1u) << "the fast batch overtakes the slow one";
    }
  }
  // Many batches of random delays: preserve still gives input order.
  auto o = job("work", 1, 4);
  o.context.metadata = Map{{"delay_mod", 7}};
  std::vector<Item> items;
  for (std::uint64_t i = 0; i < 60; ++i) {
    items.push_back(wrap(Value(static_cast<std::int64_t>((i * 37) % 100)), i));
  }
  auto report = dispatch(b, std::move(items), o).value();
  for (std::size_t i = 0; i < report.results.size(); ++i) {
    EXPECT_EQ(report.results[i].item.id, i);
  }
}

// The input is endless; the consumer pauses: what is pulled never runs more
// than the job's window ahead of what was consumed.
TEST_F(DispatchTest, BackpressureBoundsWhatIsPulledWhateverTheConsumerDoes) {
  Broker& b = start(2);
  auto o = job("double", 4, 3);  // window: 12 items
  std::uint64_t produced = 0;
  auto stream = dispatch_stream(
                    b,
                    [&]() -> std::optional<Item> {
                      const auto i = produced++;
                      return wrap(Value(static_cast<std::int64_t>(i)), i);
                    },
                    o)
                    .value();
  std::uint64_t consumed = 0;
  for (int round = 0; round < 300; ++round) {
    auto r = stream.next();
    ASSERT_TRUE(r);
    ASSERT_TRUE(r->ok());
    EXPECT_EQ(r->item.id, consumed) << "in order";
    ++consumed;
    ASSERT_LE(stream.pulled(), consumed + 12) << "after " << consumed << " results";
    if (round == 100) {
      // A pause: the workers finish what they hold, and nothing more is pulled.
      std::this_thread::sleep_for(300ms);
      ASSERT_LE(stream.pulled(), consumed + 12);
    }
  }
  EXPECT_EQ(produced, stream.pulled());
  stream.cancel();
}

TEST_F(DispatchTest, ADispatchJobTakesNoMoreThanItsWindow) {
  Broker& b = start(1);
  auto o = job("echo", 4, 2);
  auto j = dispatch_job::open(b, o).value();
  EXPECT_EQ(j.window(), 8u);
  const auto bytes = batch_of(List{1, 2, 3, 4});
  ASSERT_TRUE(j.submit(bytes, 4));
  ASSERT_TRUE(j.submit(bytes, 4));
  EXPECT_EQ(j.capacity(), 0u);
  EXPECT_EQ(j.submit(bytes, 1).error().code, errc::busy);
  EXPECT_EQ(j.submit(bytes, 5).error().code, errc::invalid_argument);
  auto first = j.next(5000ms).value();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->count, 4u);
  EXPECT_TRUE(std::equal(first->payload.bytes.begin(), first->payload.bytes.end(), bytes.begin(),
                         bytes.end()))
      << "echoed byte for byte";
  EXPECT_EQ(j.capacity(), 4u) << "consuming frees room";
  ASSERT_TRUE(j.close_input());
  ASSERT_TRUE(j.next(5000ms).value());
  EXPECT_FALSE(j.next(5000ms).value());
  EXPECT_TRUE(j.finished());
  EXPECT_FALSE(j.error());
}

TEST_F(DispatchTest, CallBatchRunsOneBatch) {
  Broker& b = start(1);
  auto report = call_batch(b, numbered(7), job("pid")).value();
  ASSERT_EQ(report.results.size(), 7u);
  const auto pid = report.results[0].item.payload.as<std::int64_t>();
  for (const auto& r : report.results) EXPECT_EQ(r.item.payload.as<std::int64_t>(), pid);
}

static_assert(std::ranges::input_range<dispatch_results>);

TEST_F(DispatchTest, StreamsALazyRangeAndIteratesWithRangeFor) {
  Broker& b = start(2);
  auto endless = std::views::iota(std::uint64_t{0}) | std::views::transform([](std::uint64_t i) {
                   return wrap(Value(static_cast<std::int64_t>(i)), i);
                 });
  auto stream = dispatch_stream(b, endless, job("double", 8, 2)).value();
  std::uint64_t n = 0;
  for (auto& r : stream) {
    EXPECT_EQ(r.item.payload.as<std::int64_t>(), static_cast<std::int64_t>(2 * n));
    if (++n == 100) break;
  }
  EXPECT_LE(stream.pulled(), 100u + 16u);
}

TEST_F(DispatchTest, WeightedAndKeyBatchingFormBatchesOnTheCallersSide) {
  Broker& b = start(2);
  auto o = job("pid", 4, 4);
  o.batching = key_partition{[](const Item& i) { return std::to_string(i.id % 3); }, 4};
  auto report = dispatch(b, numbered(30), o).value();
  ASSERT_EQ(report.results.size(), 30u);
  for (const auto& r : report.results) EXPECT_TRUE(r.ok());
  o.batching = weighted_batch{10.0, [](const Item&) { return 3.0; }, 100};
  EXPECT_EQ(dispatch(b, numbered(30), o).value().results.size(), 30u);
  o.batching = preformed_batch{};
  EXPECT_FALSE(dispatch(b, numbered(3), o));
}

TEST_F(DispatchTest, OpeningNamesABadPoolOrOption) {
  start(options({pool(1, "a"), pool(1, "b")}));
  auto o = job("double");
  auto no_pool = dispatch_job::open(*broker_, o);
  ASSERT_FALSE(no_pool);
  EXPECT_NE(no_pool.error().message.find("name a pool"), std::string::npos);
  o.pool = "c";
  auto unknown = dispatch_job::open(*broker_, o);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, errc::not_found);
  EXPECT_NE(unknown.error().message.find("pools: a, b"), std::string::npos);
  o.pool = "b";
  o.max_in_flight = 0;
  auto bad = dispatch_job::open(*broker_, o);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("max_in_flight"), std::string::npos);
  o.max_in_flight = 2;
  EXPECT_TRUE(dispatch(*broker_, numbered(3), o));
}

TEST_F(DispatchTest, StatsShowWorkersJobsAndCounters) {
  Broker& b = start(2);
  ASSERT_TRUE(wait_workers(2));
  auto j = dispatch_job::open(b, job("sleep", 1, 2)).value();
  ASSERT_TRUE(j.submit(batch_of(List{1}), 1));
  ASSERT_TRUE(eventually([&] { return count(pool_stats(), "batches_sent") == 1; }));
  const Value st = pool_stats();
  ASSERT_EQ(st.find("workers")->as<List>().size(), 2u);
  const Value& w = st.find("workers")->as<List>()[0];
  EXPECT_GE(count(w, "credits"), 1);
  EXPECT_GT(count(w, "pid"), 0);
  ASSERT_EQ(st.find("jobs")->as<List>().size(), 1u);
  EXPECT_EQ(count(st.find("jobs")->as<List>()[0], "in_flight"), 1);
  EXPECT_EQ(count(st, "quarantined"), 0);
  EXPECT_EQ(count(st, "restarts"), 0);
}

}  // namespace
}  // namespace slither
