// libFuzzer target: a reader on damaged segments. A real store (a set with
// strings in compact entry blocks and arrays and a large value in full ones,
// a bag with a chain, an ordered table whose B+tree has
// two levels, a set whose index is growing, a second segment) is built once;
// each input overwrites parts of its segments, then a fresh reader attaches
// and runs every read. Errors are fine; crashes, hangs, huge allocations and
// exceptions (other than the slither::error `view::value` documents) are not.
//
// Input layout: a sequence of patches, each
//   [where: 1 byte][offset: 3 bytes, little-endian][length: 1 byte][bytes]
// applied in order. `where` bits 1-3 name an anchor: 0 is none, the patch
// going to segment (where % 2) at (offset % its size); 1-7 are blocks of the
// built store (`fuzz_store::anchors`), the patch going at (offset past the
// anchor's start) in its segment, so that mutations reach the B+tree's nodes
// and a bag's chain at a rate, not once in thousands of random offsets. The
// segments are restored to their built contents before each input.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "btree.hpp"
#include "layout.hpp"
#include "slither/core/error.hpp"
#include "slither/shm/store.hpp"

namespace {

using namespace slither;
using namespace slither::shm;

/// A segment of the fuzzed store, mapped read-write, with its built contents.
struct patchable {
  std::byte* data = nullptr;
  std::size_t size = 0;
  std::vector<std::byte> pristine;
};

struct fuzz_store {
  std::string ns = "fuzz" + std::to_string(::getpid());
  std::optional<writer> w;
  patchable segments[2];
  /// Where anchored patches go (segment, offset): the ordered table's root,
  /// its first and last leaves, the chain of "k" in the bag (its newest,
  /// second newest and oldest blocks) and the ordered table's hash index.
  std::vector<std::pair<unsigned, std::size_t>> anchors;
  std::vector<std::string> keys = {"s", "nd", "big", "k",   "missing", "",    "s2",
                                   "m", "b",  "nd0", "nd3", "g1",      "g12", "o42"};

  fuzz_store() {
    store_options o;
    o.ns = ns;
    o.name = "seg";
    o.initial_segment_bytes = 64 << 10;
    o.max_readers = 4;
    const std::vector<table_spec> tables = {{"kv", table_kind::set, 16},
                                            {"log", table_kind::bag, 4},
                                            {"ord", table_kind::ordered_set, 16},
                                            {"grow", table_kind::set, 8}};
    w.emplace(writer::create(o, tables).value());
    w->put("kv", "s", "text").value();
    w->put("kv", "s2", Value::map({{"a", 1}, {"b", Value::list({1.5, "x", Bytes{"yz"}})}})).value();
    w->put("kv", "m", Value::list({nullptr, true, std::int64_t{-7}})).value();
    w->put("kv", "b", Bytes{std::string(100, 'b')}).value();
    w->put("kv", "nd", ndarray::zeros(dtype::f32, {3, 5})).value();
    w->put("kv", "nd0", ndarray::zeros(dtype::u8, {0})).value();
    w->put("kv", "nd3", ndarray::zeros(dtype::i64, {2, 2, 2})).value();
    for (int i = 0; i < 4; ++i) w->put("log", "k", i).value();
    w->put("log", "s", "one").value();
    for (int i = 0; i < 100; ++i) {
      std::string k = "o";
      k += std::to_string(i);
      w->put("ord", k, i).value();
    }
    // 13 keys start a growth of its 16 slots, the 14th moves 8 of them:
    // the index is caught mid-migration, half its old array frozen.
    for (int i = 0; i < 14; ++i) {
      std::string k = "g";
      k += std::to_string(i);
      w->put("grow", k, i).value();
    }
    // Past the first segment: references into segment 1 too.
    w->put("kv", "big", Bytes{std::string(60 << 10, 'z')}).value();
    for (int n = 0; n < 2; ++n) map_segment(segment_name(ns, "seg", n), segments[n]);
    find_anchors();
  }

  /// Fills `anchors` from the built segments; aborts if the store is not
  /// shaped as built above (a two-level tree, a chain of four in the bag).
  void find_anchors() {
    auto anchor = [&](std::uint64_t ref) {
      const unsigned seg = shm::detail::ref_segment(ref);
      if (seg >= 2 || shm::detail::ref_offset(ref) >= segments[seg].size) std::abort();
      anchors.emplace_back(seg, shm::detail::ref_offset(ref));
      return segments[seg].data + shm::detail::ref_offset(ref);
    };
    const auto* h = reinterpret_cast<const shm::detail::store_header*>(
        segments[0].data + shm::detail::store_header_offset);
    const auto* root =
        reinterpret_cast<const shm::detail::btree_node*>(anchor(h->tree_roots[2].load()));
    if (root->level != 1) std::abort();
    anchor(shm::detail::slots_of(root)[0].ref);
    anchor(shm::detail::slots_of(root)[root->count - 1u].ref);
    const auto* bag = reinterpret_cast<const shm::detail::index_header*>(
        segments[0].data + shm::detail::ref_offset(h->tables[1].root.load()));
    const auto* slots = reinterpret_cast<const shm::detail::shared_u64*>(bag + 1);
    for (std::uint64_t i = 0; i < bag->capacity; ++i) {
      const std::uint64_t ref = shm::detail::slot_ref(slots[i].load());
      if (ref == shm::detail::null_ref) continue;
      const auto* e = reinterpret_cast<const shm::detail::entry_block*>(
          segments[0].data + shm::detail::ref_offset(ref));
      if (shm::detail::key_of(e) != "k") continue;
      anchor(ref);
      anchor(shm::detail::next_of(e));
      anchor(shm::detail::first_of(e));
    }
    anchor(h->tables[2].root.load());
    if (anchors.size() != 7) std::abort();
  }

  static void map_segment(const std::string& name, patchable& seg) {
    const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) std::abort();
    seg.size = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, seg.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) std::abort();
    seg.data = static_cast<std::byte*>(p);
    seg.pristine.assign(seg.data, seg.data + seg.size);
  }

  void restore() {
    for (auto& seg : segments) std::memcpy(seg.data, seg.pristine.data(), seg.size);
  }
};

fuzz_store& store() {
  static fuzz_store s;
  return s;
}

void apply(fuzz_store& s, const std::uint8_t* data, std::size_t size) {
  while (size >= 5) {
    const unsigned anchor = data[0] >> 1 & 7;
    const auto [segment, start] =
        anchor == 0 ? std::pair<unsigned, std::size_t>{data[0] % 2, 0} : s.anchors[anchor - 1];
    patchable& seg = s.segments[segment];
    const std::size_t offset = (start + (data[1] | data[2] << 8 | data[3] << 16)) % seg.size;
    const std::size_t len = std::min<std::size_t>({data[4], size - 5, seg.size - offset});
    std::memcpy(seg.data + offset, data + 5, len);
    data += 5 + len;
    size -= 5 + len;
  }
}

/// Everything a user can do with a view: errors are fine, a crash is not.
void use(const view& v) {
  const auto bytes = v.bytes();
  volatile std::byte sink{};
  if (!bytes.empty()) sink = bytes[0] ^ bytes[bytes.size() - 1];
  (void)sink;
  (void)v.version();
  if (v.is_ndarray()) {
    const ndarray a = v.array();
    if (a.nbytes() != 0) sink = a.data()[a.nbytes() - 1];
  }
  try {
    (void)v.value();
  } catch (const slither::error&) {  // the documented way value() fails
  }
}

void read_everything(const reader& r, const std::vector<std::string>& keys) {
  for (const std::string& table : r.tables()) {
    (void)r.size(table);
    (void)r.keys(table);
    (void)r.keys(table, "n");
    (void)r.keys(table, "o4");  // a seek into the tree, then its leaves until the prefix ends
    (void)r.range(table);
    (void)r.range(table, "o3", "o7", 20, true);
    (void)r.first(table);
    (void)r.last(table);
    // Every byte a scan hands out is read: an inline value in a leaf as
    // much as one in its entry block.
    for (const bool reverse : {false, true}) {
      (void)r.scan(table, {"o5", {}, 30, reverse}, [](const reader::scanned& e) {
        volatile std::size_t n = e.key.size() + e.bytes.size() + e.version;
        if (!e.key.empty()) n = n + static_cast<unsigned char>(e.key.back());
        if (!e.bytes.empty()) n = n + static_cast<std::size_t>(e.bytes.back());
        (void)n;
        try {
          (void)e.value();
        } catch (const slither::error&) {
        }
        return true;
      });
    }
    (void)r.for_each(table, [](std::string_view, const view& v) {
      use(v);
      return true;
    });
    for (const std::string& key : keys) {
      (void)r.get(table, key);
      (void)r.get_all(table, key);
      (void)r.contains(table, key);
      (void)r.peek(table, key, [](std::span<const std::byte> enc) {
        volatile std::size_t n = enc.size();
        (void)n;
      });
      if (auto v = r.get_view(table, key); v && *v) use(**v);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz_store& s = store();
  s.restore();
  apply(s, data, size);
  if (auto r = reader::attach(s.ns, "seg")) read_everything(*r, s.keys);
  return 0;
}
