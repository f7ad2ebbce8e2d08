// A dispatch job's answer to one batch put back on the items of that batch:
// the C++ dispatch (dispatch.cpp) and a pipe's python stage (pipe_runner.cpp)
// both submit items encoded and get their batch's results back encoded.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "slither/core/codec.hpp"
#include "slither/core/dispatch.hpp"
#include "slither/core/item.hpp"

namespace slither::detail {

/// The results of one batch, one per item, in the items' order.
struct batch_answer {
  std::vector<dispatch_result> results;
  /// Set when the results were not a batch of as many items as were sent;
  /// then every item failed with it.
  std::optional<dispatch_error> bad_result;
};

/// Puts `out`, the answer to the batch of `items`, back on them: each item
/// keeps its id, meta and route and takes its result's payload, or ends with
/// the failure `out` names for it (all of them, when the batch ended as a
/// whole).
inline batch_answer answer_batch(std::vector<Item> items, batch_output& out) {
  batch_answer answer;
  answer.results.reserve(items.size());
  if (!out.has_results) {
    for (Item& item : items) answer.results.push_back({std::move(item), out.status, out.error});
    return answer;
  }
  auto decoded = decode_batch(out.payload.bytes);
  if (!decoded || decoded->size() != items.size()) {
    dispatch_error e;
    e.kind = failure_kind::bad_result;
    e.type = "bad_result";
    e.message = decoded ? "the results are a batch of " + std::to_string(decoded->size()) +
                              ", not " + std::to_string(items.size())
                        : "the results cannot be decoded: " + decoded.error().message;
    const auto shared = std::make_shared<const dispatch_error>(e);
    for (Item& item : items)
      answer.results.push_back({std::move(item), item_status::failed, shared});
    answer.bad_result = std::move(e);
    return answer;
  }
  std::size_t f = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (f < out.failures.size() && out.failures[f].index == i) {
      answer.results.push_back(
          {std::move(items[i]), out.failures[f].status, out.failures[f].error});
      ++f;
      continue;
    }
    dispatch_result r;
    r.item = std::move(items[i]);
    r.item.payload = std::move((*decoded)[i].payload);
    answer.results.push_back(std::move(r));
  }
  return answer;
}

}  // namespace slither::detail
