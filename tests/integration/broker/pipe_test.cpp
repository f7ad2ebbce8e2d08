// Pipes whose python stages run on a broker's pool of worker processes
// (slither-test-worker): results back on their items, policies, poison items
// and SIGKILLed workers with every item accounted for, streaming with bounded
// pulls, and runs against the slither-broker executable's client endpoint.
#include "slither/broker/pipe.hpp"

#include <ranges>
#include <set>

#include "dispatch_fixture.hpp"

namespace slither::test_support {
namespace {

std::int64_t as_int(const Item& item) {
  return item.payload.as<std::int64_t>();
}

step plus_one(Item& item, Context&) {
  return as_int(item) + 1;
}

python_options py(std::string function, std::size_t batch = 8, std::uint32_t in_flight = 4) {
  python_options o;
  o.module = "test";
  o.function = std::move(function);
  o.batch_size = batch;
  o.max_in_flight = in_flight;
  return o;
}

// Every id of [0, n) exactly once across the outputs, failures, error and unfinished.
void expect_accounted(const pipe_run& r, std::uint64_t n) {
  std::multiset<std::uint64_t> seen(r.unfinished.begin(), r.unfinished.end());
  for (const auto& f : r.failures) seen.insert(f.item);
  if (r.error) seen.insert(r.error->item);
  seen.insert(r.skipped.begin(), r.skipped.end());
  for (const auto& [name, items] : r.outputs) {
    for (const Item& i : items) seen.insert(i.id);
  }
  EXPECT_EQ(seen.size(), n);
  for (std::uint64_t id : std::set<std::uint64_t>(seen.begin(), seen.end())) {
    if (seen.count(id) == 1) continue;
    std::string where;
    for (auto u : r.unfinished) where += u == id ? "unfinished " : "";
    for (const auto& f : r.failures) where += f.item == id ? "failures " : "";
    if (r.error && r.error->item == id) where += "error ";
    for (const auto& [name, items] : r.outputs) {
      for (const Item& i : items) where += i.id == id ? name + " " : "";
    }
    ADD_FAILURE() << "item " << id << " ended more than once: " << where;
  }
  EXPECT_EQ(std::set<std::uint64_t>(seen.begin(), seen.end()).size(), n);
  if (!seen.empty()) {
    EXPECT_EQ(*seen.rbegin(), n - 1);
  }
}

using PipeBroker = DispatchTest;

TEST_F(PipeBroker, NativePythonRouterOnWorkerProcesses) {
  Broker& b = start(2);
  Pipe p("score");
  p.native("prepare", plus_one)
      .python("predict", py("double"))
      .router("route",
              {{[](const Item& i, const Context&) { return as_int(i) % 4 == 0; }, "accept"}})
      .output("accept");
  std::vector<Item> input = numbered(2000);
  input[7].meta.insert_or_assign("tag", "kept");
  auto r = run(b, p, input, {.session_id = "s1"}).value();
  ASSERT_TRUE(r.ok()) << r.error->describe();
  EXPECT_EQ(r.outputs["accept"].size() + r.outputs["default"].size(), 2000u);
  for (const auto& [name, items] : r.outputs) {
    for (const Item& i : items) {
      ASSERT_EQ(as_int(i), (static_cast<std::int64_t>(i.id) + 1) * 2);
      if (i.id == 7) {
        EXPECT_EQ(i.meta.at("tag"), Value("kept"));
      }
    }
  }
  const auto& def = r.outputs["default"];
  for (std::size_t k = 1; k < def.size(); ++k) ASSERT_LT(def[k - 1].id, def[k].id);
  expect_accounted(r, 2000);
}

TEST_F(PipeBroker, PythonStagesBatchByWeightAndByKeyOnWorkerProcesses) {
  Broker& b = start(2);
  // Each item comes back as the list of the values its batch held.
  auto batches = [](const pipe_run& r) {
    std::set<std::vector<std::int64_t>> out;
    for (const Item& i : r.outputs.at("default")) {
      std::vector<std::int64_t> batch;
      for (const auto& v : i.payload.as<List>()) batch.push_back(v.as<std::int64_t>());
      out.insert(batch);
    }
    return out;
  };
  python_options weighted = py("batch_of", 6, 2);
  weighted.weight_fn = [](const Item& i) { return static_cast<double>(as_int(i) % 10); };
  weighted.max_weight = 12;
  auto r = run(b, Pipe("weighted").python("model", weighted), numbered(1000)).value();
  ASSERT_TRUE(r.ok()) << r.error->describe();
  std::size_t seen = 0;
  for (const auto& batch : batches(r)) {
    std::int64_t weight = 0;
    for (auto v : batch) weight += v % 10;
    EXPECT_TRUE(weight <= 12 || batch.size() == 1) << "a batch of weight " << weight;
    EXPECT_LE(batch.size(), 6u);
    seen += batch.size();
  }
  EXPECT_EQ(seen, 1000u);
  expect_accounted(r, 1000);

  python_options keyed = py("batch_of", 5, 4);
  keyed.key_fn = [](const Item& i) { return std::to_string(as_int(i) % 3); };
  r = run(b, Pipe("keyed").native("same", plus_one).python("model", keyed), numbered(1000)).value();
  ASSERT_TRUE(r.ok()) << r.error->describe();
  seen = 0;
  for (const auto& batch : batches(r)) {
    for (auto v : batch) EXPECT_EQ(v % 3, batch.front() % 3) << "a batch mixes keys";
    EXPECT_LE(batch.size(), 5u);
    seen += batch.size();
  }
  EXPECT_EQ(seen, 1000u);
  expect_accounted(r, 1000);
}

TEST_F(PipeBroker, PoisonItemsUnderSkipAreReportedAndTheRestComeOut) {
  Broker& b = start(2);
  Pipe p("poison");
  p.python("work", py("work", 4)).on_error("*", on_error::skip());
  // Items with value % 50 == 3 fail alone (ItemError); batches holding a
  // value % 97 == 5 raise as a whole.
  auto r =
      run(b, p, numbered(1000),
          {.metadata = Map{{"bad_mod", 50}, {"bad_rem", 3}, {"raise_mod", 97}, {"raise_rem", 5}}})
          .value();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.failures.empty());
  bool item_error = false;
  bool raised = false;
  for (const auto& f : r.failures) {
    EXPECT_EQ(f.stage, "work");
    item_error = item_error || (f.cause.kind == failure_kind::item_error && f.item % 50 == 3);
    raised = raised || f.cause.kind == failure_kind::exception;
  }
  EXPECT_TRUE(item_error);
  EXPECT_TRUE(raised);
  expect_accounted(r, 1000);
}

TEST_F(PipeBroker, AHaltReportsTheStageItemAndCauseWithPartialOutputs) {
  Broker& b = start(2);
  Pipe p("halting");
  p.native("prepare", [](Item& item, Context&) {
     return step(as_int(item));
   }).python("work", py("work", 4, 2));
  auto r =
      run(b, p, numbered(3000), {.metadata = Map{{"bad_mod", 1000}, {"bad_rem", 700}}}).value();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->stage, "work");
  EXPECT_EQ(r.error->item % 1000, 700u);
  EXPECT_EQ(r.error->cause.type, "ValueError");
  EXPECT_FALSE(r.outputs["default"].empty());
  expect_accounted(r, 3000);
}

TEST_F(PipeBroker, SigkilledWorkersUnderRetryLoseNoItem) {
  Broker& b = start(2);
  ASSERT_TRUE(wait_workers(2));
  Pipe p("chaos");
  p.native("prepare", [](Item& item, Context&) { return step(as_int(item)); })
      .python("work", py("work", 4, 4))
      .on_error("work", on_error::retry(5, backoff{5ms, 1.0, 5ms}, skip_policy{}));
  std::atomic<bool> done{false};
  std::thread killer([&] {
    // Kill a worker mid-run, twice.
    for (int k = 0; k < 2 && !done; ++k) {
      std::this_thread::sleep_for(150ms);
      const auto pids = worker_pids();
      if (!pids.empty()) ::kill(pids.front(), SIGKILL);
    }
  });
  auto r = run(b, p, numbered(3000), {.metadata = Map{{"delay_mod", 3}}});
  done = true;
  killer.join();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok());
  EXPECT_GE(count(pool_stats(), "worker_deaths"), 1);  // the kills landed mid-run
  expect_accounted(*r, 3000);
  EXPECT_GE(r->outputs["default"].size() + r->failures.size(), 3000u);
}

TEST_F(PipeBroker, APoisonBatchThatKillsItsWorkerIsReportedNotLost) {
  Broker& b = start(2);
  Pipe p("crash");
  p.python("risky", py("crash_on", 4, 2))
      .on_error("risky", on_error::retry(2, backoff{5ms, 1.0, 5ms}, skip_policy{}));
  auto r = run(b, p, numbered(200), {.metadata = Map{{"poison", 77}}}).value();
  ASSERT_TRUE(r.ok());
  bool poisoned = false;
  for (const auto& f : r.failures) poisoned = poisoned || f.item == 77;
  EXPECT_TRUE(poisoned);
  expect_accounted(r, 200);
}

TEST_F(PipeBroker, RouteOnErrorSendsFailedItemsToTheirOutput) {
  Broker& b = start(2);
  Pipe p("routed");
  p.python("work", py("work", 4)).output("errors").on_error("work", on_error::route("errors"));
  auto r = run(b, p, numbered(100), {.metadata = Map{{"bad_mod", 10}, {"bad_rem", 1}}}).value();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.outputs["errors"].size(), 10u);
  for (const Item& i : r.outputs["errors"]) {
    EXPECT_EQ(i.id % 10, 1u);
    EXPECT_EQ(i.route, "errors");
    EXPECT_EQ(Value(i.meta.at("error"))["type"], Value("ValueError"));
  }
  expect_accounted(r, 100);
}

TEST_F(PipeBroker, StreamsAnEndlessInputWithBoundedPulls) {
  Broker& b = start(2);
  Pipe p("endless");
  p.native("prepare", plus_one).python("predict", py("double", 4, 2));
  auto endless = std::views::iota(std::int64_t{0}) | std::views::transform([](std::int64_t i) {
                   return wrap(Value(i), static_cast<std::uint64_t>(i));
                 });
  run_options o;
  o.queue_items = 16;
  o.chunk_items = 4;
  auto s = stream(b, p, endless, o).value();
  std::size_t n = 0;
  for (auto& out : s) {
    EXPECT_EQ(as_int(out.item), (static_cast<std::int64_t>(out.item.id) + 1) * 2);
    if (++n == 200) break;
  }
  EXPECT_EQ(n, 200u);
  // The queues, what each stage holds, and the python stage's window (8).
  EXPECT_LE(s.pulled(), 200u + 3 * (16 + 4) + 4 + 8 + 8);
}

TEST_F(PipeBroker, StoresMustExistAndPoolsMustBeKnown) {
  Broker& b = start(1);
  Pipe p("stores");
  p.python("predict", py("double")).store("nope");
  auto r = run(b, p, numbered(3));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
  EXPECT_NE(r.error().message.find("no store 'nope'"), std::string::npos);

  Pipe q("pools");
  auto opts = py("double");
  opts.pool = "missing";
  q.python("predict", opts);
  auto rq = run(b, q, numbered(3));
  ASSERT_FALSE(rq);
  EXPECT_NE(rq.error().message.find("python stage 'predict'"), std::string::npos);
}

TEST_F(PipeBroker, RunsThroughAClientConnection) {
  start(2);
  Pipe p("remote");
  p.python("predict", py("double"));
  auto r = run(where(), p, numbered(300)).value();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.outputs["default"].size(), 300u);
  EXPECT_EQ(as_int(r.outputs["default"][299]), 598);
}

}  // namespace
}  // namespace slither::test_support
