// A batch_runner over a local_pool: each submitted batch runs as a local_job,
// on a thread that pumps its results into an outbox.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "slither/core/local_pool.hpp"
#include "slither/core/pipe.hpp"

namespace slither {
namespace {

// Each submitted batch runs as a local_job of its own (one batch of its
// size), one after the other on a pump thread: the pool sees the batches as
// the pipe formed them, and the pump never waits for input that only a later
// batch would bring. A batch that halts its job stops the ones after it.
class local_batch_job final : public batch_job {
 public:
  local_batch_job(local_pool& pool, dispatch_options options, std::size_t window)
      : pool_(pool), options_(std::move(options)), window_(window) {}

  ~local_batch_job() override {
    cancel();
    if (pump_.joinable()) pump_.join();
  }

  // Starts the pump (called once, right after construction).
  void start() {
    pump_ = std::thread([this] { pump(); });
  }

  std::size_t capacity() const override {
    std::lock_guard lock(mu_);
    const std::size_t held = submitted_ - consumed_;
    return closed_ || held >= window_ ? 0 : window_ - held;
  }

  result<void> submit(std::vector<Item> batch) override {
    std::lock_guard lock(mu_);
    if (closed_) return fail(errc::invalid_argument, "the job's input is closed");
    if (stopped_) return fail(errc::invalid_argument, "the job stopped");
    if (batch.empty() || submitted_ - consumed_ + batch.size() > window_) {
      return fail(errc::busy, "a batch of " + std::to_string(batch.size()) +
                                  " items does not fit the job's capacity");
    }
    submitted_ += batch.size();
    inbox_.push_back(std::move(batch));
    in_cv_.notify_all();
    return {};
  }

  result<void> close_input() override {
    std::lock_guard lock(mu_);
    closed_ = true;
    in_cv_.notify_all();
    return {};
  }

  result<std::vector<dispatch_result>> next(std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    out_cv_.wait_for(lock, timeout, [&] { return !outbox_.empty() || done_; });
    std::vector<dispatch_result> out(std::make_move_iterator(outbox_.begin()),
                                     std::make_move_iterator(outbox_.end()));
    outbox_.clear();
    consumed_ += out.size();
    return out;
  }

  bool finished() const override {
    std::lock_guard lock(mu_);
    return done_ && outbox_.empty();
  }

  std::optional<dispatch_error> error() const override {
    std::lock_guard lock(mu_);
    return error_;
  }

  void cancel() override {
    std::lock_guard lock(mu_);
    if (done_) return;
    closed_ = true;
    if (!stopped_) {
      stopped_ = true;
      error_ = cancelled("the job was cancelled");
    }
    in_cv_.notify_all();
    if (current_ != nullptr) current_->cancel();
  }

 private:
  static dispatch_error cancelled(std::string message) {
    dispatch_error e;
    e.kind = failure_kind::cancelled;
    e.type = "cancelled";
    e.message = std::move(message);
    return e;
  }

  // Items that will not run come back cancelled (lock held), so every
  // submitted item comes back once.
  void give_back(const std::vector<std::uint64_t>& ids) {
    if (ids.empty()) return;
    const auto shared = std::make_shared<const dispatch_error>(
        cancelled("the job stopped before it ran this item"));
    for (const std::uint64_t id : ids) {
      Item item;
      item.id = id;
      outbox_.push_back({std::move(item), item_status::cancelled, shared});
    }
    out_cv_.notify_all();
  }

  void pump() {
    for (;;) {
      std::vector<Item> batch;
      {
        std::unique_lock lock(mu_);
        in_cv_.wait(lock, [&] { return !inbox_.empty() || closed_; });
        if (inbox_.empty()) {
          done_ = true;
          out_cv_.notify_all();
          return;
        }
        batch = std::move(inbox_.front());
        inbox_.pop_front();
      }
      run_one(std::move(batch));
    }
  }

  // Runs one batch to its end, its results into the outbox.
  void run_one(std::vector<Item> batch) {
    std::unordered_multiset<std::uint64_t> pending;
    for (const Item& item : batch) pending.insert(item.id);
    auto give_back_pending = [&] {
      give_back(std::vector<std::uint64_t>(pending.begin(), pending.end()));
    };
    {
      std::lock_guard lock(mu_);
      if (stopped_) return give_back_pending();
    }
    dispatch_options o = options_;
    o.batching = fixed_batch{batch.size()};
    std::size_t at = 0;
    auto job = pool_.stream(std::move(o), [&]() -> std::optional<Item> {
      if (at == batch.size()) return std::nullopt;
      return std::move(batch[at++]);
    });
    if (!job) {
      std::lock_guard lock(mu_);
      stopped_ = true;
      error_ = cancelled(job.error().message);
      return give_back_pending();
    }
    {
      std::lock_guard lock(mu_);
      current_ = &*job;
      if (stopped_) job->cancel();
    }
    for (;;) {
      std::optional<dispatch_result> r;
      try {
        r = job->next();
      } catch (const slither::error&) {
        r.reset();
      }
      if (!r) break;
      if (const auto it = pending.find(r->item.id); it != pending.end()) pending.erase(it);
      std::lock_guard lock(mu_);
      outbox_.push_back(std::move(*r));
      out_cv_.notify_all();
    }
    std::lock_guard lock(mu_);
    current_ = nullptr;
    if (job->error() && !stopped_) {
      stopped_ = true;
      error_ = job->error();
    }
    give_back_pending();
  }

  local_pool& pool_;
  const dispatch_options options_;
  const std::size_t window_;
  mutable std::mutex mu_;
  std::condition_variable in_cv_;
  std::condition_variable out_cv_;
  std::deque<std::vector<Item>> inbox_;
  std::deque<dispatch_result> outbox_;
  std::size_t submitted_ = 0;
  std::size_t consumed_ = 0;
  bool closed_ = false;
  bool stopped_ = false;  // halted or cancelled: batches still to run come back cancelled
  bool done_ = false;
  std::optional<dispatch_error> error_;
  local_job* current_ = nullptr;  // the batch running now
  std::thread pump_;
};

class local_batch_runner final : public batch_runner {
 public:
  explicit local_batch_runner(local_pool& pool) : pool_(pool) {}

  result<std::unique_ptr<batch_job>> open(const dispatch_options& options,
                                          const std::string&) override {
    SLITHER_TRY(validate(options));
    // An empty job checks the function's name now, as a broker's open does.
    if (auto probe = pool_.stream(options, [] { return std::optional<Item>(); }); !probe) {
      return std::move(probe).error();
    }
    auto job = std::make_unique<local_batch_job>(pool_, options, job_window(options));
    job->start();
    return std::unique_ptr<batch_job>(std::move(job));
  }

 private:
  local_pool& pool_;
};

}  // namespace

std::unique_ptr<batch_runner> local_runner(local_pool& pool) {
  return std::make_unique<local_batch_runner>(pool);
}

}  // namespace slither
