// A DEALER socket on a broker's control socket, for the parts of the library
// that speak to the broker beside `slither::client`: a worker joining its pool
// (worker_runtime.cpp) and a dispatch job streaming batches (dispatch_job.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <zmq.hpp>

#include "slither/broker/client.hpp"
#include "slither/broker/protocol.hpp"
#include "slither/core/error.hpp"
#include "slither/core/value.hpp"

namespace slither::detail {

/// The control endpoint `options` name: `endpoint`, or the control socket in
/// `runtime_dir` (by default the namespace's).
std::string control_endpoint_of(const client_options& options);

/// Before connecting to `endpoint`: for an ipc one, `check_control_socket`
/// of its file, as a runtime directory's socket when it is the one `options`
/// name by their runtime directory or namespace (no `endpoint` given), else
/// by the ancestor rule. Other transports pass. Errors: `unavailable` (no
/// socket file: no broker there), `invalid_argument` (an untrusted path,
/// named with what is wrong), `io_error`.
result<void> check_control_endpoint(const client_options& options, const std::string& endpoint);

/// Sets `socket` up as a CURVE client with `options`' keys, if it has a
/// server key (tcp); does nothing otherwise. Errors: `invalid_argument`
/// (a key that is not 40 characters of Z85).
result<void> set_curve_client(zmq::socket_t& socket, const client_options& options);

/// A DEALER connected to the control endpoint (a CURVE client if the options
/// hold keys), with ZeroMQ buffering only on a finished connection, after
/// `check_control_endpoint`. Errors: as that, and `invalid_argument` (an
/// endpoint ZeroMQ refuses).
result<zmq::socket_t> open_control_socket(zmq::context_t& context, const client_options& options,
                                          const std::string& endpoint);

/// Sends one request on `socket` and waits for its reply (skipping replies to
/// other request ids) until `timeout`. Errors: `unavailable` (no reply in
/// time), the broker's error, `protocol_error` (a malformed reply).
result<Value> control_request(zmq::socket_t& socket, const std::string& endpoint,
                              protocol::message_type type, std::uint64_t id, Value args,
                              std::chrono::milliseconds timeout);

}  // namespace slither::detail
