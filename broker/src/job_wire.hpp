// Both halves of the dispatch-job protocol on the control socket: what a
// client (dispatch_job.cpp) writes and the broker (dispatch_server.cpp)
// reads, and back. The message types and their order are described in
// slither/broker/dispatch.hpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "slither/broker/dispatch.hpp"
#include "slither/core/codec.hpp"
#include "slither/core/dispatch.hpp"
#include "slither/core/error.hpp"
#include "slither/core/value.hpp"

namespace slither::detail {

/// A count or id as a `Value` integer (the wire's integers are signed).
inline std::int64_t i64(std::uint64_t v) {
  return static_cast<std::int64_t>(v);
}

}  // namespace slither::detail

namespace slither::detail::job_wire {

/// Result batches the broker sends a job's client ahead of its acks: well
/// under any socket's high-water mark, so none is ever dropped.
inline constexpr std::uint64_t max_unacked = 64;
/// A client acks at least this often (and always before it waits).
inline constexpr std::uint64_t ack_every = 16;
/// Request ids of a job's control requests (open, close, ping) start here;
/// a submit's request id is its batch's sequence number.
inline constexpr std::uint64_t control_ids = std::uint64_t{1} << 62;

/// `dispatch_open`'s arguments.
Value open_args(const job_options& options);

/// What `dispatch_open` asks for, read by the broker: the job's options
/// with `preformed_batch{batch_size, .encoded = true}` batching.
struct open_request {
  std::string pool;
  dispatch_options options;
  std::chrono::milliseconds idle_timeout{0};
};

/// Reads `dispatch_open`'s arguments. Errors: `invalid_argument` naming the argument.
result<open_request> read_open(const Map& args);

/// A failure as a Value, and back (`protocol_error` if malformed).
Value error_value(const dispatch_error& error);
result<dispatch_error> read_error(const Value& value);

/// The status frame of a `dispatch_batch` message: all of `out` but its payload.
buffer encode_status(const batch_output& out);
/// Reads a status frame back, with the payload frame that came beside it.
result<batch_output> decode_status(std::span<const std::byte> status, opaque_bytes payload);

/// `dispatch_end`'s body, and back.
Value end_value(const std::optional<dispatch_error>& error);
result<std::optional<dispatch_error>> read_end(const Value& body);

/// `dispatch_moved`'s body, and back.
Value moved_value(const session_moved& moved);
result<session_moved> read_moved(const Value& body);

}  // namespace slither::detail::job_wire
