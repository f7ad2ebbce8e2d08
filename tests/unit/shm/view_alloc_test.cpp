// What reading a stored array in place allocates. Its own program: it replaces
// the global operator new (to count), which the other shm tests must not see.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <vector>

#include "shm_test_util.hpp"
#include "slither/shm/store.hpp"

namespace {
thread_local std::size_t allocations = 0;
}  // namespace

void* operator new(std::size_t bytes) {
  ++allocations;
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

}  // namespace
}  // namespace slither::shm
