#include "slither/core/function_ref.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <type_traits>

namespace slither {
namespace {

int twice(int v) {
  return 2 * v;
}

int call(function_ref<int(int)> f, int v) {
  return f(v);
}

TEST(FunctionRef, CallsLambdasFunctionsAndFunctorsInPlace) {
  int calls = 0;
  EXPECT_EQ(call([&](int v) { return v + ++calls; }, 1), 2);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(call(twice, 4), 8);
  EXPECT_EQ(call(&twice, 5), 10);
  struct counter {
    int n = 0;
    int operator()(int v) { return n += v; }
  } c;
  function_ref<int(int)> ref = c;
  ref(3);
  ref(4);
  EXPECT_EQ(c.n, 7) << "the functor itself was called, not a copy";
  static_assert(sizeof(function_ref<void()>) == 2 * sizeof(void*));
}

TEST(FunctionRef, ForwardsMoveOnlyArgumentsAndConvertsResults) {
  function_ref<int(std::unique_ptr<int>)> take = [](std::unique_ptr<int> p) { return *p; };
  EXPECT_EQ(take(std::make_unique<int>(9)), 9);
  // The result converts to R; an R of void discards it.
  const auto length = [](const std::string& s) { return s.size(); };
  function_ref<long(const std::string&)> as_long = length;
  EXPECT_EQ(as_long("abc"), 3);
  function_ref<void(const std::string&)> ignore = length;
  ignore("x");
  static_assert(!std::is_constructible_v<function_ref<int(int)>, int>);
  static_assert(!std::is_constructible_v<function_ref<int(int)>, void (*)(int)>);
}

}  // namespace
}  // namespace slither
