// text_analysis, a Pipe: documents → prepare (native: tokens, stopwords read
// from a Store) → analyze (Python workers: sentiment, a word index of their
// own) → classify (router: positive / negative / default); then the
// worker-isolation probe merges each worker's own statistics and checks they
// add up.
#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <unordered_set>

#include "registry.hpp"
#include "session.hpp"
#include "slither/broker/pipe.hpp"

namespace slither::examples {
namespace {

// The native stage: lower-case ASCII words, stopwords dropped (as
// text_analysis_worker.tokenize does it in Python for the baselines).
List tokenize(std::string_view text, const std::unordered_set<std::string>& stopwords) {
  List tokens;
  std::string word;
  auto flush = [&] {
    if (!word.empty() && !stopwords.contains(word)) tokens.emplace_back(word);
    word.clear();
  };
  for (char c : text) {
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (lower >= 'a' && lower <= 'z') {
      word.push_back(lower);
    } else {
      flush();
    }
  }
  flush();
  return tokens;
}

// The router's rule (first match wins, unmatched → default), shared by its predicates.
std::string classify(double sentiment) {
  if (sentiment > 0.2) return "positive";
  if (sentiment < -0.2) return "negative";
  return "default";
}

// One worker's statistics, as its latest result reported them.
struct worker_stats {
  std::int64_t docs = 0;
  std::int64_t tokens = 0;
  std::int64_t vocabulary = 0;
};

int run(const run_options& opts, example_report& report) {
  example_session s("text_analysis", opts, report);
  if (!s.generate()) return report.exit_code;
  const Value stopword_list = s.data()["stopwords"];
  shm::store_definition text{.options = {.name = "text"},
                             .tables = {{"stopwords", shm::table_kind::set, 16}},
                             .load = [&](shm::writer& w) -> result<void> {
                               auto v = w.put("stopwords", "en", stopword_list);
                               if (!v) return std::move(v).error();
                               return {};
                             }};
  if (!s.start_broker({text})) return report.exit_code;
  if (!s.warm_up({"text_analysis_worker"})) return report.exit_code;

  const auto& docs = s.data()["docs"].as<List>();
  const auto start = std::chrono::steady_clock::now();
  // The prepare stage reads its stopwords in place from the Store.
  std::unordered_set<std::string> stopwords;
  auto stored = s.broker().reader("text").get("stopwords", "en");
  if (!stored || !*stored) return s.fail("the stopwords are not in the store");
  for (const auto& w : (**stored).as<List>()) stopwords.insert(w.as<std::string>());

  std::atomic<std::int64_t> tokens_prepared = 0;
  Pipe pipe("text_analysis");
  pipe.store("text")
      .native(
          "prepare",
          [&](Item& item, Context&) -> step {
            List tokens = tokenize(item.payload["text"].as<std::string>(), stopwords);
            tokens_prepared += static_cast<std::int64_t>(tokens.size());
            return Value::map({{"id", item.payload["id"]}, {"tokens", Value(std::move(tokens))}});
          })
      .python("analyze", {.module = "text_analysis_worker",
                          .function = "analyze",
                          .batch_size = 50,
                          .max_in_flight = 8})
      .router("classify", {{[](const Item& item, const Context&) {
                              return classify(item.payload["sentiment"].as<double>()) == "positive";
                            },
                            "positive"},
                           {[](const Item& item, const Context&) {
                              return classify(item.payload["sentiment"].as<double>()) == "negative";
                            },
                            "negative"}})
      .output("positive")
      .output("negative");

  const auto input = items_of(s.data()["docs"]);
  auto run = slither::stream(s.broker(), pipe, input);
  if (!run) return s.fail("pipe: " + run.error().message);
  std::map<std::string, std::int64_t> outputs = {{"positive", 0}, {"negative", 0}, {"default", 0}};
  std::vector<std::int64_t> seen(docs.size(), 0);
  std::map<std::int64_t, worker_stats> workers;
  progress_bar bar(docs.size());
  while (true) {
    auto r = run->try_next();
    if (!r) return s.fail("pipe: " + r.error().message);
    if (!*r) break;
    bar.tick();
    const Value& out = (**r).item.payload;
    ++outputs[(**r).output];
    const auto id = out["id"].as<std::int64_t>();
    if (id >= 0 && static_cast<std::size_t>(id) < seen.size()) ++seen[static_cast<std::size_t>(id)];
    auto& w = workers[out["worker"].as<std::int64_t>()];
    if (out["worker_docs"].as<std::int64_t>() > w.docs) {
      w = {out["worker_docs"].as<std::int64_t>(), out["worker_tokens"].as<std::int64_t>(),
           out["worker_vocabulary"].as<std::int64_t>()};
    }
  }
  const pipe_run& ended = run->report();
  if (ended.error) return s.fail("pipe halted: " + ended.error->describe());
  const auto failed = static_cast<std::int64_t>(ended.failures.size() + ended.skipped.size() +
                                                ended.unfinished.size());
  mode_result m;
  m.seconds = seconds_since(start);
  m.items = docs.size();
  if (opts.break_invariant && !seen.empty()) seen[0] = 0;

  // The isolation probe: each worker's own counters, merged in worker order.
  std::int64_t merged_docs = 0;
  std::int64_t merged_tokens = 0;
  for (const auto& [pid, w] : workers) {
    merged_docs += w.docs;
    merged_tokens += w.tokens;
    s.out() << "  worker " << pid << ": " << w.docs << " documents, " << w.tokens
            << " tokens, its own index of " << w.vocabulary << " words\n";
  }
  s.out() << "  outputs: positive " << outputs["positive"] << ", negative " << outputs["negative"]
          << ", default " << outputs["default"] << "; failed " << failed << "\n";
  s.fact("outputs", outputs);
  s.fact("workers", workers.size());
  const bool once = std::all_of(seen.begin(), seen.end(), [](auto n) { return n == 1; });
  m.invariants = {
      {"every document classified once", once && failed == 0},
      {"outputs add up to the documents",
       outputs["positive"] + outputs["negative"] + outputs["default"] ==
           static_cast<std::int64_t>(docs.size())},
      {"per-worker statistics merge to the totals",
       merged_docs == static_cast<std::int64_t>(docs.size()) && merged_tokens == tokens_prepared},
  };
  return s.finish(std::move(m));
}

}  // namespace

example text_analysis_example() {
  return {"text_analysis",
          "5,000 documents: prepare (native, stopwords from a Store) → analyze (Python workers, "
          "a word index each) → classify (router)",
          run};
}

}  // namespace slither::examples
