#include "process.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <vector>

#include "slither/shm/detail/sys.hpp"

namespace slither::shm::detail {

sys_calls& sys() noexcept {
  static sys_calls calls{
      [](int fd, off_t offset, off_t length) { return ::posix_fallocate(fd, offset, length); },
      [](int fd, off_t offset, off_t length) {
        return ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0
                   ? 0
                   : errno;
      },
      [](int fd, struct statvfs* out) { return ::fstatvfs(fd, out); },
      [](int fd, struct stat* out) { return ::fstat(fd, out); },
      [](int fd, int cmd, struct flock* lock) { return ::fcntl(fd, cmd, lock); },
      [](int cmd, unsigned flags) {
        return static_cast<int>(::syscall(SYS_membarrier, cmd, flags, 0));
      },
  };
  return calls;
}

namespace {

std::atomic<std::uint64_t> generation{0};

struct fork_registry {
  std::mutex mutex;
  std::vector<fork_aware*> objects;
};

fork_registry& registry() {
  // Never destroyed: fork() may run while static destructors do.
  static auto* r = new fork_registry;
  return *r;
}

void prepare() noexcept {
  fork_registry& r = registry();
  r.mutex.lock();  // released by parent() or child()
  for (fork_aware* o : r.objects) o->before_fork();
}

void parent() noexcept {
  fork_registry& r = registry();
  for (fork_aware* o : r.objects) o->after_fork_parent();
  r.mutex.unlock();
}

void child() noexcept {
  generation.fetch_add(1, std::memory_order_relaxed);
  fork_registry& r = registry();
  for (fork_aware* o : r.objects) o->after_fork_child();
  r.mutex.unlock();  // the forking thread locked it in prepare(), and it is this thread
}

void install_handlers() noexcept {
  static const int installed = [] {
    registry();
    return ::pthread_atfork(prepare, parent, child);
  }();
  (void)installed;
}

}  // namespace

std::uint64_t fork_generation() noexcept {
  install_handlers();
  return generation.load(std::memory_order_relaxed);
}

void register_fork_aware(fork_aware* obj) {
  install_handlers();
  fork_registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.objects.push_back(obj);
}

void unregister_fork_aware(fork_aware* obj) noexcept {
  fork_registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::erase(r.objects, obj);
}

}  // namespace slither::shm::detail
