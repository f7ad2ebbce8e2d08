// Item (the work envelope) and Context (where a piece of work runs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "slither/core/export.hpp"
#include "slither/core/value.hpp"

namespace slither {

/// The envelope in which a value travels through dispatch and pipes. `id`
/// is stable, so results keep their order and errors name their item.
struct SLITHER_CORE_EXPORT Item {
  std::uint64_t id = 0;
  Value payload;
  Map meta;
  /// The output or stage a router chose; empty until routed.
  std::string route;

  friend bool operator==(const Item&, const Item&) = default;
};

/// Wraps one payload with the given id.
SLITHER_CORE_EXPORT Item wrap(Value payload, std::uint64_t id);
/// Wraps payloads with sequential ids `first_id, first_id + 1, ...`.
SLITHER_CORE_EXPORT std::vector<Item> wrap_many(std::vector<Value> payloads,
                                                std::uint64_t first_id = 0);

/// Where a piece of work runs: the pipe and stage, the session it belongs
/// to (for sticky routing), and free-form metadata.
struct SLITHER_CORE_EXPORT Context {
  std::string pipe;
  std::string stage;
  std::string session_id;
  Map metadata;

  friend bool operator==(const Context&, const Context&) = default;
};

}  // namespace slither
