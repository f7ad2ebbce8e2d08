// The shared-memory Store: named tables in POSIX shared memory, written by one
// process (the `writer`) and read lock-free, without copies, by any process
// (`reader`).
//
// Caveats
// - fork(): a child keeps using what it inherited. Before the fork, each of
//   the parent's readers that holds views (or is inside a read on the forking
//   thread) claims a registry slot for the child and copies its holds into
//   it, so the child's views stay valid whatever the parent does next; the
//   child's inherited readers read through that slot (or, if they held
//   nothing, through one they claim on their first read). If no slot can be
//   had (registry full, no file descriptors), parent and child share the
//   parent's slot instead: the child's views stay valid, reads through its
//   inherited readers fail with `invalid_argument` (attach again), and what
//   the parent held at the fork stays held until both processes are gone.
//   This runs from pthread_atfork handlers: a child made by a raw clone() or
//   _Fork() gets none of it.
// - A process may read with up to 8 threads at once per reader: the first 4
//   threads to read through it keep an epoch lane each until they exit;
//   others take one of the remaining 4 per read and wait (yielding) while
//   those are busy. A read nested in another read of the same reader on the
//   same thread (a `for_each` callback calling `get`) shares that thread's lane.
// - Where the kernel offers membarrier(2) (Linux 4.16+), a writer issues
//   MEMBARRIER_CMD_GLOBAL_EXPEDITED before each reclaim's scan, and each
//   process that attaches a reader registers for it
//   (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, process-wide, until exec), so
//   that a read announces its epoch with a plain store: the barrier
//   interrupts the CPUs running threads of registered processes, a few
//   microseconds per reclaim. Elsewhere reads announce with a full fence.
// - A view held for long holds only its block; but a reader process holding
//   more than 120 views at once pins, for the extra ones, the epoch they were
//   taken in, which delays freeing of blocks retired after that until they go.
// - Liveness is a lock the kernel drops when a process exits, is killed or
//   exec()s, never a guess: a reader is declared dead only once its lock is
//   gone (not when the writer cannot tell), and its slot, epochs and holds
//   are then cleared by the writer's next `reclaim()` (call it on a timer:
//   reads alone never trigger one) or taken over by a new reader. A process
//   that closes file descriptors it did not open (a daemon closing them all)
//   drops its readers' locks, and their views are no longer protected.
// - Every object a reader maps is checked first: owned by the expected user
//   (`attach`'s `owner`, by default the effective uid), not writable by group
//   or others, and at least as large as its header says. A store is as
//   private as its owner's account: any process of that user can change it,
//   and readers then report errors, but they do not crash.
// - All writes go through the one `writer`, which holds the store's lock
//   object for its whole life; a second writer of the same store name gets
//   `errc::already_exists`. A writer inherited by a fork() child refuses
//   writes there and does not keep the parent's lock; closing or destroying
//   it in the child leaves the parent's store in place.
// - A reader keeps one file descriptor open (its registry), a writer two
//   (its lock and its registry) plus its own reader's.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "slither/core/error.hpp"
#include "slither/core/function_ref.hpp"
#include "slither/core/value.hpp"
#include "slither/shm/export.hpp"

namespace slither::shm {

/// How a table maps keys to values.
enum class table_kind : std::uint8_t {
  set = 1,  ///< one value per key
  bag = 2,  ///< several values per key, in insertion order
  /// One value per key, like `set`, with keys also kept sorted bytewise, so
  /// `range`, `first`, `last` and `keys` read them in order.
  ordered_set = 3,
};

/// Stable lower-case name of a table kind ("set", "bag", "ordered_set").
SLITHER_SHM_EXPORT std::string_view to_string(table_kind kind) noexcept;

/// The table kind named `name` (as `to_string` spells it), or nullopt.
SLITHER_SHM_EXPORT std::optional<table_kind> parse_table_kind(std::string_view name) noexcept;

/// How `writer::put_many` makes a batch visible to readers.
enum class batch_publish : std::uint8_t {
  /// Entry by entry: a reader may see part of the batch until the call returns.
  per_entry,
  /// As one switch: the batch goes into a copy of the table's index, which is
  /// then published with one store, so a reader sees none or all of it. Costs
  /// a pass over the index (O(table size)) on top of the entries. An ordered
  /// table switches twice in a row, its B+tree (what scans, `range`, `first`,
  /// `last` and `keys` read) then its index (what `get`, `contains` and
  /// `size` read): each read sees none or all of the batch, but a scan and a
  /// get made in the instant between the two stores may disagree.
  at_once,
};

/// Declares one table of a store.
struct SLITHER_SHM_EXPORT table_spec {
  std::string name;
  table_kind kind = table_kind::set;
  /// Keys to make room for, 0..2^32 (`invalid_argument` past 2^32): the
  /// table's index gets twice as many slots (rounded up to a power of two,
  /// and at least 16: 0, like any capacity up to 8, asks for that smallest
  /// index), so it holds this many keys without growing, and grows past them
  /// as needed. (The broker's and Python's `create_table` take 1..2^32.) An index of up to
  /// `store_options::index_bytes_at_once` (1 MiB: 2^17 slots, a capacity up to 65536) is made at
  /// once. A larger one is not: the table starts with that many slots, usable at once, and the
  /// writer makes the asked index ready in slices between writes (4 KiB per
  /// insert, and `grow`'s steps: each `reclaim`'s, and a broker's timer),
  /// then moves the table into it as in a growth. So creating a table never
  /// stalls the writer, whatever its capacity: the asked index is reached
  /// later (a broker made 1 GiB ready in 3.5 s), and keys that come faster
  /// grow the table as usual meanwhile. Creating fails with `no_space`
  /// (naming the bytes) if /dev/shm has no room for the asked index besides
  /// those still being made ready; should it fill up later, the table keeps
  /// the index it has and grows as keys come. `clear` and `reload` start
  /// again the same way.
  std::uint64_t initial_capacity = 1024;
};

/// Where a store lives and how large things may be.
struct SLITHER_SHM_EXPORT store_options {
  /// Namespace: keeps two brokers (or two test runs) apart. [A-Za-z0-9_-]+.
  std::string ns = "default";
  /// Store name. [A-Za-z0-9_-]+.
  std::string name;
  /// Size of the first data segment. Later ones hold what the write that
  /// needs them asks for, and at least half of what the store already has
  /// (at most 1 GiB); their unused pages are not reserved in /dev/shm.
  std::uint64_t initial_segment_bytes = std::uint64_t{4} << 20;
  std::uint64_t max_key_bytes = 4096;
  std::uint64_t max_value_bytes = std::uint64_t{1} << 32;
  /// Reader registry capacity (processes attached at once), 1..`max_readers_limit`.
  /// A slot takes about 1 KiB; the writer's reclaim reads one word of a free
  /// slot and scans only attached readers' slots in full.
  std::uint32_t max_readers = 256;
  /// The largest index the writer makes at once for a table it creates,
  /// clears or reloads, `min_index_bytes_at_once`..`max_index_bytes_at_once`
  /// (128 bytes..512 MiB; rounded down to a power of two
  /// of 8-byte slots). A capacity that asks for more is reached in slices
  /// (`table_spec::initial_capacity`). Reserving and zeroing 1 MiB takes
  /// well under a millisecond.
  std::uint64_t index_bytes_at_once = std::uint64_t{1} << 20;
};

/// The largest `store_options::max_readers`.
inline constexpr std::uint32_t max_readers_limit = 65536;
/// The range of `store_options::index_bytes_at_once`: a store's smallest
/// index (16 slots), and the largest that a 1 GiB segment holds.
inline constexpr std::uint64_t min_index_bytes_at_once = 128;
inline constexpr std::uint64_t max_index_bytes_at_once = std::uint64_t{1} << 29;

/// What one `writer::reclaim` did.
struct SLITHER_SHM_EXPORT reclaim_report {
  std::uint64_t bytes_freed = 0;      ///< retired bytes made reusable
  std::uint32_t readers_cleared = 0;  ///< registry slots of dead readers freed
};

/// Figures a writer reports about its store. Every byte of the data
/// segments is live (`bytes_used`), garbage (`bytes_retired`), free
/// (`bytes_free`) or headers.
struct SLITHER_SHM_EXPORT store_stats {
  std::uint64_t entries = 0;        ///< live entries over all tables
  std::uint64_t bytes_used = 0;     ///< live: bytes in entry blocks and indexes readers can reach
  std::uint64_t bytes_retired = 0;  ///< garbage: replaced/deleted bytes not yet freed
  std::uint64_t bytes_free = 0;     ///< free space in the segments, reusable by any size
  /// Of `bytes_retired`, what the last `reclaim` could not free because a
  /// reader still held it (a view's hold, or a read or views in an old epoch).
  std::uint64_t bytes_pinned = 0;
  /// The pid of the reader whose epoch was the oldest still announced at the
  /// last `reclaim` (what pins garbage retired since); 0 if none was.
  std::uint64_t oldest_epoch_pid = 0;
  std::uint64_t segments = 0;       ///< data segments
  std::uint64_t segment_bytes = 0;  ///< total size of the data segments
  /// Bytes of the segments backed by memory (/dev/shm use): pages of large
  /// free runs are handed back to the system (in the background, a large
  /// freed block's after a couple of seconds; see `writer::trim`), so this
  /// follows live bytes.
  std::uint64_t bytes_resident = 0;
  std::uint64_t readers = 0;  ///< registry slots owned (dead readers until swept)
};

/// Version of the shared-memory layout this build writes and reads. A reader
/// refuses (`errc::layout_mismatch`) a store written with another version.
// 2: codec version 2 values. 3: reader liveness by OFD locks (owner words in
// the registry), the writer's lock object, a per-store hash seed. 4: array
// blocks may hold the dtypes bool, int8, int16, uint16, uint32, uint64 and
// float16, which a version-3 reader would refuse only when it met one. 5:
// ordered tables (a B+tree root per table after the table directory). 6:
// tables created and dropped at run time (an atomic, growing table directory).
// 7: bag blocks reference their chain's oldest block (`get` in O(1)). 8: an
// index grows incrementally (`old` and `migrated` in its header). 9: B+tree
// leaves carry small values inline (a scan reads leaves only). 10: compact
// entry blocks (an 8-byte header), 8-byte block granularity, 10-bit slot tags.
inline constexpr std::uint64_t layout_version = 10;

/// Shared-memory object name of segment `n` of a store: "/slither.<ns>.<store>.<n>".
SLITHER_SHM_EXPORT std::string segment_name(std::string_view ns, std::string_view store,
                                            std::uint32_t n);
/// Name of a store's reader-registry segment: "/slither.<ns>.<store>.readers".
SLITHER_SHM_EXPORT std::string registry_name(std::string_view ns, std::string_view store);
/// Name of a store's lock object, which its writer holds locked while it
/// lives: "/slither.<ns>.<store>.lock".
SLITHER_SHM_EXPORT std::string lock_name(std::string_view ns, std::string_view store);

class reader;

/// A value seen in place in shared memory. While a `view` (or any copy of it,
/// or any ndarray obtained from it) lives, its block is held and never freed
/// or reused by the writer; holding it does not stall reclamation of anything else.
///
/// Thread safety: a view is immutable. Its const members may be called from
/// several threads at once, and copies of it may be made, used and destroyed
/// on any threads (the hold is released, with an atomic store, by whichever
/// copy goes last). It shares the reader's mapping, so it may outlive the
/// `reader` that made it.
class SLITHER_SHM_EXPORT view {
 public:
  /// The stored encoding (`slither::encode` form) for non-array values;
  /// for ndarrays, the raw element bytes.
  std::span<const std::byte> bytes() const noexcept;
  /// True if the value is an ndarray stored raw.
  bool is_ndarray() const noexcept;
  /// The value as an ndarray pointing into shared memory (read-only,
  /// 64-byte aligned); throws `slither::error(invalid_argument)` if not an ndarray.
  ndarray array() const;
  /// Decodes a copy of the value.
  Value value() const;
  /// The entry's version: taken from a store-wide counter on every write of
  /// its key, so a version is never seen twice in a store, even for a key
  /// erased and put again, or a table cleared or reloaded.
  std::uint64_t version() const noexcept;

  struct state;  ///< implementation detail
  explicit view(std::shared_ptr<const state> s) noexcept : s_(std::move(s)) {}

 private:
  std::shared_ptr<const state> s_;
};

/// Read access to a store from any process: attach by name, map read-only.
/// Reads are lock-free and never wait for the writer. A reader may be used
/// by several threads of its process at once.
///
/// A moved-from reader holds nothing: its reads fail with
/// `errc::invalid_argument` (saying it was moved from), `tables()` throws
/// that as `slither::error`, `store_closed()` is true and `incarnation()` 0;
/// assigning another reader to it makes it usable again.
class SLITHER_SHM_EXPORT reader {
 public:
  /// Attaches to the store `<ns>.<name>`, whose objects must belong to `owner`
  /// (by default this process's effective uid). Errors: `not_found` (no such
  /// store, or one still being created), `layout_mismatch` (another build's
  /// layout, or a corrupt header), `writer_gone` (its writer died or closed
  /// it), `limit_exceeded` (the reader registry is full), `io_error` (an
  /// object of another owner, writable by others, or unreadable).
  static result<reader> attach(std::string_view ns, std::string_view name,
                               std::optional<uid_t> owner = std::nullopt);

  reader(reader&&) noexcept;
  reader& operator=(reader&&) noexcept;
  ~reader();

  /// Names of the store's tables.
  std::vector<std::string> tables() const;
  /// The random number its writer chose when it created the store: a store
  /// re-created under the same name (a restarted broker) has another one.
  std::uint64_t incarnation() const noexcept;
  /// True once the store's writer has closed it (a broker that stopped, or one
  /// that replaced a dead one's store of this name). Reads still work, over
  /// the old mapping, but see no further writes: attach again. One atomic load.
  bool store_closed() const noexcept;
  /// A decoded copy of the value under `key` (for a bag, the first value);
  /// nullopt if absent. Errors: `not_found` for an unknown table.
  result<std::optional<Value>> get(std::string_view table, std::string_view key) const;
  /// Decoded copies of the values under `keys` (for a bag, each key's first
  /// value; nullopt where absent), read in one epoch through one index: a
  /// `reload` or an atomic `put_many` is seen whole or not at all. The same
  /// values as `get` key by key, and, in a table too large for the CPU's
  /// caches, several times faster per key: the lookups of a few keys at a
  /// time overlap their memory misses, which one `get` after another cannot.
  /// Errors: `not_found` for an unknown table; a damaged block (as `get`
  /// reports it) fails the whole batch.
  result<std::vector<std::optional<Value>>> get_many(std::string_view table,
                                                     std::span<const std::string_view> keys) const;
  struct scanned;  // below, with the scans
  /// What the visiting `get_many` calls for the key `keys[i]`: `entry` is its
  /// first value in place (valid only during the call, no hold taken; an
  /// ndarray's shape and size are checked), or null if the key is absent.
  using many_callback = function_ref<bool(std::size_t i, const scanned* entry)>;
  /// `get_many` in place: calls `fn(i, entry)` for each key, in order, in one
  /// epoch, without decoding or copying (the Python binding builds its
  /// objects straight from the encodings); return false from `fn` to stop.
  /// `fn` should be short and must not throw: the batch holds this reader's
  /// epoch throughout. A damaged block ends the batch with its error, after
  /// the keys before it were visited.
  result<void> get_many(std::string_view table, std::span<const std::string_view> keys,
                        many_callback fn) const;
  /// All values under `key` in a bag (one or none for a set).
  result<std::vector<Value>> get_all(std::string_view table, std::string_view key) const;
  /// A zero-copy view of the value under `key`; nullopt if absent.
  result<std::optional<view>> get_view(std::string_view table, std::string_view key) const;
  /// What `peek` found under a key.
  enum class peeked : std::uint8_t {
    absent,      ///< no such key
    visited,     ///< `fn` was called with the value's encoding
    is_ndarray,  ///< an ndarray (stored raw, not encoded): use `get` or `get_view`
  };
  /// Calls `fn(encoding)` with the stored `slither::encode` bytes of the value
  /// under `key` (the first in a bag), in place and without taking a hold: the
  /// span is valid only during the call, and `fn` should be short and must not
  /// throw. The fastest read for callers that convert the encoding themselves
  /// (the Python binding builds `bytes`/`str` straight from it).
  result<peeked> peek(std::string_view table, std::string_view key,
                      function_ref<void(std::span<const std::byte>)> fn) const;
  /// The number of `table` in this reader's store (its position in
  /// `tables()`), for the reads that take a table by number: a caller that
  /// reads one table often looks its name up once. nullopt if unknown.
  std::optional<std::uint32_t> table_number(std::string_view table) const noexcept;
  /// The kind of `table` (a client picks how to act on it: a bag's key has
  /// no one version to compare). Errors: `not_found` for an unknown table.
  result<table_kind> kind(std::string_view table) const;
  /// What the numbered `peek` calls: `context` is the caller's, `encoding` as in `peek`.
  using peek_callback = void (*)(void* context, std::span<const std::byte> encoding) noexcept;
  /// `peek` of the table numbered `table` (`table_number`), with a plain
  /// callback: the Python binding's `get`, where every nanosecond shows.
  /// Errors: `not_found` for a number past the last table, `writer_gone`
  /// (nothing read) if the store was closed (`store_closed()`), so that a
  /// caller need not ask before every read.
  result<peeked> peek(std::uint32_t table, std::string_view key, peek_callback fn,
                      void* context) const;
  /// Whether `key` is present.
  result<bool> contains(std::string_view table, std::string_view key) const;
  /// Number of entries (for a bag, of values).
  result<std::size_t> size(std::string_view table) const;
  /// Number of keys (for a bag, of distinct keys; equal to `size` in other kinds):
  /// what a mapping's length is. Errors: `not_found` for an unknown table.
  result<std::size_t> key_count(std::string_view table) const;
  /// Calls `fn(key, view)` for every entry; every entry present for the whole
  /// iteration is seen exactly once. Return false from `fn` to stop early.
  /// The iteration holds this reader's epoch throughout: a slow `fn` delays
  /// the freeing of blocks the writer retires meanwhile.
  result<void> for_each(std::string_view table,
                        function_ref<bool(std::string_view, const view&)> fn) const;
  /// Keys that start with `prefix` (all keys for an empty prefix); sorted
  /// bytewise in an ordered table, in no particular order in others.
  result<std::vector<std::string>> keys(std::string_view table, std::string_view prefix = {}) const;

  // Ordered tables (`table_kind::ordered_set`). Each call reads one snapshot
  // of the table: the keys it returns were all present together at one
  // moment, sorted bytewise. On a table of another kind they fail with
  // `invalid_argument` naming the table and its kind.

  /// The part of an ordered table a scan reads: keys in [lo, hi) (an empty
  /// bound is no bound), at most `limit` of them, from the largest if `reverse`.
  struct key_range {
    std::string_view lo;
    std::string_view hi;
    std::size_t limit = SIZE_MAX;
    bool reverse = false;
  };
  /// An entry met by `scan` (or `get_many`), in place: valid only during the callback.
  struct scanned {
    std::string_view key;
    /// The stored `slither::encode` bytes; for an ndarray, its raw elements.
    std::span<const std::byte> bytes;
    bool is_ndarray = false;
    std::uint64_t version = 0;
    /// A decoded copy of the value (ndarrays included). Throws `slither::error` if corrupt.
    Value value() const;
    const void* entry = nullptr;  ///< implementation detail (null for a value read from its leaf)
  };
  /// Calls `fn` for each entry of `range` in order, in place and without
  /// taking holds (the fastest scan); return false from `fn` to stop. `fn`
  /// must not throw; the scan holds this reader's epoch throughout.
  result<void> scan(std::string_view table, const key_range& range,
                    function_ref<bool(const scanned&)> fn) const;
  /// Decoded copies of the entries with keys in [lo, hi) (empty = unbounded),
  /// at most `limit`, in ascending order (descending if `reverse`).
  result<std::vector<std::pair<std::string, Value>>> range(std::string_view table,
                                                           std::string_view lo = {},
                                                           std::string_view hi = {},
                                                           std::size_t limit = SIZE_MAX,
                                                           bool reverse = false) const;
  /// The entry with the smallest key; nullopt if the table is empty.
  result<std::optional<std::pair<std::string, Value>>> first(std::string_view table) const;
  /// The entry with the largest key; nullopt if the table is empty.
  result<std::optional<std::pair<std::string, Value>>> last(std::string_view table) const;

  struct impl;  ///< implementation detail

 private:
  explicit reader(std::unique_ptr<impl> p) noexcept;
  std::unique_ptr<impl> p_;
  friend class writer;
};

/// Fills a table during `writer::reload`; the new contents become visible at once.
class SLITHER_SHM_EXPORT loader {
 public:
  virtual ~loader() = default;
  virtual result<void> put(std::string_view key, const Value& value) = 0;
};

/// Who backs the pages a client fills for a large write in place with memory
/// (allocates and zeroes them: about 0.4 ms of kernel time per MiB).
enum class reserve_pages : std::uint8_t {
  /// The writer reserves them (fallocate) before `reserve` returns: the
  /// client may write through a plain mapping.
  writer_reserves,
  /// The client does, as it faults them in: it must populate its mapping
  /// with `madvise(MADV_POPULATE_WRITE)` (Linux 5.14) before it writes, which
  /// fails cleanly where /dev/shm is full instead of raising SIGBUS on a
  /// store. The cost then lands on the process that copies, as in a copy
  /// into fresh memory, not on the writer's thread; `commit` reserves any
  /// page the client left a hole. Asked for, it is an offer: where every
  /// page is backed already (a freed value's, reused by one of its size),
  /// `reserve` answers `writer_reserves`, and the client has nothing to
  /// populate.
  client_backs,
};

/// A block reserved for a large ndarray or bytes value that a client writes
/// in place (`writer::reserve`, `writer::reserve_bytes`), then publishes with
/// `writer::commit`.
struct SLITHER_SHM_EXPORT reservation {
  std::uint64_t id = 0;         ///< names the reservation to `commit` and `abandon`
  std::string object;           ///< shared-memory object holding the block ("/slither.<ns>...")
  std::uint64_t offset = 0;     ///< where the value's bytes start in the object (page-aligned)
  std::uint64_t bytes = 0;      ///< bytes the client writes from `offset`: the array, or the bytes
  std::uint64_t map_bytes = 0;  ///< bytes to map read-write from `offset`: the block's own pages
  reserve_pages pages = reserve_pages::writer_reserves;  ///< who backs those pages
};

/// The one process that owns a store: creates its segments, applies writes,
/// reclaims memory, and unlinks what it created on `close`. Every write returns
/// only after it is visible to readers. A failed write changes nothing.
/// Not thread-safe: call it from one thread (the broker's write loop).
class SLITHER_SHM_EXPORT writer {
 public:
  /// Takes the store's lock object for the writer's lifetime, then creates the
  /// store's segments (owner-only, 0600), replacing a store left by a dead
  /// writer of the same name (marked closed first, for its readers). Errors:
  /// `already_exists` if a live writer owns the name, `no_space`,
  /// `invalid_argument` for bad names or specs, `io_error` for objects of
  /// another user under the name. A failed create removes only what it made.
  static result<writer> create(const store_options& options, std::span<const table_spec> tables);

  writer(writer&&) noexcept;
  writer& operator=(writer&&) noexcept;
  /// Calls `close()`.
  ~writer();

  /// Stores `value` under `key` (for a bag, appends it). Returns the entry's new version.
  result<std::uint64_t> put(std::string_view table, std::string_view key, const Value& value);
  /// Stores many entries; all or nothing (nothing is stored if one entry
  /// fails). With `batch_publish::per_entry` a reader may see part of the
  /// batch until the call returns (except scans of an ordered table, whose
  /// tree takes the batch in one switch); with `at_once` it sees none or all
  /// of it (see `batch_publish`).
  result<void> put_many(std::string_view table,
                        std::span<const std::pair<std::string, Value>> entries,
                        batch_publish publish = batch_publish::per_entry);
  /// Adds a table while the store lives; readers attached before find it by
  /// name on their next read. Errors: `already_exists`, `invalid_argument`
  /// (bad name, kind or capacity), `limit_exceeded` (the store's directory of
  /// 64 tables is used up: a dropped table's entry is not reused), `no_space`
  /// (/dev/shm has no room for the index its capacity asks for). Returns
  /// within a millisecond or so whatever the capacity: a large index is made
  /// ready later, in slices (`table_spec::initial_capacity`).
  result<void> create_table(const table_spec& spec);
  /// Removes a table created with `create_table`, with its entries: readers
  /// then get `not_found` for it (a read under way finishes on the old
  /// contents; views taken stay valid). Tables given to `create` are the
  /// store's declared shape and cannot be dropped (`invalid_argument`).
  /// Errors: `not_found`.
  result<void> drop_table(std::string_view table);
  /// Removes `key` (all its values in a bag). Returns whether it was present.
  result<bool> erase(std::string_view table, std::string_view key);
  /// Read-modify-write: `fn` gets the current value (nullopt if absent) and returns the new one.
  /// Set tables only; an exception from `fn` becomes an error and changes nothing.
  result<std::uint64_t> update(std::string_view table, std::string_view key,
                               const std::function<Value(const std::optional<Value>&)>& fn);
  /// Writes `value` only if the entry's version is `expected_version` (0 = absent).
  /// Set tables only. Errors: `conflict` naming the version found.
  result<std::uint64_t> compare_and_set(std::string_view table, std::string_view key,
                                        std::uint64_t expected_version, const Value& value);
  /// Removes `key` only if the entry's version is `expected_version` (0 =
  /// absent, which removes nothing); returns whether an entry was removed.
  /// The conditional twin of `erase`, as `compare_and_set` is of `put`: a
  /// client that read a value and its version removes exactly what it read.
  /// Set and ordered tables only (a bag's key has no one version).
  /// Errors: `conflict` naming the version found.
  result<bool> compare_and_erase(std::string_view table, std::string_view key,
                                 std::uint64_t expected_version);
  /// Removes every entry of `table`.
  result<void> clear(std::string_view table);
  /// Reserves a block for an ndarray of `type` and `shape` under `key`,
  /// unpublished: readers cannot reach it until `commit`. Its value's pages
  /// (`reservation::offset`, `map_bytes`) belong to the block alone, so a
  /// client that maps exactly them and fills them touches nothing else.
  /// Errors as `put` (unknown table, key or value over its limit, `no_space`).
  ///
  /// Caveats: the writer cannot tell whether the client is done writing: a
  /// client unmaps before it asks for the commit (sealing the block), and a
  /// reservation never committed stays allocated until `abandon` (the
  /// broker abandons those of clients whose lease ends).
  ///
  /// With `reserve_pages::client_backs` the value's pages are not reserved
  /// (see there): reserving 256 MiB takes ~100 ms of kernel CPU, which on a
  /// busy machine competed with every other thread of the writer's process.
  result<reservation> reserve(std::string_view table, std::string_view key, dtype type,
                              std::span<const std::uint64_t> shape,
                              reserve_pages pages = reserve_pages::writer_reserves);
  /// `reserve` for a bytes value of `bytes` bytes: the block holds the
  /// value's encoding exactly as `put` of the same bytes stores it (readers
  /// decode both alike); the writer writes the encoding's header, the client
  /// the bytes themselves (from `reservation::offset`, page-aligned).
  result<reservation> reserve_bytes(std::string_view table, std::string_view key,
                                    std::uint64_t bytes,
                                    reserve_pages pages = reserve_pages::writer_reserves);
  /// Publishes a reserved block under its key (replacing, or appending in a
  /// bag), after checking that its header still describes the value it was
  /// reserved for. Returns the entry's new version. Errors: `not_found` for
  /// an unknown or finished reservation, `decode_error` for a damaged block,
  /// `no_space` for a `client_backs` one whose client left pages unbacked
  /// that /dev/shm has no room for (all three then abandoned).
  result<std::uint64_t> commit(std::uint64_t id);
  /// Frees a reserved block readers never saw. Errors: `not_found`.
  result<void> abandon(std::uint64_t id);
  /// Builds new contents with `fill`, then switches to them atomically:
  /// readers see the old or the new table, never a mix. If `fill` fails, the
  /// old contents stay.
  result<void> reload(std::string_view table, const std::function<result<void>(loader&)>& fill);
  /// Clears the registry slots of readers that are gone (their lock is free),
  /// then frees retired blocks no reader can still see. Cheap when there is
  /// nothing to do (one lock test per attached reader): call it on a timer,
  /// since reads never trigger it and writes only now and then. Also spends
  /// about 2 ms as `grow` does.
  reclaim_report reclaim();
  /// Moves growing indexes on and makes ready the indexes that tables'
  /// capacities ask for (`table_spec::initial_capacity`), for about
  /// `budget`, in steps of tens of microseconds. Writes do a little of this
  /// each; a timer that calls it while `growing()` (a broker: 2 ms every
  /// 10 ms) made a 1 GiB asked index ready in 3.5 s on a 2-core machine.
  void grow(std::chrono::microseconds budget);
  /// Whether `grow` has work: an index is growing or short of its asked size.
  bool growing() const noexcept;
  /// Hands back to the system, now, the pages of every free run: those a
  /// reclaim would hand back later (freed blocks of 1 MiB and more keep
  /// their pages for about 2 s, for a value of their size written next),
  /// and waits until that is done, so that `stats().bytes_resident` is
  /// final. `reclaim` does this in the background, at idle CPU priority;
  /// this is for callers that need the figure (tests, a store going idle).
  void trim();
  store_stats stats() const;
  /// The random number chosen when this store was created (see `reader::incarnation`).
  std::uint64_t incarnation() const noexcept;
  /// A reader over this writer's own store.
  const reader& read() const;
  /// Marks the store closed (see `reader::store_closed`), unlinks what this
  /// writer created, then releases its lock; readers already attached keep
  /// their mappings. Safe twice.
  void close() noexcept;

  struct impl;  ///< implementation detail

 private:
  explicit writer(std::unique_ptr<impl> p) noexcept;
  std::unique_ptr<impl> p_;
};

/// Removes what a dead writer left of store `<ns>.<name>` (segments, reader
/// registry, lock object), as a new writer of the name would, without
/// creating anything. Returns false, touching nothing, if a live writer holds
/// the store's lock. Only objects of this process's user are removed.
/// Errors: `invalid_argument` for bad names, `io_error` for objects of
/// another user under the name.
SLITHER_SHM_EXPORT result<bool> remove_dead_store(std::string_view ns, std::string_view name);

/// A store as a C++ user declares it: its tables and an optional `load`
/// function that fills it when its writer starts.
struct SLITHER_SHM_EXPORT store_definition {
  store_options options;
  std::vector<table_spec> tables;
  std::function<result<void>(writer&)> load;
};

/// Creates the store and runs its `load` function.
SLITHER_SHM_EXPORT result<writer> open_store(const store_definition& def);

}  // namespace slither::shm
