// ml_scoring, one Pipe run concurrently by two sessions: each trains a
// scikit-learn model and scores its records. prepare (native) computes each
// record's features and writes them through to a Store; score (Python
// workers) reads them in place and applies the session's model, which strict
// session affinity keeps in one worker; route (router) sorts by confidence.
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "registry.hpp"
#include "session.hpp"
#include "slither/broker/pipe.hpp"

namespace slither::examples {
namespace {

std::string route_by_confidence(double confidence) {
  if (confidence >= 0.9) return "confident";
  if (confidence < 0.6) return "review";
  return "default";
}

// One session's run: what came out, for the checks.
struct session_run {
  std::string session;
  std::size_t records = 0;
  std::size_t scored = 0;
  std::size_t own_model = 0;
  std::set<std::string> ids;
  std::set<std::int64_t> workers;
  std::map<std::string, std::int64_t> outputs;
  std::string error;
};

// The pipe both sessions run, concurrently, each with its own session id.
Pipe scoring_pipe(example_session& s) {
  Pipe pipe("ml_scoring");
  pipe.store("ml")
      // prepare: features from the raw record, written through to the Store
      // (the write returns once readers see it); only the key travels on.
      .native("prepare",
              [&s](Item& item, Context&) -> step {
                auto features = ndarray::zeros(dtype::f64, {8});
                auto values = features.mutable_values<double>();
                const auto& raw = item.payload["raw"].as<List>();
                for (std::size_t i = 0; i < values.size() && i < raw.size(); ++i) {
                  values[i] = (raw[i].as<double>() - 50.0) / 10.0;
                }
                const std::string id = item.payload["id"].as<std::string>();
                auto wrote = s.broker().write("ml", [&](shm::writer& w) -> result<void> {
                  if (auto v = w.put("features", id, Value(std::move(features))); !v) {
                    return v.error();
                  }
                  return {};
                });
                if (!wrote) return wrote.error();
                return Value::map({{"id", id}, {"session", item.payload["session"]}});
              })
      .python("score", {.module = "ml_scoring_worker",
                        .function = "score",
                        .batch_size = 50,
                        .max_in_flight = 2,
                        .affinity = affinity_mode::strict})
      .router("route", {{[](const Item& item, const Context&) {
                           return route_by_confidence(item.payload["confidence"].as<double>()) ==
                                  "confident";
                         },
                         "confident"},
                        {[](const Item& item, const Context&) {
                           return route_by_confidence(item.payload["confidence"].as<double>()) ==
                                  "review";
                         },
                         "review"}})
      .output("confident")
      .output("review");
  return pipe;
}

void score_session(example_session& s, const Pipe& pipe, const List& records, session_run& out) {
  std::vector<Item> input;
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (records[i]["session"].as<std::string>() == out.session)
      input.push_back(wrap(records[i], i));
  }
  out.records = input.size();
  auto done = slither::run(s.broker(), pipe, std::move(input), {.session_id = out.session});
  if (!done) {
    out.error = done.error().message;
    return;
  }
  if (done->error) {
    out.error = done->error->describe();
    return;
  }
  for (const auto& [output, items] : done->outputs) {
    for (const auto& item : items) {
      const Value& res = item.payload;
      ++out.scored;
      out.ids.insert(res["id"].as<std::string>());
      if (res["model_session"].as<std::string>() == out.session &&
          res["session"].as<std::string>() == out.session) {
        ++out.own_model;
      }
      out.workers.insert(res["worker"].as<std::int64_t>());
      ++out.outputs[output];
    }
  }
}

int run(const run_options& opts, example_report& report) {
  example_session s("ml_scoring", opts, report);
  if (!s.generate()) return report.exit_code;
  const Value& sessions = s.data()["sessions"];
  const auto& records = s.data()["records"].as<List>();
  shm::store_definition ml;
  ml.options.name = "ml";
  ml.options.initial_segment_bytes = std::uint64_t{16} << 20;
  ml.tables = {{"training", shm::table_kind::set, 16},
               {"features", shm::table_kind::set, records.size() + 16}};
  ml.load = [&](shm::writer& w) -> result<void> {
    for (const auto& [name, set] : sessions.as<Map>()) {
      if (auto v = w.put("training", name + ":X", set["X"]); !v) return v.error();
      if (auto v = w.put("training", name + ":y", set["y"]); !v) return v.error();
    }
    return {};
  };
  if (!s.start_broker({ml})) return report.exit_code;
  if (!s.warm_up({"ml_scoring_worker"})) return report.exit_code;

  const Pipe pipe = scoring_pipe(s);
  std::vector<session_run> runs;
  for (const auto& entry : sessions.as<Map>()) runs.emplace_back().session = entry.first;
  const auto start = std::chrono::steady_clock::now();
  {
    std::vector<std::jthread> threads;
    for (auto& r : runs) {
      threads.emplace_back([&s, &pipe, &records, &r] { score_session(s, pipe, records, r); });
    }
  }
  mode_result m;
  m.seconds = seconds_since(start);
  m.items = records.size();
  bool every_once = true;
  bool own_model = true;
  std::map<std::string, std::int64_t> outputs;
  for (auto& r : runs) {
    if (!r.error.empty()) return s.fail("session " + r.session + ": " + r.error);
    if (opts.break_invariant && &r == &runs.front()) --r.own_model;
    every_once = every_once && r.scored == r.records && r.ids.size() == r.records;
    own_model = own_model && r.own_model == r.scored;
    for (const auto& [k, v] : r.outputs) outputs[k] += v;
    s.out() << "  session " << r.session << ": " << r.scored << " records scored on "
            << r.workers.size() << " worker(s); confident " << r.outputs["confident"] << ", review "
            << r.outputs["review"] << ", default " << r.outputs["default"] << "\n";
  }
  s.fact("outputs", outputs);
  m.invariants = {
      {"every record scored once", every_once},
      {"each session's records scored by its own model", own_model},
  };
  return s.finish(std::move(m));
}

}  // namespace

example ml_scoring_example() {
  return {"ml_scoring",
          "two sessions train scikit-learn models and score concurrently: features written "
          "through to a Store, models kept per worker by session affinity, routed by confidence",
          run};
}

}  // namespace slither::examples
