// The arguments most bindings take (names, paths; keys are convert.hpp's
// `key_view`), checked so that a wrong one raises InvalidType /
// InvalidArgument, never a bare TypeError.
#pragma once

#include <filesystem>
#include <string_view>

#include <nanobind/nanobind.h>

namespace slither::py {

/// A name (store, table, view, namespace...): a str, as UTF-8. The view is
/// valid while `obj` lives.
std::string_view name_arg(nanobind::handle obj, const char* what);

/// A path: a str or an os.PathLike giving a str or bytes.
std::filesystem::path path_arg(nanobind::handle obj, const char* what);

}  // namespace slither::py
