#include "metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <utility>

namespace slither::detail {

namespace pm = prometheus;

namespace {

// A number from a stats map; absent or not a number reads as 0.
double number(const Value* v) {
  if (v == nullptr) return 0;
  if (v->is_int()) return static_cast<double>(v->as<std::int64_t>());
  if (v->is_float()) return v->as<double>();
  if (v->is_bool()) return v->as<bool>() ? 1 : 0;
  return 0;
}

double number(const Map& m, std::string_view key) {
  const auto it = m.find(key);
  return it == m.end() ? 0 : number(&it->second);
}

const Map* map_at(const Map& m, std::string_view key) {
  const auto it = m.find(key);
  return it != m.end() && it->second.is_map() ? &it->second.as<Map>() : nullptr;
}

const List* list_at(const Map& m, std::string_view key) {
  const auto it = m.find(key);
  return it != m.end() && it->second.is_list() ? &it->second.as<List>() : nullptr;
}

std::string text_of(const Map& m, std::string_view key) {
  const auto it = m.find(key);
  if (it == m.end()) return {};
  if (it->second.is_string()) return it->second.as<std::string>();
  if (it->second.is_int()) return std::to_string(it->second.as<std::int64_t>());
  return {};
}

// Builds sampled families in the order they are first named. Labels are
// given sorted by name, as the registry's are, so that a series prints one way.
class families {
 public:
  explicit families(std::vector<pm::MetricFamily>& out) : out_(out) {}

  void add(const std::string& name, pm::MetricType type, const std::string& help,
           std::vector<pm::ClientMetric::Label> labels, double value) {
    auto& f = family(name, type, help);
    pm::ClientMetric m;
    m.label = std::move(labels);
    if (type == pm::MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
    f.metric.push_back(std::move(m));
  }
  void gauge(const std::string& name, const std::string& help,
             std::vector<pm::ClientMetric::Label> labels, double value) {
    add(name, pm::MetricType::Gauge, help, std::move(labels), value);
  }
  void counter(const std::string& name, const std::string& help,
               std::vector<pm::ClientMetric::Label> labels, double value) {
    add(name, pm::MetricType::Counter, help, std::move(labels), value);
  }

 private:
  pm::MetricFamily& family(const std::string& name, pm::MetricType type, const std::string& help) {
    if (const auto it = index_.find(name); it != index_.end()) return out_[it->second];
    index_.emplace(name, out_.size());
    out_.push_back(pm::MetricFamily{name, help, type, {}});
    return out_.back();
  }

  std::vector<pm::MetricFamily>& out_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

void sample_pool(families& f, const std::string& pool, const Map& p) {
  const std::vector<pm::ClientMetric::Label> by_pool{{"pool", pool}};
  double credits = 0, in_flight = 0, workers = 0;
  if (const List* ws = list_at(p, "workers")) {
    for (const auto& wv : *ws) {
      if (!wv.is_map()) continue;
      const Map& w = wv.as<Map>();
      const std::vector<pm::ClientMetric::Label> by_worker{{"pool", pool},
                                                           {"worker", text_of(w, "id")}};
      ++workers;
      credits += number(w, "credits");
      in_flight += number(w, "in_flight");
      f.gauge("slither_worker_credits", "Credits (batches it may still be sent) a worker holds",
              by_worker, number(w, "credits"));
      f.gauge("slither_worker_in_flight_batches", "Batches sent to a worker and not answered",
              by_worker, number(w, "in_flight"));
      f.gauge("slither_worker_rss_bytes", "A worker's resident memory, as last reported", by_worker,
              number(w, "rss_bytes"));
    }
  }
  f.gauge("slither_pool_workers", "Workers joined to a pool", by_pool, workers);
  f.gauge("slither_pool_credits", "Credits held by a pool's workers, together", by_pool, credits);
  f.gauge("slither_pool_in_flight_batches", "Batches at a pool's workers, not yet answered",
          by_pool, in_flight);
  f.gauge("slither_pool_queued_batches", "Batches of a pool's jobs waiting for a worker's credit",
          by_pool, number(p, "queued_batches"));
  if (const List* js = list_at(p, "jobs")) {
    for (const auto& jv : *js) {
      if (!jv.is_map()) continue;
      const Map& j = jv.as<Map>();
      const std::vector<pm::ClientMetric::Label> by_job{{"job", text_of(j, "id")}, {"pool", pool}};
      f.gauge("slither_job_queued_batches", "Batches of a dispatch job waiting for a credit",
              by_job, number(j, "queued_batches"));
      f.gauge("slither_job_in_flight_batches", "Batches of a dispatch job at workers", by_job,
              number(j, "in_flight"));
      f.gauge("slither_job_ready_items", "Results of a dispatch job waiting for its client", by_job,
              number(j, "ready_items"));
    }
  }
  auto outcome = [&](const char* what) {
    return std::vector<pm::ClientMetric::Label>{{"outcome", what}, {"pool", pool}};
  };
  f.counter("slither_pool_batches_total", "Batches a pool's workers answered, by outcome",
            outcome("ok"), number(p, "batches_ok"));
  f.counter("slither_pool_batches_total", "Batches a pool's workers answered, by outcome",
            outcome("failed"), number(p, "batches_failed"));
  f.counter("slither_pool_batches_sent_total", "Batches sent to a pool's workers", by_pool,
            number(p, "batches_sent"));
  f.counter("slither_pool_retries_total", "Batches sent again after a failure", by_pool,
            number(p, "retries"));
  f.counter("slither_pool_timeouts_total", "Batches that overran their timeout", by_pool,
            number(p, "timeouts"));
  f.counter("slither_pool_worker_deaths_total", "Workers that left a pool unexpectedly", by_pool,
            number(p, "worker_deaths"));
  f.counter("slither_pool_worker_restarts_total", "Workers that joined as replacements", by_pool,
            number(p, "restarts"));
  f.counter("slither_pool_workers_recycled_total",
            "Workers replaced after max_batches or max_rss_mib", by_pool, number(p, "recycled"));
  f.counter("slither_pool_workers_spawned_total", "Worker processes the broker started", by_pool,
            number(p, "spawned"));
  f.gauge("slither_pool_circuit_open", "1 while a pool's circuit breaker holds dispatch", by_pool,
          number(p, "circuit_open"));
}

const char* type_name(pm::MetricType t) {
  switch (t) {
    case pm::MetricType::Counter:
      return "counter";
    case pm::MetricType::Gauge:
      return "gauge";
    case pm::MetricType::Histogram:
      return "histogram";
    case pm::MetricType::Summary:
      return "summary";
    case pm::MetricType::Untyped:
      break;
  }
  return "untyped";
}

}  // namespace

// ---- event-fed metrics ---------------------------------------------------------

// Shared with the telemetry handlers, which may run after the broker is gone.
struct broker_metrics::core {
  core()
      : requests(pm::BuildCounter()
                     .Name("slither_requests_total")
                     .Help("Requests received on the control socket, by type")
                     .Register(*registry)),
        errors(pm::BuildCounter()
                   .Name("slither_request_errors_total")
                   .Help("Error replies sent, by error code")
                   .Register(*registry)),
        batch_latency(pm::BuildHistogram()
                          .Name("slither_dispatch_batch_duration_seconds")
                          .Help("Time from sending a dispatch batch to its answer")
                          .Register(*registry)
                          .Add({}, batch_latency_buckets)),
        stage_items(pm::BuildCounter()
                        .Name("slither_pipe_stage_items_total")
                        .Help("Items through a pipe stage (slither.pipe.stage.stop events)")
                        .Register(*registry)),
        stage_errors(pm::BuildCounter()
                         .Name("slither_pipe_stage_errors_total")
                         .Help("Failures of a pipe stage (slither.pipe.stage.exception events)")
                         .Register(*registry)) {}

  void on_batch(const Map& measurements) {
    const auto it = measurements.find("duration_us");
    if (it == measurements.end()) return;
    const double us = number(&it->second);
    if (us >= 0 && std::isfinite(us)) batch_latency.Observe(us / 1e6);
  }

  void on_stage(const Map& measurements, const Map& meta, bool failed) {
    std::pair<std::string, std::string> key{text_of(meta, "pipe"), text_of(meta, "stage")};
    // The Pipe engine's stop events carry the chunk's or batch's `size`.
    double items = 1;
    auto it = measurements.find("items");
    if (it == measurements.end()) it = measurements.find("size");
    if (!failed && it != measurements.end()) {
      items = number(&it->second);
      if (!(items >= 0) || !std::isfinite(items)) return;
    }
    pm::Counter* counter = nullptr;
    {
      std::lock_guard lock(mu);
      auto it = stages.find(key);
      if (it == stages.end()) {
        if (stages.size() >= max_stage_series) key = {"_other", "_other"};
        it = stages.find(key);
        if (it == stages.end()) {
          const pm::Labels labels{{"pipe", key.first}, {"stage", key.second}};
          it = stages.emplace(key, std::pair(&stage_items.Add(labels), &stage_errors.Add(labels)))
                   .first;
        }
      }
      counter = failed ? it->second.second : it->second.first;
    }
    counter->Increment(items);
  }

  std::shared_ptr<pm::Registry> registry = std::make_shared<pm::Registry>();
  pm::Family<pm::Counter>& requests;
  pm::Family<pm::Counter>& errors;
  pm::Histogram& batch_latency;
  pm::Family<pm::Counter>& stage_items;
  pm::Family<pm::Counter>& stage_errors;
  std::array<pm::Counter*, static_cast<std::size_t>(errc::shutting_down) + 1> by_code{};
  std::mutex mu;
  std::map<std::pair<std::string, std::string>, std::pair<pm::Counter*, pm::Counter*>> stages;
};

broker_metrics::broker_metrics() : core_(std::make_shared<core>()) {
  // Every code from the start, so that a scrape shows zeros rather than gaps.
  for (std::size_t i = 1; i < core_->by_code.size(); ++i) {
    core_->by_code[i] =
        &core_->errors.Add({{"code", std::string(to_string(static_cast<errc>(i)))}});
  }
}

broker_metrics::~broker_metrics() {
  detach_telemetry();
}

void broker_metrics::count_request(protocol::message_type type) {
  auto& c = requests_[static_cast<std::uint8_t>(type)];
  if (c == nullptr) c = &core_->requests.Add({{"type", std::string(protocol::to_string(type))}});
  c->Increment();
}

void broker_metrics::count_invalid_request() {
  if (invalid_requests_ == nullptr) invalid_requests_ = &core_->requests.Add({{"type", "invalid"}});
  invalid_requests_->Increment();
}

void broker_metrics::count_error(errc code) noexcept {
  const auto i = static_cast<std::size_t>(code);
  if (i < core_->by_code.size() && core_->by_code[i] != nullptr) core_->by_code[i]->Increment();
}

void broker_metrics::attach_telemetry() {
  if (!attachments_.empty()) return;
  // The handlers own the core: an emitter may still be calling one after detach.
  attachments_.push_back(
      telemetry::attach("slither.dispatch.batch.",
                        [c = core_](std::string_view event, const Map& measurements, const Map&) {
                          if (event.ends_with(".stop") || event.ends_with(".exception"))
                            c->on_batch(measurements);
                        }));
  attachments_.push_back(telemetry::attach(
      "slither.pipe.stage.",
      [c = core_](std::string_view event, const Map& measurements, const Map& meta) {
        if (event == "slither.pipe.stage.stop") c->on_stage(measurements, meta, false);
        if (event == "slither.pipe.stage.exception") c->on_stage(measurements, meta, true);
      }));
}

void broker_metrics::detach_telemetry() noexcept {
  attachments_.clear();
}

std::vector<pm::MetricFamily> broker_metrics::collect(const Map& stats) const {
  auto out = core_->registry->Collect();
  for (auto& f : sampled_families(stats)) out.push_back(std::move(f));
  return out;
}

// ---- sampled metrics -------------------------------------------------------------

std::vector<pm::MetricFamily> sampled_families(const Map& stats) {
  std::vector<pm::MetricFamily> out;
  families f(out);
  f.gauge("slither_uptime_seconds", "Time since the broker started", {},
          number(stats, "uptime_ms") / 1e3);
  f.gauge("slither_clients_connected", "Client connections admitted and open", {},
          number(stats, "clients"));
  f.gauge("slither_connections", "Connections open, admitted or still in their handshake", {},
          number(stats, "connections"));
  f.gauge("slither_max_clients", "Connections admitted at most (max_clients, as fitted)", {},
          number(stats, "max_clients"));
  f.counter("slither_connections_refused_total", "Connections refused at the handshake", {},
            number(stats, "refused_connections"));
  f.counter("slither_busy_replies_total", "Writes refused because the write queue was full", {},
            number(stats, "busy"));
  f.gauge("slither_write_queue_depth", "Store writes waiting for the writer thread", {},
          number(stats, "write_queue_depth"));
  f.gauge("slither_write_queue_bytes", "Request bytes held by waiting store writes", {},
          number(stats, "write_queue_bytes"));
  f.gauge("slither_write_queue_limit", "Store writes that may wait at once", {},
          number(stats, "write_queue_limit"));
  f.gauge("slither_views_in_flight", "View calls running or waiting for their turn", {},
          number(stats, "views_in_flight"));
  if (const Map* stores = map_at(stats, "stores")) {
    for (const auto& [name, sv] : *stores) {
      if (!sv.is_map()) continue;
      const Map& st = sv.as<Map>();
      const std::vector<pm::ClientMetric::Label> by_store{{"store", name}};
      f.gauge("slither_store_entries", "Entries in a store's tables", by_store,
              number(st, "entries"));
      f.gauge("slither_store_bytes", "Bytes a store's live blocks take", by_store,
              number(st, "bytes_used"));
      f.gauge("slither_store_garbage_bytes",
              "Bytes of replaced or deleted blocks not yet reclaimed (readers may hold them)",
              by_store, number(st, "bytes_retired"));
      f.gauge("slither_store_free_bytes", "Free bytes in a store's segments, reusable by any size",
              by_store, number(st, "bytes_free"));
      f.gauge("slither_store_pinned_bytes",
              "Garbage bytes the last reclaim could not free because a reader held them", by_store,
              number(st, "bytes_pinned"));
      f.gauge("slither_store_resident_bytes",
              "Bytes of a store's segments backed by memory (its /dev/shm use)", by_store,
              number(st, "bytes_resident"));
      f.gauge("slither_store_segment_bytes", "Bytes of a store's shared-memory segments", by_store,
              number(st, "segment_bytes"));
      f.gauge("slither_store_segments", "A store's shared-memory segments", by_store,
              number(st, "segments"));
      f.gauge("slither_store_readers", "Readers attached to a store", by_store,
              number(st, "readers"));
    }
  }
  if (const Map* dispatch = map_at(stats, "dispatch")) {
    f.gauge("slither_dispatch_jobs", "Dispatch jobs open", {}, number(*dispatch, "jobs"));
    if (const Map* pools = map_at(*dispatch, "pools")) {
      for (const auto& [name, pv] : *pools) {
        if (pv.is_map()) sample_pool(f, name, pv.as<Map>());
      }
    }
  }
  return out;
}

// ---- as a Value, and back ------------------------------------------------------------

Value metrics_value(const std::vector<pm::MetricFamily>& fams) {
  Map out;
  for (const auto& fam : fams) {
    List samples;
    for (const auto& m : fam.metric) {
      Map labels;
      for (const auto& l : m.label) labels.emplace(l.name, l.value);
      Map s{{"labels", std::move(labels)}};
      switch (fam.type) {
        case pm::MetricType::Counter:
          s.emplace("value", m.counter.value);
          break;
        case pm::MetricType::Gauge:
          s.emplace("value", m.gauge.value);
          break;
        case pm::MetricType::Untyped:
          s.emplace("value", m.untyped.value);
          break;
        case pm::MetricType::Histogram: {
          s.emplace("count", static_cast<std::int64_t>(m.histogram.sample_count));
          s.emplace("sum", m.histogram.sample_sum);
          List buckets;
          for (const auto& b : m.histogram.bucket) {
            if (std::isinf(b.upper_bound)) continue;
            buckets.push_back(
                Value::list({b.upper_bound, static_cast<std::int64_t>(b.cumulative_count)}));
          }
          s.emplace("buckets", std::move(buckets));
          break;
        }
        case pm::MetricType::Summary: {
          s.emplace("count", static_cast<std::int64_t>(m.summary.sample_count));
          s.emplace("sum", m.summary.sample_sum);
          break;
        }
      }
      samples.push_back(Value(std::move(s)));
    }
    out.insert_or_assign(fam.name, Value(Map{{"type", type_name(fam.type)},
                                             {"help", fam.help},
                                             {"samples", std::move(samples)}}));
  }
  return Value(std::move(out));
}

namespace {

// Prometheus names: [a-zA-Z_:][a-zA-Z0-9_:]* for metrics, no ':' in labels.
bool valid_name(std::string_view s, bool label) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (!label && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

}  // namespace

result<std::vector<pm::MetricFamily>> metric_families(const Value& metrics) {
  if (!metrics.is_map()) {
    return fail(errc::invalid_argument,
                "metrics must be a map, not " + std::string(to_string(metrics.type())));
  }
  std::vector<pm::MetricFamily> out;
  for (const auto& [name, fv] : metrics.as<Map>()) {
    const std::string shown = name.substr(0, 64);
    auto bad = [&](const std::string& what) {
      return fail(errc::invalid_argument, "metric '" + shown + "': " + what);
    };
    if (!valid_name(name, false)) return bad("not a valid metric name");
    if (!fv.is_map()) return bad("must be a map");
    const Map& f = fv.as<Map>();
    pm::MetricFamily fam;
    fam.name = name;
    fam.help = text_of(f, "help");
    // The exposition format has no escape for a line break in help text here.
    for (char& c : fam.help) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    const std::string type = text_of(f, "type");
    if (type == "counter") {
      fam.type = pm::MetricType::Counter;
    } else if (type == "gauge") {
      fam.type = pm::MetricType::Gauge;
    } else if (type == "histogram") {
      fam.type = pm::MetricType::Histogram;
    } else if (type == "untyped") {
      fam.type = pm::MetricType::Untyped;
    } else {
      return bad("unknown type '" + type.substr(0, 32) + "'");
    }
    const List* samples = list_at(f, "samples");
    if (samples == nullptr) return bad("has no list of samples");
    for (const auto& sv : *samples) {
      if (!sv.is_map()) return bad("a sample is not a map");
      const Map& s = sv.as<Map>();
      pm::ClientMetric m;
      if (const Map* labels = map_at(s, "labels")) {
        for (const auto& [k, v] : *labels) {
          if (!valid_name(k, true) || !v.is_string()) {
            return bad("label '" + k.substr(0, 64) + "' is not a valid name with a string value");
          }
          m.label.push_back({k, v.as<std::string>()});
        }
      }
      if (fam.type == pm::MetricType::Histogram) {
        m.histogram.sample_count = static_cast<std::uint64_t>(std::max(0.0, number(s, "count")));
        m.histogram.sample_sum = number(s, "sum");
        if (const List* buckets = list_at(s, "buckets")) {
          for (const auto& b : *buckets) {
            if (!b.is_list() || b.size() != 2) return bad("a bucket is not [upper_bound, count]");
            const double upper = number(&b[std::size_t{0}]);
            const double count = number(&b[std::size_t{1}]);
            m.histogram.bucket.push_back({static_cast<std::uint64_t>(std::max(0.0, count)), upper});
          }
        }
        m.histogram.bucket.push_back(
            {m.histogram.sample_count, std::numeric_limits<double>::infinity()});
      } else {
        const double v = number(s, "value");
        m.counter.value = m.gauge.value = m.untyped.value = v;
      }
      fam.metric.push_back(std::move(m));
    }
    out.push_back(std::move(fam));
  }
  return out;
}

std::string exposition_text(const std::vector<pm::MetricFamily>& fams) {
  return pm::TextSerializer().Serialize(fams);
}

}  // namespace slither::detail
