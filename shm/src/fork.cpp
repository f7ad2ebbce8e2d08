// What fork() does to readers and writers of this process.
//
// A reader's child gets holds of its own. Before the fork, the parent opens
// a second, private description of the registry and claims a slot through it
// for the child, filled with everything the child could be relying on: the
// holds of the parent's live views (a superset of the child's), its overflow
// pins, and the forking thread's lane if it forks inside a read. After the fork the parent closes
// its copy of that descriptor, so the slot's lock is the child's alone; the child re-fills the
// holds from its own private copy (which says exactly which views it inherited), drops its
// inherited copy of the parent's registry descriptor and remaps the registry from its own (a
// mapping also holds the parent's description, and with it the lock), so the parent's death stays
// visible to the writer, and reads on through the new slot. A child with nothing to protect gets
// only the descriptor and claims a slot on its first read. If no slot can be had for the child
// (registry full, no descriptors), parent and child share the parent's slot instead: the child
// keeps the parent's descriptor, refuses reads, and neither process ever releases what was held at
// the fork, so nothing a child's view shows is freed while either lives.
//
// A writer's child closes its copies of the writer's descriptors: the
// writer lock must die with the writer, not with its last child.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>

#include "epoch.hpp"
#include "reader_core.hpp"
#include "registry.hpp"
#include "writer_impl.hpp"

namespace slither::shm {

namespace {

/// A new open file description of the same registry object, verified by inode.
detail::unique_fd reopen_registry(const detail::reader_core& c) noexcept {
  if (!c.registry_fd) return {};
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", c.registry_fd.get());
  detail::unique_fd fd(::open(path, O_RDWR | O_CLOEXEC));
  struct stat st {};
  if (fd && ::fstat(fd.get(), &st) == 0 && st.st_dev == c.registry_dev &&
      st.st_ino == c.registry_ino) {
    return fd;
  }
  return {};
}

}  // namespace

void detail::reader_core::before_fork() noexcept {
  forking.store(1, std::memory_order_seq_cst);
  overflow_mutex.lock();  // both released in after_fork_parent / after_fork_child
  claim_mutex.lock();
  if (!usable) return;
  // The child's own description of the registry; without one it opens the
  // registry again by name when it first reads.
  child_fd = reopen_registry(*this);
  if (slot.load(std::memory_order_relaxed) == nullptr) return;  // no views, no reads yet
  // Our slot's holds, read after `forking` was set: a view made meanwhile
  // either shows here or waits for the fork to end (view::state).
  reader_slot* mine = slot.load(std::memory_order_relaxed);
  std::uint64_t holds[holds_per_reader];
  bool holds_something = false;
  for (unsigned i = 0; i < holds_per_reader; ++i) {
    holds[i] = mine->holds[i].load(std::memory_order_seq_cst);
    holds_something |= holds[i] != 0;
  }
  const auto lane = active_lane(*this, mine);
  holds_something |= lane.has_value() || !overflow_epochs.empty();
  if (!holds_something) return;
  std::optional<slot_claim> c;
  if (child_fd) c = claim_slot(child_fd.get(), slots, slot_count, 0);
  if (!c) {
    child_fd.close();
    child_shares = true;
    return;
  }
  for (unsigned i = 0; i < holds_per_reader; ++i) {
    if (holds[i] != 0) c->slot->holds[i].store(holds[i], std::memory_order_seq_cst);
  }
  c->slot->overflow_epoch.store(overflow_epochs.empty() ? 0 : *overflow_epochs.begin(),
                                std::memory_order_seq_cst);
  if (lane) c->slot->lanes[lane->lane].store(lane->epoch, std::memory_order_seq_cst);
  child_claim = *c;
}

void detail::reader_core::after_fork_parent() noexcept {
  child_fd.close();  // the child's copy keeps the new slot's lock
  child_claim = {};
  if (child_shares) {
    shared_forks.fetch_add(1, std::memory_order_relaxed);
    child_shares = false;
  }
  claim_mutex.unlock();
  overflow_mutex.unlock();
  forking.store(0, std::memory_order_seq_cst);
}

void detail::reader_core::after_fork_child() noexcept {
  // Only the forking thread lives on here: the lanes other threads kept are free.
  for (auto& keeper : lane_keeper) {
    if (keeper.load(std::memory_order_relaxed) != thread_token()) {
      keeper.store(0, std::memory_order_relaxed);
    }
  }
  // A new process: registered for the writer's barriers only if it registers itself.
  if (fast_fences) fast_fences = register_for_writer_barriers();
  if (child_claim.slot != nullptr) {
    // Our private copy is what this process's views hold: holds taken and
    // dropped by the parent's threads while the slot was being filled
    // are corrected here.
    for (unsigned i = 0; i < holds_per_reader; ++i) {
      child_claim.slot->holds[i].store(private_holds[i].load(std::memory_order_relaxed),
                                       std::memory_order_seq_cst);
    }
    child_claim.slot->pid.store(static_cast<std::uint64_t>(::getpid()), std::memory_order_relaxed);
    // The inherited mapping references the parent's description, and so
    // keeps its slot's lock: map the same pages from ours instead. (If that
    // fails, the parent only looks alive for as long as we live.)
    (void)remap_in_place(registry.data(), registry.size(), child_fd.get(), true);
    registry_fd = std::move(child_fd);  // closes our copy of the parent's
    claim = child_claim;
    slot.store(child_claim.slot, std::memory_order_release);
  } else if (child_shares) {
    shared_forks.fetch_add(1, std::memory_order_relaxed);
    usable = false;  // keeps the parent's descriptor: its slot lives while we do
  } else if (usable) {
    // Nothing uses the registry until claim_lazily: let go of the parent's
    // description now, mapping ours, or nothing until then.
    const bool mapped =
        child_fd && remap_in_place(registry.data(), registry.size(), child_fd.get(), true);
    if (!mapped) {
      (void)unmap_in_place(registry.data(), registry.size());
      child_fd.close();
    }
    registry_fd = std::move(child_fd);  // may be none: then claim_lazily opens one
    claim = {};
    slot.store(nullptr, std::memory_order_release);
  }
  child_claim = {};
  child_shares = false;
  claim_mutex.unlock();
  overflow_mutex.unlock();
  forking.store(0, std::memory_order_seq_cst);
}

result<detail::reader_slot*> detail::reader_core::claim_lazily() {
  std::lock_guard lock(claim_mutex);
  if (reader_slot* s = slot.load(std::memory_order_acquire)) return s;
  if (!registry_fd) {
    auto reg = open_object(registry_name(ns, name), true, owner_uid);
    struct stat st {};
    if (!reg || ::fstat(reg->fd.get(), &st) != 0 || st.st_dev != registry_dev ||
        st.st_ino != registry_ino) {
      return fail(errc::writer_gone, "store '" + label +
                                         "' was closed since this process was forked from its "
                                         "reader's; attach again");
    }
    if (!remap_in_place(registry.data(), registry.size(), reg->fd.get(), true)) {
      return fail(errc::io_error, "cannot map the reader registry of store '" + label +
                                      "' again: " + errno_text(errno));
    }
    registry_fd = std::move(reg->fd);
  }
  const auto c =
      claim_slot(registry_fd.get(), slots, slot_count, static_cast<std::uint64_t>(::getpid()));
  if (!c) {
    return fail(errc::limit_exceeded, "the reader registry of store '" + label + "' is full (" +
                                          std::to_string(slot_count) + " readers)");
  }
  claim = *c;
  slot.store(c->slot, std::memory_order_release);
  return c->slot;
}

void detail::reader_core::wait_for_fork() const noexcept {
  while (forking.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
}

void writer::impl::after_fork_child() noexcept {
  lock.forget();
  registry_fd.close();
}

}  // namespace slither::shm
