// The Pipe builder's validation, and every native stage kind, return form and
// error policy, run in process.
#include "slither/core/pipe.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "pipe_items.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;

using testing::as_int;
using testing::numbered;
using testing::plus_one;

std::string error_of(const Pipe& p) {
  auto r = p.validate();
  return r ? std::string() : r.error().message;
}

predicate is_even() {
  return [](const Item& i, const Context&) { return as_int(i) % 2 == 0; };
}

TEST(PipeBuild, RejectsDuplicateStageNames) {
  Pipe p("p");
  p.native("a", plus_one).native("a", plus_one);
  EXPECT_EQ(error_of(p), "pipe 'p': stage name 'a' is used twice");
}

TEST(PipeBuild, RejectsRoutesToUndeclaredOutputs) {
  Pipe p("score");
  p.router("route", {{is_even(), "accept"}, {is_even(), "reject"}}).output("accept");
  EXPECT_EQ(error_of(p), "pipe 'score': router 'route' routes to undeclared output 'reject'");
  p.output("reject");
  EXPECT_EQ(error_of(p), "");
}

TEST(PipeBuild, RejectsOnErrorForUnknownStagesAndRoutePoliciesToUnknownOutputs) {
  Pipe p("p");
  p.native("a", plus_one).on_error("b", on_error::skip());
  EXPECT_EQ(error_of(p), "pipe 'p': on_error for unknown stage 'b'");
  Pipe q("q");
  q.native("a", plus_one).on_error("*", on_error::route("bad"));
  EXPECT_EQ(error_of(q), "pipe 'q': on_error for '*' routes to undeclared output 'bad'");
  Pipe r("r");
  r.native("a", plus_one).on_error("a", on_error::retry(3, {}, route_policy{"bad"}));
  EXPECT_EQ(error_of(r), "pipe 'r': on_error for 'a' routes to undeclared output 'bad'");
}

TEST(PipeBuild, RejectsPythonStagesWithoutModuleOrFunction) {
  Pipe p("p");
  p.python("predict", {.module = "m", .function = ""});
  EXPECT_EQ(error_of(p),
            "pipe 'p': python stage 'predict' needs both a module and a function (got 'm:')");
  Pipe q("q");
  q.python("predict", {.module = "", .function = "f"});
  EXPECT_NE(error_of(q).find("needs both a module and a function"), std::string::npos);
}

TEST(PipeBuild, RejectsEmptyPipesBadOptionsAndDuplicateOutputs) {
  EXPECT_EQ(error_of(Pipe("p")), "pipe 'p': it has no stages");
  EXPECT_NE(error_of(Pipe("p").native("a", plus_one, {.concurrency = 0})).find("concurrency"),
            std::string::npos);
  EXPECT_NE(error_of(Pipe("p").native("a", plus_one).output("x").output("x")).find("twice"),
            std::string::npos);
  EXPECT_NE(error_of(Pipe("p").native("a", plus_one).on_error("a", on_error::retry(0)))
                .find("max_attempts"),
            std::string::npos);
  EXPECT_NE(error_of(Pipe("p").native("a", item_fn{})).find("no function"), std::string::npos);
}

TEST(PipeBuild, RunRefusesAnInvalidPipeAndPythonStagesWithoutARunner) {
  auto r = run(Pipe("p"), numbered(3));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  auto py = run(Pipe("p").python("predict", {.module = "m", .function = "f"}), numbered(3));
  ASSERT_FALSE(py);
  EXPECT_NE(py.error().message.find("needs a batch runner"), std::string::npos);
}

TEST(PipeRun, MapsAndRoutesWithUnmatchedItemsInDefault) {
  Pipe p("score");
  p.native("prepare", plus_one)
      .native("double", [](Item& item, Context&) -> step { return as_int(item) * 2; })
      .router("route",
              {{[](const Item& i, const Context&) { return as_int(i) % 4 == 0; }, "four"},
               {[](const Item& i, const Context&) { return as_int(i) % 3 == 0; }, "three"}})
      .output("four")
      .output("three");
  auto r = run(p, numbered(100)).value();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.outputs.size(), 3u);
  std::size_t total = 0;
  for (const auto& [name, items] : r.outputs) {
    total += items.size();
    for (const Item& item : items) {
      const std::int64_t v = as_int(item);
      EXPECT_EQ(v, (static_cast<std::int64_t>(item.id) + 1) * 2);
      if (name == "four") {
        EXPECT_EQ(v % 4, 0);
      } else if (name == "three") {
        EXPECT_TRUE(v % 4 != 0 && v % 3 == 0);
      } else {
        EXPECT_TRUE(v % 4 != 0 && v % 3 != 0);
      }
      if (name != "default") {
        EXPECT_EQ(item.route, name);
      }
    }
  }
  EXPECT_EQ(total, 100u);
  // One thread per stage: each output keeps input order.
  const auto& four = r.outputs["four"];
  for (std::size_t k = 1; k < four.size(); ++k) EXPECT_LT(four[k - 1].id, four[k].id);
}

TEST(PipeRun, EveryReturnForm) {
  Pipe p("forms");
  p.native("forms",
           [](Item& item, Context&) -> step {
             switch (as_int(item) % 6) {
               case 0:
                 item.meta.insert_or_assign("kept", true);
                 return step::keep();
               case 1:
                 return Value("payload");
               case 2:
                 return step::many({Value(10), Value(20)});
               case 3:
                 return step::skip();
               case 4:
                 return step::route("side");
               default:
                 return step::fail("five");
             }
           })
      .output("side")
      .on_error("*", on_error::skip());
  std::vector<Item> input = numbered(6);
  input[2].meta.insert_or_assign("tag", "mine");
  auto r = run(p, input).value();
  ASSERT_TRUE(r.ok());
  const auto& def = r.outputs["default"];
  ASSERT_EQ(def.size(), 4u);
  EXPECT_EQ(def[0].id, 0u);
  EXPECT_TRUE(def[0].meta.at("kept").as<bool>());
  EXPECT_EQ(def[1].payload, Value("payload"));
  for (int k : {2, 3}) {
    EXPECT_GE(def[k].id, std::uint64_t{1} << 63);
    EXPECT_EQ(def[k].meta.at("parent").as<std::int64_t>(), 2);
    EXPECT_EQ(def[k].meta.at("tag"), Value("mine"));
  }
  EXPECT_EQ(def[2].payload, Value(10));
  EXPECT_EQ(def[3].payload, Value(20));
  EXPECT_EQ(r.skipped, std::vector<std::uint64_t>{3});
  ASSERT_EQ(r.outputs["side"].size(), 1u);
  EXPECT_EQ(r.outputs["side"][0].id, 4u);
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].item, 5u);
  EXPECT_EQ(r.failures[0].stage, "forms");
  EXPECT_EQ(r.failures[0].cause.message, "five");
  EXPECT_EQ(r.failures[0].cause.kind, failure_kind::item_error);
}

TEST(PipeRun, RoutingToAnUndeclaredOutputFailsTheItem) {
  Pipe p("p");
  p.native("a", [](Item&, Context&) {
     return step::route("nowhere");
   }).on_error("a", on_error::skip());
  auto r = run(p, numbered(2)).value();
  ASSERT_EQ(r.failures.size(), 2u);
  EXPECT_NE(r.failures[0].cause.message.find("undeclared output 'nowhere'"), std::string::npos);
}

TEST(PipeRun, BatchStagesGetChunksAndOneStepPerItem) {
  std::atomic<std::size_t> biggest{0};
  Pipe p("p");
  p.native_batch("sum",
                 [&](std::span<Item> items, Context&) {
                   if (items.size() > biggest) biggest = items.size();
                   std::vector<step> out;
                   for (Item& i : items) out.emplace_back(as_int(i) * 10);
                   return out;
                 },
                 {.batch_size = 7});
  auto r = run(p, numbered(50)).value();
  ASSERT_EQ(r.outputs["default"].size(), 50u);
  EXPECT_LE(biggest.load(), 7u);
  EXPECT_EQ(as_int(r.outputs["default"][49]), 490);
}

TEST(PipeRun, ABatchFunctionThatThrowsOrMiscountsFailsItsItems) {
  Pipe p("p");
  p.native_batch("b",
                 [](std::span<Item> items, Context&) -> std::vector<step> {
                   if (as_int(items[0]) == 0) throw std::runtime_error("boom");
                   return {};
                 },
                 {.batch_size = 2})
      .on_error("*", on_error::skip());
  auto r = run(p, numbered(4)).value();
  ASSERT_EQ(r.failures.size(), 4u);
  EXPECT_EQ(r.failures[0].cause.kind, failure_kind::exception);
  EXPECT_EQ(r.failures[0].cause.type, "std::runtime_error");
  EXPECT_EQ(r.failures[0].cause.message, "boom");
  EXPECT_NE(r.failures[2].cause.message.find("returned 0 steps for 2 items"), std::string::npos);
}

TEST(PipeRun, AStageExceptionReportsItsOwnTypeFromEveryStageKind) {
  auto raise = [](const char* type) { throw stage_exception(type, "from a binding"); };
  Pipe p("p");
  p.native("item",
           [&](Item& item, Context&) -> step {
             if (as_int(item) == 0) raise("ValueError");
             return step::keep();
           })
      .native_batch("batch",
                    [&](std::span<Item> items, Context&) -> std::vector<step> {
                      if (as_int(items[0]) == 1) raise("KeyError");
                      return std::vector<step>(items.size());
                    },
                    {.batch_size = 1})
      .router("route", {{[&](const Item& item, const Context&) -> bool {
                           if (as_int(item) == 2) raise("TypeError");
                           return false;
                         },
                         "default"}})
      .on_error("*", on_error::skip());
  auto r = run(p, numbered(4)).value();
  ASSERT_EQ(r.failures.size(), 3u);
  std::map<std::string, std::string> type_by_stage;
  for (const auto& f : r.failures) {
    EXPECT_EQ(f.cause.kind, failure_kind::exception);
    EXPECT_EQ(f.cause.message, "from a binding");
    type_by_stage[f.stage] = f.cause.type;
  }
  EXPECT_EQ(type_by_stage["item"], "ValueError");
  EXPECT_EQ(type_by_stage["batch"], "KeyError");
  EXPECT_EQ(type_by_stage["route"], "TypeError");
  EXPECT_EQ(r.outputs["default"].size(), 1u);
}

TEST(PipeRun, ABatchRouterDecidesAChunkAtATime) {
  std::atomic<std::size_t> calls{0};
  Pipe p("p");
  p.router_batch("route", {"even", "big"},
                 [&](std::span<Item> items, Context& ctx) {
                   ++calls;
                   EXPECT_EQ(ctx.stage, "route");
                   std::vector<step> out;
                   for (Item& i : items) {
                     if (as_int(i) == 7) {
                       out.emplace_back(error_info{errc::internal, "ValueError: seven"});
                     } else if (as_int(i) % 2 == 0) {
                       out.push_back(step::route("even"));
                     } else if (as_int(i) > 5) {
                       out.push_back(step::route("big"));
                     } else {
                       out.emplace_back();  // unmatched: on to "default"
                     }
                   }
                   return out;
                 })
      .output("even")
      .output("big")
      .on_error("*", on_error::skip());
  auto r = run(p, numbered(10), {.chunk_items = 16}).value();
  EXPECT_EQ(r.outputs["even"].size(), 5u);
  ASSERT_EQ(r.outputs["big"].size(), 1u);
  EXPECT_EQ(as_int(r.outputs["big"][0]), 9);
  EXPECT_EQ(r.outputs["default"].size(), 3u);
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].item, 7u);
  EXPECT_EQ(r.failures[0].cause.type, "ValueError");
  EXPECT_EQ(calls.load(), 1u);  // one chunk, one call

  Pipe bad("bad");
  bad.router_batch("route", {"nowhere"},
                   [](std::span<Item> items, Context&) { return std::vector<step>(items.size()); });
  EXPECT_NE(error_of(bad).find("router 'route' routes to undeclared output 'nowhere'"),
            std::string::npos);
}

TEST(PipeRun, HaltStopsTheRunWithTheErrorAndPartialOutputs) {
  Pipe p("p");
  p.native("a", plus_one).native("check", [](Item& item, Context&) -> step {
    if (item.id == 500) throw std::invalid_argument("poison 500");
    return step::keep();
  });
  std::vector<Item> input = numbered(5000);
  auto r = run(p, input, {.queue_items = 16, .chunk_items = 4}).value();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->stage, "check");
  EXPECT_EQ(r.error->item, 500u);
  EXPECT_EQ(r.error->cause.type, "std::invalid_argument");
  EXPECT_EQ(
      r.error->describe().rfind("stage 'check', item 500: std::invalid_argument: poison 500", 0),
      0u);
  // Every input id ends exactly once: an output, the error, or unfinished.
  std::multiset<std::uint64_t> seen(r.unfinished.begin(), r.unfinished.end());
  seen.insert(r.error->item);
  for (const Item& i : r.outputs["default"]) seen.insert(i.id);
  EXPECT_EQ(seen.size(), 5000u);
  EXPECT_EQ(std::set<std::uint64_t>(seen.begin(), seen.end()).size(), 5000u);
  EXPECT_FALSE(r.unfinished.empty());  // the run stopped early
}

TEST(PipeRun, RouteOnErrorPutsTheErrorInMeta) {
  Pipe p("p");
  p.native("a",
           [](Item& item, Context&) -> step {
             if (as_int(item) == 1) return error_info{errc::not_found, "no row 1"};
             return step::keep();
           })
      .output("errors")
      .on_error("a", on_error::route("errors"));
  auto r = run(p, numbered(3)).value();
  ASSERT_EQ(r.outputs["errors"].size(), 1u);
  const Item& bad = r.outputs["errors"][0];
  EXPECT_EQ(bad.id, 1u);
  EXPECT_EQ(bad.route, "errors");
  const Value err(bad.meta.at("error"));
  EXPECT_EQ(err["stage"], Value("a"));
  EXPECT_EQ(err["type"], Value("not_found"));
  EXPECT_EQ(err["message"], Value("no row 1"));
  EXPECT_EQ(err["kind"], Value("item_error"));
  EXPECT_EQ(r.outputs["default"].size(), 2u);
}

TEST(PipeRun, RetryRunsAgainOnTheOriginalItemThenFallsBack) {
  std::atomic<int> calls_for_3{0};
  std::atomic<int> calls_for_4{0};
  Pipe p("p");
  p.native("flaky", [&](Item& item, Context&) -> step {
     const auto v = as_int(item);
     item.payload = Value("mutated");  // a retry must see the original again
     if (v == 3 && ++calls_for_3 < 3) return step::fail("not yet");
     if (v == 4) {
       ++calls_for_4;
       return step::fail("never");
     }
     return v * 100;
   }).on_error("flaky", on_error::retry(3, backoff{1ms, 1.0, 1ms}, skip_policy{}));
  auto r = run(p, numbered(5)).value();
  EXPECT_EQ(calls_for_3.load(), 3);
  EXPECT_EQ(calls_for_4.load(), 3);
  ASSERT_EQ(r.outputs["default"].size(), 4u);
  bool saw3 = false;
  for (const Item& i : r.outputs["default"]) {
    if (i.id == 3) {
      saw3 = true;
      EXPECT_EQ(as_int(i), 300);
    }
  }
  EXPECT_TRUE(saw3);
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].item, 4u);
  EXPECT_EQ(r.failures[0].cause.attempt, 3u);
}

TEST(PipeRun, StagePolicyBeatsTheStarFallback) {
  Pipe p("p");
  p.native("a", [](Item&, Context&) { return step::fail("a"); })
      .on_error("a", on_error::skip())
      .on_error("*", on_error::halt());
  auto r = run(p, numbered(3)).value();
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.failures.size(), 3u);
}

TEST(PipeRun, HandlersSeeTheirContextAndConcurrencyUsesThreads) {
  std::mutex mu;
  std::set<std::thread::id> threads;
  Pipe p("ctx");
  p.native("look",
           [&](Item& item, Context& ctx) -> step {
             {
               std::lock_guard lock(mu);
               threads.insert(std::this_thread::get_id());
             }
             std::this_thread::sleep_for(100us);
             item.meta.insert_or_assign("pipe", ctx.pipe);
             item.meta.insert_or_assign("stage", ctx.stage);
             item.meta.insert_or_assign("session", ctx.session_id);
             item.meta.insert_or_assign("stores", ctx.metadata.at("stores"));
             item.meta.insert_or_assign("user", ctx.metadata.at("user"));
             return step::keep();
           },
           {.concurrency = 4})
      .store("features");
  auto r = run(p, numbered(400),
               {.session_id = "s1", .metadata = Map{{"user", "ann"}}, .chunk_items = 8})
               .value();
  ASSERT_EQ(r.outputs["default"].size(), 400u);
  const Item& i = r.outputs["default"][0];
  EXPECT_EQ(i.meta.at("pipe"), Value("ctx"));
  EXPECT_EQ(i.meta.at("stage"), Value("look"));
  EXPECT_EQ(i.meta.at("session"), Value("s1"));
  EXPECT_EQ(i.meta.at("user"), Value("ann"));
  EXPECT_EQ(i.meta.at("stores"), Value::list({Value("features")}));
  EXPECT_GT(threads.size(), 1u);
}

TEST(PipeRun, AdjacentSingleThreadStagesShareAThreadUnlessFusingIsOff) {
  // Each stage records the thread it ran on in the item's meta.
  auto mark = [](std::string stage) {
    return [stage](Item& item, Context&) -> step {
      std::ostringstream id;
      id << std::this_thread::get_id();
      item.meta.insert_or_assign(stage, id.str());
      return step::keep();
    };
  };
  Pipe p("fused");
  p.native("a", mark("a"))
      .native("b", mark("b"))
      .native("c", mark("c"), {.concurrency = 2})
      .native("d", mark("d"))
      .native("e", mark("e"))
      .on_error("e", on_error::retry(2, {}, skip_policy{}));
  auto r = run(p, numbered(300), {.chunk_items = 16}).value();
  ASSERT_EQ(r.outputs["default"].size(), 300u);
  for (const Item& i : r.outputs["default"]) {
    EXPECT_EQ(i.meta.at("a"), i.meta.at("b"));  // fused
    EXPECT_NE(i.meta.at("b"), i.meta.at("c"));  // c has two threads of its own
    EXPECT_NE(i.meta.at("c"), i.meta.at("d"));
    EXPECT_NE(i.meta.at("d"), i.meta.at("e"));  // e sleeps its retry backoff on its own
  }
  auto apart = run(p, numbered(300), {.chunk_items = 16, .fuse_stages = false}).value();
  ASSERT_EQ(apart.outputs["default"].size(), 300u);
  for (const Item& i : apart.outputs["default"]) EXPECT_NE(i.meta.at("a"), i.meta.at("b"));
}

TEST(PipeRun, ConcurrentRunsOfOnePipeDoNotInterfere) {
  Pipe p("shared");
  p.native("tag", [](Item& item, Context& ctx) -> step {
    std::string tagged = ctx.session_id;
    tagged += ':';
    tagged += std::to_string(as_int(item));
    return Value(std::move(tagged));
  });
  std::vector<std::thread> threads;
  std::vector<pipe_run> results(4);
  const std::vector<std::string> sessions{"s0", "s1", "s2", "s3"};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      run_options o;
      o.session_id = sessions[t];
      results[t] = run(p, numbered(2000), o).value();
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < 4; ++t) {
    const auto& out = results[t].outputs["default"];
    ASSERT_EQ(out.size(), 2000u);
    for (const Item& i : out) {
      std::string want = sessions[t];
      want += ':';
      want += std::to_string(i.id);
      EXPECT_EQ(i.payload.as<std::string>(), want);
    }
  }
}

}  // namespace
}  // namespace slither
