// Running user and store code on the broker's threads: exceptions become
// error replies, and telemetry events surround the call when observed.
#pragma once

#include <chrono>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "slither/core/error.hpp"
#include "slither/core/telemetry.hpp"
#include "slither/core/value.hpp"

namespace slither::detail {

inline std::int64_t micros_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               t0)
      .count();
}

// Runs `body`, emitting "<event>.start" and "<event>.stop" (with duration_us
// and ok) around it when a telemetry handler is attached; `meta` builds the
// events' metadata only then, so an unobserved write pays one atomic load.
template <class Meta, class Body>
auto with_telemetry(std::string_view event, Meta&& meta, Body&& body) {
  if (!telemetry::enabled()) return body();
  const Map tags = meta();
  const std::string name(event);
  telemetry::emit(name + ".start", {}, tags);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = body();
  telemetry::emit(name + ".stop", {{"duration_us", micros_since(t0)}, {"ok", r.has_value()}}, tags);
  return r;
}

// Runs user or store code so that an exception becomes an error reply, not a dead thread.
template <class F>
result<Value> guarded(F&& f) {
  try {
    return f();
  } catch (const slither::error& e) {
    return fail(e.code(), e.what());
  } catch (const std::exception& e) {
    return fail(errc::internal, std::string("exception: ") + e.what());
  } catch (...) {
    return fail(errc::internal, "unknown exception");
  }
}

}  // namespace slither::detail
