// The dispatch engine driven directly: credits, max_in_flight, worker
// choice, jobs sharing a pool, ordering, input and output, telemetry, stats.
#include "slither/core/dispatch.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dispatch_sim.hpp"
#include "slither/core/telemetry.hpp"

namespace slither {
namespace {

using namespace slither::testing;

TEST(DispatchEngine, RunsAJobToTheEndAndReportsResultsInOrder) {
  sim s;
  const worker_id w = s.add_worker(2);
  const job_id job = s.open(job_options(2));
  s.offer(job, numbered_items(5));
  s.close(job);
  ASSERT_EQ(s.tasks[w].size(), 2u) << "two credits: two batches out";
  while (!s.tasks[w].empty()) s.complete(w);
  auto results = s.take(job);
  ASSERT_EQ(result_ids(results), (std::vector<std::uint64_t>{0, 1, 2, 3, 4}));
  for (const auto& r : results) {
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.item.payload.as<std::int64_t>(), static_cast<std::int64_t>(r.item.id * 2));
  }
  auto st = s.engine.status(job).value();
  EXPECT_EQ(st.state, job_state::finished);
  EXPECT_FALSE(st.error);
  s.engine.close_job(job, s.now);
  EXPECT_FALSE(s.engine.status(job));
  EXPECT_TRUE(s.engine.check_accounting());
}

TEST(DispatchEngine, TasksCarryTheTargetAndContext) {
  sim s;
  const worker_id w = s.add_worker(1);
  auto o = job_options(3);
  o.function = "mod:fn";
  o.context.stage = "score";
  o.context.session_id = "abc";
  const job_id job = s.open(o);
  s.offer(job, numbered_items(3));
  ASSERT_EQ(s.tasks[w].size(), 1u);
  const batch_task& t = s.tasks[w][0];
  EXPECT_EQ(t.target->function, "mod:fn");
  EXPECT_EQ(t.target->context.stage, "score");
  EXPECT_EQ(t.target->context.session_id, "abc");
  EXPECT_EQ(t.attempt, 1u);
  EXPECT_EQ(t.job, job);
  EXPECT_EQ(t.items->size(), 3u);
  EXPECT_FALSE(t.deadline);
}

TEST(DispatchEngine, SendsOnlyAgainstCredit) {
  sim s;
  const worker_id w = s.add_worker(0);
  const job_id job = s.open(job_options(1));
  s.offer(job, numbered_items(3));
  EXPECT_EQ(s.running(), 0u) << "a worker with no credit gets nothing";
  sim::expect_ok(s.engine.handle(credit_granted{w, 2}, s.now));
  s.drain();
  EXPECT_EQ(s.tasks[w].size(), 2u);
  auto st = s.engine.stats();
  ASSERT_EQ(st.workers.size(), 1u);
  EXPECT_EQ(st.workers[0].credits, 0u);
  EXPECT_EQ(st.workers[0].in_flight, 2u);
}

TEST(DispatchEngine, KeepsAtMostMaxInFlightBatchesOut) {
  sim s;
  for (int i = 0; i < 4; ++i) s.add_worker(2);
  const job_id job = s.open(job_options(1, 3));
  s.offer(job, numbered_items(3));
  EXPECT_EQ(s.running(), 3u);
  s.complete(s.sent[0].worker);
  EXPECT_EQ(s.running(), 2u) << "no input left";
  // The window is max_in_flight * batch_size = 3 items: one result not taken
  // leaves room for exactly two more.
  EXPECT_EQ(s.engine.input_capacity(job), 0u);
  s.take(job);
  EXPECT_EQ(s.engine.input_capacity(job), 1u);
}

TEST(DispatchEngine, PicksTheLeastLoadedWorker) {
  sim s;
  const worker_id a = s.add_worker(4);
  const worker_id b = s.add_worker(4);
  const job_id job = s.open(job_options(1));
  s.offer(job, numbered_items(4));
  EXPECT_EQ(s.tasks[a].size(), 2u);
  EXPECT_EQ(s.tasks[b].size(), 2u);
  s.complete(a);
  s.complete(a);
  s.offer(job, numbered_items(2, 4));
  EXPECT_EQ(s.tasks[a].size(), 2u) << "the emptier worker takes the new batches";
  EXPECT_EQ(s.tasks[b].size(), 2u);
}

TEST(DispatchEngine, JobsShareCreditsInTurn) {
  sim s;
  const worker_id w = s.add_worker(1);
  const job_id j1 = s.open(job_options(1));
  const job_id j2 = s.open(job_options(1));
  s.offer(j1, numbered_items(3));
  s.offer(j2, numbered_items(3, 100));
  std::vector<job_id> order;
  for (int i = 0; i < 6; ++i) {
    ASSERT_EQ(s.tasks[w].size(), 1u);
    order.push_back(s.complete(w).job);
  }
  EXPECT_EQ(order, (std::vector<job_id>{j1, j2, j1, j2, j1, j2}));
}

TEST(DispatchEngine, PreserveWaitsForTheHeadAsCompletedDoesNot) {
  for (const auto mode : {order_mode::preserve, order_mode::as_completed}) {
    sim s;
    const worker_id w = s.add_worker(3);
    auto o = job_options(2);
    o.ordering = mode;
    const job_id job = s.open(o);
    s.offer(job, numbered_items(6));
    s.complete(w, 2);  // items 4, 5
    s.complete(w, 1);  // items 2, 3
    auto early = s.take(job);
    s.complete(w, 0);  // items 0, 1
    auto late = s.take(job);
    if (mode == order_mode::preserve) {
      EXPECT_TRUE(early.empty());
      EXPECT_EQ(result_ids(late), (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5}));
      EXPECT_EQ(s.engine.stats().jobs[0].reorder_items, 0u);
    } else {
      EXPECT_EQ(result_ids(early), (std::vector<std::uint64_t>{4, 5, 2, 3}));
      EXPECT_EQ(result_ids(late), (std::vector<std::uint64_t>{0, 1}));
    }
  }
}

TEST(DispatchEngine, ReorderBufferCountsTowardTheWindow) {
  sim s;
  const worker_id w = s.add_worker(8);
  const job_id job = s.open(job_options(2, 3));  // window: 6 items
  s.offer(job, numbered_items(6));
  s.complete(w, 2);
  s.complete(w, 1);
  EXPECT_EQ(s.engine.stats().jobs[0].reorder_items, 4u);
  EXPECT_EQ(s.engine.input_capacity(job), 0u) << "held results still fill the window";
  s.complete(w, 0);
  EXPECT_EQ(s.take(job).size(), 6u);
  EXPECT_EQ(s.engine.input_capacity(job), 6u);
}

TEST(DispatchEngine, AnnouncesInputWantedAndOutputReady) {
  sim s;
  const worker_id w = s.add_worker(1);
  const job_id job = s.open(job_options(2, 2));
  ASSERT_EQ(s.wanted.size(), 1u);
  EXPECT_EQ(s.wanted[0].items, 4u);
  s.offer(job, numbered_items(4));
  EXPECT_EQ(s.wanted.size(), 1u) << "no room, no announcement";
  s.complete(w);
  EXPECT_EQ(s.ready.back(), job);
  s.take(job);
  ASSERT_EQ(s.wanted.size(), 2u);
  EXPECT_EQ(s.wanted[1].items, 2u);
}

TEST(DispatchEngine, EmptyInputFinishesAtOnce) {
  sim s;
  const job_id job = s.open(job_options());
  s.close(job);
  EXPECT_EQ(s.ready.back(), job);
  EXPECT_EQ(s.engine.status(job).value().state, job_state::finished);
}

TEST(DispatchEngine, OfferErrorsTakeNothing) {
  sim s;
  s.add_worker(1);
  const job_id job = s.open(job_options(2, 1));  // window: 2
  auto three = numbered_items(3);
  auto busy = s.engine.offer(job, three, s.now);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, errc::busy);
  EXPECT_EQ(three.size(), 3u);
  EXPECT_EQ(s.engine.stats().jobs[0].items_in, 0u);

  Item item = wrap(Value(1), 1);
  EXPECT_EQ(s.engine.offer(job_id{999}, std::move(item), s.now).error().code, errc::not_found);
  s.close(job);
  auto closed = s.engine.offer(job, std::move(item), s.now);
  ASSERT_FALSE(closed);
  EXPECT_NE(closed.error().message.find("input is closed"), std::string::npos);
  EXPECT_TRUE(item.payload.is_int()) << "a refused item is left untouched";
}

TEST(DispatchEngine, OfferStopsAtABadItemAndReturnsTheRest) {
  sim s;
  s.add_worker(1);
  auto o = job_options();
  o.batching = weighted_batch{10, [](const Item& i) { return i.payload.as<double>(); }, 64};
  const job_id job = s.open(o);
  std::vector<Item> batch = {wrap(Value(1.0), 1), wrap(Value(-5.0), 2), wrap(Value(1.0), 3)};
  auto r = s.engine.offer(job, batch, s.now);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("item 2"), std::string::npos) << r.error().message;
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].id, 2u);
  EXPECT_EQ(s.engine.stats().jobs[0].items_in, 1u);
}

TEST(DispatchEngine, PreformedJobsTakeWholeBatches) {
  sim s;
  const worker_id w = s.add_worker(2);
  auto o = job_options();
  o.batching = preformed_batch{4};
  const job_id job = s.open(o);
  ASSERT_TRUE(s.engine.offer_batch(job, numbered_items(3), s.now));
  ASSERT_TRUE(s.engine.offer_batch(job, numbered_items(1, 3), s.now));
  s.drain();
  ASSERT_EQ(s.tasks[w].size(), 2u);
  EXPECT_EQ(s.tasks[w][0].items->size(), 3u);
  Item single = wrap(Value(1), 9);
  EXPECT_FALSE(s.engine.offer(job, std::move(single), s.now));
  EXPECT_FALSE(s.engine.offer_batch(job, numbered_items(5), s.now));
}

TEST(DispatchEngine, KeyPartitionSendsTheLargestGroupWhenTheWindowIsFull) {
  sim s;
  const worker_id w = s.add_worker(4);
  auto o = job_options();
  o.batching = key_partition{[](const Item& i) { return std::to_string(i.id % 3); }, 4};
  o.max_in_flight = 1;  // window: 4 items
  const job_id job = s.open(o);
  s.offer(job, numbered_items(4));  // keys 0,1,2,0
  ASSERT_EQ(s.tasks[w].size(), 1u) << "window full: the largest group goes out";
  std::vector<std::uint64_t> first;
  for (const auto& i : *s.tasks[w][0].items) first.push_back(i.id);
  EXPECT_EQ(first, (std::vector<std::uint64_t>{0, 3}));
  s.complete(w);
  s.take(job);
  s.close(job);
  while (!s.tasks[w].empty()) {
    s.complete(w);
    s.take(job);
  }
  EXPECT_EQ(s.engine.status(job).value().state, job_state::finished);
}

TEST(DispatchEngine, DrainedWorkerIsRetiredAndItsExitIsNoDeath) {
  sim s;
  const worker_id a = s.add_worker(2);
  const job_id job = s.open(job_options(1));
  s.offer(job, numbered_items(1));
  ASSERT_EQ(s.tasks[a].size(), 1u);
  sim::expect_ok(s.engine.drain_worker(a, s.now));
  s.drain();
  EXPECT_TRUE(s.retires.empty()) << "it still holds a batch";
  const worker_id b = s.add_worker(2);
  s.offer(job, numbered_items(2, 1));
  EXPECT_EQ(s.tasks[a].size(), 1u) << "a draining worker gets nothing new";
  EXPECT_EQ(s.tasks[b].size(), 2u);
  s.complete(a);
  ASSERT_EQ(s.retires.size(), 1u);
  EXPECT_EQ(s.retires[0].worker, a);
  sim::expect_ok(s.engine.handle(worker_left{a, "recycled", true}, s.now));
  auto st = s.engine.stats();
  EXPECT_EQ(st.worker_deaths, 0u);
  EXPECT_EQ(st.workers.size(), 1u);
  EXPECT_FALSE(s.engine.drain_worker(a, s.now));
}

TEST(DispatchEngine, StaleAndImpossibleEventsChangeNothing) {
  sim s;
  const worker_id w = s.add_worker(1);
  auto twice = s.engine.handle(worker_joined{w, 1, false}, s.now);
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.error().message.find("joined twice"), std::string::npos);
  EXPECT_FALSE(s.engine.handle(worker_joined{0, 1, false}, s.now));
  sim::expect_ok(s.engine.handle(batch_completed{w, 12345, 1, {}}, s.now));
  sim::expect_ok(s.engine.handle(credit_granted{777, 1}, s.now));
  sim::expect_ok(s.engine.handle(worker_left{777, "who?", false}, s.now));
  EXPECT_EQ(s.engine.stats().stale_events, 3u);
  EXPECT_TRUE(s.engine.check_accounting());
}

TEST(DispatchEngine, CreditsAreCapped) {
  engine_options o = verified();
  o.max_credits = 4;
  sim s(o);
  const worker_id w = s.add_worker(3);
  sim::expect_ok(s.engine.handle(credit_granted{w, 0xFFFFFFFFu}, s.now));
  EXPECT_EQ(s.engine.stats().workers[0].credits, 4u);
}

TEST(DispatchEngine, EmitsBatchTelemetry) {
  std::vector<std::string> events;
  Map last_stop;
  Map last_meta;
  auto a = telemetry::attach("slither.dispatch.batch.",
                             [&](std::string_view event, const Map& m, const Map& meta) {
                               events.emplace_back(event);
                               if (event.ends_with(".stop")) {
                                 last_stop = m;
                                 last_meta = meta;
                               }
                             });
  sim s;
  const worker_id w = s.add_worker(2);
  auto o = job_options(2);
  o.context.session_id = "s1";
  o.on_error = skip_policy{};
  const job_id job = s.open(o);
  s.offer(job, numbered_items(4));
  s.advance(5ms);
  s.complete(w);
  s.fail(w);
  EXPECT_EQ(events, (std::vector<std::string>{
                        "slither.dispatch.batch.start", "slither.dispatch.batch.start",
                        "slither.dispatch.batch.stop", "slither.dispatch.batch.exception"}));
  EXPECT_EQ(last_stop.at("size").as<std::int64_t>(), 2);
  EXPECT_EQ(last_stop.at("duration_us").as<std::int64_t>(), 5000);
  EXPECT_EQ(last_meta.at("worker").as<std::int64_t>(), static_cast<std::int64_t>(w));
  EXPECT_EQ(last_meta.at("attempt").as<std::int64_t>(), 1);
  EXPECT_EQ(last_meta.at("function").as<std::string>(), "double");
  EXPECT_EQ(last_meta.at("session").as<std::string>(), "s1");
  EXPECT_TRUE(last_meta.contains("batch"));
  EXPECT_EQ(last_meta.at("job").as<std::int64_t>(), static_cast<std::int64_t>(job));
}

TEST(DispatchEngine, StatsShowQueuesAndCounts) {
  sim s;
  s.add_worker(1);
  const job_id job = s.open(job_options(2, 4));
  s.offer(job, numbered_items(7));
  auto st = s.engine.stats();
  ASSERT_EQ(st.jobs.size(), 1u);
  EXPECT_EQ(st.jobs[0].id, job);
  EXPECT_EQ(st.jobs[0].in_flight, 1u);
  EXPECT_EQ(st.jobs[0].queued_batches, 2u);
  EXPECT_EQ(st.jobs[0].buffered_items, 1u);
  EXPECT_EQ(st.jobs[0].items_in, 7u);
  EXPECT_EQ(st.batches_sent, 1u);
}

TEST(DispatchOptions, ValidationNamesTheBadOption) {
  const auto message = [](dispatch_options o) {
    auto r = validate(o);
    return r ? std::string("ok") : r.error().message;
  };
  auto o = job_options();
  EXPECT_EQ(message(o), "ok");
  auto no_fn = o;
  no_fn.function.clear();
  EXPECT_NE(message(no_fn).find("'function'"), std::string::npos);
  auto zero = o;
  zero.max_in_flight = 0;
  EXPECT_NE(message(zero).find("'max_in_flight' must be at least 1 (got 0)"), std::string::npos);
  auto bad_batch = o;
  bad_batch.batching = fixed_batch{0};
  EXPECT_NE(message(bad_batch).find("'batch_size'"), std::string::npos);
  auto timeout = o;
  timeout.timeout = 0ms;
  EXPECT_NE(message(timeout).find("'timeout'"), std::string::npos);
  auto route = o;
  route.on_error = route_policy{};
  EXPECT_NE(message(route).find("'on_error.route.output'"), std::string::npos);
  auto retry = o;
  retry.on_error = retrying(0);
  EXPECT_NE(message(retry).find("'on_error.retry.max_attempts'"), std::string::npos);
  auto mult = o;
  mult.on_error = retrying(2, {100ms, 0.5, 1000ms});
  EXPECT_NE(message(mult).find("'on_error.retry.delay.multiplier'"), std::string::npos);
  auto cap = o;
  cap.on_error = retrying(2, {100ms, 2.0, 10ms});
  EXPECT_NE(message(cap).find("'on_error.retry.delay.max'"), std::string::npos);
  auto then = o;
  then.on_error = retrying(2, {}, route_policy{});
  EXPECT_NE(message(then).find("'on_error.retry.then.route.output'"), std::string::npos);

  sim s;
  auto refused = s.engine.open_job(zero, s.now);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::invalid_argument);
}

TEST(DispatchOptions, BackoffGrowsToItsCap) {
  backoff b{100ms, 2.0, 500ms};
  EXPECT_EQ(b.delay(1), 100ms);
  EXPECT_EQ(b.delay(2), 200ms);
  EXPECT_EQ(b.delay(3), 400ms);
  EXPECT_EQ(b.delay(4), 500ms);
  EXPECT_EQ(b.delay(1000), 500ms);
}

}  // namespace
}  // namespace slither
