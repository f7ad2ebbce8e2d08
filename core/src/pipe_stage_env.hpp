// What the threads of a pipe run share: a stage's constants (context,
// telemetry metadata), what a thread holds between flushes, and how a
// settled error policy applies to a failed item.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "pipe_run_state.hpp"
#include "slither/core/telemetry.hpp"

namespace slither::detail {

using stage_clock = dispatch_clock;

inline dispatch_error make_error(failure_kind kind, std::string type, std::string message) {
  dispatch_error e;
  e.kind = kind;
  e.type = std::move(type);
  e.message = std::move(message);
  return e;
}

inline std::int64_t micros_since(stage_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(stage_clock::now() - t).count();
}

inline std::string_view kind_name(stage_kind k) {
  switch (k) {
    case stage_kind::python:
      return "python";
    case stage_kind::router:
      return "router";
    default:
      return "native";
  }
}

// What a stage thread carries between chunks: items for the next stage,
// outputs, and its share of the books, merged under the lock when it flushes.
struct stage_io {
  std::vector<Item> forward;
  std::vector<out_entry> outputs;
  std::vector<pipe_failure> failures;
  std::vector<std::uint64_t> skipped;
  std::vector<std::uint64_t> unfinished;
};

// The policy's fallback once retries are spent (or the policy itself).
inline const error_policy& settle(const error_policy& p, error_policy& storage) {
  if (const auto* r = std::get_if<retry_policy>(&p)) {
    std::visit([&](const auto& f) { storage = f; }, r->then);
    return storage;
  }
  return p;
}

inline Map error_meta(const std::string& stage, const dispatch_error& e) {
  Map m;
  m.emplace("stage", stage);
  m.emplace("kind", std::string(to_string(e.kind)));
  m.emplace("type", e.type);
  m.emplace("message", e.message);
  return m;
}

// The per-stage constants a thread needs: context, telemetry metadata.
struct stage_env {
  pipe_run_state& s;
  std::size_t index;
  const compiled_stage& st;
  bool last;
  Context ctx;
  Map meta;  // telemetry metadata

  stage_env(pipe_run_state& state, std::size_t i)
      : s(state), index(i), st(state.pipe.stages[i]), last(i + 1 == state.pipe.stages.size()) {
    ctx.pipe = s.pipe.name;
    ctx.stage = st.def.name;
    ctx.session_id = s.opts.session_id;
    ctx.metadata = s.metadata;
    meta.emplace("pipe", s.pipe.name);
    meta.emplace("session", s.opts.session_id);
    meta.emplace("run", static_cast<std::int64_t>(s.id));
    meta.emplace("stage", st.def.name);
    meta.emplace("kind", std::string(kind_name(st.def.kind)));
  }

  void go_on(stage_io& io, Item&& item) const {
    if (last) {
      io.outputs.push_back(out_entry{0, std::move(item)});
    } else {
      io.forward.push_back(std::move(item));
    }
  }

  void emit_exception(std::uint64_t item, const dispatch_error& e, std::string_view policy,
                      std::uint32_t attempt) const {
    if (!telemetry::enabled()) return;
    Map m = meta;
    m.emplace("item", static_cast<std::int64_t>(item));
    m.emplace("failure", std::string(to_string(e.kind)));
    m.emplace("type", e.type);
    m.emplace("message", e.message);
    m.emplace("policy", std::string(policy));
    telemetry::emit("slither.pipe.stage.exception",
                    Map{{"attempt", static_cast<std::int64_t>(attempt)}}, m);
  }

  // Applies a settled (non-retry) policy to a failed item.
  void failed(stage_io& io, Item&& item, dispatch_error e, const error_policy& policy,
              std::uint32_t attempt) const {
    emit_exception(item.id, e, policy_name(policy), attempt);
    pipe_failure f{st.def.name, item.id, std::move(e)};
    if (std::holds_alternative<route_policy>(policy)) {
      item.meta.insert_or_assign("error", error_meta(f.stage, f.cause));
      item.route = s.pipe.outputs[st.error_output];
      io.outputs.push_back({st.error_output, std::move(item)});
    } else if (std::holds_alternative<skip_policy>(policy)) {
      io.failures.push_back(std::move(f));
    } else {
      std::unique_lock lock(s.mu);
      if (s.stopping) {
        // Another stage halted first: this one ends as unfinished.
        s.unfinished.push_back(f.item);
      } else {
        s.stop(std::move(f));
      }
    }
  }
};

/// Hands what a thread holds to the next queue and the sink, and merges its books.
void flush(pipe_run_state& s, std::unique_lock<std::mutex>& lock, std::size_t i, stage_io& io);

/// `count` native stages and routers from `first` on (maybe none), on one
/// thread, each chunk going through them in turn: what one passes on is
/// the next one's chunk, and what the last passes on waits in `passed()`.
class stage_chain {
 public:
  stage_chain(pipe_run_state& s, std::size_t first, std::size_t count);

  bool empty() const noexcept { return ios_.empty(); }
  /// Runs `chunk` through the stages. True if an item ended unfinished (the
  /// run stopped during a retry's backoff).
  bool run(std::vector<Item>&& chunk);
  /// What the last stage passed on.
  std::vector<Item>& passed() noexcept { return ios_.back().forward; }
  /// True if the last stage passed on, or any stage output, `at_least` items.
  bool holding(std::size_t at_least) const noexcept;
  /// Flushes every stage's outputs and books, and what the last passed on.
  void flush(std::unique_lock<std::mutex>& lock);

 private:
  pipe_run_state& s_;
  std::size_t first_;
  std::vector<stage_env> envs_;
  std::vector<Context> contexts_;
  std::vector<stage_io> ios_;
};

}  // namespace slither::detail
