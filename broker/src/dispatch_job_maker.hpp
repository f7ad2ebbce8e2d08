// Opening a dispatch_job over a given ZeroMQ context and endpoint: the
// remote form uses a context of its own, an embedded broker's in-process
// form shares the broker's (dispatch.cpp).
#pragma once

#include <memory>
#include <string>
#include <zmq.hpp>

#include "slither/broker/dispatch.hpp"

namespace slither::detail {

struct dispatch_job_maker {
  /// Connects to `endpoint` in `context` and opens the job.
  static result<dispatch_job> open(std::shared_ptr<zmq::context_t> context,
                                   const std::string& endpoint, const client_options& where,
                                   const job_options& options);
};

}  // namespace slither::detail
