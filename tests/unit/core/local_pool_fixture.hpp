// A fixture for pipes whose python stages run on a local_pool in the test
// process: the derived fixture's SetUp starts the pool, adds the functions
// its tests call, then starts the runner.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <memory>

#include "slither/core/local_pool.hpp"
#include "slither/core/pipe.hpp"

namespace slither::testing {

class local_pool_test : public ::testing::Test {
 protected:
  /// A pool of `workers` threads in `pool_`, without functions yet.
  void start_pool(std::size_t workers = 2) {
    local_pool_options o;
    o.workers = workers;
    pool_ = std::make_unique<local_pool>(local_pool::create(o).value());
  }
  /// The runner over `pool_` that `opts()` hands to runs.
  void start_runner() { runner_ = local_runner(*pool_); }
  void TearDown() override {
    runner_.reset();
    pool_.reset();
  }

  /// Run options whose python stages run on `pool_`.
  run_options opts() {
    run_options o;
    o.runner = runner_.get();
    return o;
  }

  std::unique_ptr<local_pool> pool_;
  std::unique_ptr<batch_runner> runner_;
};

}  // namespace slither::testing
