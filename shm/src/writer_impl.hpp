// The writer's private state: its tables, its allocator, its retire list.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "allocator.hpp"
#include "block.hpp"
#include "layout.hpp"
#include "process.hpp"
#include "segment.hpp"
#include "slither/core/codec.hpp"
#include "slither/shm/store.hpp"
#include "writer_lock.hpp"

namespace slither::shm::detail {

/// The writer's private view of one table (or of the table a reload builds).
struct table_state {
  std::uint32_t index = 0;  // in the directory
  std::string name;
  table_kind kind = table_kind::set;
  std::uint64_t initial_slots = min_index_capacity;
  std::uint64_t root = null_ref;
  std::uint64_t capacity = 0;
  std::uint64_t keys = 0;
  std::uint64_t values = 0;
  std::uint64_t used = 0;  // keys + tombstones
  bool published = true;   // false while a reload builds it
};

struct retired_block {
  std::uint64_t ref;
  std::uint64_t bytes;
  std::uint64_t epoch;
};

/// A block reserved for a value its client writes in place (large_write.cpp).
struct pending_write {
  std::uint32_t table;  // index in `tables`
  std::string key;
  std::uint64_t hash;
  block b;
  std::uint64_t value_bytes;
};

struct slot_position {
  std::uint64_t slot;  // where the key is, or where it would be inserted
  std::uint64_t ref;   // its newest block, or null
};

}  // namespace slither::shm::detail

namespace slither::shm {

struct writer::impl final : detail::fork_aware {
  store_options options;
  std::string label;
  std::uint64_t incarnation = 0;
  std::uint64_t hash_seed = 0;
  detail::writer_lock lock;
  std::vector<std::string> created;  // names of the objects this writer made: all it unlinks
  detail::allocator alloc;
  detail::unique_fd registry_fd;  // for testing readers' locks; holds none itself
  detail::mapping registry;
  detail::store_header* header = nullptr;
  detail::reader_slot* reader_slots = nullptr;
  std::vector<detail::table_state> tables;
  std::vector<detail::retired_block> retired;
  std::unordered_map<std::uint64_t, detail::pending_write> pending;  // by reservation id
  std::uint64_t last_reservation = 0;
  std::vector<std::uint64_t> held;  // scratch for reclaim
  std::uint64_t epoch = 1;
  std::uint64_t last_version = 0;  // store-wide: a version is never given twice
  std::uint64_t bytes_used = 0;
  std::uint64_t bytes_retired = 0;
  std::uint64_t bytes_pinned = 0;      // what the last reclaim left on the retire list
  std::uint64_t oldest_epoch_pid = 0;  // the reader whose epoch was oldest then
  std::uint64_t retires_since_reclaim = 0;
  std::uint64_t retired_bytes_since_reclaim = 0;
  std::chrono::steady_clock::time_point last_liveness_check{};
  buffer scratch;
  std::optional<reader> self;
  std::uint64_t generation = 0;  // detail::fork_generation() of the creating process
  bool closed = false;

  impl() = default;
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  ~impl() { detail::unregister_fork_aware(this); }

  void before_fork() noexcept override {}
  void after_fork_parent() noexcept override {}
  void after_fork_child() noexcept override;  // fork.cpp

  /// False in a child process that inherited this writer through fork().
  bool owned() const noexcept { return generation == detail::fork_generation(); }

  std::byte* ptr(std::uint64_t ref) noexcept { return alloc.ptr(ref); }
  detail::entry_header* entry(std::uint64_t ref) noexcept {
    return reinterpret_cast<detail::entry_header*>(ptr(ref));
  }
  detail::index_header* index(std::uint64_t ref) noexcept {
    return reinterpret_cast<detail::index_header*>(ptr(ref));
  }
  detail::shared_u64* slots(std::uint64_t ref) noexcept {
    return reinterpret_cast<detail::shared_u64*>(index(ref) + 1);
  }

  error_info closed_error() const;
  result<detail::table_state*> table(std::string_view name);
  result<void> check_key(const detail::table_state& t, std::string_view key) const;

  // Allocation, with the writer's accounting of used and retired bytes.
  result<detail::block> allocate(std::uint64_t bytes);
  /// Gives back a block readers never saw.
  void release(std::uint64_t ref, std::uint64_t bytes);
  /// Puts a block readers may still see on the retire list (epoch.cpp).
  void retire(std::uint64_t ref, std::uint64_t bytes);
  /// Gives a block back: at once if readers never saw it, else through the retire list.
  void dispose(const detail::table_state& t, std::uint64_t ref, std::uint64_t bytes);
  void dispose_chain(const detail::table_state& t, std::uint64_t head);
  /// Disposes of every entry of the index `root` and of the index itself.
  void dispose_table(const detail::table_state& t, std::uint64_t root, std::uint64_t capacity);

  // Tables (writer.cpp).
  result<std::uint64_t> new_index(std::uint64_t capacity);
  void publish_root(const detail::table_state& t);
  void publish_counts(const detail::table_state& t);
  result<void> ensure_capacity(detail::table_state& t, std::uint64_t extra);
  detail::slot_position find_slot(const detail::table_state& t, std::uint64_t hash,
                                  std::string_view key);
  result<detail::block> build_entry(const detail::table_state& t, std::string_view key,
                                    std::uint64_t hash, const Value& value);
  std::uint64_t link(detail::table_state& t, const detail::block& b, std::uint64_t hash,
                     std::string_view key);
  result<std::uint64_t> put(detail::table_state& t, std::string_view key, const Value& value);
  /// Links a block built elsewhere (a committed reservation), making room
  /// first; releases the block if there is none.
  result<std::uint64_t> link_built(detail::table_state& t, const detail::block& b,
                                   std::uint64_t hash, std::string_view key);

  // Reclamation (epoch.cpp).
  /// Frees what no reader can see and, if `check_liveness` (or it is time
  /// to), clears the slots of dead readers first.
  reclaim_report reclaim(bool check_liveness);
  void maybe_reclaim();

  void unlink_all() noexcept;
};

}  // namespace slither::shm
