// Properties of the dispatch engine under random schedules: every item ends
// exactly once whatever dies when, backpressure bounds what is pulled, and
// ordering holds under random completion order. Seeded, so deterministic.
#include "slither/core/dispatch.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "dispatch_sim.hpp"

namespace slither {
namespace {

using namespace slither::testing;

// Poison, by item id: the handler kills its worker, raises, or fails the item.
bool kills_worker(std::uint64_t id) {
  return id % 9973 == 17;
}
bool raises(std::uint64_t id) {
  return id % 4999 == 3;
}
bool bad_item(std::uint64_t id) {
  return id % 997 == 5;
}

constexpr std::size_t batch_size = 64;

constexpr std::uint64_t chaos_items() {
  return 100'000;
}

struct chaos_report {
  std::vector<int> seen;            // by id: times it came out
  std::vector<item_status> status;  // by id
  std::vector<failure_kind> kind;   // by id, when not ok
  std::vector<std::uint64_t> order;
  std::uint64_t pulled = 0;
  std::uint64_t random_kills = 0;
  std::optional<dispatch_error> job_error;
};

// Runs one job over `n` items on 4 workers that die at random, with poison.
void run_chaos(error_policy policy, order_mode ordering, std::uint64_t seed, std::uint64_t n,
               chaos_report& rep) {
  sim s(verified(never_open()));
  s.respawn_credits = 2;
  for (int i = 0; i < 4; ++i) s.add_worker(2);
  auto o = job_options(batch_size, 8);
  o.ordering = ordering;
  o.on_error = std::move(policy);
  const job_id job = s.open(o);
  std::mt19937_64 rng(seed);
  const auto pick = [&](std::uint64_t bound) { return rng() % bound; };

  rep.seen.assign(n, 0);
  rep.status.assign(n, item_status::ok);
  rep.kind.assign(n, failure_kind::exception);
  const auto record = [&](const std::vector<dispatch_result>& rs) {
    for (const auto& r : rs) {
      ASSERT_LT(r.item.id, n);
      ++rep.seen[r.item.id];
      rep.status[r.item.id] = r.status;
      rep.order.push_back(r.item.id);
      if (r.ok()) {
        EXPECT_EQ(r.item.payload.as<std::int64_t>(), static_cast<std::int64_t>(r.item.id * 2));
      } else {
        ASSERT_TRUE(r.error);
        rep.kind[r.item.id] = r.error->kind;
      }
    }
  };
  const auto busy_workers = [&] {
    std::vector<worker_id> out;
    for (const auto& [w, list] : s.tasks) {
      if (!list.empty()) out.push_back(w);
    }
    return out;
  };

  bool closed = false;
  for (std::uint64_t steps = 0; s.engine.status(job).value().state != job_state::finished;
       ++steps) {
    ASSERT_LT(steps, 20'000'000u) << "no progress";
    const auto r = pick(100);
    if (r < 25) {
      const std::size_t cap = s.engine.input_capacity(job);
      if (cap > 0 && rep.pulled < n) {
        const auto k = std::min<std::uint64_t>(1 + pick(cap), n - rep.pulled);
        s.offer(job, numbered_items(k, rep.pulled));
        rep.pulled += k;
      }
      if (rep.pulled == n && !closed) {
        s.close(job);
        closed = true;
      }
    } else if (r < 75) {
      const auto busy = busy_workers();
      if (busy.empty()) continue;
      const worker_id w = busy[pick(busy.size())];
      const std::size_t index = pick(s.tasks[w].size());
      const auto& batch = *s.tasks[w][index].items;
      bool crash = false;
      bool raise = false;
      for (const auto& item : batch) {
        crash = crash || kills_worker(item.id);
        raise = raise || raises(item.id);
      }
      if (crash) {
        s.crash(w, "poison");
      } else if (raise) {
        s.fail(w, index, "poison raised");
      } else {
        s.complete(w, index, [](const Item& item) -> item_result {
          if (bad_item(item.id)) return item_failure("bad item");
          return doubled(item);
        });
      }
    } else if (r < 77) {
      const auto busy = busy_workers();
      if (busy.empty()) continue;
      s.crash(busy[pick(busy.size())], "random SIGKILL");
      ++rep.random_kills;
    } else if (r < 95) {
      record(s.take(job, 1 + pick(200)));
    } else {
      s.advance(std::chrono::milliseconds(pick(20)));
    }
  }
  record(s.take(job));
  rep.job_error = s.engine.status(job).value().error;
  EXPECT_TRUE(s.engine.check_accounting());
}

// Every item pulled came out exactly once, none that was not pulled.
void expect_exactly_once(const chaos_report& rep) {
  ASSERT_GT(rep.pulled, 0u);
  for (std::uint64_t id = 0; id < rep.seen.size(); ++id) {
    const int expected = id < rep.pulled ? 1 : 0;
    ASSERT_EQ(rep.seen[id], expected) << "item " << id;
  }
}

void expect_input_order(const chaos_report& rep) {
  for (std::size_t i = 1; i < rep.order.size(); ++i) {
    ASSERT_LT(rep.order[i - 1], rep.order[i]) << "at " << i;
  }
}

bool poisoned_batch(std::uint64_t id) {
  const std::uint64_t first = id / batch_size * batch_size;
  for (std::uint64_t i = first; i < first + batch_size; ++i) {
    if (kills_worker(i) || raises(i)) return true;
  }
  return false;
}

class Chaos : public ::testing::TestWithParam<order_mode> {};

TEST_P(Chaos, HaltEndsEveryPulledItemOnceAndStops) {
  chaos_report rep;
  run_chaos(halt_policy{}, GetParam(), 1, chaos_items(), rep);
  expect_exactly_once(rep);
  ASSERT_TRUE(rep.job_error);
  std::size_t failed = 0;
  for (std::uint64_t id = 0; id < rep.pulled; ++id) {
    const auto st = rep.status[id];
    EXPECT_TRUE(st == item_status::ok || st == item_status::failed || st == item_status::cancelled);
    failed += st == item_status::failed ? 1 : 0;
  }
  EXPECT_GE(failed, 1u);
  if (GetParam() == order_mode::preserve) expect_input_order(rep);
}

TEST_P(Chaos, SkipEndsEveryItemOnce) {
  chaos_report rep;
  run_chaos(skip_policy{}, GetParam(), 2, chaos_items(), rep);
  expect_exactly_once(rep);
  EXPECT_EQ(rep.pulled, chaos_items());
  EXPECT_FALSE(rep.job_error);
  for (std::uint64_t id = 0; id < rep.pulled; ++id) {
    EXPECT_TRUE(rep.status[id] == item_status::ok || rep.status[id] == item_status::skipped);
    if (bad_item(id)) {
      EXPECT_EQ(rep.status[id], item_status::skipped);
    }
  }
  EXPECT_GT(rep.random_kills, 0u);
  if (GetParam() == order_mode::preserve) expect_input_order(rep);
}

TEST_P(Chaos, RouteEndsEveryItemOnce) {
  chaos_report rep;
  run_chaos(route_policy{"errors"}, GetParam(), 3, chaos_items(), rep);
  expect_exactly_once(rep);
  EXPECT_EQ(rep.pulled, chaos_items());
  for (std::uint64_t id = 0; id < rep.pulled; ++id) {
    EXPECT_TRUE(rep.status[id] == item_status::ok || rep.status[id] == item_status::routed);
    if (raises(id)) {
      EXPECT_EQ(rep.status[id], item_status::routed);
    }
  }
  if (GetParam() == order_mode::preserve) expect_input_order(rep);
}

TEST_P(Chaos, RetryRecoversKilledBatchesAndQuarantinesPoison) {
  chaos_report rep;
  run_chaos(retrying(8, {1ms, 2.0, 50ms}, skip_policy{}), GetParam(), 4, chaos_items(), rep);
  expect_exactly_once(rep);
  EXPECT_EQ(rep.pulled, chaos_items());
  EXPECT_GT(rep.random_kills, 0u);
  std::size_t quarantined = 0;
  for (std::uint64_t id = 0; id < rep.pulled; ++id) {
    if (kills_worker(id)) {
      EXPECT_EQ(rep.kind[id], failure_kind::quarantined) << id;
      ++quarantined;
    } else if (poisoned_batch(id)) {
      EXPECT_EQ(rep.status[id], item_status::skipped) << id;
    } else if (bad_item(id)) {
      EXPECT_EQ(rep.kind[id], failure_kind::item_error) << id;
    } else {
      // Killed at random, maybe several times: retried until it ran.
      EXPECT_EQ(rep.status[id], item_status::ok) << id << " " << to_string(rep.kind[id]);
    }
  }
  EXPECT_GT(quarantined, 0u);
  if (GetParam() == order_mode::preserve) expect_input_order(rep);
}

INSTANTIATE_TEST_SUITE_P(Orderings, Chaos,
                         ::testing::Values(order_mode::preserve, order_mode::as_completed),
                         [](const auto& info) {
                           return info.param == order_mode::preserve ? "preserve" : "as_completed";
                         });

// With an endless input and a consumer that pauses at random, what was
// pulled never exceeds what was consumed plus the job's window.
void check_backpressure(batch_strategy strategy, std::uint64_t seed) {
  sim s;
  for (int i = 0; i < 3; ++i) s.add_worker(2);
  auto o = job_options();
  o.batching = std::move(strategy);
  o.max_in_flight = 4;
  const std::size_t window = job_window(o);
  const job_id job = s.open(o);
  std::mt19937_64 rng(seed);
  std::uint64_t pulled = 0;
  std::uint64_t consumed = 0;
  for (int phase = 0; phase < 200; ++phase) {
    // 0: a pause (the consumer takes nothing, however long the workers run).
    std::uint64_t budget = rng() % 3 == 0 ? 0 : rng() % 300;
    for (;;) {
      bool progress = false;
      if (const std::size_t cap = s.engine.input_capacity(job); cap > 0) {
        s.offer(job, numbered_items(cap, pulled));
        pulled += cap;
        progress = true;
      }
      for (auto& [w, list] : s.tasks) {
        if (!list.empty()) {
          s.complete(w, rng() % list.size());
          progress = true;
          break;
        }
      }
      if (budget > 0) {
        const auto got = s.take(job, budget).size();
        consumed += got;
        budget -= got;
        progress = progress || got > 0;
      }
      ASSERT_LE(pulled, consumed + window) << "phase " << phase;
      if (!progress) break;
    }
    if (budget > 0) continue;
    // Quiet now: the workers are idle and the window is exactly full.
    EXPECT_EQ(s.running(), 0u);
    EXPECT_EQ(pulled, consumed + window) << "phase " << phase;
  }
  EXPECT_GT(consumed, 1000u);
}

TEST(DispatchBackpressure, FixedBatchesPullNoMoreThanConsumedPlusTheWindow) {
  check_backpressure(fixed_batch{16}, 5);
}

TEST(DispatchBackpressure, WeightedBatchesPullNoMoreThanConsumedPlusTheWindow) {
  check_backpressure(
      weighted_batch{10, [](const Item& i) { return static_cast<double>(i.id % 7); }, 16}, 6);
}

TEST(DispatchBackpressure, KeyPartitionPullsNoMoreThanConsumedPlusTheWindow) {
  check_backpressure(key_partition{[](const Item& i) { return std::to_string(i.id % 5); }, 16}, 7);
}

TEST(DispatchOrdering, AsCompletedFollowsCompletionOrderUnderRandomDelays) {
  sim s;
  for (int i = 0; i < 3; ++i) s.add_worker(3);
  auto o = job_options(8, 6);
  o.ordering = order_mode::as_completed;
  const job_id job = s.open(o);
  std::mt19937_64 rng(8);
  std::vector<std::uint64_t> completed;
  std::vector<std::uint64_t> taken;
  std::uint64_t pulled = 0;
  while (pulled < 5000 || s.running() > 0) {
    if (const auto cap = s.engine.input_capacity(job); cap > 0 && pulled < 5000) {
      const auto k = std::min<std::uint64_t>(cap, 5000 - pulled);
      s.offer(job, numbered_items(k, pulled));
      pulled += k;
    }
    std::vector<worker_id> busy;
    for (const auto& [w, list] : s.tasks) {
      if (!list.empty()) busy.push_back(w);
    }
    const worker_id w = busy[rng() % busy.size()];
    const auto t = s.complete(w, rng() % s.tasks[w].size());
    for (const auto& item : *t.items) completed.push_back(item.id);
    for (const auto& r : s.take(job)) taken.push_back(r.item.id);
  }
  EXPECT_EQ(taken, completed);
  std::vector<std::uint64_t> sorted = taken;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(sorted, taken) << "random completion should have reordered something";
}

}  // namespace
}  // namespace slither
