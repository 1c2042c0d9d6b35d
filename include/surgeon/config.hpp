/// @file config.hpp
/// @brief Compile-time configuration: which backends and kernels this build of surgeon uses.
///
/// The CMake targets define these macros; a project that includes the headers without CMake
/// defines them itself:
/// - `SURGEON_HAS_EIGEN`: the CPU backend (`surgeon::cpu`) is available (target `surgeon::eigen`).
/// - `SURGEON_USE_OPENBLAS`: the CPU backend calls OpenBLAS (CBLAS) and LAPACKE for its dense
///   kernels instead of Eigen's own (CMake option `SURGEON_CPU_BLAS`).
/// - `SURGEON_HAS_CUDA`: the CUDA backend (`surgeon::cuda`) is compiled in (target `surgeon::cuda`).
#pragma once

#include <cstdint>

namespace surgeon {

/// @brief Signed index type used for every size, count and offset in the library.
using index_t = std::int64_t;

/// @brief True when the CPU backend (`surgeon::cpu`) is compiled in (`SURGEON_HAS_EIGEN` defined).
#if defined(SURGEON_HAS_EIGEN)
inline constexpr bool has_eigen = true;
#else
inline constexpr bool has_eigen = false;
#endif

/// @brief True when the CPU backend uses OpenBLAS and LAPACKE (`SURGEON_USE_OPENBLAS` defined).
#if defined(SURGEON_USE_OPENBLAS)
inline constexpr bool uses_openblas = true;
#else
inline constexpr bool uses_openblas = false;
#endif

/// @brief True when the CUDA backend (`surgeon::cuda`) is compiled in (`SURGEON_HAS_CUDA` defined).
#if defined(SURGEON_HAS_CUDA)
inline constexpr bool has_cuda = true;
#else
inline constexpr bool has_cuda = false;
#endif

}  // namespace surgeon
