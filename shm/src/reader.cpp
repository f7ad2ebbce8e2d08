// The reader: attach to a store by name, map it read-only, and read it
// lock-free inside an epoch (epoch.hpp).
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "epoch.hpp"
#include "reader_core.hpp"
#include "slither/core/codec.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm {

using detail::entry_header;
using detail::index_header;
using detail::located;
using detail::reader_core;
using detail::shared_u64;
namespace bip = detail::bip;
using detail::decode_entry;
using detail::epoch_guard;
using detail::hash_key;
using detail::key_of;
using detail::make_view;
using detail::os_error;
using detail::printable;
using detail::shape_of;
using detail::valid_name;
using detail::value_of;

// ---------------------------------------------------------------------------
// reader_core

reader_core::~reader_core() {
  if (slot == nullptr || !owned()) return;
  for (auto& h : slot->holds) h.store(0, std::memory_order_relaxed);
  for (auto& l : slot->lanes) l.store(0, std::memory_order_relaxed);
  slot->overflow_epoch.store(0, std::memory_order_relaxed);
  slot->start_time.store(0, std::memory_order_relaxed);
  slot->pid.store(0, std::memory_order_release);
}

error_info reader_core::unknown_table(std::string_view table) const {
  return fail(errc::not_found,
              "unknown table '" + std::string(table) + "' in store '" + label + "'");
}

error_info reader_core::inherited() const {
  return fail(errc::invalid_argument, "this reader of store '" + label +
                                          "' was attached by the parent process; attach "
                                          "again after fork()");
}

error_info reader_core::unreadable(std::uint64_t ref) const {
  return fail(errc::io_error, "store '" + label + "': cannot read block at segment " +
                                  std::to_string(detail::ref_segment(ref)) + " offset " +
                                  std::to_string(detail::ref_offset(ref)) +
                                  " (segment missing: was the store closed?)");
}

const std::byte* reader_core::map_segment(std::uint32_t n) noexcept {
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

result<std::vector<located>> reader_core::chain(located head) {
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

result<located> reader_core::first(located head) {
  if (head.e->next == detail::null_ref) return head;
  auto blocks = chain(head);
  if (!blocks) return std::move(blocks).error();
  return blocks->front();
}

// ---------------------------------------------------------------------------
// view

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

}  // namespace slither::shm
