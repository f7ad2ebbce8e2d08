// One init function per binding area, called by the module definition.
#pragma once

#include <nanobind/nanobind.h>

namespace slither::py {

void init_codec(nanobind::module_& m);
void init_reader(nanobind::module_& m);
void init_client(nanobind::module_& m);
void init_worker(nanobind::module_& m);
void init_dispatch(nanobind::module_& m);
void init_pipe(nanobind::module_& m);
void init_telemetry(nanobind::module_& m);

}  // namespace slither::py
