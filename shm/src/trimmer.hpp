// The writer's background page trimmer: hands runs of free pages back to
// the system (FALLOC_FL_PUNCH_HOLE) on a thread of its own, at the lowest
// CPU priority, so that a large free costs the thread that frees it
// nothing and never competes with a thread serving requests.
//
// Punching 256 MiB takes tens of milliseconds of kernel time; done by the
// writer it delayed the write that freed the block (and, in a broker, every
// request queued behind that write, or a ping when the write ran on the
// serving thread). The allocator takes a run out of its free lists before it
// submits it (no allocation can land in pages being punched), and puts it
// back, as a hole, when the run comes back through `collect`.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace slither::shm::detail {

/// Pages of one segment to hand back: `runs` are (offset in the segment,
/// bytes), page-aligned; `tag` is the caller's, returned with the result.
struct trim_job {
  int fd = -1;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
  std::uint64_t tag = 0;
};

/// One slice of a job, done: its job's tag, where it is, and whether its
/// pages were handed back (a file system that cannot punch keeps them: they
/// are still free space, only not handed back).
struct trim_result {
  std::uint64_t tag = 0;
  std::uint64_t at = 0;
  std::uint64_t bytes = 0;
  bool punched = false;
};

/// One background thread, started by the first `submit`, punching the runs
/// of submitted jobs in order, a slice at a time (so that the segment's
/// inode lock, which a `fallocate` by the writer also takes, is never held
/// long). The thread runs under SCHED_IDLE (nice 19 where that is refused):
/// any other runnable thread preempts it. A thread that must wait for the
/// trimmer (`wait_idle`) punches the slices still queued itself, so it never
/// waits on a thread that other work keeps from running for more than the
/// one slice that thread has in hand.
///
/// Caveats: a fork child inherits the object but not the thread; in the
/// child the trimmer is inert (`collect` returns nothing, `wait_idle`
/// returns at once) and its state is leaked at destruction, never joined.
/// The descriptors in submitted jobs must stay open until they are collected
/// or the trimmer is destroyed.
class trimmer {
 public:
  /// Largest punch made by one system call.
  static constexpr std::uint64_t slice_bytes = std::uint64_t{4} << 20;

  trimmer();
  trimmer(const trimmer&) = delete;
  trimmer& operator=(const trimmer&) = delete;
  /// Stops the thread after the slice it is punching; slices not started
  /// are dropped (the segments are being closed).
  ~trimmer();

  /// Queues `job`'s runs as slices (starting the thread if need be; if it
  /// cannot be started, they are punched on the calling thread instead).
  /// Returns how many slices that makes.
  std::uint64_t submit(const trim_job& job);
  /// The slices finished since the last call; never blocks.
  std::vector<trim_result> collect();
  /// Returns once every slice submitted so far is finished, punching those
  /// the thread has not started on the calling thread.
  void wait_idle();
  /// Slices submitted and not yet returned by `collect`.
  std::uint64_t outstanding() const noexcept { return outstanding_; }

  struct state;

 private:
  std::unique_ptr<state> s_;
  std::uint64_t outstanding_ = 0;
  std::uint64_t generation_ = 0;  // fork_generation() of the creating process
};

}  // namespace slither::shm::detail
