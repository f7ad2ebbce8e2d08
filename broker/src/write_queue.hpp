// The bounded queue between the serving thread and the writer thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>

namespace slither::detail {

/// A bounded FIFO of jobs for the one writer thread. Producers either give up
/// when it is full (`try_push`, for requests: the client gets `busy`) or wait
/// for room (`push_wait`, for in-process callers).
///
/// At most one job runs at a time: the writer thread's (`pop` ... `finish`),
/// or one a producer runs itself with `try_run_inline` when the writer is idle
/// and nothing is queued, so that a short write costs no thread hand-off.
class write_queue {
 public:
  using job = std::function<void()>;

  explicit write_queue(std::size_t limit) : limit_(limit) {}

  /// Enqueues unless full or closed.
  bool try_push(job j) {
    {
      std::lock_guard lock(mutex_);
      if (closed_ || jobs_.size() >= limit_) return false;
      jobs_.push_back(std::move(j));
    }
    items_.notify_one();
    return true;
  }

  /// Enqueues, waiting for room; false if the queue is closed.
  bool push_wait(job j) {
    {
      std::unique_lock lock(mutex_);
      room_.wait(lock, [&] { return closed_ || jobs_.size() < limit_; });
      if (closed_) return false;
      jobs_.push_back(std::move(j));
    }
    items_.notify_one();
    return true;
  }

  /// Runs `f` on the calling thread if no job is queued or running (the order
  /// of jobs is kept: everything submitted before has finished). False if it
  /// did not run, so the caller queues it instead.
  template <class F>
  bool try_run_inline(F&& f) {
    {
      std::lock_guard lock(mutex_);
      if (closed_ || running_ || !jobs_.empty()) return false;
      running_ = true;
    }
    struct done {
      write_queue& q;
      ~done() { q.finish(); }
    } guard{*this};
    f();
    return true;
  }

  /// The next job, once no other job runs; nullopt once the queue is closed
  /// and empty. The caller runs it, then calls `finish()`.
  std::optional<job> pop() {
    std::unique_lock lock(mutex_);
    items_.wait(lock, [&] { return closed_ ? !running_ : !jobs_.empty() && !running_; });
    if (jobs_.empty()) return std::nullopt;
    job j = std::move(jobs_.front());
    jobs_.pop_front();
    running_ = true;
    lock.unlock();
    room_.notify_one();
    return j;
  }

  /// Marks the running job finished.
  void finish() {
    {
      std::lock_guard lock(mutex_);
      running_ = false;
    }
    items_.notify_one();
  }

  /// Refuses new jobs; those already queued are still popped.
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    items_.notify_all();
    room_.notify_all();
  }

  std::size_t depth() const {
    std::lock_guard lock(mutex_);
    return jobs_.size();
  }
  std::size_t limit() const noexcept { return limit_; }

 private:
  const std::size_t limit_;
  mutable std::mutex mutex_;
  std::condition_variable items_;
  std::condition_variable room_;
  std::deque<job> jobs_;
  bool closed_ = false;
  bool running_ = false;
};

}  // namespace slither::detail
