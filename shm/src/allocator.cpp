#include "allocator.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iterator>
#include <new>
#include <utility>
#include <vector>

#include "slither/shm/detail/sys.hpp"
#include "slither/shm/store.hpp"

namespace slither::shm::detail {

namespace {
constexpr std::uint64_t min_segment_bytes = std::uint64_t{64} << 10;

constexpr std::uint64_t align_down(std::uint64_t v, std::uint64_t a) noexcept {
  return v / a * a;
}
}  // namespace

void allocator::init(std::string ns, std::string name, std::string label, std::uint64_t incarnation,
                     std::uint64_t initial_segment_bytes) {
  ns_ = std::move(ns);
  name_ = std::move(name);
  label_ = std::move(label);
  incarnation_ = incarnation;
  initial_segment_bytes_ = initial_segment_bytes;
  fault_in_huge_ = shm_huge_on_advice();
}

std::uint64_t allocator::resident_bytes() const noexcept {
  return segment_total_ - hole_total_;
}

result<void> allocator::add_segment(std::uint64_t payload_bytes, bool reserve_payload) {
  const auto n = static_cast<std::uint32_t>(segments_.size());
  if (n >= max_segments) {
    return fail(errc::no_space, "store '" + label_ + "' has reached its limit of " +
                                    std::to_string(max_segments) + " segments");
  }
  const std::uint64_t data_start = n == 0 ? segment0_data_start : segment_data_start;
  // By what the request needs, or by a share of what the store holds: not
  // by doubling the last segment, which made one large value double every
  // segment after it.
  std::uint64_t bytes = data_start + payload_bytes;
  if (n == 0) {
    bytes = std::max({initial_segment_bytes_, min_segment_bytes, bytes});
  } else {
    const std::uint64_t step =
        std::clamp(segment_total_ / 2, std::max(initial_segment_bytes_, min_segment_bytes),
                   std::max(max_growth_bytes, initial_segment_bytes_));
    bytes = std::max(step, bytes);
  }
  bytes = align_up(bytes, page_bytes);
  // The header's and the request's pages are reserved now (the request is
  // served from the front); the rest is a hole until used.
  const std::uint64_t reserved =
      std::min(bytes, align_up(data_start + (reserve_payload ? payload_bytes : 0), page_bytes));
  std::string name = segment_name(ns_, name_, n);
  auto obj = create_object(name, bytes, reserved);
  if (!obj) return std::move(obj).error();
  created_.push_back(std::move(name));
  std::byte* base = obj->map.data();
  new (base) segment_header{store_magic, layout_version, incarnation_, n, bytes, {}};
  segments_.push_back({std::move(obj->fd), std::move(obj->map), base, bytes});
  segment_total_ += bytes;
  if (reserved < bytes) add_hole(make_ref(n, reserved), bytes - reserved);
  add_free(make_ref(n, data_start), bytes - data_start);
  if (header_ != nullptr) {
    header_->segment_bytes[n].store(bytes, std::memory_order_release);
    header_->segment_count.store(n + 1, std::memory_order_release);
  }
  return {};
}

result<block> allocator::allocate(std::uint64_t bytes, bool reserve_pages) {
  const std::uint64_t cls = size_class(bytes);
  collect_trimmed();
  if (cls <= quick_max_bytes) {
    if (const auto q = quick_.find(cls); q != quick_.end() && !q->second.empty()) {
      const std::uint64_t ref = q->second.back();
      // Only extents in the trees are punched, but a block handed out
      // unreserved (`allocate_unreserved`) may come back with holes.
      if (reserve_pages && !holes_.empty()) {
        if (auto r = reserve(ref, cls, ref + cls); !r) return std::move(r).error();
      }
      q->second.pop_back();
      quick_total_ -= cls;
      free_total_ -= cls;
      return block{ref, cls};
    }
  }
  auto it = free_by_size_.lower_bound({cls, 0});
  // A request larger than any quick block, or one only the largest extent
  // (a segment's untouched tail, typically) fits: the quick blocks go back
  // to the trees first, so that freed neighbours merge and serve it before
  // fresh space is cut (sizes that drift still reuse freed space, as
  // without quick blocks).
  if (quick_total_ > 0 && (cls > quick_max_bytes || it == free_by_size_.end() ||
                           std::next(it) == free_by_size_.end())) {
    drain_quick();
    it = free_by_size_.lower_bound({cls, 0});
  }
  if (it == free_by_size_.end() && trimmer_ && trimmer_->outstanding() > 0) {
    // Space being trimmed is free space: wait for it rather than grow.
    trimmer_->wait_idle();
    collect_trimmed();
    it = free_by_size_.lower_bound({cls, 0});
  }
  if (it == free_by_size_.end()) {
    if (auto r = add_segment(cls, reserve_pages); !r) return std::move(r).error();
    it = free_by_size_.lower_bound({cls, 0});
  }
  const auto [len, start] = *it;
  if (reserve_pages && !holes_.empty()) {
    if (auto r = reserve(start, cls, start + len); !r) return std::move(r).error();
  }
  auto by_size = free_by_size_.extract(it);
  auto by_ref = free_by_ref_.extract(start);
  if (len != cls) {
    by_size.value() = {len - cls, start + cls};
    by_ref.key() = start + cls;
    by_ref.mapped() = len - cls;
    free_by_size_.insert(std::move(by_size));
    free_by_ref_.insert(std::move(by_ref));
  }
  free_total_ -= cls;
  return block{start, cls};
}

std::pair<std::uint64_t, std::uint64_t> allocator::insert_free(std::uint64_t ref,
                                                               std::uint64_t bytes) {
  std::uint64_t start = ref, end = ref + bytes;
  auto next = free_by_ref_.lower_bound(ref);
  // Extents never span segments: an offset is below 2^48, so the end of one
  // segment's extent never equals a reference into the next segment.
  if (next != free_by_ref_.end() && next->first == end) {
    end += next->second;
    free_by_size_.erase({next->second, next->first});
    next = free_by_ref_.erase(next);
  }
  if (next != free_by_ref_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      free_by_size_.erase({prev->second, prev->first});
      free_by_ref_.erase(prev);
    }
  }
  free_by_ref_.emplace(start, end - start);
  free_by_size_.emplace(end - start, start);
  return {start, end};
}

void allocator::free(std::uint64_t ref, std::uint64_t bytes) {
  free_total_ += bytes;
  // Bounded by the store's size too: a small store keeps few blocks out of its trees.
  if (bytes <= quick_max_bytes &&
      quick_total_ + bytes <= std::min(quick_max_total, resident_bytes() / 256)) {
    quick_[bytes].push_back(ref);
    quick_total_ += bytes;
    return;
  }
  release(ref, bytes);
}

void allocator::drain_quick() {
  for (auto& [bytes, refs] : quick_) {
    for (const std::uint64_t ref : refs) release(ref, bytes);
    refs.clear();
  }
  quick_total_ = 0;
}

void allocator::release(std::uint64_t ref, std::uint64_t bytes) {
  const auto [start, end] = insert_free(ref, bytes);
  if (end - start < punch_min_bytes) return;
  // Only near the block just freed: the rest of the extent was looked at
  // when it was freed, and a large extent may hold many holes.
  const std::uint64_t from = std::max(start, ref - std::min(ref, reserve_chunk_bytes));
  const std::uint64_t to = std::min(end, ref + bytes + reserve_chunk_bytes);
  const bool lingers = bytes >= linger_min_bytes;
  trim_requests_.push_back(
      {from, to, lingers ? clock::now() + linger_time : clock::time_point{}, lingers});
}

void allocator::trim(clock::time_point now, bool everything) {
  collect_trimmed();
  if (trim_requests_.empty()) return;
  std::uint64_t lingering = 0;
  for (const trim_request& r : trim_requests_) {
    if (r.lingers && r.due > now) lingering += r.to - r.from;
  }
  std::size_t kept = 0;
  for (const trim_request& r : trim_requests_) {
    const bool waits = r.due > now;
    if (waits && !everything && lingering <= linger_max_bytes) {
      trim_requests_[kept++] = r;
      continue;
    }
    if (waits) lingering -= r.to - r.from;  // the oldest go first
    quarantine(r.from, r.to);
  }
  trim_requests_.resize(kept);
}

void allocator::trim_now() {
  trim(clock::now(), true);
  if (trimmer_) trimmer_->wait_idle();
  collect_trimmed();
}

void allocator::quarantine(std::uint64_t from, std::uint64_t to) {
  auto it = free_by_ref_.upper_bound(from);
  if (it != free_by_ref_.begin()) --it;
  while (it != free_by_ref_.end() && it->first < to) {
    const std::uint64_t fs = it->first, fe = fs + it->second;
    // The whole free pages of [from, to) in this extent (what was reused
    // since the free is not free any more, and is left alone).
    const std::uint64_t s = align_up(std::max(from, fs), page_bytes);
    const std::uint64_t e = align_down(std::min(to, fe), page_bytes);
    if (e <= s || e - s < punch_min_bytes) {
      ++it;
      continue;
    }
    // Its runs not yet holes; short ones stay (a system call each for a
    // few pages would cost more than the pages).
    const std::uint64_t seg_base = make_ref(ref_segment(s), 0);
    trim_job job;
    job.fd = segments_[ref_segment(s)].fd.get();
    std::uint64_t cursor = s;
    auto add_run = [&](std::uint64_t a, std::uint64_t b) {
      if (b - a >= punch_min_bytes) job.runs.emplace_back(a - seg_base, b - a);
    };
    auto h = holes_.upper_bound(s);
    if (h != holes_.begin()) --h;
    for (; h != holes_.end() && h->first < e; ++h) {
      const std::uint64_t hole_end = h->first + h->second;
      if (hole_end <= cursor) continue;
      if (h->first > cursor) add_run(cursor, h->first);
      cursor = hole_end;
    }
    if (cursor < e) add_run(cursor, e);
    if (job.runs.empty()) {
      ++it;
      continue;
    }
    // [s, e) leaves the free lists until the trimmer is done with it; it
    // still counts as free.
    free_by_size_.erase({fe - fs, fs});
    free_by_ref_.erase(it);
    if (fs < s) {
      free_by_ref_.emplace(fs, s - fs);
      free_by_size_.emplace(s - fs, fs);
    }
    if (e < fe) {
      free_by_ref_.emplace(e, fe - e);
      free_by_size_.emplace(fe - e, e);
    }
    if (!trimmer_) trimmer_ = std::make_unique<trimmer>();
    job.tag = ++next_tag_;
    const std::uint64_t slices = trimmer_->submit(job);
    trimming_.emplace(job.tag, trimming{s, e - s, slices});
    trimming_total_ += e - s;
    it = free_by_ref_.lower_bound(e);
  }
}

void allocator::collect_trimmed() {
  if (!trimmer_ || trimmer_->outstanding() == 0) return;
  for (const trim_result& r : trimmer_->collect()) {
    const auto t = trimming_.find(r.tag);
    if (t == trimming_.end()) continue;  // cannot happen: every tag is submitted once
    if (r.punched) add_hole(make_ref(ref_segment(t->second.start), 0) + r.at, r.bytes);
    if (--t->second.slices > 0) continue;
    trimming_total_ -= t->second.bytes;
    insert_free(t->second.start, t->second.bytes);
    trimming_.erase(t);
  }
}

void allocator::add_free(std::uint64_t start, std::uint64_t bytes) {
  free_total_ += bytes;
  free_by_ref_.emplace(start, bytes);
  free_by_size_.emplace(bytes, start);
}

void allocator::add_hole(std::uint64_t start, std::uint64_t bytes) {
  hole_total_ += bytes;
  std::uint64_t end = start + bytes;
  auto next = holes_.lower_bound(start);
  if (next != holes_.end() && next->first == end) {
    end += next->second;
    next = holes_.erase(next);
  }
  if (next != holes_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      holes_.erase(prev);
    }
  }
  holes_.emplace(start, end - start);
}

void allocator::forget_holes(std::uint64_t at, std::uint64_t bytes) {
  const std::uint64_t end = at + bytes;
  auto it = holes_.upper_bound(at);
  if (it != holes_.begin()) --it;
  while (it != holes_.end() && it->first < end) {
    const std::uint64_t hole_start = it->first, hole_end = hole_start + it->second;
    if (hole_end <= at) {
      ++it;
      continue;
    }
    it = holes_.erase(it);
    hole_total_ -= hole_end - hole_start;
    if (hole_start < at) add_hole(hole_start, at - hole_start);
    if (end < hole_end) {
      add_hole(end, hole_end - end);
      return;
    }
  }
}

bool allocator::has_holes(std::uint64_t at, std::uint64_t bytes) const {
  auto it = holes_.upper_bound(at);
  if (it != holes_.begin() && std::prev(it)->first + std::prev(it)->second > at) return true;
  return it != holes_.end() && it->first < at + bytes;
}

void allocator::note_backed(std::uint64_t at, std::uint64_t bytes) {
  const std::uint64_t end = at + bytes;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> counted;  // forgetting edits holes_
  auto it = holes_.upper_bound(at);
  if (it != holes_.begin()) --it;
  for (; it != holes_.end() && it->first < end; ++it) {
    const std::uint64_t from = std::max(at, it->first);
    const std::uint64_t to = std::min(end, it->first + it->second);
    if (from < to) counted.emplace_back(from, to);
  }
  // A slice per call: one call over a 256 MiB value looks up 65,536 pages,
  // milliseconds that threads woken on this CPU can wait out (pings waited
  // 5 ms behind the one SEEK_HOLE this check replaced, in a perf sched trace).
  constexpr std::uint64_t slice_pages = 1024;
  unsigned char resident[slice_pages];
  for (const auto& [from, to] : counted) {
    std::uint64_t run = from;  // start of the backed run being scanned
    for (std::uint64_t s = from; s < to; s += slice_pages * page_bytes) {
      const std::uint64_t n = std::min(slice_pages * page_bytes, to - s);
      if (::mincore(ptr(s), n, resident) != 0) {
        run = to;  // unknown: the rest stays holes, the safe side
        break;
      }
      for (std::uint64_t i = 0; i < n / page_bytes; ++i) {
        if ((resident[i] & 1) != 0) continue;
        const std::uint64_t page = s + i * page_bytes;
        if (run < page) forget_holes(run, page - run);
        run = page + page_bytes;
      }
    }
    if (run < to) forget_holes(run, to - run);
  }
}

result<void> allocator::adopt_backed(std::uint64_t at, std::uint64_t bytes) {
  note_backed(at, bytes);
  return reserve_part(at, bytes);
}

result<void> allocator::reserve(std::uint64_t at, std::uint64_t bytes, std::uint64_t limit) {
  const std::uint64_t seg_base = make_ref(ref_segment(at), 0);
  const std::uint64_t s = align_down(at, page_bytes);
  std::uint64_t e = align_up(at + bytes, page_bytes);
  // Extents are used from their start up: reserve a chunk beyond, too, but
  // not past the extent (beyond it may be pages the trimmer is punching).
  if (e - s < reserve_chunk_bytes) e = std::max(e, std::min(limit, s + reserve_chunk_bytes));
  auto it = holes_.upper_bound(s);
  if (it != holes_.begin()) --it;
  const int fd = segments_[ref_segment(at)].fd.get();
  while (it != holes_.end() && it->first < e) {
    const std::uint64_t hole_start = it->first;
    const std::uint64_t hole_end = hole_start + it->second;
    if (hole_end <= s) {
      ++it;
      continue;
    }
    // Holes lie in free extents only (or in runs the trimmer holds, which
    // are past `limit`), so reserving any part of one up to it is safe.
    const std::uint64_t from = std::max(s, hole_start);
    const std::uint64_t to = std::min(e, hole_end);
    if (fault_in_huge_) {
      // fallocate would back these pages with small ones on a huge=advise
      // tmpfs: a write fault through the advised mapping takes a huge page
      // (its whole 2 MiB, where all of it is still a hole). Best effort:
      // fallocate, next, still reserves and reports a full /dev/shm.
      ::madvise(ptr(from), to - from, MADV_POPULATE_WRITE);
    }
    if (const int err =
            sys().fallocate(fd, static_cast<off_t>(from - seg_base), static_cast<off_t>(to - from));
        err != 0) {
      return fail(err == ENOSPC ? errc::no_space : errc::io_error,
                  "cannot reserve " + std::to_string(to - from) + " bytes in segment " +
                      std::to_string(ref_segment(at)) + " of store '" + label_ +
                      "' (/dev/shm): " + errno_text(err));
    }
    it = holes_.erase(it);
    hole_total_ -= hole_end - hole_start;
    if (hole_start < from) add_hole(hole_start, from - hole_start);
    if (to < hole_end) {
      add_hole(to, hole_end - to);
      break;
    }
    it = holes_.upper_bound(to);
    if (it != holes_.begin()) --it;
  }
  return {};
}

}  // namespace slither::shm::detail
