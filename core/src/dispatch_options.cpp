#include "slither/core/dispatch_options.hpp"

#include <algorithm>
#include <cmath>
#include <string_view>

namespace slither {
namespace {

error_info bad_option(std::string_view name, std::string_view why) {
  return fail(errc::invalid_argument,
              "dispatch option '" + std::string(name) + "' " + std::string(why));
}

result<void> validate_backoff(const backoff& b) {
  if (b.initial.count() < 0) {
    return bad_option("on_error.retry.delay.initial",
                      "must not be negative (got " + std::to_string(b.initial.count()) + " ms)");
  }
  if (!std::isfinite(b.multiplier) || b.multiplier < 1) {
    return bad_option(
        "on_error.retry.delay.multiplier",
        "must be a finite number of at least 1 (got " + std::to_string(b.multiplier) + ")");
  }
  if (b.max < b.initial) {
    return bad_option("on_error.retry.delay.max", "must be at least the initial delay (got " +
                                                      std::to_string(b.max.count()) + " ms < " +
                                                      std::to_string(b.initial.count()) + " ms)");
  }
  return {};
}

result<void> validate_route(const std::string& output, std::string_view name) {
  if (output.empty()) return bad_option(name, "needs an output name");
  return {};
}

}  // namespace

std::chrono::milliseconds backoff::delay(std::uint32_t failed_attempts) const noexcept {
  double ms = static_cast<double>(initial.count());
  const auto cap = static_cast<double>(max.count());
  for (std::uint32_t i = 1; i < failed_attempts && ms < cap; ++i) ms *= multiplier;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::min(ms, cap)));
}

result<void> validate(const dispatch_options& options) {
  if (options.function.empty()) return bad_option("function", "is required (what workers run)");
  if (auto b = validate(options.batching); !b) {
    return fail(errc::invalid_argument, "dispatch " + b.error().message);
  }
  if (options.max_in_flight == 0) return bad_option("max_in_flight", "must be at least 1 (got 0)");
  if (options.timeout && options.timeout->count() <= 0) {
    return bad_option(
        "timeout", "must be above 0 ms (got " + std::to_string(options.timeout->count()) + " ms)");
  }
  if (const auto* r = std::get_if<route_policy>(&options.on_error)) {
    return validate_route(r->output, "on_error.route.output");
  }
  if (const auto* r = std::get_if<retry_policy>(&options.on_error)) {
    if (r->max_attempts == 0) {
      return bad_option("on_error.retry.max_attempts", "must be at least 1 (got 0)");
    }
    if (auto b = validate_backoff(r->delay); !b) return b;
    if (const auto* then = std::get_if<route_policy>(&r->then)) {
      return validate_route(then->output, "on_error.retry.then.route.output");
    }
  }
  return {};
}

std::size_t job_window(const dispatch_options& options) noexcept {
  return std::size_t{options.max_in_flight} * max_batch_items(options.batching);
}

}  // namespace slither
