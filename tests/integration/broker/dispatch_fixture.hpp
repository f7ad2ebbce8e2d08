// The fixture of the dispatch tests: an embedded Broker with a pool of test
// workers (slither-test-worker, spawned by the broker), helpers to run jobs
// and to find and kill the workers.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"
#include "slither/broker/dispatch.hpp"

namespace slither::test_support {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using clock = std::chrono::steady_clock;

/// Items 0..n-1 whose payload is their id.
inline std::vector<Item> numbered(std::uint64_t n, std::uint64_t first = 0) {
  std::vector<Item> out;
  out.reserve(n);
  for (std::uint64_t i = first; i < first + n; ++i) {
    out.push_back(wrap(Value(static_cast<std::int64_t>(i)), i));
  }
  return out;
}

/// A batch frame of these payloads, as a client sends it.
inline buffer batch_of(const List& payloads) {
  std::vector<Item> items;
  for (std::size_t i = 0; i < payloads.size(); ++i) items.push_back(wrap(payloads[i], i));
  return encode_batch(items);
}

/// The payloads of a batch frame.
inline List payloads_of(std::span<const std::byte> frame) {
  List out;
  auto items = decode_batch(frame);
  if (!items) {
    ADD_FAILURE() << "not a batch frame: " << items.error().message;
    return out;
  }
  for (auto& item : *items) out.push_back(std::move(item.payload));
  return out;
}

/// Waits for `done` with a generous deadline; false if it never held.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = 20s) {
  const auto deadline = clock::now() + limit;
  while (clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return done();
}

/// Options of a job running `function` on the test workers.
inline job_options job(std::string function, std::size_t batch = 4, std::uint32_t in_flight = 4) {
  job_options o;
  o.function = std::move(function);
  o.batching = fixed_batch{batch};
  o.max_in_flight = in_flight;
  return o;
}

class DispatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> n{0};
    ns_ = "dt" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    dir_ = fs::temp_directory_path() / ("slither-" + ns_);
  }
  void TearDown() override {
    broker_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  /// A pool of `size` test workers.
  pool_options pool(std::size_t size = 2, std::string name = "default") {
    pool_options p;
    p.name = std::move(name);
    p.size = size;
    p.command = {SLITHER_TEST_WORKER_EXE};
    p.heartbeat = 200ms;
    p.heartbeat_misses = 10;
    p.restart_backoff = backoff{10ms, 2.0, 200ms};
    return p;
  }

  broker_options options(std::vector<pool_options> pools) {
    broker_options o;
    o.ns = ns_;
    o.runtime_dir = dir_;
    o.pools = std::move(pools);
    return o;
  }

  Broker& start(broker_options o) {
    broker_ = std::make_unique<Broker>(std::move(o));
    auto r = broker_->start();
    EXPECT_TRUE(r) << r.error().message;
    return *broker_;
  }
  Broker& start(std::size_t workers = 2) { return start(options({pool(workers)})); }

  client_options where(std::chrono::milliseconds timeout = 5000ms) const {
    client_options o;
    o.runtime_dir = dir_;
    o.ns = ns_;
    o.timeout = timeout;
    return o;
  }

  /// The broker's stats of `pool`.
  Value pool_stats(const std::string& pool = "default") {
    auto c = client::connect(where()).value();
    auto st = c.stats().value();
    return st.find("dispatch")->find("pools")->find(pool) == nullptr
               ? Value()
               : *st.find("dispatch")->find("pools")->find(pool);
  }

  /// Pids of the pool's workers that have joined.
  std::vector<pid_t> worker_pids(const std::string& pool = "default") {
    std::vector<pid_t> out;
    const Value st = pool_stats(pool);
    if (const Value* ws = st.find("workers")) {
      for (const auto& w : ws->as<List>()) {
        out.push_back(static_cast<pid_t>(w.find("pid")->as<std::int64_t>()));
      }
    }
    return out;
  }

  /// Waits until `n` workers have joined the pool.
  bool wait_workers(std::size_t n, const std::string& pool = "default") {
    return eventually([&] { return worker_pids(pool).size() >= n; });
  }

  static std::int64_t count(const Value& stats, std::string_view key) {
    const Value* v = stats.find(key);
    return v != nullptr && v->is_int() ? v->as<std::int64_t>() : -1;
  }

  std::string ns_;
  fs::path dir_;
  std::unique_ptr<Broker> broker_;
};

}  // namespace slither::test_support
