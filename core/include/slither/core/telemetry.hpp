// Telemetry: named events, as in the original ("slither.dispatch.batch.start",
// "slither.bridge.view.stop", ...), delivered to handlers attached by prefix.
//
// Emitting with no handler attached costs one relaxed atomic load.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "slither/core/export.hpp"
#include "slither/core/value.hpp"

namespace slither::telemetry {

/// Receives an event: its full name, measurements (e.g. {"duration_ns": ...})
/// and metadata (e.g. {"store": "features", "view": "top_k"}).
using handler =
    std::function<void(std::string_view event, const Map& measurements, const Map& metadata)>;

/// Detaches its handler when destroyed (or on `detach()`). Move-only.
class SLITHER_CORE_EXPORT attachment {
 public:
  attachment() noexcept = default;
  explicit attachment(std::uint64_t id) noexcept : id_(id) {}
  attachment(attachment&& other) noexcept : id_(std::exchange(other.id_, 0)) {}
  attachment& operator=(attachment&& other) noexcept;
  attachment(const attachment&) = delete;
  attachment& operator=(const attachment&) = delete;
  ~attachment() { detach(); }
  /// Stops delivery to the handler. Safe twice.
  void detach() noexcept;

 private:
  std::uint64_t id_ = 0;
};

/// Calls `fn` for every event whose name starts with `prefix` ("" for all).
/// Handlers run on the emitting thread and must not throw; an exception is
/// caught and dropped so telemetry never breaks the code that emits.
[[nodiscard]] SLITHER_CORE_EXPORT attachment attach(std::string prefix, handler fn);

/// Delivers an event to the matching handlers.
SLITHER_CORE_EXPORT void emit(std::string_view event, const Map& measurements,
                              const Map& metadata = {});

/// True if any handler is attached (so callers can skip building payloads).
SLITHER_CORE_EXPORT bool enabled() noexcept;

}  // namespace slither::telemetry
