// encode/decode: Python objects to and from the codec's bytes (the form stored
// in shared memory and sent to the broker).
#include <nanobind/nanobind.h>

#include "bindings.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "slither/core/codec.hpp"

namespace nb = nanobind;

namespace slither::py {

void init_codec(nb::module_& m) {
  m.def(
      "encode",
      [](nb::handle obj) {
        const buffer out = encode(to_value(obj));
        return nb::bytes(out.data(), out.size());
      },
      nb::arg("value").none(),
      "Encodes a Python object in slither's binary Value form.\n\n"
      "Raises TypeError (naming the type and path) for an object with no Value form,\n"
      "OverflowError for an int outside int64, LimitExceeded for nesting deeper than 128.");
  m.def(
      "decode",
      [](nb::bytes data) {
        const std::span<const std::byte> bytes(static_cast<const std::byte*>(data.data()),
                                               data.size());
        return to_python(take(slither::decode(bytes)));
      },
      nb::arg("data"),
      "Decodes bytes produced by `encode` (or by the C++ codec). Raises DecodeError or\n"
      "LimitExceeded for malformed input.");
}

}  // namespace slither::py
