// Uses slither::core alone: a Value round trip through the codec.
#include <slither/core/codec.hpp>
#include <slither/version.hpp>

#include <iostream>

int main() {
  const slither::Value v =
      slither::Value::map({{"answer", 42}, {"tags", slither::Value::list({"a"})}});
  const auto bytes = slither::encode(v);
  auto back = slither::decode({bytes.data(), bytes.size()});
  if (!back || *back != v) return 1;
  std::cout << "consumer ok: slither " << SLITHER_VERSION_STRING << ": " << back->to_string()
            << "\n";
  return 0;
}
