#include "slither/core/telemetry.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

namespace slither::telemetry {
namespace {

struct entry {
  std::uint64_t id;
  std::string prefix;
  handler fn;
};

// Handlers are copied out (a snapshot) under the lock and called outside it,
// so a handler may itself attach or detach without deadlocking.
struct registry {
  std::mutex mu;
  std::shared_ptr<const std::vector<entry>> entries = std::make_shared<std::vector<entry>>();
  std::uint64_t next_id = 1;
  std::atomic<std::size_t> count{0};
};

registry& reg() {
  static registry r;
  return r;
}

}  // namespace

attachment& attachment::operator=(attachment&& other) noexcept {
  if (this != &other) {
    detach();
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

void attachment::detach() noexcept {
  if (id_ == 0) return;
  auto& r = reg();
  std::lock_guard lock(r.mu);
  auto next = std::make_shared<std::vector<entry>>();
  for (const auto& e : *r.entries) {
    if (e.id != id_) next->push_back(e);
  }
  r.entries = std::move(next);
  r.count.store(r.entries->size(), std::memory_order_relaxed);
  id_ = 0;
}

attachment attach(std::string prefix, handler fn) {
  auto& r = reg();
  std::lock_guard lock(r.mu);
  auto next = std::make_shared<std::vector<entry>>(*r.entries);
  const auto id = r.next_id++;
  next->push_back({id, std::move(prefix), std::move(fn)});
  r.entries = std::move(next);
  r.count.store(r.entries->size(), std::memory_order_relaxed);
  return attachment(id);
}

bool enabled() noexcept {
  return reg().count.load(std::memory_order_relaxed) != 0;
}

void emit(std::string_view event, const Map& measurements, const Map& metadata) {
  if (!enabled()) return;
  std::shared_ptr<const std::vector<entry>> snapshot;
  {
    auto& r = reg();
    std::lock_guard lock(r.mu);
    snapshot = r.entries;
  }
  for (const auto& e : *snapshot) {
    if (!event.starts_with(e.prefix)) continue;
    try {
      e.fn(event, measurements, metadata);
    } catch (...) {  // NOLINT(bugprone-empty-catch): telemetry must never break the emitter
    }
  }
}

}  // namespace slither::telemetry
