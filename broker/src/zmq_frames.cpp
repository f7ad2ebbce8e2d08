#include "zmq_frames.hpp"

#include <memory>
#include <utility>

namespace slither::detail {

std::vector<std::span<const std::byte>> frames_of(const std::vector<zmq::message_t>& parts) {
  std::vector<std::span<const std::byte>> out;
  out.reserve(parts.size());
  for (const auto& p : parts) out.emplace_back(p.data<std::byte>(), p.size());
  return out;
}

zmq::message_t adopt_message(std::vector<std::byte>&& data) {
  if (data.size() < copy_below) return zmq::message_t(data.data(), data.size());
  auto* owned = new std::vector<std::byte>(std::move(data));
  // ZeroMQ frees it (on its I/O thread) once the message is sent or dropped.
  return zmq::message_t(
      owned->data(), owned->size(),
      [](void*, void* hint) { delete static_cast<std::vector<std::byte>*>(hint); }, owned);
}

opaque_bytes to_opaque(zmq::message_t&& message) {
  auto owner = std::make_shared<zmq::message_t>(std::move(message));
  const std::span<const std::byte> bytes(owner->data<std::byte>(), owner->size());
  return {bytes, std::move(owner)};
}

zmq::message_t share_message(const opaque_bytes& bytes) {
  if (bytes.size() < copy_below || !bytes.owner) {
    return zmq::message_t(bytes.bytes.data(), bytes.bytes.size());
  }
  auto* keep = new std::shared_ptr<const void>(bytes.owner);
  // The data is only read; ZeroMQ's signature wants a non-const pointer.
  auto* data =
      const_cast<std::byte*>(bytes.bytes.data());  // NOLINT(cppcoreguidelines-pro-type-const-cast)
  return zmq::message_t(
      data, bytes.size(),
      [](void*, void* hint) { delete static_cast<std::shared_ptr<const void>*>(hint); }, keep);
}

}  // namespace slither::detail
