#include "zmq_frames.hpp"

#include <cerrno>
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

result<bool> send_by(zmq::socket_ref socket, std::vector<zmq::message_t>& frames,
                     std::chrono::steady_clock::time_point deadline) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                                             : zmq::send_flags::dontwait;
    for (;;) {
      try {
        if (socket.send(frames[i], flags)) break;
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        return fail(errc::unavailable, e.what());
      }
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLOUT, 0};
      try {
        (void)zmq::poll(&item, 1, left);
      } catch (const zmq::error_t&) {
        // Interrupted or failed: the next send says which.
      }
    }
  }
  return true;
}

}  // namespace slither::detail
