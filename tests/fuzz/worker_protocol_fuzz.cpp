// libFuzzer target: the worker protocol's decoders (both directions, and
// every frame kind) must return a value or an error for any frames, and what
// they accept must survive a re-encode. The dispatch-job status frame, read
// by clients from the broker, is fuzzed alongside.
//
// Input layout: byte 0 picks the frame count (1..4) and byte 1 the direction;
// the first frame takes up to `header_size` bytes, so that valid headers are
// common, and the rest is cut evenly into the remaining frames.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_frames.hpp"
#include "job_wire.hpp"
#include "worker_protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace slither::worker_protocol;
  if (size < 2) return 0;
  const std::size_t count = 1 + data[0] % 4;
  const auto way = data[1] % 2 == 0 ? direction::to_worker : direction::to_broker;
  const std::span<const std::byte> rest{reinterpret_cast<const std::byte*>(data + 2), size - 2};
  const std::vector<frame> frames = slither::fuzzing::split_frames(rest, count, header_size);

  if (auto h = decode_message(frames, way)) {
    const auto again = encode_header(*h);
    const std::vector<frame> again_frames{frame(again.data(), again.size())};
    if (std::equal(again.begin(), again.end(), frames[0].begin(), frames[0].end()) == false) {
      __builtin_trap();  // a header that decodes re-encodes to the same bytes
    }
    (void)again_frames;
  }
  for (std::size_t i = 1; i < frames.size(); ++i) {
    if (auto meta = decode_meta(frames[i])) {
      const slither::job_target target{meta->function, meta->context};
      auto back = decode_meta(encode_meta(target));
      if (!back || back->function != meta->function || !(back->context == meta->context)) {
        __builtin_trap();
      }
    }
    if (auto errors = decode_item_errors(frames[i], 1 + data[0])) {
      if (!decode_item_errors(encode_item_errors(*errors), 1 + data[0])) __builtin_trap();
    }
    if (auto err = decode_error(frames[i])) {
      auto back = decode_error(encode_error(*err));
      if (!back || back->message != err->message || back->type != err->type) __builtin_trap();
    }
    if (auto status = slither::detail::job_wire::decode_status(frames[i], {})) {
      if (!slither::detail::job_wire::decode_status(
              slither::detail::job_wire::encode_status(*status), {})) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
