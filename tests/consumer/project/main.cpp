// An outside project using the installed slither package.
#include <slither/core/codec.hpp>

#include <iostream>

int main() {
  const slither::Value v = slither::Value::map({{"answer", 42}});
  const auto bytes = slither::encode(v);
  auto back = slither::decode({bytes.data(), bytes.size()});
  if (!back || *back != v) return 1;
  std::cout << "consumer ok: " << back->to_string() << "\n";
  return 0;
}
