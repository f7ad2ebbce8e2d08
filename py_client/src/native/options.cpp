#include "options.hpp"
#include "errors.hpp"

#include <cmath>
#include <cstdint>
#include <string>

#include <nanobind/stl/string.h>

namespace nb = nanobind;

namespace slither::py {

std::chrono::milliseconds seconds_to_ms(double s, const char* what) {
  if (!(s > 0) || !std::isfinite(s)) {
    raise_invalid_argument((std::string(what) + " must be a positive number of seconds").c_str());
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(s * 1000.0)));
}

client_options client_where(nb::handle where) {
  client_options o;
  o.endpoint = nb::cast<std::string>(where["endpoint"]);
  o.runtime_dir = nb::cast<std::string>(where["runtime_dir"]);
  o.ns = nb::cast<std::string>(where["namespace"]);
  o.timeout = seconds_to_ms(nb::cast<double>(where["timeout"]), "timeout");
  o.curve_server_key = nb::cast<std::string>(where["curve_server_key"]);
  o.curve_secret_key = nb::cast<std::string>(where["curve_secret_key"]);
  o.curve_public_key = nb::cast<std::string>(where["curve_public_key"]);
  return o;
}

fallback_policy to_fallback(nb::handle spec) {
  const auto kind = nb::cast<std::string>(spec[0]);
  if (kind == "halt") return halt_policy{};
  if (kind == "skip") return skip_policy{};
  if (kind == "route") return route_policy{nb::cast<std::string>(spec[1])};
  raise_invalid_argument(("on_error: unknown policy '" + kind + "'").c_str());
}

error_policy to_policy(nb::handle spec) {
  const auto kind = nb::cast<std::string>(spec[0]);
  if (kind != "retry") {
    return std::visit([](auto p) -> error_policy { return p; }, to_fallback(spec));
  }
  retry_policy r;
  r.max_attempts = nb::cast<std::uint32_t>(spec[1]);
  r.delay.initial = std::chrono::milliseconds(
      static_cast<std::int64_t>(std::ceil(nb::cast<double>(spec[2]) * 1000.0)));
  r.delay.multiplier = nb::cast<double>(spec[3]);
  r.delay.max = std::chrono::milliseconds(
      static_cast<std::int64_t>(std::ceil(nb::cast<double>(spec[4]) * 1000.0)));
  r.then = to_fallback(spec[5]);
  return r;
}

}  // namespace slither::py
