#include "tcp_endpoint.hpp"

#include <arpa/inet.h>

#include "curve_keys.hpp"

namespace slither::detail {

bool is_loopback_host(std::string_view host) noexcept {
  if (host == "localhost" || host == "lo" || host == "::1" || host == "[::1]") return true;
  in_addr v4{};
  const std::string text(host);
  if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  return false;
}

result<tcp_security> prepare_tcp_endpoint(const std::string& endpoint,
                                          const broker_options& options) {
  std::string_view rest(endpoint);
  rest.remove_prefix(6);  // "tcp://"
  // "<source>;<host>:<port>" binds from a source address; only the host counts here.
  if (const auto semi = rest.find(';'); semi != std::string_view::npos)
    rest.remove_prefix(semi + 1);
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return fail(errc::invalid_argument,
                "control_endpoint '" + endpoint + "' is not tcp://<host>:<port>");
  }
  const auto host = rest.substr(0, colon);
  if (!is_loopback_host(host) && !options.allow_remote) {
    return fail(errc::invalid_argument,
                "control_endpoint '" + endpoint + "' binds a non-loopback address '" +
                    std::string(host) +
                    "': other machines could reach it; set allow_remote = true to mean it");
  }
  if (options.curve_secret_key_file.empty() || options.curve_allowed_clients_file.empty()) {
    return fail(errc::invalid_argument,
                "control_endpoint '" + endpoint +
                    "' needs curve_secret_key_file and curve_allowed_clients_file: a tcp "
                    "endpoint is always authenticated (make keys with 'slither-broker keygen')");
  }
  auto secret = read_key_file(options.curve_secret_key_file);
  if (!secret) return std::move(secret).error();
  auto allowed = read_allow_list(options.curve_allowed_clients_file);
  if (!allowed) return std::move(allowed).error();
  return tcp_security{std::move(*secret), std::move(*allowed)};
}

}  // namespace slither::detail
