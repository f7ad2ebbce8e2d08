// feature_store: an embedded broker serves a store loaded from JSON Lines;
// two Python processes read it in place (one through a zero-copy numpy view
// of an embedding matrix) and one writes through the broker.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "registry.hpp"
#include "session.hpp"
#include "slither/broker/broker.hpp"

extern char** environ;

namespace slither::examples {
namespace {

namespace fs = std::filesystem;

// Starts `argv` with the current environment (its stdout on our stderr if
// `stdout_to_stderr`); returns its pid or -1.
pid_t spawn(const std::vector<std::string>& argv, bool stdout_to_stderr) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdout_to_stderr) posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// The embeddings matrix: 4096 rows of 1024 float32 (16 MiB).
ndarray make_embeddings() {
  auto m = ndarray::zeros(dtype::f32, {4096, 1024});
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  for (auto& x : m.mutable_values<float>()) x = normal(rng);
  return m;
}

// View `top_users`: the `n` users with the highest score.
result<Value> top_users(const Value& arg, const shm::reader& store, std::string_view) {
  const auto* n_arg = arg.find("n");
  const std::int64_t n = n_arg && n_arg->is_int() ? n_arg->as<std::int64_t>() : 5;
  if (n < 0 || n > 1000) return fail(errc::invalid_argument, "top_users: n must be in 0..1000");
  List rows;
  auto walk = store.for_each("users", [&](std::string_view, const shm::view& v) {
    rows.push_back(v.value());
    return true;
  });
  if (!walk) return std::move(walk).error();
  const auto k = std::min<std::size_t>(static_cast<std::size_t>(n), rows.size());
  std::partial_sort(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(k), rows.end(),
                    [](const Value& a, const Value& b) {
                      return a["score"].as<double>() > b["score"].as<double>();
                    });
  rows.resize(k);
  return Value(std::move(rows));
}

int run_feature_store(const run_options& run, example_report& report) {
  std::ostream& out = *run.out;
  auto config = load_config(examples_dir() / "data" / "feature_store.toml");
  if (!config) {
    std::cerr << "feature_store: " << config.error().message << "\n";
    return 1;
  }
  auto options = std::move(*config);
  const std::string ns = "example-" + std::to_string(::getpid());
  options.ns = ns;
  char tmpl[] = "/tmp/slither-example-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    std::cerr << "feature_store: cannot create a temporary directory\n";
    return 1;
  }
  const fs::path scratch = tmpl;
  options.runtime_dir = scratch / "run";

  Broker broker(std::move(options));
  if (auto r = broker.register_view("features", "top_users", view_scope::global, top_users); !r) {
    std::cerr << "feature_store: " << r.error().message << "\n";
    return 1;
  }
  if (auto r = broker.start(); !r) {
    std::cerr << "feature_store: broker did not start: " << r.error().message << "\n";
    return 1;
  }
  const auto loaded = broker.reader("features").size("users").value();
  out << "[broker] namespace " << ns << ": loaded " << loaded << " users from features.jsonl\n";
  auto wrote = broker.write("features", [](shm::writer& w) -> result<void> {
    auto v = w.put("embeddings", "matrix", Value(make_embeddings()));
    if (!v) return std::move(v).error();
    return {};
  });
  if (!wrote) {
    std::cerr << "feature_store: " << wrote.error().message << "\n";
    return 1;
  }
  out << "[broker] stored a 4096x1024 float32 embedding matrix (16 MiB)\n" << std::flush;

  const auto scripts = examples_dir() / "python";
  const std::vector<std::string> common = {"--runtime-dir", broker.runtime_dir().string(),
                                           "--namespace", ns};
  std::vector<pid_t> children;
  for (const char* script :
       {"feature_store_reader.py", "feature_store_embeddings.py", "feature_store_writer.py"}) {
    std::vector<std::string> argv = {python(), (scripts / script).string()};
    argv.insert(argv.end(), common.begin(), common.end());
    const pid_t pid = spawn(argv, run.out != &std::cout);
    if (pid < 0) {
      std::cerr << "feature_store: cannot start " << argv[0] << " " << argv[1] << "\n";
      return 1;
    }
    children.push_back(pid);
  }
  int failures = 0;
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
  }
  const auto after = broker.reader("features").size("users").value();
  report.facts["users_loaded"] = loaded;
  report.facts["users_after"] = after;
  out << "[broker] users now " << after << " (" << after - loaded
      << " written by Python through the broker)\n";
  broker.stop();
  std::error_code ec;
  fs::remove_all(scratch, ec);
  if (failures != 0) {
    report.error = std::to_string(failures) + " Python process(es) failed";
    std::cerr << "feature_store: " << report.error << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

example feature_store_example() {
  return {"feature_store",
          "a store loaded from JSON Lines, read in place by Python (zero-copy numpy), written "
          "through the broker",
          run_feature_store};
}

}  // namespace slither::examples
