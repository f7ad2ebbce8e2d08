// libFuzzer target: the broker's request decoder must return a message or an
// error for any frames, and what it accepts must survive a re-encode. The
// split the broker uses (header, then payload) is fuzzed the same way.
//
// Input layout: byte 0 picks the frame count (1..4); the first frame takes up
// to `header_size` bytes, so that valid headers are common, and the rest is
// cut evenly into the remaining frames.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_frames.hpp"
#include "slither/broker/protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace slither::protocol;
  if (size == 0) return 0;
  const std::size_t count = 1 + data[0] % 4;
  const std::span<const std::byte> rest{reinterpret_cast<const std::byte*>(data + 1), size - 1};
  const std::vector<frame> frames = slither::fuzzing::split_frames(rest, count, header_size);

  slither::decode_limits limits;
  limits.max_message_bytes = 1 << 20;
  (void)decode_header(frames[0]);
  // The broker's own path: the header first, then the payload on its own.
  if (auto head = decode_request_header(frames[0]); head && frames.size() > 1) {
    (void)decode_request_body(head->type, frames[1], limits);
  }
  if (auto msg = decode_request(frames, limits)) {
    const auto again = encode_message(*msg);
    const std::vector<frame> again_frames(again.begin(), again.end());
    auto back = decode_request(again_frames, limits);
    if (!back || back->head.type != msg->head.type ||
        back->head.request_id != msg->head.request_id ||
        // Compared encoded: a NaN in the body is not equal to itself.
        slither::encode(back->body) != slither::encode(msg->body)) {
      __builtin_trap();
    }
  }
  if (auto reply = decode_reply(frames, limits)) {
    if (reply->head.type == message_type::reply_error) (void)read_error_body(reply->body);
  }
  return 0;
}
