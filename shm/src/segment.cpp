#include "segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "layout.hpp"
#include "slither/shm/detail/sys.hpp"

namespace slither::shm {

std::string segment_name(std::string_view ns, std::string_view store, std::uint32_t n) {
  return "/slither." + std::string(ns) + "." + std::string(store) + "." + std::to_string(n);
}

std::string registry_name(std::string_view ns, std::string_view store) {
  return "/slither." + std::string(ns) + "." + std::string(store) + ".readers";
}

std::string lock_name(std::string_view ns, std::string_view store) {
  return "/slither." + std::string(ns) + "." + std::string(store) + ".lock";
}

namespace detail {

bool valid_name(std::string_view s) noexcept {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

std::string errno_text(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

void unique_fd::close() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);  // even on EINTR the descriptor is gone (Linux)
    fd_ = -1;
  }
}

void mapping::reset() noexcept {
  if (data_ != nullptr) {
    ::munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }
}

result<opened_object> open_object(const std::string& name, bool writable, uid_t owner) {
  // glibc's shm_open adds O_NOFOLLOW and O_CLOEXEC itself; they are spelled
  // out because both matter here (no symlinks in /dev/shm, no descriptor
  // (and no OFD lock) surviving an exec).
  const int flags = (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC;
  unique_fd fd(::shm_open(name.c_str(), flags, 0));
  if (!fd) {
    const int err = errno;
    if (err == ENOENT) return fail(errc::not_found, "no shared memory '" + name + "'");
    return fail(errc::io_error, "cannot open shared memory '" + name + "': " + errno_text(err));
  }
  struct stat st {};
  if (sys().fstat(fd.get(), &st) != 0) {
    return fail(errc::io_error, "cannot stat shared memory '" + name + "': " + errno_text(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return fail(errc::io_error, "shared memory '" + name + "' is not a regular object");
  }
  if (st.st_uid != owner) {
    return fail(errc::io_error, "shared memory '" + name + "' is owned by uid " +
                                    std::to_string(st.st_uid) + ", not " + std::to_string(owner) +
                                    ": refusing to use it");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(errc::io_error, "shared memory '" + name + "' has mode " + mode +
                                    ", writable by others: refusing to use it");
  }
  return opened_object{std::move(fd), static_cast<std::uint64_t>(st.st_size), allocated_bytes(st),
                       st.st_dev, st.st_ino};
}

std::uint64_t allocated_bytes(const struct stat& st) noexcept {
  // st_blocks counts 512-byte units whatever the file system's block size.
  return std::min(static_cast<std::uint64_t>(st.st_blocks) * 512,
                  static_cast<std::uint64_t>(st.st_size));
}

result<mapping> map_object(int fd, std::uint64_t bytes, bool writable, const std::string& name) {
  if (bytes == 0) return fail(errc::io_error, "cannot map shared memory '" + name + "': empty");
  void* p =
      ::mmap(nullptr, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    return fail(errc::io_error, "cannot map " + std::to_string(bytes) +
                                    " bytes of shared memory '" + name + "': " + errno_text(errno));
  }
  return mapping(static_cast<std::byte*>(p), bytes);
}

bool remap_in_place(std::byte* addr, std::uint64_t bytes, int fd, bool writable) noexcept {
  void* p = ::mmap(addr, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                   MAP_SHARED | MAP_FIXED, fd, 0);
  return p == addr;
}

bool unmap_in_place(std::byte* addr, std::uint64_t bytes) noexcept {
  void* p = ::mmap(addr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                   -1, 0);
  return p == addr;
}

result<created_object> create_object(const std::string& name, std::uint64_t bytes,
                                     std::uint64_t reserve_bytes) {
  unique_fd fd(::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    const int err = errno;
    return fail(err == EEXIST ? errc::already_exists : errc::io_error,
                "cannot create shared memory '" + name + "': " + errno_text(err));
  }
  auto abandon = [&](error_info e) {
    unlink_object(name);
    return e;
  };
  if (::fchmod(fd.get(), 0600) != 0) {  // whatever the umask did
    return abandon(fail(errc::io_error, "cannot set permissions of shared memory '" + name +
                                            "': " + errno_text(errno)));
  }
  struct statvfs fs {};
  if (sys().fstatvfs(fd.get(), &fs) == 0) {
    const std::uint64_t avail = std::uint64_t{fs.f_bavail} * fs.f_frsize;
    if (avail < reserve_bytes) {
      return abandon(fail(errc::no_space, "no space for shared memory '" + name + "': it needs " +
                                              std::to_string(reserve_bytes) +
                                              " bytes, /dev/shm has " + std::to_string(avail) +
                                              " free"));
    }
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    return abandon(fail(errno == ENOSPC ? errc::no_space : errc::io_error,
                        "cannot size shared memory '" + name + "' to " + std::to_string(bytes) +
                            " bytes: " + errno_text(errno)));
  }
  if (const int err = sys().fallocate(fd.get(), 0, static_cast<off_t>(reserve_bytes)); err != 0) {
    return abandon(fail(err == ENOSPC ? errc::no_space : errc::io_error,
                        "cannot reserve " + std::to_string(reserve_bytes) +
                            " bytes for shared memory '" + name + "': " + std::strerror(err)));
  }
  auto map = map_object(fd.get(), bytes, true, name);
  if (!map) return abandon(std::move(map).error());
  // Advice only: EINVAL without transparent huge pages changes nothing.
  if (bytes >= huge_page_bytes) ::madvise(map->data(), bytes, MADV_HUGEPAGE);
  return created_object{std::move(fd), std::move(*map)};
}

bool shm_huge_on_advice(std::string_view mountinfo) noexcept {
  // A line: "id parent dev root mountpoint options [tags] - fstype source superoptions".
  bool advise = false;
  while (!mountinfo.empty()) {
    const std::size_t eol = std::min(mountinfo.find('\n'), mountinfo.size());
    const std::string_view line = mountinfo.substr(0, eol);
    mountinfo.remove_prefix(std::min(eol + 1, mountinfo.size()));
    std::string_view rest = line;
    std::string_view field;
    for (int i = 0; i < 5 && !rest.empty(); ++i) {
      const std::size_t sp = std::min(rest.find(' '), rest.size());
      field = rest.substr(0, sp);
      rest.remove_prefix(std::min(sp + 1, rest.size()));
    }
    if (field != "/dev/shm") continue;
    const std::size_t dash = rest.find(" - ");
    if (dash == std::string_view::npos) continue;
    std::string_view tail = rest.substr(dash + 3);  // fstype source superoptions
    for (int i = 0; i < 2; ++i) tail.remove_prefix(std::min(tail.find(' ') + 1, tail.size()));
    advise = false;
    while (!tail.empty()) {
      const std::size_t comma = std::min(tail.find(','), tail.size());
      if (tail.substr(0, comma) == "huge=advise") advise = true;
      tail.remove_prefix(std::min(comma + 1, tail.size()));
    }
  }
  return advise;
}

bool shm_huge_on_advice() noexcept {
  try {
    std::ifstream in("/proc/self/mountinfo");
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    return shm_huge_on_advice(text);
  } catch (const std::exception&) {
    return false;
  }
}

void unlink_object(const std::string& name) noexcept {
  ::shm_unlink(name.c_str());
}

}  // namespace detail
}  // namespace slither::shm
