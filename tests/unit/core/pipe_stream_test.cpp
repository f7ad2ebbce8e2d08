// Pipe runs as streams (bounded pulls from endless input, output before input
// ends), python stages on a local_pool (every policy, crashed workers with
// per-item accounting), cancellation, and the telemetry a run emits.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <ranges>
#include <set>
#include <stdexcept>
#include <thread>

#include "local_pool_fixture.hpp"
#include "pipe_items.hpp"
#include "slither/core/local_pool.hpp"
#include "slither/core/pipe.hpp"
#include "slither/core/telemetry.hpp"

namespace slither {
namespace {

using namespace std::chrono_literals;

using testing::as_int;
using testing::numbered;
using testing::plus_one;

// A range-for walks a stream; std::ranges algorithms take it too.
static_assert(std::ranges::input_range<pipe_stream>);

auto endless() {
  return std::views::iota(std::int64_t{0}) | std::views::transform([](std::int64_t i) {
           return wrap(Value(i), static_cast<std::uint64_t>(i));
         });
}

TEST(PipeStream, PullsABoundedAmountOfAnEndlessInput) {
  Pipe p("endless");
  p.native("a", plus_one).native("b", plus_one);
  run_options o;
  o.queue_items = 32;
  o.chunk_items = 8;
  auto s = stream(p, endless(), o).value();
  std::size_t taken = 0;
  for (auto& out : s) {
    EXPECT_EQ(out.output, "default");
    EXPECT_EQ(as_int(out.item), static_cast<std::int64_t>(out.item.id) + 2);
    if (++taken == 100) break;
  }
  EXPECT_EQ(taken, 100u);
  // Two stages of queues and the sink, plus what each thread holds: bounded,
  // whatever the consumer's pace.
  EXPECT_LE(s.pulled(), 100u + 3 * (32 + 8) + 3 * 8);
  s.cancel();
}

TEST(PipeStream, TheFirstOutputArrivesBeforeTheInputEnds) {
  Pipe p("early");
  p.native("a", plus_one).native("b", plus_one);
  std::vector<Item> input = numbered(100'000);
  auto s = stream(p, input, {.queue_items = 16, .chunk_items = 4}).value();
  auto first = s.next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->item.id, 0u);
  EXPECT_LT(s.pulled(), 1000u);  // most of the input is still unread
  std::size_t n = 1;
  while (s.next()) ++n;
  EXPECT_EQ(n, 100'000u);
  EXPECT_EQ(s.pulled(), 100'000u);
}

TEST(PipeStream, BufferedCountsWhatNextHandsOutWithoutWaiting) {
  Pipe p("buffered");
  p.native("a", plus_one);
  std::vector<Item> input = numbered(10);
  auto s = stream(p, input, {.queue_items = 16, .chunk_items = 16}).value();
  EXPECT_EQ(s.buffered(), 0u);
  ASSERT_TRUE(s.next());
  // The first wait took the run's whole chunk of outputs; the rest is at hand.
  std::size_t n = 1;
  while (s.buffered() > 0) {
    ASSERT_TRUE(s.next());
    ++n;
  }
  while (s.next()) ++n;
  EXPECT_EQ(n, 10u);
  EXPECT_EQ(s.buffered(), 0u);
}

TEST(PipeStream, ASourceThatThrowsCancelsTheRunAndSaysSo) {
  Pipe p("p");
  p.native("a", plus_one);
  int calls = 0;
  auto s = stream(p,
                  [&]() -> std::optional<Item> {
                    if (++calls == 5) throw std::runtime_error("disk gone");
                    return wrap(Value(1), static_cast<std::uint64_t>(calls));
                  },
                  {.chunk_items = 2})
               .value();
  std::string message;
  try {
    while (s.next()) {
    }
  } catch (const error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("input source threw: disk gone"), std::string::npos);
  while (s.next()) {
  }
  EXPECT_FALSE(s.report().error);
}

TEST(PipeStream, DestroyingAStreamMidRunStopsEveryStage) {
  Pipe p("p");
  p.native("slow", [](Item& item, Context&) -> step {
     std::this_thread::sleep_for(100us);
     return as_int(item);
   }).native("b", plus_one, {.concurrency = 3});
  for (int k = 0; k < 5; ++k) {
    auto s = stream(p, endless(), {.queue_items = 16, .chunk_items = 4}).value();
    ASSERT_TRUE(s.next());
  }
}

// --- telemetry ---

struct recorded {
  std::string event;
  Map measurements;
  Map metadata;
};

TEST(PipeTelemetry, EventsFireInOrderWithTheirMetadata) {
  std::mutex mu;
  std::vector<recorded> events;
  auto attached =
      telemetry::attach("slither.pipe.", [&](std::string_view e, const Map& m, const Map& md) {
        std::lock_guard lock(mu);
        events.push_back({std::string(e), m, md});
      });
  Pipe p("observed");
  p.native("a",
           [](Item& item, Context&) -> step {
             if (item.id == 2) return step::fail("two");
             return step::keep();
           })
      .router("r", {{[](const Item& i, const Context&) { return i.id == 1; }, "one"}})
      .output("one")
      .on_error("a", on_error::skip());
  auto r = run(p, numbered(4), {.session_id = "sess"}).value();
  attached.detach();
  ASSERT_TRUE(r.ok());
  ASSERT_GE(events.size(), 6u);
  EXPECT_EQ(events.front().event, "slither.pipe.run.start");
  EXPECT_EQ(events.back().event, "slither.pipe.run.stop");
  const Map& stop = events.back().measurements;
  EXPECT_EQ(stop.at("items_in"), Value(4));
  EXPECT_EQ(stop.at("items_out"), Value(3));
  EXPECT_EQ(stop.at("failures"), Value(1));
  EXPECT_TRUE(stop.at("duration_us").is_int());
  EXPECT_EQ(events.back().metadata.at("status"), Value("ok"));
  const auto run_id = events.front().metadata.at("run");
  std::map<std::string, int> open;  // stage → started, not stopped
  bool saw_exception = false;
  for (const auto& e : events) {
    EXPECT_EQ(e.metadata.at("pipe"), Value("observed"));
    EXPECT_EQ(e.metadata.at("session"), Value("sess"));
    EXPECT_EQ(e.metadata.at("run"), run_id);
    if (e.event == "slither.pipe.stage.start") {
      ++open[e.metadata.at("stage").as<std::string>()];
      EXPECT_TRUE(e.measurements.at("size").is_int());
    } else if (e.event == "slither.pipe.stage.stop") {
      EXPECT_GT(open[e.metadata.at("stage").as<std::string>()]--, 0);
      EXPECT_TRUE(e.measurements.at("duration_us").is_int());
    } else if (e.event == "slither.pipe.stage.exception") {
      saw_exception = true;
      EXPECT_EQ(e.metadata.at("stage"), Value("a"));
      EXPECT_EQ(e.metadata.at("kind"), Value("native"));
      EXPECT_EQ(e.metadata.at("item"), Value(2));
      EXPECT_EQ(e.metadata.at("message"), Value("two"));
      EXPECT_EQ(e.metadata.at("policy"), Value("skip"));
      EXPECT_EQ(e.metadata.at("failure"), Value("item_error"));
    }
  }
  EXPECT_TRUE(saw_exception);
  for (const auto& [stage, n] : open) EXPECT_EQ(n, 0) << stage;
  EXPECT_EQ(open.count("r"), 1u);
}

TEST(PipeTelemetry, AHaltEndsWithRunException) {
  std::vector<recorded> events;
  std::mutex mu;
  auto attached =
      telemetry::attach("slither.pipe.run", [&](std::string_view e, const Map& m, const Map& md) {
        std::lock_guard lock(mu);
        events.push_back({std::string(e), m, md});
      });
  Pipe p("p");
  p.native("a", [](Item&, Context&) { return step::fail("no"); });
  auto r = run(p, numbered(3)).value();
  attached.detach();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].event, "slither.pipe.run.exception");
  EXPECT_EQ(events[1].metadata.at("stage"), Value("a"));
  EXPECT_EQ(events[1].metadata.at("status"), Value("halted"));
  EXPECT_EQ(events[1].metadata.at("message"), Value("no"));
}

// --- python stages on a local_pool ---

class PipePython : public testing::local_pool_test {
 protected:
  void SetUp() override {
    start_pool();
    pool_->add_function("model:double", [](std::span<const Item> items, const batch_context&) {
      std::vector<result<Value>> out;
      for (const auto& i : items) out.emplace_back(as_int(i) * 2);
      return out;
    });
    pool_->add_function("model:picky", [](std::span<const Item> items, const batch_context&) {
      std::vector<result<Value>> out;
      for (const auto& i : items) {
        if (as_int(i) % 10 == 7) {
          out.emplace_back(fail(errc::invalid_argument, "sevens are bad"));
        } else {
          out.emplace_back(as_int(i));
        }
      }
      return out;
    });
    pool_->add_function("model:crash_on_13", [](std::span<const Item> items, const batch_context&) {
      std::vector<result<Value>> out;
      for (const auto& i : items) {
        if (as_int(i) == 13) throw worker_crash("poison");
        out.emplace_back(as_int(i));
      }
      return out;
    });
    pool_->add_function("model:context", [](std::span<const Item> items, const batch_context& c) {
      std::vector<result<Value>> out;
      for (std::size_t k = 0; k < items.size(); ++k) {
        out.emplace_back(c.context.pipe + "/" + c.context.stage + "/" + c.context.session_id);
      }
      return out;
    });
    start_runner();
  }
};

TEST_F(PipePython, NativePythonRouter) {
  Pipe p("score");
  p.native("prepare", plus_one)
      .python("predict",
              {.module = "model", .function = "double", .batch_size = 8, .max_in_flight = 2})
      .router("route",
              {{[](const Item& i, const Context&) { return as_int(i) % 4 == 0; }, "accept"}})
      .output("accept");
  std::vector<Item> input = numbered(1000);
  input[5].meta.insert_or_assign("tag", "kept");
  auto r = run(p, input, opts()).value();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.outputs["accept"].size() + r.outputs["default"].size(), 1000u);
  for (const auto& [name, items] : r.outputs) {
    for (const Item& i : items) EXPECT_EQ(as_int(i), (static_cast<std::int64_t>(i.id) + 1) * 2);
  }
  bool tagged = false;
  for (const Item& i : r.outputs["default"])
    tagged = tagged || (i.id == 5 && i.meta.contains("tag"));
  for (const Item& i : r.outputs["accept"])
    tagged = tagged || (i.id == 5 && i.meta.contains("tag"));
  EXPECT_TRUE(tagged);
  // preserve ordering and one thread per stage: outputs in input order.
  const auto& def = r.outputs["default"];
  for (std::size_t k = 1; k < def.size(); ++k) EXPECT_LT(def[k - 1].id, def[k].id);
}

TEST_F(PipePython, PythonStagesSeeThePipeStageAndSession) {
  Pipe p("ctxpipe");
  p.python("look", {.module = "model", .function = "context"});
  auto r = run(p, numbered(3),
               [&] {
                 auto o = opts();
                 o.session_id = "sx";
                 return o;
               }())
               .value();
  ASSERT_EQ(r.outputs["default"].size(), 3u);
  EXPECT_EQ(r.outputs["default"][0].payload, Value("ctxpipe/look/sx"));
}

TEST_F(PipePython, SkipRouteAndHaltPolicies) {
  Pipe skip("p");
  skip.python("picky", {.module = "model", .function = "picky", .batch_size = 4})
      .on_error("picky", on_error::skip());
  auto r = run(skip, numbered(40), opts()).value();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.outputs["default"].size(), 36u);
  ASSERT_EQ(r.failures.size(), 4u);
  EXPECT_EQ(r.failures[0].stage, "picky");
  EXPECT_EQ(r.failures[0].item % 10, 7u);
  EXPECT_EQ(r.failures[0].cause.message, "sevens are bad");

  Pipe routed("p");
  routed.python("picky", {.module = "model", .function = "picky", .batch_size = 4})
      .output("bad")
      .on_error("*", on_error::route("bad"));
  r = run(routed, numbered(40), opts()).value();
  ASSERT_EQ(r.outputs["bad"].size(), 4u);
  EXPECT_EQ(r.outputs["bad"][0].route, "bad");
  EXPECT_EQ(Value(r.outputs["bad"][0].meta.at("error"))["stage"], Value("picky"));

  Pipe halted("p");
  halted.python("picky", {.module = "model", .function = "picky", .batch_size = 4});
  r = run(halted, numbered(400), opts()).value();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->stage, "picky");
  EXPECT_EQ(r.error->item % 10, 7u);
  std::multiset<std::uint64_t> seen(r.unfinished.begin(), r.unfinished.end());
  seen.insert(r.error->item);
  for (const auto& f : r.failures) seen.insert(f.item);
  for (const Item& i : r.outputs["default"]) seen.insert(i.id);
  EXPECT_EQ(seen.size(), 400u);
  EXPECT_EQ(std::set<std::uint64_t>(seen.begin(), seen.end()).size(), 400u);
}

TEST_F(PipePython, CrashedWorkersUnderRetryLoseNothingAndPoisonIsReported) {
  Pipe p("chaos");
  p.native("prepare", [](Item& item, Context&) { return step(as_int(item)); })
      .python("risky", {.module = "model", .function = "crash_on_13", .batch_size = 4})
      .on_error("risky", on_error::retry(2, backoff{1ms, 1.0, 1ms}, skip_policy{}));
  auto r = run(p, numbered(200), opts()).value();
  ASSERT_TRUE(r.ok());
  // The batch holding 13 killed its worker on every attempt: its items are reported.
  std::multiset<std::uint64_t> seen;
  for (const auto& f : r.failures) {
    seen.insert(f.item);
    EXPECT_EQ(f.stage, "risky");
  }
  EXPECT_EQ(seen.count(13), 1u);
  for (const Item& i : r.outputs["default"]) seen.insert(i.id);
  EXPECT_EQ(seen.size(), 200u);
  EXPECT_EQ(std::set<std::uint64_t>(seen.begin(), seen.end()).size(), 200u);
}

TEST_F(PipePython, StreamsAnEndlessInputThroughAPythonStage) {
  Pipe p("endless");
  p.python("predict",
           {.module = "model", .function = "double", .batch_size = 4, .max_in_flight = 2});
  auto o = opts();
  o.queue_items = 16;
  o.chunk_items = 4;
  auto s = stream(p, endless(), o).value();
  std::size_t n = 0;
  for (auto& out : s) {
    EXPECT_EQ(as_int(out.item), static_cast<std::int64_t>(out.item.id) * 2);
    if (++n == 50) break;
  }
  EXPECT_LE(s.pulled(), 50u + 2 * (16 + 4) + 2 * 4 + 8 + 4);
}

}  // namespace
}  // namespace slither
