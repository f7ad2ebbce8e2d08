// slither::function_ref: a non-owning reference to a callable, for parameters
// that are called during the call and never stored (reader::peek, for_each,
// Broker::write). Unlike std::function it never allocates and never copies
// the callable: it holds a pointer to it and one to a function that calls it.
#pragma once

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace slither {

template <class Signature>
class function_ref;

/// A reference to a callable with signature `R(Args...)`, two pointers wide.
///
/// Caveats: it does not extend the callable's lifetime. Pass a lambda straight
/// to a function that takes a `function_ref` (the temporary lives until that
/// call returns); never keep a `function_ref` past the call it was given to,
/// and never build one from a temporary in a variable.
template <class R, class... Args>
class function_ref<R(Args...)> {
 public:
  /// Refers to `f`, which must outlive every call through this reference.
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, function_ref> &&
           !std::is_function_v<std::remove_pointer_t<std::remove_cvref_t<F>>> &&
           std::is_invocable_r_v<R, F&, Args...>) function_ref(F&& f)
  noexcept  // NOLINT: implicit by design, as for std::function
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, Args... args) -> R {
          using target = std::remove_reference_t<F>;
          if constexpr (std::is_void_v<R>) {
            std::invoke(*static_cast<target*>(object), std::forward<Args>(args)...);
          } else {
            return std::invoke(*static_cast<target*>(object), std::forward<Args>(args)...);
          }
        }) {}
  /// Refers to the function `f`.
  template <class F>
  requires std::is_function_v<F> && std::is_invocable_r_v<R, F&, Args...> function_ref(F* f)
  noexcept  // NOLINT: implicit by design
      : object_(reinterpret_cast<void*>(f)), call_([](void* object, Args... args) -> R {
          if constexpr (std::is_void_v<R>) {
            std::invoke(reinterpret_cast<F*>(object), std::forward<Args>(args)...);
          } else {
            return std::invoke(reinterpret_cast<F*>(object), std::forward<Args>(args)...);
          }
        }) {}

  function_ref(const function_ref&) noexcept = default;
  function_ref& operator=(const function_ref&) noexcept = default;

  /// Calls the referenced callable.
  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

}  // namespace slither
