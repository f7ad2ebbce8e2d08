// slither-test-worker: a worker on slither::worker_runtime whose handlers the
// tests pick by the job's function name, standing in for Python workers.
//
// Payloads are the codec's batch frames (`encode_batch`) of the items (ints,
// for most handlers); results are batch frames too. Handlers:
//
//   identity      the items decoded and encoded back (a trivial handler)
//   echo          the payload back, unchanged
//   double        each int times 2
//   pid           this process's pid for each item
//   batch_of      for each item, the list of the items its batch held
//   work          each int times 2; with metadata "raise_mod"/"raise_rem" the
//                 batch raises when an item matches, with "bad_mod"/"bad_rem"
//                 matching items fail alone (ItemError), with "delay_mod" it
//                 first sleeps (first item % delay_mod) ms
//   raise         always raises
//   sleep         sleeps metadata "ms" (default 60000), then echoes
//   crash         kills its own process with SIGKILL
//   crash_on      SIGKILL if an item equals metadata "poison", else doubles
//   wrong_length  one result fewer than items
//   garbage       results that are not an encoding
//   anything else fails like a missing Python function (LookupError)
//
// "test:NAME" (module "test", as a pipe's python stage names it) is NAME.
//
// Options (each overrides the environment a broker sets for its workers):
//   --endpoint E  --runtime-dir D  --namespace N  --pool P  --credits C
//   --curve-server-key K  --curve-secret-key K  --timeout-ms T
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "slither/broker/worker.hpp"
#include "slither/core/codec.hpp"

namespace {

using namespace slither;

std::int64_t meta_int(const worker_batch& b, std::string_view key, std::int64_t fallback) {
  const auto it = b.context().metadata.find(key);
  if (it == b.context().metadata.end() || !it->second.is_int()) return fallback;
  return it->second.as<std::int64_t>();
}

bool matches(std::int64_t v, const worker_batch& b, std::string_view mod, std::string_view rem) {
  const auto m = meta_int(b, mod, 0);
  return m > 0 && v % m == meta_int(b, rem, 0);
}

batch_results encoded(List values, std::vector<indexed_error> errors = {}) {
  batch_results out;
  out.count = values.size();
  std::vector<Item> items;
  items.reserve(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) items.push_back(wrap(std::move(values[i]), i));
  const buffer bytes = encode_batch(items);
  out.payload.assign(bytes.begin(), bytes.end());
  out.errors = std::move(errors);
  return out;
}

batch_exception raised(std::string type, std::string message) {
  return {std::move(type), std::move(message), "Traceback (test worker):\n  " + message};
}

batch_outcome handle(const worker_batch& b) {
  // Pipes name python functions "module:function": module "test" is this worker.
  const std::string fn = b.function().starts_with("test:") ? b.function().substr(5) : b.function();
  if (fn == "identity") {
    // The trivial handler: items decoded and encoded back, as a Python
    // worker's runtime does around `lambda items, ctx: items`.
    auto items = decode_batch(b.payload());
    if (!items) return raised("TypeError", "the payload is not a batch frame");
    batch_results out;
    out.count = items->size();
    const buffer bytes = encode_batch(*items);
    out.payload.assign(bytes.begin(), bytes.end());
    return out;
  }
  if (fn == "echo") {
    batch_results out;
    out.count = b.count();
    out.payload.assign(b.payload().begin(), b.payload().end());
    return out;
  }
  if (fn == "crash") {
    ::raise(SIGKILL);
  }
  if (fn == "raise") return raised("RuntimeError", "raised on purpose");
  // A C++ exception escaping the handler: `serve` reports it by its type.
  if (fn == "throw") throw std::out_of_range("thrown on purpose");
  if (fn == "sleep") {
    std::this_thread::sleep_for(std::chrono::milliseconds(meta_int(b, "ms", 60'000)));
    batch_results out;
    out.count = b.count();
    out.payload.assign(b.payload().begin(), b.payload().end());
    return out;
  }
  if (fn == "garbage") {
    batch_results out;
    out.count = b.count();
    out.payload.assign(4, std::byte{0xff});
    return out;
  }
  auto decoded = decode_batch(b.payload());
  if (!decoded) return raised("TypeError", "the payload is not a batch frame");
  List items;
  items.reserve(decoded->size());
  for (auto& item : *decoded) items.push_back(std::move(item.payload));
  List results;
  results.reserve(items.size());
  if (fn == "pid") {
    for (std::size_t i = 0; i < items.size(); ++i) {
      results.emplace_back(static_cast<std::int64_t>(::getpid()));
    }
    return encoded(std::move(results));
  }
  if (fn == "batch_of") {
    for (std::size_t i = 0; i < items.size(); ++i) results.emplace_back(Value(items));
    return encoded(std::move(results));
  }
  if (fn == "wrong_length") {
    for (std::size_t i = 0; i + 1 < items.size(); ++i) results.push_back(items[i]);
    return encoded(std::move(results));
  }
  if (fn != "double" && fn != "work" && fn != "crash_on") {
    return raised("LookupError", "no function '" + fn + "' in the test worker");
  }
  if (fn == "work") {
    if (const auto mod = meta_int(b, "delay_mod", 0);
        mod > 0 && !items.empty() && items[0].is_int()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(items[0].as<std::int64_t>() % mod));
    }
  }
  std::vector<indexed_error> errors;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!items[i].is_int()) {
      results.emplace_back();
      indexed_error e;
      e.index = static_cast<std::uint32_t>(i);
      e.error.type = "TypeError";
      e.error.message = "not an int";
      errors.push_back(std::move(e));
      continue;
    }
    const auto v = items[i].as<std::int64_t>();
    if (fn == "crash_on" && v == meta_int(b, "poison", -1)) ::raise(SIGKILL);
    if (fn == "work" && matches(v, b, "raise_mod", "raise_rem")) {
      return raised("RuntimeError", "poison item " + std::to_string(v));
    }
    if (fn == "work" && matches(v, b, "bad_mod", "bad_rem")) {
      results.emplace_back();
      indexed_error e;
      e.index = static_cast<std::uint32_t>(i);
      e.error.type = "ValueError";
      e.error.message = "bad item " + std::to_string(v);
      errors.push_back(std::move(e));
      continue;
    }
    results.emplace_back(v * 2);
  }
  return encoded(std::move(results), std::move(errors));
}

}  // namespace

int main(int argc, char** argv) {
  auto options = worker_options::from_environment();
  if (!options) {
    std::fprintf(stderr, "slither-test-worker: %s\n", options.error().message.c_str());
    return 2;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--endpoint") {
      options->broker.endpoint = value;
    } else if (flag == "--runtime-dir") {
      options->broker.runtime_dir = value;
    } else if (flag == "--namespace") {
      options->broker.ns = value;
    } else if (flag == "--pool") {
      options->pool = value;
    } else if (flag == "--curve-server-key") {
      options->broker.curve_server_key = value;
    } else if (flag == "--curve-secret-key") {
      options->broker.curve_secret_key = value;
    } else if (flag == "--timeout-ms") {
      options->broker.timeout = std::chrono::milliseconds(std::strtoul(value, nullptr, 10));
    } else if (flag == "--credits") {
      options->credits = static_cast<std::uint32_t>(std::strtoul(value, nullptr, 10));
    } else {
      std::fprintf(stderr, "slither-test-worker: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  auto worker = worker_runtime::connect(*options);
  if (!worker) {
    std::fprintf(stderr, "slither-test-worker: %s\n", worker.error().message.c_str());
    return 1;
  }
  const std::string why = worker->serve(handle);
  std::fprintf(stderr, "slither-test-worker %d: %s\n", static_cast<int>(::getpid()), why.c_str());
  return 0;
}
