// slither-broker: parses arguments and the config file, then runs a Broker
// until SIGINT/SIGTERM. `slither-broker keygen --out NAME` writes a CURVE key
// pair for tcp endpoints instead.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <cstdio>

#include "curve_keys.hpp"
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
  std::string key_base;
  CLI::App* keygen = app.add_subcommand(
      "keygen", "write a CURVE key pair for a tcp endpoint: <out>.key (secret) and <out>.pub");
  keygen->add_option("--out", key_base, "path and name of the key files, without extension")
      ->required();
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
