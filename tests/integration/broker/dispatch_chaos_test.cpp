// Exactly-once accounting through real worker processes: 100k items with
// poison items (the handler raises) and item errors, while a thread SIGKILLs
// random workers, for every error policy. Every item must come out exactly
// once, as a result or as an error; under retry, no killed batch is lost.
#include <gtest/gtest.h>

#include <random>

#include "dispatch_fixture.hpp"

namespace slither {
namespace {

using namespace test_support;

constexpr std::uint64_t items_n = 100'000;

bool bad(std::uint64_t v) {
  return v % 997 == 5;
}

// Whether the batch of 64 holding item `v` holds a poison item (it raises).
bool in_poison_batch(std::uint64_t v) {
  const std::uint64_t first = v / 64 * 64;
  for (std::uint64_t i = first; i < first + 64; ++i) {
    if (i % 9973 == 17) return true;
  }
  return false;
}

struct chaos_case {
  std::string name;
  error_policy policy;
};

class DispatchChaosTest : public DispatchTest, public ::testing::WithParamInterface<chaos_case> {};

TEST_P(DispatchChaosTest, EveryItemEndsExactlyOnceWhileWorkersDie) {
  auto p = pool(3);
  p.breaker.max_deaths = 1'000'000;  // deliberate deaths: keep dispatching
  Broker& b = start(options({p}));
  ASSERT_TRUE(wait_workers(3));
  auto o = job("work", 64, 8);
  // Batches take 0-2 ms (by their first item), so that the job lasts long
  // enough (about 0.5 s) for the kills to land however fast dispatch gets.
  o.context.metadata = Map{
      {"raise_mod", 9973}, {"raise_rem", 17}, {"bad_mod", 997}, {"bad_rem", 5}, {"delay_mod", 3}};
  o.on_error = GetParam().policy;

  std::atomic<bool> done{false};
  std::atomic<int> kills{0};
  std::thread killer([&] {
    std::mt19937 rng(7);
    auto c = client::connect(where()).value();
    while (!done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 20));
      auto st = c.stats();
      if (!st) continue;
      const Value* ws = st->find("dispatch")->find("pools")->find("default")->find("workers");
      if (ws == nullptr || ws->as<List>().empty()) continue;
      const auto& list = ws->as<List>();
      const auto pid = list[rng() % list.size()].find("pid")->as<std::int64_t>();
      if (!done && pid > 0 && ::kill(static_cast<pid_t>(pid), SIGKILL) == 0) ++kills;
    }
  });
  auto report = dispatch(b, numbered(items_n), o);
  done = true;
  killer.join();
  ASSERT_TRUE(report) << report.error().message;

  std::vector<int> seen(items_n, 0);
  std::size_t ok = 0, died = 0, raised = 0, item_errors = 0, cancelled = 0, lost = 0;
  for (const auto& r : report->results) {
    ASSERT_LT(r.item.id, items_n);
    ++seen[r.item.id];
    if (r.ok()) {
      ++ok;
      EXPECT_EQ(r.item.payload.as<std::int64_t>(), static_cast<std::int64_t>(2 * r.item.id));
      EXPECT_FALSE(bad(r.item.id)) << r.item.id;
      continue;
    }
    ASSERT_TRUE(r.error);
    switch (r.error->kind) {
      case failure_kind::worker_died:
      case failure_kind::quarantined:
        ++died;
        // A poison batch may end on an attempt a random kill cut short.
        if (!in_poison_batch(r.item.id)) ++lost;
        break;
      case failure_kind::exception:
        ++raised;
        EXPECT_EQ(r.error->type, "RuntimeError");
        break;
      case failure_kind::item_error:
        ++item_errors;
        EXPECT_TRUE(bad(r.item.id));
        break;
      default:
        ++cancelled;
        break;
    }
  }
  for (std::uint64_t i = 0; i < items_n; ++i) ASSERT_EQ(seen[i], 1) << "item " << i;
  const bool halt = std::holds_alternative<halt_policy>(GetParam().policy);
  // A halting job ends at its first failure: the poison item 17 in its first
  // batch may come before the first kill, so only the others must see kills.
  if (halt) {
    EXPECT_TRUE(report->error) << "the job halted at its first failure";
  } else {
    EXPECT_GT(kills.load(), 0);
    EXPECT_FALSE(report->error) << report->error->describe();
    EXPECT_EQ(cancelled, 0u);
    EXPECT_GT(item_errors, 0u) << "bad items fail alone (unless their whole batch failed)";
    EXPECT_GE(raised, 64u) << "poison batches failed whole";
  }
  if (std::holds_alternative<retry_policy>(GetParam().policy)) {
    EXPECT_EQ(lost, 0u) << "retry recovers every healthy batch a kill interrupted";
  }
  std::cerr << GetParam().name << ": " << ok << " ok, " << died << " died, " << raised
            << " raised, " << item_errors << " item errors, " << cancelled << " cancelled, "
            << kills << " workers killed\n";
}

retry_policy retrying() {
  retry_policy r;
  r.max_attempts = 8;
  r.delay = backoff{std::chrono::milliseconds(0), 1.0, std::chrono::milliseconds(0)};
  r.then = skip_policy{};
  return r;
}

INSTANTIATE_TEST_SUITE_P(Policies, DispatchChaosTest,
                         ::testing::Values(chaos_case{"halt", halt_policy{}},
                                           chaos_case{"skip", skip_policy{}},
                                           chaos_case{"route", route_policy{"bad"}},
                                           chaos_case{"retry", retrying()}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace slither
