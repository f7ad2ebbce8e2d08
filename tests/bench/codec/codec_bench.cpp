// Codec throughput, side by side with a plain copy of the same bytes.
#include <benchmark/benchmark.h>

#include <cstring>
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

}  // namespace

BENCHMARK_MAIN();
