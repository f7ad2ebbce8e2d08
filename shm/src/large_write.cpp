// Large values written in place (create/seal): the writer reserves an
// unpublished block whose value has pages of its own, a client fills them
// through its own mapping, and `commit` links the block like any put. Only
// the writer publishes; readers cannot reach a block before its commit.
#include <algorithm>
#include <cstring>
#include <new>

#include "block.hpp"
#include "segment.hpp"
#include "slither/core/wire.hpp"
#include "writer_impl.hpp"

namespace slither::shm {

using detail::align_up;
using detail::entry_header;
using detail::page_bytes;
using detail::printable;
using detail::table_state;

result<reservation> writer::reserve(std::string_view table, std::string_view key, dtype type,
                                    std::span<const std::uint64_t> shape, reserve_pages pages) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  detail::table_state& t = **tr;
  if (!is_valid_dtype(static_cast<std::uint8_t>(type)) || shape.size() > ndarray::max_ndim) {
    return fail(errc::invalid_argument, "cannot reserve key " + detail::printable(key) +
                                            " in table '" + t.name + "': bad dtype or " +
                                            std::to_string(shape.size()) + " dimensions");
  }
  std::uint64_t bytes = dtype_size(type);
  bool overflow = false;
  for (const std::uint64_t d : shape) overflow |= __builtin_mul_overflow(bytes, d, &bytes);
  if (overflow) bytes = UINT64_MAX;  // over any limit
  return p_->reserve(t, key, detail::value_format::ndarray, type, shape, {}, bytes, pages);
}

result<reservation> writer::reserve_bytes(std::string_view table, std::string_view key,
                                          std::uint64_t bytes, reserve_pages pages) {
  auto tr = p_->table(table);
  if (!tr) return std::move(tr).error();
  // The value is stored encoded, as a put of the same bytes stores it: the
  // encoding's header here, the bytes after it by the client.
  buffer prefix;
  {
    wire::writer w(prefix);
    w.bytes_header(bytes);
  }
  return p_->reserve(**tr, key, detail::value_format::encoded, dtype{}, {}, std::move(prefix),
                     bytes, pages);
}

result<reservation> writer::impl::reserve(table_state& t, std::string_view key,
                                          detail::value_format format, dtype type,
                                          std::span<const std::uint64_t> shape,
                                          std::vector<std::byte> prefix, std::uint64_t fill_bytes,
                                          reserve_pages pages) {
  if (auto r = check_key(t, key); !r) return std::move(r).error();
  if (fill_bytes > options.max_value_bytes ||
      prefix.size() > options.max_value_bytes - fill_bytes) {
    return fail(errc::limit_exceeded, "value for key " + printable(key) + " is over the limit of " +
                                          std::to_string(options.max_value_bytes) +
                                          " bytes (table '" + t.name + "' in store '" + label +
                                          "')");
  }
  // Header, key, shape and the value's prefix, then what the client fills
  // from a page boundary of the segment to the end of its last page: all the
  // block's own.
  const std::uint64_t shape_at = detail::shape_offset(key.size());
  const std::uint64_t min_value_at = align_up(shape_at + shape.size() * 8, ndarray::alignment);
  const std::uint64_t fill_pages = align_up(std::max<std::uint64_t>(fill_bytes, 1), page_bytes);
  const std::uint64_t block_bytes = min_value_at + prefix.size() + page_bytes + fill_pages;
  bool client_backs = pages == reserve_pages::client_backs;
  // Unreserved, the client's pages cost nothing here; the writer's own part
  // (header to prefix) is reserved below. The block's tail past the
  // client's pages is never touched: it may stay a hole.
  auto b = client_backs ? alloc.allocate_unreserved(block_bytes) : alloc.allocate(block_bytes);
  if (!b) return std::move(b).error();
  const std::uint64_t block_offset = detail::ref_offset(b->ref);
  const std::uint64_t fill_at =
      align_up(block_offset + min_value_at + prefix.size(), page_bytes) - block_offset;
  const std::uint64_t value_at = fill_at - prefix.size();
  if (client_backs) {
    if (auto r = alloc.reserve_part(b->ref, fill_at); !r) {
      alloc.free(b->ref, b->bytes);
      return std::move(r).error();
    }
    // Pages all backed already (those of a freed value of this size, still
    // lingering) leave the client nothing to back or populate.
    client_backs = alloc.has_holes(b->ref + fill_at, fill_pages);
  }
  bytes_used += b->bytes;

  std::byte* p = ptr(b->ref);
  auto* e = new (p) entry_header{};
  const std::uint64_t hash = detail::hash_key(hash_seed, key);
  e->layout = static_cast<std::uint8_t>(detail::entry_layout::full);
  e->hash = hash;
  e->count = 1;
  e->value_bytes = prefix.size() + fill_bytes;
  e->key_bytes = static_cast<std::uint32_t>(key.size());
  e->value_offset = static_cast<std::uint32_t>(value_at);
  e->format = static_cast<std::uint8_t>(format);
  e->dtype = static_cast<std::uint8_t>(type);
  e->ndim = static_cast<std::uint8_t>(shape.size());
  e->block_bytes = b->bytes;
  std::memcpy(p + sizeof(entry_header), key.data(), key.size());
  if (!shape.empty()) std::memcpy(p + shape_at, shape.data(), shape.size_bytes());
  if (!prefix.empty()) std::memcpy(p + value_at, prefix.data(), prefix.size());

  const std::uint64_t id = ++last_reservation;
  reservation out;
  out.id = id;
  out.object = segment_name(options.ns, options.name, detail::ref_segment(b->ref));
  out.offset = block_offset + fill_at;
  out.bytes = fill_bytes;
  out.map_bytes = fill_pages;
  out.pages = client_backs ? reserve_pages::client_backs : reserve_pages::writer_reserves;
  pending.emplace(id, detail::pending_write{t.index, std::string(key), hash, *b, e->value_bytes,
                                            std::move(prefix), client_backs ? b->ref + fill_at : 0,
                                            client_backs ? fill_pages : 0});
  return out;
}

void writer::impl::drop_pending(const detail::pending_write& w) {
  // Counted as holes still, the pages the client backed would never be
  // handed back; counted as backed, those it did not would be reused unreserved.
  if (w.client_bytes > 0) alloc.note_backed(w.client_at, w.client_bytes);
  release(w.b.ref, w.b.bytes);
}

result<std::uint64_t> writer::commit(std::uint64_t id) {
  if (p_->closed) return p_->closed_error();
  if (!p_->owned()) return p_->table("").error();  // the fork child's error
  const auto it = p_->pending.find(id);
  if (it == p_->pending.end()) {
    return fail(errc::not_found, "no reservation " + std::to_string(id) + " in store '" +
                                     p_->label + "' (committed, abandoned or never made)");
  }
  detail::pending_write w = std::move(it->second);
  p_->pending.erase(it);
  // Found by directory index, not position: dropping a table shifts the others.
  const auto found = std::find_if(p_->tables.begin(), p_->tables.end(),
                                  [&](const detail::table_state& s) { return s.index == w.table; });
  if (found == p_->tables.end()) {
    p_->drop_pending(w);
    return fail(errc::not_found, "the table of reservation " + std::to_string(id) +
                                     " was dropped before its commit; it was abandoned");
  }
  // Before anything reads the block: a page its client left a hole would be
  // allocated by the first read of it, a SIGBUS where /dev/shm is full.
  if (w.client_bytes > 0) {
    if (auto r = p_->alloc.adopt_backed(w.client_at, w.client_bytes); !r) {
      p_->drop_pending(w);
      return fail(r.error().code, "reservation " + std::to_string(id) + " for key " +
                                      detail::printable(w.key) +
                                      " was not fully written by its client and its pages "
                                      "cannot be reserved; it was abandoned: " +
                                      r.error().message);
    }
  }
  detail::table_state& t = *found;
  const detail::entry_block* b = p_->entry(w.b.ref);
  const entry_header* e = detail::full_of(b);
  if (e == nullptr || e->hash != w.hash || e->value_bytes != w.value_bytes ||
      e->block_bytes != w.b.bytes || detail::key_of(b) != w.key || !detail::check_value(b) ||
      !std::equal(w.prefix.begin(), w.prefix.end(), detail::value_of(b).begin())) {
    p_->drop_pending(w);
    return fail(errc::decode_error, "reservation " + std::to_string(id) + " for key " +
                                        detail::printable(w.key) +
                                        " was damaged before its commit; it was abandoned");
  }
  auto version = p_->link_built(t, w.b, w.hash, w.key);
  if (version) p_->maybe_reclaim();
  return version;
}

result<void> writer::abandon(std::uint64_t id) {
  if (p_->closed) return p_->closed_error();
  if (!p_->owned()) return p_->table("").error();
  const auto it = p_->pending.find(id);
  if (it == p_->pending.end()) {
    return fail(errc::not_found,
                "no reservation " + std::to_string(id) + " in store '" + p_->label + "'");
  }
  p_->drop_pending(it->second);
  p_->pending.erase(it);
  return {};
}

}  // namespace slither::shm
