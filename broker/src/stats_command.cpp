#include "stats_command.hpp"

#include <nlohmann/json.hpp>

#include "metrics.hpp"
#include "slither/broker/broker.hpp"
#include "slither/broker/client.hpp"

namespace slither::detail {

namespace {

std::string text_or(const Value& stats, std::string_view key, std::string fallback) {
  const Value* v = stats.find(key);
  if (v == nullptr) return fallback;
  if (v->is_string()) return v->as<std::string>();
  if (v->is_int()) return std::to_string(v->as<std::int64_t>());
  return fallback;
}

}  // namespace

int run_stats_command(const stats_command_options& options, std::FILE* out, std::FILE* err) {
  client_options where;
  where.timeout = options.timeout;
  std::string endpoint;
  if (!options.config.empty()) {
    auto cfg = load_config(options.config);
    if (!cfg) {
      std::fprintf(err, "slither-broker stats: %s\n", cfg.error().message.c_str());
      return 2;
    }
    where.ns = cfg->ns;
    where.runtime_dir = cfg->runtime_dir;
    endpoint = cfg->control_endpoint;
  }
  if (!options.ns.empty()) where.ns = options.ns;
  if (!options.runtime_dir.empty()) where.runtime_dir = options.runtime_dir;
  if (endpoint.starts_with("tcp://")) {
    // A tcp endpoint takes a client key pair on the broker's allow-list,
    // which a config file does not hold.
    std::fprintf(err,
                 "slither-broker stats: the broker's control endpoint '%s' is tcp; this command "
                 "reaches brokers over ipc only (scrape its metrics endpoint instead)\n",
                 endpoint.c_str());
    return 2;
  }
  if (!endpoint.empty() && where.runtime_dir.empty()) where.endpoint = endpoint;
  if (where.endpoint.empty() && where.runtime_dir.empty()) {
    where.runtime_dir = default_runtime_dir(where.ns);
  }
  const std::string shown =
      where.endpoint.empty() ? "ipc://" + (where.runtime_dir / "control").string() : where.endpoint;

  auto c = client::connect(where);
  if (!c) {
    std::fprintf(err, "slither-broker stats: no broker of namespace '%s' answers at %s: %s\n",
                 where.ns.c_str(), shown.c_str(), c.error().message.c_str());
    return 1;
  }
  auto stats = c->stats();
  if (!stats) {
    std::fprintf(err, "slither-broker stats: %s: %s\n",
                 std::string(to_string(stats.error().code)).c_str(), stats.error().message.c_str());
    return 1;
  }
  if (options.json) {
    // Value::to_string is compact JSON; indented for people reading it.
    const auto doc = nlohmann::json::parse(stats->to_string(), nullptr, false);
    const std::string text = doc.is_discarded() ? stats->to_string() : doc.dump(2);
    std::fprintf(out, "%s\n", text.c_str());
    return 0;
  }
  std::fprintf(out, "# broker namespace=%s pid=%s uptime_ms=%s clients=%s requests=%s errors=%s\n",
               text_or(*stats, "ns", "?").c_str(), text_or(*stats, "pid", "?").c_str(),
               text_or(*stats, "uptime_ms", "?").c_str(), text_or(*stats, "clients", "?").c_str(),
               text_or(*stats, "requests", "?").c_str(), text_or(*stats, "errors", "?").c_str());
  if (const auto ep = text_or(*stats, "metrics_endpoint", ""); !ep.empty()) {
    std::fprintf(out, "# metrics endpoint: http://%s/metrics\n", ep.c_str());
  }
  const Value* metrics = stats->find("metrics");
  if (metrics == nullptr) {
    std::fprintf(err,
                 "slither-broker stats: the broker's stats have no metrics (an older broker?)\n");
    return 1;
  }
  auto families = metric_families(*metrics);
  if (!families) {
    std::fprintf(err, "slither-broker stats: %s\n", families.error().message.c_str());
    return 1;
  }
  std::fputs(exposition_text(*families).c_str(), out);
  return 0;
}

}  // namespace slither::detail
