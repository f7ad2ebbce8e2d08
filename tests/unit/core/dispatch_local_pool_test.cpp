// local_pool: the dispatch engine with real threads running C++ handlers.
#include "slither/core/local_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "slither/core/telemetry.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;

std::uint64_t scaled(std::uint64_t n) {
  return std::getenv("SLITHER_SANITIZER_BUILD") != nullptr ? n / 5 : n;
}

std::vector<Item> numbered(std::uint64_t n, std::uint64_t first = 0) {
  std::vector<Item> out;
  for (std::uint64_t i = first; i < first + n; ++i) {
    out.push_back(wrap(Value(static_cast<std::int64_t>(i)), i));
  }
  return out;
}

std::vector<result<Value>> doubled(std::span<const Item> items, const batch_context&) {
  std::vector<result<Value>> out;
  for (const auto& i : items) out.emplace_back(Value(i.payload.as<std::int64_t>() * 2));
  return out;
}

local_pool make_pool(std::size_t workers = 3, std::uint32_t credits = 2) {
  local_pool_options o;
  o.workers = workers;
  o.credits = credits;
  o.engine.verify_accounting = true;
  o.engine.breaker.max_deaths = UINT32_MAX;
  auto pool = local_pool::create(o).value();
  pool.add_function("double", doubled);
  return pool;
}

dispatch_options options(std::string fn = "double", std::size_t batch = 16) {
  dispatch_options o;
  o.function = std::move(fn);
  o.batching = fixed_batch{batch};
  return o;
}

retry_policy retrying(std::uint32_t attempts, fallback_policy then = skip_policy{}) {
  retry_policy r;
  r.max_attempts = attempts;
  r.delay = {1ms, 2.0, 20ms};
  r.then = std::move(then);
  return r;
}

// Every id in [0, n) exactly once.
void expect_each_once(const std::vector<dispatch_result>& rs, std::uint64_t n) {
  std::vector<int> seen(n, 0);
  for (const auto& r : rs) {
    ASSERT_LT(r.item.id, n);
    ++seen[r.item.id];
  }
  for (std::uint64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "item " << i;
}

TEST(LocalPool, RunsAJobInInputOrder) {
  auto pool = make_pool();
  const std::uint64_t n = scaled(20'000);
  auto report = pool.run(options(), numbered(n)).value();
  ASSERT_EQ(report.results.size(), n);
  for (std::uint64_t i = 0; i < n; ++i) {
    ASSERT_EQ(report.results[i].item.id, i);
    ASSERT_TRUE(report.results[i].ok());
    ASSERT_EQ(report.results[i].item.payload.as<std::int64_t>(), static_cast<std::int64_t>(2 * i));
  }
  EXPECT_FALSE(report.error);
  EXPECT_EQ(pool.stats().jobs.size(), 0u) << "a finished run forgets its job";
}

TEST(LocalPool, AsCompletedDeliversEveryItemOnce) {
  auto pool = make_pool();
  auto o = options();
  o.ordering = order_mode::as_completed;
  const std::uint64_t n = scaled(10'000);
  auto report = pool.run(o, numbered(n)).value();
  expect_each_once(report.results, n);
}

TEST(LocalPool, ItemErrorsAndExceptionsFollowThePolicy) {
  auto pool = make_pool();
  pool.add_function("picky", [](std::span<const Item> items, const batch_context&) {
    std::vector<result<Value>> out;
    for (const auto& i : items) {
      if (i.id == 40) throw std::out_of_range("forty");
      if (i.id % 10 == 3) {
        out.emplace_back(fail(errc::invalid_argument, "ends in 3"));
      } else {
        out.emplace_back(Value(1));
      }
    }
    return out;
  });
  auto o = options("picky", 8);
  o.on_error = skip_policy{};
  auto report = pool.run(o, numbered(64)).value();
  ASSERT_EQ(report.results.size(), 64u);
  for (const auto& r : report.results) {
    if (r.item.id >= 40 && r.item.id < 48) {
      ASSERT_EQ(r.status, item_status::skipped);
      EXPECT_EQ(r.error->kind, failure_kind::exception);
      EXPECT_EQ(r.error->type, "std::out_of_range");
      EXPECT_EQ(r.error->message, "forty");
    } else if (r.item.id % 10 == 3) {
      ASSERT_EQ(r.status, item_status::skipped);
      EXPECT_EQ(r.error->kind, failure_kind::item_error);
      EXPECT_EQ(r.error->type, "invalid_argument");
      EXPECT_EQ(r.error->message, "ends in 3");
    } else {
      EXPECT_TRUE(r.ok());
    }
  }
}

TEST(LocalPool, HaltReturnsTheErrorAndPartialResults) {
  auto pool = make_pool(1, 1);
  pool.add_function("fails_at_20", [](std::span<const Item> items, const batch_context&) {
    std::vector<result<Value>> out;
    for (const auto& i : items) {
      out.push_back(i.id == 20 ? result<Value>(fail(errc::invalid_argument, "twenty"))
                               : result<Value>(Value(0)));
    }
    return out;
  });
  auto report = pool.run(options("fails_at_20", 4), numbered(100)).value();
  ASSERT_TRUE(report.error);
  EXPECT_EQ(report.error->message, "twenty");
  expect_each_once(report.results, report.results.size());
  EXPECT_TRUE(report.results[0].ok());
  EXPECT_EQ(report.results[20].status, item_status::failed);
  EXPECT_EQ(report.results.back().status, item_status::cancelled);
}

TEST(LocalPool, CrashedWorkersAreReplacedAndRetryRecoversTheirBatches) {
  auto pool = make_pool();
  std::mutex mu;
  std::set<std::uint64_t> crashed_once;
  pool.add_function("crashy", [&](std::span<const Item> items, const batch_context& ctx) {
    // Every 7th batch kills its worker, the first time it runs.
    if (items.front().id % 7 == 0) {
      std::lock_guard lock(mu);
      if (crashed_once.insert(ctx.batch).second) throw worker_crash("simulated SIGKILL");
    }
    return doubled(items, ctx);
  });
  auto o = options("crashy", 1);
  o.on_error = retrying(3);
  const std::uint64_t n = scaled(2'000);
  auto report = pool.run(o, numbered(n)).value();
  expect_each_once(report.results, n);
  for (const auto& r : report.results) ASSERT_TRUE(r.ok()) << r.item.id;
  const auto st = pool.stats();
  EXPECT_GT(st.worker_deaths, 0u);
  EXPECT_EQ(st.restarts, st.worker_deaths);
  EXPECT_EQ(pool.workers().size(), 3u);
}

TEST(LocalPool, ExactlyOnceWhileWorkersAreKilledFromOutside) {
  for (const bool retry : {false, true}) {
    auto pool = make_pool(4, 2);
    std::atomic<bool> done{false};
    std::atomic<int> kills{0};
    std::thread killer([&] {
      std::uint64_t round = 0;
      while (!done.load()) {
        const auto ws = pool.workers();
        if (!ws.empty() && pool.kill_worker(ws[round++ % ws.size()])) ++kills;
        std::this_thread::sleep_for(2ms);  // pacing, not a timing assertion
      }
    });
    auto o = options("double", 8);
    o.on_error = retry ? error_policy{retrying(100)} : error_policy{skip_policy{}};
    const std::uint64_t n = scaled(50'000);
    auto report = pool.run(o, numbered(n));
    done = true;
    killer.join();
    ASSERT_TRUE(report) << report.error().message;
    expect_each_once(report->results, n);
    std::size_t failed = 0;
    for (const auto& r : report->results) {
      if (!r.ok()) {
        ++failed;
        EXPECT_EQ(r.error->kind, failure_kind::worker_died);
      }
    }
    if (retry) {
      EXPECT_EQ(failed, 0u);
    }
    EXPECT_GT(kills.load(), 0);
    EXPECT_EQ(pool.stats().worker_deaths, static_cast<std::uint64_t>(kills.load()));
    EXPECT_EQ(pool.stats().workers.size(), 4u);
  }
}

TEST(LocalPool, HungHandlerTimesOutAndItsWorkerIsReplaced) {
  auto pool = make_pool(2, 1);
  pool.add_function("hangs_on_5", [](std::span<const Item> items, const batch_context& ctx) {
    for (const auto& i : items) {
      if (i.id == 5) {
        std::mutex m;
        std::condition_variable_any cv;
        std::unique_lock lock(m);
        cv.wait(lock, ctx.stop, [] { return false; });  // until the worker is killed
      }
    }
    return doubled(items, ctx);
  });
  auto o = options("hangs_on_5", 1);
  o.timeout = 500ms;
  o.on_error = skip_policy{};
  auto report = pool.run(o, numbered(10)).value();
  ASSERT_EQ(report.results.size(), 10u);
  for (const auto& r : report.results) {
    if (r.item.id == 5) {
      EXPECT_EQ(r.status, item_status::skipped);
      EXPECT_EQ(r.error->kind, failure_kind::timeout);
    } else {
      EXPECT_TRUE(r.ok()) << r.item.id;
    }
  }
  const auto st = pool.stats();
  EXPECT_EQ(st.timeouts, 1u);
  EXPECT_EQ(st.restarts, 1u);
}

TEST(LocalPool, ConsumerPullsInputOnlyAsFarAsTheWindow) {
  auto pool = make_pool();
  std::uint64_t pulled = 0;
  auto o = options("double", 8);
  o.max_in_flight = 4;
  const std::size_t window = job_window(o);
  auto job = pool.stream(o,
                         [&]() -> std::optional<Item> {
                           const std::uint64_t id = pulled++;
                           return wrap(Value(static_cast<std::int64_t>(id)), id);  // endless
                         })
                 .value();
  std::uint64_t consumed = 0;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(job.next());
    ++consumed;
    ASSERT_LE(pulled, consumed + window);
  }
  // The consumer pauses: its workers finish, and nothing more is read.
  const std::uint64_t at_pause = pulled;
  for (int spin = 0; spin < 10000; ++spin) {
    bool idle = true;
    for (const auto& w : pool.stats().workers) idle = idle && w.in_flight == 0;
    if (idle) break;
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(pulled, at_pause);
  EXPECT_LE(pulled, consumed + window);
}

TEST(LocalPool, RecyclingLosesNothingAndIsNoDeath) {
  auto pool = make_pool(2, 2);
  std::atomic<local_pool*> self{&pool};
  std::atomic<bool> recycled{false};
  pool.add_function("recycles", [&](std::span<const Item> items, const batch_context& ctx) {
    if (items.front().id == 100 && !recycled.exchange(true))
      self.load()->recycle_worker(ctx.worker);
    return doubled(items, ctx);
  });
  const std::uint64_t n = 1000;
  auto report = pool.run(options("recycles", 10), numbered(n)).value();
  expect_each_once(report.results, n);
  for (const auto& r : report.results) ASSERT_TRUE(r.ok());
  const auto st = pool.stats();
  EXPECT_EQ(st.worker_deaths, 0u);
  EXPECT_EQ(st.restarts, 1u);
}

TEST(LocalPool, StrictSessionStaysOnOneWorkerAndMovesWhenItDies) {
  auto pool = make_pool(3, 1);
  std::mutex mu;
  std::vector<worker_id> ran_on;
  pool.add_function("where", [&](std::span<const Item> items, const batch_context& ctx) {
    std::lock_guard lock(mu);
    ran_on.push_back(ctx.worker);
    EXPECT_EQ(ctx.context.session_id, "model");
    return doubled(items, ctx);
  });
  auto o = options("where", 4);
  o.context.session_id = "model";
  o.affinity = affinity_mode::strict;
  o.on_error = retrying(3);
  std::uint64_t next_id = 0;
  auto job = pool.stream(o,
                         [&]() -> std::optional<Item> {
                           if (next_id == 400) return std::nullopt;
                           const std::uint64_t id = next_id++;
                           return wrap(Value(static_cast<std::int64_t>(id)), id);
                         })
                 .value();
  std::vector<dispatch_result> results;
  bool killed = false;
  while (auto r = job.next()) {
    results.push_back(std::move(*r));
    if (results.size() == 200 && !killed) {
      std::lock_guard lock(mu);
      ASSERT_TRUE(pool.kill_worker(ran_on.front()));
      killed = true;
    }
  }
  expect_each_once(results, 400);
  for (const auto& r : results) EXPECT_TRUE(r.ok());
  const auto moves = job.moves();
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0].session, "model");
  std::lock_guard lock(mu);
  EXPECT_EQ(moves[0].from, ran_on.front());
  std::set<worker_id> homes(ran_on.begin(), ran_on.end());
  EXPECT_EQ(homes, (std::set<worker_id>{moves[0].from, moves[0].to}));
}

TEST(LocalPool, BadInputThrowsAndTheRestComesOutCancelled) {
  auto pool = make_pool(1, 1);
  auto o = options();
  o.batching = weighted_batch{100, [](const Item& i) { return i.id == 30 ? -1.0 : 1.0; }, 8};
  std::uint64_t next_id = 0;
  auto job = pool.stream(o,
                         [&]() -> std::optional<Item> {
                           if (next_id == 50) return std::nullopt;
                           const std::uint64_t id = next_id++;
                           return wrap(Value(static_cast<std::int64_t>(id)), id);
                         })
                 .value();
  std::vector<dispatch_result> results;
  bool threw = false;
  for (;;) {
    try {
      auto r = job.next();
      if (!r) break;
      results.push_back(std::move(*r));
    } catch (const error& e) {
      EXPECT_FALSE(threw);
      threw = true;
      EXPECT_NE(std::string(e.what()).find("item 30"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(threw);
  expect_each_once(results, 30);
}

TEST(LocalPool, ThrowingSourceIsAnError) {
  auto pool = make_pool(1, 1);
  auto job = pool.stream(options(),
                         []() -> std::optional<Item> { throw std::runtime_error("disk on fire"); })
                 .value();
  try {
    (void)job.next();
    FAIL() << "expected an error";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("disk on fire"), std::string::npos);
  }
  EXPECT_FALSE(job.next());
}

TEST(LocalPool, RefusesUnknownFunctionsAndBadOptions) {
  auto pool = make_pool(1, 1);
  auto unknown = pool.run(options("nope"), numbered(1));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, errc::not_found);
  EXPECT_NE(unknown.error().message.find("'nope'"), std::string::npos);
  auto bad = options();
  bad.max_in_flight = 0;
  EXPECT_FALSE(pool.run(bad, numbered(1)));
  local_pool_options zero;
  zero.workers = 0;
  auto none = local_pool::create(zero);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("'workers'"), std::string::npos);
}

TEST(LocalPool, JobsFromSeveralThreadsShareThePool) {
  auto pool = make_pool(3, 2);
  const std::uint64_t n = scaled(5'000);
  std::vector<std::thread> callers;
  std::vector<std::optional<dispatch_report>> reports(4);
  for (std::size_t t = 0; t < reports.size(); ++t) {
    callers.emplace_back([&, t] {
      auto r = pool.run(options("double", 4 + t), numbered(n, t * n));
      if (r) reports[t] = std::move(*r);
    });
  }
  for (auto& c : callers) c.join();
  for (std::size_t t = 0; t < reports.size(); ++t) {
    ASSERT_TRUE(reports[t]);
    ASSERT_EQ(reports[t]->results.size(), n);
    for (std::uint64_t i = 0; i < n; ++i) ASSERT_EQ(reports[t]->results[i].item.id, t * n + i);
  }
}

TEST(LocalPool, EmitsTelemetryFromItsThreads) {
  std::atomic<int> starts{0};
  std::atomic<int> stops{0};
  auto a = telemetry::attach("slither.dispatch.batch.",
                             [&](std::string_view event, const Map&, const Map&) {
                               if (event.ends_with(".start")) ++starts;
                               if (event.ends_with(".stop")) ++stops;
                             });
  auto pool = make_pool();
  auto report = pool.run(options("double", 10), numbered(1000)).value();
  EXPECT_EQ(starts.load(), 100);
  EXPECT_EQ(stops.load(), 100);
}

TEST(LocalPool, ClosingThePoolEndsOpenJobs) {
  std::optional<local_job> job;
  {
    auto pool = make_pool(1, 1);
    pool.add_function("slow", [](std::span<const Item> items, const batch_context& ctx) {
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      cv.wait(lock, ctx.stop, [] { return false; });
      return doubled(items, ctx);
    });
    std::uint64_t next_id = 0;
    job = pool.stream(options("slow", 1),
                      [&]() -> std::optional<Item> {
                        return next_id < 5 ? std::optional<Item>(wrap(Value(1), next_id++))
                                           : std::nullopt;
                      })
              .value();
    std::thread consumer([&] {
      std::size_t n = 0;
      while (job->next()) ++n;
      EXPECT_EQ(n, 5u);
    });
    // Wait until the consumer has fed the input and the worker holds a batch.
    for (int spin = 0; spin < 10000 && pool.stats().batches_sent == 0; ++spin) {
      std::this_thread::sleep_for(1ms);
    }
    pool = local_pool::create({}).value();  // the old pool closes here
    consumer.join();
  }
  ASSERT_TRUE(job->error());
  EXPECT_EQ(job->error()->type, "pool_closed");
}

}  // namespace
}  // namespace slither
