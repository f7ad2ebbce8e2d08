// Python objects straight to and from the wire format (slither/core/wire.hpp),
// with no slither::Value in between: the path of slither.encode/decode, of the
// client's request payloads, of batch frames and of the Store's reads.
//
// The encoder writes the bytes the C++ codec writes for the same value, and
// the decoder runs the C++ codec's own parser (wire::parser), so both accept
// exactly the same bytes; tests/python/test_codec_differential.py checks it.
//
// Python -> wire: None, bool, int (int64 range), float, str, bytes/bytearray,
// list/tuple, dict with str keys (in its order), numpy scalars, and any
// C-contiguous buffer of a supported dtype (numpy arrays, memoryviews) as an
// ndarray, in band or out of band. Anything else raises TypeError naming the
// type and the path of the offending element ("value['a'][2]").
//
// wire -> Python: the same kinds back; dict keys are interned and shared
// between decodes; in-band arrays become private writable numpy arrays,
// out-of-band arrays read-only numpy arrays over the given buffers.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include <nanobind/nanobind.h>

#include "slither/core/codec.hpp"
#include "slither/core/wire.hpp"

namespace slither::py {

/// Writes `obj` as the next value of `w`. With `out_of_band` (a Python list),
/// arrays are written as out-of-band references and a memoryview of each is
/// appended to it. `root` names `obj` in error messages. Needs the GIL.
void encode_into(wire::writer& w, nanobind::handle obj, PyObject* out_of_band = nullptr,
                 std::string_view root = "value");

/// A complete encoding of `obj` (arrays in band), for the C++ client to send.
buffer encode_object(nanobind::handle obj, std::string_view root = "value");

/// The encoding of `[[key, value], ...]` from a mapping (its `items()`) or an
/// iterable of `(key, value)` pairs, keys str (UTF-8) or bytes: the
/// `entries` argument of a `put_many` request. Errors name "entries['k']".
buffer encode_entries(nanobind::handle entries);

/// `obj` encoded as Python bytes; see `encode_into`.
nanobind::bytes encode_to_bytes(nanobind::handle obj, PyObject* out_of_band);

/// A batch frame of `payloads` (any sequence) with ids `first_id`,
/// `first_id + 1`, ..., empty meta and route.
nanobind::bytes encode_batch_to_bytes(nanobind::handle payloads, std::uint64_t first_id,
                                      PyObject* out_of_band);
/// Appends a batch frame of `count` payloads (ids `first_id`, ...; arrays in
/// band) to `out`, for the dispatch paths that hand the bytes to C++ without
/// a Python bytes object. `root` names the payloads in error messages.
void encode_batch_into(buffer& out, PyObject* const* payloads, std::size_t count,
                       std::uint64_t first_id = 0, std::string_view root = "items");
/// A batch frame of `items`: each a tuple `(id, payload)` or
/// `(id, payload, meta, route)`.
nanobind::bytes encode_items_to_bytes(nanobind::handle items, PyObject* out_of_band);

/// Decodes one value. `buffers` is None or a sequence of C-contiguous
/// buffer objects, one per out-of-band array, in order.
nanobind::object decode_object(std::span<const std::byte> bytes, const decode_limits& limits = {},
                               nanobind::handle buffers = nanobind::none());
/// The payloads of a batch frame, in order (ids, meta and route dropped).
nanobind::list decode_batch_payloads(std::span<const std::byte> bytes,
                                     const decode_limits& limits = {},
                                     nanobind::handle buffers = nanobind::none());
/// The items of a batch frame as `(id, payload, meta, route)` tuples.
nanobind::list decode_batch_items(std::span<const std::byte> bytes,
                                  const decode_limits& limits = {},
                                  nanobind::handle buffers = nanobind::none());

/// The bytes of a bytes-like object (bytes, bytearray, memoryview, any
/// buffer), valid while the returned holder lives.
class input_bytes {
 public:
  explicit input_bytes(nanobind::handle obj);
  input_bytes(const input_bytes&) = delete;
  input_bytes& operator=(const input_bytes&) = delete;
  ~input_bytes();
  std::span<const std::byte> span() const noexcept { return span_; }

 private:
  Py_buffer view_{};
  bool held_ = false;
  std::span<const std::byte> span_;
};

}  // namespace slither::py
