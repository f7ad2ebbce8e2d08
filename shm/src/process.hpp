// What the store needs to know about processes: whether an object was
// inherited through fork(), and hooks that run around fork().
#pragma once

#include <cstdint>

namespace slither::shm::detail {

/// A number that changes in a child process after every fork(), so objects
/// bound to the process that created them can tell they were inherited.
std::uint64_t fork_generation() noexcept;

/// An object that must act around fork(): for example, give a child its own
/// registry slot, or close descriptors whose OFD locks must not outlive the
/// parent. Registered objects are called from one pthread_atfork handler set.
class fork_aware {
 public:
  /// In the parent, before fork(). Registration is locked until the matching
  /// `after_fork_parent`/`after_fork_child`, so no object comes or goes meanwhile.
  virtual void before_fork() noexcept = 0;
  /// In the parent, after fork() returned (also when it failed).
  virtual void after_fork_parent() noexcept = 0;
  /// In the child, which has only the forking thread: keep to system calls
  /// and memory the child owns.
  virtual void after_fork_child() noexcept = 0;

 protected:
  ~fork_aware() = default;
};

/// Calls `obj` around every fork() until it is unregistered.
void register_fork_aware(fork_aware* obj);
void unregister_fork_aware(fork_aware* obj) noexcept;

}  // namespace slither::shm::detail
