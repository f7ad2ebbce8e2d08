// Where metrics join the broker: the `stats` reply's "metrics" map, the
// metrics endpoint's figures gathered through the serving and writer
// threads, and the endpoint's place in start and stop.

#include "broker_impl.hpp"
#include "guarded.hpp"

namespace slither {

result<Value> Broker::impl::full_stats(Value dispatch) {
  auto r = stats();
  if (!r) return r;
  Map& out = r->as_mut<Map>();
  out.emplace("dispatch", std::move(dispatch));
  out.emplace("metrics", detail::metrics_value(metrics.collect(out)));
  out.emplace("metrics_endpoint", metrics_address);
  return r;
}

void Broker::impl::collect_stats(std::function<void(result<Value>)> done) {
  if (s->stopping) return done(fail(errc::shutting_down, "the broker is stopping"));
  // The pools live on this thread; the stores' figures are read on the writer's.
  auto job = [this, dispatch = s->dispatch ? s->dispatch->stats() : Value(Map{})]() mutable {
    return detail::guarded([&] { return full_stats(std::move(dispatch)); });
  };
  if (s->queue.try_run_inline([&] { done(job()); })) return;
  detail::write_job j;
  j.run = [job, done]() mutable { done(job()); };
  j.cancel = [done] { done(fail(errc::shutting_down, "the broker stopped before answering")); };
  switch (s->queue.try_push(std::move(j))) {
    case detail::push_result::queued:
      return;
    case detail::push_result::closed:
      return done(fail(errc::shutting_down, "the broker is stopping"));
    default:
      return done(fail(errc::busy, "the write queue is full; retry later"));
  }
}

result<void> Broker::impl::open_metrics() {
  metrics_address.clear();
  if (options.metrics_endpoint.empty()) return {};
  auto where = detail::parse_metrics_endpoint(options.metrics_endpoint, options.allow_remote);
  if (!where) return std::move(where).error();
  auto server = detail::metrics_http::bind(*where);
  if (!server) return std::move(server).error();
  s->metrics_http = std::move(*server);
  metrics_address = s->metrics_http->endpoint();
  return {};
}

void Broker::impl::serve_metrics() {
  if (!s->metrics_http) return;
  // Only with an endpoint: a handler makes telemetry::enabled() true for the
  // whole process, so that every store write and view builds and emits its
  // events, a cost (and, with large keys, a slowdown) not paid by default.
  metrics.attach_telemetry();
  s->metrics_http->serve([this, link = s->link](detail::metrics_http::reply_fn done) {
    // From the endpoint's thread to the serving thread, which starts the
    // collection; the answer goes back from whichever thread finishes it.
    const bool posted = link->post([this, done] {
      collect_stats([done](result<Value> r) {
        if (!r) return done(std::move(r).error());
        const Value* m = r->find("metrics");
        if (m == nullptr) return done(fail(errc::internal, "stats without metrics"));
        auto families = detail::metric_families(*m);
        if (!families) return done(std::move(families).error());
        done(detail::exposition_text(*families));
      });
    });
    if (!posted) done(fail(errc::shutting_down, "the broker is stopping"));
  });
  detail::broker_log().info("metrics at http://{}/metrics", metrics_address);
}

void Broker::impl::close_metrics() noexcept {
  // metrics_address stays: a stats job on the writer may still read it.
  if (s->metrics_http) s->metrics_http->stop();
  metrics.detach_telemetry();
}

}  // namespace slither
