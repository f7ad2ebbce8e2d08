#include "broker_log.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <string_view>
#include <utility>

namespace slither::detail {
namespace {

thread_local std::shared_ptr<spdlog::logger> current;

spdlog::level::level_enum to_spdlog(log_level level) noexcept {
  switch (level) {
    case log_level::trace:
      return spdlog::level::trace;
    case log_level::debug:
      return spdlog::level::debug;
    case log_level::info:
      return spdlog::level::info;
    case log_level::warn:
      return spdlog::level::warn;
    case log_level::error:
      return spdlog::level::err;
    case log_level::critical:
      return spdlog::level::critical;
    case log_level::off:
      break;
  }
  return spdlog::level::off;
}

log_level from_spdlog(spdlog::level::level_enum level) noexcept {
  switch (level) {
    case spdlog::level::trace:
      return log_level::trace;
    case spdlog::level::debug:
      return log_level::debug;
    case spdlog::level::info:
      return log_level::info;
    case spdlog::level::warn:
      return log_level::warn;
    case spdlog::level::err:
      return log_level::error;
    default:
      return log_level::critical;
  }
}

// The base sink's mutex serialises calls: the callback sees one line at a time.
class callback_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit callback_sink(log_fn fn) : fn_(std::move(fn)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    fn_(from_spdlog(msg.level), std::string_view(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}

 private:
  log_fn fn_;
};

}  // namespace

spdlog::logger& broker_log() {
  if (current) return *current;
  return *spdlog::default_logger_raw();
}

std::shared_ptr<spdlog::logger> current_broker_logger() noexcept {
  return current;
}

std::shared_ptr<spdlog::logger> make_broker_logger(const broker_options& options) {
  if (!options.log) return nullptr;
  auto logger = std::make_shared<spdlog::logger>("slither-broker." + options.ns,
                                                 std::make_shared<callback_sink>(options.log));
  logger->set_level(to_spdlog(options.log_min_level));
  logger->flush_on(spdlog::level::trace);
  return logger;
}

log_scope::log_scope(std::shared_ptr<spdlog::logger> logger) noexcept
    : previous_(std::exchange(current, std::move(logger))) {}

log_scope::~log_scope() {
  current = std::move(previous_);
}

}  // namespace slither::detail
