// slither-broker: parses arguments and the config file, then runs a Broker
// until SIGINT/SIGTERM.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <cstdio>

#include "slither/broker/broker.hpp"

int main(int argc, char** argv) {
  CLI::App app{"slither-broker: owns a namespace's shared-memory stores and serves its clients"};
  app.set_version_flag("--version", std::string("slither-broker ") + SLITHER_VERSION);
  std::string config, runtime_dir, ns, level = "info";
  app.add_option("--config", config, "slither.toml declaring the broker and its stores")
      ->check(CLI::ExistingFile);
  app.add_option("--runtime-dir", runtime_dir,
                 "owner-only directory for the control socket (overrides the config)");
  app.add_option("--namespace", ns, "namespace of the stores (overrides the config)");
  app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  CLI11_PARSE(app, argc, argv);

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
