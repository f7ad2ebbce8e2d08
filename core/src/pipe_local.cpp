// A batch_runner over a local_pool: each job is a local_job whose source is
// fed by `submit`, with a thread pumping its results into an outbox.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "slither/core/local_pool.hpp"
#include "slither/core/pipe.hpp"

namespace slither {
namespace {

class local_batch_job final : public batch_job {
 public:
  explicit local_batch_job(std::size_t window) : window_(window) {}

  ~local_batch_job() override {
    cancel();
    if (pump_.joinable()) pump_.join();
  }

  // Starts pumping `job`'s results (called once, right after construction).
  void start(local_job job) {
    job_ = std::make_unique<local_job>(std::move(job));
    pump_ = std::thread([this] {
      for (;;) {
        std::optional<dispatch_result> r;
        try {
          r = job_->next();
        } catch (const slither::error&) {
          r.reset();
        }
        std::lock_guard lock(mu_);
        if (!r) {
          done_ = true;
          error_ = job_->error();
          give_back_lost();
          out_cv_.notify_all();
          return;
        }
        if (const auto it = pending_.find(r->item.id); it != pending_.end()) pending_.erase(it);
        outbox_.push_back(std::move(*r));
        out_cv_.notify_all();
      }
    });
  }

  // The local_job's source: waits for a submitted item, or the end.
  std::optional<Item> take_input() {
    std::unique_lock lock(mu_);
    in_cv_.wait(lock, [&] { return !inbox_.empty() || closed_; });
    if (inbox_.empty()) return std::nullopt;
    Item item = std::move(inbox_.front());
    inbox_.pop_front();
    return item;
  }

  std::size_t capacity() const override {
    std::lock_guard lock(mu_);
    const std::size_t held = submitted_ - consumed_;
    return closed_ || held >= window_ ? 0 : window_ - held;
  }

  result<void> submit(std::vector<Item> batch) override {
    std::lock_guard lock(mu_);
    if (closed_) return fail(errc::invalid_argument, "the job's input is closed");
    if (batch.empty() || submitted_ - consumed_ + batch.size() > window_) {
      return fail(errc::busy, "a batch of " + std::to_string(batch.size()) +
                                  " items does not fit the job's capacity");
    }
    submitted_ += batch.size();
    for (Item& item : batch) {
      pending_.insert(item.id);
      inbox_.push_back(std::move(item));
    }
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
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      closed_ = true;
      in_cv_.notify_all();
    }
    if (job_) job_->cancel();
  }

 private:
  // A local_job drops what its source gave it after a cancel, and never sees
  // what is still in the inbox: those items come back cancelled from here,
  // so every submitted item comes back once.
  void give_back_lost() {
    if (pending_.empty()) return;
    dispatch_error e;
    e.kind = failure_kind::cancelled;
    e.type = "cancelled";
    e.message = "the job stopped before it ran this item";
    const auto shared = std::make_shared<const dispatch_error>(std::move(e));
    for (const std::uint64_t id : pending_) {
      Item item;
      item.id = id;
      outbox_.push_back({std::move(item), item_status::cancelled, shared});
    }
    pending_.clear();
    inbox_.clear();
  }

  const std::size_t window_;
  mutable std::mutex mu_;
  std::condition_variable in_cv_;
  std::condition_variable out_cv_;
  std::deque<Item> inbox_;
  std::deque<dispatch_result> outbox_;
  std::unordered_multiset<std::uint64_t> pending_;  // ids submitted, not yet come back
  std::size_t submitted_ = 0;
  std::size_t consumed_ = 0;
  bool closed_ = false;
  bool done_ = false;
  std::optional<dispatch_error> error_;
  std::unique_ptr<local_job> job_;
  std::thread pump_;
};

class local_batch_runner final : public batch_runner {
 public:
  explicit local_batch_runner(local_pool& pool) : pool_(pool) {}

  result<std::unique_ptr<batch_job>> open(const dispatch_options& options,
                                          const std::string&) override {
    if (auto v = validate(options); !v) return std::move(v).error();
    auto job = std::make_unique<local_batch_job>(job_window(options));
    local_batch_job* raw = job.get();
    auto stream = pool_.stream(options, [raw] { return raw->take_input(); });
    if (!stream) return std::move(stream).error();
    job->start(std::move(*stream));
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
