// Reader.get_many: many keys read in one call and one epoch, values built
// straight from their stored encodings (shm::reader::get_many visits them in
// place), so a batch costs one C call and no intermediate Value per key.
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include <nanobind/nanobind.h>

#include "slither/shm/store.hpp"

namespace slither::py {

/// The keys of a `get_many` call: a tuple of the key objects (any iterable
/// of str or bytes, read once) and views of their bytes, valid while it lives.
struct key_batch {
  nanobind::object held;
  std::vector<std::string_view> views;
};

/// Reads `keys` (an iterable of str or bytes keys, not a single key): raises
/// InvalidType naming the argument, or the position of a key of another type.
/// May run Python code (a generator): call it before taking a reader.
key_batch key_batch_arg(nanobind::handle keys);

/// The values under `keys` in `table`, decoded, in order, `default_` where
/// absent: one `shm::reader::get_many`. Builds Python objects inside the
/// read: the caller keeps `rd` from being replaced or closed meanwhile.
nanobind::list values_to_python(const shm::reader& rd, std::string_view table,
                                std::span<const std::string_view> keys, nanobind::handle default_);

}  // namespace slither::py
