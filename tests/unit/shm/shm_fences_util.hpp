// Helpers for the tests of how readers announce their epochs (epoch.hpp):
// what the kernel offers, the seam that makes membarrier fail, and a look at
// a store's fence mode and its readers' lanes.
#pragma once

#include <fcntl.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "layout.hpp"
#include "slither/shm/detail/sys.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::testing {

#if defined(__SANITIZE_THREAD__)
inline constexpr bool tsan_build = true;
#else
inline constexpr bool tsan_build = false;
#endif

/// Whether this kernel lets a writer use membarrier for its readers.
inline bool kernel_offers_membarrier() {
  const long mask = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  return mask > 0 && (mask & MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0 &&
         (mask & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0;
}

/// The fence mode a store created here and now should have.
inline detail::fence_mode expected_fences() {
  return kernel_offers_membarrier() && !tsan_build ? detail::fence_mode::membarrier
                                                   : detail::fence_mode::full;
}

/// A membarrier that always fails, for the seam.
inline int failing_membarrier(int, unsigned) {
  errno = ENOSYS;
  return -1;
}

/// Puts the seam's calls back as they were when it was made.
struct sys_restore {
  detail::sys_calls saved = detail::sys();
  sys_restore() = default;
  sys_restore(const sys_restore&) = delete;
  sys_restore& operator=(const sys_restore&) = delete;
  ~sys_restore() { detail::sys() = saved; }
};

/// A read-only mapping of `bytes` bytes of the shared-memory object `name`.
class mapped {
 public:
  mapped(const std::string& name, std::size_t bytes) : bytes_(bytes) {
    const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
    if (fd < 0) throw std::runtime_error("cannot open " + name);
    p_ = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p_ == MAP_FAILED) throw std::runtime_error("cannot map " + name);
  }
  ~mapped() { ::munmap(p_, bytes_); }
  mapped(const mapped&) = delete;
  mapped& operator=(const mapped&) = delete;
  const std::byte* data() const { return static_cast<const std::byte*>(p_); }

 private:
  void* p_;
  std::size_t bytes_;
};

/// The fence mode in the header of the store `o` names.
inline std::uint64_t fences_of(const store_options& o) {
  mapped seg0(segment_name(o.ns, o.name, 0), detail::segment0_data_start);
  return reinterpret_cast<const detail::store_header*>(seg0.data() + detail::store_header_offset)
      ->fences;
}

}  // namespace slither::shm::testing
