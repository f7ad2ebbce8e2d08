#include "segment.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "layout.hpp"
#include "process.hpp"
#include "slither/shm/detail/sys.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {

std::string segment_name(std::string_view ns, std::string_view store, std::uint32_t n) {
  return "/slither." + std::string(ns) + "." + std::string(store) + "." + std::to_string(n);
}

std::string registry_name(std::string_view ns, std::string_view store) {
  return "/slither." + std::string(ns) + "." + std::string(store) + ".readers";
}

namespace detail {

bool valid_name(std::string_view s) noexcept {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

std::string os_error(const bip::interprocess_exception& e) {
  return std::string(e.what()) + " (errno " + std::to_string(e.get_native_error()) + ")";
}

result<bip::mapped_region> create_segment(const std::string& name, std::uint64_t bytes) {
  bool created = false;
  try {
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write,
                                  bip::permissions(0600));
    created = true;
    const int fd = shm.get_mapping_handle().handle;
    if (::fchmod(fd, 0600) != 0) {  // whatever the umask did
      bip::shared_memory_object::remove(name.c_str());
      return fail(errc::io_error, "cannot set permissions of shared memory '" + name +
                                      "': " + std::strerror(errno));
    }
    struct statvfs fs {};
    if (sys().fstatvfs(fd, &fs) == 0) {
      const std::uint64_t avail = std::uint64_t{fs.f_bavail} * fs.f_frsize;
      if (avail < bytes) {
        bip::shared_memory_object::remove(name.c_str());
        return fail(errc::no_space, "no space for shared memory '" + name + "': it needs " +
                                        std::to_string(bytes) + " bytes, /dev/shm has " +
                                        std::to_string(avail) + " free");
      }
    }
    shm.truncate(static_cast<bip::offset_t>(bytes));
    if (const int err = sys().fallocate(fd, 0, static_cast<off_t>(bytes)); err != 0) {
      bip::shared_memory_object::remove(name.c_str());
      return fail(err == ENOSPC ? errc::no_space : errc::io_error,
                  "cannot reserve " + std::to_string(bytes) + " bytes for shared memory '" + name +
                      "': " + std::strerror(err));
    }
    return bip::mapped_region(shm, bip::read_write, 0, bytes);
  } catch (const bip::interprocess_exception& e) {
    if (created) bip::shared_memory_object::remove(name.c_str());
    return fail(
        e.get_error_code() == bip::already_exists_error ? errc::already_exists : errc::io_error,
        "cannot create shared memory '" + name + "': " + os_error(e));
  }
}

void remove_store_objects(std::string_view ns, std::string_view name) noexcept {
  for (std::uint32_t n = 0; n < max_segments; ++n) {
    bip::shared_memory_object::remove(segment_name(ns, name, n).c_str());
  }
  bip::shared_memory_object::remove(registry_name(ns, name).c_str());
}

result<void> clear_stale(const store_options& o) {
  const std::string seg0 = segment_name(o.ns, o.name, 0);
  try {
    bip::shared_memory_object shm(bip::open_only, seg0.c_str(), bip::read_only);
    bip::offset_t size = 0;
    constexpr std::uint64_t need = store_header_offset + 16;
    if (shm.get_size(size) && static_cast<std::uint64_t>(size) >= need) {
      bip::mapped_region region(shm, bip::read_only, 0, need);
      std::uint64_t ident[2];
      std::memcpy(ident, static_cast<const std::byte*>(region.get_address()) + store_header_offset,
                  sizeof(ident));
      if (process_alive(ident[0], ident[1])) {
        return fail(errc::already_exists, "store '" + o.ns + "." + o.name +
                                              "' is owned by a live writer (pid " +
                                              std::to_string(ident[0]) + ")");
      }
    }
  } catch (const bip::interprocess_exception&) {
    // No segment 0: there may still be leftovers of a writer that died while closing.
  }
  remove_store_objects(o.ns, o.name);
  return {};
}

}  // namespace detail
}  // namespace slither::shm
