// What reading a stored array in place allocates, and reads whose results do
// not fit in memory. Its own program: it replaces the global operator new (to
// count, and to fail on demand), which the other shm tests must not see.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <new>
#include <vector>

#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace {
thread_local std::size_t allocations = 0;
// The allocation (counted from 1) that fails next, once; 0: none.
thread_local std::size_t fail_at = 0;
}  // namespace

void* operator new(std::size_t bytes) {
  ++allocations;
  if (fail_at != 0 && --fail_at == 0) throw std::bad_alloc();
  if (void* p = std::malloc(bytes == 0 ? 1 : bytes)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

namespace slither::shm {
namespace {

TEST(ViewAllocations, AnArrayOfAViewAllocatesNothing) {
  const auto o = testing::test_options("va");
  const std::vector<table_spec> tables = {{"kv", table_kind::set, 16}};
  auto w = writer::create(o, tables).value();
  auto a = ndarray::zeros(dtype::f32, {2, 3, 4, 5, 6});
  a.mutable_values<float>()[719] = 2.5F;
  ASSERT_TRUE(w.put("kv", "arr", a));
  auto r = reader::attach(o.ns, o.name).value();
  const auto v = r.get_view("kv", "arr").value();
  ASSERT_TRUE(v);

  const std::size_t before = allocations;
  const ndarray in_place = v->array();
  const ndarray copy = in_place;  // copies share the buffer and carry their shape inline
  EXPECT_EQ(allocations, before);

  const std::vector<std::uint64_t> want = {2, 3, 4, 5, 6};
  EXPECT_TRUE(std::ranges::equal(copy.shape(), want));
  EXPECT_EQ(in_place.values<float>()[719], 2.5F);
  EXPECT_EQ(copy, a);
}

// A read that collects its result (`range`, `keys`, `get_all`, `get_many`,
// `first`) and finds no memory for it returns `limit_exceeded`, never throws
// std::bad_alloc: each of its allocations in turn is made to fail.
TEST(ReadAllocations, AResultThatFindsNoMemoryIsAnErrorNotAnException) {
  const auto o = testing::test_options("oom");
  const std::vector<table_spec> tables = {{"ord", table_kind::ordered_set, 64},
                                          {"log", table_kind::bag, 16},
                                          {"kv", table_kind::set, 64}};
  auto w = writer::create(o, tables).value();
  for (int i = 0; i < 100; ++i) {
    w.put("ord", testing::numbered("k", i), Bytes{std::string(40, 'v')}).value();
    w.put("kv", testing::numbered("k", i), i).value();
  }
  for (int i = 0; i < 40; ++i) w.put("log", "k", Bytes{std::string(40, 'b')}).value();
  const auto r = reader::attach(o.ns, o.name).value();
  const std::vector<std::string_view> keys = {"k1", "k2", "nope", "k3"};
  const std::vector<std::pair<const char*, std::function<bool()>>> reads = {
      {"range", [&] { return r.range("ord").has_value(); }},
      {"range reversed", [&] { return r.range("ord", {}, {}, SIZE_MAX, true).has_value(); }},
      {"first", [&] { return r.first("ord").has_value(); }},
      {"ordered keys", [&] { return r.keys("ord").has_value(); }},
      {"keys", [&] { return r.keys("kv").has_value(); }},
      {"get_all", [&] { return r.get_all("log", "k").has_value(); }},
      {"get_many", [&] { return r.get_many("kv", keys).has_value(); }},
  };
  for (const auto& [what, read] : reads) {
    bool whole = false;
    for (std::size_t n = 1; !whole && n < 100000; ++n) {
      fail_at = n;
      try {
        whole = read();
      } catch (const std::bad_alloc&) {
        ADD_FAILURE() << what << " threw std::bad_alloc at allocation " << n;
      }
      if (!whole && fail_at != 0) {
        ADD_FAILURE() << what << " failed without running out of memory";
        break;
      }
      fail_at = 0;
    }
    EXPECT_TRUE(whole) << what;
  }
  // The error names what could not be returned (an allocation a read can do
  // without, or a value's, which decoding reports, may fail first).
  std::string named;
  for (std::size_t n = 1; named.empty() && n < 100; ++n) {
    fail_at = n;
    const auto got = r.keys("ord");
    fail_at = 0;
    if (!got && got.error().code == errc::limit_exceeded &&
        got.error().message.find("keys of table 'ord'") != std::string::npos) {
      named = got.error().message;
    }
  }
  EXPECT_NE(named.find("does not fit in this process's memory"), std::string::npos) << named;
}

}  // namespace
}  // namespace slither::shm
