// Telemetry from Python: a Python callable attached to the core's events by
// prefix. It runs on whichever thread emits (a pipe's stage threads, the
// thread iterating a run), with the GIL taken for the call.
#include <string>
#include <string_view>

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "bindings.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "py_ref.hpp"
#include "slither/core/telemetry.hpp"

namespace nb = nanobind;

namespace slither::py {
namespace {

nb::dict to_dict(const Map& m) {
  nb::dict d;
  for (const auto& [k, v] : m) d[nb::str(k.c_str(), k.size())] = to_python(v);
  return d;
}

}  // namespace

void init_telemetry(nb::module_& m) {
  nb::class_<telemetry::attachment>(m, "TelemetryAttachment",
                                    "A handler attached to telemetry events; detach() stops it.")
      .def("detach", &telemetry::attachment::detach,
           "Stops delivery to the handler (calls under way finish). Safe twice.");

  m.def(
      "telemetry_attach",
      [](std::string prefix, nb::handle handler) {
        if (!PyCallable_Check(handler.ptr())) raise_invalid_type("handler must be callable");
        auto fn = share(handler);
        return telemetry::attach(
            std::move(prefix),
            [fn](std::string_view event, const Map& measurements, const Map& metadata) {
              if (python_gone()) return;
              nb::gil_scoped_acquire gil;
              try {
                nb::object name = nb::str(event.data(), event.size());
                nb::object r = nb::steal(
                    PyObject_CallFunctionObjArgs(fn->ptr(), name.ptr(), to_dict(measurements).ptr(),
                                                 to_dict(metadata).ptr(), nullptr));
                if (!r.is_valid()) throw nb::python_error();
              } catch (nb::python_error& e) {
                // Telemetry never breaks the code that emits: the error goes to
                // sys.unraisablehook, naming the handler.
                e.discard_as_unraisable(fn->get());
              }
            });
      },
      nb::arg("prefix"), nb::arg("handler"),
      "Calls handler(event, measurements, metadata) for every event whose name starts\n"
      "with prefix; detached when the returned object is detached or freed.");
}

}  // namespace slither::py
