// The wire protocol between a broker's worker pool and its workers.
//
// Each worker has a tasks socket (the broker's PUSH, bound for it; the
// worker's PULL) and shares the pool's results socket (the broker's PULL; the
// worker's PUSH). Every message starts with a fixed header frame; some carry
// further frames:
//
// | type        | way            | frames after the header                      |
// |-------------|----------------|----------------------------------------------|
// | batch       | broker→worker  | meta (encoded map), payload (opaque)         |
// | heartbeat   | either way     | none                                         |
// | stop        | broker→worker  | none (`count` 1: at once, abandoning a batch)|
// | hello       | worker→broker  | none (`count`: credit window, `aux`: pid)    |
// | result      | worker→broker  | results (opaque), item errors (may be empty) |
// | batch_error | worker→broker  | error (encoded map)                          |
// | bye         | worker→broker  | none                                         |
//
// Header frame, `header_size` bytes, little-endian:
//
//   offset 0   u8[2]  magic "SW"
//   offset 2   u16    version (`version`)
//   offset 4   u8     type (`message_type`)
//   offset 5   u8[3]  reserved, zero
//   offset 8   u64    worker id (given by the broker at join)
//   offset 16  u64    job
//   offset 24  u64    batch
//   offset 32  u32    attempt
//   offset 36  u32    count: items in a batch or result; credits in a hello
//   offset 40  u64    aux: a hello's pid, a heartbeat's resident set in bytes
//
// The meta frame is `encode(Value)` of {"function", "pipe", "stage",
// "session_id", "metadata"}; the item-error frame of a list of
// [index, type, message, traceback]; the error frame of {"type", "message",
// "traceback"}. Payload and results are opaque here: the client and the
// worker agree on them (the codec's batch frames of the items and of their
// results, one result per item).
//
// Decoding is bounded and total: a message with a bad header, the wrong
// number of frames for its type or a frame over its limit is an error naming
// what is wrong, never a crash (`fuzz_worker_protocol`).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "slither/core/codec.hpp"
#include "slither/core/error.hpp"
#include "slither/core/executor.hpp"
#include "slither/core/item.hpp"

namespace slither::worker_protocol {

/// Version spoken by this build; a message of another version is refused.
inline constexpr std::uint16_t version = 1;
/// Size of the header frame.
inline constexpr std::size_t header_size = 48;
/// Largest meta, item-error or error frame accepted (tracebacks included).
inline constexpr std::size_t max_small_frame = std::size_t{4} << 20;
/// Longest error type, message or traceback kept; longer ones are cut.
inline constexpr std::size_t max_error_text = std::size_t{64} << 10;

/// Every message type; see the table at the top of this header.
enum class message_type : std::uint8_t {
  batch = 1,
  heartbeat = 2,
  stop = 3,
  hello = 10,
  result = 11,
  batch_error = 12,
  bye = 13,
};

/// Stable lower-case name of a type ("batch_error"), or "unknown".
std::string_view to_string(message_type type) noexcept;

/// Which way a message travels, which decides the types it may have.
enum class direction : std::uint8_t { to_worker, to_broker };

/// The decoded header frame.
struct header {
  message_type type = message_type::heartbeat;
  std::uint64_t worker = 0;
  std::uint64_t job = 0;
  std::uint64_t batch = 0;
  std::uint32_t attempt = 0;
  std::uint32_t count = 0;
  std::uint64_t aux = 0;
};

/// One frame as bytes.
using frame = std::span<const std::byte>;

/// Encodes a header frame.
std::array<std::byte, header_size> encode_header(const header& head) noexcept;

/// Decodes the header frame of a whole message and checks the message's
/// shape: magic, version, zero reserved bytes, a type that travels this
/// `way`, and the number of frames that type has. Errors: `protocol_error`.
result<header> decode_message(std::span<const frame> frames, direction way);

/// What a batch's meta frame carries: the job's function and context.
struct batch_meta {
  std::string function;
  Context context;
};

/// Encodes a meta frame.
buffer encode_meta(const job_target& target);
/// Decodes a meta frame. Errors: `limit_exceeded`, `decode_error`, `protocol_error`.
result<batch_meta> decode_meta(frame bytes);

/// Encodes an item-error frame; empty (no bytes) when `errors` is.
buffer encode_item_errors(std::span<const indexed_error> errors);
/// Decodes an item-error frame of a result of `count` items: every index
/// below `count`, no index twice, texts cut to `max_error_text`. An empty
/// frame is no errors.
result<std::vector<indexed_error>> decode_item_errors(frame bytes, std::uint32_t count);

/// Encodes an error frame (a batch that raised).
buffer encode_error(const dispatch_error& error);
/// Decodes an error frame into a failure of kind `exception`.
result<dispatch_error> decode_error(frame bytes);

}  // namespace slither::worker_protocol
