// encode/decode: Python objects to and from the codec's bytes (the form stored
// in shared memory and sent to the broker), straight, with no slither::Value in
// between; batch frames for dispatch; and, under `_testing`, the same through
// slither::Value and the C++ codec, which the differential tests compare with.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "bindings.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "pycodec.hpp"
#include "slither/core/codec.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

PyObject* out_of_band(nb::handle buffers) {
  return buffers.is_none() ? nullptr : buffers.ptr();
}

nb::bytes to_bytes(const buffer& b) {
  return nb::bytes(b.data(), b.size());
}

// (id, payload, meta, route) tuples of decoded items, as decode_items returns them.
nb::list items_to_python(const std::vector<Item>& items) {
  nb::list out;
  for (const Item& it : items) {
    out.append(nb::make_tuple(it.id, to_python(it.payload), to_python(Value(it.meta)),
                              text_to_python(Value::kind::string, it.route)));
  }
  return out;
}

void init_testing(nb::module_& m) {
  nb::module_ t = m.def_submodule(
      "_testing", "The same conversions through slither::Value and the C++ codec (for tests).");
  t.def(
      "encode_via_value", [](nb::handle obj) { return to_bytes(encode(to_value(obj))); },
      nb::arg("value").none(), "Python object -> slither::Value -> slither::encode.");
  t.def(
      "decode_via_value",
      [](nb::handle data) {
        const input_bytes in(data);
        return to_python(take(slither::decode(in.span())));
      },
      nb::arg("data"), "slither::decode -> slither::Value -> Python object.");
  t.def(
      "encode_items_via_value",
      [](nb::handle items) {
        std::vector<Item> out;
        for (nb::handle h : items) {
          nb::tuple tup = nb::cast<nb::tuple>(h);
          Item it;
          it.id = nb::cast<std::uint64_t>(tup[0]);
          it.payload = to_value(tup[1]);
          if (tup.size() == 4) {
            it.meta = to_value(tup[2]).as<Map>();
            it.route = nb::cast<std::string>(tup[3]);
          }
          out.push_back(std::move(it));
        }
        return to_bytes(encode_batch(out));
      },
      nb::arg("items"), "(id, payload[, meta, route]) tuples -> Items -> slither::encode_batch.");
  t.def(
      "decode_items_via_value",
      [](nb::handle data) {
        const input_bytes in(data);
        return items_to_python(take(slither::decode_batch(in.span())));
      },
      nb::arg("frame"), "slither::decode_batch -> Items -> (id, payload, meta, route) tuples.");
}

}  // namespace

void init_codec(nb::module_& m) {
  m.def(
      "encode",
      [](nb::handle obj, nb::handle buffers) { return encode_to_bytes(obj, out_of_band(buffers)); },
      nb::arg("value").none(), nb::arg("buffers").none() = nb::none(),
      "Encodes a Python object in slither's binary Value form.\n\n"
      "Arrays (numpy, or any C-contiguous buffer of a supported dtype) go in the\n"
      "bytes, or, if `buffers` is a list, out of band: a memoryview of each is\n"
      "appended to it (no copy) and the bytes only refer to it, as pickle\n"
      "protocol 5 does with its buffers. Dict keys keep their order.\n\n"
      "Raises TypeError (naming the type and path) for an object with no Value form,\n"
      "OverflowError for an int outside int64, LimitExceeded for nesting deeper than 128.");
  m.def(
      "decode",
      [](nb::handle data, nb::handle buffers) {
        const input_bytes in(data);
        return decode_object(in.span(), decode_limits{}, buffers);
      },
      nb::arg("data"), nb::arg("buffers").none() = nb::none(),
      "Decodes bytes (or any bytes-like object) produced by `encode` or by the C++\n"
      "codec. `buffers` gives the out-of-band buffers, in order; their arrays are\n"
      "read-only numpy arrays over them (no copy). Raises DecodeError or\n"
      "LimitExceeded for malformed input.");
  m.def(
      "encode_batch",
      [](nb::handle payloads, std::uint64_t first_id, nb::handle buffers) {
        return encode_batch_to_bytes(payloads, first_id, out_of_band(buffers));
      },
      nb::arg("payloads"), nb::arg("first_id") = 0, nb::arg("buffers").none() = nb::none(),
      "One batch frame of `payloads` (a sequence), with ids first_id, first_id + 1, ...\n"
      "(the C++ codec's `encode_batch` form). `buffers` as for `encode`.");
  m.def(
      "encode_items",
      [](nb::handle items, nb::handle buffers) {
        return encode_items_to_bytes(items, out_of_band(buffers));
      },
      nb::arg("items"), nb::arg("buffers").none() = nb::none(),
      "One batch frame of items, each a tuple (id, payload) or (id, payload, meta, route).");
  m.def(
      "decode_batch",
      [](nb::handle frame, nb::handle buffers) {
        const input_bytes in(frame);
        return decode_batch_payloads(in.span(), decode_limits{}, buffers);
      },
      nb::arg("frame"), nb::arg("buffers").none() = nb::none(),
      "The payloads of a batch frame, in order (ids, meta and route are not returned).");
  m.def(
      "decode_items",
      [](nb::handle frame, nb::handle buffers) {
        const input_bytes in(frame);
        return decode_batch_items(in.span(), decode_limits{}, buffers);
      },
      nb::arg("frame"), nb::arg("buffers").none() = nb::none(),
      "The items of a batch frame as (id, payload, meta, route) tuples.");
  init_testing(m);
}

}  // namespace slither::py
