// Codec throughput, side by side with a plain copy of the same bytes and with
// msgpack-c++ on the same items.
#include <benchmark/benchmark.h>

#include <cstring>
#include <msgpack.hpp>
#include <string>

#include "slither/core/codec.hpp"

namespace {

using namespace slither;

Value make_array16m() {
  auto a = ndarray::zeros(dtype::f32, {4 * 1024 * 1024});  // 16 MiB
  auto v = a.mutable_values<float>();
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.5f;
  return Value(std::move(a));
}

std::vector<Item> make_items64() {
  std::vector<Value> payloads;
  for (int i = 0; i < 64; ++i) {
    payloads.push_back(Value::map({{"id", i},
                                   {"name", "item-" + std::to_string(i)},
                                   {"score", i * 0.25},
                                   {"tags", Value::list({"a", "b"})}}));
  }
  return wrap_many(std::move(payloads));
}

void codec_ndarray16m_encode(benchmark::State& state) {
  const Value v = make_array16m();
  for (auto _ : state) {
    auto b = encode(v);
    benchmark::DoNotOptimize(b.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(encoded_size(v)));
}

void codec_ndarray16m_decode(benchmark::State& state) {
  const auto bytes = encode(make_array16m());
  for (auto _ : state) {
    auto v = decode({bytes.data(), bytes.size()});
    benchmark::DoNotOptimize(v);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes.size()));
}

// The copy limit: a fresh std::string holding the same bytes (allocation included,
// as it is for the codec).
void memcpy_16m(benchmark::State& state) {
  const auto bytes = encode(make_array16m());
  const std::string src(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  for (auto _ : state) {
    std::string copy(src);
    benchmark::DoNotOptimize(copy.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(src.size()));
}

void codec_items64_encode(benchmark::State& state) {
  const auto items = make_items64();
  std::size_t n = 0;
  for (auto _ : state) {
    auto b = encode_batch(items);
    n = b.size();
    benchmark::DoNotOptimize(b.data());
  }
  state.SetItemsProcessed(state.iterations() * 64);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

void codec_items64_decode(benchmark::State& state) {
  const auto bytes = encode_batch(make_items64());
  for (auto _ : state) {
    auto items = decode_batch({bytes.data(), bytes.size()});
    benchmark::DoNotOptimize(items);
  }
  state.SetItemsProcessed(state.iterations() * 64);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes.size()));
}

void memcpy_items64(benchmark::State& state) {
  const auto bytes = encode_batch(make_items64());
  const std::string src(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  for (auto _ : state) {
    std::string copy(src);
    benchmark::DoNotOptimize(copy.data());
  }
  state.SetItemsProcessed(state.iterations() * 64);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(src.size()));
}

// msgpack-c++ on the same items: each item an array [id, payload, meta, route],
// packed from the same Value trees, unpacked into msgpack's own object tree
// (its zone allocator, strings copied), as msgpack::unpack does by default.
using packer = msgpack::packer<msgpack::sbuffer>;

void pack_value(packer& pk, const Value& v) {
  switch (v.type()) {
    case Value::kind::null:
      pk.pack_nil();
      break;
    case Value::kind::boolean:
      v.as<bool>() ? pk.pack_true() : pk.pack_false();
      break;
    case Value::kind::int64:
      pk.pack_int64(v.as<std::int64_t>());
      break;
    case Value::kind::float64:
      pk.pack_double(v.as<double>());
      break;
    case Value::kind::string: {
      const auto& s = v.as<std::string>();
      pk.pack_str(static_cast<std::uint32_t>(s.size())).pack_str_body(s.data(), s.size());
      break;
    }
    case Value::kind::bytes: {
      const auto& s = v.as<Bytes>().data;
      pk.pack_bin(static_cast<std::uint32_t>(s.size())).pack_bin_body(s.data(), s.size());
      break;
    }
    case Value::kind::list:
      pk.pack_array(static_cast<std::uint32_t>(v.size()));
      for (const auto& e : v.as<List>()) pack_value(pk, e);
      break;
    case Value::kind::map:
      pk.pack_map(static_cast<std::uint32_t>(v.size()));
      for (const auto& [k, e] : v.as<Map>()) {
        pk.pack_str(static_cast<std::uint32_t>(k.size())).pack_str_body(k.data(), k.size());
        pack_value(pk, e);
      }
      break;
    case Value::kind::ndarray:
      break;  // not in these items
  }
}

void pack_items(msgpack::sbuffer& out, const std::vector<Item>& items) {
  packer pk(out);
  pk.pack_array(static_cast<std::uint32_t>(items.size()));
  for (const auto& item : items) {
    pk.pack_array(4);
    pk.pack_uint64(item.id);
    pack_value(pk, item.payload);
    pack_value(pk, Value(item.meta));
    pk.pack_str(static_cast<std::uint32_t>(item.route.size()))
        .pack_str_body(item.route.data(), item.route.size());
  }
}

void msgpack_items64_encode(benchmark::State& state) {
  const auto items = make_items64();
  for (auto _ : state) {
    msgpack::sbuffer out;
    pack_items(out, items);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * 64);
}

void msgpack_items64_decode(benchmark::State& state) {
  msgpack::sbuffer bytes;
  pack_items(bytes, make_items64());
  for (auto _ : state) {
    msgpack::object_handle h = msgpack::unpack(bytes.data(), bytes.size());
    benchmark::DoNotOptimize(h.get().via.array.ptr);
  }
  state.SetItemsProcessed(state.iterations() * 64);
}

// One small value: the per-call cost a store read pays on top of its lookup.
void codec_value64_decode(benchmark::State& state) {
  const auto bytes = encode(Value(std::string(64, 'v')));
  for (auto _ : state) {
    auto v = decode({bytes.data(), bytes.size()});
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(codec_value64_decode);
BENCHMARK(codec_ndarray16m_encode)->Unit(benchmark::kMillisecond);
BENCHMARK(codec_ndarray16m_decode)->Unit(benchmark::kMillisecond);
BENCHMARK(memcpy_16m)->Unit(benchmark::kMillisecond);
BENCHMARK(codec_items64_encode)->Unit(benchmark::kMicrosecond);
BENCHMARK(codec_items64_decode)->Unit(benchmark::kMicrosecond);
BENCHMARK(memcpy_items64)->Unit(benchmark::kMicrosecond);
BENCHMARK(msgpack_items64_encode)->Unit(benchmark::kMicrosecond);
BENCHMARK(msgpack_items64_decode)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
