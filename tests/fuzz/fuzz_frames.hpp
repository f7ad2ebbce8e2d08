// The frames of a fuzz target's input, shared by the protocol targets so that
// both cut their inputs the same way.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

namespace slither::fuzzing {

/// `bytes` cut into `count` frames (at least 1): the first takes up to
/// `header_size` bytes, so that valid headers are common; each further frame
/// half of what remains, the last all of it.
inline std::vector<std::span<const std::byte>> split_frames(std::span<const std::byte> bytes,
                                                            std::size_t count,
                                                            std::size_t header_size) {
  std::vector<std::span<const std::byte>> frames;
  const std::size_t head = std::min(header_size, bytes.size());
  frames.push_back(bytes.first(head));
  std::size_t offset = head;
  for (std::size_t i = 1; i < count; ++i) {
    const std::size_t len = i + 1 == count ? bytes.size() - offset : (bytes.size() - offset) / 2;
    frames.push_back(bytes.subspan(offset, len));
    offset += len;
  }
  return frames;
}

}  // namespace slither::fuzzing
