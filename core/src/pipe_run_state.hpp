// The shared state of one pipe run: the queues between stages, the sink the
// consumer drains, the books (failures, skipped, unfinished), and the threads.
// One mutex guards all of it; items move in chunks, so it is taken once per
// chunk, not per item.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "pipe_def.hpp"
#include "slither/core/pipe.hpp"

namespace slither::detail {

/// An item leaving the pipe at output `output` (an index into compiled_pipe::outputs).
struct out_entry {
  std::uint32_t output = 0;
  Item item;
};

/// A bounded queue of chunks into one stage.
struct chunk_queue {
  std::deque<std::vector<Item>> chunks;
  std::size_t items = 0;
  /// Threads that may still push; the queue is closed at 0.
  std::size_t producers = 0;
  std::condition_variable not_empty;
  std::condition_variable not_full;
};

struct pipe_run_state {
  pipe_run_state(compiled_pipe p, run_options o)
      : pipe(std::move(p)), opts(std::move(o)), queues(pipe.stages.size()) {}

  compiled_pipe pipe;
  run_options opts;
  std::uint64_t id = 0;
  /// The run's metadata as stages see it (the caller's, plus "stores").
  Map metadata;
  dispatch_clock::time_point started;

  std::mutex mu;
  std::vector<chunk_queue> queues;  // queues[i] feeds stage i
  std::deque<std::vector<out_entry>> sink;
  std::size_t sink_items = 0;
  std::condition_variable sink_not_full;
  /// Wakes the consumer: output in the sink, room in queue 0, a thread ended, a stop.
  std::condition_variable consumer;
  std::size_t running = 0;
  bool stopping = false;
  bool cancelled = false;
  std::optional<pipe_failure> error;
  std::vector<pipe_failure> failures;
  std::vector<std::uint64_t> skipped;
  std::vector<std::uint64_t> unfinished;
  std::uint64_t items_out = 0;

  std::atomic<std::uint64_t> next_child{std::uint64_t{1} << 63};
  std::vector<std::unique_ptr<batch_job>> jobs;  // per stage; null but for python stages
  std::vector<std::thread> threads;

  /// Stops the run (with lock held): `why` is the halting failure, or none for a cancel.
  void stop(std::optional<pipe_failure> why);
  /// Pushes a chunk into queue `i`, waiting for room; a stopped run takes its ids as unfinished.
  void push(std::unique_lock<std::mutex>& lock, std::size_t i, std::vector<Item>&& chunk);
  /// Pushes outputs into the sink, waiting for room unless the run stopped.
  void push_sink(std::unique_lock<std::mutex>& lock, std::vector<out_entry>&& out);
  /// Takes the next chunk of queue `i` (with lock held; the queue must hold one).
  std::vector<Item> pop(std::size_t i);
  /// A thread of stage `i` is done.
  void thread_done(std::size_t i);

  /// The thread bodies: native stages and routers `first` to `last` (one
  /// stage, or several fused), and python stage `i` with the native stages
  /// fused before and after it (`first` to `last`).
  void native_main(std::size_t first, std::size_t last);
  void python_main(std::size_t first, std::size_t i, std::size_t last);
};

}  // namespace slither::detail
