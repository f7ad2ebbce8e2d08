// The writer's private state: its tables, its allocator, its retire list.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
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
  // The slots its capacity asks for (`initial_slots`): the floor of growth.
  // A new index starts smaller if that is large (index.hpp).
  std::uint64_t initial_slots = min_index_capacity;
  // What its capacity asked for when created: `initial_slots` is lowered to
  // the index it has when /dev/shm has no room for that, until a clear or
  // reload asks again.
  std::uint64_t asked_slots = min_index_capacity;
  std::uint64_t root = null_ref;
  std::uint64_t capacity = 0;
  std::uint64_t keys = 0;
  std::uint64_t values = 0;
  std::uint64_t used = 0;  // keys + tombstones of the array at `root`
  // While the index grows (index.hpp): the array moved from, its capacity,
  // how many of its slots are moved, and how many live keys it still holds.
  std::uint64_t old = null_ref;
  std::uint64_t old_capacity = 0;
  std::uint64_t migrated = 0;
  std::uint64_t old_live = 0;
  // The array the next growth will move into, made ready (reserved and
  // zeroed) a little per write once the index is 11/16 full, or, while the
  // index is smaller than `initial_slots`, the array of that size, made
  // ready from the start (index.hpp); never published until ready.
  std::uint64_t spare = null_ref;
  std::uint64_t spare_capacity = 0;
  std::uint64_t spare_ready = 0;  // bytes of it ready, from its start
  bool published = true;          // false while a reload builds it
  // Ordered tables: the B+tree root being changed, and the one readers see.
  std::uint64_t tree_root = null_ref;
  std::uint64_t tree_keys = 0;
  std::uint64_t tree_committed = null_ref;
  std::uint64_t tree_committed_keys = 0;
  // An index an atomic put_many builds beside the published one: its blocks
  // may be shared with that one (so they retire, never free at once), but its
  // root is published only when the batch is complete.
  bool shadow = false;
  bool declared = true;  // given when the store was created (not droppable)
};

/// A B+tree slot as the writer edits it: a key and the block it references
/// or, for a leaf slot copied from a node with its value inline, that slot's
/// word (`inline_slot`) and where its record (version, value) is in that node.
/// The key is not copied: it stays in the node it came from (replaced nodes
/// are given back only when the change ends) or in the change's own keys.
struct tree_item {
  std::string_view key;
  std::uint64_t ref;
  const std::byte* record = nullptr;
};

/// A change to a B+tree: `key` now references `entry` (null: erase it).
struct tree_op {
  std::string_view key;
  std::uint64_t entry;
};

struct btree_node;

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
  // An encoded value's first bytes, which the writer wrote (the client fills
  // the rest); empty for an ndarray.
  std::vector<std::byte> prefix;
  // The pages the client backs itself (`pages::client_backs`), as a range of
  // the segment; 0 bytes when the writer reserved them.
  std::uint64_t client_at = 0;
  std::uint64_t client_bytes = 0;
};

struct slot_position {
  std::uint64_t slot;  // where the key is, or where it would be inserted
  std::uint64_t ref;   // its newest block, or null
  bool in_old;         // `slot` is in the array a growing index moves from
};

}  // namespace slither::shm::detail

namespace slither::shm {

struct SLITHER_SHM_NO_EXPORT writer::impl final : detail::fork_aware {
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
  // B+tree nodes written since the last publish (no reader can see them yet),
  // and published nodes replaced since then (retired once the new root is out).
  std::unordered_map<std::uint64_t, std::uint64_t> tree_fresh;
  std::vector<detail::block> tree_replaced;
  // Fresh nodes replaced during one tree change: given back when it ends, as
  // the nodes it writes copy inline records out of them.
  std::vector<detail::block> tree_dead;
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
  detail::entry_block* entry(std::uint64_t ref) noexcept {
    return reinterpret_cast<detail::entry_block*>(ptr(ref));
  }
  /// The key hash of a block: a full header keeps it, a compact one's is recomputed.
  std::uint64_t hash_of(const detail::entry_block* e) const noexcept {
    if (const detail::entry_header* f = detail::full_of(e)) return f->hash;
    return detail::hash_key(hash_seed, detail::key_of(e));
  }
  /// The allocation size of a block (what `allocate` gave for it).
  static std::uint64_t block_bytes_of(const detail::entry_block* e) noexcept {
    if (const detail::entry_header* f = detail::full_of(e)) return f->block_bytes;
    return detail::size_class(detail::compact_bytes(detail::compact_word(e)));
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
  /// For `compare_and_set` and `compare_and_erase` (named `op`): a set table,
  /// a valid key, and its entry at `expected` (0: absent); else the error
  /// naming the version found.
  result<void> expect_version(const detail::table_state& t, std::string_view op,
                              std::string_view key, std::uint64_t expected);

  // Allocation, with the writer's accounting of used and retired bytes.
  result<detail::block> allocate(std::uint64_t bytes);
  /// Gives back a block readers never saw.
  void release(std::uint64_t ref, std::uint64_t bytes);
  /// Puts a block readers may still see on the retire list (epoch.cpp).
  void retire(std::uint64_t ref, std::uint64_t bytes);
  /// Gives a block back: at once if readers never saw it, else through the retire list.
  void dispose(const detail::table_state& t, std::uint64_t ref, std::uint64_t bytes);
  void dispose_chain(const detail::table_state& t, std::uint64_t head);
  /// Disposes of every entry of `t`'s index and of its array(s) (index.cpp).
  void dispose_table(const detail::table_state& t);
  /// Disposes of `t`'s index array(s), not of the entries (index.cpp).
  void dispose_arrays(const detail::table_state& t);

  // Tables (writer.cpp).
  result<std::uint64_t> new_index(std::uint64_t capacity);
  void publish_root(const detail::table_state& t);
  void publish_counts(const detail::table_state& t);
  result<void> ensure_capacity(detail::table_state& t, std::uint64_t extra);
  /// The slot count of a new array for `keys` keys (at most half full).
  result<std::uint64_t> capacity_for(const detail::table_state& t, std::uint64_t keys) const;

  // The index while it grows (index.cpp; layout.hpp "Growth").
  static bool migrating(const detail::table_state& t) noexcept { return t.old != detail::null_ref; }
  /// Where `key` is (in the array moved from if it is still there), or
  /// where it would be inserted (in the current array).
  detail::slot_position find_slot(const detail::table_state& t, std::uint64_t hash,
                                  std::string_view key);
  detail::shared_u64& slot_at(const detail::table_state& t, const detail::slot_position& pos) {
    return slots(pos.in_old ? t.old : t.root)[pos.slot];
  }
  /// Makes up to `budget` more bytes of `t`'s spare array ready, choosing
  /// one first if the index is past half full.
  result<void> prepare_spare(detail::table_state& t, std::uint64_t budget);
  /// Zeroes up to `budget` more bytes of `t`'s spare array, whatever the load.
  result<void> ready_spare(detail::table_state& t, std::uint64_t budget);
  /// The slots a new index asking for `asked` gets at once
  /// (`store_options::index_bytes_at_once`).
  std::uint64_t first_slots(std::uint64_t asked) const noexcept;
  /// Whether `t`'s index is still smaller than its capacity asks: its spare
  /// is then the asked array, made ready whatever the load (index.hpp).
  static bool short_of_asked(const detail::table_state& t) noexcept {
    return t.capacity < t.initial_slots;
  }
  /// Makes up to `budget` more bytes of the asked array of `t` ready,
  /// choosing it first; once it is ready and no growth runs, moves into it.
  /// If /dev/shm has no room for it, `t` gives its asked size up: it keeps
  /// the index it has and grows as keys come (the write goes on).
  void prepare_asked(detail::table_state& t, std::uint64_t budget);
  /// `no_space` if /dev/shm lacks room for an index of `slots` slots for
  /// table `name` of `capacity` keys, besides what the asked arrays still
  /// being made ready will take. Indexes made at once need no such check.
  result<void> check_index_room(std::string_view name, std::uint64_t capacity, std::uint64_t slots);
  /// Gives `t`'s spare array back (readers never saw it).
  void drop_spare(detail::table_state& t);
  /// Publishes a new array of at least `capacity` slots (the spare if it is
  /// large enough) that `t`'s entries move into.
  result<void> start_migration(detail::table_state& t, std::uint64_t capacity);
  /// Moves up to `budget` more slots of the array `t` moves from.
  void migrate(detail::table_state& t, std::uint64_t budget);
  /// Moves slots of growing tables, and makes asked arrays ready, for about
  /// `budget` (the writer's timer).
  void migrate_for(std::chrono::microseconds budget);
  /// A new index of `capacity` slots holding every entry of `t`'s (unpublished).
  result<std::uint64_t> rehash(const detail::table_state& t, std::uint64_t capacity);
  result<detail::block> build_entry(const detail::table_state& t, std::string_view key,
                                    std::uint64_t hash, const Value& value);
  std::uint64_t link(detail::table_state& t, const detail::block& b, std::uint64_t hash,
                     std::string_view key);
  /// A bag key must have room for `appends` more values (`max_bag_values`).
  result<void> check_room(const detail::table_state& t, std::uint64_t hash, std::string_view key,
                          std::uint64_t appends);
  result<std::uint64_t> put(detail::table_state& t, std::string_view key, const Value& value);
  /// Links `built` (blocks for `entries`) into a copy of `t`'s index and
  /// publishes it with one store; gives the blocks back if it cannot.
  result<void> put_many_at_once(detail::table_state& t, std::span<const detail::block> built,
                                std::span<const std::uint64_t> hashes,
                                std::span<const std::pair<std::string, Value>> entries);

  // Ordered tables' B+tree (btree_write.cpp). `tree_apply` changes the working
  // tree of `t` (`entry` null: erase `key`) and returns whether it changed;
  // `tree_commit` publishes it, `tree_abort` returns to the published one.
  const detail::btree_node* node(std::uint64_t ref) noexcept;
  /// Whether `item` in a node of `level` carries its value inline (a small
  /// encoded value in a leaf), and if so its version and value.
  bool inline_value(unsigned level, const detail::tree_item& item, std::uint64_t& version,
                    std::span<const std::byte>& bytes) noexcept;
  /// Gives back the fresh nodes replaced by the change that ends.
  void release_dead() noexcept;
  /// What `item` takes in a node of `level`: slot, key and inline value.
  std::uint64_t item_bytes(unsigned level, const detail::tree_item& item) noexcept;
  std::uint64_t node_bytes(std::span<const detail::tree_item> items, unsigned level) noexcept;
  std::vector<detail::tree_item> node_items(std::uint64_t ref);
  void replace_node(std::uint64_t ref);
  result<std::vector<detail::tree_item>> write_nodes(unsigned level,
                                                     std::span<const detail::tree_item> items);
  /// Whether `items` would make a node of `level` that should merge with a neighbour.
  bool underfull(std::span<const detail::tree_item> items, unsigned level) noexcept;
  /// Applies `ops` (sorted, one per key) to the subtree at `ref`: if that
  /// changes it, replaces its node and puts the slots of its replacement in
  /// `out` (written below it, not yet itself), and returns true.
  result<bool> tree_update(std::uint64_t ref, std::span<const detail::tree_op> ops,
                           std::vector<detail::tree_item>& out, std::int64_t& added);
  /// Applies `ops` (sorted, one per key) to the working tree: each node they
  /// touch is copied once, however many of them it takes.
  result<bool> tree_apply(detail::table_state& t, std::span<const detail::tree_op> ops);
  /// A single change, the general way unless `tree_patch` can make it.
  result<bool> tree_apply(detail::table_state& t, std::string_view key, std::uint64_t entry);
  /// A single put that keeps every node's shape (a key's value replaced by
  /// one that takes as many bytes in its leaf: inline and of the same size,
  /// or both in entry blocks): copies each node on the path with one memcpy
  /// and patches one slot or record, without decoding the nodes into items.
  /// False (nothing done) if the change needs `tree_apply`'s general path.
  result<bool> tree_patch(detail::table_state& t, std::string_view key, std::uint64_t entry);
  /// A batch's puts (`built[i]` holds `entries[i]`), sorted; of a key given
  /// twice the last wins.
  result<bool> tree_put_many(detail::table_state& t,
                             std::span<const std::pair<std::string, Value>> entries,
                             std::span<const detail::block> built);
  void tree_commit(detail::table_state& t);
  void tree_abort(detail::table_state& t);
  /// Disposes of every node of the tree at `root` (not the entries it references).
  void dispose_tree(const detail::table_state& t, std::uint64_t root);
  /// Links a block built elsewhere (a committed reservation), making room
  /// first; releases the block if there is none.
  /// Links a new entry block, into the tree too in an ordered table; gives
  /// the block back if it cannot.
  result<std::uint64_t> link_entry(detail::table_state& t, const detail::block& b,
                                   std::uint64_t hash, std::string_view key);
  result<std::uint64_t> link_built(detail::table_state& t, const detail::block& b,
                                   std::uint64_t hash, std::string_view key);

  // Large writes in place (large_write.cpp). A block for `key` whose value
  // is `prefix` (written here) then `fill_bytes` that the client writes,
  // starting on a page boundary of the segment; an ndarray's `shape`.
  result<reservation> reserve(detail::table_state& t, std::string_view key,
                              detail::value_format format, dtype type,
                              std::span<const std::uint64_t> shape, std::vector<std::byte> prefix,
                              std::uint64_t fill_bytes, reserve_pages pages);
  /// Frees a reservation's block, which readers never saw (its client's
  /// pages included: they go back to /dev/shm whether it backed them or not).
  void drop_pending(const detail::pending_write& w);

  // Reclamation (epoch.cpp).
  /// Frees what no reader can see and, if `check_liveness` (or it is time
  /// to), clears the slots of dead readers first; then has the allocator
  /// hand back the free pages that are due (in the background).
  reclaim_report reclaim(bool check_liveness);
  reclaim_report free_retired(bool check_liveness);
  void maybe_reclaim();

  void unlink_all() noexcept;
};

}  // namespace slither::shm
