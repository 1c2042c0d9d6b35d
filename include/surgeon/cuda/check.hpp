/// @file check.hpp
/// @brief Status checks for the CUDA runtime, cuBLAS and cuSOLVER: every call the CUDA backend
/// makes goes through one of these macros, so a failure becomes a `surgeon::cuda_error` naming the
/// expression, the status and `file:line`.
///
/// Available only when `SURGEON_HAS_CUDA` is defined (target `surgeon::cuda`); without it this header
/// is empty. Plain host C++: safe to include from nvcc and from host-compiler translation units.
///
/// ```cpp
/// SURGEON_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
/// my_kernel<<<grid, block, 0, stream>>>(...);
/// SURGEON_CUDA_CHECK_LAUNCH();
/// SURGEON_CUBLAS_CHECK(cublasSgemm(handle, ...));
/// SURGEON_CUSOLVER_CHECK(cusolverDnSpotrf(handle, ..., d_info));
/// int info = surgeon::cuda::fetch_cusolver_info(d_info, stream, "cusolverDnSpotrf");  // >= 0
/// ```
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/error.hpp>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

namespace surgeon::cuda {
namespace detail {

/// @brief The enumerator name of a cuSOLVER status ("CUSOLVER_STATUS_INVALID_VALUE", ...).
inline const char* cusolver_status_name(cusolverStatus_t status) noexcept {
  switch (status) {
    case CUSOLVER_STATUS_SUCCESS:
      return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED:
      return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED:
      return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE:
      return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH:
      return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_MAPPING_ERROR:
      return "CUSOLVER_STATUS_MAPPING_ERROR";
    case CUSOLVER_STATUS_EXECUTION_FAILED:
      return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR:
      return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED:
      return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED:
      return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_ZERO_PIVOT:
      return "CUSOLVER_STATUS_ZERO_PIVOT";
    case CUSOLVER_STATUS_INVALID_LICENSE:
      return "CUSOLVER_STATUS_INVALID_LICENSE";
    case CUSOLVER_STATUS_IRS_PARAMS_NOT_INITIALIZED:
      return "CUSOLVER_STATUS_IRS_PARAMS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_IRS_PARAMS_INVALID:
      return "CUSOLVER_STATUS_IRS_PARAMS_INVALID";
    case CUSOLVER_STATUS_IRS_PARAMS_INVALID_PREC:
      return "CUSOLVER_STATUS_IRS_PARAMS_INVALID_PREC";
    case CUSOLVER_STATUS_IRS_PARAMS_INVALID_REFINE:
      return "CUSOLVER_STATUS_IRS_PARAMS_INVALID_REFINE";
    case CUSOLVER_STATUS_IRS_PARAMS_INVALID_MAXITER:
      return "CUSOLVER_STATUS_IRS_PARAMS_INVALID_MAXITER";
    case CUSOLVER_STATUS_IRS_INTERNAL_ERROR:
      return "CUSOLVER_STATUS_IRS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_IRS_NOT_SUPPORTED:
      return "CUSOLVER_STATUS_IRS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_IRS_OUT_OF_RANGE:
      return "CUSOLVER_STATUS_IRS_OUT_OF_RANGE";
    case CUSOLVER_STATUS_IRS_NRHS_NOT_SUPPORTED_FOR_REFINE_GMRES:
      return "CUSOLVER_STATUS_IRS_NRHS_NOT_SUPPORTED_FOR_REFINE_GMRES";
    case CUSOLVER_STATUS_IRS_INFOS_NOT_INITIALIZED:
      return "CUSOLVER_STATUS_IRS_INFOS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_IRS_INFOS_NOT_DESTROYED:
      return "CUSOLVER_STATUS_IRS_INFOS_NOT_DESTROYED";
    case CUSOLVER_STATUS_IRS_MATRIX_SINGULAR:
      return "CUSOLVER_STATUS_IRS_MATRIX_SINGULAR";
    case CUSOLVER_STATUS_INVALID_WORKSPACE:
      return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default:
      return "CUSOLVER_STATUS_<unknown>";
  }
}

/// @brief A short description of a cuSOLVER status (cuSOLVER has no `GetStatusString`).
inline const char* cusolver_status_string(cusolverStatus_t status) noexcept {
  switch (status) {
    case CUSOLVER_STATUS_SUCCESS:
      return "success";
    case CUSOLVER_STATUS_NOT_INITIALIZED:
      return "the cuSOLVER handle was not initialised";
    case CUSOLVER_STATUS_ALLOC_FAILED:
      return "a resource allocation failed inside cuSOLVER";
    case CUSOLVER_STATUS_INVALID_VALUE:
      return "an unsupported value or parameter was passed";
    case CUSOLVER_STATUS_ARCH_MISMATCH:
      return "the device does not support a required feature";
    case CUSOLVER_STATUS_MAPPING_ERROR:
      return "access to GPU memory space failed";
    case CUSOLVER_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute";
    case CUSOLVER_STATUS_INTERNAL_ERROR:
      return "an internal cuSOLVER operation failed";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED:
      return "the matrix type is not supported";
    case CUSOLVER_STATUS_NOT_SUPPORTED:
      return "the operation is not supported";
    case CUSOLVER_STATUS_ZERO_PIVOT:
      return "a zero pivot was encountered";
    case CUSOLVER_STATUS_INVALID_WORKSPACE:
      return "the workspace is invalid or too small";
    default:
      return "cuSOLVER error";
  }
}

[[noreturn]] inline void throw_cuda_status(cudaError_t status, const char* expr, const char* file, int line) {
  // Reset the runtime's "last error" so that a later cudaGetLastError() (e.g. the check after a
  // kernel launch) does not report this failure a second time. Sticky errors stay sticky.
  static_cast<void>(cudaGetLastError());
  ::surgeon::detail::throw_error<cuda_error>(file, line, "CUDA call '{}' failed: {} ({})", expr,
                                             cudaGetErrorName(status), cudaGetErrorString(status));
}

[[noreturn]] inline void throw_cublas_status(cublasStatus_t status, const char* expr, const char* file,
                                             int line) {
  ::surgeon::detail::throw_error<cuda_error>(file, line, "cuBLAS call '{}' failed: {} ({})", expr,
                                             cublasGetStatusName(status), cublasGetStatusString(status));
}

[[noreturn]] inline void throw_cusolver_status(cusolverStatus_t status, const char* expr, const char* file,
                                               int line) {
  ::surgeon::detail::throw_error<cuda_error>(file, line, "cuSOLVER call '{}' failed: {} ({})", expr,
                                             cusolver_status_name(status), cusolver_status_string(status));
}

inline int check_cusolver_info(int info, const char* routine, const char* file, int line) {
  if (info < 0) {
    ::surgeon::detail::throw_error<cuda_error>(
        file, line, "cuSOLVER {}: parameter {} had an illegal value (info = {})", routine, -info, info);
  }
  return info;
}

}  // namespace detail

/// @brief Checks the `info` value a cuSOLVER routine wrote, once copied back to the host.
/// @param info the value (host memory).
/// @param routine the routine's name, for the message.
/// @return `info` when `info >= 0`: 0 is success, a positive value is the routine's own report
///         (for `potrf`, the order of the leading minor that is not positive definite) and is the
///         caller's to interpret.
/// @throws cuda_error when `info < 0` (argument `-info` was illegal: a bug in the caller).
/// Cost: O(1). Prefer the macro `SURGEON_CUSOLVER_CHECK_INFO(info, routine)`, which records the
/// caller's `file:line`.
inline int check_cusolver_info(int info, const char* routine) {
  return detail::check_cusolver_info(info, routine, __FILE__, __LINE__);
}

/// @brief Copies a cuSOLVER `info` from device memory, waits for it, and checks it as
/// `check_cusolver_info` does.
/// @param device_info pointer to one `int` in device memory, written by a cuSOLVER routine on `stream`.
/// @param stream the stream the routine was enqueued on; it is synchronized.
/// @param routine the routine's name, for the message.
/// @return `info` (>= 0).
/// @throws cuda_error when the copy or the synchronization fails, or `info < 0`.
/// Cost: one 4-byte device-to-host copy and a stream synchronization.
inline int fetch_cusolver_info(const int* device_info, cudaStream_t stream, const char* routine) {
  int info = 0;
  const cudaError_t copied = cudaMemcpyAsync(&info, device_info, sizeof(int), cudaMemcpyDeviceToHost, stream);
  if (copied != cudaSuccess) detail::throw_cuda_status(copied, "cudaMemcpyAsync(info)", __FILE__, __LINE__);
  const cudaError_t synced = cudaStreamSynchronize(stream);
  if (synced != cudaSuccess) detail::throw_cuda_status(synced, "cudaStreamSynchronize", __FILE__, __LINE__);
  return detail::check_cusolver_info(info, routine, __FILE__, __LINE__);
}

}  // namespace surgeon::cuda

/// @brief Evaluates a CUDA runtime call once; throws `surgeon::cuda_error` unless it returns
/// `cudaSuccess`. The message holds the expression, `cudaGetErrorName`/`String` and `file:line`.
#define SURGEON_CUDA_CHECK(expr)                                                                   \
  do {                                                                                             \
    const ::cudaError_t surgeon_cuda_status_ = (expr);                                             \
    if (surgeon_cuda_status_ != ::cudaSuccess)                                                     \
      ::surgeon::cuda::detail::throw_cuda_status(surgeon_cuda_status_, #expr, __FILE__, __LINE__); \
  } while (false)

/// @brief Checks a kernel launch just made (`cudaGetLastError`); launch errors only, not errors
/// raised while the kernel runs (those surface at the next synchronizing call).
#define SURGEON_CUDA_CHECK_LAUNCH() SURGEON_CUDA_CHECK(::cudaGetLastError())

/// @brief Evaluates a cuBLAS call once; throws `surgeon::cuda_error` unless it returns
/// `CUBLAS_STATUS_SUCCESS`. The message holds the expression, `cublasGetStatusName`/`String` and
/// `file:line`.
#define SURGEON_CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                                 \
    const ::cublasStatus_t surgeon_cublas_status_ = (expr);                                            \
    if (surgeon_cublas_status_ != ::CUBLAS_STATUS_SUCCESS)                                             \
      ::surgeon::cuda::detail::throw_cublas_status(surgeon_cublas_status_, #expr, __FILE__, __LINE__); \
  } while (false)

/// @brief Evaluates a cuSOLVER call once; throws `surgeon::cuda_error` unless it returns
/// `CUSOLVER_STATUS_SUCCESS`. This checks the call's status only: the routine's `info` output is
/// checked separately with `SURGEON_CUSOLVER_CHECK_INFO` or `surgeon::cuda::fetch_cusolver_info`.
#define SURGEON_CUSOLVER_CHECK(expr)                                                                       \
  do {                                                                                                     \
    const ::cusolverStatus_t surgeon_cusolver_status_ = (expr);                                            \
    if (surgeon_cusolver_status_ != ::CUSOLVER_STATUS_SUCCESS)                                             \
      ::surgeon::cuda::detail::throw_cusolver_status(surgeon_cusolver_status_, #expr, __FILE__, __LINE__); \
  } while (false)

/// @brief An expression: checks a host copy of a cuSOLVER `info` and yields it (>= 0); throws
/// `surgeon::cuda_error` with the caller's `file:line` when it is negative (an illegal argument).
/// Example: `if (SURGEON_CUSOLVER_CHECK_INFO(info, "cusolverDnSpotrf") > 0) { /* not SPD */ }`
#define SURGEON_CUSOLVER_CHECK_INFO(info, routine) \
  ::surgeon::cuda::detail::check_cusolver_info((info), (routine), __FILE__, __LINE__)

#endif  // SURGEON_HAS_CUDA
