/// @file context.hpp
/// @brief `surgeon::cuda::context`: the CUDA backend's execution context (one device, one stream,
/// a cuBLAS and a cuSOLVER handle bound to that stream).
///
/// The class always exists, so code can name it without `#ifdef`: built without the CUDA backend
/// (no `SURGEON_HAS_CUDA`), or run on a machine with no visible device, constructing one throws
/// `surgeon::backend_unavailable`. Test for a device first with `surgeon::cuda::device_available()`.
///
/// Everything the backend enqueues through a context runs on its stream, in order; a call that
/// returns host data synchronizes that stream, others are asynchronous. A context is not
/// thread-safe: use one per host thread.
///
/// ABI note: the class and `device_available()` live in an inline namespace that depends on
/// `SURGEON_HAS_CUDA`, so translation units built with and without the backend can be linked into
/// one program without an ODR clash. Name them as `surgeon::cuda::context`; do not forward-declare
/// them, include this header.
///
/// No Eigen here: this header is included by nvcc translation units.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>

#if defined(SURGEON_HAS_CUDA)
#include <surgeon/cuda/check.hpp>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#endif

namespace surgeon::cuda {

#if defined(SURGEON_HAS_CUDA)
namespace detail {

/// Deleter of the shared stream: device buffers keep the stream alive so that their stream-ordered
/// free stays valid even when they outlive the context that made them.
struct stream_deleter {
  void operator()(cudaStream_t stream) const noexcept { static_cast<void>(cudaStreamDestroy(stream)); }
};
/// Shared ownership of a CUDA stream (destroyed with `cudaStreamDestroy` by its last owner).
using stream_handle = std::shared_ptr<std::remove_pointer_t<cudaStream_t>>;

}  // namespace detail
#endif

class prune_backend;  // cuda/prune.hpp (in surgeon::cuda itself, as this declaration)

// Keep the inline namespace free of a nested `detail`: it would make `surgeon::cuda::detail`
// ambiguous.
#if defined(SURGEON_HAS_CUDA)
inline namespace with_cuda_backend {
#else
inline namespace without_cuda_backend {
#endif

#if defined(SURGEON_HAS_CUDA)

/// @brief True when the CUDA runtime sees at least one device. Never throws; clears the runtime
/// error that a failed query leaves behind.
/// Cost: one `cudaGetDeviceCount` (the first CUDA call of a process initialises the runtime).
inline bool device_available() noexcept {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    return false;
  }
  return count > 0;
}

/// @brief Execution context of the CUDA backend: owns a non-blocking stream on one device, and a
/// cuBLAS and a cuSOLVER (dense) handle bound to that stream.
///
/// Non-copyable, movable; a moved-from context owns nothing and may only be destroyed or assigned.
/// The destructor never throws: it destroys the handles and releases the stream without waiting
/// (work already enqueued completes; `device_buffer`s made from the context keep the stream alive
/// until they are freed).
///
/// The constructor makes `device` the calling thread's current device. Backend calls assume the
/// context's device is current; with several devices call `make_current()` before using a context.
///
/// The constructor also raises the release threshold of the device's default memory pool (the one
/// `cudaMallocAsync` draws from) to a quarter of the device memory, unless it is already higher.
/// The default threshold, 0, hands every freed byte back to the driver at each synchronisation,
/// and the backend synchronises often (every solver `info`) between short-lived buffers of up to
/// hundreds of MB; a quarter keeps them cached while leaving the rest to `cudaMalloc` users. This
/// is process-wide state of the device; set the attribute again after constructing a context to
/// choose otherwise.
class context {
 public:
  /// @brief The pruning driver's policy on this backend, made from the context by `surgeon::prune`
  /// (defined in cuda/prune.hpp).
  using prune_backend_type = prune_backend;
  /// @brief Creates the stream and the handles on device ordinal `device`.
  /// @throws logic_error if `device < 0`.
  /// @throws backend_unavailable if no device is visible (with the CUDA error text), if `device` is
  ///         not below the device count, or if the device lacks stream-ordered allocation
  ///         (`cudaMallocAsync`, which `device_buffer` uses).
  /// @throws cuda_error if creating the stream or a handle fails.
  /// Cost: tens of milliseconds on first use (runtime and library initialisation).
  explicit context(int device = 0) : device_(device) {
    SURGEON_EXPECTS(device >= 0, "cuda::context: negative device ordinal {}", device);
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      static_cast<void>(cudaGetLastError());
      SURGEON_THROW(backend_unavailable, "cuda::context: no CUDA device is available: {} ({})",
                    cudaGetErrorName(status), cudaGetErrorString(status));
    }
    if (count == 0) SURGEON_THROW(backend_unavailable, "cuda::context: no CUDA device is visible");
    if (device >= count) {
      SURGEON_THROW(backend_unavailable, "cuda::context: device {} requested but only {} visible", device,
                    count);
    }
    SURGEON_CUDA_CHECK(cudaSetDevice(device));
    int pools = 0;
    SURGEON_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device));
    if (pools == 0) {
      SURGEON_THROW(backend_unavailable,
                    "cuda::context: device {} does not support stream-ordered allocation", device);
    }
    keep_pool_memory(device);

    cudaStream_t raw_stream = nullptr;
    SURGEON_CUDA_CHECK(cudaStreamCreateWithFlags(&raw_stream, cudaStreamNonBlocking));
    stream_ = detail::stream_handle(raw_stream, detail::stream_deleter{});
    try {
      SURGEON_CUBLAS_CHECK(cublasCreate(&cublas_));
      SURGEON_CUBLAS_CHECK(cublasSetStream(cublas_, raw_stream));
      SURGEON_CUSOLVER_CHECK(cusolverDnCreate(&cusolver_));
      SURGEON_CUSOLVER_CHECK(cusolverDnSetStream(cusolver_, raw_stream));
    } catch (...) {
      release();
      throw;
    }
  }

  context(const context&) = delete;
  context& operator=(const context&) = delete;

  /// @brief Takes over `other`'s device, stream and cuBLAS/cuSOLVER handles; `other` is left
  /// moved-from (null stream and handles). Cost: O(1).
  context(context&& other) noexcept
      : device_(other.device_),
        stream_(std::move(other.stream_)),
        cublas_(std::exchange(other.cublas_, nullptr)),
        cusolver_(std::exchange(other.cusolver_, nullptr)) {}

  /// @brief Destroys this context's handles and releases its stream, then takes over `other`'s;
  /// `other` is left moved-from. Self-assignment does nothing.
  context& operator=(context&& other) noexcept {
    if (this != &other) {
      release();
      device_ = other.device_;
      stream_ = std::move(other.stream_);
      cublas_ = std::exchange(other.cublas_, nullptr);
      cusolver_ = std::exchange(other.cusolver_, nullptr);
    }
    return *this;
  }

  ~context() { release(); }

  /// @brief The context's non-blocking stream (null for a moved-from context).
  cudaStream_t stream() const noexcept { return stream_.get(); }
  /// @brief The cuBLAS handle, bound to `stream()`.
  cublasHandle_t cublas() const noexcept { return cublas_; }
  /// @brief The cuSOLVER dense handle, bound to `stream()`.
  cusolverDnHandle_t cusolver() const noexcept { return cusolver_; }
  /// @brief The device ordinal.
  int device() const noexcept { return device_; }

  /// @brief Makes the context's device current on the calling thread.
  /// @throws cuda_error if `cudaSetDevice` fails.
  void make_current() const { SURGEON_CUDA_CHECK(cudaSetDevice(device_)); }

  /// @brief Waits until all work enqueued on the stream has finished.
  /// @throws logic_error on a moved-from context.
  /// @throws cuda_error if the wait fails or an earlier asynchronous operation failed.
  void synchronize() const {
    SURGEON_EXPECTS(stream_ != nullptr, "cuda::context::synchronize: moved-from context");
    SURGEON_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }

  /// @brief The stream as shared ownership (for `device_buffer`, which must be able to free on it
  /// after the context is gone).
  const detail::stream_handle& shared_stream() const noexcept { return stream_; }

 private:
  /// Raises the default pool's release threshold to a quarter of the device memory (see above).
  static void keep_pool_memory(int device) {
    cudaMemPool_t pool = nullptr;
    SURGEON_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    std::size_t free_bytes = 0;
    std::size_t total_bytes = 0;
    SURGEON_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    std::uint64_t threshold = 0;
    SURGEON_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    std::uint64_t wanted = static_cast<std::uint64_t>(total_bytes) / 4;
    if (threshold < wanted) {
      SURGEON_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &wanted));
    }
  }

  void release() noexcept {
    if (cusolver_ != nullptr) static_cast<void>(cusolverDnDestroy(cusolver_));
    if (cublas_ != nullptr) static_cast<void>(cublasDestroy(cublas_));
    cusolver_ = nullptr;
    cublas_ = nullptr;
    stream_.reset();
  }

  int device_ = 0;
  detail::stream_handle stream_;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
};

#else  // !SURGEON_HAS_CUDA

/// @brief Always false: this build has no CUDA backend.
inline bool device_available() noexcept {
  return false;
}

/// @brief Execution context of the CUDA backend. This build has no CUDA backend (`SURGEON_HAS_CUDA`
/// is not defined; link `surgeon::cuda`): the constructor always throws.
class context {
 public:
  /// @throws backend_unavailable always.
  explicit context(int device = 0) {
    SURGEON_THROW(backend_unavailable, "surgeon was built without the CUDA backend (requested device {})",
                  device);
  }
  context(const context&) = delete;
  context& operator=(const context&) = delete;
  /// @brief Move constructor (never reached: no context can be constructed).
  context(context&&) noexcept = default;
  /// @brief Move assignment (never reached: no context can be constructed).
  context& operator=(context&&) noexcept = default;
  ~context() = default;

  /// @brief The device ordinal (never reached: no context can be constructed).
  int device() const noexcept { return 0; }
  /// @throws backend_unavailable always.
  void make_current() const {
    SURGEON_THROW(backend_unavailable, "surgeon was built without the CUDA backend");
  }
  /// @throws backend_unavailable always.
  void synchronize() const {
    SURGEON_THROW(backend_unavailable, "surgeon was built without the CUDA backend");
  }
};

#endif  // SURGEON_HAS_CUDA

}  // inline namespace
}  // namespace surgeon::cuda
