// Pipes on a broker: a batch_runner whose jobs are dispatch_jobs, and the
// run/stream entry points that check the pipe's stores first.
#include "slither/broker/pipe.hpp"

#include <map>

#include "batch_answer.hpp"
#include "slither/broker/dispatch.hpp"
#include "slither/core/codec.hpp"

namespace slither {
namespace {

// One python stage's job: batches encoded as batch frames, results decoded
// back onto the items they answer.
class broker_batch_job final : public batch_job {
 public:
  explicit broker_batch_job(dispatch_job job) : job_(std::move(job)) {}

  std::size_t capacity() const override { return job_.capacity(); }

  result<void> submit(std::vector<Item> batch) override {
    const std::size_t count = batch.size();
    if (auto r = job_.submit(encode_batch(batch), count); !r) return r;
    inputs_.emplace(next_seq_++, std::move(batch));
    return {};
  }

  result<void> close_input() override { return job_.close_input(); }

  result<std::vector<dispatch_result>> next(std::chrono::milliseconds timeout) override {
    std::vector<dispatch_result> out;
    auto got = job_.next(timeout);
    if (!got) return std::move(got).error();
    if (!*got) return out;
    batch_output& b = **got;
    const auto it = inputs_.find(b.seq);
    if (it == inputs_.end()) {
      return fail(errc::protocol_error, "dispatch job " + std::to_string(job_.id()) +
                                            ": a result for batch " + std::to_string(b.seq) +
                                            ", which was never sent");
    }
    std::vector<Item> items = std::move(it->second);
    inputs_.erase(it);
    return detail::answer_batch(std::move(items), b).results;
  }

  bool finished() const override { return job_.finished(); }
  std::optional<dispatch_error> error() const override { return job_.error(); }
  void cancel() override { (void)job_.cancel(); }

 private:
  dispatch_job job_;
  std::uint64_t next_seq_ = 0;
  std::map<std::uint64_t, std::vector<Item>> inputs_;  // submitted, not yet answered
};

job_options job_for(const dispatch_options& options, const std::string& pool) {
  job_options o;
  static_cast<dispatch_options&>(o) = options;
  o.pool = pool;
  return o;
}

class embedded_runner final : public batch_runner {
 public:
  explicit embedded_runner(Broker& broker) : broker_(broker) {}
  result<std::unique_ptr<batch_job>> open(const dispatch_options& options,
                                          const std::string& pool) override {
    auto job = dispatch_job::open(broker_, job_for(options, pool));
    if (!job) return std::move(job).error();
    return std::unique_ptr<batch_job>(std::make_unique<broker_batch_job>(std::move(*job)));
  }

 private:
  Broker& broker_;
};

class remote_runner final : public batch_runner {
 public:
  explicit remote_runner(client_options where) : where_(std::move(where)) {}
  result<std::unique_ptr<batch_job>> open(const dispatch_options& options,
                                          const std::string& pool) override {
    auto job = dispatch_job::open(where_, job_for(options, pool));
    if (!job) return std::move(job).error();
    return std::unique_ptr<batch_job>(std::make_unique<broker_batch_job>(std::move(*job)));
  }

 private:
  client_options where_;
};

result<void> check_stores(Broker& broker, const Pipe& pipe) {
  for (const auto& name : pipe.stores()) {
    try {
      (void)broker.reader(name);
    } catch (const error&) {
      return fail(errc::not_found,
                  "pipe '" + pipe.name() + "': the broker has no store '" + name + "'");
    }
  }
  return {};
}

result<void> check_stores(const client_options& where, const Pipe& pipe) {
  if (pipe.stores().empty()) return {};
  auto c = client::connect(where);
  if (!c) return std::move(c).error();
  for (const auto& name : pipe.stores()) {
    if (auto info = c->attach_info(name); !info) {
      if (info.error().code != errc::not_found) return std::move(info).error();
      return fail(errc::not_found,
                  "pipe '" + pipe.name() + "': the broker has no store '" + name + "'");
    }
  }
  return {};
}

}  // namespace

std::unique_ptr<batch_runner> broker_runner(Broker& broker) {
  return std::make_unique<embedded_runner>(broker);
}

std::unique_ptr<batch_runner> broker_runner(const client_options& where) {
  return std::make_unique<remote_runner>(where);
}

// The runner opens the jobs while the run starts, and is not needed after.
result<pipe_run> run(Broker& broker, const Pipe& pipe, std::vector<Item> input,
                     run_options options) {
  if (auto s = check_stores(broker, pipe); !s) return std::move(s).error();
  auto runner = broker_runner(broker);
  options.runner = runner.get();
  return run(pipe, std::move(input), options);
}

result<pipe_run> run(const client_options& where, const Pipe& pipe, std::vector<Item> input,
                     run_options options) {
  if (auto s = check_stores(where, pipe); !s) return std::move(s).error();
  auto runner = broker_runner(where);
  options.runner = runner.get();
  return run(pipe, std::move(input), options);
}

result<pipe_stream> stream(Broker& broker, const Pipe& pipe,
                           std::function<std::optional<Item>()> source, run_options options) {
  if (auto s = check_stores(broker, pipe); !s) return std::move(s).error();
  auto runner = broker_runner(broker);
  options.runner = runner.get();
  return stream(pipe, std::move(source), options);
}

result<pipe_stream> stream(const client_options& where, const Pipe& pipe,
                           std::function<std::optional<Item>()> source, run_options options) {
  if (auto s = check_stores(where, pipe); !s) return std::move(s).error();
  auto runner = broker_runner(where);
  options.runner = runner.get();
  return stream(pipe, std::move(source), options);
}

}  // namespace slither
