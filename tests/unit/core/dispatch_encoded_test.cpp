// Encoded jobs: batches the engine carries as opaque bytes, from the producer
// to the worker and back, with per-item errors reported beside the results.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dispatch_sim.hpp"
#include "slither/core/dispatch.hpp"
#include "slither/core/local_pool.hpp"

namespace slither {
namespace {

using namespace slither::testing;

// Bytes that stand for an encoded batch: "in:<first>:<count>".
opaque_bytes bytes_of(const std::string& text) {
  std::vector<std::byte> data(text.size());
  std::memcpy(data.data(), text.data(), text.size());
  return opaque_bytes::adopt(std::move(data));
}

std::string text_of(const opaque_bytes& b) {
  return {reinterpret_cast<const char*>(b.bytes.data()), b.bytes.size()};
}

dispatch_options encoded_job(std::size_t max_items = 4, std::uint32_t max_in_flight = 8) {
  dispatch_options o;
  o.function = "mod:fn";
  o.batching = preformed_batch{max_items, true};
  o.max_in_flight = max_in_flight;
  return o;
}

opaque_batch batch_of(std::size_t count, const std::string& tag) {
  return {count, bytes_of("in:" + tag)};
}

// Worker `w` answers its task `index` with "out:<tag>" and the given item errors.
batch_task answer(sim& s, worker_id w, std::size_t index = 0,
                  std::vector<std::uint32_t> failed = {}) {
  batch_task t = s.take_task(w, index);
  batch_encoded done{w, t.batch, t.attempt, t.count, {}, {}};
  done.results = bytes_of("out:" + text_of(t.payload).substr(3));
  for (const std::uint32_t i : failed) done.failures.push_back({i, item_failure("bad item")});
  sim::expect_ok(s.engine.handle(std::move(done), s.now));
  sim::expect_ok(s.engine.handle(credit_granted{w, 1}, s.now));
  s.drain();
  return t;
}

TEST(DispatchEncoded, PassesTheSameBytesToTheWorkerAndBack) {
  sim s;
  const worker_id w = s.add_worker(2);
  const job_id job = s.open(encoded_job());
  opaque_batch in = batch_of(3, "a");
  const std::byte* input_bytes = in.payload.bytes.data();
  sim::expect_ok(s.engine.offer_batch(job, std::move(in), s.now));
  s.drain();
  ASSERT_EQ(s.tasks[w].size(), 1u);
  const batch_task& t = s.tasks[w][0];
  EXPECT_FALSE(t.items) << "an encoded batch carries no items";
  EXPECT_EQ(t.count, 3u);
  EXPECT_EQ(t.payload.bytes.data(), input_bytes) << "the input's bytes, not a copy";
  EXPECT_EQ(t.target->function, "mod:fn");

  batch_task task = s.take_task(w);
  opaque_bytes results = bytes_of("out:a");
  const std::byte* result_bytes = results.bytes.data();
  sim::expect_ok(
      s.engine.handle(batch_encoded{w, task.batch, task.attempt, 3, results, {}}, s.now));
  s.close(job);
  EXPECT_TRUE(s.engine.take_results(job).empty()) << "an encoded job gives batches, not items";
  auto out = s.engine.take_batches(job);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].seq, 0u);
  EXPECT_EQ(out[0].count, 3u);
  EXPECT_TRUE(out[0].has_results);
  EXPECT_TRUE(out[0].failures.empty());
  EXPECT_EQ(out[0].payload.bytes.data(), result_bytes) << "the worker's bytes, not a copy";
  EXPECT_EQ(s.engine.status(job).value().state, job_state::finished);
  const auto st = s.engine.stats();
  ASSERT_EQ(st.jobs.size(), 1u);
  EXPECT_EQ(st.jobs[0].ok, 3u);
  EXPECT_TRUE(s.engine.check_accounting());
}

TEST(DispatchEncoded, RefusesTheOtherForm) {
  sim s;
  s.add_worker(2);
  const job_id encoded = s.open(encoded_job());
  const job_id items = s.open(job_options(2));
  auto one = numbered_items(1);
  EXPECT_EQ(s.engine.offer(encoded, one, s.now).error().code, errc::invalid_argument);
  EXPECT_FALSE(s.engine.offer(encoded, Item{}, s.now));
  EXPECT_FALSE(s.engine.offer_batch(encoded, numbered_items(1), s.now));
  const auto wrong = s.engine.offer_batch(items, batch_of(1, "x"), s.now);
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message.find("encoded = true"), std::string::npos)
      << wrong.error().message;
  EXPECT_TRUE(s.engine.take_batches(items).empty());
}

TEST(DispatchEncoded, ChecksCountsAgainstTheBatchSizeAndTheWindow) {
  sim s;
  const job_id job = s.open(encoded_job(4, 2));  // window: 8 items
  EXPECT_EQ(s.engine.offer_batch(job, batch_of(0, "x"), s.now).error().code,
            errc::invalid_argument);
  EXPECT_EQ(s.engine.offer_batch(job, batch_of(5, "x"), s.now).error().code, errc::limit_exceeded);
  sim::expect_ok(s.engine.offer_batch(job, batch_of(4, "a"), s.now));
  sim::expect_ok(s.engine.offer_batch(job, batch_of(3, "b"), s.now));
  EXPECT_EQ(s.engine.input_capacity(job), 1u);
  EXPECT_EQ(s.engine.offer_batch(job, batch_of(2, "c"), s.now).error().code, errc::busy);
  sim::expect_ok(s.engine.offer_batch(job, batch_of(1, "c"), s.now));
  EXPECT_EQ(s.engine.input_capacity(job), 0u);
  EXPECT_TRUE(s.engine.check_accounting());
}

TEST(DispatchEncoded, ItemErrorsFollowThePolicyWithoutDecoding) {
  for (const bool route : {false, true}) {
    sim s;
    const worker_id w = s.add_worker(1);
    auto o = encoded_job();
    if (route) {
      o.on_error = route_policy{"errors"};
    } else {
      o.on_error = skip_policy{};
    }
    const job_id job = s.open(o);
    sim::expect_ok(s.engine.offer_batch(job, batch_of(4, "a"), s.now));
    s.drain();
    answer(s, w, 0, {3, 1});
    auto out = s.engine.take_batches(job);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_TRUE(out[0].has_results);
    EXPECT_EQ(text_of(out[0].payload), "out:a");
    ASSERT_EQ(out[0].failures.size(), 2u);
    EXPECT_EQ(out[0].failures[0].index, 1u) << "sorted by index";
    EXPECT_EQ(out[0].failures[1].index, 3u);
    const item_status want = route ? item_status::routed : item_status::skipped;
    for (const auto& f : out[0].failures) {
      EXPECT_EQ(f.status, want);
      ASSERT_TRUE(f.error);
      EXPECT_EQ(f.error->kind, failure_kind::item_error);
      EXPECT_EQ(f.error->message, "bad item");
      EXPECT_EQ(f.error->worker, w);
      EXPECT_EQ(f.error->attempt, 1u);
    }
    const auto js = s.engine.stats().jobs.at(0);
    EXPECT_EQ(js.ok, 2u);
    EXPECT_EQ(route ? js.routed : js.skipped, 2u);
    EXPECT_TRUE(s.engine.check_accounting());
  }
}

TEST(DispatchEncoded, HaltOnAnItemErrorCancelsTheRestWithTheirInput) {
  sim s;
  const worker_id w = s.add_worker(1);
  const job_id job = s.open(encoded_job());
  sim::expect_ok(s.engine.offer_batch(job, batch_of(2, "a"), s.now));
  sim::expect_ok(s.engine.offer_batch(job, batch_of(2, "b"), s.now));
  s.drain();
  answer(s, w, 0, {0});
  auto out = s.engine.take_batches(job);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].has_results);
  ASSERT_EQ(out[0].failures.size(), 1u);
  EXPECT_EQ(out[0].failures[0].status, item_status::failed);
  EXPECT_FALSE(out[1].has_results);
  EXPECT_EQ(out[1].status, item_status::cancelled);
  EXPECT_EQ(text_of(out[1].payload), "in:b") << "a batch that ends whole gives its input back";
  const auto st = s.engine.status(job).value();
  ASSERT_TRUE(st.error);
  EXPECT_EQ(st.error->kind, failure_kind::item_error);
  EXPECT_EQ(st.state, job_state::finished);
  EXPECT_TRUE(s.engine.check_accounting());
}

TEST(DispatchEncoded, AWholeBatchFailureGivesTheInputBackAndARetrySendsTheSameBytes) {
  sim s(verified(never_open()));
  const worker_id a = s.add_worker(1);
  auto o = encoded_job();
  o.on_error = retrying(2, {0ms, 1.0, 0ms}, skip_policy{});
  const job_id job = s.open(o);
  opaque_batch in = batch_of(2, "a");
  const std::byte* input_bytes = in.payload.bytes.data();
  sim::expect_ok(s.engine.offer_batch(job, std::move(in), s.now));
  s.drain();
  s.crash(a);
  const worker_id b = s.add_worker(1);
  ASSERT_EQ(s.tasks[b].size(), 1u);
  EXPECT_EQ(s.tasks[b][0].attempt, 2u);
  EXPECT_EQ(s.tasks[b][0].payload.bytes.data(), input_bytes);
  s.fail(b);
  auto out = s.engine.take_batches(job);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].has_results);
  EXPECT_EQ(out[0].status, item_status::skipped);
  ASSERT_TRUE(out[0].error);
  EXPECT_EQ(out[0].error->kind, failure_kind::exception);
  EXPECT_EQ(out[0].payload.bytes.data(), input_bytes);
  EXPECT_EQ(s.engine.stats().jobs.at(0).skipped, 2u);
  EXPECT_TRUE(s.engine.check_accounting());
}

TEST(DispatchEncoded, UnusableAnswersFailTheBatchAsBadResult) {
  struct bad {
    std::string name;
    std::size_t count;
    std::vector<std::uint32_t> failed;
    bool decoded;
  };
  for (const bad& c : {bad{"wrong count", 3, {}, false}, bad{"index past the end", 2, {2}, false},
                       bad{"index twice", 2, {1, 1}, false}, bad{"decoded results", 2, {}, true}}) {
    SCOPED_TRACE(c.name);
    sim s;
    const worker_id w = s.add_worker(1);
    auto o = encoded_job();
    o.on_error = skip_policy{};
    const job_id job = s.open(o);
    sim::expect_ok(s.engine.offer_batch(job, batch_of(2, "a"), s.now));
    s.drain();
    batch_task t = s.take_task(w);
    if (c.decoded) {
      sim::expect_ok(
          s.engine.handle(batch_completed{w, t.batch, t.attempt, {Value(1), Value(2)}}, s.now));
    } else {
      batch_encoded done{w, t.batch, t.attempt, c.count, bytes_of("out"), {}};
      for (const auto i : c.failed) done.failures.push_back({i, item_failure("x")});
      sim::expect_ok(s.engine.handle(std::move(done), s.now));
    }
    s.drain();
    auto out = s.engine.take_batches(job);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_FALSE(out[0].has_results);
    ASSERT_TRUE(out[0].error);
    EXPECT_EQ(out[0].error->kind, failure_kind::bad_result) << out[0].error->describe();
    EXPECT_EQ(text_of(out[0].payload), "in:a");
    EXPECT_TRUE(s.engine.check_accounting());
  }
}

TEST(DispatchEncoded, AnItemBatchAnsweredInEncodedFormIsABadResult) {
  sim s;
  const worker_id w = s.add_worker(1);
  auto o = job_options(2);
  o.on_error = skip_policy{};
  const job_id job = s.open(o);
  s.offer(job, numbered_items(2));
  batch_task t = s.take_task(w);
  sim::expect_ok(
      s.engine.handle(batch_encoded{w, t.batch, t.attempt, 2, bytes_of("x"), {}}, s.now));
  s.drain();
  auto out = s.take(job);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].status, item_status::skipped);
  EXPECT_EQ(out[0].error->kind, failure_kind::bad_result);
}

TEST(DispatchEncoded, PreserveReleasesBatchesInOfferOrderAndAsCompletedTellsWhich) {
  for (const auto ordering : {order_mode::preserve, order_mode::as_completed}) {
    sim s;
    const worker_id w = s.add_worker(3);
    auto o = encoded_job();
    o.ordering = ordering;
    const job_id job = s.open(o);
    for (const char* tag : {"a", "b", "c"}) {
      sim::expect_ok(s.engine.offer_batch(job, batch_of(1, tag), s.now));
    }
    s.drain();
    answer(s, w, 2);  // c
    answer(s, w, 0);  // a
    answer(s, w, 0);  // b
    std::vector<std::uint64_t> seqs;
    std::string texts;
    for (const auto& b : s.engine.take_batches(job)) {
      seqs.push_back(b.seq);
      texts += text_of(b.payload);
    }
    if (ordering == order_mode::preserve) {
      EXPECT_EQ(seqs, (std::vector<std::uint64_t>{0, 1, 2}));
      EXPECT_EQ(texts, "out:aout:bout:c");
    } else {
      EXPECT_EQ(seqs, (std::vector<std::uint64_t>{2, 0, 1}));
      EXPECT_EQ(texts, "out:cout:aout:b");
    }
  }
}

TEST(DispatchEncoded, TakeBatchesTakesAtMostMaxAndFreesTheWindow) {
  sim s;
  const worker_id w = s.add_worker(2);
  const job_id job = s.open(encoded_job(2, 1));  // window: 2 items
  sim::expect_ok(s.engine.offer_batch(job, batch_of(2, "a"), s.now));
  s.drain();
  EXPECT_EQ(s.engine.input_capacity(job), 0u);
  answer(s, w);
  EXPECT_EQ(s.engine.input_capacity(job), 0u) << "results not taken still hold the window";
  EXPECT_TRUE(s.engine.take_batches(job, 0).empty());
  ASSERT_EQ(s.engine.take_batches(job, 1).size(), 1u);
  EXPECT_EQ(s.engine.input_capacity(job), 2u);
}

// Every item of every batch ends exactly once, whatever dies when.
TEST(DispatchEncoded, ExactlyOnceUnderRandomDeathsForEveryPolicy) {
  const std::vector<error_policy> policies = {halt_policy{}, skip_policy{}, route_policy{"bad"},
                                              retrying(3, {0ms, 1.0, 0ms}, skip_policy{})};
  for (std::size_t p = 0; p < policies.size(); ++p) {
    SCOPED_TRACE("policy " + std::to_string(p));
    sim s(verified(never_open()));
    s.respawn_credits = 2;
    for (int i = 0; i < 3; ++i) s.add_worker(2);
    auto o = encoded_job(8, 6);
    o.on_error = policies[p];
    const job_id job = s.open(o);
    std::mt19937_64 rng(42 + p);
    constexpr std::uint64_t batches = 2000;
    std::uint64_t offered = 0;
    std::vector<int> seen(batches, 0);
    std::uint64_t items_out = 0;
    bool closed = false;
    while (true) {
      while (offered < batches && s.engine.input_capacity(job) >= 8) {
        sim::expect_ok(s.engine.offer_batch(job, batch_of(8, std::to_string(offered)), s.now));
        ++offered;
      }
      if (offered == batches && !closed) {
        s.close(job);
        closed = true;
      }
      s.drain();
      for (const auto& b : s.engine.take_batches(job)) {
        ASSERT_LT(b.seq, batches);
        ++seen[b.seq];
        items_out += b.count;
      }
      s.drain();
      if (s.engine.status(job).value().state == job_state::finished) break;
      std::vector<worker_id> busy;
      for (const auto& [w, list] : s.tasks) {
        if (!list.empty()) busy.push_back(w);
      }
      if (busy.empty()) {
        // Room freed by taking output: the next round offers more.
        ASSERT_GT(s.engine.input_capacity(job), 0u) << "stuck with nothing running";
        continue;
      }
      const worker_id w = busy[rng() % busy.size()];
      const auto roll = rng() % 100;
      if (roll < 3) {
        s.crash(w);
      } else if (roll < 6) {
        s.fail(w);
      } else {
        const auto n = s.tasks[w][0].count;
        std::vector<std::uint32_t> failed;
        if (roll < 10) failed.push_back(static_cast<std::uint32_t>(rng() % n));
        answer(s, w, 0, failed);
      }
    }
    for (std::uint64_t i = 0; i < offered; ++i) EXPECT_EQ(seen[i], 1) << "batch " << i;
    EXPECT_EQ(items_out, offered * 8);
    EXPECT_TRUE(s.engine.check_accounting());
  }
}

TEST(DispatchEncoded, LocalPoolRefusesEncodedJobs) {
  auto pool = local_pool::create().value();
  const auto job = pool.stream(encoded_job(), [] { return std::optional<Item>(); });
  ASSERT_FALSE(job);
  EXPECT_EQ(job.error().code, errc::invalid_argument);
}

}  // namespace
}  // namespace slither
