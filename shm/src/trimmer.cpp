#include "trimmer.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>

#include "process.hpp"
#include "slither/shm/detail/sys.hpp"

namespace slither::shm::detail {

namespace {
struct slice {
  int fd;
  std::uint64_t tag, at, bytes;
};
}  // namespace

struct trimmer::state {
  std::mutex mutex;
  std::condition_variable work;  // to the thread: a slice, or stop
  std::condition_variable idle;  // from the thread: a slice finished
  std::deque<slice> queued;
  std::vector<trim_result> done;
  std::uint64_t submitted = 0;
  std::uint64_t finished = 0;
  bool stop = false;
  std::thread thread;
};

namespace {

void lower_own_priority() noexcept {
  // Only ever lowered, which needs no privilege. SCHED_IDLE: a runnable
  // thread of any nice value preempts this one as soon as it wakes.
  sched_param p{};
  if (::pthread_setschedparam(::pthread_self(), SCHED_IDLE, &p) == 0) return;
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
}

trim_result punch(const slice& s) noexcept {
  return {s.tag, s.at, s.bytes,
          sys().punch_hole(s.fd, static_cast<off_t>(s.at), static_cast<off_t>(s.bytes)) == 0};
}

void run(trimmer::state& s) {
  ::pthread_setname_np(::pthread_self(), "slither-trim");
  lower_own_priority();
  std::unique_lock lock(s.mutex);
  for (;;) {
    s.work.wait(lock, [&] { return s.stop || !s.queued.empty(); });
    if (s.stop) return;  // the segments are going away: what is queued is moot
    const slice next = s.queued.front();
    s.queued.pop_front();
    lock.unlock();
    const trim_result r = punch(next);
    lock.lock();
    s.done.push_back(r);
    ++s.finished;
    s.idle.notify_all();
  }
}

}  // namespace

trimmer::trimmer() : s_(std::make_unique<state>()), generation_(fork_generation()) {}

trimmer::~trimmer() {
  if (generation_ != fork_generation()) {
    // A fork child: the thread is the parent's, and the mutex may have been
    // held by it at the fork. Touch nothing.
    (void)s_.release();
    return;
  }
  {
    std::lock_guard lock(s_->mutex);
    s_->stop = true;
  }
  s_->work.notify_one();
  if (s_->thread.joinable()) s_->thread.join();
}

std::uint64_t trimmer::submit(const trim_job& job) {
  if (generation_ != fork_generation()) return 0;
  std::vector<slice> slices;
  for (const auto& [at, bytes] : job.runs) {
    for (std::uint64_t off = 0; off < bytes; off += slice_bytes) {
      slices.push_back({job.fd, job.tag, at + off, std::min(slice_bytes, bytes - off)});
    }
  }
  outstanding_ += slices.size();
  std::unique_lock lock(s_->mutex);
  s_->submitted += slices.size();
  if (!s_->thread.joinable()) {
    try {
      s_->thread = std::thread([s = s_.get()] { run(*s); });
    } catch (const std::system_error&) {
      // No thread to be had: do the work here, late is better than never.
      lock.unlock();
      std::vector<trim_result> rs;
      for (const slice& sl : slices) rs.push_back(punch(sl));
      lock.lock();
      s_->done.insert(s_->done.end(), rs.begin(), rs.end());
      s_->finished += rs.size();
      return slices.size();
    }
  }
  s_->queued.insert(s_->queued.end(), slices.begin(), slices.end());
  s_->work.notify_one();
  return slices.size();
}

std::vector<trim_result> trimmer::collect() {
  if (outstanding_ == 0 || generation_ != fork_generation()) return {};
  std::vector<trim_result> out;
  {
    std::lock_guard lock(s_->mutex);
    out.swap(s_->done);
  }
  outstanding_ -= out.size();
  return out;
}

void trimmer::wait_idle() {
  if (outstanding_ == 0 || generation_ != fork_generation()) return;
  std::unique_lock lock(s_->mutex);
  while (!s_->queued.empty()) {
    const slice next = s_->queued.front();
    s_->queued.pop_front();
    lock.unlock();
    const trim_result r = punch(next);
    lock.lock();
    s_->done.push_back(r);
    ++s_->finished;
  }
  s_->idle.wait(lock, [&] { return s_->finished == s_->submitted; });
}

}  // namespace slither::shm::detail
