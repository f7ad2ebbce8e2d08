// Shared-memory objects of a store: their names, creation, verification,
// mapping and removal, each OS resource behind a move-only RAII type.
//
// Everything that maps an object checks it first (`open_object`): owned by
// the expected user, no group or other write permission, and, before a
// mapping, at least as large as what will be mapped, so a foreign, writable
// or shrunk object is an error rather than a SIGBUS or a read of someone
// else's bytes.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "slither/core/error.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::detail {

inline constexpr std::uint64_t page_bytes = 4096;
/// A transparent huge page (x86-64 and arm64 with 4 KiB pages).
inline constexpr std::uint64_t huge_page_bytes = std::uint64_t{2} << 20;

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) noexcept {
  return (v + a - 1) / a * a;
}

/// True for 1-64 characters of [A-Za-z0-9_-]: a namespace or store name.
bool valid_name(std::string_view s) noexcept;

/// An owned file descriptor, closed on destruction.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { close(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  /// Closes the descriptor (only this process's reference to the open file
  /// description: OFD locks stay while another descriptor refers to it). Safe twice.
  void close() noexcept;

 private:
  int fd_ = -1;
};

/// A shared mapping, unmapped on destruction.
class mapping {
 public:
  mapping() = default;
  mapping(std::byte* data, std::size_t size) noexcept : data_(data), size_(size) {}
  mapping(mapping&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  mapping& operator=(mapping&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  mapping(const mapping&) = delete;
  mapping& operator=(const mapping&) = delete;
  ~mapping() { reset(); }

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }
  /// Unmaps. Safe twice.
  void reset() noexcept;

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Replaces the pages at `addr` (a mapping of `bytes` bytes made by
/// `map_object`) with a shared mapping of the same bytes of `fd`, in place.
/// A mapping holds a reference to the open file description it was made
/// from, and with it that description's OFD locks: a fork child remaps what
/// it inherited to stop holding its parent's. Returns false on failure.
bool remap_in_place(std::byte* addr, std::uint64_t bytes, int fd, bool writable) noexcept;

/// Replaces the pages at `addr` with inaccessible anonymous ones: the address
/// range stays reserved for a later `remap_in_place`, the file is let go.
bool unmap_in_place(std::byte* addr, std::uint64_t bytes) noexcept;

/// An object opened and verified: its descriptor, current size, the bytes
/// memory backs of it (`allocated_bytes`) and its identity.
struct opened_object {
  unique_fd fd;
  std::uint64_t bytes = 0;
  std::uint64_t allocated = 0;
  dev_t dev = 0;
  ino_t ino = 0;
};

/// Opens the existing shared-memory object `name` (close-on-exec, never
/// through a symlink), read-only or read-write, and verifies it: a regular
/// object owned by `owner` without group or other write permission. Errors:
/// `not_found` if there is no such object, `io_error` naming what failed.
result<opened_object> open_object(const std::string& name, bool writable, uid_t owner);

/// The bytes of an object that memory backs (its allocated blocks), at most
/// its size: what a sparse object's size does not say.
std::uint64_t allocated_bytes(const struct stat& st) noexcept;

/// Maps the first `bytes` bytes of `fd`, shared. The caller has checked that
/// the object is that large (`open_object`'s size).
result<mapping> map_object(int fd, std::uint64_t bytes, bool writable, const std::string& name);

/// A new object of `bytes` bytes: created exclusively, owner-only (0600
/// whatever the umask), its first `reserve_bytes` bytes' pages reserved so
/// that stores into them cannot fault for lack of space (the writer reserves
/// the rest before it uses it), and mapped read-write. A mapping of at least
/// a huge page is advised MADV_HUGEPAGE: where /dev/shm is a tmpfs mounted
/// `huge=advise`, pages faulted in through it may then be huge ones
/// (`shm_huge_on_advice`), and every process mapping them (readers too) reads
/// them with one TLB entry per 2 MiB. Elsewhere the advice changes nothing.
struct created_object {
  unique_fd fd;
  mapping map;
};
/// Errors: `already_exists` if the name is taken, `no_space`, `io_error`.
/// On failure nothing is left behind.
result<created_object> create_object(const std::string& name, std::uint64_t bytes,
                                     std::uint64_t reserve_bytes);
inline result<created_object> create_object(const std::string& name, std::uint64_t bytes) {
  return create_object(name, bytes, bytes);
}

/// Whether the tmpfs that holds POSIX shared memory (/dev/shm) gives huge
/// pages only to mappings that ask for them (mounted `huge=advise`), judged
/// from `mountinfo`, the text of /proc/self/mountinfo (the last mount on
/// /dev/shm counts). There, fallocate(2) backs a range with small pages
/// however its mappings are advised, so the writer faults pages in through
/// its advised mapping first (`allocator::reserve`). On a tmpfs mounted
/// `huge=within_size` or `huge=always`, fallocate itself gives huge pages.
bool shm_huge_on_advice(std::string_view mountinfo) noexcept;
/// `shm_huge_on_advice` of this process's mount table.
bool shm_huge_on_advice() noexcept;

/// Removes the name `name`; existing mappings and descriptors stay valid.
void unlink_object(const std::string& name) noexcept;

/// An errno value as text, with its number.
std::string errno_text(int err);

}  // namespace slither::shm::detail
