// Reclamation under forked readers, in each way a read can announce its epoch
// (epoch.hpp): asymmetric (plain lane stores, the writer's membarrier), full
// (a writer that offers no membarrier), and mixed (the writer offers it, the
// readers could not register). Reader processes hammer gets of keys the
// writer keeps replacing and reclaiming, and check every value they see: a
// block freed and reused under a read shows up as a value that fails its
// checksum. As far as a test can, this catches a missing fence.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "process_test_util.hpp"
#include "shm_fences_util.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::scaled;
using testing::shared_block;
using testing::shared_state;
using testing::spawn;
using testing::wait_for;
using testing::wait_until;

enum class fences { asymmetric, full_writer, unregistered_readers };

// More threads than a slot keeps lanes for: some read on per-read lanes.
constexpr unsigned threads_per_reader = detail::lanes_per_reader - 2;
constexpr unsigned reader_processes = 2;
constexpr std::uint64_t keys = 16;  // few keys: every put retires a block soon reused

int hammer(const store_options& o, shared_state* st, bool unregistered, unsigned seed) {
  if (unregistered) detail::sys().membarrier = testing::failing_membarrier;  // this child only
  auto r = reader::attach(o.ns, o.name);
  if (!r) return 2;
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < threads_per_reader; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed * 100 + t);
      std::uint64_t n = 0;
      while (st->stop.load(std::memory_order_relaxed) == 0) {
        const std::uint64_t k = rng() % keys;
        auto v = r->get("kv", std::to_string(k));
        if (!(v && *v && testing::verify(k, **v))) st->bad.fetch_add(1);
        ++n;
      }
      st->reads.fetch_add(n);
    });
  }
  st->ready.fetch_add(1);
  for (auto& t : threads) t.join();
  return 0;
}

class EpochProcesses : public ::testing::TestWithParam<fences> {};

TEST_P(EpochProcesses, ReadersCheckEveryValueWhileTheWriterReplacesAndFrees) {
  testing::sys_restore restore;
  if (GetParam() == fences::full_writer) {
    detail::sys().membarrier = testing::failing_membarrier;  // the writer cannot offer it
  }
  auto o = testing::test_options("fences");
  std::vector<table_spec> tables = {{"kv", table_kind::set, 64}};
  auto w = writer::create(o, tables).value();
  EXPECT_EQ(testing::fences_of(o), static_cast<std::uint64_t>(GetParam() == fences::full_writer
                                                                  ? detail::fence_mode::full
                                                                  : testing::expected_fences()));
  for (std::uint64_t k = 0; k < keys; ++k) {
    ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, 0)));
  }
  shared_block st;
  std::vector<pid_t> children;
  for (unsigned i = 0; i < reader_processes; ++i) {
    children.push_back(spawn(
        [&, i] { return hammer(o, st.get(), GetParam() == fences::unregistered_readers, i + 1); }));
  }
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == reader_processes; }));
  const std::uint64_t writes = scaled(40000, 4000);
  std::uint64_t freed = 0;
  std::mt19937_64 rng(42);
  // Past `writes`, until something was freed: on a loaded machine (a
  // sanitizer build, twelve reader threads on two cores) a reader preempted
  // inside a read can hold back every reclaim of a short run.
  for (std::uint64_t i = 0; i < writes || (freed == 0 && i < 50 * writes); ++i) {
    const std::uint64_t k = rng() % keys;
    ASSERT_TRUE(w.put("kv", std::to_string(k), testing::checked_value(k, i + 1)));
    if (i % 8 == 7) freed += w.reclaim().bytes_freed;  // free early, so blocks are reused
  }
  st->stop = 1;
  for (pid_t c : children) EXPECT_EQ(wait_for(c), 0);
  EXPECT_EQ(st->bad.load(), 0u);
  EXPECT_GT(st->reads.load(), 1000u);
  EXPECT_GT(freed, 0u);  // blocks were freed (and reused) under the readers
  w.reclaim();
  EXPECT_EQ(w.stats().bytes_retired, 0u);  // the readers' lanes were all given back
}

INSTANTIATE_TEST_SUITE_P(, EpochProcesses,
                         ::testing::Values(fences::asymmetric, fences::full_writer,
                                           fences::unregistered_readers),
                         [](const auto& info) {
                           switch (info.param) {
                             case fences::asymmetric:
                               return std::string("Asymmetric");
                             case fences::full_writer:
                               return std::string("FullWriter");
                             case fences::unregistered_readers:
                               return std::string("UnregisteredReaders");
                           }
                           return std::string();
                         });

}  // namespace
}  // namespace slither::shm
