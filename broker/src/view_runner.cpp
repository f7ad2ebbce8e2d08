#include "view_runner.hpp"

#include <boost/asio/post.hpp>

namespace slither::detail {

bool loop_link::post(std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  if (io_ == nullptr) return false;
  boost::asio::post(*io_, std::move(fn));
  return true;
}

void loop_link::close() noexcept {
  std::lock_guard lock(mutex_);
  io_ = nullptr;
}

struct view_runner::shared {
  std::size_t per_store;
  mutable std::mutex mutex;
  std::condition_variable work;  // a task may have become runnable, or stopping
  std::condition_variable idle;  // a task finished, or hurry
  std::deque<task> waiting;
  std::map<std::string, std::size_t, std::less<>> running;  // by store
  std::size_t busy = 0;                                     // threads running a task
  bool stopping = false;
  bool hurry = false;

  // The first waiting task whose store has room, or end(). Expired ones are
  // dropped on the way (their `drop` runs later, outside the lock).
  std::deque<task>::iterator next_runnable(std::vector<task>& expired) {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = waiting.begin(); it != waiting.end();) {
      if (it->deadline <= now) {
        expired.push_back(std::move(*it));
        it = waiting.erase(it);
        continue;
      }
      const auto r = running.find(it->store);
      if (it->store.empty() || r == running.end() || r->second < per_store) return it;
      ++it;
    }
    return waiting.end();
  }

  void loop() {
    std::unique_lock lock(mutex);
    for (;;) {
      std::vector<task> expired;
      auto it = next_runnable(expired);
      if (!expired.empty()) {
        lock.unlock();
        for (auto& t : expired) {
          if (t.drop) t.drop();
        }
        lock.lock();
        continue;
      }
      if (it == waiting.end()) {
        if (stopping) return;
        work.wait(lock);
        continue;
      }
      task t = std::move(*it);
      waiting.erase(it);
      if (!t.store.empty()) ++running[t.store];
      ++busy;
      lock.unlock();
      t.run();
      lock.lock();
      --busy;
      if (!t.store.empty() && --running[t.store] == 0) running.erase(t.store);
      idle.notify_all();
      work.notify_all();  // its store has room again
    }
  }
};

view_runner::view_runner(std::size_t threads, std::size_t per_store)
    : state_(std::make_shared<shared>()) {
  state_->per_store = per_store == 0 ? 1 : per_store;
  for (std::size_t i = 0; i < (threads == 0 ? 1 : threads); ++i) {
    threads_.emplace_back([s = state_] { s->loop(); });
  }
}

view_runner::~view_runner() {
  (void)stop(std::chrono::milliseconds(0));
}

bool view_runner::submit(task t) {
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopping) return false;
    state_->waiting.push_back(std::move(t));
  }
  state_->work.notify_one();
  return true;
}

std::size_t view_runner::in_flight() const {
  std::lock_guard lock(state_->mutex);
  return state_->busy + state_->waiting.size();
}

void view_runner::hurry() {
  {
    std::lock_guard lock(state_->mutex);
    state_->hurry = true;
  }
  state_->idle.notify_all();
}

std::size_t view_runner::stop(std::chrono::milliseconds grace) {
  if (stopped_) return 0;
  stopped_ = true;
  std::deque<task> dropped;
  std::size_t abandoned = 0;
  {
    std::unique_lock lock(state_->mutex);
    state_->stopping = true;
    dropped.swap(state_->waiting);
    state_->work.notify_all();
    state_->idle.wait_for(lock, grace, [&] { return state_->busy == 0 || state_->hurry; });
    abandoned = state_->busy;
  }
  for (auto& t : dropped) {
    if (t.drop) t.drop();
  }
  // Idle threads return at once; a thread still in a view is left to it.
  for (auto& t : threads_) {
    if (abandoned == 0) {
      t.join();
    } else {
      t.detach();
    }
  }
  threads_.clear();
  return abandoned;
}

}  // namespace slither::detail
