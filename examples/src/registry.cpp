#include "registry.hpp"

namespace slither::examples {

example feature_store_example();
example text_analysis_example();
example batch_stats_example();
example data_etl_example();
example ml_scoring_example();
example image_pipeline_example();

const std::vector<example>& all_examples() {
  static const std::vector<example> list = {feature_store_example(), text_analysis_example(),
                                            batch_stats_example(),   data_etl_example(),
                                            ml_scoring_example(),    image_pipeline_example()};
  return list;
}

}  // namespace slither::examples
