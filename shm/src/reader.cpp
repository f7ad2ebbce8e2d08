// The reader: attach to a store by name, verify and map it read-only, and
// read it lock-free inside an epoch (epoch.hpp).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "btree.hpp"
#include "epoch.hpp"
#include "get_many.hpp"
#include "index.hpp"
#include "reader_core.hpp"
#include "registry.hpp"
#include "slither/core/codec.hpp"
#include "slither/shm/detail/sys.hpp"
#include "slither/shm/store.hpp"
#include "writer_lock.hpp"

namespace slither::shm {

using detail::check_value;
using detail::decode_entry;
using detail::entry_header;
using detail::epoch_guard;
using detail::hash_key;
using detail::index_header;
using detail::key_of;
using detail::located;
using detail::make_view;
using detail::printable;
using detail::reader_core;
using detail::shape_of;
using detail::shared_u64;
using detail::valid_name;
using detail::value_of;

// ---------------------------------------------------------------------------
// reader_core

reader_core::~reader_core() {
  detail::unregister_fork_aware(this);
  // Not after a fork whose child shares the slot: the sweep frees it once
  // both processes are gone.
  if (usable && shared_forks.load(std::memory_order_relaxed) == 0 &&
      slot.load(std::memory_order_relaxed) != nullptr) {
    detail::release_slot(claim);
  }
  registry_fd.close();  // drops the slot's lock
}

error_info reader_core::unknown_table(std::string_view table) const {
  return fail(errc::not_found,
              "unknown table '" + std::string(table) + "' in store '" + label + "'");
}

error_info reader_core::inherited() const {
  return fail(errc::invalid_argument,
              "this reader of store '" + label +
                  "' was inherited through fork() by a process that could not get a registry "
                  "slot of its own; attach again");
}

error_info reader_core::unreadable(std::uint64_t ref) const {
  return fail(errc::io_error, "store '" + label + "': cannot read block at segment " +
                                  std::to_string(detail::ref_segment(ref)) + " offset " +
                                  std::to_string(detail::ref_offset(ref)) +
                                  " (segment missing, not ours, or smaller than its header says; "
                                  "was the store closed?)");
}

error_info reader_core::corrupt(std::uint64_t ref, std::string_view what) const {
  return fail(errc::layout_mismatch, "store '" + label + "': the block at segment " +
                                         std::to_string(detail::ref_segment(ref)) + " offset " +
                                         std::to_string(detail::ref_offset(ref)) + " is corrupt (" +
                                         std::string(what) + ")");
}

const std::byte* reader_core::map_segment(std::uint32_t n) noexcept {
  try {
    std::lock_guard lock(map_mutex);
    if (const auto* base = bases[n].load(std::memory_order_acquire)) return base;
    const std::uint64_t bytes = header->segment_bytes[n].load(std::memory_order_acquire);
    if (bytes < sizeof(detail::segment_header)) return nullptr;
    const std::string seg = segment_name(ns, name, n);
    auto obj = detail::open_object(seg, false, owner_uid);
    // Smaller than its header says: mapping it would SIGBUS on the missing pages.
    if (!obj || obj->bytes < bytes) return nullptr;
    auto map = detail::map_object(obj->fd.get(), bytes, false, seg);
    if (!map) return nullptr;
    const auto* sh = reinterpret_cast<const detail::segment_header*>(map->data());
    if (sh->magic != detail::store_magic || sh->incarnation != incarnation || sh->index != n ||
        sh->bytes != bytes) {
      return nullptr;
    }
    const std::byte* base = map->data();
    regions[n] = std::move(*map);
    sizes[n].store(bytes, std::memory_order_relaxed);
    backed[n].store(obj->allocated, std::memory_order_relaxed);
    segment_fds[n] = std::move(obj->fd);
    bases[n].store(base, std::memory_order_release);
    return base;
  } catch (const std::exception&) {
    return nullptr;
  }
}

void reader_core::look_at_backing(std::uint32_t n) noexcept {
  struct stat st {};
  if (detail::sys().fstat(segment_fds[n].get(), &st) != 0) return;  // keep what was seen
  backed[n].store(std::min(detail::allocated_bytes(st), sizes[n].load(std::memory_order_relaxed)),
                  std::memory_order_relaxed);
}

result<std::vector<located>> reader_core::chain(located head) {
  std::vector<located> out;
  // Never reserve what a block claims: the walk is bounded by real blocks.
  out.reserve(std::min<std::uint64_t>(detail::count_of(head.e), 16));
  for (located at = head;;) {
    out.push_back(at);
    const std::uint64_t count = detail::count_of(at.e);
    const std::uint64_t next_ref = detail::next_of(at.e);
    if (next_ref == detail::null_ref) {
      if (count != 1) return corrupt(head.ref, "a bag chain ends early");
      break;
    }
    if (count <= 1) return corrupt(head.ref, "a bag chain is longer than it counts");
    const detail::entry_block* next = entry(next_ref);
    if (next == nullptr) return unreadable(next_ref);
    // Counts fall by one per block: a chain that loops cannot pass this.
    if (detail::count_of(next) != count - 1) {
      return corrupt(head.ref, "a bag chain's counts do not fall");
    }
    at = located{next_ref, next};
  }
  std::reverse(out.begin(), out.end());
  return out;
}

result<located> reader_core::first(located head) {
  if (detail::next_of(head.e) == detail::null_ref) return head;
  // The head references the chain's end: it must be a last block (count 1,
  // no next) of the same key, else the store is corrupt.
  const std::uint64_t first_ref = detail::first_of(head.e);
  const detail::entry_block* oldest = entry(first_ref);
  if (oldest == nullptr) return unreadable(first_ref);
  if (detail::count_of(oldest) != 1 || detail::next_of(oldest) != detail::null_ref ||
      key_of(oldest) != key_of(head.e)) {
    return corrupt(head.ref, "a bag's first value is not its chain's end");
  }
  return located{first_ref, oldest};
}

bool reader_core::refresh_tables() noexcept {
  std::lock_guard lock(tables_mutex);
  const std::uint64_t count = header->table_count.load(std::memory_order_acquire);
  if (count > detail::max_tables) return false;
  std::uint32_t known = tables_known.load(std::memory_order_relaxed);
  for (; known < count; ++known) {
    const auto& t = header->tables[known];
    // A dropped entry's kind reads as dropped: such a table is never found,
    // so the kind it had does not matter.
    const std::uint64_t kind = t.kind.load(std::memory_order_acquire);
    if (kind != detail::dropped_kind && kind != static_cast<std::uint64_t>(table_kind::set) &&
        kind != static_cast<std::uint64_t>(table_kind::bag) &&
        kind != static_cast<std::uint64_t>(table_kind::ordered_set)) {
      return false;
    }
    try {
      table_names[known].assign(t.name, strnlen(t.name, sizeof(t.name)));
    } catch (const std::bad_alloc&) {
      return false;
    }
    table_kinds[known] = static_cast<table_kind>(kind);
  }
  tables_known.store(known, std::memory_order_release);
  return true;
}

std::vector<std::string> reader_core::live_tables() noexcept {
  (void)refresh_tables();  // a corrupt newer entry leaves the ones known
  std::vector<std::string> out;
  const std::uint32_t known = tables_known.load(std::memory_order_acquire);
  try {
    for (std::uint32_t i = 0; i < known; ++i) {
      if (table_live(i)) out.push_back(table_names[i]);
    }
  } catch (const std::bad_alloc&) {
  }
  return out;
}

// ---------------------------------------------------------------------------
// view

std::span<const std::byte> view::bytes() const noexcept {
  return value_of(s_->entry);
}

bool view::is_ndarray() const noexcept {
  return detail::format_of(s_->entry) == detail::value_format::ndarray;
}

ndarray view::array() const {
  if (!is_ndarray()) {
    throw slither::error(errc::invalid_argument,
                         "the value of key " + printable(key_of(s_->entry)) + " is not an ndarray");
  }
  // Its dtype and shape were checked against the block when the view was made.
  const entry_header* e = detail::full_of(s_->entry);
  return ndarray::view(static_cast<dtype>(e->dtype), shape_of(e), value_of(s_->entry).data(), s_);
}

Value view::value() const {
  auto v = decode_entry(s_->entry);
  if (!v) throw slither::error(v.error());
  return std::move(*v);
}

std::uint64_t view::version() const noexcept {
  return detail::version_of(s_->entry);
}

// ---------------------------------------------------------------------------
// attach

namespace {

/// Maps and checks segment 0. Its state is read first: a store still being
/// created says so, whatever else its header holds yet.
result<void> attach_header(reader_core& c) {
  const std::string seg0 = segment_name(c.ns, c.name, 0);
  auto obj = detail::open_object(seg0, false, c.owner_uid);
  if (!obj) {
    if (obj.error().code == errc::not_found) {
      return fail(errc::not_found,
                  "no store '" + c.label + "' (shared memory '" + seg0 + "' does not exist)");
    }
    return fail(obj.error().code,
                "cannot attach to store '" + c.label + "': " + obj.error().message);
  }
  const std::string creating = "store '" + c.label + "' is still being created";
  if (obj->bytes < detail::store_state_offset + sizeof(shared_u64)) {
    return fail(errc::not_found, creating);
  }
  auto map = detail::map_object(obj->fd.get(), obj->bytes, false, seg0);
  if (!map) return std::move(map).error();
  const std::byte* base = map->data();
  const auto state = static_cast<detail::store_state>(
      reinterpret_cast<const shared_u64*>(base + detail::store_state_offset)
          ->load(std::memory_order_acquire));
  if (state == detail::store_state::creating) return fail(errc::not_found, creating);
  const auto* sh = reinterpret_cast<const detail::segment_header*>(base);
  if (sh->magic != detail::store_magic || sh->layout_version != detail::layout_version) {
    return fail(errc::layout_mismatch,
                "store '" + c.label + "' has layout version " + std::to_string(sh->layout_version) +
                    (sh->magic != detail::store_magic ? " and an unknown magic" : "") +
                    "; this build reads version " + std::to_string(detail::layout_version));
  }
  if (state == detail::store_state::closed) {
    return fail(errc::writer_gone, "store '" + c.label + "' was closed by its writer");
  }
  const auto* hdr =
      reinterpret_cast<const detail::store_header*>(base + detail::store_header_offset);
  auto corrupt = [&](const std::string& why) {
    return fail(errc::layout_mismatch, "store '" + c.label + "' has a corrupt header: " + why);
  };
  if (state != detail::store_state::ready) return corrupt("unknown state");
  if (obj->bytes < detail::segment0_data_start || sh->bytes < detail::segment0_data_start ||
      sh->index != 0 || hdr->segment_bytes[0].load(std::memory_order_relaxed) != sh->bytes) {
    return corrupt("segment 0 sizes do not agree");
  }
  if (sh->bytes > obj->bytes) {
    return fail(errc::layout_mismatch, "store '" + c.label + "': segment 0 is " +
                                           std::to_string(obj->bytes) + " bytes, its header says " +
                                           std::to_string(sh->bytes));
  }
  c.header = hdr;
  if (!c.refresh_tables()) return corrupt("a table count over the limit, or an unknown kind");
  if (detail::check_writer(c.ns, c.name, sh->incarnation, c.owner_uid) ==
      detail::writer_seen::gone) {
    return fail(errc::writer_gone, "the writer of store '" + c.label + "' (pid " +
                                       std::to_string(hdr->writer_pid) + ") is gone");
  }
  c.incarnation = sh->incarnation;
  c.hash_seed = hdr->hash_seed;
  c.sizes[0].store(sh->bytes, std::memory_order_relaxed);
  c.backed[0].store(std::min(obj->allocated, sh->bytes), std::memory_order_relaxed);
  c.segment_fds[0] = std::move(obj->fd);
  c.bases[0].store(base, std::memory_order_release);
  c.regions[0] = std::move(*map);
  return {};
}

/// Maps and checks the reader registry (read-write: the only object a reader writes).
result<void> attach_registry(reader_core& c) {
  const std::string reg = registry_name(c.ns, c.name);
  auto obj = detail::open_object(reg, true, c.owner_uid);
  if (!obj) {
    if (obj.error().code == errc::not_found) {
      return fail(errc::writer_gone,
                  "store '" + c.label + "' has no reader registry: it is being closed");
    }
    return fail(obj.error().code,
                "cannot attach to store '" + c.label + "': " + obj.error().message);
  }
  const auto mismatch = fail(errc::layout_mismatch, "the reader registry of store '" + c.label +
                                                        "' does not match its store");
  if (obj->bytes < sizeof(detail::registry_header)) return mismatch;
  auto map = detail::map_object(obj->fd.get(), obj->bytes, true, reg);
  if (!map) return std::move(map).error();
  const auto* rh = reinterpret_cast<const detail::registry_header*>(map->data());
  if (rh->magic != detail::registry_magic || rh->layout_version != detail::layout_version ||
      rh->incarnation != c.incarnation || rh->slot_bytes != sizeof(detail::reader_slot) ||
      rh->max_readers == 0 || rh->max_readers > detail::max_readers_limit ||
      obj->bytes < detail::slot_offset(rh->max_readers)) {
    return mismatch;
  }
  c.slots = reinterpret_cast<detail::reader_slot*>(map->data() + sizeof(detail::registry_header));
  c.slot_count = rh->max_readers;
  c.registry_dev = obj->dev;
  c.registry_ino = obj->ino;
  c.registry_fd = std::move(obj->fd);
  c.registry = std::move(*map);
  return {};
}

}  // namespace

struct SLITHER_SHM_NO_EXPORT reader::impl {
  std::shared_ptr<reader_core> core;
};

namespace {
// What every read of a moved-from reader returns (its state went with the move).
error_info moved_from() {
  return fail(errc::invalid_argument,
              "this shm::reader was moved from: use the reader it was moved to, or attach again");
}

// A read that collects its result in memory (`range`, `keys`, `get_all`,
// `get_many`): a result too large for this process's memory is
// `limit_exceeded`, naming the read, its table and its store, not a
// std::bad_alloc (what was collected is freed before the error is made).
template <class T, class F>
result<T> collecting(const reader_core& c, const char* what, std::string_view table, F&& read) {
  try {
    return read();
  } catch (const std::bad_alloc&) {
    return fail(errc::limit_exceeded, std::string(what) + " of table '" + std::string(table) +
                                          "' in store '" + c.label +
                                          "' does not fit in this process's memory");
  }
}
}  // namespace

reader::reader(std::unique_ptr<impl> p) noexcept : p_(std::move(p)) {}
reader::reader(reader&&) noexcept = default;
reader& reader::operator=(reader&&) noexcept = default;
reader::~reader() = default;

result<reader> reader::attach(std::string_view ns, std::string_view name,
                              std::optional<uid_t> owner) {
  if (!valid_name(ns) || !valid_name(name)) {
    return fail(errc::invalid_argument, "bad store name '" + std::string(ns) + "." +
                                            std::string(name) +
                                            "': use 1-64 characters of [A-Za-z0-9_-]");
  }
  auto core = std::make_shared<reader_core>();
  core->ns = ns;
  core->name = name;
  core->label = core->ns + "." + core->name;
  core->owner_uid = owner.value_or(::geteuid());
  if (auto r = attach_header(*core); !r) return std::move(r).error();
  if (auto r = attach_registry(*core); !r) return std::move(r).error();
  core->fast_fences =
      core->header->fences == static_cast<std::uint64_t>(detail::fence_mode::membarrier) &&
      detail::register_for_writer_barriers();
  // Known to fork() before it holds a slot, so a child never shares its lock.
  detail::register_fork_aware(core.get());
  {
    std::lock_guard lock(core->claim_mutex);
    const auto c = detail::claim_slot(core->registry_fd.get(), core->slots, core->slot_count,
                                      static_cast<std::uint64_t>(::getpid()));
    if (!c) {
      return fail(errc::limit_exceeded, "the reader registry of store '" + core->label +
                                            "' is full (" + std::to_string(core->slot_count) +
                                            " readers)");
    }
    core->claim = *c;
    core->slot.store(c->slot, std::memory_order_release);
  }
  return reader(std::make_unique<impl>(impl{std::move(core)}));
}

std::vector<std::string> reader::tables() const {
  if (!p_) throw error(moved_from());
  return p_->core->live_tables();
}

std::uint64_t reader::incarnation() const noexcept {
  return p_ ? p_->core->incarnation : 0;
}

bool reader::store_closed() const noexcept {
  return !p_ || p_->core->header->state.load(std::memory_order_acquire) !=
                    static_cast<std::uint64_t>(detail::store_state::ready);
}

namespace {

// What every read starts with: check the reader may read here and announce
// the epoch, then hand the guard to `use`, whose result is returned. Failures
// (a reader a fork child shares with its parent, no slot for a fork child)
// come back as errors.
template <class T, class F>
[[gnu::always_inline]] inline result<T> with_epoch(reader_core& c, F&& use) {
  if (!c.usable) return c.inherited();
  detail::reader_slot* slot = c.slot.load(std::memory_order_acquire);
  if (slot == nullptr) {  // a fork child's first read
    auto claimed = c.claim_lazily();
    if (!claimed) return std::move(claimed).error();
    slot = *claimed;
  }
  epoch_guard guard(c, slot);
  return use(guard);
}

// What every keyed read of a table starts with: `with_epoch`, then load the
// table's current index and hand (table number, index, guard) to `use`. An
// unreadable index, or a table dropped meanwhile, is an error.
template <class T, class F>
result<T> with_index(reader_core& c, std::uint32_t t, F&& use) {
  return with_epoch<T>(c, [&](epoch_guard& guard) -> result<T> {
    const index_header* ix = c.index(t);
    if (ix == nullptr) {
      const std::uint64_t root = c.header->tables[t].root.load();
      if (root == detail::null_ref) return c.unknown_table(c.table_names[t]);  // dropped meanwhile
      return c.unreadable(root);
    }
    return use(t, ix, guard);
  });
}

template <class T, class F>
result<T> with_index(reader_core& c, std::string_view table, F&& use) {
  const auto t = c.table_index(table);
  if (!t) return c.unknown_table(table);
  return with_index<T>(c, *t, std::forward<F>(use));
}

// The lookup every keyed read starts with: find `key` in `table` and hand what
// was found (`e == nullptr` if absent) to `use`, whose result is returned.
template <class T, class Table, class F>
result<T> with_entry(reader_core& c, Table table, std::string_view key, F&& use) {
  const std::uint64_t hash = hash_key(c.hash_seed, key);
  return with_index<T>(c, table,
                       [&](std::uint32_t, const index_header* ix, epoch_guard& guard) -> result<T> {
                         const detail::probed found = c.find(ix, hash, key);
                         if (found.unreadable()) [[unlikely]]
                           return c.unreadable(found.ref);
                         return use(found.at(), guard);
                       });
}

}  // namespace

result<std::optional<Value>> reader::get(std::string_view table, std::string_view key) const {
  if (!p_) return moved_from();
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

result<void> reader::get_many(std::string_view table, std::span<const std::string_view> keys,
                              many_callback fn) const {
  if (!p_) return moved_from();
  reader_core& c = *p_->core;
  return with_index<void>(
      c, table, [&](std::uint32_t, const index_header* ix, epoch_guard&) -> result<void> {
        std::optional<error_info> failed;
        auto r = detail::find_many(c, ix, keys, [&](std::size_t i, located at) {
          if (at.e == nullptr) return fn(i, nullptr);
          // Raw elements are handed out only once they match their shape.
          if (auto ok = check_value(at.e); !ok) {
            failed = std::move(ok).error();
            return false;
          }
          const scanned s{key_of(at.e), value_of(at.e),
                          detail::format_of(at.e) == detail::value_format::ndarray,
                          detail::version_of(at.e), at.e};
          return fn(i, &s);
        });
        if (!r) return std::move(r).error();
        if (failed) return std::move(*failed);
        return {};
      });
}

result<std::vector<std::optional<Value>>> reader::get_many(
    std::string_view table, std::span<const std::string_view> keys) const {
  if (!p_) return moved_from();
  using values = std::vector<std::optional<Value>>;
  return collecting<values>(*p_->core, "get_many", table, [&]() -> result<values> {
    values out(keys.size());
    std::optional<error_info> failed;
    auto r = get_many(table, keys, [&](std::size_t i, const scanned* e) {
      if (e == nullptr) return true;
      auto v = decode_entry(static_cast<const detail::entry_block*>(e->entry));
      if (!v) {
        failed = std::move(v).error();
        return false;
      }
      out[i].emplace(std::move(*v));
      return true;
    });
    if (!r) return std::move(r).error();
    if (failed) return std::move(*failed);
    return out;
  });
}

result<std::vector<Value>> reader::get_all(std::string_view table, std::string_view key) const {
  if (!p_) return moved_from();
  reader_core& c = *p_->core;
  return collecting<std::vector<Value>>(c, "get_all", table, [&] {
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
  });
}

result<std::optional<view>> reader::get_view(std::string_view table, std::string_view key) const {
  if (!p_) return moved_from();
  reader_core& c = *p_->core;
  return with_entry<std::optional<view>>(
      c, table, key, [&](const located& found, epoch_guard& guard) -> result<std::optional<view>> {
        if (found.e == nullptr) return std::optional<view>{};
        auto first = c.first(found);
        if (!first) return std::move(first).error();
        if (auto ok = check_value(first->e); !ok) return std::move(ok).error();
        return std::optional<view>(make_view(p_->core, *first, guard));
      });
}

namespace {

template <class Table, class F>
result<reader::peeked> peek_at(reader_core& c, Table table, std::string_view key, F&& fn) {
  return with_entry<reader::peeked>(
      c, table, key, [&](const located& found, epoch_guard&) -> result<reader::peeked> {
        if (found.e == nullptr) return reader::peeked::absent;
        const detail::entry_block* e = found.e;
        // A set's entry is its own first value: no call for the common read.
        if (detail::next_of(e) != detail::null_ref) {
          auto first = c.first(found);
          if (!first) return std::move(first).error();
          e = first->e;
        }
        if (detail::format_of(e) == detail::value_format::ndarray) {
          return reader::peeked::is_ndarray;
        }
        fn(value_of(e));
        return reader::peeked::visited;
      });
}

}  // namespace

result<reader::peeked> reader::peek(std::string_view table, std::string_view key,
                                    function_ref<void(std::span<const std::byte>)> fn) const {
  if (!p_) return moved_from();
  return peek_at(*p_->core, table, key, fn);
}

std::optional<std::uint32_t> reader::table_number(std::string_view table) const noexcept {
  if (!p_) return std::nullopt;
  return p_->core->table_index(table);
}

result<table_kind> reader::kind(std::string_view table) const {
  if (!p_) return moved_from();
  reader_core& c = *p_->core;
  const auto t = c.table_index(table);
  if (!t) return c.unknown_table(table);
  return c.table_kinds[*t];
}

namespace {

// What `peek_quick` did: visited the value, found no key, or left the read
// to the general path (anything unusual, errors included).
enum class quick : std::uint8_t { visited, absent, other };

// The numbered peek of a set's encoded value, with nothing out of line but
// the hash: `peek_at`'s steps, each check failing over to `other` rather
// than building an error. A read has no side effects, so the general path
// can read again and report what it finds.
[[gnu::always_inline]] inline quick peek_quick(reader_core& c, std::uint32_t table,
                                               std::string_view key, reader::peek_callback fn,
                                               void* context) noexcept {
  detail::reader_slot* slot = c.slot.load(std::memory_order_acquire);
  if (!c.usable || slot == nullptr) [[unlikely]]
    return quick::other;
  const std::uint64_t hash = hash_key(c.hash_seed, key);
  epoch_guard guard(c, slot);
  const index_header* ix = c.index(table);
  if (ix == nullptr) [[unlikely]]
    return quick::other;
  const detail::probed found = c.find(ix, hash, key);
  if (found.e == nullptr) return found.unreadable() ? quick::other : quick::absent;
  if (detail::next_of(found.e) != detail::null_ref ||
      detail::format_of(found.e) != detail::value_format::encoded) [[unlikely]]
    return quick::other;  // a bag's chain, an ndarray
  fn(context, value_of(found.e));
  return quick::visited;
}

}  // namespace

namespace {

// The numbered peek's every other case: a moved-from reader, a closed store,
// an unknown number, and what `peek_quick` left (with its errors).
[[gnu::noinline]] result<reader::peeked> peek_general(reader_core* core, std::uint32_t table,
                                                      std::string_view key,
                                                      reader::peek_callback fn, void* context) {
  if (core == nullptr) return moved_from();
  reader_core& c = *core;
  // Closed by its writer: what the caller would have asked `store_closed()` first.
  if (c.header->state.load(std::memory_order_acquire) !=
      static_cast<std::uint64_t>(detail::store_state::ready)) {
    return fail(errc::writer_gone, "store '" + c.label + "' was closed by its writer");
  }
  // Numbers are never reused: a dropped table's number reads as unknown.
  const std::uint32_t known = c.tables_known.load(std::memory_order_acquire);
  if (table >= known) {
    return fail(errc::not_found, "no table number " + std::to_string(table) + " in store '" +
                                     c.label + "' (it has " + std::to_string(known) + ")");
  }
  return peek_at(c, table, key,
                 [&](std::span<const std::byte> encoding) { fn(context, encoding); });
}

}  // namespace

// Flattened: the hash and the lookup compiled into this one function, with
// nothing called on the common read but `fn` (and the allocation-free
// result it returns).
[[gnu::flatten]] result<reader::peeked> reader::peek(std::uint32_t table, std::string_view key,
                                                     peek_callback fn, void* context) const {
  reader_core* core = p_ ? p_->core.get() : nullptr;
  if (core != nullptr &&
      core->header->state.load(std::memory_order_acquire) ==
          static_cast<std::uint64_t>(detail::store_state::ready) &&
      table < core->tables_known.load(std::memory_order_acquire)) [[likely]] {
    switch (peek_quick(*core, table, key, fn, context)) {
      case quick::visited:
        return peeked::visited;
      case quick::absent:
        return peeked::absent;
      case quick::other:
        break;
    }
  }
  return peek_general(core, table, key, fn, context);
}

result<bool> reader::contains(std::string_view table, std::string_view key) const {
  if (!p_) return moved_from();
  return with_entry<bool>(
      *p_->core, table, key,
      [](const located& found, epoch_guard&) -> result<bool> { return found.e != nullptr; });
}

result<std::size_t> reader::size(std::string_view table) const {
  if (!p_) return moved_from();
  reader_core& c = *p_->core;
  return with_index<std::size_t>(
      c, table, [&](std::uint32_t t, const index_header* ix, epoch_guard&) -> result<std::size_t> {
        const auto& counter = c.table_kinds[t] == table_kind::bag ? ix->values : ix->keys;
        return static_cast<std::size_t>(counter.load(std::memory_order_relaxed));
      });
}

result<std::size_t> reader::key_count(std::string_view table) const {
  if (!p_) return moved_from();
  return with_index<std::size_t>(
      *p_->core, table,
      [&](std::uint32_t, const index_header* ix, epoch_guard&) -> result<std::size_t> {
        return static_cast<std::size_t>(ix->keys.load(std::memory_order_relaxed));
      });
}

result<void> reader::for_each(std::string_view table,
                              function_ref<bool(std::string_view, const view&)> fn) const {
  if (!p_) return moved_from();
  reader_core& c = *p_->core;
  return with_index<void>(
      c, table, [&](std::uint32_t, const index_header* ix, epoch_guard& guard) -> result<void> {
        std::optional<error_info> failed;
        auto scanned = detail::scan_index(c, ix, [&](located head) {
          auto blocks = c.chain(head);
          if (!blocks) {
            failed = std::move(blocks).error();
            return false;
          }
          for (const located& at : *blocks) {
            if (auto ok = check_value(at.e); !ok) {
              failed = std::move(ok).error();
              return false;
            }
            if (!fn(key_of(at.e), make_view(p_->core, at, guard))) return false;
          }
          return true;
        });
        if (!scanned) return std::move(scanned).error();
        if (failed) return std::move(*failed);
        return {};
      });
}

namespace {

// What every read of an ordered table starts with (`with_epoch`, then a check
// of the table's kind): a scan of the tree published when the read began
// (`detail::scan_tree`). Its hash index is not loaded: a scan never reads it.
result<void> visit_range(reader_core& c, std::string_view table, const reader::key_range& range,
                         bool values, function_ref<bool(const reader::scanned&)> visit) {
  const auto t = c.table_index(table);
  if (!t) return c.unknown_table(table);
  return with_epoch<void>(c, [&](epoch_guard&) -> result<void> {
    if (c.table_kinds[*t] != table_kind::ordered_set) {
      return fail(errc::invalid_argument, "table '" + std::string(table) + "' in store '" +
                                              c.label + "' is a " +
                                              std::string(to_string(c.table_kinds[*t])) +
                                              " table, not an ordered_set: it keeps no key order");
    }
    const std::uint64_t root = c.header->tree_roots[*t].load(std::memory_order_seq_cst);
    // A drop nulls the directory's root before the tree's: a null tree is
    // an empty table, or one dropped since `table_index` found it.
    if (root == detail::null_ref &&
        c.header->tables[*t].root.load(std::memory_order_seq_cst) == detail::null_ref) {
      return c.unknown_table(table);
    }
    return detail::scan_tree(c, root, range, values, visit);
  });
}

/// A decoded copy of a scanned value: from its entry block, or from its
/// inline copy in a leaf.
result<Value> decode_scanned(const reader::scanned& s) {
  if (s.entry != nullptr) return decode_entry(static_cast<const detail::entry_block*>(s.entry));
  return slither::decode(s.bytes);
}

}  // namespace

result<std::vector<std::string>> reader::keys(std::string_view table,
                                              std::string_view prefix) const {
  if (!p_) return moved_from();
  reader_core& c = *p_->core;
  using names = std::vector<std::string>;
  return collecting<names>(c, "keys", table, [&]() -> result<names> {
    if (const auto t = c.table_index(table); t && c.table_kinds[*t] == table_kind::ordered_set) {
      names out;
      auto r = visit_range(c, table, key_range{prefix, {}, SIZE_MAX, false}, false,
                           [&](const scanned& s) {
                             if (!s.key.starts_with(prefix)) return false;
                             out.emplace_back(s.key);
                             return true;
                           });
      if (!r) return std::move(r).error();
      return out;
    }
    return with_index<names>(
        c, table, [&](std::uint32_t, const index_header* ix, epoch_guard&) -> result<names> {
          names out;
          auto scanned = detail::scan_index(c, ix, [&](located head) {
            if (key_of(head.e).starts_with(prefix)) out.emplace_back(key_of(head.e));
            return true;
          });
          if (!scanned) return std::move(scanned).error();
          return out;
        });
  });
}

// ---------------------------------------------------------------------------
// ordered tables

Value reader::scanned::value() const {
  auto v = decode_scanned(*this);
  if (!v) throw slither::error(v.error());
  return std::move(*v);
}

result<void> reader::scan(std::string_view table, const key_range& range,
                          function_ref<bool(const scanned&)> fn) const {
  if (!p_) return moved_from();
  return visit_range(*p_->core, table, range, true, fn);
}

result<std::vector<std::pair<std::string, Value>>> reader::range(std::string_view table,
                                                                 std::string_view lo,
                                                                 std::string_view hi,
                                                                 std::size_t limit,
                                                                 bool reverse) const {
  if (!p_) return moved_from();
  using pairs = std::vector<std::pair<std::string, Value>>;
  return collecting<pairs>(*p_->core, "range", table, [&]() -> result<pairs> {
    pairs out;
    std::optional<error_info> failed;
    auto r = visit_range(*p_->core, table, key_range{lo, hi, limit, reverse}, true,
                         [&](const scanned& s) {
                           auto v = decode_scanned(s);
                           if (!v) {
                             failed = std::move(v).error();
                             return false;
                           }
                           out.emplace_back(std::string(s.key), std::move(*v));
                           return true;
                         });
    if (!r) return std::move(r).error();
    if (failed) return std::move(*failed);
    return out;
  });
}

result<std::optional<std::pair<std::string, Value>>> reader::first(std::string_view table) const {
  auto r = range(table, {}, {}, 1, false);
  if (!r) return std::move(r).error();
  if (r->empty()) return std::optional<std::pair<std::string, Value>>{};
  return std::optional<std::pair<std::string, Value>>(std::move(r->front()));
}

result<std::optional<std::pair<std::string, Value>>> reader::last(std::string_view table) const {
  auto r = range(table, {}, {}, 1, true);
  if (!r) return std::move(r).error();
  if (r->empty()) return std::optional<std::pair<std::string, Value>>{};
  return std::optional<std::pair<std::string, Value>>(std::move(r->front()));
}

}  // namespace slither::shm
