// A table's hash index while it grows (index.hpp, layout.hpp "Growth").
#include "index.hpp"

#include <sys/statvfs.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <new>
#include <string>

#include "block.hpp"
#include "slither/shm/detail/sys.hpp"
#include "writer_impl.hpp"

namespace slither::shm {

using detail::entry_block;
using detail::index_header;
using detail::located;
using detail::null_ref;
using detail::shared_u64;
using detail::slot_position;
using detail::table_state;

// ---------------------------------------------------------------------------
// Reader side

detail::probed detail::reader_core::find_moving(const index_header* ix, std::uint64_t old,
                                                std::uint64_t hash, std::string_view key) noexcept {
  const index_header* ox = index_at(old);
  if (ox == nullptr) return probed{old, nullptr};
  // Slots below `moved` are frozen: their keys are in `ix` (rule 3).
  const std::uint64_t moved = ix->migrated.load(std::memory_order_seq_cst);
  const probed found = probe(ox, hash, key, moved);
  if (found.e != nullptr || found.unreadable()) return found;
  // Moved since our first probe of `ix`: stored there before `migrated` passed it.
  return probe(ix, hash, key, 0);
}

namespace detail {

result<void> scan_index(reader_core& c, const index_header* ix, function_ref<bool(located)> visit) {
  // Each head block once: false from `visit` stops the scan.
  auto each_entry = [&](const index_header* array, std::uint64_t from,
                        auto&& wanted) -> result<bool> {
    const auto* slots = reinterpret_cast<const shared_u64*>(array + 1);
    for (std::uint64_t i = from; i < array->capacity; ++i) {
      const std::uint64_t s = slots[i].load(std::memory_order_seq_cst);
      if (!slot_has_entry(s)) continue;
      const std::uint64_t r = slot_ref(s);
      const entry_block* e = c.entry(r);
      if (e == nullptr) return c.unreadable(r);
      auto want = wanted(e);
      if (!want) return std::move(want).error();
      if (*want && !visit(located{r, e})) return false;
    }
    return true;
  };
  auto all = [](const entry_block*) -> result<bool> { return true; };

  const std::uint64_t old = ix->old.load(std::memory_order_seq_cst);
  if (old == null_ref) {
    auto r = each_entry(ix, 0, all);
    if (!r) return std::move(r).error();
    return {};
  }
  const index_header* ox = c.index_at(old);
  if (ox == nullptr) return c.unreadable(old);
  // O's unmoved part as it stood at `moved` (rule 4), then N without the
  // keys that part held: those were reported from O, even if moved since.
  const std::uint64_t moved = ix->migrated.load(std::memory_order_seq_cst);
  auto first = each_entry(ox, moved, all);
  if (!first) return std::move(first).error();
  if (!*first) return {};
  auto rest = each_entry(ix, 0, [&](const entry_block* e) -> result<bool> {
    const std::string_view key = key_of(e);
    const probed in_old = c.probe(ox, hash_key(c.hash_seed, key), key, moved);
    if (in_old.unreadable()) return c.unreadable(in_old.ref);
    return in_old.e == nullptr;
  });
  if (!rest) return std::move(rest).error();
  return {};
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Writer side

slot_position writer::impl::find_slot(const table_state& t, std::uint64_t hash,
                                      std::string_view key) {
  shared_u64* s = slots(t.root);
  const std::uint64_t mask = t.capacity - 1;
  std::uint64_t insert_at = UINT64_MAX;
  for (std::uint64_t i = hash & mask;; i = (i + 1) & mask) {
    const std::uint64_t v = s[i].load(std::memory_order_relaxed);
    if (v == null_ref) {
      if (insert_at == UINT64_MAX) insert_at = i;
      break;
    }
    if (v == detail::tombstone) {
      if (insert_at == UINT64_MAX) insert_at = i;
      continue;
    }
    if (!detail::slot_tag_matches(v, hash)) continue;
    __builtin_prefetch(ptr(detail::slot_ref(v)) + 64);  // the key, with the header
    if (key_of(entry(detail::slot_ref(v))) == key) return {i, detail::slot_ref(v), false};
  }
  if (!migrating(t)) return {insert_at, null_ref, false};
  // Still in the old array's unmoved part? Its frozen slots' blocks may be
  // freed already: never looked at.
  const shared_u64* o = slots(t.old);
  const std::uint64_t omask = t.old_capacity - 1;
  for (std::uint64_t i = hash & omask;; i = (i + 1) & omask) {
    const std::uint64_t v = o[i].load(std::memory_order_relaxed);
    if (v == null_ref) break;
    if (!detail::slot_has_entry(v) || !detail::slot_tag_matches(v, hash) || i < t.migrated) {
      continue;
    }
    if (key_of(entry(detail::slot_ref(v))) == key) return {i, detail::slot_ref(v), true};
  }
  return {insert_at, null_ref, false};
}

std::uint64_t writer::impl::first_slots(std::uint64_t asked) const noexcept {
  const std::uint64_t most = std::bit_floor(options.index_bytes_at_once / sizeof(shared_u64));
  return std::min(asked, std::max(most, detail::min_index_capacity));
}

result<void> writer::impl::check_index_room(std::string_view name, std::uint64_t capacity,
                                            std::uint64_t slots) {
  if (slots <= first_slots(slots)) return {};
  // The asked arrays not ready yet will take their pages in the background.
  std::uint64_t promised = 0;
  for (const auto& t : tables) {
    if (!short_of_asked(t)) continue;
    promised += detail::index_bytes(t.initial_slots) - (t.spare == null_ref ? 0 : t.spare_ready);
  }
  struct statvfs fs {};
  // Cannot tell: the table is made; if its asked array finds no room, it stays smaller.
  if (detail::sys().fstatvfs(alloc.segments()[0].fd.get(), &fs) != 0) return {};
  const std::uint64_t avail = std::uint64_t{fs.f_bavail} * fs.f_frsize;
  const std::uint64_t needed = detail::index_bytes(slots);
  if (avail >= promised && avail - promised >= needed) return {};
  std::string msg = "no space for table '" + std::string(name) + "' in store '" + label +
                    "': its capacity of " + std::to_string(capacity) + " keys needs an index of " +
                    std::to_string(needed) + " bytes, /dev/shm has " + std::to_string(avail) +
                    " free";
  if (promised > 0) {
    msg += ", of which " + std::to_string(promised) +
           " are promised to other tables' indexes being made ready";
  }
  return fail(errc::no_space, std::move(msg));
}

void writer::impl::prepare_asked(table_state& t, std::uint64_t budget) {
  auto give_up = [&] {
    drop_spare(t);
    t.initial_slots = t.capacity;
  };
  if (t.spare == null_ref) {
    auto b = alloc.allocate_unreserved(detail::index_bytes(t.initial_slots));
    if (!b) return give_up();
    bytes_used += b->bytes;
    t.spare = b->ref;
    t.spare_capacity = t.initial_slots;
    t.spare_ready = 0;
  }
  if (!ready_spare(t, budget)) return give_up();
  // One growth at a time (layout.hpp, rule 5): a growth beside it finishes first.
  if (t.spare_ready < detail::index_bytes(t.spare_capacity) || migrating(t)) return;
  if (!start_migration(t, t.spare_capacity)) give_up();
}

result<void> writer::impl::prepare_spare(table_state& t, std::uint64_t budget) {
  if (!t.published || t.shadow) return {};
  if (short_of_asked(t)) {
    prepare_asked(t, budget);
    return {};
  }
  if (migrating(t) || t.used * 16 <= t.capacity * 11) return {};
  if (t.spare == null_ref) {
    // What a growth at the load limit will ask for.
    auto capacity = capacity_for(t, t.capacity / 4 * 3 + 1);
    if (!capacity) return std::move(capacity).error();
    auto b = alloc.allocate_unreserved(detail::index_bytes(*capacity));
    if (!b) return std::move(b).error();
    bytes_used += b->bytes;
    t.spare = b->ref;
    t.spare_capacity = *capacity;
    t.spare_ready = 0;
  }
  return ready_spare(t, budget);
}

result<void> writer::impl::ready_spare(table_state& t, std::uint64_t budget) {
  const std::uint64_t total = detail::index_bytes(t.spare_capacity);
  const std::uint64_t n = std::min(budget, total - t.spare_ready);
  if (n == 0) return {};
  if (auto r = alloc.reserve_part(t.spare + t.spare_ready, n); !r) return r;
  std::memset(ptr(t.spare) + t.spare_ready, 0, n);
  t.spare_ready += n;
  return {};
}

void writer::impl::drop_spare(table_state& t) {
  if (t.spare == null_ref) return;
  release(t.spare, detail::size_class(detail::index_bytes(t.spare_capacity)));
  t.spare = null_ref;
  t.spare_capacity = t.spare_ready = 0;
}

result<void> writer::impl::start_migration(table_state& t, std::uint64_t capacity) {
  std::uint64_t root = null_ref;
  // A table short of its asked size grows beside its asked array while that
  // one is not ready (making the rest of it ready now could take seconds),
  // unless the keys need that size already.
  const bool keep_spare = short_of_asked(t) && t.spare != null_ref && t.spare_capacity > capacity &&
                          t.spare_ready < detail::index_bytes(t.spare_capacity);
  if (t.spare != null_ref && t.spare_capacity >= capacity && !keep_spare) {
    // Ready by now unless a large batch outran the per-write steps.
    if (auto r = ready_spare(t, UINT64_MAX); !r) return r;
    root = t.spare;
    capacity = t.spare_capacity;
    t.spare = null_ref;
    t.spare_capacity = t.spare_ready = 0;
    auto* fresh = new (ptr(root)) index_header{};
    fresh->capacity = capacity;
  } else {
    if (!keep_spare) drop_spare(t);
    auto made = new_index(capacity);
    if (!made) return std::move(made).error();
    root = *made;
  }
  index_header* ix = index(root);
  ix->old.store(t.root, std::memory_order_relaxed);
  ix->migrated.store(0, std::memory_order_relaxed);
  t.old = t.root;
  t.old_capacity = t.capacity;
  t.migrated = 0;
  t.old_live = t.keys;
  t.root = root;
  t.capacity = capacity;
  t.used = 0;
  publish_counts(t);
  publish_root(t);  // seq_cst: the new array's header is complete before readers see it
  return {};
}

void writer::impl::migrate(table_state& t, std::uint64_t budget) {
  if (!migrating(t)) return;
  const shared_u64* from = slots(t.old);
  shared_u64* to = slots(t.root);
  const std::uint64_t mask = t.capacity - 1;
  const std::uint64_t end = t.migrated + std::min(budget, t.old_capacity - t.migrated);
  for (std::uint64_t i = t.migrated; i < end; ++i) {
    const std::uint64_t v = from[i].load(std::memory_order_relaxed);
    if (!detail::slot_has_entry(v)) continue;
    // The key is in no slot of the new array (rule 1): the first free one is its place.
    std::uint64_t j = hash_of(entry(detail::slot_ref(v))) & mask;
    while (detail::slot_has_entry(to[j].load(std::memory_order_relaxed))) j = (j + 1) & mask;
    if (to[j].load(std::memory_order_relaxed) == null_ref) ++t.used;
    to[j].store(v, std::memory_order_seq_cst);
    --t.old_live;
  }
  t.migrated = end;
  index_header* ix = index(t.root);
  // After the moves it covers (rule 2).
  ix->migrated.store(end, std::memory_order_seq_cst);
  if (end < t.old_capacity) return;
  ix->old.store(null_ref, std::memory_order_seq_cst);
  dispose(t, t.old, detail::size_class(detail::index_bytes(t.old_capacity)));
  t.old = null_ref;
  t.old_capacity = t.migrated = t.old_live = 0;
}

void writer::impl::migrate_for(std::chrono::microseconds budget) {
  // Chunks small enough that one ends within a few dozen microseconds.
  constexpr std::uint64_t chunk = 1024;
  const auto until = std::chrono::steady_clock::now() + budget;
  for (auto& t : tables) {
    while (migrating(t) || short_of_asked(t)) {
      if (std::chrono::steady_clock::now() >= until) return;
      if (migrating(t)) {
        migrate(t, chunk);
      } else {
        prepare_asked(t, detail::spare_slice_bytes);
      }
    }
  }
}

void writer::impl::dispose_arrays(const table_state& t) {
  if (t.old != null_ref) dispose(t, t.old, detail::size_class(detail::index_bytes(t.old_capacity)));
  dispose(t, t.root, detail::size_class(detail::index_bytes(t.capacity)));
}

void writer::impl::dispose_table(const table_state& t) {
  // The blocks of frozen slots belong to the new array now (or are retired).
  auto entries = [&](std::uint64_t root, std::uint64_t capacity, std::uint64_t from) {
    shared_u64* s = slots(root);
    for (std::uint64_t i = from; i < capacity; ++i) {
      const std::uint64_t v = s[i].load(std::memory_order_relaxed);
      if (detail::slot_has_entry(v)) dispose_chain(t, detail::slot_ref(v));
    }
  };
  entries(t.root, t.capacity, 0);
  if (t.old != null_ref) entries(t.old, t.old_capacity, t.migrated);
  dispose_arrays(t);
  if (t.spare != null_ref)
    release(t.spare, detail::size_class(detail::index_bytes(t.spare_capacity)));
}

result<std::uint64_t> writer::impl::rehash(const table_state& t, std::uint64_t capacity) {
  auto root = new_index(capacity);
  if (!root) return std::move(root).error();
  shared_u64* to = slots(*root);
  const std::uint64_t mask = capacity - 1;
  auto copy = [&](std::uint64_t from_root, std::uint64_t from_capacity, std::uint64_t first) {
    const shared_u64* from = slots(from_root);
    for (std::uint64_t i = first; i < from_capacity; ++i) {
      const std::uint64_t v = from[i].load(std::memory_order_relaxed);
      if (!detail::slot_has_entry(v)) continue;
      std::uint64_t j = hash_of(entry(detail::slot_ref(v))) & mask;
      while (to[j].load(std::memory_order_relaxed) != null_ref) j = (j + 1) & mask;
      to[j].store(v, std::memory_order_relaxed);
    }
  };
  copy(t.root, t.capacity, 0);
  if (migrating(t)) copy(t.old, t.old_capacity, t.migrated);
  return root;
}

}  // namespace slither::shm
