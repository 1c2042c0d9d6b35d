/// @file cpu/context.hpp
/// @brief The CPU (Eigen) backend's execution context.
#pragma once

#include <surgeon/config.hpp>

#if !defined(SURGEON_HAS_EIGEN)
#error "the surgeon/cpu headers need the Eigen backend: link surgeon::eigen (or define SURGEON_HAS_EIGEN)"
#endif

namespace surgeon::cpu {

class prune_backend;  // cpu/prune_backend.hpp

/// @brief Handle for the CPU backend.
///
/// Every CPU primitive takes a `cpu::context&` as its first argument, so that generic code calls
/// backend functions unqualified and argument-dependent lookup picks `surgeon::cpu::...` or
/// `surgeon::cuda::...`. The context holds no threads of its own: the dense kernels use
/// OpenBLAS's threads (`OPENBLAS_NUM_THREADS`) or Eigen's (`Eigen::setNbThreads`) depending on the
/// build (`surgeon::uses_openblas`). (The pruning driver's CPU policy can update several matrices
/// at once on threads of its own: `cpu::prune_backend_options::update_threads`.) Cheap to
/// construct; stateless, so one context may serve several threads.
class context {
 public:
  /// @brief The pruning driver's policy on this backend, made from the context by `surgeon::prune`
  /// (defined in cpu/prune_backend.hpp).
  using prune_backend_type = prune_backend;
  /// @brief A CPU context; holds no state, so construction costs nothing.
  context() = default;
  /// @brief Name of the dense-kernel provider of this build: "OpenBLAS" or "Eigen".
  static constexpr const char* kernels() { return uses_openblas ? "OpenBLAS" : "Eigen"; }
};

}  // namespace surgeon::cpu
