// image_pipeline: 200 generated images → thumbnail (Python workers, Pillow),
// in batches weighted by pixel count with at most two batches in flight, so
// the memory a worker needs stays bounded whatever the images' sizes; the
// thumbnails are written to disk and checked there; peak memory reported.
// A Pipe streamed on the broker: its python stage batches by weight.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include "registry.hpp"
#include "session.hpp"
#include "slither/broker/pipe.hpp"

namespace slither::examples {
namespace {

namespace fs = std::filesystem;

// A PNG's width and height, from its IHDR chunk; nullopt if it is not a PNG.
std::optional<std::pair<std::uint32_t, std::uint32_t>> png_size(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char head[24] = {};
  if (!in.read(reinterpret_cast<char*>(head), sizeof head)) return std::nullopt;
  static constexpr unsigned char magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (!std::equal(std::begin(magic), std::end(magic), head)) return std::nullopt;
  auto be32 = [&](int at) {
    return std::uint32_t{head[at]} << 24 | std::uint32_t{head[at + 1]} << 16 |
           std::uint32_t{head[at + 2]} << 8 | std::uint32_t{head[at + 3]};
  };
  return std::pair{be32(16), be32(20)};
}

int run(const run_options& opts, example_report& report) {
  example_session s("image_pipeline", opts, report);
  if (!s.generate()) return report.exit_code;
  if (!s.start_broker({})) return report.exit_code;
  if (!s.warm_up({"image_pipeline_worker"})) return report.exit_code;
  const auto thumbs = s.scratch() / "thumbs";
  fs::create_directory(thumbs);

  const auto& images = s.data()["images"].as<List>();
  Pipe pipe("image_pipeline");
  pipe.python("thumbnail",
              {.module = "image_pipeline_worker",
               .function = "thumbnail",
               .batch_size = 16,
               .max_in_flight = 2,
               .weight_fn =
                   [](const Item& item) {
                     return static_cast<double>(item.payload["pixels"].as<std::int64_t>());
                   },
               .max_weight = 2'000'000});
  slither::run_options options;
  options.metadata = Map{{"thumbs_dir", Value(thumbs.string())}};

  const auto start = std::chrono::steady_clock::now();
  const auto input = items_of(s.data()["images"]);
  auto stream = slither::stream(s.broker(), pipe, input, options);
  if (!stream) return s.fail("pipe: " + stream.error().message);
  std::map<std::int64_t, int> seen;
  std::map<std::int64_t, Value> results;
  std::int64_t worker_peak_kib = 0;
  progress_bar bar(images.size());
  while (true) {
    auto r = stream->try_next();
    if (!r) return s.fail("pipe: " + r.error().message);
    if (!*r) break;
    bar.tick();
    const Value& out = (**r).item.payload;
    const auto id = out["id"].as<std::int64_t>();
    ++seen[id];
    worker_peak_kib = std::max(worker_peak_kib, out["peak_rss_kib"].as<std::int64_t>());
    results.emplace(id, out);
  }
  const pipe_run& ended = stream->report();
  const auto failed = static_cast<std::int64_t>(ended.failures.size() + ended.skipped.size() +
                                                ended.unfinished.size() + (ended.error ? 1 : 0));
  mode_result m;
  m.seconds = seconds_since(start);
  m.items = images.size();
  // The workers are where images are decoded; the driver's own peak spans every
  // example this process ran before, so it is reported apart.
  m.peak_rss_mib = static_cast<double>(worker_peak_kib) / 1024.0;
  if (opts.break_invariant && !results.empty())
    fs::remove(results.begin()->second["thumb"].as<std::string>());

  bool fits = true;
  std::int64_t pixels = 0;
  for (const auto& image : images) {
    const auto id = image["id"].as<std::int64_t>();
    pixels += image["pixels"].as<std::int64_t>();
    auto it = results.find(id);
    if (it == results.end()) continue;
    const auto size = png_size(it->second["thumb"].as<std::string>());
    const double w = image["width"].as<std::int64_t>();
    const double h = image["height"].as<std::int64_t>();
    if (!size || size->first > 128 || size->second > 128 || size->first == 0 || size->second == 0 ||
        std::fabs(static_cast<double>(size->first) / size->second - w / h) >
            std::max(1.0 / size->second, static_cast<double>(size->first) /
                                             (static_cast<double>(size->second) * size->second)) *
                    1.01 +
                1e-9) {
      fits = false;
    }
  }
  const bool once = seen.size() == images.size() && failed == 0 &&
                    std::all_of(seen.begin(), seen.end(), [](auto& e) { return e.second == 1; });
  s.out() << "  " << results.size() << " thumbnails of " << pixels / 1'000'000.0
          << " Mpixels; peak memory: worker " << worker_peak_kib / 1024 << " MiB, driver "
          << static_cast<int>(peak_rss_mib()) << " MiB; failed " << failed << "\n";
  s.fact("thumbnails", results.size());
  s.fact("worker_peak_rss_mib", worker_peak_kib / 1024.0);
  s.fact("driver_peak_rss_mib", peak_rss_mib());
  m.invariants = {
      {"every image has one thumbnail", once},
      {"thumbnails on disk, within 128x128, aspect kept", fits},
  };
  return s.finish(std::move(m));
}

}  // namespace

example image_pipeline_example() {
  return {"image_pipeline",
          "200 generated images → thumbnails in Python workers (Pillow), batches weighted by "
          "pixel count, at most 2 in flight; peak memory reported",
          run};
}

}  // namespace slither::examples
