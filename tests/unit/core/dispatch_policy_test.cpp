// The dispatch engine when things go wrong: error policies, retries, worker
// deaths, timeouts, poison batches, the circuit breaker, session affinity.
#include "slither/core/dispatch.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "dispatch_sim.hpp"

namespace slither {
namespace {

using namespace slither::testing;

// Fails item 3 with an item error, doubles the rest.
item_result three_fails(const Item& item) {
  if (item.id == 3) return item_failure("bad three");
  return doubled(item);
}

TEST(DispatchPolicy, SkipReportsFailedItemsWithTheirErrors) {
  sim s;
  const worker_id w = s.add_worker(2);
  auto o = job_options(2);
  o.on_error = skip_policy{};
  const job_id job = s.open(o);
  s.offer(job, numbered_items(6));
  s.close(job);
  s.complete(w, 0, three_fails);
  s.fail(w, 0, "whole batch");  // items 2, 3
  s.complete(w, 0, three_fails);
  auto rs = s.take(job);
  ASSERT_EQ(result_ids(rs), (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(rs[0].ok());
  EXPECT_EQ(rs[2].status, item_status::skipped);
  EXPECT_EQ(rs[2].error->kind, failure_kind::exception);
  EXPECT_EQ(rs[2].error->message, "whole batch");
  EXPECT_EQ(rs[2].error->traceback, "Traceback: ...");
  EXPECT_EQ(rs[2].error->attempt, 1u);
  EXPECT_EQ(rs[2].error->worker, w);
  EXPECT_EQ(rs[2].item.payload.as<std::int64_t>(), 2) << "a failed item keeps its input";
  EXPECT_EQ(rs[2].error, rs[3].error) << "one error shared by the batch";
  EXPECT_TRUE(rs[4].ok());
  auto st = s.engine.status(job).value();
  EXPECT_EQ(st.state, job_state::finished);
  EXPECT_FALSE(st.error) << "skipping is not a job failure";
  EXPECT_EQ(s.engine.stats().jobs[0].skipped, 2u);
}

TEST(DispatchPolicy, ItemErrorsAreKeptPerItem) {
  sim s;
  const worker_id w = s.add_worker(2);
  auto o = job_options(4);
  o.on_error = skip_policy{};
  const job_id job = s.open(o);
  s.offer(job, numbered_items(4));
  s.complete(w, 0, three_fails);
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_TRUE(rs[2].ok());
  EXPECT_EQ(rs[3].status, item_status::skipped);
  EXPECT_EQ(rs[3].error->kind, failure_kind::item_error);
  EXPECT_EQ(rs[3].error->type, "ValueError");
  EXPECT_EQ(rs[3].error->message, "bad three");
}

TEST(DispatchPolicy, RouteTagsFailedItemsWithTheOutput) {
  sim s;
  const worker_id w = s.add_worker(2);
  auto o = job_options(4);
  o.on_error = route_policy{"errors"};
  const job_id job = s.open(o);
  s.offer(job, numbered_items(4));
  s.complete(w, 0, three_fails);
  auto rs = s.take(job);
  EXPECT_EQ(rs[3].status, item_status::routed);
  EXPECT_EQ(rs[3].item.route, "errors");
  EXPECT_TRUE(rs[0].item.route.empty());
}

TEST(DispatchPolicy, HaltStopsReturnsPartialResultsAndCancelsTheRest) {
  sim s;
  const worker_id w = s.add_worker(3);
  const job_id job = s.open(job_options(2));  // halt is the default
  s.offer(job, numbered_items(9));
  s.complete(w, 0);               // items 0, 1
  s.complete(w, 0, three_fails);  // items 2, 3: 3 fails
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 9u);
  EXPECT_TRUE(rs[0].ok());
  EXPECT_TRUE(rs[2].ok()) << "the failing batch's good items are partial results";
  EXPECT_EQ(rs[3].status, item_status::failed);
  for (std::size_t i = 4; i < 9; ++i) {
    EXPECT_EQ(rs[i].status, item_status::cancelled) << i;
    EXPECT_NE(rs[i].error->message.find("bad three"), std::string::npos);
  }
  auto st = s.engine.status(job).value();
  EXPECT_EQ(st.state, job_state::finished);
  ASSERT_TRUE(st.error);
  EXPECT_EQ(st.error->message, "bad three");
  Item more = wrap(Value(1), 99);
  auto refused = s.engine.offer(job, std::move(more), s.now);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("has stopped"), std::string::npos);
  // The orphaned batches still on the worker answer late; nothing changes.
  while (!s.tasks[w].empty()) s.complete(w);
  EXPECT_TRUE(s.take(job).empty());
  EXPECT_TRUE(s.engine.check_accounting());
  EXPECT_EQ(s.engine.stats().workers[0].in_flight, 0u);
}

TEST(DispatchPolicy, HaltOnTheLastBatchStillReportsTheError) {
  sim s;
  const worker_id w = s.add_worker(1);
  const job_id job = s.open(job_options(4));
  s.offer(job, numbered_items(4));
  s.close(job);
  s.complete(w, 0, three_fails);
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_EQ(rs[3].status, item_status::failed);
  auto st = s.engine.status(job).value();
  EXPECT_EQ(st.state, job_state::finished);
  ASSERT_TRUE(st.error) << "nothing was left to cancel, but the job still failed";
  EXPECT_EQ(st.error->message, "bad three");
  sim::expect_ok(s.engine.cancel(job, s.now));
  EXPECT_EQ(s.engine.status(job).value().error->message, "bad three");
}

TEST(DispatchPolicy, CancellingAFinishedJobChangesNothing) {
  sim s;
  const worker_id w = s.add_worker(1);
  const job_id job = s.open(job_options(2));
  s.offer(job, numbered_items(2));
  s.close(job);
  s.complete(w);
  sim::expect_ok(s.engine.cancel(job, s.now));
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_TRUE(rs[0].ok());
  EXPECT_FALSE(s.engine.status(job).value().error);
}

TEST(DispatchPolicy, WrongResultCountIsABadResult) {
  sim s;
  const worker_id w = s.add_worker(1);
  auto o = job_options(2);
  o.on_error = skip_policy{};
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));
  batch_task t = s.take_task(w);
  sim::expect_ok(s.engine.handle(batch_completed{w, t.batch, t.attempt, {Value(1)}}, s.now));
  s.drain();
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].error->kind, failure_kind::bad_result);
  EXPECT_NE(rs[0].error->message.find("1 results for a batch of 2"), std::string::npos);
}

TEST(DispatchPolicy, RetryRunsAgainOnAnotherWorkerAfterBackoff) {
  sim s;
  const worker_id a = s.add_worker(1);
  const worker_id b = s.add_worker(1);
  auto o = job_options(2, 1);
  o.on_error = retrying(3, {100ms, 2.0, 1000ms});
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));
  ASSERT_EQ(s.sent.size(), 1u);
  const worker_id first = s.sent[0].worker;
  s.fail(first);
  EXPECT_EQ(s.sent.size(), 1u) << "waits for its backoff";
  ASSERT_TRUE(s.engine.next_deadline());
  EXPECT_EQ(*s.engine.next_deadline(), s.now + 100ms);
  s.advance(99ms);
  EXPECT_EQ(s.sent.size(), 1u);
  s.advance(1ms);
  ASSERT_EQ(s.sent.size(), 2u);
  EXPECT_EQ(s.sent[1].attempt, 2u);
  EXPECT_NE(s.sent[1].worker, first) << "a retry goes to a worker that has not failed it";
  EXPECT_EQ(s.sent[1].batch, s.sent[0].batch);
  s.complete(s.sent[1].worker);
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_TRUE(rs[0].ok());
  EXPECT_EQ(s.engine.stats().retries, 1u);
  (void)a;
  (void)b;
}

TEST(DispatchPolicy, RetryGivesUpToItsFallbackWithTheLastError) {
  sim s;
  const worker_id w = s.add_worker(1);
  auto o = job_options(2);
  o.on_error = retrying(2, {0ms, 1.0, 0ms}, skip_policy{});
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));
  s.fail(w, 0, "first");
  ASSERT_EQ(s.tasks[w].size(), 1u) << "one worker: the retry goes back to it";
  s.fail(w, 0, "second");
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].status, item_status::skipped);
  EXPECT_EQ(rs[0].error->message, "second");
  EXPECT_EQ(rs[0].error->attempt, 2u);
}

TEST(DispatchPolicy, AnAnswerForAnEarlierAttemptIsIgnored) {
  sim s;
  const worker_id w = s.add_worker(1);
  auto o = job_options(2);
  o.on_error = retrying(3, {0ms, 1.0, 0ms});
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));
  const batch_task first = s.fail(w);
  ASSERT_EQ(s.tasks[w].size(), 1u);
  EXPECT_EQ(s.tasks[w][0].attempt, 2u);
  // A duplicate answer for attempt 1 arrives while attempt 2 runs on the same worker.
  sim::expect_ok(s.engine.handle(
      batch_completed{w, first.batch, first.attempt, {Value(-1), Value(-1)}}, s.now));
  s.drain();
  EXPECT_TRUE(s.take(job).empty());
  EXPECT_EQ(s.engine.stats().stale_events, 1u);
  s.complete(w);
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[1].item.payload.as<std::int64_t>(), 2);
}

TEST(DispatchPolicy, ItemErrorsAreNotRetried) {
  sim s;
  const worker_id w = s.add_worker(1);
  auto o = job_options(4);
  o.on_error = retrying(5, {0ms, 1.0, 0ms}, route_policy{"bad"});
  const job_id job = s.open(o);
  s.offer(job, numbered_items(4));
  s.complete(w, 0, three_fails);
  EXPECT_EQ(s.sent.size(), 1u);
  auto rs = s.take(job);
  EXPECT_EQ(rs[3].status, item_status::routed);
  EXPECT_EQ(rs[3].item.route, "bad");
}

TEST(DispatchPolicy, WorkerDeathFailsItsBatchesUnderSkip) {
  sim s;
  const worker_id a = s.add_worker(2);
  const worker_id b = s.add_worker(2);
  auto o = job_options(1);
  o.on_error = skip_policy{};
  const job_id job = s.open(o);
  s.offer(job, numbered_items(4));
  ASSERT_EQ(s.tasks[a].size(), 2u);
  s.crash(a);
  while (!s.tasks[b].empty()) s.complete(b);
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 4u);
  int died = 0;
  for (const auto& r : rs) {
    if (r.ok()) continue;
    ++died;
    EXPECT_EQ(r.error->kind, failure_kind::worker_died);
    EXPECT_NE(r.error->message.find("killed by signal 9"), std::string::npos);
  }
  EXPECT_EQ(died, 2);
  EXPECT_EQ(s.engine.stats().worker_deaths, 1u);
}

TEST(DispatchPolicy, RetryRecoversTheBatchesOfADeadWorker) {
  sim s;
  s.respawn_credits = 2;
  const worker_id a = s.add_worker(2);
  auto o = job_options(1);
  o.on_error = retrying(3, {0ms, 1.0, 0ms});
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));
  s.crash(a);
  // The two suspects run one at a time on the replacement.
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(s.running(), 1u);
    s.complete(s.sent.back().worker);
  }
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_TRUE(rs[0].ok());
  EXPECT_TRUE(rs[1].ok());
  EXPECT_EQ(s.engine.stats().restarts, 1u);
}

TEST(DispatchPolicy, TimeoutKillsTheWorkerAndFollowsThePolicy) {
  sim s;
  const worker_id a = s.add_worker(2);
  auto o = job_options(1);
  o.timeout = 50ms;
  o.on_error = skip_policy{};
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));
  ASSERT_EQ(s.tasks[a].size(), 2u);
  ASSERT_TRUE(s.sent[0].deadline);
  EXPECT_EQ(*s.sent[0].deadline, s.now + 50ms);
  s.advance(60ms);
  ASSERT_EQ(s.kills.size(), 1u);
  EXPECT_EQ(s.kills[0].worker, a);
  EXPECT_EQ(s.kills[0].reason.kind, failure_kind::timeout);
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].error->kind, failure_kind::timeout);
  EXPECT_EQ(rs[1].error->kind, failure_kind::worker_died) << "its neighbour died with it";
  EXPECT_EQ(s.engine.stats().timeouts, 1u);
  // A late answer from the killed worker is ignored.
  sim::expect_ok(s.engine.handle(batch_completed{a, s.sent[0].batch, 1, {Value(0)}}, s.now));
  EXPECT_EQ(s.engine.stats().stale_events, 1u);
}

TEST(DispatchPolicy, TimedOutBatchIsRetriedOnAnotherWorker) {
  sim s;
  s.respawn_credits = 1;
  s.add_worker(1);
  auto o = job_options(1);
  o.timeout = 50ms;
  o.on_error = retrying(2, {0ms, 1.0, 0ms});
  const job_id job = s.open(o);
  s.offer(job, numbered_items(1));
  s.advance(50ms);
  ASSERT_EQ(s.sent.size(), 2u);
  EXPECT_NE(s.sent[1].worker, s.sent[0].worker);
  s.complete(s.sent[1].worker);
  EXPECT_TRUE(s.take(job)[0].ok());
}

TEST(DispatchPolicy, PoisonBatchIsQuarantinedAndItsNeighbourRunsAlone) {
  sim s(verified(never_open()));
  s.respawn_credits = 2;
  s.add_worker(2);
  auto o = job_options(1, 2);
  o.on_error = retrying(3, {0ms, 1.0, 0ms}, skip_policy{});
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));  // item 0 is the poison; item 1 shares its worker
  ASSERT_EQ(s.sent[0].worker, s.sent[1].worker);
  std::set<worker_id> killed;
  int guard = 0;
  while (s.engine.status(job).value().ready < 2 && ++guard < 50) {
    // Whoever holds the poison dies; everything else completes.
    bool acted = false;
    for (auto& [w, list] : s.tasks) {
      if (list.empty()) continue;
      // After a death, a suspect runs alone: nothing else shares its worker.
      if (list[0].attempt > 1) {
        EXPECT_EQ(list.size(), 1u);
      }
      if ((*list[0].items)[0].id == 0) {
        killed.insert(w);
        s.crash(w);
      } else {
        s.complete(w);
      }
      acted = true;
      break;
    }
    ASSERT_TRUE(acted);
  }
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].status, item_status::skipped);
  EXPECT_EQ(rs[0].error->kind, failure_kind::quarantined);
  EXPECT_NE(rs[0].error->message.find("3 attempts"), std::string::npos) << rs[0].error->message;
  EXPECT_TRUE(rs[1].ok()) << "the innocent neighbour is retried alone, not blamed";
  EXPECT_EQ(killed.size(), 3u);
  EXPECT_EQ(s.engine.stats().quarantined, 1u);
}

TEST(DispatchPolicy, SuspectWaitsForAnEmptyWorkerWhichTakesNothingNew) {
  sim s;
  const worker_id a = s.add_worker(2);
  auto o = job_options(1);
  o.on_error = retrying(3, {0ms, 1.0, 0ms});
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));
  ASSERT_EQ(s.tasks[a].size(), 2u);
  s.crash(a);
  const worker_id b = s.add_worker(2);
  ASSERT_EQ(s.tasks[b].size(), 1u) << "the first suspect runs alone";
  s.offer(job, numbered_items(2, 2));
  EXPECT_EQ(s.tasks[b].size(), 1u) << "a worker running a suspect takes nothing new";
  const worker_id c = s.add_worker(2);
  EXPECT_EQ(s.tasks[c].size(), 2u) << "new batches go to the free worker";
  EXPECT_EQ(s.tasks[b].size(), 1u) << "b is reserved for the second suspect";
  s.complete(b);
  ASSERT_EQ(s.tasks[b].size(), 1u);
  EXPECT_EQ(s.tasks[b][0].attempt, 2u) << "the second suspect, alone";
}

TEST(DispatchPolicy, CircuitOpensWhenWorkersKeepDying) {
  sim s(verified(circuit_breaker{3, 1000ms, 5000ms}));
  s.respawn_credits = 1;
  s.add_worker(1);
  auto o = job_options(1);
  o.on_error = retrying(10, {0ms, 1.0, 0ms});
  const job_id job = s.open(o);
  s.offer(job, numbered_items(3));
  for (int i = 0; i < 3; ++i) s.crash(s.sent.back().worker);
  ASSERT_EQ(s.circuits.size(), 1u);
  EXPECT_EQ(s.circuits[0].error.kind, failure_kind::circuit_open);
  EXPECT_NE(s.circuits[0].error.message.find("3 workers died within 1000 ms"), std::string::npos);
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 3u);
  for (const auto& r : rs) EXPECT_EQ(r.status, item_status::cancelled);
  auto st = s.engine.status(job).value();
  ASSERT_TRUE(st.error);
  EXPECT_EQ(st.error->kind, failure_kind::circuit_open);
  EXPECT_TRUE(s.engine.stats().circuit_open);

  auto refused = s.engine.open_job(job_options(), s.now);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::unavailable);
  EXPECT_NE(refused.error().message.find("workers died"), std::string::npos);
  ASSERT_TRUE(s.engine.next_deadline());
  s.advance(5000ms);
  EXPECT_FALSE(s.engine.stats().circuit_open);
  EXPECT_TRUE(s.engine.open_job(job_options(), s.now));
}

TEST(DispatchPolicy, DeathsOutsideTheWindowDoNotOpenTheCircuit) {
  sim s(verified(circuit_breaker{3, 1000ms, 5000ms}));
  s.respawn_credits = 1;
  s.add_worker(1);
  for (int i = 0; i < 5; ++i) {
    s.crash(s.tasks.begin()->first);
    s.advance(600ms);
  }
  EXPECT_TRUE(s.circuits.empty());
}

TEST(DispatchPolicy, PoolFailureOpensTheCircuitWithItsError) {
  sim s;
  s.add_worker(1);
  const job_id job = s.open(job_options(1));
  s.offer(job, numbered_items(1));
  dispatch_error e;
  e.type = "ModuleNotFoundError";
  e.message = "No module named 'featurize'";
  sim::expect_ok(s.engine.handle(pool_failed{e}, s.now));
  s.drain();
  ASSERT_EQ(s.circuits.size(), 1u);
  auto st = s.engine.status(job).value();
  ASSERT_TRUE(st.error);
  EXPECT_EQ(st.error->kind, failure_kind::circuit_open);
  EXPECT_NE(st.error->describe().find("No module named 'featurize'"), std::string::npos);
}

TEST(DispatchPolicy, CancelEndsEverythingOnce) {
  sim s;
  const worker_id w = s.add_worker(1);
  const job_id job = s.open(job_options(2));
  s.offer(job, numbered_items(5));
  sim::expect_ok(s.engine.cancel(job, s.now));
  s.drain();
  auto rs = s.take(job);
  ASSERT_EQ(rs.size(), 5u);
  for (const auto& r : rs) EXPECT_EQ(r.status, item_status::cancelled);
  s.complete(w);
  EXPECT_TRUE(s.take(job).empty());
  EXPECT_EQ(s.engine.status(job).value().state, job_state::finished);
}

TEST(DispatchAffinity, StrictSessionRunsOnOneWorkerAndIsToldWhenItMoves) {
  sim s;
  const worker_id a = s.add_worker(1);
  const worker_id b = s.add_worker(1);
  auto o = job_options(1);
  o.context.session_id = "model-7";
  o.affinity = affinity_mode::strict;
  o.on_error = skip_policy{};
  const job_id job = s.open(o);
  s.offer(job, numbered_items(4));
  const worker_id home = s.sent[0].worker;
  const worker_id other = home == a ? b : a;
  EXPECT_EQ(s.running(), 1u) << "strict: waits for its worker's credit";
  s.complete(home);
  s.complete(home);
  for (const auto& t : s.sent) EXPECT_EQ(t.worker, home);
  s.crash(home);
  ASSERT_EQ(s.moves.size(), 1u);
  EXPECT_EQ(s.moves[0].job, job);
  EXPECT_EQ(s.moves[0].session, "model-7");
  EXPECT_EQ(s.moves[0].from, home);
  EXPECT_EQ(s.moves[0].to, other);
  EXPECT_EQ(s.engine.stats().jobs[0].session_moves, 1u);
}

TEST(DispatchAffinity, HintUsesAnotherWorkerWhileTheSessionsOneIsBusy) {
  sim s;
  const worker_id a = s.add_worker(1);
  const worker_id b = s.add_worker(1);
  auto o = job_options(1);
  o.context.session_id = "s";
  o.affinity = affinity_mode::hint;
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));
  ASSERT_EQ(s.running(), 2u) << "hint: the busy home does not hold the batch back";
  const worker_id home = s.sent[0].worker;
  const worker_id other = home == a ? b : a;
  s.complete(other);
  s.complete(home);
  s.offer(job, numbered_items(1, 2));
  EXPECT_EQ(s.sent.back().worker, home) << "the session stayed with its worker";
  EXPECT_TRUE(s.moves.empty());
}

TEST(DispatchAffinity, NoneIgnoresSessions) {
  sim s;
  s.add_worker(4);
  s.add_worker(4);
  auto o = job_options(1);
  o.context.session_id = "s";
  o.affinity = affinity_mode::none;
  const job_id job = s.open(o);
  s.offer(job, numbered_items(4));
  std::set<worker_id> used;
  for (const auto& t : s.sent) used.insert(t.worker);
  EXPECT_EQ(used.size(), 2u);
}

}  // namespace
}  // namespace slither
