#include "slither/core/error.hpp"

#include <string>

namespace slither {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::ok:
      return "ok";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::not_found:
      return "not_found";
    case errc::decode_error:
      return "decode_error";
    case errc::limit_exceeded:
      return "limit_exceeded";
    case errc::io_error:
      return "io_error";
    case errc::no_space:
      return "no_space";
    case errc::layout_mismatch:
      return "layout_mismatch";
    case errc::writer_gone:
      return "writer_gone";
    case errc::already_exists:
      return "already_exists";
    case errc::conflict:
      return "conflict";
    case errc::busy:
      return "busy";
    case errc::timeout:
      return "timeout";
    case errc::unavailable:
      return "unavailable";
    case errc::protocol_error:
      return "protocol_error";
    case errc::internal:
      return "internal";
    case errc::shutting_down:
      return "shutting_down";
  }
  return "unknown";
}

namespace {
class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "slither"; }
  std::string message(int code) const override {
    return std::string(to_string(static_cast<errc>(code)));
  }
};
}  // namespace

const std::error_category& slither_category() noexcept {
  static const category instance;
  return instance;
}

void error::throw_bad_access(const char* what) {
  throw error(errc::internal, what);
}

error::error(errc code, const std::string& message)
    : std::runtime_error(std::string(to_string(code)) + ": " + message), code_(code) {}

}  // namespace slither
