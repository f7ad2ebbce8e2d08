// A table's index growing under reader processes: a fixed set of keys, read
// continuously by forked readers while the writer grows the table through
// several migrations (index.hpp), is never missed, never read torn.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "process_test_util.hpp"
#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {
namespace {

using testing::scaled;
using testing::shared_block;
using testing::shared_state;
using testing::spawn;
using testing::test_options;
using testing::wait_for;
using testing::wait_until;

constexpr std::uint64_t kFixed = 512;

std::string fixed_key(std::uint64_t k) {
  return testing::numbered("fixed:", k);
}

/// Reads every fixed key over and over (get, contains, and now and then
/// `keys`), counting in `bad` every miss and every value that fails its check.
int fixed_reader(const store_options& o, shared_state* st) {
  auto r = reader::attach(o.ns, o.name);
  if (!r) return 2;
  st->ready.fetch_add(1);
  std::uint64_t n = 0, rounds = 0;
  while (st->stop.load(std::memory_order_relaxed) == 0) {
    for (std::uint64_t k = 0; k < kFixed; ++k, ++n) {
      auto v = r->get("kv", fixed_key(k));
      if (!v || !*v || !testing::verify(k, **v)) st->bad.fetch_add(1);
    }
    if (++rounds % 16 == 0) {
      auto keys = r->keys("kv", "fixed:");
      if (!keys || keys->size() != kFixed) st->bad.fetch_add(1);
    }
  }
  st->reads.fetch_add(n);
  return 0;
}

TEST(IndexProcesses, ReadersNeverMissAKeyWhileTheIndexGrows) {
  auto o = test_options("idxgrow");
  o.initial_segment_bytes = 4 << 20;
  std::vector<table_spec> tables = {{"kv", table_kind::set, 16}};
  auto w = writer::create(o, tables).value();
  for (std::uint64_t k = 0; k < kFixed; ++k) {
    ASSERT_TRUE(w.put("kv", fixed_key(k), testing::checked_value(k, 0)));
  }
  shared_block st;
  std::vector<pid_t> children;
  for (unsigned i = 0; i < 2; ++i) {
    children.push_back(spawn([&] { return fixed_reader(o, st.get()); }));
  }
  ASSERT_TRUE(wait_until([&] { return st->ready.load() == 2; }));
  // 2^7 -> 2^19 slots: a dozen migrations, each overlapping the readers,
  // with the fixed keys rewritten (in whichever array holds them) meanwhile.
  const std::uint64_t extra = scaled(200000, 30000);
  std::mt19937_64 rng(3);
  for (std::uint64_t i = 0; i < extra; ++i) {
    ASSERT_TRUE(w.put("kv", testing::numbered("more:", i), "x"));
    if (i % 8 == 0) {
      const std::uint64_t k = rng() % kFixed;
      ASSERT_TRUE(w.put("kv", fixed_key(k), testing::checked_value(k, i + 1)));
    }
  }
  st->stop = 1;
  for (pid_t c : children) EXPECT_EQ(wait_for(c), 0);
  EXPECT_EQ(st->bad.load(), 0u);
  EXPECT_GT(st->reads.load(), 10 * kFixed);
  std::printf("%llu verified reads while %llu keys were added\n",
              static_cast<unsigned long long>(st->reads.load()),
              static_cast<unsigned long long>(extra));
}

}  // namespace
}  // namespace slither::shm
