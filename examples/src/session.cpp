#include "session.hpp"

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "slither/core/codec.hpp"

extern char** environ;

namespace slither::examples {

namespace fs = std::filesystem;

namespace {

// The exit status of a Python side whose package is missing (example_common.py).
constexpr int missing_package_exit = 3;

}  // namespace

fs::path examples_dir() {
  if (const char* dir = std::getenv("SLITHER_EXAMPLES_DIR")) return dir;
  return SLITHER_EXAMPLES_SOURCE_DIR;
}

std::string python() {
  const char* p = std::getenv("SLITHER_PYTHON");
  return p && *p ? p : "python3";
}

result<int> run_process(const std::vector<std::string>& argv, bool stdout_to_stderr) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdout_to_stderr) posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return fail(errc::not_found, "cannot start '" + argv[0] + "'");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return fail(errc::io_error, "waitpid failed for '" + argv[0] + "'");
  }
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double peak_rss_mib() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

progress_bar::progress_bar(std::size_t total) {
  if (::isatty(STDERR_FILENO) == 1) {
    bar_ = std::make_unique<boost::timer::progress_display>(total, std::cerr);
  }
}

void progress_bar::tick() {
  if (bar_) ++*bar_;
}

std::vector<Item> items_of(const Value& list) {
  std::vector<Item> out;
  const auto& values = list.as<List>();
  out.reserve(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out.push_back(wrap(values[i], i));
  return out;
}

example_session::example_session(std::string name, const run_options& options,
                                 example_report& report)
    : name_(std::move(name)), options_(options), report_(report) {
  report_.name = name_;
}

example_session::~example_session() {
  if (broker_) broker_->stop();
  broker_.reset();
  if (!scratch_.empty()) {
    std::error_code ec;
    fs::remove_all(scratch_, ec);
  }
}

void example_session::fact(const std::string& key, nlohmann::json value) {
  report_.facts[key] = std::move(value);
}

int example_session::fail(const std::string& why) {
  report_.error = why;
  report_.exit_code = missing_package_ ? missing_package_exit : 1;
  std::cerr << name_ << ": " << why << "\n";
  return report_.exit_code;
}

bool example_session::generate() {
  std::string tmpl = (fs::temp_directory_path() / "slither-example-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    fail("cannot create a scratch directory under " + fs::temp_directory_path().string());
    return false;
  }
  scratch_ = tmpl;
  data_file_ = scratch_ / (name_ + ".data");
  std::ostringstream scale;
  scale << options_.scale;
  const auto script = examples_dir() / "python" / (name_ + "_data.py");
  auto status = run_process(
      {python(), script.string(), "--scale", scale.str(), "--out", data_file_.string()}, true);
  if (!status) {
    fail(status.error().message);
    return false;
  }
  if (*status != 0) {
    missing_package_ = *status == missing_package_exit;
    fail(missing_package_
             ? "a Python package is missing (see above)"
             : script.filename().string() + " failed with status " + std::to_string(*status));
    return false;
  }
  std::ifstream in(data_file_, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto value = decode(std::as_bytes(std::span(bytes.data(), bytes.size())));
  if (!value) {
    fail("cannot decode " + data_file_.string() + ": " + value.error().message);
    return false;
  }
  data_ = std::move(*value);
  return true;
}

bool example_session::start_broker(std::vector<shm::store_definition> stores) {
  broker_options opts;
  opts.ns = "example-" + name_ + "-" + std::to_string(::getpid());
  opts.runtime_dir = scratch_ / "run";
  for (auto& s : stores) s.options.ns = opts.ns;
  opts.stores = std::move(stores);
  pool_options pool;
  pool.size = options_.workers;
  pool.python = python();
  pool.pythonpath = {(examples_dir() / "python").string()};
  // One thread per worker process: the pool is the parallelism, as in the baselines.
  pool.env = {{"OMP_NUM_THREADS", "1"}, {"OPENBLAS_NUM_THREADS", "1"}, {"MKL_NUM_THREADS", "1"}};
  opts.pools.push_back(std::move(pool));
  broker_ = std::make_unique<Broker>(std::move(opts));
  if (auto r = broker_->start(); !r) {
    fail("the broker did not start: " + r.error().message);
    return false;
  }
  return true;
}

bool example_session::warm_up(const std::vector<std::string>& modules) {
  job_options job;
  job.function = "example_common:warm_up";
  job.batching = fixed_batch{1};
  job.max_in_flight = 2 * options_.workers;
  job.ordering = order_mode::as_completed;
  std::vector<Item> items;
  for (unsigned i = 0; i < 2 * options_.workers; ++i) {
    List names;
    for (const auto& m : modules) names.emplace_back(m);
    items.push_back(wrap(Value(std::move(names)), i));
  }
  auto done = dispatch(*broker_, std::move(items), job);
  if (!done) {
    fail("warm-up: " + done.error().message);
    return false;
  }
  for (const auto& r : done->results) {
    if (!r.ok()) {
      fail("warm-up: " + (r.error ? r.error->describe() : std::string(to_string(r.status))));
      return false;
    }
  }
  return true;
}

int example_session::finish(mode_result slither) {
  slither.mode = "slither";
  report_.slither = std::move(slither);
  int code = report_.slither.held() ? 0 : 1;
  if (options_.baseline) {
    const auto out = scratch_ / "baselines.json";
    const auto script = examples_dir() / "python" / (name_ + "_baseline.py");
    auto status =
        run_process({python(), script.string(), "--data", data_file_.string(), "--workers",
                     std::to_string(options_.workers), "--out", out.string()},
                    true);
    if (!status || *status != 0) {
      missing_package_ = status && *status == missing_package_exit;
      report_.error = script.filename().string() + " failed" +
                      (status ? " with status " + std::to_string(*status) : "");
      std::cerr << name_ << ": " << report_.error << "\n";
      code = missing_package_ ? missing_package_exit : 1;
    } else {
      try {
        std::ifstream in(out);
        report_.baselines = baselines_from_json(nlohmann::json::parse(in));
      } catch (const std::exception& e) {
        report_.error = std::string("cannot read the baselines' results: ") + e.what();
        code = 1;
      }
    }
  }
  for (const auto& b : report_.baselines) {
    if (must_hold(b.mode) && !b.held()) code = std::max(code, 1);
  }
  print_comparison(report_, out());
  if (!report_.slither.held()) out() << "  " << name_ << ": Slither broke an invariant\n";
  report_.exit_code = code;
  return code;
}

}  // namespace slither::examples
