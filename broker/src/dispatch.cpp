// Dispatch over items from C++: batching on the caller's thread, batches
// encoded as the codec's batch frames and submitted through a dispatch_job,
// results decoded and put back on their items. See slither/broker/dispatch.hpp.
#include "slither/broker/dispatch.hpp"

#include <deque>
#include <map>

#include "batch_answer.hpp"
#include "broker_impl.hpp"
#include "dispatch_job_maker.hpp"

namespace slither {

namespace detail {

struct broker_access {
  // The running broker's ZeroMQ context, or null.
  static std::shared_ptr<zmq::context_t> context(Broker& broker) {
    std::lock_guard lock(broker.p_->life_mutex);
    if (broker.p_->state != Broker::impl::phase::running || !broker.p_->s) return nullptr;
    return broker.p_->s->zmq_context;
  }
};

}  // namespace detail

result<dispatch_job> dispatch_job::open(Broker& broker, const job_options& options) {
  auto context = detail::broker_access::context(broker);
  if (!context) return fail(errc::unavailable, "the broker is not running");
  return detail::dispatch_job_maker::open(std::move(context), detail::inproc_control,
                                          client_options{}, options);
}

struct SLITHER_BROKER_NO_EXPORT dispatch_results::impl {
  impl(dispatch_job j, batcher b, std::function<std::optional<Item>()> s, std::string route)
      : job(std::move(j)), input(std::move(b)), source(std::move(s)), route(std::move(route)) {}

  dispatch_job job;
  batcher input;
  std::function<std::optional<Item>()> source;
  std::string route;
  bool source_done = false;
  std::uint64_t pulled = 0;
  std::uint64_t handed = 0;
  std::uint64_t next_seq = 0;
  std::map<std::uint64_t, std::vector<Item>> inputs;  // submitted, not yet answered
  std::deque<dispatch_result> ready;
  bool ended = false;
  std::optional<dispatch_error> error;

  // Items the job will never see (it stopped first) end here, cancelled.
  void cancel_here(std::vector<Item>&& items) {
    dispatch_error e;
    e.kind = failure_kind::cancelled;
    e.type = "cancelled";
    e.message = "dispatch job " + std::to_string(job.id()) + " stopped" +
                (job.error() ? ": " + job.error()->describe() : "");
    const auto shared = std::make_shared<const dispatch_error>(std::move(e));
    for (Item& item : items) ready.push_back({std::move(item), item_status::cancelled, shared});
  }

  result<void> submit(formed_batch&& formed) {
    if (job.error()) {
      cancel_here(std::move(formed.items));
      return {};
    }
    buffer bytes = encode_batch(formed.items);
    const std::size_t count = formed.items.size();
    if (auto r = job.submit(std::move(bytes), count); !r) {
      if (!job.error()) return r;
      cancel_here(std::move(formed.items));  // it ended meanwhile
      return {};
    }
    inputs.emplace(next_seq++, std::move(formed.items));
    return {};
  }

  result<void> submit_ready() {
    while (auto formed = input.pop()) {
      if (auto r = submit(std::move(*formed)); !r) return r;
    }
    return {};
  }

  // Pulls as much input as the window has room for, and submits what forms.
  result<void> feed() {
    if (job.error() && !source_done) {
      // The job stopped: read no more, and what waits in open batches ends here.
      source_done = true;
      input.flush();
      return submit_ready();
    }
    const std::uint64_t held = pulled - handed;
    std::uint64_t room = held >= job.window() ? 0 : job.window() - held;
    std::optional<error_info> bad;
    while (room > 0 && !source_done) {
      std::optional<Item> item;
      try {
        item = source();
      } catch (const std::exception& e) {
        bad =
            fail(errc::invalid_argument, std::string("the job's input source threw: ") + e.what());
        break;
      }
      if (!item) {
        source_done = true;
        break;
      }
      if (auto pushed = input.push(std::move(*item)); !pushed) {
        bad = pushed.error();
        break;
      }
      ++pulled;
      --room;
    }
    if (bad) {
      source_done = true;
      (void)job.cancel();
      input.flush();
      while (auto formed = input.pop()) cancel_here(std::move(formed->items));
      return *bad;
    }
    if (auto r = submit_ready(); !r) return r;
    if (source_done) {
      input.flush();
      if (auto r = submit_ready(); !r) return r;
      return job.close_input();
    }
    if (room == 0 && inputs.empty() && input.open_items() > 0) {
      // The whole window waits in open batches (key partitions): send the
      // largest, or nothing would ever free room for the rest.
      input.flush_largest();
      return submit_ready();
    }
    return {};
  }

  result<void> take(batch_output&& out) {
    const auto it = inputs.find(out.seq);
    if (it == inputs.end()) {
      return fail(errc::protocol_error, "dispatch job " + std::to_string(job.id()) +
                                            ": a result for batch " + std::to_string(out.seq) +
                                            ", which was never sent");
    }
    std::vector<Item> items = std::move(it->second);
    inputs.erase(it);
    auto answer = detail::answer_batch(std::move(items), out);
    if (answer.bad_result && !error) error = std::move(answer.bad_result);
    for (dispatch_result& r : answer.results) {
      // An answer is a new item: the input's route is not its own.
      if (r.status == item_status::routed) {
        r.item.route = route;
      } else if (r.ok()) {
        r.item.route.clear();
      }
      ready.push_back(std::move(r));
    }
    return {};
  }
};

dispatch_results::dispatch_results(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}
dispatch_results::dispatch_results(dispatch_results&&) noexcept = default;
dispatch_results& dispatch_results::operator=(dispatch_results&&) noexcept = default;
dispatch_results::~dispatch_results() = default;

result<std::optional<dispatch_result>> dispatch_results::try_next() {
  impl& s = *p_;
  for (;;) {
    if (!s.ready.empty()) {
      dispatch_result r = std::move(s.ready.front());
      s.ready.pop_front();
      ++s.handed;
      return std::optional<dispatch_result>(std::move(r));
    }
    if (s.ended) return std::optional<dispatch_result>();
    if (auto fed = s.feed(); !fed) return std::move(fed).error();
    if (!s.ready.empty()) continue;
    auto out = s.job.next();
    if (!out) return std::move(out).error();
    if (!*out) {
      s.ended = true;
      if (!s.error) s.error = s.job.error();
      // Whatever was still open when the job ended never reached it.
      s.input.flush();
      while (auto formed = s.input.pop()) s.cancel_here(std::move(formed->items));
      continue;
    }
    if (auto taken = s.take(std::move(**out)); !taken) return std::move(taken).error();
  }
}

std::optional<dispatch_result> dispatch_results::next() {
  auto r = try_next();
  if (!r) throw slither::error(r.error());
  return std::move(*r);
}

const std::optional<dispatch_error>& dispatch_results::error() const noexcept {
  return p_->error;
}

const std::vector<session_moved>& dispatch_results::moves() const noexcept {
  return p_->job.moves();
}

void dispatch_results::cancel() {
  (void)p_->job.cancel();
}

std::uint64_t dispatch_results::pulled() const noexcept {
  return p_->pulled;
}

result<dispatch_results> dispatch_stream(dispatch_job job, batch_strategy batching,
                                         std::function<std::optional<Item>()> source) {
  if (std::holds_alternative<preformed_batch>(batching)) {
    return fail(errc::invalid_argument,
                "dispatch_stream forms its batches: use fixed, weighted or key batching");
  }
  if (max_batch_items(batching) > job.batch_size()) {
    return fail(errc::invalid_argument, "batches of up to " +
                                            std::to_string(max_batch_items(batching)) +
                                            " items do not fit the job's batch size of " +
                                            std::to_string(job.batch_size()));
  }
  auto input = batcher::create(std::move(batching));
  if (!input) return std::move(input).error();
  std::string route = job.route_output();
  return dispatch_results(std::make_unique<dispatch_results::impl>(
      std::move(job), std::move(*input), std::move(source), std::move(route)));
}

namespace {

result<dispatch_results> stream_on(result<dispatch_job> job, const job_options& options,
                                   std::function<std::optional<Item>()> source) {
  if (!job) return std::move(job).error();
  return dispatch_stream(std::move(*job), options.batching, std::move(source));
}

// Runs the stream to its end; items the source still held when the job
// stopped early come out cancelled, so every input item ends once.
result<dispatch_report> run_to_end(result<dispatch_results> stream,
                                   const std::shared_ptr<std::vector<Item>>& items,
                                   const std::shared_ptr<std::size_t>& next) {
  if (!stream) return std::move(stream).error();
  dispatch_report report;
  // Every item ends once in the report: growing it result by result would
  // move all of them again at each doubling (and fault in fresh pages twice).
  report.results.reserve(items->size());
  for (;;) {
    auto r = stream->try_next();
    if (!r) return std::move(r).error();
    if (!*r) break;
    report.results.push_back(std::move(**r));
  }
  report.error = stream->error();
  report.moves = stream->moves();
  if (*next < items->size()) {
    dispatch_error e;
    e.kind = failure_kind::cancelled;
    e.type = "cancelled";
    e.message = "the job stopped before it took this item" +
                (report.error ? ": " + report.error->describe() : std::string());
    const auto shared = std::make_shared<const dispatch_error>(std::move(e));
    for (; *next < items->size(); ++*next) {
      report.results.push_back({std::move((*items)[*next]), item_status::cancelled, shared});
    }
  }
  return report;
}

std::function<std::optional<Item>()> vector_source(std::shared_ptr<std::vector<Item>> items,
                                                   std::shared_ptr<std::size_t> next) {
  return [items = std::move(items), next = std::move(next)]() -> std::optional<Item> {
    if (*next == items->size()) return std::nullopt;
    return std::move((*items)[(*next)++]);
  };
}

}  // namespace

result<dispatch_results> dispatch_stream(Broker& broker,
                                         std::function<std::optional<Item>()> source,
                                         const job_options& options) {
  return stream_on(dispatch_job::open(broker, options), options, std::move(source));
}

result<dispatch_results> dispatch_stream(const client_options& where,
                                         std::function<std::optional<Item>()> source,
                                         const job_options& options) {
  return stream_on(dispatch_job::open(where, options), options, std::move(source));
}

result<dispatch_report> dispatch(Broker& broker, std::vector<Item> items,
                                 const job_options& options) {
  auto held = std::make_shared<std::vector<Item>>(std::move(items));
  auto next = std::make_shared<std::size_t>(0);
  return run_to_end(dispatch_stream(broker, vector_source(held, next), options), held, next);
}

result<dispatch_report> dispatch(const client_options& where, std::vector<Item> items,
                                 const job_options& options) {
  auto held = std::make_shared<std::vector<Item>>(std::move(items));
  auto next = std::make_shared<std::size_t>(0);
  return run_to_end(dispatch_stream(where, vector_source(held, next), options), held, next);
}

result<dispatch_report> call_batch(Broker& broker, std::vector<Item> items,
                                   const job_options& options) {
  if (items.empty()) return dispatch_report{};
  job_options one = options;
  one.batching = fixed_batch{items.size()};
  one.max_in_flight = 1;
  return dispatch(broker, std::move(items), one);
}

}  // namespace slither
