// A pipe's definition as the builder records it, and the compiled form a run
// takes a snapshot of (indexes resolved, policies per stage).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "slither/core/pipe.hpp"

namespace slither::detail {

enum class stage_kind : std::uint8_t { native, native_batch, python, router };

struct stage_def {
  std::string name;
  stage_kind kind = stage_kind::native;
  item_fn item;
  batch_fn batch;
  native_options native;
  python_options python;
  std::vector<route> routes;
};

struct pipe_def {
  std::string name;
  std::vector<stage_def> stages;
  std::vector<std::string> outputs;  // declared, without "default"
  std::vector<std::pair<std::string, error_policy>> policies;
  std::vector<std::string> stores;
};

/// A stage ready to run: its definition, its error policy, and its routes as
/// output indexes (0 is "default").
struct compiled_stage {
  stage_def def;
  error_policy policy;
  std::vector<std::uint32_t> route_outputs;
  /// The output of a `route` policy (or a retry's fallback), if any.
  std::uint32_t error_output = 0;
};

struct compiled_pipe {
  std::string name;
  std::vector<compiled_stage> stages;
  /// "default" first, then the declared outputs.
  std::vector<std::string> outputs;
  std::vector<std::string> stores;

  /// The index of `output`, or -1.
  std::int64_t output_index(std::string_view output) const noexcept {
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i] == output) return static_cast<std::int64_t>(i);
    }
    return -1;
  }
};

/// Validates `def` and resolves it for a run.
result<compiled_pipe> compile(const pipe_def& def);

/// The batching of a python stage: by key, by weight, or fixed batches of `batch_size`.
batch_strategy python_batching(const python_options& options);

/// The policy's name ("halt", "skip", "route", "retry").
std::string_view policy_name(const error_policy& policy) noexcept;

}  // namespace slither::detail
