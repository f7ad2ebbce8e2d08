// What reaches spdlog's default logger (where an embedded broker without a
// log callback writes) while a test runs.
#pragma once

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>

namespace slither::test_support {

/// Adds a sink that keeps the last 256 lines to the default logger, at
/// `level` (by default the logger's own), until destroyed.
class default_logger_tap {
 public:
  explicit default_logger_tap(spdlog::level::level_enum level = spdlog::default_logger()->level())
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256)),
        level_(spdlog::default_logger()->level()) {
    spdlog::default_logger()->set_level(level);
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  default_logger_tap(const default_logger_tap&) = delete;
  default_logger_tap& operator=(const default_logger_tap&) = delete;
  ~default_logger_tap() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
    spdlog::default_logger()->set_level(level_);
  }
  /// Whether a line kept contains `part`.
  bool saw(std::string_view part) const {
    for (const auto& line : sink_->last_formatted()) {
      if (line.find(part) != std::string::npos) return true;
    }
    return false;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  spdlog::level::level_enum level_;
};

}  // namespace slither::test_support
