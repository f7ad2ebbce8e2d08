// The Pipe builder, its validation, and the step forms.
#include "slither/core/pipe.hpp"

#include <set>

#include "pipe_def.hpp"

namespace slither {

// --- step ---

step step::skip() noexcept {
  step s;
  s.kind_ = kind::skip;
  return s;
}

step step::route(std::string output) {
  step s;
  s.kind_ = kind::route;
  s.message_ = std::move(output);
  return s;
}

step step::many(std::vector<Value> payloads) {
  step s;
  s.kind_ = kind::many;
  s.many_ = std::move(payloads);
  return s;
}

step step::fail(std::string message) {
  return step(error_info{errc::invalid_argument, std::move(message)});
}

stage_exception::stage_exception(std::string type, const std::string& message)
    : std::runtime_error(message), type_(std::move(type)) {}

std::string pipe_failure::describe() const {
  return "stage '" + stage + "', item " + std::to_string(item) + ": " + cause.describe();
}

// --- Pipe ---

Pipe::Pipe(std::string name) : def_(std::make_shared<detail::pipe_def>()) {
  def_->name = std::move(name);
}
Pipe::Pipe(const Pipe& other) : def_(std::make_shared<detail::pipe_def>(*other.def_)) {}
Pipe& Pipe::operator=(const Pipe& other) {
  if (this != &other) def_ = std::make_shared<detail::pipe_def>(*other.def_);
  return *this;
}
Pipe::Pipe(Pipe&&) noexcept = default;
Pipe& Pipe::operator=(Pipe&&) noexcept = default;
Pipe::~Pipe() = default;

Pipe& Pipe::native(std::string name, item_fn fn, native_options options) & {
  detail::stage_def s;
  s.name = std::move(name);
  s.kind = detail::stage_kind::native;
  s.item = std::move(fn);
  s.native = options;
  def_->stages.push_back(std::move(s));
  return *this;
}
Pipe&& Pipe::native(std::string name, item_fn fn, native_options options) && {
  return std::move(native(std::move(name), std::move(fn), options));
}

Pipe& Pipe::native_batch(std::string name, batch_fn fn, native_options options) & {
  detail::stage_def s;
  s.name = std::move(name);
  s.kind = detail::stage_kind::native_batch;
  s.batch = std::move(fn);
  s.native = options;
  def_->stages.push_back(std::move(s));
  return *this;
}
Pipe&& Pipe::native_batch(std::string name, batch_fn fn, native_options options) && {
  return std::move(native_batch(std::move(name), std::move(fn), options));
}

Pipe& Pipe::python(std::string name, python_options options) & {
  detail::stage_def s;
  s.name = std::move(name);
  s.kind = detail::stage_kind::python;
  s.python = std::move(options);
  def_->stages.push_back(std::move(s));
  return *this;
}
Pipe&& Pipe::python(std::string name, python_options options) && {
  return std::move(python(std::move(name), std::move(options)));
}

Pipe& Pipe::router(std::string name, std::vector<route> routes) & {
  detail::stage_def s;
  s.name = std::move(name);
  s.kind = detail::stage_kind::router;
  s.routes = std::move(routes);
  def_->stages.push_back(std::move(s));
  return *this;
}
Pipe&& Pipe::router(std::string name, std::vector<route> routes) && {
  return std::move(router(std::move(name), std::move(routes)));
}

Pipe& Pipe::router_batch(std::string name, std::vector<std::string> outputs, batch_fn fn) & {
  detail::stage_def s;
  s.name = std::move(name);
  s.kind = detail::stage_kind::router;
  s.batch = std::move(fn);
  for (auto& o : outputs) s.routes.push_back({nullptr, std::move(o)});
  def_->stages.push_back(std::move(s));
  return *this;
}
Pipe&& Pipe::router_batch(std::string name, std::vector<std::string> outputs, batch_fn fn) && {
  return std::move(router_batch(std::move(name), std::move(outputs), std::move(fn)));
}

Pipe& Pipe::output(std::string name) & {
  def_->outputs.push_back(std::move(name));
  return *this;
}
Pipe&& Pipe::output(std::string name) && {
  return std::move(output(std::move(name)));
}

Pipe& Pipe::on_error(std::string stage, error_policy policy) & {
  def_->policies.emplace_back(std::move(stage), std::move(policy));
  return *this;
}
Pipe&& Pipe::on_error(std::string stage, error_policy policy) && {
  return std::move(on_error(std::move(stage), std::move(policy)));
}

Pipe& Pipe::store(std::string name) & {
  def_->stores.push_back(std::move(name));
  return *this;
}
Pipe&& Pipe::store(std::string name) && {
  return std::move(store(std::move(name)));
}

const std::string& Pipe::name() const noexcept {
  return def_->name;
}

std::vector<std::string> Pipe::stages() const {
  std::vector<std::string> out;
  for (const auto& s : def_->stages) out.push_back(s.name);
  return out;
}

std::vector<std::string> Pipe::outputs() const {
  std::vector<std::string> out{"default"};
  for (const auto& o : def_->outputs) out.push_back(o);
  return out;
}

std::vector<std::string> Pipe::stores() const {
  return def_->stores;
}

std::vector<std::pair<std::string, python_options>> Pipe::python_stages() const {
  std::vector<std::pair<std::string, python_options>> out;
  for (const auto& s : def_->stages) {
    if (s.kind == detail::stage_kind::python) out.emplace_back(s.name, s.python);
  }
  return out;
}

result<void> Pipe::validate() const {
  SLITHER_TRY(detail::compile(*def_));
  return {};
}

namespace detail {

batch_strategy python_batching(const python_options& options) {
  if (options.key_fn) return key_partition{options.key_fn, options.batch_size};
  if (options.weight_fn) {
    return weighted_batch{options.max_weight, options.weight_fn, options.batch_size};
  }
  return fixed_batch{options.batch_size};
}

std::string_view policy_name(const error_policy& policy) noexcept {
  static constexpr std::string_view names[] = {"halt", "skip", "route", "retry"};
  return names[policy.index()];
}

namespace {

// The output a policy routes failed items to, if any.
const std::string* routed_output(const error_policy& policy) {
  if (const auto* r = std::get_if<route_policy>(&policy)) return &r->output;
  if (const auto* t = std::get_if<retry_policy>(&policy)) {
    if (const auto* r = std::get_if<route_policy>(&t->then)) return &r->output;
  }
  return nullptr;
}

}  // namespace

result<compiled_pipe> compile(const pipe_def& def) {
  const std::string where = "pipe '" + def.name + "': ";
  auto bad = [&](std::string what) { return fail(errc::invalid_argument, where + what); };
  if (def.name.empty()) return fail(errc::invalid_argument, "a pipe needs a name");
  if (def.stages.empty()) return bad("it has no stages");

  compiled_pipe out;
  out.name = def.name;
  out.stores = def.stores;
  out.outputs.emplace_back("default");
  for (const auto& o : def.outputs) {
    if (o.empty()) return bad("an output needs a name");
    if (out.output_index(o) >= 0) {
      if (o == "default") continue;  // always there; declaring it is harmless
      return bad("output '" + o + "' is declared twice");
    }
    out.outputs.push_back(o);
  }
  std::set<std::string> stores;
  for (const auto& s : def.stores) {
    if (s.empty()) return bad("a store needs a name");
    if (!stores.insert(s).second) return bad("store '" + s + "' is attached twice");
  }

  auto index_of = [&](const std::string& output, const std::string& what) -> result<std::uint32_t> {
    const auto i = out.output_index(output);
    if (i < 0) return bad(what + " to undeclared output '" + output + "'");
    return static_cast<std::uint32_t>(i);
  };

  std::set<std::string> names;
  for (const auto& s : def.stages) {
    if (s.name.empty()) return bad("a stage needs a name");
    if (s.name == "*") return bad("'*' is not a stage name: it means every stage in on_error");
    if (!names.insert(s.name).second) return bad("stage name '" + s.name + "' is used twice");
    compiled_stage c;
    c.def = s;
    const std::string stage = "stage '" + s.name + "'";
    switch (s.kind) {
      case stage_kind::native:
      case stage_kind::native_batch:
        if (s.kind == stage_kind::native ? !s.item : !s.batch) {
          return bad("native " + stage + " has no function");
        }
        if (s.native.concurrency == 0) return bad(stage + ": concurrency must be at least 1");
        if (s.native.batch_size == 0) return bad(stage + ": batch_size must be at least 1");
        break;
      case stage_kind::python:
        if (s.python.module.empty() || s.python.function.empty()) {
          return bad("python " + stage + " needs both a module and a function (got '" +
                     s.python.module + ":" + s.python.function + "')");
        }
        if (s.python.batch_size == 0) return bad(stage + ": batch_size must be at least 1");
        if (s.python.max_in_flight == 0) return bad(stage + ": max_in_flight must be at least 1");
        if (s.python.weight_fn && s.python.key_fn) {
          return bad(stage + ": give a weight_fn or a key_fn, not both");
        }
        if (s.python.max_weight != 0 && !s.python.weight_fn) {
          return bad(stage + ": max_weight needs a weight_fn");
        }
        if (auto v = validate(python_batching(s.python)); !v) {
          return bad(stage + ": " + v.error().message);
        }
        break;
      case stage_kind::router:
        if (s.routes.empty()) return bad("router '" + s.name + "' has no routes");
        for (const auto& r : s.routes) {
          if (!r.when && !s.batch) {
            return bad("router '" + s.name + "' has a route without a predicate");
          }
          auto i = index_of(r.output, "router '" + s.name + "' routes");
          if (!i) return std::move(i).error();
          c.route_outputs.push_back(*i);
        }
        break;
    }
    out.stages.push_back(std::move(c));
  }

  std::optional<error_policy> fallback;
  std::set<std::string> seen;
  for (const auto& [stage, policy] : def.policies) {
    if (!seen.insert(stage).second) return bad("on_error for '" + stage + "' is given twice");
    if (stage != "*" && names.count(stage) == 0) {
      return bad("on_error for unknown stage '" + stage + "'");
    }
    if (const auto* r = std::get_if<retry_policy>(&policy); r && r->max_attempts == 0) {
      return bad("on_error for '" + stage + "': retry needs max_attempts of at least 1");
    }
    if (const auto* o = routed_output(policy)) {
      auto i = index_of(*o, "on_error for '" + stage + "' routes");
      if (!i) return std::move(i).error();
    }
    if (stage == "*") fallback = policy;
  }
  for (auto& c : out.stages) {
    c.policy = fallback ? *fallback : error_policy(halt_policy{});
    for (const auto& [stage, policy] : def.policies) {
      if (stage == c.def.name) c.policy = policy;
    }
    if (const auto* o = routed_output(c.policy)) {
      c.error_output = static_cast<std::uint32_t>(out.output_index(*o));
    }
  }
  return out;
}

}  // namespace detail
}  // namespace slither
