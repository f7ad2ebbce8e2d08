// ZeroMQ messages to and from the byte forms the rest of the library uses,
// without copying what is large: opaque batches travel from one socket to
// another as the same memory.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <span>
#include <vector>
#include <zmq.hpp>

#include "slither/core/error.hpp"
#include "slither/core/executor.hpp"

namespace slither::detail {

/// Below this, a frame is copied: cheaper than sharing its memory.
inline constexpr std::size_t copy_below = 512;

/// The frames of a received message, as byte spans into it.
std::vector<std::span<const std::byte>> frames_of(const std::vector<zmq::message_t>& parts);

/// A message holding a copy of a small fixed-size header.
template <std::size_t N>
zmq::message_t header_message(const std::array<std::byte, N>& bytes) {
  return zmq::message_t(bytes.data(), bytes.size());
}

/// A message that takes `data` over (no copy when it is large).
zmq::message_t adopt_message(std::vector<std::byte>&& data);

/// A received frame as opaque bytes, owning the message (no copy).
opaque_bytes to_opaque(zmq::message_t&& message);

/// A message over opaque bytes, sharing their memory (no copy when large):
/// the message keeps `bytes.owner` alive until ZeroMQ has sent it.
zmq::message_t share_message(const opaque_bytes& bytes);

/// Sends every frame of one message on `socket`, never blocking past
/// `deadline`: true once it is sent, false if the socket took nothing in
/// time (no peer, or its pipe is full), an error (unavailable, with
/// ZeroMQ's text) if the socket failed. An interrupted call is retried.
result<bool> send_by(zmq::socket_ref socket, std::vector<zmq::message_t>& frames,
                     std::chrono::steady_clock::time_point deadline);

}  // namespace slither::detail
