#include "report.hpp"

#include <cstdio>
#include <string>

namespace slither::examples {

bool mode_result::held() const noexcept {
  for (const auto& [name, ok] : invariants) {
    if (!ok) return false;
  }
  return true;
}

bool must_hold(const std::string& mode) {
  return mode != "unsafe_threaded";
}

namespace {

std::string verdict(const mode_result& m) {
  std::string broken;
  for (const auto& [name, ok] : m.invariants) {
    if (!ok) broken += (broken.empty() ? "" : "; ") + name;
  }
  if (broken.empty()) return "held (" + std::to_string(m.invariants.size()) + ")";
  return "BROKEN: " + broken;
}

void print_row(const mode_result& m, double slither_seconds, std::ostream& out) {
  char line[160];
  // How many times faster Slither ran than this mode.
  const double speedup = slither_seconds > 0 ? m.seconds / slither_seconds : 0;
  std::snprintf(line, sizeof line, "  %-22s %9.3f %12.1f %9s %8s  ", m.mode.c_str(), m.seconds,
                m.throughput(),
                m.peak_rss_mib > 0 ? std::to_string(static_cast<int>(m.peak_rss_mib)).c_str() : "-",
                m.mode == "slither" || slither_seconds <= 0
                    ? "-"
                    : (std::to_string(speedup).substr(0, 4) + "x").c_str());
  out << line << verdict(m) << "\n";
}

nlohmann::json mode_json(const mode_result& m) {
  nlohmann::json inv = nlohmann::json::object();
  for (const auto& [name, ok] : m.invariants) inv[name] = ok;
  return {{"mode", m.mode},
          {"seconds", m.seconds},
          {"items", m.items},
          {"throughput", m.throughput()},
          {"held", m.held()},
          {"invariants", inv},
          {"peak_rss_mib", m.peak_rss_mib}};
}

}  // namespace

void print_comparison(const example_report& report, std::ostream& out) {
  out << "  mode                      wall s      items/s  peak MiB  slither x  invariants\n";
  const double slither_seconds = report.slither.mode.empty() ? 0 : report.slither.seconds;
  if (!report.slither.mode.empty()) print_row(report.slither, slither_seconds, out);
  for (const auto& b : report.baselines) print_row(b, slither_seconds, out);
}

nlohmann::json to_json(const example_report& report) {
  nlohmann::json j = {{"name", report.name}, {"ok", report.exit_code == 0}};
  if (!report.slither.mode.empty()) j["slither"] = mode_json(report.slither);
  nlohmann::json baselines = nlohmann::json::array();
  for (const auto& b : report.baselines) baselines.push_back(mode_json(b));
  j["baselines"] = baselines;
  j["facts"] = report.facts;
  if (!report.error.empty()) j["error"] = report.error;
  return j;
}

std::vector<mode_result> baselines_from_json(const nlohmann::json& modes) {
  std::vector<mode_result> out;
  for (const auto& m : modes) {
    mode_result r;
    r.mode = m.at("mode").get<std::string>();
    r.seconds = m.at("seconds").get<double>();
    r.items = m.at("items").get<std::uint64_t>();
    r.peak_rss_mib = m.value("peak_rss_mib", 0.0);
    for (const auto& [name, ok] : m.at("invariants").items()) {
      r.invariants.emplace_back(name, ok.get<bool>());
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace slither::examples
