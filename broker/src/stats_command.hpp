// `slither-broker stats`: asks a running broker for its stats over the
// control socket (the C++ client) and prints them, as a summary and the
// Prometheus text of its metrics, or as JSON.
#pragma once

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

namespace slither::detail {

/// Which broker to ask and how to print.
struct stats_command_options {
  /// The broker's namespace; overrides the config's. Empty: the config's, else "default".
  std::string ns;
  /// A slither.toml to read the namespace, runtime directory and endpoint from.
  std::filesystem::path config;
  /// The broker's runtime directory; overrides the config's.
  std::filesystem::path runtime_dir;
  /// The whole `stats` reply as JSON instead of the summary and metrics text.
  bool json = false;
  /// Longest wait for the broker's answer.
  std::chrono::milliseconds timeout{5000};
};

/// Runs the command: the figures go to `out`, errors to `err`. Returns the
/// exit status: 0, 1 (no broker answers, or it refused) or 2 (bad config).
int run_stats_command(const stats_command_options& options, std::FILE* out, std::FILE* err);

}  // namespace slither::detail
