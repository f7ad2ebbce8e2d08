// The writer: creates a store, applies writes to its tables, and unlinks
// it on close. Reclamation is in epoch.cpp, allocation in allocator.cpp.
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <new>
#include <random>

#include "epoch.hpp"
#include "index.hpp"
#include "segment.hpp"
#include "slither/core/codec.hpp"
#include "slither/shm/store.hpp"
#include "writer_impl.hpp"

namespace slither::shm {

using detail::align_up;
using detail::block;
using detail::decode_entry;
using detail::entry_header;
using detail::hash_key;
using detail::index_bytes;
using detail::index_header;
using detail::initial_slots;
using detail::key_of;
using detail::max_index_capacity;
using detail::printable;
using detail::shape_offset;
using detail::shared_u64;
using detail::size_class;
using detail::slot_position;
using detail::table_state;
using detail::valid_name;

namespace {
constexpr std::uint64_t max_initial_capacity = std::uint64_t{1} << 32;
static_assert(min_index_bytes_at_once == detail::min_index_capacity * sizeof(shared_u64));
constexpr std::uint64_t max_key_limit = std::uint64_t{1} << 20;
// What each `reclaim` (a broker calls it every 250 ms) spends moving growing indexes.
constexpr std::chrono::microseconds migrate_budget{2000};

result<void> check_table_spec(const store_options& o, const table_spec& t) {
  if (t.name.empty() || t.name.size() > detail::max_table_name ||
      t.name.find('\0') != std::string::npos) {
    return fail(errc::invalid_argument,
                "bad table name " + printable(t.name) + " in store '" + o.name + "': use 1-" +
                    std::to_string(detail::max_table_name) + " bytes, no NUL");
  }
  if (t.kind != table_kind::set && t.kind != table_kind::bag && t.kind != table_kind::ordered_set) {
    return fail(errc::invalid_argument, "table '" + t.name + "' has an unknown kind");
  }
  if (t.initial_capacity > max_initial_capacity) {
    return fail(errc::invalid_argument,
                "initial_capacity " + std::to_string(t.initial_capacity) + " of table '" + t.name +
                    "' is over the limit of 2^32 (" + std::to_string(max_initial_capacity) + ")");
  }
  return {};
}
}  // namespace

result<block> writer::impl::allocate(std::uint64_t bytes) {
  auto b = alloc.allocate(bytes);
  if (b) bytes_used += b->bytes;
  return b;
}

void writer::impl::release(std::uint64_t ref, std::uint64_t bytes) {
  alloc.free(ref, bytes);
  bytes_used -= bytes;
}

error_info writer::impl::closed_error() const {
  return fail(errc::writer_gone, "store '" + label + "' is closed");
}

result<table_state*> writer::impl::table(std::string_view name) {
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

result<void> writer::impl::check_key(const table_state& t, std::string_view key) const {
  if (key.size() > options.max_key_bytes) {
    return fail(errc::limit_exceeded,
                "key of " + std::to_string(key.size()) + " bytes is over the limit of " +
                    std::to_string(options.max_key_bytes) + " bytes (table '" + t.name +
                    "' in store '" + label + "')");
  }
  return {};
}

/// Gives a block back: at once if readers never saw it, else through the retire list.
void writer::impl::dispose(const table_state& t, std::uint64_t ref, std::uint64_t bytes) {
  if (t.published) {
    retire(ref, bytes);
  } else {
    release(ref, bytes);
  }
}

void writer::impl::dispose_chain(const table_state& t, std::uint64_t head) {
  while (head != detail::null_ref) {
    const detail::entry_block* e = entry(head);
    const std::uint64_t next = detail::next_of(e);
    dispose(t, head, block_bytes_of(e));
    head = next;
  }
}

std::string_view to_string(table_kind kind) noexcept {
  switch (kind) {
    case table_kind::set:
      return "set";
    case table_kind::bag:
      return "bag";
    case table_kind::ordered_set:
      return "ordered_set";
  }
  return "unknown";
}

std::optional<table_kind> parse_table_kind(std::string_view name) noexcept {
  for (table_kind k : {table_kind::set, table_kind::bag, table_kind::ordered_set}) {
    if (name == to_string(k)) return k;
  }
  return std::nullopt;
}

result<std::uint64_t> writer::impl::new_index(std::uint64_t capacity) {
  auto b = allocate(index_bytes(capacity));
  if (!b) return std::move(b).error();
  auto* ix = new (ptr(b->ref)) index_header{};
  ix->capacity = capacity;
  std::memset(static_cast<void*>(ix + 1), 0, capacity * sizeof(shared_u64));
  return b->ref;
}

void writer::impl::publish_root(const table_state& t) {
  if (t.published && !t.shadow)
    header->tables[t.index].root.store(t.root, std::memory_order_seq_cst);
}

void writer::impl::publish_counts(const table_state& t) {
  index_header* ix = index(t.root);
  ix->keys.store(t.keys, std::memory_order_relaxed);
  ix->values.store(t.values, std::memory_order_relaxed);
}

result<std::uint64_t> writer::impl::capacity_for(const table_state& t, std::uint64_t keys) const {
  // At most half full: a growth at 3/4 doubles the array, which leaves
  // room for half as many inserts again (and time to move the old one).
  const std::uint64_t want = keys * 2;
  if (want > max_index_capacity) {
    return fail(errc::limit_exceeded, "table '" + t.name + "' in store '" + label +
                                          "' cannot index " + std::to_string(keys) + " keys");
  }
  // Never below the asked size, unless the index is short of it: then it
  // grows as usual until its asked array is ready (index.hpp).
  return std::bit_ceil(std::max(std::min(t.initial_slots, t.capacity), want));
}

/// Makes room for `extra` more keys: moves a growing index on, and starts a
/// growth into a larger (or tombstone-free) array if it would pass 3/4 full.
result<void> writer::impl::ensure_capacity(table_state& t, std::uint64_t extra) {
  migrate(t, detail::migrate_slots_per_write * extra);
  if (auto r = prepare_spare(t, detail::spare_bytes_per_write * extra); !r) return r;
  if ((t.used + t.old_live + extra) * 4 <= t.capacity * 3) return {};
  // A growth starts only once the previous one is done (layout.hpp, rule 5);
  // the per-write moves make this a no-op unless a batch outgrew them.
  migrate(t, UINT64_MAX);
  auto capacity = capacity_for(t, t.keys + extra);
  if (!capacity) return std::move(capacity).error();
  // Readers see only published tables: an unseen one is rebuilt at once.
  if (t.published && !t.shadow) return start_migration(t, *capacity);
  auto root = rehash(t, *capacity);
  if (!root) return std::move(root).error();
  const table_state old = t;
  t.root = *root;
  t.capacity = *capacity;
  t.used = t.keys;
  publish_counts(t);
  publish_root(t);
  dispose_arrays(old);
  return {};
}

/// Writes a new, unpublished entry block for `key` and `value`.
result<block> writer::impl::build_entry(const table_state& t, std::string_view key,
                                        std::uint64_t hash, const Value& value) {
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
                "value of " + std::to_string(payload.size()) + " bytes for key " + printable(key) +
                    " is over the limit of " + std::to_string(options.max_value_bytes) +
                    " bytes (table '" + t.name + "' in store '" + label + "')");
  }
  // A set's small encoded value gets the compact layout (layout.hpp); its
  // version must fit the header's 40 bits, with room for a batch's worth of
  // versions given after the build.
  if (format == detail::value_format::encoded && t.kind != table_kind::bag &&
      detail::fits_compact(key.size(), payload.size(), 2 * last_version)) {
    auto b = allocate(sizeof(detail::compact_entry) + key.size() + payload.size());
    if (!b) return std::move(b).error();
    std::byte* p = ptr(b->ref);
    detail::write_compact(p, key, payload.size());
    if (!payload.empty()) {
      std::memcpy(p + sizeof(detail::compact_entry) + key.size(), payload.data(), payload.size());
    }
    return *b;
  }
  const std::uint64_t shape_at = shape_offset(key.size());
  const std::uint64_t min_value_at = shape_at + shape.size() * sizeof(std::uint64_t);
  // Blocks are 8-byte aligned: an ndarray's elements go to the first 64-byte
  // boundary of the segment past the shape, which the slack leaves room for.
  const bool array = format == detail::value_format::ndarray;
  const std::uint64_t slack = array ? ndarray::alignment - detail::block_granule : 0;
  auto b = allocate(min_value_at + slack + payload.size());
  if (!b) return std::move(b).error();
  const std::uint64_t at = detail::ref_offset(b->ref);
  const std::uint64_t value_at =
      array ? align_up(at + min_value_at, ndarray::alignment) - at : align_up(min_value_at, 8);
  std::byte* p = ptr(b->ref);
  auto* e = new (p) entry_header{};
  e->layout = static_cast<std::uint8_t>(detail::entry_layout::full);
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
inline std::uint64_t writer::impl::link(table_state& t, const block& b, std::uint64_t hash,
                                        std::string_view key) {
  const slot_position pos = find_slot(t, hash, key);
  detail::entry_block* e = entry(b.ref);
  shared_u64& slot = slot_at(t, pos);
  // An ordered table's blocks have theirs already: their leaves copy it.
  if (detail::version_of(e) == 0) detail::set_version(e, ++last_version);
  if (pos.ref != detail::null_ref) {
    const detail::entry_block* old = entry(pos.ref);
    if (t.kind == table_kind::bag) {
      entry_header* f = detail::full_of(e);  // a bag's blocks are all full
      f->next = pos.ref;
      f->first = detail::first_of(old) != detail::null_ref ? detail::first_of(old) : pos.ref;
      f->count = static_cast<std::uint32_t>(detail::count_of(old) + 1);
      ++t.values;
      slot.store(detail::slot_value(b.ref, hash), std::memory_order_seq_cst);
    } else {
      const std::uint64_t old_bytes = block_bytes_of(old);
      slot.store(detail::slot_value(b.ref, hash), std::memory_order_seq_cst);
      dispose(t, pos.ref, old_bytes);
    }
  } else {
    if (slot.load(std::memory_order_relaxed) == detail::null_ref) ++t.used;
    ++t.keys;
    ++t.values;
    slot.store(detail::slot_value(b.ref, hash), std::memory_order_seq_cst);
  }
  publish_counts(t);
  return detail::version_of(e);
}

result<std::uint64_t> writer::impl::link_built(table_state& t, const block& b, std::uint64_t hash,
                                               std::string_view key) {
  auto room = check_room(t, hash, key, 1);
  if (room) room = ensure_capacity(t, 1);
  if (!room) {
    release(b.ref, b.bytes);
    return std::move(room).error();
  }
  return link_entry(t, b, hash, key);
}

result<std::uint64_t> writer::impl::link_entry(table_state& t, const block& b, std::uint64_t hash,
                                               std::string_view key) {
  if (t.kind != table_kind::ordered_set) return link(t, b, hash, key);
  // Versioned first: a leaf may copy it with the value. The tree is published
  // after the link.
  detail::set_version(entry(b.ref), ++last_version);
  if (auto r = tree_apply(t, key, b.ref); !r) {
    tree_abort(t);
    release(b.ref, b.bytes);
    return std::move(r).error();
  }
  const std::uint64_t version = link(t, b, hash, key);
  tree_commit(t);
  return version;
}

result<void> writer::impl::check_room(const table_state& t, std::uint64_t hash,
                                      std::string_view key, std::uint64_t appends) {
  if (t.kind != table_kind::bag) return {};
  const slot_position pos = find_slot(t, hash, key);
  const std::uint64_t count = pos.ref == detail::null_ref ? 0 : detail::count_of(entry(pos.ref));
  if (appends > detail::max_bag_values - count) {
    return fail(errc::limit_exceeded, "key " + printable(key) + " of bag '" + t.name +
                                          "' in store '" + label + "' already holds " +
                                          std::to_string(count) + " values, the most one key can");
  }
  return {};
}

result<std::uint64_t> writer::impl::put(table_state& t, std::string_view key, const Value& value) {
  if (auto r = check_key(t, key); !r) return std::move(r).error();
  const std::uint64_t hash = hash_key(hash_seed, key);
  if (auto r = check_room(t, hash, key, 1); !r) return std::move(r).error();
  if (auto r = ensure_capacity(t, 1); !r) return std::move(r).error();
  __builtin_prefetch(&slots(t.root)[hash & (t.capacity - 1)]);  // overlaps the encoding
  auto b = build_entry(t, key, hash, value);
  if (!b) return std::move(b).error();
  return link_entry(t, *b, hash, key);
}

void writer::impl::unlink_all() noexcept {
  if (!owned()) {
    // An inherited copy: the store still belongs to the parent (whose lock
    // this child already stopped sharing, fork.cpp). Drop our mappings and
    // the inherited reader without touching shared state.
    self.reset();
    alloc.unmap();
    registry.reset();
    return;
  }
  if (header != nullptr) {
    header->state.store(static_cast<std::uint64_t>(detail::store_state::closed),
                        std::memory_order_release);
  }
  self.reset();
  alloc.unmap();
  registry.reset();
  registry_fd.close();
  header = nullptr;
  reader_slots = nullptr;
  for (const std::string& name : alloc.created()) detail::unlink_object(name);
  for (const std::string& name : created) detail::unlink_object(name);
  lock.release();  // last: until now no other writer can take the name
}

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
  if (o.index_bytes_at_once < min_index_bytes_at_once ||
      o.index_bytes_at_once > max_index_bytes_at_once) {
    return fail(errc::invalid_argument,
                "index_bytes_at_once " + std::to_string(o.index_bytes_at_once) + " of store '" +
                    o.name + "' is not in " + std::to_string(min_index_bytes_at_once) + ".." +
                    std::to_string(max_index_bytes_at_once));
  }
  if (o.max_readers == 0 || o.max_readers > detail::max_readers_limit) {
    return fail(errc::invalid_argument, "max_readers " + std::to_string(o.max_readers) +
                                            " of store '" + o.name + "' is not in 1.." +
                                            std::to_string(detail::max_readers_limit));
  }
  if (tables.empty() || tables.size() > detail::max_tables) {
    return fail(errc::invalid_argument,
                "store '" + o.name + "' declares " + std::to_string(tables.size()) +
                    " tables; it needs 1.." + std::to_string(detail::max_tables));
  }
  for (std::size_t i = 0; i < tables.size(); ++i) {
    const table_spec& t = tables[i];
    if (auto r = check_table_spec(o, t); !r) return std::move(r).error();
    for (std::size_t j = 0; j < i; ++j) {
      if (tables[j].name == t.name) {
        return fail(errc::invalid_argument,
                    "table '" + t.name + "' is declared twice in store '" + o.name + "'");
      }
    }
  }
  return {};
}

/// A random, non-zero 64-bit number.
std::uint64_t random_u64() {
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
  auto lock = detail::writer_lock::acquire(options.ns, options.name);
  if (!lock) return std::move(lock).error();
  // The lock is ours: whatever is left under the name is a dead writer's.
  if (auto r = detail::remove_stale_store(options.ns, options.name); !r) {
    return std::move(r).error();
  }

  auto p = std::make_unique<impl>();
  p->options = options;
  p->label = options.ns + "." + options.name;
  p->incarnation = random_u64();
  p->hash_seed = random_u64();
  p->generation = detail::fork_generation();
  p->lock = std::move(*lock);
  detail::register_fork_aware(p.get());
  // Unlinks only what this writer made, then gives the lock up.
  auto abandon = [&p](error_info e) {
    p->unlink_all();
    return e;
  };
  if (auto r = p->lock.record(p->incarnation); !r) return abandon(std::move(r).error());

  p->alloc.init(options.ns, options.name, p->label, p->incarnation, options.initial_segment_bytes);
  if (auto r = p->alloc.add_segment(0); !r) return abandon(std::move(r).error());
  // Zero-filled, the state reads `creating` until the release store below.
  auto* hdr =
      new (p->alloc.segments()[0].base + detail::store_header_offset) detail::store_header{};
  hdr->writer_pid = static_cast<std::uint64_t>(::getpid());
  hdr->hash_seed = p->hash_seed;
  hdr->global_epoch.store(p->epoch, std::memory_order_relaxed);
  hdr->segment_bytes[0].store(p->alloc.segments()[0].bytes, std::memory_order_relaxed);
  hdr->segment_count.store(1, std::memory_order_relaxed);
  hdr->table_count.store(tables.size(), std::memory_order_relaxed);
  hdr->max_readers = options.max_readers;
  hdr->fences = static_cast<std::uint64_t>(detail::writer_fence_mode());
  p->header = hdr;
  p->alloc.announce_in(hdr);

  const std::string reg_name = registry_name(options.ns, options.name);
  auto reg = detail::create_object(reg_name, detail::slot_offset(options.max_readers));
  if (!reg) return abandon(std::move(reg).error());
  p->created.push_back(reg_name);
  p->registry_fd = std::move(reg->fd);
  p->registry = std::move(reg->map);
  std::byte* rbase = p->registry.data();
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
    t.asked_slots = t.initial_slots;
    if (auto r = p->check_index_room(t.name, tables[i].initial_capacity, t.initial_slots); !r) {
      return abandon(std::move(r).error());
    }
    t.capacity = p->first_slots(t.initial_slots);
    auto root = p->new_index(t.capacity);
    if (!root) return abandon(std::move(root).error());
    t.root = *root;
    detail::table_entry& dir = hdr->tables[i];
    std::memcpy(dir.name, t.name.data(), t.name.size());
    dir.kind.store(static_cast<std::uint64_t>(t.kind), std::memory_order_relaxed);
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
                              std::span<const std::pair<std::string, Value>> entries,
                              batch_publish publish) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  for (const auto& [key, value] : entries) {
    if (auto r = p_->check_key(t, key); !r) return std::move(r).error();
    // As if every entry appended to this key: exact enough for a limit of 2^32.
    if (auto r = p_->check_room(t, hash_key(p_->hash_seed, key), key, entries.size()); !r) {
      return std::move(r).error();
    }
  }
  if (auto r = p_->ensure_capacity(t, entries.size()); !r) return std::move(r).error();
  std::vector<block> built;
  std::vector<std::uint64_t> hashes;
  built.reserve(entries.size());
  hashes.reserve(entries.size());
  for (const auto& [key, value] : entries) {
    hashes.push_back(hash_key(p_->hash_seed, key));
    auto b = p_->build_entry(t, key, hashes.back(), value);
    if (!b) {
      for (const block& done : built) p_->release(done.ref, done.bytes);
      return std::move(b).error();
    }
    built.push_back(*b);
  }
  const bool ordered = t.kind == table_kind::ordered_set;
  for (std::size_t i = 0; ordered && i < entries.size(); ++i)
    detail::set_version(p_->entry(built[i].ref), ++p_->last_version);  // before the leaves copy it
  if (publish == batch_publish::at_once) return p_->put_many_at_once(t, built, hashes, entries);
  if (ordered) {
    if (auto r = p_->tree_put_many(t, entries, built); !r) {
      p_->tree_abort(t);
      for (const block& done : built) p_->release(done.ref, done.bytes);
      return std::move(r).error();
    }
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
  if (ordered) p_->tree_commit(t);
  p_->maybe_reclaim();
  return {};
}

result<void> writer::impl::put_many_at_once(
    table_state& t, std::span<const block> built, std::span<const std::uint64_t> hashes,
    std::span<const std::pair<std::string, Value>> entries) {
  auto give_back = [&](error_info e) {
    for (const block& b : built) release(b.ref, b.bytes);
    return e;
  };
  // An ordered table's tree takes the batch first (one root, published below).
  const bool ordered = t.kind == table_kind::ordered_set;
  if (ordered) {
    if (auto r = tree_put_many(t, entries, built); !r) {
      tree_abort(t);
      return give_back(std::move(r).error());
    }
  }
  auto capacity = capacity_for(t, t.keys + entries.size());
  if (!capacity) {
    if (ordered) tree_abort(t);
    return give_back(std::move(capacity).error());
  }
  auto root = rehash(t, *capacity);  // the whole table, a growing index's both arrays
  if (!root) {
    if (ordered) tree_abort(t);
    return give_back(std::move(root).error());
  }
  // The copy shares every block of the published index: a block it replaces
  // retires (it is still visible there), and no reclaim runs before the switch.
  table_state next = t;
  next.root = *root;
  next.capacity = *capacity;
  next.used = t.keys;
  next.old = detail::null_ref;
  next.old_capacity = next.migrated = next.old_live = 0;
  next.shadow = true;
  for (std::size_t i = 0; i < entries.size(); ++i)
    link(next, built[i], hashes[i], entries[i].first);
  const table_state old = t;
  next.shadow = false;
  t = next;
  // Two switches in a row: the tree (scans), then the index (gets).
  if (ordered) tree_commit(t);
  publish_root(t);
  dispose_arrays(old);
  maybe_reclaim();
  return {};
}

result<void> writer::create_table(const table_spec& spec) {
  if (auto existing = p_->table(spec.name); existing) {
    return fail(errc::already_exists,
                "table '" + spec.name + "' already exists in store '" + p_->label + "'");
  } else if (existing.error().code != errc::not_found) {
    return std::move(existing).error();
  }
  if (auto r = check_table_spec(p_->options, spec); !r) return std::move(r).error();
  const std::uint64_t n = p_->header->table_count.load(std::memory_order_relaxed);
  if (n >= detail::max_tables) {
    return fail(errc::limit_exceeded,
                "store '" + p_->label + "' has used all " + std::to_string(detail::max_tables) +
                    " entries of its table directory (a dropped table's entry is not reused); "
                    "cannot create table '" +
                    spec.name + "'");
  }
  table_state t;
  t.index = static_cast<std::uint32_t>(n);
  t.name = spec.name;
  t.kind = spec.kind;
  t.initial_slots = initial_slots(spec.initial_capacity);
  t.asked_slots = t.initial_slots;
  t.declared = false;
  if (auto r = p_->check_index_room(t.name, spec.initial_capacity, t.initial_slots); !r) {
    return std::move(r).error();
  }
  t.capacity = p_->first_slots(t.initial_slots);
  auto root = p_->new_index(t.capacity);
  if (!root) return std::move(root).error();
  t.root = *root;
  p_->tables.push_back(t);
  detail::table_entry& dir = p_->header->tables[n];
  std::memset(dir.name, 0, sizeof dir.name);
  std::memcpy(dir.name, t.name.data(), t.name.size());
  dir.kind.store(static_cast<std::uint64_t>(t.kind), std::memory_order_relaxed);
  dir.root.store(t.root, std::memory_order_relaxed);
  p_->header->tree_roots[n].store(detail::null_ref, std::memory_order_relaxed);
  // Readers copy an entry only once they see the count that includes it.
  p_->header->table_count.store(n + 1, std::memory_order_release);
  return {};
}

result<void> writer::drop_table(std::string_view table) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  const table_state t = **tr;
  if (t.declared) {
    return fail(errc::invalid_argument,
                "table '" + t.name + "' was declared when store '" + p_->label +
                    "' was created (its config); only tables created at run time can be dropped");
  }
  detail::table_entry& dir = p_->header->tables[t.index];
  dir.kind.store(detail::dropped_kind, std::memory_order_seq_cst);
  dir.root.store(detail::null_ref, std::memory_order_seq_cst);
  p_->header->tree_roots[t.index].store(detail::null_ref, std::memory_order_seq_cst);
  std::erase_if(p_->tables, [&](const table_state& s) { return s.index == t.index; });
  if (t.tree_root != detail::null_ref) p_->dispose_tree(t, t.tree_root);
  p_->dispose_table(t);
  p_->maybe_reclaim();
  return {};
}

result<bool> writer::erase(std::string_view table, std::string_view key) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  if (auto r = p_->check_key(t, key); !r) return std::move(r).error();
  const slot_position pos = p_->find_slot(t, hash_key(p_->hash_seed, key), key);
  if (pos.ref == detail::null_ref) return false;
  const bool ordered = t.kind == table_kind::ordered_set;
  if (ordered) {
    // Copying the tree's path may need memory: fail before anything changes.
    if (auto r = p_->tree_apply(t, key, detail::null_ref); !r) {
      p_->tree_abort(t);
      return std::move(r).error();
    }
  }
  p_->slot_at(t, pos).store(detail::tombstone, std::memory_order_seq_cst);
  if (pos.in_old) --t.old_live;
  --t.keys;
  t.values -= detail::count_of(p_->entry(pos.ref));
  p_->publish_counts(t);
  if (ordered) p_->tree_commit(t);
  p_->dispose_chain(t, pos.ref);
  p_->migrate(t, detail::migrate_slots_per_write);
  p_->maybe_reclaim();
  return true;
}

result<std::uint64_t> writer::update(std::string_view table, std::string_view key,
                                     const std::function<Value(const std::optional<Value>&)>& fn) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  if (t.kind == table_kind::bag) {
    return fail(errc::invalid_argument, "update needs a set table; '" + t.name + "' is a bag");
  }
  if (auto r = p_->check_key(t, key); !r) return std::move(r).error();
  const slot_position pos = p_->find_slot(t, hash_key(p_->hash_seed, key), key);
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
  if (auto r = p_->expect_version(t, "compare_and_set", key, expected_version); !r) {
    return std::move(r).error();
  }
  auto v = p_->put(t, key, value);
  if (v) p_->maybe_reclaim();
  return v;
}

result<bool> writer::compare_and_erase(std::string_view table, std::string_view key,
                                       std::uint64_t expected_version) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  if (auto r = p_->expect_version(**tr, "compare_and_erase", key, expected_version); !r) {
    return std::move(r).error();
  }
  if (expected_version == 0) return false;  // absent, as expected
  return erase(table, key);
}

result<void> writer::impl::expect_version(const table_state& t, std::string_view op,
                                          std::string_view key, std::uint64_t expected) {
  if (t.kind == table_kind::bag) {
    return fail(errc::invalid_argument,
                std::string(op) + " needs a set table; '" + t.name + "' is a bag");
  }
  if (auto r = check_key(t, key); !r) return std::move(r).error();
  const slot_position pos = find_slot(t, hash_key(hash_seed, key), key);
  const std::uint64_t found = pos.ref == detail::null_ref ? 0 : detail::version_of(entry(pos.ref));
  if (found != expected) {
    return fail(errc::conflict, "key " + printable(key) + " in table '" + t.name +
                                    "' is at version " + std::to_string(found) + ", not " +
                                    std::to_string(expected));
  }
  return {};
}

result<void> writer::clear(std::string_view table) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  table_state& t = **tr;
  auto root = p_->new_index(p_->first_slots(t.asked_slots));
  if (!root) return std::move(root).error();
  const table_state old = t;
  t.root = *root;
  t.initial_slots = t.asked_slots;
  t.capacity = p_->first_slots(t.initial_slots);
  t.keys = t.values = t.used = 0;
  t.old = t.spare = detail::null_ref;
  t.old_capacity = t.migrated = t.old_live = t.spare_capacity = t.spare_ready = 0;
  t.tree_root = detail::null_ref;
  t.tree_keys = 0;
  p_->publish_root(t);
  p_->tree_commit(t);
  p_->dispose_tree(t, old.tree_root);
  p_->dispose_table(old);
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
  next.initial_slots = t.asked_slots;
  auto root = p_->new_index(p_->first_slots(next.initial_slots));
  if (!root) return std::move(root).error();
  next.root = *root;
  next.capacity = p_->first_slots(next.initial_slots);
  next.keys = next.values = next.used = 0;
  next.old = next.spare = detail::null_ref;
  next.old_capacity = next.migrated = next.old_live = next.spare_capacity = next.spare_ready = 0;
  next.tree_root = next.tree_committed = detail::null_ref;
  next.tree_keys = next.tree_committed_keys = 0;

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
    p_->dispose_tree(next, next.tree_root);
    p_->dispose_table(next);
    error_info e = std::move(filled).error();
    e.message = "reload of table '" + t.name + "' in store '" + p_->label +
                "' failed; its contents are unchanged: " + e.message;
    return e;
  }
  const table_state old = t;
  next.published = true;
  t = next;
  p_->publish_root(t);
  p_->tree_commit(t);
  p_->dispose_tree(old, old.tree_root);
  p_->dispose_table(old);
  p_->maybe_reclaim();
  return {};
}

reclaim_report writer::reclaim() {
  if (!p_ || p_->closed || !p_->owned()) return {};
  // The timer's turn to move a growing index on when writes are few.
  p_->migrate_for(migrate_budget);
  return p_->reclaim(true);
}

void writer::grow(std::chrono::microseconds budget) {
  if (!p_ || p_->closed || !p_->owned()) return;
  p_->migrate_for(budget);
}

bool writer::growing() const noexcept {
  if (!p_ || p_->closed || !p_->owned()) return false;
  return std::any_of(p_->tables.begin(), p_->tables.end(), [](const table_state& t) {
    return impl::migrating(t) || impl::short_of_asked(t);
  });
}

void writer::trim() {
  if (!p_ || p_->closed || !p_->owned()) return;
  p_->alloc.trim_now();
}

store_stats writer::stats() const {
  store_stats s;
  if (!p_ || p_->closed) return s;
  if (p_->owned()) p_->alloc.collect_trimmed();
  for (const auto& t : p_->tables) s.entries += t.values;
  s.bytes_used = p_->bytes_used;
  s.bytes_retired = p_->bytes_retired;
  s.bytes_free = p_->alloc.free_bytes();
  s.bytes_pinned = std::min(p_->bytes_pinned, p_->bytes_retired);
  s.oldest_epoch_pid = p_->oldest_epoch_pid;
  s.segments = p_->alloc.segments().size();
  for (const auto& seg : p_->alloc.segments()) s.segment_bytes += seg.bytes;
  s.bytes_resident = p_->alloc.resident_bytes();
  for (std::uint64_t i = 0; i < p_->options.max_readers; ++i) {
    const std::uint64_t owner = p_->reader_slots[i].owner.load(std::memory_order_acquire);
    if (detail::owner_state(owner) == detail::slot_state::owned) ++s.readers;
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
