// Where the broker's log lines go. Every broker thread (and the caller's
// thread inside Broker::start, stop and wait) logs through the logger of the
// broker it serves: the one built from `broker_options::log`, or spdlog's
// default logger when none was given. A thread-local, set at each thread's
// entry, keeps the call sites as short as spdlog's own free functions.
#pragma once

#include <spdlog/logger.h>

#include <memory>

#include "slither/broker/broker.hpp"

namespace slither::detail {

/// The logger of the broker this thread serves, else spdlog's default logger.
spdlog::logger& broker_log();

/// The logger this thread logs to now (null: spdlog's default); a thread that
/// starts another passes it on through `log_scope`.
std::shared_ptr<spdlog::logger> current_broker_logger() noexcept;

/// A logger that hands each line to `options.log` at `options.log_level` and
/// above; null when `options.log` is empty (spdlog's default logger is used).
std::shared_ptr<spdlog::logger> make_broker_logger(const broker_options& options);

/// While alive, this thread logs to `logger` (null: spdlog's default).
class log_scope {
 public:
  explicit log_scope(std::shared_ptr<spdlog::logger> logger) noexcept;
  ~log_scope();
  log_scope(const log_scope&) = delete;
  log_scope& operator=(const log_scope&) = delete;

 private:
  std::shared_ptr<spdlog::logger> previous_;
};

}  // namespace slither::detail
