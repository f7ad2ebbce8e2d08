// slither._native: the compiled half of the `slither` package.
#include <nanobind/nanobind.h>

#include "bindings.hpp"
#include "errors.hpp"

NB_MODULE(_native, m) {
  m.doc() = "Compiled core of slither: Value conversion, store readers and the broker client.";
  slither::py::init_errors(m);
  slither::py::init_codec(m);
  slither::py::init_reader(m);
  slither::py::init_client(m);
  slither::py::init_worker(m);
  slither::py::init_dispatch(m);
  slither::py::init_pipe(m);
  slither::py::init_telemetry(m);
}
