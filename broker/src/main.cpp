// slither-broker: parses arguments and the config file, then runs a Broker
// until SIGINT/SIGTERM/SIGHUP or the end of its --parent-pid process (each a
// graceful stop). `slither-broker keygen --out NAME` writes a CURVE key pair
// for tcp endpoints instead; `slither-broker stats` prints a running broker's
// stats and metrics.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/types.h>
#include <CLI/CLI.hpp>
#include <cstdio>
#include <limits>

#include "curve_keys.hpp"
#include "slither/broker/broker.hpp"
#include "stats_command.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "slither-broker: owns a namespace's shared-memory stores and serves its clients.\n"
      "SIGINT, SIGTERM and SIGHUP stop it gracefully: queued writes finish, its segments\n"
      "and runtime directory are removed (a second signal stops at once). So does the end\n"
      "of the --parent-pid process."};
  app.set_version_flag("--version", std::string("slither-broker ") + SLITHER_VERSION);
  std::string config, runtime_dir, ns, level = "info";
  app.add_option("--config", config, "slither.toml declaring the broker and its stores")
      ->check(CLI::ExistingFile);
  app.add_option("--runtime-dir", runtime_dir,
                 "owner-only directory for the control socket (overrides the config)");
  app.add_option("--namespace", ns, "namespace of the stores (overrides the config)");
  app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  std::string metrics;
  app.add_option("--metrics", metrics,
                 "serve Prometheus metrics over HTTP at HOST:PORT, GET /metrics (overrides the "
                 "config's metrics_endpoint; loopback only unless allow_remote; port 0: any)");
  std::int64_t parent_pid = 0;
  app.add_option("--parent-pid", parent_pid,
                 "stop gracefully, as on SIGTERM, once process PID is gone or no longer an "
                 "ancestor (a wrapper between them died; checked about every 200 ms); PID must "
                 "be this broker's parent, or an ancestor through wrappers that did not exec")
      ->option_text("PID")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{std::numeric_limits<pid_t>::max()}));
  std::string key_base;
  CLI::App* keygen = app.add_subcommand(
      "keygen", "write a CURVE key pair for a tcp endpoint: <out>.key (secret) and <out>.pub");
  keygen->add_option("--out", key_base, "path and name of the key files, without extension")
      ->required();
  slither::detail::stats_command_options stats_opts;
  std::string stats_config, stats_dir;
  std::int64_t stats_timeout_ms = 5000;
  CLI::App* stats = app.add_subcommand(
      "stats", "print a running broker's stats: a summary and its metrics in Prometheus text");
  stats->add_option("--namespace", stats_opts.ns,
                    "the broker's namespace (overrides the config's)");
  stats->add_option("--config", stats_config, "the broker's slither.toml")
      ->check(CLI::ExistingFile);
  stats->add_option("--runtime-dir", stats_dir, "the broker's runtime directory");
  stats->add_flag("--json", stats_opts.json, "print the whole stats reply as JSON");
  stats->add_option("--timeout-ms", stats_timeout_ms, "longest wait for the broker's answer")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3'600'000}));
  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);

  if (keygen->parsed()) {
    auto pair = slither::detail::write_key_pair(key_base);
    if (!pair) {
      std::fprintf(stderr, "slither-broker keygen: %s\n", pair.error().message.c_str());
      return 1;
    }
    std::printf("secret key: %s.key (owner-only; keep it private)\n", key_base.c_str());
    std::printf("public key: %s.pub = %s\n", key_base.c_str(), pair->public_key.c_str());
    return 0;
  }

  if (stats->parsed()) {
    stats_opts.config = stats_config;
    stats_opts.runtime_dir = stats_dir;
    stats_opts.timeout = std::chrono::milliseconds(stats_timeout_ms);
    return slither::detail::run_stats_command(stats_opts, stdout, stderr);
  }

  spdlog::set_default_logger(spdlog::stderr_color_mt("slither-broker"));
  spdlog::set_level(spdlog::level::from_str(level));

  slither::broker_options options;
  if (!config.empty()) {
    auto loaded = slither::load_config(config);
    if (!loaded) {
      spdlog::error("{}", loaded.error().message);
      return 2;
    }
    options = std::move(*loaded);
  }
  if (!ns.empty()) {
    options.ns = ns;
    for (auto& store : options.stores) store.options.ns = ns;
  }
  if (!runtime_dir.empty()) options.runtime_dir = runtime_dir;
  if (!metrics.empty()) options.metrics_endpoint = metrics;
  options.parent_pid = parent_pid;

  slither::Broker broker(std::move(options));
  broker.handle_signals(true);
  if (auto started = broker.start(); !started) {
    spdlog::error("cannot start: {}: {}", slither::to_string(started.error().code),
                  started.error().message);
    return 1;
  }
  broker.wait();
  return 0;
}
