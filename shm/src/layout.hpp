// The shared-memory layout of a store: a contract between separately compiled
// processes (the writer, C++ readers, the Python extension). Every struct here
// is plain, fixed-size and standard-layout; every shared atomic is a lock-free
// 64-bit word. Any change to a size, an offset or a meaning bumps
// `shm::layout_version` (store.hpp), which readers check on attach.
//
// Overview (the structs below are checked by static_assert):
// - Data segments "/slither.<ns>.<store>.<n>", n = 0, 1, ...; each starts with
//   a segment_header (magic, layout version, the writer's random incarnation,
//   n, size). Segment 0 then holds the store_header: writer pid, hash seed,
//   state, global epoch, segment sizes, and the table directory, whose entries
//   reference each table's current index block. Segments are sized by the writer (allocator.hpp);
//   readers take each one's size from the header and map a segment when they first meet a
//   reference into it. References are (segment << 48 | offset), never pointers.
// - An index block is an open-addressing, linear-probing array of slots
//   (null, tombstone or a reference to an entry block tagged with 10 bits of
//   the key hash, so probes rarely touch other keys' blocks), kept at most 3/4 full.
//   Entry blocks are immutable once published: {version, key, value} in one
//   of two layouts (below), told apart by their first byte.
//   A put writes a new block and release-stores its reference into the slot;
//   growth is incremental (below); reload/clear build a new array (and
//   blocks) and publish it in the table directory, so a reader sees either
//   the old or the new table.
// - Growth (index.hpp) publishes a new, larger array N whose header
//   references the previous one, O (`index_header::old`), and then moves
//   O's entries into N a few slots per write, in slot order; `migrated`
//   says how many of O's slots have been moved. The rules that keep every
//   reader right while it runs:
//   1. A key lives in exactly one place: in O at a slot >= `migrated`, or in
//      N. The writer updates, appends to or erases a key still in O in place
//      (in O); new keys go to N.
//   2. A move stores the slot's value into N, then (after a batch of moves)
//      stores the larger `migrated`. O's moved slots are left as they were:
//      "frozen". Readers still holding O as their root (they loaded it
//      before N was published) find every key there, with a value it had
//      during their read; a frozen slot's block may be retired later (a put
//      or erase in N), never before such a reader's epoch ends.
//   3. Nobody dereferences a frozen slot of O through N: its block may
//      already be freed. A lookup through N loads `old` first; if null, N
//      alone is complete. Else it probes N, loads `migrated`, probes O
//      comparing keys only at slots >= `migrated` (it walks over the others),
//      and on a miss probes N once more: a key moved after the first probe
//      was stored in N before `migrated` passed its slot.
//   4. `for_each`/`keys` through N during a migration read O's slots >=
//      `migrated` (loaded once, m), then N's entries, skipping an entry of N
//      whose key O holds at a slot >= m: that one was reported from O. A key
//      present throughout is reported exactly once.
//   5. When every slot is moved the writer stores a null `old`, then retires
//      O through the epochs. A new growth starts only after the previous
//      one finished, so a reader meets at most two arrays per root.
//   Probe chains never break: no null is ever stored into a published array.
// - Bag tables chain blocks: each appended value gets its own block whose
//   `next` references the previous value's block, and the slot references the
//   newest; each block also references the chain's oldest block. Appending
//   is O(1) and never copies earlier values; `get` (the oldest value) is O(1),
//   `get_all` walks the chain.
// - ndarray values are stored raw, 64-byte aligned inside their block, with
//   dtype and shape in the block; other values are stored as slither::encode
//   bytes.
// - An ordered table (kind ordered_set) has, besides its index, a B+tree of
//   immutable nodes (btree.hpp) whose leaves hold its keys, sorted bytewise,
//   with their entry blocks' references or, for small values, a copy of the
//   value and its version (so a scan reads leaves only); the store header's `tree_roots`
//   holds each table's current root (null: empty). The writer rebuilds the
//   path a write changes and publishes the new root with one store, so a
//   scan that loaded a root sees one consistent snapshot.
// - The reader registry "/slither.<ns>.<store>.readers" is the only segment a
//   reader maps writable: one cache-line-padded slot per attached reader with
//   an owner word (generation + state), one epoch lane per concurrently
//   reading thread, and a table of holds (block references kept by live
//   views). A reader's liveness is an OFD lock on its slot's bytes.
// - The lock object "/slither.<ns>.<store>.lock": its writer holds an OFD
//   lock on it for its whole lifetime (exclusivity, and liveness as readers
//   see it) and records the store's incarnation in it.
//
// Allocation: allocator.hpp. Reclamation (epochs, holds, dead readers): epoch.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "slither/shm/store.hpp"

namespace slither::shm::detail {

using shared_u64 = std::atomic<std::uint64_t>;
static_assert(shared_u64::is_always_lock_free, "shared atomics must be lock-free across processes");
static_assert(sizeof(shared_u64) == 8 && alignof(shared_u64) == 8);

inline constexpr std::uint64_t store_magic = 0x31524f54534c5353;     // "SSLSTOR1"
inline constexpr std::uint64_t registry_magic = 0x3147455253534c53;  // "SLSSREG1"
using shm::layout_version;  // public in store.hpp: the broker reports it to clients

inline constexpr std::uint32_t max_segments = 64;
inline constexpr std::uint32_t max_tables = 64;
inline constexpr std::size_t max_table_name = 47;  // plus a NUL in 48 bytes
inline constexpr std::uint64_t max_readers_limit = shm::max_readers_limit;  // registry slots
inline constexpr std::uint32_t lanes_per_reader = 8;
inline constexpr std::uint32_t holds_per_reader = 120;
inline constexpr std::uint64_t block_alignment = 64;

// A reference: segment number in the top 16 bits, byte offset in the low 48.
// 0 is "none" (offset 0 of segment 0 is the segment header, never a block);
// `tombstone` marks a deleted index slot.
inline constexpr std::uint64_t null_ref = 0;
inline constexpr std::uint64_t tombstone = 1;
inline constexpr unsigned ref_offset_bits = 48;
inline constexpr std::uint64_t ref_offset_mask = (std::uint64_t{1} << ref_offset_bits) - 1;
constexpr std::uint64_t make_ref(std::uint32_t segment, std::uint64_t offset) noexcept {
  return (std::uint64_t{segment} << ref_offset_bits) | offset;
}
constexpr std::uint32_t ref_segment(std::uint64_t ref) noexcept {
  return static_cast<std::uint32_t>(ref >> ref_offset_bits);
}
constexpr std::uint64_t ref_offset(std::uint64_t ref) noexcept {
  return ref & ref_offset_mask;
}

/// Every block (entry, index, tree node) starts at a multiple of this in its
/// segment: small entries waste at most 7 bytes to alignment. What needs more
/// (an ndarray's 64-byte aligned elements) pads inside its block.
inline constexpr std::uint64_t block_granule = 8;

// An index slot holds an entry block's reference with the top 10 bits of the
// key's hash in its top 10 bits (a reference uses only the low 54: a segment
// number below 64, an offset below 2^48): a probe skips all but 1/1024 of
// the other keys it meets without touching their blocks. The position in the
// array comes from the hash's low bits, so the two are independent. A slot
// whose reference part is 0 is null (value 0) or a tombstone (1: blocks are
// 8-byte aligned, so a reference's low 3 bits are 0).
inline constexpr unsigned slot_tag_shift = 54;
inline constexpr std::uint64_t slot_ref_mask =
    ((std::uint64_t{1} << slot_tag_shift) - 1) & ~(block_granule - 1);
static_assert(max_segments <= (1u << (slot_tag_shift - ref_offset_bits)),
              "a segment number must fit below the slot's tag");
constexpr std::uint64_t slot_value(std::uint64_t ref, std::uint64_t hash) noexcept {
  return ref | (hash >> slot_tag_shift << slot_tag_shift);
}
constexpr std::uint64_t slot_ref(std::uint64_t slot) noexcept {
  return slot & slot_ref_mask;
}
constexpr bool slot_tag_matches(std::uint64_t slot, std::uint64_t hash) noexcept {
  return ((slot ^ hash) >> slot_tag_shift) == 0;
}
constexpr bool slot_has_entry(std::uint64_t slot) noexcept {
  return slot_ref(slot) != null_ref;
}

/// Offset 0 of every data segment. `incarnation` is a random number chosen by
/// the writer, so a reader never mistakes a later writer's segment for its own.
struct segment_header {
  std::uint64_t magic;
  std::uint64_t layout_version;
  std::uint64_t incarnation;
  std::uint64_t index;
  std::uint64_t bytes;
  std::uint64_t reserved[3];
};
static_assert(std::is_standard_layout_v<segment_header> && sizeof(segment_header) == 64);

enum class store_state : std::uint64_t { creating = 0, ready = 1, closed = 2 };

/// One table of the directory. `root` references the table's current index block.
/// Entries are appended while the store lives (a table created at run time):
/// the writer fills one, then release-stores the larger `table_count`, and
/// never changes its name afterwards. A dropped table's `kind` becomes
/// `dropped_kind` and its `root` null; its entry is never reused, so a name
/// a reader found at an index always means the same table.
struct table_entry {
  char name[max_table_name + 1];
  shared_u64 kind;  ///< table_kind, or dropped_kind
  shared_u64 root;
};
static_assert(std::is_standard_layout_v<table_entry> && sizeof(table_entry) == 64);
/// `table_entry::kind` of a dropped table.
inline constexpr std::uint64_t dropped_kind = 0;

/// `store_header::fences`: what the writer does before it scans the readers'
/// epoch lanes, and so what a reader's announce needs (epoch.hpp).
enum class fence_mode : std::uint64_t {
  /// Nothing: every reader announces with a full fence (seq_cst).
  full = 0,
  /// The writer issues membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED): a reader
  /// registered for it announces with a plain store.
  membarrier = 1,
};

/// At offset 64 of segment 0. `state` stays at offset 16 (segment offset 80)
/// in every layout version, so a reader can tell "still being created" from
/// "another layout" before it trusts any other field, and a writer replacing
/// a dead writer's store of any version can mark it closed.
struct store_header {
  std::uint64_t writer_pid;  ///< for messages only; liveness is the writer's lock
  std::uint64_t hash_seed;   ///< seeds the key hash (XXH3), chosen at random per store
  shared_u64 state;          ///< store_state
  shared_u64 global_epoch;
  shared_u64 segment_count;
  shared_u64 table_count;  ///< directory entries in use, dropped ones included; only grows
  std::uint64_t max_readers;
  /// fence_mode: how readers may announce their epochs (epoch.hpp). Set
  /// before the store is ready, never changed; 0 in a store of a writer that
  /// predates it, which is what such a writer needs.
  std::uint64_t fences;
  shared_u64 segment_bytes[max_segments];
  table_entry tables[max_tables];
  shared_u64 tree_roots[max_tables];  ///< ordered tables: the B+tree root (null if empty)
};
static_assert(std::is_standard_layout_v<store_header>);
static_assert(offsetof(store_header, hash_seed) == 8 && offsetof(store_header, state) == 16);
static_assert(offsetof(store_header, global_epoch) == 24);
static_assert(offsetof(store_header, segment_bytes) == 64);
static_assert(offsetof(store_header, tables) == 64 + 8 * max_segments);
static_assert(offsetof(store_header, tree_roots) == 64 + 8 * max_segments + 64 * max_tables);
static_assert(sizeof(store_header) == 64 + 8 * max_segments + 72 * max_tables);

inline constexpr std::uint64_t store_header_offset = sizeof(segment_header);
inline constexpr std::uint64_t segment0_data_start =
    (store_header_offset + sizeof(store_header) + block_alignment - 1) / block_alignment *
    block_alignment;
inline constexpr std::uint64_t segment_data_start = sizeof(segment_header);
/// Where `store_header::state` sits in segment 0, whatever the layout version.
inline constexpr std::uint64_t store_state_offset = store_header_offset + 16;

/// An index block: an open-addressing (linear probing) array of `capacity`
/// slots, each null, `tombstone` or a tagged entry reference (`slot_value`), follows
/// this header. Only the writer mutates it; it never moves an entry within
/// one array. While it grows, `old` references the array it replaces and
/// `migrated` counts the slots of that one already moved (rules above).
struct index_header {
  std::uint64_t capacity;  ///< a power of two
  shared_u64 keys;         ///< live keys (in the table: this array and `old`'s live part)
  shared_u64 values;       ///< live values (== keys in a set)
  shared_u64 old;          ///< the array being moved into this one, or null
  shared_u64 migrated;     ///< slots [0, migrated) of `old` are moved (frozen)
  std::uint64_t reserved[3];
};
static_assert(std::is_standard_layout_v<index_header> && sizeof(index_header) == 64);
static_assert(offsetof(index_header, old) == 24 && offsetof(index_header, migrated) == 32);

enum class value_format : std::uint8_t { encoded = 1, ndarray = 2 };

/// How an entry block is laid out: the low 4 bits of its first byte.
enum class entry_layout : std::uint8_t {
  /// `compact_entry`: a set's small encoded value, 8 bytes of header.
  compact = 1,
  /// `entry_header`: everything else (bags, ndarrays, large values and keys).
  full = 2,
};

/// A compact entry block: one 64-bit word, then the key, then the encoded
/// value; nothing else (block.hpp chooses it). The word holds, from its low
/// bits: the layout (4 bits, `entry_layout::compact`), the key's bytes (8),
/// the value's bytes (12) and the version (40). What the full header spells
/// out is implied: the value is encoded and follows the key, the block is
/// `size_class(8 + key + value)` bytes, a chain of one value (count 1, no
/// next or first); the key's hash is recomputed from the key where needed
/// (its top bits are in the index slot).
struct compact_entry {
  std::uint64_t word;
};
static_assert(std::is_standard_layout_v<compact_entry> && sizeof(compact_entry) == 8);
inline constexpr unsigned compact_key_shift = 4, compact_value_shift = 12,
                          compact_version_shift = 24;
inline constexpr std::uint64_t compact_max_key = 255, compact_max_value = 4095;
/// Versions a compact header can hold; later ones get the full header.
inline constexpr std::uint64_t compact_version_limit = std::uint64_t{1} << 40;

/// A full entry block: this header, the key, the ndarray shape (ndim
/// 64-bit words, 8-aligned) and the value at `value_offset` (64-aligned in
/// memory for ndarrays). In a bag, each value has its own block and `next`
/// links to the previously appended one, so the slot references the newest value.
struct entry_header {
  std::uint8_t layout;  ///< entry_layout::full, at the same place as a compact word's
  std::uint8_t format;  ///< value_format
  std::uint8_t dtype;
  std::uint8_t ndim;
  std::uint32_t key_bytes;
  std::uint64_t hash;
  std::uint64_t version;
  std::uint64_t next;  ///< bag: the block of the previous value; else null
  /// Bag: the block of the oldest value (the chain's end), so `get` reads it
  /// without walking the chain; null in a set and in a chain of one block.
  std::uint64_t first;
  std::uint64_t value_bytes;
  std::uint32_t value_offset;
  std::uint32_t count;        ///< values in the chain from here (1 in a set)
  std::uint64_t block_bytes;  ///< allocation size of the block
};
static_assert(std::is_standard_layout_v<entry_header> && sizeof(entry_header) == 64);
static_assert(offsetof(entry_header, first) == 32 && offsetof(entry_header, count) == 52);
static_assert(offsetof(entry_header, key_bytes) == 4 && offsetof(entry_header, block_bytes) == 56);
/// Values one key of a bag may hold (`entry_header::count` is 32 bits).
inline constexpr std::uint64_t max_bag_values = UINT32_MAX;

/// Start of the reader registry segment.
struct registry_header {
  std::uint64_t magic;
  std::uint64_t layout_version;
  std::uint64_t incarnation;
  std::uint64_t max_readers;
  std::uint64_t slot_bytes;
  std::uint64_t reserved[3];
};
static_assert(std::is_standard_layout_v<registry_header> && sizeof(registry_header) == 64);

/// The owner word of a reader slot: a generation in the high bits, a
/// slot_state in the low two. Every claim takes a new generation, so a
/// compare-and-swap against an owner word read earlier fails once the slot
/// has changed hands, however many times.
enum class slot_state : std::uint64_t { free = 0, owned = 1, clearing = 2 };
constexpr std::uint64_t owner_word(std::uint64_t generation, slot_state s) noexcept {
  return generation << 2 | static_cast<std::uint64_t>(s);
}
constexpr slot_state owner_state(std::uint64_t word) noexcept {
  return static_cast<slot_state>(word & 3);
}
constexpr std::uint64_t owner_generation(std::uint64_t word) noexcept {
  return word >> 2;
}

/// One attached reader. Its owner holds an OFD write lock on the slot's bytes
/// of the registry (registry.hpp) for as long as it is attached; the kernel
/// drops the lock when the process exits, is killed or exec()s. `lanes` hold
/// the epochs announced by its threads while they read (0 = idle); `holds`
/// the block references kept by its live views; `overflow_epoch` the oldest
/// epoch pinned by views that did not fit in `holds`.
struct alignas(64) reader_slot {
  shared_u64 owner;  ///< owner_word
  shared_u64 pid;    ///< of the owner, for messages and stats only
  shared_u64 overflow_epoch;
  std::uint64_t reserved[5];
  shared_u64 lanes[lanes_per_reader];
  shared_u64 holds[holds_per_reader];
};
static_assert(std::is_standard_layout_v<reader_slot>);
static_assert(sizeof(reader_slot) == 64 + 8 * lanes_per_reader + 8 * holds_per_reader);
static_assert(sizeof(reader_slot) % 64 == 0 && offsetof(reader_slot, lanes) == 64);

/// Byte offset of slot `i` in the registry: also the start of the byte range
/// its owner keeps locked.
constexpr std::uint64_t slot_offset(std::uint64_t i) noexcept {
  return sizeof(registry_header) + i * sizeof(reader_slot);
}

/// The contents of a store's lock object "/slither.<ns>.<store>.lock": which
/// store the writer holding its lock (an OFD write lock on byte 0) created.
struct lock_record {
  std::uint64_t magic;
  std::uint64_t incarnation;
  std::uint64_t writer_pid;  ///< for messages only
};
static_assert(std::is_standard_layout_v<lock_record> && sizeof(lock_record) == 24);
inline constexpr std::uint64_t lock_magic = 0x314b434f4c534c53;  // "SLSLOCK1"

}  // namespace slither::shm::detail
