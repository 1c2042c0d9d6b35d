/// @file buffer.hpp
/// @brief `surgeon::cuda::device_buffer<T>`: an owning, stream-ordered array in device memory.
///
/// Memory comes from the device's stream-ordered pool (`cudaMallocAsync` / `cudaFreeAsync` on the
/// context's stream), never from managed memory. Allocation, copies, fills and the final free are
/// all enqueued on that one stream, so they are ordered with the backend's kernels without any
/// extra synchronization.
///
/// Defined only when `SURGEON_HAS_CUDA` is defined (target `surgeon::cuda`); without it this header
/// declares nothing. No Eigen here: this header is included by nvcc translation units.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/error.hpp>
#include <surgeon/view.hpp>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace surgeon::cuda {

/// @brief An owning array of `size()` elements of `T` in device memory, allocated on a context's
/// stream.
///
/// - Stream-ordered: the memory may be used by work enqueued on `stream()` right away; other streams
///   must synchronize with it first. The destructor enqueues the free on the same stream and never
///   throws. The buffer shares ownership of the stream, so it may outlive its context.
/// - Contents are uninitialised after construction; call `fill_zero()` or copy into it.
/// - Movable, non-copyable; a moved-from buffer is empty.
/// - Asynchronous copies (`copy_from_host`, `copy_to_host`) require the host memory to stay valid
///   (and, for `copy_to_host`, unread) until the stream is synchronized; the `_sync` variants wait.
///   Pinned host memory makes them truly asynchronous; pageable memory may make them blocking.
///
/// @tparam T a trivially copyable element type.
template <class T>
class device_buffer {
  static_assert(std::is_trivially_copyable_v<T>, "device_buffer<T>: T must be trivially copyable");
  static_assert(!std::is_const_v<T> && !std::is_volatile_v<T>,
                "device_buffer<T>: T must not be cv-qualified");

 public:
  /// @brief The element type `T`.
  using value_type = T;

  /// @brief An empty buffer (no stream, no memory).
  device_buffer() noexcept = default;

  /// @brief Allocates `size` uninitialised elements on `ctx`'s stream.
  /// @throws logic_error if `size < 0`, if `size * sizeof(T)` overflows, or `ctx` was moved from.
  /// @throws cuda_error if the allocation fails (e.g. out of memory).
  /// Cost: one `cudaMallocAsync` (from the pool: no device synchronization); no allocation for 0.
  device_buffer(const context& ctx, index_t size) : stream_(ctx.shared_stream()), size_(size) {
    SURGEON_EXPECTS(stream_ != nullptr, "device_buffer: the context was moved from");
    const std::size_t bytes = byte_count(size, "device_buffer");
    if (bytes > 0) {
      void* raw = nullptr;
      SURGEON_CUDA_CHECK(cudaMallocAsync(&raw, bytes, stream_.get()));
      data_ = static_cast<T*>(raw);
    }
  }

  /// @brief Allocates `values.size()` elements on `ctx`'s stream and copies `values` into them;
  /// waits for the copy, so `values` may be released on return.
  /// @throws logic_error, cuda_error as the sized constructor and `copy_from_host_sync`.
  device_buffer(const context& ctx, const std::vector<T>& values)
      : device_buffer(ctx, static_cast<index_t>(values.size())) {
    copy_from_host_sync(values.data(), size_);
  }

  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;

  /// @brief Takes over `other`'s memory and stream; `other` is left empty. Cost: O(1), no device work.
  device_buffer(device_buffer&& other) noexcept
      : stream_(std::move(other.stream_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}

  /// @brief Enqueues the free of this buffer's memory on its own stream, then takes over `other`'s
  /// memory and stream; `other` is left empty. Self-assignment does nothing.
  device_buffer& operator=(device_buffer&& other) noexcept {
    if (this != &other) {
      release();
      stream_ = std::move(other.stream_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  /// @brief Enqueues the free on the buffer's stream; never throws (a failure is ignored).
  ~device_buffer() { release(); }

  /// @brief Device pointer to the first element (null when empty).
  T* data() noexcept { return data_; }
  /// @brief Device pointer to the first element, read-only (null when empty).
  const T* data() const noexcept { return data_; }
  /// @brief Number of elements.
  index_t size() const noexcept { return size_; }
  /// @brief Number of bytes (`size() * sizeof(T)`).
  std::size_t size_bytes() const noexcept { return static_cast<std::size_t>(size_) * sizeof(T); }
  /// @brief Whether the buffer holds no elements (`size() == 0`).
  bool empty() const noexcept { return size_ == 0; }
  /// @brief The stream the buffer is ordered on (null for an empty default-constructed buffer).
  cudaStream_t stream() const noexcept { return stream_.get(); }

  /// @brief Views the buffer's first elements as a row-major `[rows, cols]` device matrix with
  /// leading dimension `ld` (default `cols`): element (i, j) at `data()[i * ld + j]`.
  /// @throws logic_error if the shape is invalid (see `matrix_view`) or needs more than `size()`
  ///         elements (`(rows - 1) * ld + cols`).
  device_matrix_view<T> view(index_t rows, index_t cols, index_t ld = -1) {
    check_view(rows, cols, ld);
    return device_matrix_view<T>(data_, rows, cols, ld);
  }
  /// @copydoc view(index_t, index_t, index_t)
  device_matrix_view<const T> view(index_t rows, index_t cols, index_t ld = -1) const {
    check_view(rows, cols, ld);
    return device_matrix_view<const T>(data_, rows, cols, ld);
  }

  /// @brief The whole buffer as a contiguous device vector view.
  device_vector_view<T> flat_view() noexcept { return device_vector_view<T>(data_, size_); }
  /// @brief The whole buffer as a contiguous, read-only device vector view.
  device_vector_view<const T> flat_view() const noexcept { return device_vector_view<const T>(data_, size_); }

  /// @brief Enqueues a copy of `count` elements from host memory `src` into the buffer's first
  /// `count` elements. Asynchronous: `src` must stay valid until the stream is synchronized.
  /// @throws logic_error if `count < 0`, `count > size()`, or `src` is null while `count > 0`.
  /// @throws cuda_error if enqueuing the copy fails.
  void copy_from_host(const T* src, index_t count) {
    check_copy(src, count, "copy_from_host");
    if (count == 0) return;
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(data_, src, static_cast<std::size_t>(count) * sizeof(T),
                                       cudaMemcpyHostToDevice, stream_.get()));
  }

  /// @brief Enqueues a copy of the buffer's first `count` elements into host memory `dst`.
  /// Asynchronous: read `dst` only after the stream is synchronized.
  /// @throws logic_error if `count < 0`, `count > size()`, or `dst` is null while `count > 0`.
  /// @throws cuda_error if enqueuing the copy fails.
  void copy_to_host(T* dst, index_t count) const {
    check_copy(dst, count, "copy_to_host");
    if (count == 0) return;
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(dst, data_, static_cast<std::size_t>(count) * sizeof(T),
                                       cudaMemcpyDeviceToHost, stream_.get()));
  }

  /// @brief `copy_from_host`, then waits for the stream (and so for all work enqueued before).
  /// @throws logic_error, cuda_error as `copy_from_host`; cuda_error if an earlier asynchronous
  ///         operation on the stream failed.
  void copy_from_host_sync(const T* src, index_t count) {
    copy_from_host(src, count);
    synchronize();
  }

  /// @brief `copy_to_host`, then waits for the stream: `dst` holds the data on return.
  /// @throws logic_error, cuda_error as `copy_to_host`; cuda_error if an earlier asynchronous
  ///         operation on the stream failed.
  void copy_to_host_sync(T* dst, index_t count) const {
    copy_to_host(dst, count);
    synchronize();
  }

  /// @brief The whole buffer copied into a new host vector (waits for the stream).
  /// @throws cuda_error as `copy_to_host_sync`.
  std::vector<T> to_host() const {
    std::vector<T> values(static_cast<std::size_t>(size_));
    copy_to_host_sync(values.data(), size_);
    return values;
  }

  /// @brief Enqueues setting every byte of the buffer to zero (`cudaMemsetAsync`), which is the
  /// value 0 for integer and IEEE floating-point types.
  /// @throws cuda_error if enqueuing fails.
  void fill_zero() {
    if (size_ == 0) return;
    SURGEON_CUDA_CHECK(cudaMemsetAsync(data_, 0, size_bytes(), stream_.get()));
  }

  /// @brief Waits for all work enqueued on the buffer's stream. No-op for a buffer without stream.
  /// @throws cuda_error if the wait fails or an earlier asynchronous operation failed.
  void synchronize() const {
    if (stream_ == nullptr) return;
    SURGEON_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }

 private:
  static std::size_t byte_count(index_t count, const char* what) {
    SURGEON_EXPECTS(count >= 0, "{}: negative size {}", what, count);
    constexpr auto max_count = std::numeric_limits<std::size_t>::max() / sizeof(T);
    SURGEON_EXPECTS(static_cast<std::make_unsigned_t<index_t>>(count) <= max_count,
                    "{}: {} elements of {} bytes overflow the addressable size", what, count, sizeof(T));
    return static_cast<std::size_t>(count) * sizeof(T);
  }

  void check_view(index_t rows, index_t cols, index_t ld) const {
    const index_t stride = ld < 0 ? cols : ld;
    SURGEON_EXPECTS(rows >= 0 && cols >= 0 && stride >= cols,
                    "device_buffer::view: bad shape [{}, {}] with leading dimension {}", rows, cols, stride);
    if (rows == 0 || cols == 0) return;
    // (rows - 1) * stride + cols <= size_, written so that it cannot overflow.
    const bool fits = cols <= size_ && (rows == 1 || (stride > 0 && rows - 1 <= (size_ - cols) / stride));
    SURGEON_EXPECTS(fits,
                    "device_buffer::view: [{}, {}] with leading dimension {} needs more than the {} elements",
                    rows, cols, stride, size_);
  }

  template <class Pointer>
  void check_copy(Pointer host, index_t count, const char* what) const {
    SURGEON_EXPECTS(count >= 0 && count <= size_, "device_buffer::{}: {} elements for a buffer of {}", what,
                    count, size_);
    SURGEON_EXPECTS(host != nullptr || count == 0, "device_buffer::{}: null host pointer", what);
  }

  void release() noexcept {
    // A failed free (e.g. during process teardown) is dropped, and so is the error it leaves.
    if (data_ != nullptr && cudaFreeAsync(data_, stream_.get()) != cudaSuccess) {
      static_cast<void>(cudaGetLastError());
    }
    data_ = nullptr;
    size_ = 0;
    stream_.reset();
  }

  detail::stream_handle stream_;
  T* data_ = nullptr;
  index_t size_ = 0;
};

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
