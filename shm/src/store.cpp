// The shared-memory Store.
//
// Layout (see layout.hpp for the exact structs, all checked by static_assert):
// - Data segments "/slither.<ns>.<store>.<n>", n = 0, 1, ...; each starts with
//   a segment_header (magic, layout version, the writer's random incarnation,
//   n, size). Segment 0 then holds the store_header: writer pid + start time,
//   state, global epoch, segment sizes, and the table directory, whose entries
//   reference each table's current index block. Segment n+1 is (at least)
//   twice as large as segment n; readers map a segment when they first meet a
//   reference into it. References are (segment << 48 | offset), never pointers.
// - An index block is an open-addressing, linear-probing array of slots
//   (null, tombstone or a reference to an entry block tagged with 6 bits of the
//   key hash, so probes rarely touch other keys' blocks), kept at most half full.
//   Entry blocks are immutable once published: {hash, version, key, value}.
//   A put writes a new block and release-stores its reference into the slot;
//   growth builds a new array over the same blocks and publishes it in the
//   table directory; reload/clear build a new array (and blocks) and publish
//   it the same way, so a reader sees either the old or the new table.
// - Bag tables chain blocks: each appended value gets its own block whose
//   `next` references the previous value's block, and the slot references the
//   newest. Appending is O(1) and never copies earlier values; reads walk the
//   chain (oldest first is "first").
// - ndarray values are stored raw, 64-byte aligned inside their block, with
//   dtype and shape in the block; other values are stored as slither::encode
//   bytes.
// - The reader registry "/slither.<ns>.<store>.readers" is the only segment a
//   reader maps writable: one cache-line-padded slot per reader process with
//   its pid + start time, one epoch lane per concurrently reading thread, and
//   a table of holds (block references kept by live views).
//
// Allocation is the writer's private business: blocks are rounded to size
// classes (64-byte steps up to 4 KiB, then 8 classes per power of two) and
// come from per-class free lists, else from a bump pointer at the end of the
// newest segment, else from a new segment. Freed blocks are reused only for
// the same class (no coalescing); the tail of a full segment is left unused.
//
// Reclamation: replaced or deleted blocks are retired with the current epoch.
// reclaim() bumps the global epoch, reads every live reader slot, and frees
// the retired blocks older than the oldest announced epoch that no view holds.
// A view holds its block through a hold in the registry; if a reader process
// holds more views than its slot has holds, the extra views pin the epoch they
// were created in (overflow_epoch) instead, which delays reclamation of blocks
// retired after it until they are dropped, but never loses a hold. Slots of
// dead readers (pid gone, zombie, or a different start time) are cleared.
#include "slither/shm/store.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <new>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "layout.hpp"
#include "process.hpp"
#include "slither/core/codec.hpp"
#include "slither/shm/detail/sys.hpp"

namespace slither::shm {

namespace bip = boost::interprocess;
using detail::entry_header;
using detail::index_header;
using detail::shared_u64;

namespace {

constexpr std::uint64_t min_segment_bytes = std::uint64_t{64} << 10;
constexpr std::uint64_t page_bytes = 4096;
constexpr std::uint64_t max_key_limit = std::uint64_t{1} << 20;
constexpr std::uint64_t min_index_capacity = 16;
constexpr std::uint64_t max_index_capacity = std::uint64_t{1} << 40;
constexpr std::uint64_t reclaim_every_retires = 64;
constexpr std::uint64_t reclaim_every_bytes = std::uint64_t{4} << 20;
constexpr auto liveness_interval = std::chrono::milliseconds(250);

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) noexcept {
  return (v + a - 1) / a * a;
}

bool valid_name(std::string_view s) noexcept {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

/// A key quoted for an error message: printable, escaped, cut at 64 characters.
std::string printable(std::string_view key) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "'";
  for (std::size_t i = 0; i < key.size() && i < 64; ++i) {
    const auto c = static_cast<unsigned char>(key[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (key.size() > 64) out += "...";
  return out + "'";
}

std::uint64_t hash_key(std::string_view key) noexcept {
  return XXH3_64bits(key.data(), key.size());
}

std::string_view key_of(const entry_header* e) noexcept {
  return {reinterpret_cast<const char*>(e + 1), e->key_bytes};
}

std::span<const std::byte> value_of(const entry_header* e) noexcept {
  return {reinterpret_cast<const std::byte*>(e) + e->value_offset, e->value_bytes};
}

std::uint64_t shape_offset(std::uint64_t key_bytes) noexcept {
  return align_up(sizeof(entry_header) + key_bytes, 8);
}

std::vector<std::uint64_t> shape_of(const entry_header* e) {
  std::vector<std::uint64_t> shape(e->ndim);
  std::memcpy(shape.data(), reinterpret_cast<const std::byte*>(e) + shape_offset(e->key_bytes),
              e->ndim * sizeof(std::uint64_t));
  return shape;
}

result<Value> decode_entry(const entry_header* e) {
  if (e->format == static_cast<std::uint8_t>(detail::value_format::ndarray)) {
    if (!is_valid_dtype(e->dtype)) {
      return fail(errc::decode_error,
                  "stored ndarray has unknown dtype " + std::to_string(e->dtype));
    }
    try {
      return Value(ndarray::from_bytes(static_cast<dtype>(e->dtype), shape_of(e), value_of(e)));
    } catch (const slither::error& err) {
      return fail(err.code(), err.what());
    }
  }
  decode_limits limits;
  limits.max_message_bytes = std::max<std::size_t>(limits.max_message_bytes, e->value_bytes);
  return decode(value_of(e), limits);
}

/// Blocks are allocated in size classes so freed blocks are reused exactly.
std::uint64_t size_class(std::uint64_t bytes) noexcept {
  const std::uint64_t n = align_up(std::max<std::uint64_t>(bytes, 64), 64);
  if (n <= 4096) return n;
  return align_up(n, std::bit_floor(n) / 8);
}

std::uint64_t index_bytes(std::uint64_t capacity) noexcept {
  return sizeof(index_header) + capacity * sizeof(shared_u64);
}

std::uint64_t initial_slots(std::uint64_t initial_capacity) noexcept {
  return std::bit_ceil(std::max(min_index_capacity, initial_capacity * 2));
}

std::string os_error(const bip::interprocess_exception& e) {
  return std::string(e.what()) + " (errno " + std::to_string(e.get_native_error()) + ")";
}

/// Creates and maps a shared-memory object of `bytes` bytes, owner-only,
/// with its pages reserved so later stores into it cannot fault for lack of space.
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
    if (detail::sys().fstatvfs(fd, &fs) == 0) {
      const std::uint64_t avail = std::uint64_t{fs.f_bavail} * fs.f_frsize;
      if (avail < bytes) {
        bip::shared_memory_object::remove(name.c_str());
        return fail(errc::no_space, "no space for shared memory '" + name + "': it needs " +
                                        std::to_string(bytes) + " bytes, /dev/shm has " +
                                        std::to_string(avail) + " free");
      }
    }
    shm.truncate(static_cast<bip::offset_t>(bytes));
    if (const int err = detail::sys().fallocate(fd, 0, static_cast<off_t>(bytes)); err != 0) {
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
  for (std::uint32_t n = 0; n < detail::max_segments; ++n) {
    bip::shared_memory_object::remove(segment_name(ns, name, n).c_str());
  }
  bip::shared_memory_object::remove(registry_name(ns, name).c_str());
}

}  // namespace

std::string segment_name(std::string_view ns, std::string_view store, std::uint32_t n) {
  return "/slither." + std::string(ns) + "." + std::string(store) + "." + std::to_string(n);
}

std::string registry_name(std::string_view ns, std::string_view store) {
  return "/slither." + std::string(ns) + "." + std::string(store) + ".readers";
}

// ---------------------------------------------------------------------------
// Reader side

namespace {

/// A block found by a reader: its reference and its address.
struct located {
  std::uint64_t ref = detail::null_ref;
  const entry_header* e = nullptr;
};

/// A reader process's mappings and registry slot, shared by the `reader` and
/// by every view it hands out, so views outlive the `reader` safely.
struct reader_core {
  std::string ns;
  std::string name;
  std::string label;
  std::uint64_t incarnation = 0;
  const detail::store_header* header = nullptr;
  std::vector<std::string> table_names;
  std::vector<table_kind> table_kinds;

  std::array<std::atomic<const std::byte*>, detail::max_segments> bases{};
  std::array<std::atomic<std::uint64_t>, detail::max_segments> sizes{};
  std::mutex map_mutex;  // only taken to map a segment for the first time
  std::array<std::unique_ptr<bip::mapped_region>, detail::max_segments> regions;

  bip::mapped_region registry;
  detail::reader_slot* slot = nullptr;
  std::uint64_t generation = 0;  // detail::fork_generation() of the attaching process

  std::mutex overflow_mutex;
  std::multiset<std::uint64_t> overflow_epochs;

  reader_core() = default;
  reader_core(const reader_core&) = delete;
  reader_core& operator=(const reader_core&) = delete;

  /// False in a child process that inherited this reader through fork(): the
  /// slot belongs to the parent, which must keep its epochs and holds.
  bool owned() const noexcept { return generation == detail::fork_generation(); }

  ~reader_core() {
    if (slot == nullptr || !owned()) return;
    for (auto& h : slot->holds) h.store(0, std::memory_order_relaxed);
    for (auto& l : slot->lanes) l.store(0, std::memory_order_relaxed);
    slot->overflow_epoch.store(0, std::memory_order_relaxed);
    slot->start_time.store(0, std::memory_order_relaxed);
    slot->pid.store(0, std::memory_order_release);
  }

  std::optional<std::uint32_t> table_index(std::string_view table) const noexcept {
    for (std::uint32_t i = 0; i < table_names.size(); ++i) {
      if (table_names[i] == table) return i;
    }
    return std::nullopt;
  }

  error_info unknown_table(std::string_view table) const {
    return fail(errc::not_found,
                "unknown table '" + std::string(table) + "' in store '" + label + "'");
  }

  error_info inherited() const {
    return fail(errc::invalid_argument, "this reader of store '" + label +
                                            "' was attached by the parent process; attach "
                                            "again after fork()");
  }

  error_info unreadable(std::uint64_t ref) const {
    return fail(errc::io_error, "store '" + label + "': cannot read block at segment " +
                                    std::to_string(detail::ref_segment(ref)) + " offset " +
                                    std::to_string(detail::ref_offset(ref)) +
                                    " (segment missing: was the store closed?)");
  }

  const std::byte* map_segment(std::uint32_t n) noexcept {
    std::lock_guard lock(map_mutex);
    if (const auto* base = bases[n].load(std::memory_order_acquire)) return base;
    const std::uint64_t bytes = header->segment_bytes[n].load(std::memory_order_acquire);
    if (bytes < sizeof(detail::segment_header)) return nullptr;
    try {
      bip::shared_memory_object shm(bip::open_only, segment_name(ns, name, n).c_str(),
                                    bip::read_only);
      auto region = std::make_unique<bip::mapped_region>(shm, bip::read_only, 0, bytes);
      const auto* sh = static_cast<const detail::segment_header*>(region->get_address());
      if (sh->magic != detail::store_magic || sh->incarnation != incarnation || sh->index != n ||
          sh->bytes != bytes) {
        return nullptr;
      }
      const auto* base = static_cast<const std::byte*>(region->get_address());
      regions[n] = std::move(region);
      sizes[n].store(bytes, std::memory_order_relaxed);
      bases[n].store(base, std::memory_order_release);
      return base;
    } catch (const std::exception&) {
      return nullptr;
    }
  }

  /// The address of `bytes` bytes at `ref`, or nullptr if they are not readable.
  const std::byte* resolve(std::uint64_t ref, std::uint64_t bytes) noexcept {
    const std::uint32_t seg = detail::ref_segment(ref);
    if (seg >= detail::max_segments) return nullptr;
    const std::byte* base = bases[seg].load(std::memory_order_acquire);
    if (base == nullptr && (base = map_segment(seg)) == nullptr) return nullptr;
    const std::uint64_t off = detail::ref_offset(ref);
    const std::uint64_t size = sizes[seg].load(std::memory_order_relaxed);
    if (off > size || bytes > size - off) return nullptr;
    return base + off;
  }

  const entry_header* entry(std::uint64_t ref) noexcept {
    const auto* e = reinterpret_cast<const entry_header*>(resolve(ref, sizeof(entry_header)));
    if (e == nullptr || resolve(ref, e->block_bytes) == nullptr ||
        e->value_offset > e->block_bytes || e->value_bytes > e->block_bytes - e->value_offset ||
        shape_offset(e->key_bytes) + e->ndim * 8ull > e->value_offset) {
      return nullptr;
    }
    return e;
  }

  /// The current index of `table`; call inside an epoch.
  const index_header* index(std::uint32_t table) noexcept {
    const std::uint64_t root = header->tables[table].root.load(std::memory_order_seq_cst);
    const auto* ix = reinterpret_cast<const index_header*>(resolve(root, sizeof(index_header)));
    if (ix == nullptr || ix->capacity == 0 || (ix->capacity & (ix->capacity - 1)) != 0 ||
        ix->capacity > max_index_capacity || resolve(root, index_bytes(ix->capacity)) == nullptr) {
      return nullptr;
    }
    return ix;
  }

  /// The newest block of `key` in index `ix` (`e` null if absent); inside an epoch.
  result<located> find(const index_header* ix, std::uint64_t hash, std::string_view key) {
    const auto* slots = reinterpret_cast<const shared_u64*>(ix + 1);
    const std::uint64_t mask = ix->capacity - 1;
    for (std::uint64_t i = hash & mask, n = 0; n <= mask; i = (i + 1) & mask, ++n) {
      const std::uint64_t s = slots[i].load(std::memory_order_seq_cst);
      if (s == detail::null_ref) break;
      if (!detail::slot_has_entry(s) || !detail::slot_tag_matches(s, hash)) continue;
      const std::uint64_t r = detail::slot_ref(s);
      // Header, key and a small value fill the block's first three cache
      // lines: fetch them together rather than one miss after another.
      if (const std::byte* p = resolve(r, sizeof(entry_header))) {
        __builtin_prefetch(p + 64);
        __builtin_prefetch(p + 128);
      }
      const entry_header* e = entry(r);
      if (e == nullptr) return unreadable(r);
      if (e->hash == hash && key_of(e) == key) return located{r, e};
    }
    return located{};
  }

  /// The blocks of a bag chain, oldest first (one block for a set).
  result<std::vector<located>> chain(located head) {
    std::vector<located> out;
    out.reserve(head.e->count);
    for (located at = head;;) {
      out.push_back(at);
      if (at.e->next == detail::null_ref) break;
      at = located{at.e->next, entry(at.e->next)};
      if (at.e == nullptr) return unreadable(at.ref);
    }
    std::reverse(out.begin(), out.end());
    return out;
  }

  /// The first (oldest) value's block of the key found at `head`.
  result<located> first(located head) {
    if (head.e->next == detail::null_ref) return head;
    auto blocks = chain(head);
    if (!blocks) return std::move(blocks).error();
    return blocks->front();
  }

  void pin_overflow(std::uint64_t epoch) {
    std::lock_guard lock(overflow_mutex);
    overflow_epochs.insert(epoch);
    slot->overflow_epoch.store(*overflow_epochs.begin(), std::memory_order_seq_cst);
  }

  void unpin_overflow(std::uint64_t epoch) noexcept {
    std::lock_guard lock(overflow_mutex);
    overflow_epochs.erase(overflow_epochs.find(epoch));
    slot->overflow_epoch.store(overflow_epochs.empty() ? 0 : *overflow_epochs.begin(),
                               std::memory_order_seq_cst);
  }
};

unsigned thread_hint() noexcept {
  thread_local const unsigned hint =
      static_cast<unsigned>(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  return hint;
}

/// Announces the current global epoch in one of the slot's lanes for the
/// duration of a read, so the writer frees nothing this read might see.
class epoch_guard {
 public:
  explicit epoch_guard(reader_core& core) noexcept {
    const unsigned hint = thread_hint();
    for (;;) {
      for (unsigned i = 0; i < detail::lanes_per_reader; ++i) {
        auto& lane = core.slot->lanes[(hint + i) % detail::lanes_per_reader];
        std::uint64_t idle = 0;
        const std::uint64_t e = core.header->global_epoch.load(std::memory_order_seq_cst);
        // A seq_cst RMW: the writer's seq_cst scan sees this lane, or our
        // later seq_cst index loads see every unlink that preceded its scan.
        if (lane.compare_exchange_strong(idle, e, std::memory_order_seq_cst)) {
          lane_ = &lane;
          epoch_ = e;
          return;
        }
      }
      std::this_thread::yield();  // more reading threads than lanes: wait for one
    }
  }
  ~epoch_guard() { lane_->store(0, std::memory_order_release); }
  epoch_guard(const epoch_guard&) = delete;
  epoch_guard& operator=(const epoch_guard&) = delete;

  std::uint64_t epoch() const noexcept { return epoch_; }

 private:
  shared_u64* lane_ = nullptr;
  std::uint64_t epoch_ = 0;
};

}  // namespace

struct view::state {
  std::shared_ptr<reader_core> core;
  const entry_header* entry = nullptr;
  shared_u64* hold = nullptr;  // null: pinned by `overflow_epoch` instead
  std::uint64_t overflow_epoch = 0;

  state(std::shared_ptr<reader_core> c, const entry_header* e, std::uint64_t ref,
        std::uint64_t epoch)
      : core(std::move(c)), entry(e) {
    auto& holds = core->slot->holds;
    const unsigned hint = thread_hint();
    for (unsigned i = 0; i < detail::holds_per_reader; ++i) {
      auto& h = holds[(hint + i) % detail::holds_per_reader];
      std::uint64_t free_hold = 0;
      if (h.load(std::memory_order_relaxed) == 0 &&
          h.compare_exchange_strong(free_hold, ref, std::memory_order_seq_cst)) {
        hold = &h;
        return;
      }
    }
    overflow_epoch = epoch;
    core->pin_overflow(epoch);
  }
  ~state() {
    if (!core->owned()) return;  // an inherited copy: the parent still holds the block
    if (hold != nullptr) {
      hold->store(0, std::memory_order_release);
    } else {
      core->unpin_overflow(overflow_epoch);
    }
  }
  state(const state&) = delete;
  state& operator=(const state&) = delete;
};

namespace {
/// Makes a view of a block; call inside the epoch that found it.
view make_view(const std::shared_ptr<reader_core>& core, located at, const epoch_guard& guard) {
  return view(std::shared_ptr<const view::state>(
      std::make_shared<view::state>(core, at.e, at.ref, guard.epoch())));
}
}  // namespace

std::span<const std::byte> view::bytes() const noexcept {
  return value_of(s_->entry);
}

bool view::is_ndarray() const noexcept {
  return s_->entry->format == static_cast<std::uint8_t>(detail::value_format::ndarray);
}

ndarray view::array() const {
  if (!is_ndarray()) {
    throw slither::error(errc::invalid_argument,
                         "the value of key " + printable(key_of(s_->entry)) + " is not an ndarray");
  }
  if (!is_valid_dtype(s_->entry->dtype)) {
    throw slither::error(errc::decode_error,
                         "stored ndarray has unknown dtype " + std::to_string(s_->entry->dtype));
  }
  return ndarray::view(static_cast<dtype>(s_->entry->dtype), shape_of(s_->entry),
                       value_of(s_->entry).data(), s_);
}

Value view::value() const {
  auto v = decode_entry(s_->entry);
  if (!v) throw slither::error(v.error());
  return std::move(*v);
}

std::uint64_t view::version() const noexcept {
  return s_->entry->version;
}

struct reader::impl {
  std::shared_ptr<reader_core> core;
};

reader::reader(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}
reader::reader(reader&&) noexcept = default;
reader& reader::operator=(reader&&) noexcept = default;
reader::~reader() = default;

result<reader> reader::attach(std::string_view ns, std::string_view name) {
  if (!valid_name(ns) || !valid_name(name)) {
    return fail(errc::invalid_argument, "bad store name '" + std::string(ns) + "." +
                                            std::string(name) +
                                            "': use 1-64 characters of [A-Za-z0-9_-]");
  }
  auto core = std::make_shared<reader_core>();
  core->ns = ns;
  core->name = name;
  core->label = core->ns + "." + core->name;
  const std::string seg0 = segment_name(ns, name, 0);
  try {
    bip::shared_memory_object shm(bip::open_only, seg0.c_str(), bip::read_only);
    core->regions[0] = std::make_unique<bip::mapped_region>(shm, bip::read_only);
  } catch (const bip::interprocess_exception& e) {
    if (e.get_error_code() == bip::not_found_error) {
      return fail(errc::not_found,
                  "no store '" + core->label + "' (shared memory '" + seg0 + "' does not exist)");
    }
    return fail(errc::io_error, "cannot map store '" + core->label + "': " + os_error(e));
  }
  const auto* base = static_cast<const std::byte*>(core->regions[0]->get_address());
  const std::uint64_t mapped = core->regions[0]->get_size();
  if (mapped < detail::segment0_data_start) {
    return fail(errc::layout_mismatch, "store '" + core->label + "': segment 0 is " +
                                           std::to_string(mapped) +
                                           " bytes, too small for a store header");
  }
  const auto* sh = reinterpret_cast<const detail::segment_header*>(base);
  if (sh->magic != detail::store_magic || sh->layout_version != detail::layout_version) {
    return fail(errc::layout_mismatch,
                "store '" + core->label + "' has layout version " +
                    std::to_string(sh->layout_version) +
                    (sh->magic != detail::store_magic ? " and an unknown magic" : "") +
                    "; this build reads version " + std::to_string(detail::layout_version));
  }
  const auto* hdr =
      reinterpret_cast<const detail::store_header*>(base + detail::store_header_offset);
  const auto state = static_cast<detail::store_state>(hdr->state.load(std::memory_order_acquire));
  if (state == detail::store_state::creating) {
    return fail(errc::not_found, "store '" + core->label + "' is still being created");
  }
  if (state == detail::store_state::closed) {
    return fail(errc::writer_gone, "store '" + core->label + "' was closed by its writer");
  }
  if (!detail::process_alive(hdr->writer_pid, hdr->writer_start_time)) {
    return fail(errc::writer_gone, "the writer of store '" + core->label + "' (pid " +
                                       std::to_string(hdr->writer_pid) + ") is gone");
  }
  if (hdr->table_count > detail::max_tables || sh->bytes != mapped) {
    return fail(errc::layout_mismatch, "store '" + core->label + "' has a corrupt header");
  }
  core->incarnation = sh->incarnation;
  core->header = hdr;
  core->generation = detail::fork_generation();
  core->sizes[0].store(mapped, std::memory_order_relaxed);
  core->bases[0].store(base, std::memory_order_release);
  for (std::uint64_t i = 0; i < hdr->table_count; ++i) {
    const auto& t = hdr->tables[i];
    core->table_names.emplace_back(t.name, strnlen(t.name, sizeof(t.name)));
    core->table_kinds.push_back(static_cast<table_kind>(t.kind));
  }

  const std::string reg = registry_name(ns, name);
  try {
    bip::shared_memory_object shm(bip::open_only, reg.c_str(), bip::read_write);
    core->registry = bip::mapped_region(shm, bip::read_write);
  } catch (const bip::interprocess_exception& e) {
    return fail(errc::io_error, "cannot map the reader registry '" + reg + "' of store '" +
                                    core->label + "': " + os_error(e));
  }
  auto* rbase = static_cast<std::byte*>(core->registry.get_address());
  const auto* rh = reinterpret_cast<const detail::registry_header*>(rbase);
  if (core->registry.get_size() < sizeof(detail::registry_header) ||
      rh->magic != detail::registry_magic || rh->layout_version != detail::layout_version ||
      rh->incarnation != core->incarnation || rh->slot_bytes != sizeof(detail::reader_slot) ||
      core->registry.get_size() <
          sizeof(detail::registry_header) + rh->max_readers * sizeof(detail::reader_slot)) {
    return fail(errc::layout_mismatch,
                "the reader registry of store '" + core->label + "' does not match its store");
  }
  auto* slots = reinterpret_cast<detail::reader_slot*>(rbase + sizeof(detail::registry_header));
  const auto pid = static_cast<std::uint64_t>(::getpid());
  for (std::uint64_t i = 0; i < rh->max_readers && core->slot == nullptr; ++i) {
    std::uint64_t free_slot = 0;
    if (slots[i].pid.compare_exchange_strong(free_slot, pid, std::memory_order_acq_rel)) {
      slots[i].start_time.store(detail::self_start_time(), std::memory_order_release);
      core->slot = &slots[i];
    }
  }
  if (core->slot == nullptr) {
    return fail(errc::limit_exceeded, "the reader registry of store '" + core->label +
                                          "' is full (" + std::to_string(rh->max_readers) +
                                          " readers)");
  }
  return reader(std::make_unique<impl>(impl{std::move(core)}));
}

std::vector<std::string> reader::tables() const {
  return p_->core->table_names;
}

std::uint64_t reader::incarnation() const noexcept {
  return p_->core->incarnation;
}

bool reader::store_closed() const noexcept {
  return p_->core->header->state.load(std::memory_order_acquire) !=
         static_cast<std::uint64_t>(detail::store_state::ready);
}

namespace {

// What every read of a table starts with: check the reader may read here,
// find the table, announce the epoch and load its current index, then hand
// (table number, index, guard) to `use`, whose result is returned. Failures
// (a reader inherited through fork, an unknown table, an unreadable index)
// come back as errors.
template <class T, class F>
result<T> with_index(reader_core& c, std::string_view table, F&& use) {
  if (!c.owned()) return c.inherited();
  const auto t = c.table_index(table);
  if (!t) return c.unknown_table(table);
  epoch_guard guard(c);
  const index_header* ix = c.index(*t);
  if (ix == nullptr) return c.unreadable(c.header->tables[*t].root.load());
  return use(*t, ix, guard);
}

// The lookup every keyed read starts with: find `key` in `table` and hand what
// was found (`e == nullptr` if absent) to `use`, whose result is returned.
template <class T, class F>
result<T> with_entry(reader_core& c, std::string_view table, std::string_view key, F&& use) {
  const std::uint64_t hash = hash_key(key);
  return with_index<T>(c, table,
                       [&](std::uint32_t, const index_header* ix, epoch_guard& guard) -> result<T> {
                         auto found = c.find(ix, hash, key);
                         if (!found) return std::move(found).error();
                         return use(*found, guard);
                       });
}

}  // namespace

result<std::optional<Value>> reader::get(std::string_view table, std::string_view key) const {
  reader_core& c = *p_->core;
  return with_entry<std::optional<Value>>(
      c, table, key, [&](const located& found, epoch_guard&) -> result<std::optional<Value>> {
        if (found.e == nullptr) return std::optional<Value>{};
        auto first = c.first(found);  // in a bag, the oldest value
        if (!first) return std::move(first).error();
        auto v = decode_entry(first->e);
        if (!v) return std::move(v).error();
        return std::optional<Value>(std::move(*v));
      });
}

result<std::vector<Value>> reader::get_all(std::string_view table, std::string_view key) const {
  reader_core& c = *p_->core;
  return with_entry<std::vector<Value>>(
      c, table, key, [&](const located& found, epoch_guard&) -> result<std::vector<Value>> {
        std::vector<Value> out;
        if (found.e == nullptr) return out;
        auto blocks = c.chain(found);
        if (!blocks) return std::move(blocks).error();
        out.reserve(blocks->size());
        for (const located& at : *blocks) {
          auto v = decode_entry(at.e);
          if (!v) return std::move(v).error();
          out.push_back(std::move(*v));
        }
        return out;
      });
}

result<std::optional<view>> reader::get_view(std::string_view table, std::string_view key) const {
  reader_core& c = *p_->core;
  return with_entry<std::optional<view>>(
      c, table, key, [&](const located& found, epoch_guard& guard) -> result<std::optional<view>> {
        if (found.e == nullptr) return std::optional<view>{};
        auto first = c.first(found);
        if (!first) return std::move(first).error();
        return std::optional<view>(make_view(p_->core, *first, guard));
      });
}

result<reader::peeked> reader::peek(
    std::string_view table, std::string_view key,
    const std::function<void(std::span<const std::byte>)>& fn) const {
  reader_core& c = *p_->core;
  return with_entry<peeked>(
      c, table, key, [&](const located& found, epoch_guard&) -> result<peeked> {
        if (found.e == nullptr) return peeked::absent;
        auto first = c.first(found);
        if (!first) return std::move(first).error();
        if (first->e->format == static_cast<std::uint8_t>(detail::value_format::ndarray)) {
          return peeked::is_ndarray;
        }
        fn(value_of(first->e));
        return peeked::visited;
      });
}

result<bool> reader::contains(std::string_view table, std::string_view key) const {
  return with_entry<bool>(
      *p_->core, table, key,
      [](const located& found, epoch_guard&) -> result<bool> { return found.e != nullptr; });
}

result<std::size_t> reader::size(std::string_view table) const {
  reader_core& c = *p_->core;
  return with_index<std::size_t>(
      c, table, [&](std::uint32_t t, const index_header* ix, epoch_guard&) -> result<std::size_t> {
        const auto& counter = c.table_kinds[t] == table_kind::bag ? ix->values : ix->keys;
        return static_cast<std::size_t>(counter.load(std::memory_order_relaxed));
      });
}

result<void> reader::for_each(std::string_view table,
                              const std::function<bool(std::string_view, const view&)>& fn) const {
  reader_core& c = *p_->core;
  return with_index<void>(
      c, table, [&](std::uint32_t, const index_header* ix, epoch_guard& guard) -> result<void> {
        const auto* slots = reinterpret_cast<const shared_u64*>(ix + 1);
        for (std::uint64_t i = 0; i < ix->capacity; ++i) {
          const std::uint64_t s = slots[i].load(std::memory_order_seq_cst);
          if (!detail::slot_has_entry(s)) continue;
          const std::uint64_t r = detail::slot_ref(s);
          const entry_header* head = c.entry(r);
          if (head == nullptr) return c.unreadable(r);
          auto blocks = c.chain(located{r, head});
          if (!blocks) return std::move(blocks).error();
          for (const located& at : *blocks) {
            if (!fn(key_of(at.e), make_view(p_->core, at, guard))) return {};
          }
        }
        return {};
      });
}

result<std::vector<std::string>> reader::keys(std::string_view table,
                                              std::string_view prefix) const {
  reader_core& c = *p_->core;
  return with_index<std::vector<std::string>>(
      c, table,
      [&](std::uint32_t, const index_header* ix, epoch_guard&) -> result<std::vector<std::string>> {
        const auto* slots = reinterpret_cast<const shared_u64*>(ix + 1);
        std::vector<std::string> out;
        for (std::uint64_t i = 0; i < ix->capacity; ++i) {
          const std::uint64_t s = slots[i].load(std::memory_order_seq_cst);
          if (!detail::slot_has_entry(s)) continue;
          const std::uint64_t r = detail::slot_ref(s);
          const entry_header* e = c.entry(r);
          if (e == nullptr) return c.unreadable(r);
          if (key_of(e).starts_with(prefix)) out.emplace_back(key_of(e));
        }
        return out;
      });
}

// ---------------------------------------------------------------------------
// Writer side

namespace {

struct writer_segment {
  bip::mapped_region region;
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
  std::uint64_t bump = 0;  // next free offset
};

/// The writer's private view of one table (or of the table a reload builds).
struct table_state {
  std::uint32_t index = 0;  // in the directory
  std::string name;
  table_kind kind = table_kind::set;
  std::uint64_t initial_slots = min_index_capacity;
  std::uint64_t root = detail::null_ref;
  std::uint64_t capacity = 0;
  std::uint64_t keys = 0;
  std::uint64_t values = 0;
  std::uint64_t used = 0;  // keys + tombstones
  bool published = true;   // false while a reload builds it
};

struct block {
  std::uint64_t ref;
  std::uint64_t bytes;  // size class
};

struct retired_block {
  std::uint64_t ref;
  std::uint64_t bytes;
  std::uint64_t epoch;
};

struct slot_position {
  std::uint64_t slot;  // where the key is, or where it would be inserted
  std::uint64_t ref;   // its newest block, or null
};

}  // namespace

struct writer::impl {
  store_options options;
  std::string label;
  std::uint64_t incarnation = 0;
  std::vector<writer_segment> segments;
  bip::mapped_region registry;
  detail::store_header* header = nullptr;
  detail::reader_slot* reader_slots = nullptr;
  std::vector<table_state> tables;
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> free_lists;
  std::vector<retired_block> retired;
  std::vector<std::uint64_t> held;  // scratch for reclaim
  std::uint64_t epoch = 1;
  std::uint64_t bytes_used = 0;
  std::uint64_t bytes_retired = 0;
  std::uint64_t retires_since_reclaim = 0;
  std::uint64_t retired_bytes_since_reclaim = 0;
  std::chrono::steady_clock::time_point last_liveness_check{};
  buffer scratch;
  std::optional<reader> self;
  std::uint64_t generation = 0;  // detail::fork_generation() of the creating process
  bool closed = false;

  /// False in a child process that inherited this writer through fork().
  bool owned() const noexcept { return generation == detail::fork_generation(); }

  std::byte* ptr(std::uint64_t ref) noexcept {
    return segments[detail::ref_segment(ref)].base + detail::ref_offset(ref);
  }
  entry_header* entry(std::uint64_t ref) noexcept {
    return reinterpret_cast<entry_header*>(ptr(ref));
  }
  index_header* index(std::uint64_t ref) noexcept {
    return reinterpret_cast<index_header*>(ptr(ref));
  }
  shared_u64* slots(std::uint64_t ref) noexcept {
    return reinterpret_cast<shared_u64*>(index(ref) + 1);
  }

  error_info closed_error() const {
    return fail(errc::writer_gone, "store '" + label + "' is closed");
  }

  result<table_state*> table(std::string_view name) {
    if (closed) return closed_error();
    if (!owned()) {
      return fail(errc::invalid_argument,
                  "the writer of store '" + label + "' belongs to the parent process (fork)");
    }
    for (auto& t : tables) {
      if (t.name == name) return &t;
    }
    return fail(errc::not_found,
                "unknown table '" + std::string(name) + "' in store '" + label + "'");
  }

  result<void> check_key(const table_state& t, std::string_view key) const {
    if (key.size() > options.max_key_bytes) {
      return fail(errc::limit_exceeded,
                  "key of " + std::to_string(key.size()) + " bytes is over the limit of " +
                      std::to_string(options.max_key_bytes) + " bytes (table '" + t.name +
                      "' in store '" + label + "')");
    }
    return {};
  }

  result<void> add_segment(std::uint64_t payload_bytes) {
    const auto n = static_cast<std::uint32_t>(segments.size());
    if (n >= detail::max_segments) {
      return fail(errc::no_space, "store '" + label + "' has reached its limit of " +
                                      std::to_string(detail::max_segments) + " segments");
    }
    std::uint64_t bytes;
    if (n == 0) {
      bytes = std::max({options.initial_segment_bytes, min_segment_bytes,
                        detail::segment0_data_start + payload_bytes});
    } else {
      bytes = std::max(segments.back().bytes * 2, detail::segment_data_start + payload_bytes);
    }
    bytes = align_up(bytes, page_bytes);
    auto region = create_segment(segment_name(options.ns, options.name, n), bytes);
    if (!region) return std::move(region).error();
    auto* base = static_cast<std::byte*>(region->get_address());
    new (base) detail::segment_header{
        detail::store_magic, detail::layout_version, incarnation, n, bytes, {}};
    segments.push_back({std::move(*region), base, bytes,
                        n == 0 ? detail::segment0_data_start : detail::segment_data_start});
    if (header != nullptr) {
      header->segment_bytes[n].store(bytes, std::memory_order_release);
      header->segment_count.store(n + 1, std::memory_order_release);
    }
    return {};
  }

  result<block> allocate(std::uint64_t bytes) {
    const std::uint64_t cls = size_class(bytes);
    if (auto it = free_lists.find(cls); it != free_lists.end() && !it->second.empty()) {
      const std::uint64_t ref = it->second.back();
      it->second.pop_back();
      bytes_used += cls;
      return block{ref, cls};
    }
    if (segments.back().bytes - segments.back().bump < cls) {
      if (auto r = add_segment(cls); !r) return std::move(r).error();
    }
    writer_segment& seg = segments.back();
    const std::uint64_t ref =
        detail::make_ref(static_cast<std::uint32_t>(segments.size() - 1), seg.bump);
    seg.bump += cls;
    bytes_used += cls;
    return block{ref, cls};
  }

  void release(std::uint64_t ref, std::uint64_t bytes) {
    free_lists[bytes].push_back(ref);
    bytes_used -= bytes;
  }

  void retire(std::uint64_t ref, std::uint64_t bytes) {
    retired.push_back({ref, bytes, epoch});
    bytes_used -= bytes;
    bytes_retired += bytes;
    ++retires_since_reclaim;
    retired_bytes_since_reclaim += bytes;
  }

  /// Gives a block back: at once if readers never saw it, else through the retire list.
  void dispose(const table_state& t, std::uint64_t ref, std::uint64_t bytes) {
    if (t.published) {
      retire(ref, bytes);
    } else {
      release(ref, bytes);
    }
  }

  void dispose_chain(const table_state& t, std::uint64_t head) {
    while (head != detail::null_ref) {
      const entry_header* e = entry(head);
      const std::uint64_t next = e->next;
      dispose(t, head, e->block_bytes);
      head = next;
    }
  }

  /// Disposes of every entry of the index `root` and of the index itself.
  void dispose_table(const table_state& t, std::uint64_t root, std::uint64_t capacity) {
    shared_u64* s = slots(root);
    for (std::uint64_t i = 0; i < capacity; ++i) {
      const std::uint64_t v = s[i].load(std::memory_order_relaxed);
      if (detail::slot_has_entry(v)) dispose_chain(t, detail::slot_ref(v));
    }
    dispose(t, root, size_class(index_bytes(capacity)));
  }

  result<std::uint64_t> new_index(std::uint64_t capacity) {
    auto b = allocate(index_bytes(capacity));
    if (!b) return std::move(b).error();
    auto* ix = new (ptr(b->ref)) index_header{};
    ix->capacity = capacity;
    std::memset(static_cast<void*>(ix + 1), 0, capacity * sizeof(shared_u64));
    return b->ref;
  }

  void publish_root(const table_state& t) {
    if (t.published) header->tables[t.index].root.store(t.root, std::memory_order_seq_cst);
  }

  void publish_counts(const table_state& t) {
    index_header* ix = index(t.root);
    ix->keys.store(t.keys, std::memory_order_relaxed);
    ix->values.store(t.values, std::memory_order_relaxed);
  }

  /// Makes room for `extra` more keys, rebuilding the index into a larger
  /// (or tombstone-free) array and publishing it if it would pass half full.
  result<void> ensure_capacity(table_state& t, std::uint64_t extra) {
    if ((t.used + extra) * 2 <= t.capacity) return {};
    const std::uint64_t want = (t.keys + extra) * 4;
    if (want > max_index_capacity) {
      return fail(errc::limit_exceeded, "table '" + t.name + "' in store '" + label +
                                            "' cannot index " + std::to_string(t.keys + extra) +
                                            " keys");
    }
    const std::uint64_t capacity = std::bit_ceil(std::max(t.initial_slots, want));
    auto root = new_index(capacity);
    if (!root) return std::move(root).error();
    shared_u64* from = slots(t.root);
    shared_u64* to = slots(*root);
    const std::uint64_t mask = capacity - 1;
    for (std::uint64_t i = 0; i < t.capacity; ++i) {
      const std::uint64_t v = from[i].load(std::memory_order_relaxed);
      if (!detail::slot_has_entry(v)) continue;
      std::uint64_t j = entry(detail::slot_ref(v))->hash & mask;
      while (to[j].load(std::memory_order_relaxed) != detail::null_ref) j = (j + 1) & mask;
      to[j].store(v, std::memory_order_relaxed);
    }
    const std::uint64_t old_root = t.root;
    const std::uint64_t old_capacity = t.capacity;
    t.root = *root;
    t.capacity = capacity;
    t.used = t.keys;
    publish_counts(t);
    publish_root(t);
    dispose(t, old_root, size_class(index_bytes(old_capacity)));
    return {};
  }

  slot_position find_slot(const table_state& t, std::uint64_t hash, std::string_view key) {
    shared_u64* s = slots(t.root);
    const std::uint64_t mask = t.capacity - 1;
    std::uint64_t insert_at = UINT64_MAX;
    for (std::uint64_t i = hash & mask;; i = (i + 1) & mask) {
      const std::uint64_t v = s[i].load(std::memory_order_relaxed);
      if (v == detail::null_ref) return {insert_at != UINT64_MAX ? insert_at : i, v};
      if (v == detail::tombstone) {
        if (insert_at == UINT64_MAX) insert_at = i;
        continue;
      }
      if (!detail::slot_tag_matches(v, hash)) continue;
      __builtin_prefetch(ptr(detail::slot_ref(v)) + 64);  // the key, with the header
      const entry_header* e = entry(detail::slot_ref(v));
      if (e->hash == hash && key_of(e) == key) return {i, detail::slot_ref(v)};
    }
  }

  /// Writes a new, unpublished entry block for `key` and `value`.
  result<block> build_entry(const table_state& t, std::string_view key, std::uint64_t hash,
                            const Value& value) {
    std::span<const std::byte> payload;
    auto format = detail::value_format::encoded;
    std::uint8_t type = 0;
    std::span<const std::uint64_t> shape;
    if (value.is_ndarray()) {
      const ndarray& a = value.as<ndarray>();
      payload = a.bytes();
      format = detail::value_format::ndarray;
      type = static_cast<std::uint8_t>(a.type());
      shape = a.shape();
    } else {
      scratch.clear();
      try {
        encode_to(value, scratch);
      } catch (const slither::error& e) {
        return fail(e.code(), "cannot store the value of key " + printable(key) + " in table '" +
                                  t.name + "': " + e.what());
      }
      payload = scratch;
    }
    if (payload.size() > options.max_value_bytes) {
      return fail(errc::limit_exceeded,
                  "value of " + std::to_string(payload.size()) + " bytes for key " +
                      printable(key) + " is over the limit of " +
                      std::to_string(options.max_value_bytes) + " bytes (table '" + t.name +
                      "' in store '" + label + "')");
    }
    const std::uint64_t shape_at = shape_offset(key.size());
    const std::uint64_t value_at =
        align_up(shape_at + shape.size() * sizeof(std::uint64_t),
                 format == detail::value_format::ndarray ? ndarray::alignment : 8);
    auto b = allocate(value_at + payload.size());
    if (!b) return std::move(b).error();
    std::byte* p = ptr(b->ref);
    auto* e = new (p) entry_header{};
    e->hash = hash;
    e->count = 1;
    e->value_bytes = payload.size();
    e->key_bytes = static_cast<std::uint32_t>(key.size());
    e->value_offset = static_cast<std::uint32_t>(value_at);
    e->format = static_cast<std::uint8_t>(format);
    e->dtype = type;
    e->ndim = static_cast<std::uint8_t>(shape.size());
    e->block_bytes = b->bytes;
    std::memcpy(p + sizeof(entry_header), key.data(), key.size());
    if (!shape.empty()) std::memcpy(p + shape_at, shape.data(), shape.size_bytes());
    if (!payload.empty()) std::memcpy(p + value_at, payload.data(), payload.size());
    return *b;
  }

  /// Publishes a built block under `key` (replacing, or appending in a bag).
  /// Needs room for one more key (`ensure_capacity`). Returns the new version.
  std::uint64_t link(table_state& t, const block& b, std::uint64_t hash, std::string_view key) {
    const slot_position pos = find_slot(t, hash, key);
    entry_header* e = entry(b.ref);
    shared_u64& slot = slots(t.root)[pos.slot];
    if (pos.ref != detail::null_ref) {
      const entry_header* old = entry(pos.ref);
      e->version = old->version + 1;
      if (t.kind == table_kind::bag) {
        e->next = pos.ref;
        e->count = old->count + 1;
        ++t.values;
        slot.store(detail::slot_value(b.ref, hash), std::memory_order_seq_cst);
      } else {
        const std::uint64_t old_bytes = old->block_bytes;
        slot.store(detail::slot_value(b.ref, hash), std::memory_order_seq_cst);
        dispose(t, pos.ref, old_bytes);
      }
    } else {
      e->version = 1;
      if (slot.load(std::memory_order_relaxed) == detail::null_ref) ++t.used;
      ++t.keys;
      ++t.values;
      slot.store(detail::slot_value(b.ref, hash), std::memory_order_seq_cst);
    }
    publish_counts(t);
    return e->version;
  }

  result<std::uint64_t> put(table_state& t, std::string_view key, const Value& value) {
    if (auto r = check_key(t, key); !r) return std::move(r).error();
    const std::uint64_t hash = hash_key(key);
    if (auto r = ensure_capacity(t, 1); !r) return std::move(r).error();
    __builtin_prefetch(&slots(t.root)[hash & (t.capacity - 1)]);  // overlaps the encoding
    auto b = build_entry(t, key, hash, value);
    if (!b) return std::move(b).error();
    return link(t, *b, hash, key);
  }

  void clear_slot(detail::reader_slot& s) noexcept {
    for (auto& h : s.holds) h.store(0, std::memory_order_relaxed);
    for (auto& l : s.lanes) l.store(0, std::memory_order_relaxed);
    s.overflow_epoch.store(0, std::memory_order_relaxed);
    s.start_time.store(0, std::memory_order_relaxed);
    s.pid.store(0, std::memory_order_release);
  }

  std::uint64_t reclaim(bool check_liveness) {
    // Every retired block was unlinked by a seq_cst store (a slot or a table
    // root) before the seq_cst lane loads below, and readers claim a lane with
    // a seq_cst RMW before their seq_cst index loads: either we see a reader's
    // lane, or that reader cannot reach any block retired so far.
    ++epoch;
    header->global_epoch.store(epoch, std::memory_order_seq_cst);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_liveness_check >= liveness_interval) check_liveness = true;
    if (check_liveness) last_liveness_check = now;

    std::uint64_t oldest = epoch;
    held.clear();
    for (std::uint64_t i = 0; i < options.max_readers; ++i) {
      detail::reader_slot& s = reader_slots[i];
      const std::uint64_t pid = s.pid.load(std::memory_order_acquire);
      if (pid == 0) continue;
      if (check_liveness &&
          !detail::process_alive(pid, s.start_time.load(std::memory_order_acquire))) {
        clear_slot(s);
        continue;
      }
      for (const auto& lane : s.lanes) {
        const std::uint64_t e = lane.load(std::memory_order_seq_cst);
        if (e != 0) oldest = std::min(oldest, e);
      }
      if (const std::uint64_t e = s.overflow_epoch.load(std::memory_order_seq_cst); e != 0) {
        oldest = std::min(oldest, e);
      }
      for (const auto& h : s.holds) {
        if (const std::uint64_t r = h.load(std::memory_order_acquire); r != 0) held.push_back(r);
      }
    }
    std::sort(held.begin(), held.end());

    std::uint64_t freed = 0;
    std::erase_if(retired, [&](const retired_block& r) {
      if (r.epoch >= oldest || std::binary_search(held.begin(), held.end(), r.ref)) return false;
      free_lists[r.bytes].push_back(r.ref);
      bytes_retired -= r.bytes;
      freed += r.bytes;
      return true;
    });
    retires_since_reclaim = 0;
    retired_bytes_since_reclaim = 0;
    return freed;
  }

  void maybe_reclaim() {
    if (retires_since_reclaim >= reclaim_every_retires ||
        retired_bytes_since_reclaim >= reclaim_every_bytes) {
      reclaim(false);
    }
  }

  void unlink_all() noexcept {
    if (!owned()) {
      // An inherited copy: the store still belongs to the parent. Drop our
      // mappings and the inherited reader without touching shared state.
      self.reset();
      segments.clear();
      registry = bip::mapped_region();
      return;
    }
    if (header != nullptr) {
      header->state.store(static_cast<std::uint64_t>(detail::store_state::closed),
                          std::memory_order_release);
    }
    self.reset();
    segments.clear();
    registry = bip::mapped_region();
    header = nullptr;
    reader_slots = nullptr;
    remove_store_objects(options.ns, options.name);
  }
};

namespace {

/// The loader a reload hands to its fill function: it writes into the
/// unpublished table that reload switches to when fill succeeds.
class table_loader final : public loader {
 public:
  table_loader(writer::impl& w, table_state& t) : w_(w), t_(t) {}
  result<void> put(std::string_view key, const Value& value) override {
    auto r = w_.put(t_, key, value);
    if (!r) return std::move(r).error();
    return {};
  }

 private:
  writer::impl& w_;
  table_state& t_;
};

result<void> check_specs(const store_options& o, std::span<const table_spec> tables) {
  if (!valid_name(o.ns) || !valid_name(o.name)) {
    return fail(errc::invalid_argument, "bad store name '" + o.ns + "." + o.name +
                                            "': use 1-64 characters of [A-Za-z0-9_-]");
  }
  if (o.max_key_bytes == 0 || o.max_key_bytes > max_key_limit) {
    return fail(errc::invalid_argument, "max_key_bytes " + std::to_string(o.max_key_bytes) +
                                            " of store '" + o.name + "' is not in 1.." +
                                            std::to_string(max_key_limit));
  }
  if (o.max_readers == 0 || o.max_readers > 65536) {
    return fail(errc::invalid_argument, "max_readers " + std::to_string(o.max_readers) +
                                            " of store '" + o.name + "' is not in 1..65536");
  }
  if (tables.empty() || tables.size() > detail::max_tables) {
    return fail(errc::invalid_argument,
                "store '" + o.name + "' declares " + std::to_string(tables.size()) +
                    " tables; it needs 1.." + std::to_string(detail::max_tables));
  }
  for (std::size_t i = 0; i < tables.size(); ++i) {
    const table_spec& t = tables[i];
    if (t.name.empty() || t.name.size() > detail::max_table_name ||
        t.name.find('\0') != std::string::npos) {
      return fail(errc::invalid_argument, "bad table name '" + t.name + "' in store '" + o.name +
                                              "': use 1-" + std::to_string(detail::max_table_name) +
                                              " characters");
    }
    if (t.kind != table_kind::set && t.kind != table_kind::bag) {
      return fail(errc::invalid_argument, "table '" + t.name + "' has an unknown kind");
    }
    if (t.initial_capacity > (std::uint64_t{1} << 32)) {
      return fail(errc::invalid_argument,
                  "initial_capacity of table '" + t.name + "' is over the limit of 2^32");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (tables[j].name == t.name) {
        return fail(errc::invalid_argument,
                    "table '" + t.name + "' is declared twice in store '" + o.name + "'");
      }
    }
  }
  return {};
}

/// Refuses a store name held by a live writer; removes the objects of a dead one.
result<void> clear_stale(const store_options& o) {
  const std::string seg0 = segment_name(o.ns, o.name, 0);
  try {
    bip::shared_memory_object shm(bip::open_only, seg0.c_str(), bip::read_only);
    bip::offset_t size = 0;
    constexpr std::uint64_t need = detail::store_header_offset + 16;
    if (shm.get_size(size) && static_cast<std::uint64_t>(size) >= need) {
      bip::mapped_region region(shm, bip::read_only, 0, need);
      std::uint64_t ident[2];
      std::memcpy(ident,
                  static_cast<const std::byte*>(region.get_address()) + detail::store_header_offset,
                  sizeof(ident));
      if (detail::process_alive(ident[0], ident[1])) {
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

std::uint64_t random_incarnation() {
  std::random_device rd;
  std::uint64_t v = 0;
  while (v == 0) v = (std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(::getpid());
  return v;
}

}  // namespace

writer::writer(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}
writer::writer(writer&&) noexcept = default;
writer& writer::operator=(writer&& other) noexcept {
  if (this != &other) {
    close();
    p_ = std::move(other.p_);
  }
  return *this;
}
writer::~writer() {
  close();
}

result<writer> writer::create(const store_options& options, std::span<const table_spec> tables) {
  if (auto r = check_specs(options, tables); !r) return std::move(r).error();
  if (auto r = clear_stale(options); !r) return std::move(r).error();

  auto p = std::make_unique<impl>();
  p->options = options;
  p->label = options.ns + "." + options.name;
  p->incarnation = random_incarnation();
  p->generation = detail::fork_generation();
  auto abandon = [&p](error_info e) {
    p->unlink_all();
    return e;
  };

  if (auto r = p->add_segment(0); !r) return abandon(std::move(r).error());
  auto* hdr = new (p->segments[0].base + detail::store_header_offset) detail::store_header{};
  hdr->writer_pid = static_cast<std::uint64_t>(::getpid());
  hdr->writer_start_time = detail::self_start_time();
  hdr->global_epoch.store(p->epoch, std::memory_order_relaxed);
  hdr->segment_bytes[0].store(p->segments[0].bytes, std::memory_order_relaxed);
  hdr->segment_count.store(1, std::memory_order_relaxed);
  hdr->table_count = tables.size();
  hdr->max_readers = options.max_readers;
  p->header = hdr;

  const std::uint64_t registry_bytes =
      sizeof(detail::registry_header) + options.max_readers * sizeof(detail::reader_slot);
  auto reg = create_segment(registry_name(options.ns, options.name), registry_bytes);
  if (!reg) return abandon(std::move(reg).error());
  p->registry = std::move(*reg);
  auto* rbase = static_cast<std::byte*>(p->registry.get_address());
  new (rbase)
      detail::registry_header{detail::registry_magic, detail::layout_version,      p->incarnation,
                              options.max_readers,    sizeof(detail::reader_slot), {}};
  p->reader_slots = reinterpret_cast<detail::reader_slot*>(rbase + sizeof(detail::registry_header));
  for (std::uint64_t i = 0; i < options.max_readers; ++i)
    new (&p->reader_slots[i]) detail::reader_slot{};

  for (std::size_t i = 0; i < tables.size(); ++i) {
    table_state t;
    t.index = static_cast<std::uint32_t>(i);
    t.name = tables[i].name;
    t.kind = tables[i].kind;
    t.initial_slots = initial_slots(tables[i].initial_capacity);
    auto root = p->new_index(t.initial_slots);
    if (!root) return abandon(std::move(root).error());
    t.root = *root;
    t.capacity = t.initial_slots;
    detail::table_entry& dir = hdr->tables[i];
    std::memcpy(dir.name, t.name.data(), t.name.size());
    dir.kind = static_cast<std::uint64_t>(t.kind);
    dir.root.store(t.root, std::memory_order_relaxed);
    p->tables.push_back(std::move(t));
  }
  hdr->state.store(static_cast<std::uint64_t>(detail::store_state::ready),
                   std::memory_order_release);

  auto self = reader::attach(options.ns, options.name);
  if (!self) return abandon(std::move(self).error());
  p->self.emplace(std::move(*self));
  return writer(std::move(p));
}

result<std::uint64_t> writer::put(std::string_view table, std::string_view key,
                                  const Value& value) {
  auto t = p_->table(table);
  if (!t) return std::move(t).error();
  auto v = p_->put(**t, key, value);
  if (v) p_->maybe_reclaim();
  return v;
}

result<void> writer::put_many(std::string_view table,
                              std::span<const std::pair<std::string, Value>> entries) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  for (const auto& [key, value] : entries) {
    if (auto r = p_->check_key(t, key); !r) return std::move(r).error();
  }
  if (auto r = p_->ensure_capacity(t, entries.size()); !r) return std::move(r).error();
  std::vector<block> built;
  std::vector<std::uint64_t> hashes;
  built.reserve(entries.size());
  hashes.reserve(entries.size());
  for (const auto& [key, value] : entries) {
    hashes.push_back(hash_key(key));
    auto b = p_->build_entry(t, key, hashes.back(), value);
    if (!b) {
      for (const block& done : built) p_->release(done.ref, done.bytes);
      return std::move(b).error();
    }
    built.push_back(*b);
  }
  // Random keys miss the cache twice (index slot, then the key's block):
  // prefetch slots 16 entries ahead and, once a slot is in, its block 8 ahead.
  constexpr std::size_t slot_ahead = 16, block_ahead = 8;
  shared_u64* slots = p_->slots(t.root);
  const std::uint64_t mask = t.capacity - 1;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (i + slot_ahead < entries.size()) {
      __builtin_prefetch(&slots[hashes[i + slot_ahead] & mask]);
    }
    if (i + block_ahead < entries.size()) {
      const std::uint64_t v = slots[hashes[i + block_ahead] & mask].load(std::memory_order_relaxed);
      if (detail::slot_has_entry(v)) __builtin_prefetch(p_->ptr(detail::slot_ref(v)));
    }
    p_->link(t, built[i], hashes[i], entries[i].first);
  }
  p_->maybe_reclaim();
  return {};
}

result<bool> writer::erase(std::string_view table, std::string_view key) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  if (auto r = p_->check_key(t, key); !r) return std::move(r).error();
  const slot_position pos = p_->find_slot(t, hash_key(key), key);
  if (pos.ref == detail::null_ref) return false;
  p_->slots(t.root)[pos.slot].store(detail::tombstone, std::memory_order_seq_cst);
  --t.keys;
  t.values -= p_->entry(pos.ref)->count;
  p_->publish_counts(t);
  p_->dispose_chain(t, pos.ref);
  p_->maybe_reclaim();
  return true;
}

result<std::uint64_t> writer::update(std::string_view table, std::string_view key,
                                     const std::function<Value(const std::optional<Value>&)>& fn) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  if (t.kind != table_kind::set) {
    return fail(errc::invalid_argument, "update needs a set table; '" + t.name + "' is a bag");
  }
  if (auto r = p_->check_key(t, key); !r) return std::move(r).error();
  const slot_position pos = p_->find_slot(t, hash_key(key), key);
  std::optional<Value> current;
  if (pos.ref != detail::null_ref) {
    auto v = decode_entry(p_->entry(pos.ref));
    if (!v) return std::move(v).error();
    current = std::move(*v);
  }
  Value next;
  try {
    next = fn(current);
  } catch (const slither::error& e) {
    return fail(e.code(), "update of key " + printable(key) + " in table '" + t.name +
                              "' failed: " + e.what());
  } catch (const std::exception& e) {
    return fail(errc::invalid_argument, "update of key " + printable(key) + " in table '" + t.name +
                                            "' threw: " + e.what());
  }
  auto v = p_->put(t, key, next);
  if (v) p_->maybe_reclaim();
  return v;
}

result<std::uint64_t> writer::compare_and_set(std::string_view table, std::string_view key,
                                              std::uint64_t expected_version, const Value& value) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  if (t.kind != table_kind::set) {
    return fail(errc::invalid_argument,
                "compare_and_set needs a set table; '" + t.name + "' is a bag");
  }
  if (auto r = p_->check_key(t, key); !r) return std::move(r).error();
  const slot_position pos = p_->find_slot(t, hash_key(key), key);
  const std::uint64_t found = pos.ref == detail::null_ref ? 0 : p_->entry(pos.ref)->version;
  if (found != expected_version) {
    return fail(errc::conflict, "key " + printable(key) + " in table '" + t.name +
                                    "' is at version " + std::to_string(found) + ", not " +
                                    std::to_string(expected_version));
  }
  auto v = p_->put(t, key, value);
  if (v) p_->maybe_reclaim();
  return v;
}

result<void> writer::clear(std::string_view table) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  auto root = p_->new_index(t.initial_slots);
  if (!root) return std::move(root).error();
  const std::uint64_t old_root = t.root;
  const std::uint64_t old_capacity = t.capacity;
  t.root = *root;
  t.capacity = t.initial_slots;
  t.keys = t.values = t.used = 0;
  p_->publish_root(t);
  p_->dispose_table(t, old_root, old_capacity);
  p_->maybe_reclaim();
  return {};
}

result<void> writer::reload(std::string_view table,
                            const std::function<result<void>(loader&)>& fill) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  table_state next = t;
  next.published = false;
  auto root = p_->new_index(t.initial_slots);
  if (!root) return std::move(root).error();
  next.root = *root;
  next.capacity = t.initial_slots;
  next.keys = next.values = next.used = 0;

  table_loader load(*p_, next);
  result<void> filled;
  try {
    filled = fill(load);
  } catch (const slither::error& e) {
    filled = fail(e.code(), e.what());
  } catch (const std::exception& e) {
    filled = fail(errc::invalid_argument, std::string("the fill function threw: ") + e.what());
  }
  if (!filled) {
    p_->dispose_table(next, next.root, next.capacity);
    error_info e = std::move(filled).error();
    e.message = "reload of table '" + t.name + "' in store '" + p_->label +
                "' failed; its contents are unchanged: " + e.message;
    return e;
  }
  const table_state old = t;
  next.published = true;
  t = next;
  p_->publish_root(t);
  p_->dispose_table(old, old.root, old.capacity);
  p_->maybe_reclaim();
  return {};
}

std::uint64_t writer::reclaim() {
  if (!p_ || p_->closed || !p_->owned()) return 0;
  return p_->reclaim(true);
}

store_stats writer::stats() const {
  store_stats s;
  if (!p_ || p_->closed) return s;
  for (const auto& t : p_->tables) s.entries += t.values;
  s.bytes_used = p_->bytes_used;
  s.bytes_retired = p_->bytes_retired;
  s.segments = p_->segments.size();
  for (const auto& seg : p_->segments) s.segment_bytes += seg.bytes;
  for (std::uint64_t i = 0; i < p_->options.max_readers; ++i) {
    if (p_->reader_slots[i].pid.load(std::memory_order_acquire) != 0) ++s.readers;
  }
  return s;
}

std::uint64_t writer::incarnation() const noexcept {
  return p_->incarnation;
}

const reader& writer::read() const {
  return *p_->self;
}

void writer::close() noexcept {
  if (!p_ || p_->closed) return;
  p_->closed = true;
  p_->unlink_all();
}

result<writer> open_store(const store_definition& def) {
  auto w = writer::create(def.options, def.tables);
  if (!w) return w;
  if (def.load) {
    result<void> loaded;
    try {
      loaded = def.load(*w);
    } catch (const std::exception& e) {
      loaded = fail(errc::invalid_argument, std::string("the load function threw: ") + e.what());
    }
    if (!loaded) {
      error_info e = std::move(loaded).error();
      e.message =
          "loading store '" + def.options.ns + "." + def.options.name + "' failed: " + e.message;
      return e;
    }
  }
  return w;
}

}  // namespace slither::shm
