// A C++ type's readable name, for failures that report a caught exception's
// type (a local pool's handler, a pipe's native stage).
#pragma once

#include <cxxabi.h>

#include <cstdlib>
#include <string>
#include <typeinfo>

namespace slither::detail {

/// `t`'s demangled name, or its mangled one if it cannot be demangled.
inline std::string demangled(const std::type_info& t) {
  int status = 0;
  char* name = abi::__cxa_demangle(t.name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name != nullptr ? name : t.name();
  std::free(name);  // NOLINT(cppcoreguidelines-no-malloc): __cxa_demangle allocates with malloc
  return out;
}

}  // namespace slither::detail
