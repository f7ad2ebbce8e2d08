#include "registry.hpp"

namespace slither::examples {

example feature_store_example();

const std::vector<example>& all_examples() {
  static const std::vector<example> list = {feature_store_example()};
  return list;
}

}  // namespace slither::examples
