#include "slither/core/executor.hpp"

#include <utility>

namespace slither {

opaque_bytes opaque_bytes::adopt(std::vector<std::byte> data) {
  auto owner = std::make_shared<const std::vector<std::byte>>(std::move(data));
  return {std::span<const std::byte>(owner->data(), owner->size()), owner};
}

std::string_view to_string(failure_kind kind) noexcept {
  switch (kind) {
    case failure_kind::item_error:
      return "item_error";
    case failure_kind::exception:
      return "exception";
    case failure_kind::bad_result:
      return "bad_result";
    case failure_kind::worker_died:
      return "worker_died";
    case failure_kind::timeout:
      return "timeout";
    case failure_kind::quarantined:
      return "quarantined";
    case failure_kind::circuit_open:
      return "circuit_open";
    case failure_kind::cancelled:
      return "cancelled";
  }
  return "unknown";
}

std::string dispatch_error::describe() const {
  std::string out = type.empty() ? std::string(to_string(kind)) : type;
  if (!message.empty()) out += ": " + message;
  if (batch != 0) {
    out += " (batch " + std::to_string(batch) + ", attempt " + std::to_string(attempt);
    if (worker != 0) out += ", worker " + std::to_string(worker);
    out += ")";
  }
  return out;
}

}  // namespace slither
