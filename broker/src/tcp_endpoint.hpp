// A tcp control endpoint is always authenticated: CURVE with the broker's
// secret key and an allow-list of client keys, and a loopback address unless
// remote peers are explicitly allowed.
#pragma once

#include <set>
#include <string>
#include <string_view>

#include "slither/broker/broker.hpp"
#include "slither/core/error.hpp"

namespace slither::detail {

/// What the control socket needs to serve a tcp endpoint.
struct tcp_security {
  /// The broker's CURVE secret key (Z85).
  std::string secret_key;
  /// Client public keys (Z85) the ZAP handler lets in.
  std::set<std::string> allowed_clients;
};

/// True for a host part of a tcp endpoint that only this machine reaches:
/// 127.0.0.0/8, ::1, "localhost" or the loopback interface "lo".
bool is_loopback_host(std::string_view host) noexcept;

/// Checks a tcp endpoint ("tcp://<host>:<port>") against the options: both
/// key files given and owner-only, and a loopback host unless
/// `allow_remote`. Errors: `invalid_argument` naming what is missing or
/// wrong, `io_error`.
result<tcp_security> prepare_tcp_endpoint(const std::string& endpoint,
                                          const broker_options& options);

}  // namespace slither::detail
