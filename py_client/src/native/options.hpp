// Options the Python layer passes as plain data, shared by the bindings that
// open dispatch jobs (Dispatch, Pipe): where the broker is, error policies,
// durations.
#pragma once

#include <chrono>

#include <nanobind/nanobind.h>

#include "slither/broker/client.hpp"
#include "slither/core/dispatch_options.hpp"

namespace slither::py {

/// `seconds` as milliseconds (rounded up); ValueError naming `what` unless it
/// is a positive, finite number.
std::chrono::milliseconds seconds_to_ms(double seconds, const char* what);

/// The broker a `Client._where` dict describes (endpoint, runtime_dir,
/// namespace, timeout, curve keys).
client_options client_where(nanobind::handle where);

/// ("halt",) | ("skip",) | ("route", output), as slither.dispatch._policy makes them.
fallback_policy to_fallback(nanobind::handle spec);

/// The fallbacks plus ("retry", max_attempts, initial_s, multiplier, max_s, then).
error_policy to_policy(nanobind::handle spec);

}  // namespace slither::py
