// The broker the benches that go through worker processes share: a pool of
// two workers, the C++ test worker unless SLITHER_BENCH_WORKER names another
// command (e.g. "python3 -m slither.worker") and SLITHER_BENCH_FUNCTION its
// function. Include from a bench target that defines SLITHER_TEST_WORKER_EXE.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"

namespace slither::bench {

/// The workers' command: SLITHER_BENCH_WORKER split at spaces, else the test worker.
inline std::vector<std::string> worker_command() {
  const char* env = std::getenv("SLITHER_BENCH_WORKER");
  if (env == nullptr || *env == '\0') return {SLITHER_TEST_WORKER_EXE};
  std::vector<std::string> out;
  std::istringstream words(env);
  for (std::string w; words >> w;) out.push_back(w);
  return out;
}

/// The handler to run: SLITHER_BENCH_FUNCTION, else `fallback` (the test worker's).
inline std::string function_name(const char* fallback) {
  const char* env = std::getenv("SLITHER_BENCH_FUNCTION");
  return env != nullptr && *env != '\0' ? env : fallback;
}

/// A started broker in namespace `prefix` + pid with a pool of 2 workers,
/// returned once both have joined: a bench must not measure their start.
inline std::unique_ptr<Broker> start_broker(const std::string& prefix) {
  using namespace std::chrono_literals;
  broker_options o;
  o.ns = prefix + std::to_string(::getpid());
  o.runtime_dir = std::filesystem::temp_directory_path() / ("slither-" + o.ns);
  pool_options p;
  p.size = 2;
  p.command = worker_command();
  o.pools.push_back(p);
  const std::string ns = o.ns;
  auto broker = std::make_unique<Broker>(std::move(o));
  broker->start().value();
  client_options c;
  c.runtime_dir = broker->runtime_dir();
  c.ns = ns;
  auto cl = client::connect(c).value();
  for (int i = 0; i < 1000; ++i) {
    auto st = cl.stats().value();
    const Value* ws = st.find("dispatch")->find("pools")->find("default")->find("workers");
    if (ws != nullptr && ws->as<List>().size() == 2) break;
    std::this_thread::sleep_for(10ms);
  }
  return broker;
}

}  // namespace slither::bench
