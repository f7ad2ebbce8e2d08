// A range of items as the source function that streams pull from: what lets
// `stream` and `dispatch_stream` take a container or a view, endless ones
// included, and read only as far as they are asked to.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <utility>

#include "slither/core/item.hpp"

namespace slither::detail {

/// Keeps a range (or a view of it) and walks it, one item per `next`.
template <class V>
struct range_source {
  explicit range_source(V v) : view(std::move(v)), it(view.begin()) {}
  std::optional<Item> next() {
    if (it == view.end()) return std::nullopt;
    Item item = *it;
    ++it;
    return item;
  }
  V view;
  // The view's own begin()/end(): clang 14 fails on std::ranges::begin
  // of libstdc++ 12's ref_view.
  decltype(std::declval<V&>().begin()) it;
};

/// `range`'s items, one per call, then nullopt: a container is kept by
/// reference (it must outlive the function), a view by value.
template <std::ranges::input_range R>
std::function<std::optional<Item>()> item_source(R&& range) {
  using view_t = std::views::all_t<R>;
  auto source = std::make_shared<range_source<view_t>>(std::views::all(std::forward<R>(range)));
  return [source] { return source->next(); };
}

}  // namespace slither::detail
