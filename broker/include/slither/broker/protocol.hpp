// The control protocol between clients (ZeroMQ DEALER) and the broker (ROUTER).
//
// Every message is two frames: a fixed-size header frame, then one payload
// frame holding a `slither::encode`d Value. Requests carry a map of named
// arguments; an ok reply carries the result Value; an error reply carries
// `{"code": <errc as int>, "message": <text>}`. A reply repeats the request id
// of its request, so a client can tell a late reply from the one it awaits.
//
// Every request gets exactly one reply. A message the broker cannot read as a
// request (no valid header, or not exactly two frames) gets a `protocol_error`
// reply with the request id of its header if one can be read, else 0. One
// exception: a frame over `max_message_bytes` plus 4 KiB closes the sender's
// connection unanswered (ZeroMQ drops it rather than buffer it); one over
// `max_message_bytes` by less gets `limit_exceeded`. `slither::client` refuses
// a payload over the broker's limit before it sends it. While
// the broker stops, requests get `shutting_down` (nothing was applied). Error
// messages quote at most about 100 bytes of any input.
//
// Incarnation: a store re-created by a restarted broker has a new random
// incarnation (`attach_info` reports it, as the int64 bits of the u64). The
// requests that act on a store (put, put_many, erase, compare_and_set, clear,
// reload, create_table, drop_table, compare_and_erase, put_reserve,
// put_commit, put_abort, call_view) take an optional int argument "incarnation"; when it is given
// and differs from the store's, the reply is `writer_gone` ("store 'x' was
// re-created by a restarted broker: attach again") and nothing is applied.
// Without it the request applies to whatever store has that name.
//
// Header frame, `header_size` bytes, little-endian:
//
//   offset 0   u8[2]  magic "SL"
//   offset 2   u16    protocol version (`protocol_version`)
//   offset 4   u8     message type (`message_type`)
//   offset 5   u8[3]  reserved, zero
//   offset 8   u64    request id
//
// Decoding is bounded like the codec's: the header must be exactly
// `header_size` bytes, the payload at most `decode_limits::max_message_bytes`,
// and anything else is an error naming what is wrong, never a crash.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "slither/broker/export.hpp"
#include "slither/core/codec.hpp"
#include "slither/core/error.hpp"
#include "slither/core/value.hpp"

namespace slither::protocol {

/// Version spoken by this build; a peer with another version gets `errc::protocol_error`.
inline constexpr std::uint16_t protocol_version = 1;

/// Size of the header frame.
inline constexpr std::size_t header_size = 16;

/// Every message type of the control protocol: requests, then the two replies.
enum class message_type : std::uint8_t {
  hello = 1,        ///< {protocol} → {protocol, ns, pid, max_message_bytes, stores}
  attach_info = 2,  ///< {store} → {ns, name, tables, layout_version, incarnation}
  put = 3,          ///< {store, table, key, value, [incarnation]} → new version (int)
  /// {store, table, entries: [[key, value], ...], [atomic: bool], [incarnation]} → null;
  /// with atomic = true readers see none or all of the batch (`shm::batch_publish::at_once`).
  put_many = 4,
  erase = 5,            ///< {store, table, key, [incarnation]} → bool (was present)
  compare_and_set = 6,  ///< {store, table, key, expected_version, value, [incarnation]} → version
  clear = 7,            ///< {store, table, [incarnation]} → null
  call_view = 8,        ///< {store, view, arg, session_id, [incarnation]} → the view's result
  stats = 9,            ///< {} → map of broker and store figures
  ping = 10,            ///< {} → null
  /// A worker joins a pool (dispatch.hpp, "Workers"):
  /// {pool, pid, credits, [token]} → {worker, tasks, results, heartbeat_ms,
  /// heartbeat_misses, local, ns, stores, pool}
  worker_join = 11,
  /// Opens a dispatch job (dispatch.hpp, "Jobs"): {pool, function,
  /// batch_size, max_in_flight, ...} → {job, window, pool}
  dispatch_open = 12,
  /// One encoded batch for a job: a third frame holds the batch, the
  /// arguments are {job, count, [ack]}. No reply unless it is refused.
  dispatch_submit = 13,
  /// {job, batches}: the client consumed this many more result batches. No reply.
  dispatch_ack = 14,
  /// {job}: the job's input is complete. No reply.
  dispatch_input_end = 15,
  /// {job}: stop the job; what has not ended comes back cancelled. No reply.
  dispatch_cancel = 16,
  /// {job} → null: the job is forgotten (cancelled first if it runs).
  dispatch_close = 17,
  /// Replaces a table's contents atomically (readers see the old or the new
  /// contents, never a mix): {store, table, entries: [[key, value], ...],
  /// [incarnation]} → null.
  reload = 20,
  /// Adds a table at run time: {store, table, [kind: "set" | "bag" | "ordered_set"],
  /// [capacity: int, 1..2^32], [incarnation]} → null, at once whatever the
  /// capacity (a large index is made ready later, in slices). Errors:
  /// `already_exists`, `invalid_argument`, `limit_exceeded` (the store's 64
  /// directory entries are used up), `no_space` (no room for its index).
  create_table = 21,
  /// Removes a table created at run time, with its entries: {store, table,
  /// [incarnation]} → null. A table declared in the config cannot be dropped
  /// (`invalid_argument`).
  drop_table = 22,
  /// Removes a key only if its entry's version is `expected_version` (0 =
  /// absent: nothing is removed), the conditional `erase` as
  /// `compare_and_set` is the conditional `put`: {store, table, key,
  /// expected_version, [incarnation]} → bool (an entry was removed). Errors:
  /// `conflict` naming the version found (0 if absent), `invalid_argument`
  /// for a bag table (as `compare_and_set`) or a negative version.
  compare_and_erase = 23,
  /// Large writes in place (create/seal). Reserve: {store, table, key, dtype
  /// (int, slither::dtype), shape: [int, ...], [incarnation]} for an array,
  /// or {store, table, key, bytes (int), [incarnation]} for a bytes value
  /// (stored encoded, as `put` stores it), either with [client_backs (bool)]
  /// → {id, object, offset, bytes, map_bytes, lease_ms, client_backs}: the
  /// client maps `map_bytes` of the shared-memory object `object` read-write
  /// at `offset`, writes the array's (or the bytes value's) `bytes` there,
  /// unmaps, and commits before the lease ends. With client_backs true in
  /// the reply the broker left those pages unreserved: the client backs them
  /// with memory (madvise MADV_POPULATE_WRITE, a clean error where /dev/shm is
  /// full) before it writes (`shm::reserve_pages::client_backs`). Without it
  /// (or false) the pages are backed already: reserved by the broker, or
  /// left by a freed value the block reuses.
  put_reserve = 40,
  /// {store, id} → new version (int): the reserved block is published. Only
  /// the client that reserved it may commit it.
  put_commit = 41,
  /// {store, id} → null: the reservation is given up (its client's only).
  put_abort = 42,
  reply_ok = 100,     ///< the result Value
  reply_error = 101,  ///< {code, message}
  /// Broker → client, request id = job: a status frame, then the batch's
  /// encoded results (or its input, when it ended as a whole).
  dispatch_batch = 110,
  /// Broker → client, request id = job: {ok, [error]}; no more batches follow.
  dispatch_end = 111,
  /// Broker → client, request id = job: {session, from, to}: the job's
  /// session lost its worker and now runs on another.
  dispatch_moved = 112,
};

/// Stable lower-case name of a message type ("put"), or "unknown".
SLITHER_BROKER_EXPORT std::string_view to_string(message_type type) noexcept;
/// True for the request types (hello .. dispatch_close, reload ..
/// compare_and_erase, put_reserve .. put_abort).
SLITHER_BROKER_EXPORT bool is_request(message_type type) noexcept;
/// True for the requests that get no reply unless they fail
/// (dispatch_submit, dispatch_ack, dispatch_input_end, dispatch_cancel).
SLITHER_BROKER_EXPORT bool is_notification(message_type type) noexcept;

/// The decoded header frame.
struct SLITHER_BROKER_EXPORT header {
  /// Protocol version of the sender.
  std::uint16_t version = protocol_version;
  /// What the message is; a reply has `reply_ok` or `reply_error`.
  message_type type = message_type::ping;
  /// Chosen by the client, echoed by the reply.
  std::uint64_t request_id = 0;
};

/// A whole message: its header and its payload Value.
struct SLITHER_BROKER_EXPORT message {
  /// The header frame.
  header head;
  /// The payload: a request's argument map, or a reply's result or error.
  Value body;
};

/// One frame as bytes.
using frame = std::span<const std::byte>;

/// Encodes a header frame.
SLITHER_BROKER_EXPORT std::array<std::byte, header_size> encode_header(const header& head) noexcept;
/// Decodes a header frame: exact size, magic and zero reserved bytes. Version
/// and type are returned as sent (`decode_request` checks them), so that a
/// peer with another version or an unknown type can still be answered.
SLITHER_BROKER_EXPORT result<header> decode_header(frame bytes);

/// The frames of a message: header, then payload.
SLITHER_BROKER_EXPORT std::vector<buffer> encode_message(const message& msg);

/// Checks a request's header frame: `decode_header`, then this protocol
/// version and a known request type. Errors: `protocol_error`.
SLITHER_BROKER_EXPORT result<header> decode_request_header(frame bytes);
/// Decodes a request's payload frame: at most `limits.max_message_bytes`,
/// a valid encoding, a map. Errors: `limit_exceeded`, `decode_error`,
/// `protocol_error`, each naming `type`.
SLITHER_BROKER_EXPORT result<Value> decode_request_body(message_type type, frame bytes,
                                                        const decode_limits& limits);

/// Decodes a request: a valid header of this protocol version with a known
/// request type, then exactly one payload frame of at most `limits.max_message_bytes`
/// that decodes to a map. Errors: `protocol_error` (bad framing, version or
/// type), `limit_exceeded` (payload too large), `decode_error` (bad payload).
SLITHER_BROKER_EXPORT result<message> decode_request(std::span<const frame> frames,
                                                     const decode_limits& limits = {});
/// Decodes a reply (`reply_ok` or `reply_error`) like `decode_request`.
SLITHER_BROKER_EXPORT result<message> decode_reply(std::span<const frame> frames,
                                                   const decode_limits& limits = {});

/// The payload of an error reply.
SLITHER_BROKER_EXPORT Value error_body(const error_info& err);
/// Reads an error reply's payload back; a malformed one becomes `protocol_error`.
SLITHER_BROKER_EXPORT error_info read_error_body(const Value& body);

}  // namespace slither::protocol
