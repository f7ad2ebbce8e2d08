// A Python object that C++ code may copy and drop on any thread.
#pragma once

#include <memory>

#include <nanobind/nanobind.h>

namespace slither::py {

/// True once the interpreter is finalizing: a thread that takes the GIL then
/// is ended on the spot (pthread_exit), which C++ frames do not survive, so
/// code on threads of our own checks this first and leaves Python alone.
inline bool python_gone() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

/// Holds one strong reference to a Python object. Copies of the owning
/// `shared_ptr` (an engine copying the std::function that captured it) touch
/// no reference count, and the last owner drops the reference with the GIL
/// taken, whichever thread it is on.
class py_ref {
 public:
  /// Needs the GIL.
  explicit py_ref(nanobind::handle obj) : obj_(nanobind::borrow(obj)) {}
  py_ref(const py_ref&) = delete;
  py_ref& operator=(const py_ref&) = delete;
  ~py_ref() {
    if (python_gone()) {
      (void)obj_.release();  // leaked: too late to take the GIL
      return;
    }
    nanobind::gil_scoped_acquire gil;
    obj_.reset();
  }
  /// The object (use it with the GIL held).
  PyObject* ptr() const noexcept { return obj_.ptr(); }
  nanobind::handle get() const noexcept { return obj_; }

 private:
  nanobind::object obj_;
};

/// A shared `py_ref` (needs the GIL).
inline std::shared_ptr<py_ref> share(nanobind::handle obj) {
  return std::make_shared<py_ref>(obj);
}

}  // namespace slither::py
