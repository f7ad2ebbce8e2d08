// The bounded queue between the serving thread and the writer thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace slither::detail {

/// One write for the writer thread.
struct write_job {
  /// Applies the write and answers it.
  std::function<void()> run;
  /// Answers it without applying it (a stop that cannot wait); may be empty.
  std::function<void()> cancel;
  /// Request bytes it holds until it has run.
  std::size_t bytes = 0;
  /// The peer it came from, whose queued bytes are bounded; empty for in-process callers.
  std::string client;
};

/// Bounds of a write queue. Bytes bound memory: a job's request stays in
/// memory until it has run. One job always fits when nothing is held, so a
/// request larger than a byte bound still runs, alone.
struct write_queue_limits {
  std::size_t jobs = 4096;                            ///< queued jobs
  std::size_t bytes = std::size_t{1} << 30;           ///< bytes queued or running, all clients
  std::size_t client_bytes = std::size_t{256} << 20;  ///< bytes queued or running, one client
};

/// Why `try_push` did not queue a job.
enum class push_result { queued, full_jobs, full_bytes, full_client, closed };

/// A bounded FIFO of jobs for the one writer thread. Producers either give up
/// when it is full (`try_push`, for requests: the client gets `busy`) or wait
/// for room (`push_wait`, for in-process callers).
///
/// At most one job runs at a time: the writer thread's (`pop` ... `finish`),
/// or one a producer runs itself with `try_run_inline` when the writer is idle
/// and nothing is queued, so that a short write costs no thread hand-off.
class write_queue {
 public:
  explicit write_queue(write_queue_limits limits) : limits_(limits) {}

  // Producers notify while they hold the lock: once a job is queued, the
  // writer may run it, and its caller may see the result and destroy the
  // queue, before a notify made after unlocking would have returned.

  /// Enqueues unless a bound would be passed or the queue is closed.
  push_result try_push(write_job j) {
    std::lock_guard lock(mutex_);
    if (closed_) return push_result::closed;
    if (jobs_.size() >= limits_.jobs) return push_result::full_jobs;
    if (bytes_ > 0 && bytes_ + j.bytes > limits_.bytes) return push_result::full_bytes;
    if (!j.client.empty()) {
      const auto it = client_bytes_.find(j.client);
      const std::size_t held = it == client_bytes_.end() ? 0 : it->second;
      if (held > 0 && held + j.bytes > limits_.client_bytes) return push_result::full_client;
    }
    hold(j.client, j.bytes);
    jobs_.push_back(std::move(j));
    items_.notify_one();
    return push_result::queued;
  }

  /// Enqueues, waiting for room in the job count; false if the queue is closed.
  bool push_wait(write_job j) {
    std::unique_lock lock(mutex_);
    room_.wait(lock, [&] { return closed_ || jobs_.size() < limits_.jobs; });
    if (closed_) return false;
    hold(j.client, j.bytes);
    jobs_.push_back(std::move(j));
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
  std::optional<write_job> pop() {
    std::unique_lock lock(mutex_);
    items_.wait(lock, [&] { return closed_ ? !running_ : !jobs_.empty() && !running_; });
    if (jobs_.empty()) return std::nullopt;
    write_job j = std::move(jobs_.front());
    jobs_.pop_front();
    running_ = true;
    running_bytes_ = j.bytes;
    running_client_ = j.client;
    lock.unlock();
    room_.notify_one();
    return j;
  }

  /// Marks the running job finished and releases the bytes it held.
  void finish() {
    {
      std::lock_guard lock(mutex_);
      running_ = false;
      release(running_client_, running_bytes_);
      running_bytes_ = 0;
      running_client_.clear();
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

  /// Closes the queue and hands back the jobs not yet started, to be
  /// cancelled; a running job still finishes.
  std::vector<write_job> abort() {
    std::vector<write_job> left;
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      for (auto& j : jobs_) {
        release(j.client, j.bytes);
        left.push_back(std::move(j));
      }
      jobs_.clear();
    }
    items_.notify_all();
    room_.notify_all();
    return left;
  }

  /// Jobs queued (not counting one running).
  std::size_t depth() const {
    std::lock_guard lock(mutex_);
    return jobs_.size();
  }
  /// Bytes held by queued and running jobs.
  std::size_t bytes() const {
    std::lock_guard lock(mutex_);
    return bytes_;
  }
  const write_queue_limits& limits() const noexcept { return limits_; }

 private:
  void hold(const std::string& client, std::size_t n) {
    bytes_ += n;
    if (!client.empty()) client_bytes_[client] += n;
  }
  void release(const std::string& client, std::size_t n) {
    bytes_ -= n;
    if (client.empty()) return;
    const auto it = client_bytes_.find(client);
    if (it == client_bytes_.end()) return;
    it->second -= n;
    if (it->second == 0) client_bytes_.erase(it);
  }

  const write_queue_limits limits_;
  mutable std::mutex mutex_;
  std::condition_variable items_;
  std::condition_variable room_;
  std::deque<write_job> jobs_;
  std::size_t bytes_ = 0;
  std::unordered_map<std::string, std::size_t> client_bytes_;
  std::size_t running_bytes_ = 0;
  std::string running_client_;
  bool closed_ = false;
  bool running_ = false;
};

}  // namespace slither::detail
