/// @file cuda/kfac.hpp
/// @brief `surgeon::cuda::device_factor_accumulator<T>`: K-FAC factor accumulation on the device
/// (METHOD.md §1), the CUDA mirror of `surgeon::factor_accumulator<T>` (kfac.hpp).
///
/// The state lives in device memory with the same meaning as the CPU accumulator's: the lower
/// triangle of a column-major `size() x size()` buffer holding the exact sum `Σ ã ãᵀ` (or the EMA
/// mean), plus the token count. Batches are added by a cuBLAS symmetric rank-k update (SYRK,
/// never a full GEMM), with bias augmentation and EMA exactly as the CPU rules. `to_host()` returns
/// a `surgeon::factor_accumulator<T>` with identical state, so saving, loading and the CPU
/// curvature code are reused unchanged.
///
/// nvcc translation units only (the kernels live in detail/kfac_kernels.cuh); no Eigen. Defined only
/// when `SURGEON_HAS_CUDA` is defined (target `surgeon::cuda`).
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/detail/kfac_kernels.cuh>
#include <surgeon/cuda/detail/solver.hpp>
#include <surgeon/error.hpp>
#include <surgeon/io/safetensors.hpp>
#include <surgeon/kfac.hpp>
#include <surgeon/view.hpp>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace surgeon::cuda {
namespace detail {

/// `cublas?syrk` on the lower triangle, no transpose: `C = alpha · A Aᵀ + beta · C` with A
/// column-major `n x k` (lda), which is the row-major `[k, n]` token block viewed column-major.
inline void syrk_lower(cublasHandle_t handle, int n, int k, float alpha, const float* a, int lda, float beta,
                       float* c, int ldc) {
  SURGEON_CUBLAS_CHECK(
      cublasSsyrk(handle, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &alpha, a, lda, &beta, c, ldc));
}
inline void syrk_lower(cublasHandle_t handle, int n, int k, double alpha, const double* a, int lda,
                       double beta, double* c, int ldc) {
  SURGEON_CUBLAS_CHECK(
      cublasDsyrk(handle, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &alpha, a, lda, &beta, c, ldc));
}

/// Page-locked host memory (`cudaMallocHost`), so that host-to-device copies are asynchronous.
/// Move-only; the destructor never throws.
template <typename T>
class pinned_buffer {
 public:
  pinned_buffer() = default;
  explicit pinned_buffer(index_t size) : size_(size) {
    SURGEON_EXPECTS(size >= 0, "pinned_buffer: negative size {}", size);
    if (size > 0) {
      void* raw = nullptr;
      SURGEON_CUDA_CHECK(cudaMallocHost(&raw, static_cast<std::size_t>(size) * sizeof(T)));
      data_ = static_cast<T*>(raw);
    }
  }
  pinned_buffer(const pinned_buffer&) = delete;
  pinned_buffer& operator=(const pinned_buffer&) = delete;
  pinned_buffer(pinned_buffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  pinned_buffer& operator=(pinned_buffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~pinned_buffer() { release(); }
  T* data() const noexcept { return data_; }
  index_t size() const noexcept { return size_; }

 private:
  void release() noexcept {
    if (data_ != nullptr && cudaFreeHost(data_) != cudaSuccess) static_cast<void>(cudaGetLastError());
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  index_t size_ = 0;
};

/// An owned CUDA event (timing disabled). Move-only; the destructor never throws.
class event {
 public:
  event() { SURGEON_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  event(event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  event& operator=(event&& other) noexcept {
    if (this != &other) {
      release();
      event_ = std::exchange(other.event_, nullptr);
    }
    return *this;
  }
  ~event() { release(); }
  cudaEvent_t get() const noexcept { return event_; }

 private:
  void release() noexcept {
    if (event_ != nullptr) static_cast<void>(cudaEventDestroy(event_));
    event_ = nullptr;
  }
  cudaEvent_t event_ = nullptr;
};

/// An owned non-blocking CUDA stream. Move-only; the destructor never throws.
class owned_stream {
 public:
  owned_stream() { SURGEON_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  owned_stream(const owned_stream&) = delete;
  owned_stream& operator=(const owned_stream&) = delete;
  ~owned_stream() {
    if (stream_ != nullptr) static_cast<void>(cudaStreamDestroy(stream_));
  }
  cudaStream_t get() const noexcept { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

/// Double-buffered staging of host batches: per slot a pinned host buffer, a device buffer, a
/// device flag for non-finite input and its pinned host copy, and two events (copy done, compute
/// done). Copies run on `copy`, the rank-k updates on the context's stream.
template <typename In>
struct host_staging {
  struct slot {
    pinned_buffer<In> host;
    device_buffer<In> device;
    device_buffer<int> flag;
    pinned_buffer<int> flag_host{1};
    event copied;
    event computed;
    bool used = false;  // `computed` has been recorded at least once
  };
  explicit host_staging(const context& ctx) {
    for (slot& s : slots) s.flag = device_buffer<int>(ctx, 1);
  }
  owned_stream copy;
  slot slots[2];
  int next = 0;
};

}  // namespace detail

template <typename T>
class device_factor_accumulator;

/// @brief Host-to-device staging that any number of `device_factor_accumulator`s on one context
/// can share: per input precision two pinned host and two device batch buffers, a copy stream and
/// events, plus the precision-conversion scratch of each accumulation precision.
///
/// Each accumulator otherwise stages through its own buffers, so accumulating many factors at once
/// (a whole model's, in the pruning driver) would hold two of its largest batch per factor, pinned
/// and on the device — more than the factors themselves for 8192-token batches. Through one area
/// the staging memory is two of the largest batch in all. Sharing is safe because every
/// accumulator enqueues its updates on the context's stream: a slot is refilled only after the
/// update that read it (an event), and the scratch is reused in stream order.
///
/// Not thread-safe. Use it with the one context it was made for. It may be destroyed while
/// updates that read it are pending (its device buffers are freed in stream order).
class host_staging_area {
 public:
  /// @throws cuda_error if the copy streams, events or flags cannot be created.
  explicit host_staging_area(const context& ctx) : float_(ctx), double_(ctx) {}

 private:
  template <typename T>
  friend class device_factor_accumulator;

  template <typename In>
  detail::host_staging<In>& slots() {
    if constexpr (std::is_same_v<In, float>) {
      return float_;
    } else {
      return double_;
    }
  }
  template <typename T>
  device_buffer<T>& scratch() {
    if constexpr (std::is_same_v<T, float>) {
      return float_scratch_;
    } else {
      return double_scratch_;
    }
  }

  detail::host_staging<float> float_;
  detail::host_staging<double> double_;
  device_buffer<float> float_scratch_;
  device_buffer<double> double_scratch_;
};

/// @brief Accumulates one K-FAC factor on the device from token rows `[tokens, dim]`.
///
/// The CUDA mirror of `surgeon::factor_accumulator<T>` (same options, same alpha/beta rules for
/// the exact sum and the EMA, same bias augmentation, same state layout) with device-resident
/// state. Every call enqueues on the context's stream; `add` returns once its input has been
/// checked (see below), the rank-k update may still be running.
///
/// @tparam T accumulation precision, `float` or `double`. Input may be float or double either
///         way; input of another precision is converted on the device (in blocks of
///         `convert_block` tokens) before the products, so float input into a double accumulator
///         forms its sums in double.
///
/// Not thread-safe. Use it with one context (one device); state buffers are ordered on the
/// stream of the context that created the accumulator. After a `cuda_error` from `add` part of
/// that batch may already be in the state (its update is several kernels): `reset()` before
/// accumulating again. A `logic_error` (bad shape, non-finite input) leaves the state unchanged.
template <typename T>
class device_factor_accumulator : public surgeon::detail::accumulator_bookkeeping {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "device_factor_accumulator<float|double>");

 public:
  /// @brief The element type `T` of the device state (float or double).
  using value_type = T;
  /// Tokens converted per block when the input precision differs from T.
  static constexpr index_t convert_block = 2048;

  /// @brief An empty accumulator for inputs of `dim` features, state zeroed on `ctx`'s stream.
  /// @throws logic_error if `dim < 1`, `dim > 2^20`, or the EMA decay is not in (0, 1).
  /// @throws cuda_error if the device allocation fails.
  /// Cost: `size()²` elements of T in device memory.
  device_factor_accumulator(context& ctx, index_t dim, accumulator_options options = {})
      : accumulator_bookkeeping(dim, options, "device_factor_accumulator") {
    detail::to_int(size(), "cuda::device_factor_accumulator", "order");
    state_ = device_buffer<T>(ctx, size() * size());
    state_.fill_zero();
    nonfinite_ = device_buffer<int>(ctx, 1);
  }

  /// @brief A device copy of a host accumulator (same dimension, options, count and state).
  /// @throws cuda_error if an allocation or the copy fails. Waits for the copy.
  static device_factor_accumulator from_host(context& ctx, const factor_accumulator<T>& host) {
    device_factor_accumulator result(ctx, host.dim(), host.options());
    result.state_.copy_from_host_sync(host.lower_data(), result.size() * result.size());
    result.count_ = host.count();
    return result;
  }

  /// @brief The raw device state: column-major `size() x size()`, lower triangle valid (the
  /// strict upper triangle is unspecified). Ordered on the stream of the creating context.
  const T* lower_data() const { return state_.data(); }

  /// @brief Hands the device state (column-major `size() x size()`, device pointer) and the token
  /// count to `combine(T* device_state, index_t size, std::int64_t& count)`, which may change both
  /// in place: a distributed run's sum over processes (`cuda::prune_backend::reduce_factor`). The
  /// caller synchronises the stream first.
  /// @throws logic_error in EMA mode (an EMA is not a sum).
  template <typename Combine>
  void combine_state(const Combine& combine) {
    SURGEON_EXPECTS(!is_ema(), "cuda::device_factor_accumulator::combine_state: an EMA cannot be combined");
    combine(state_.data(), size(), count_);
  }

  /// @brief Adds the token rows of a device matrix `x` (`[tokens, dim]`, any leading dimension).
  ///
  /// Checks `x` for NaN/infinity on the device first and waits for that check (the state is left
  /// unchanged when it fails), then enqueues the SYRK (and the bias kernel) and returns.
  /// Cost: tokens·size()² flops, an O(tokens·dim) check pass, one stream synchronization.
  /// @throws logic_error if `x` has no rows, `x.cols() != dim()`, a dimension exceeds cuBLAS's int,
  ///         or `x` holds a NaN or an infinity; cuda_error on a CUDA/cuBLAS failure.
  template <typename In>
  void add(context& ctx, device_matrix_view<const In> x) {
    static_assert(std::is_same_v<In, float> || std::is_same_v<In, double>, "float or double input");
    check_shape(x.rows(), x.cols());
    detail::to_int(x.ld(), "cuda::device_factor_accumulator", "leading dimension");
    cudaStream_t stream = ctx.stream();
    SURGEON_CUDA_CHECK(cudaMemsetAsync(nonfinite_.data(), 0, sizeof(int), stream));
    detail::launch_flag_nonfinite(x.data(), x.rows(), x.cols(), x.ld(), nonfinite_.data(), stream);
    int flag = 0;
    // Read back on the stream that ran the check (`nonfinite_`'s own stream is its creator's).
    SURGEON_CUDA_CHECK(
        cudaMemcpyAsync(&flag, nonfinite_.data(), sizeof(int), cudaMemcpyDeviceToHost, stream));
    SURGEON_CUDA_CHECK(cudaStreamSynchronize(stream));
    SURGEON_EXPECTS(flag == 0,
                    "device_factor_accumulator::add: non-finite input (NaN or infinity) in a [{}, {}] batch",
                    x.rows(), x.cols());
    update(ctx, x.data(), x.rows(), x.ld(), converted_);
  }

  /// @copydoc add(context&, device_matrix_view<const In>)
  template <typename In>
  void add(context& ctx, device_matrix_view<In> x) {
    add(ctx, device_matrix_view<const In>(x));
  }

  /// @brief Adds the token rows of a host matrix `x` (`[tokens, dim]`, any leading dimension),
  /// staged through pinned host memory and a device buffer.
  ///
  /// Double-buffered: the staging copy of this batch (host copy into pinned memory, then an
  /// asynchronous upload on the accumulator's own copy stream) overlaps the rank-k update of the
  /// previous batch, which is still running on the context's stream. `add` waits only for this
  /// batch's upload and its device-side NaN/infinity check; `x` may be reused on return.
  /// Cost: as the device overload, plus one host copy and one host-to-device transfer of the batch;
  /// the accumulator's own staging memory grows to the largest batch (two pinned and two device
  /// buffers; see the overload with a shared `host_staging_area`).
  /// @throws logic_error as the device overload; cuda_error on a CUDA/cuBLAS failure.
  template <typename In>
  void add(context& ctx, host_matrix_view<const In> x) {
    if (!own_staging_) own_staging_ = std::make_unique<host_staging_area>(ctx);
    add(ctx, x, *own_staging_);
  }

  /// @copydoc add(context&, host_matrix_view<const In>)
  template <typename In>
  void add(context& ctx, host_matrix_view<In> x) {
    add(ctx, host_matrix_view<const In>(x));
  }

  /// @brief As `add(ctx, x)` for a host matrix, staged through `area` (shared with other
  /// accumulators on `ctx`) instead of the accumulator's own buffers.
  /// @throws as `add(ctx, x)`.
  template <typename In>
  void add(context& ctx, host_matrix_view<const In> x, host_staging_area& area) {
    static_assert(std::is_same_v<In, float> || std::is_same_v<In, double>, "float or double input");
    check_shape(x.rows(), x.cols());
    auto& staging = area.slots<In>();
    auto& s = staging.slots[staging.next];
    const index_t elements = x.rows() * x.cols();
    // The previous upload from this slot finished when its `add` returned, so the pinned buffer is
    // free; the device buffer may still be read by that batch's update (the copy stream waits).
    if (s.host.size() < elements || s.device.size() < elements) {
      // Both are allocated before either is replaced, so that a failed allocation (out of memory)
      // leaves the slot consistent: a retry must not upload into a smaller device buffer.
      device_buffer<In> device(ctx, elements);
      detail::pinned_buffer<In> host(elements);
      // The old device buffer is freed on the context's stream, after the update that reads it.
      s.device = std::move(device);
      s.host = std::move(host);
      // Stream-ordered memory is usable from the copy stream once its allocation has completed.
      ctx.synchronize();
    }
    for (index_t t = 0; t < x.rows(); ++t) {
      std::memcpy(s.host.data() + t * x.cols(), x.row(t), static_cast<std::size_t>(x.cols()) * sizeof(In));
    }
    cudaStream_t copy = staging.copy.get();
    if (s.used) SURGEON_CUDA_CHECK(cudaStreamWaitEvent(copy, s.computed.get(), 0));
    SURGEON_CUDA_CHECK(cudaMemsetAsync(s.flag.data(), 0, sizeof(int), copy));
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(s.device.data(), s.host.data(),
                                       static_cast<std::size_t>(elements) * sizeof(In),
                                       cudaMemcpyHostToDevice, copy));
    detail::launch_flag_nonfinite(s.device.data(), x.rows(), x.cols(), x.cols(), s.flag.data(), copy);
    SURGEON_CUDA_CHECK(
        cudaMemcpyAsync(s.flag_host.data(), s.flag.data(), sizeof(int), cudaMemcpyDeviceToHost, copy));
    SURGEON_CUDA_CHECK(cudaEventRecord(s.copied.get(), copy));
    SURGEON_CUDA_CHECK(cudaEventSynchronize(s.copied.get()));
    SURGEON_EXPECTS(*s.flag_host.data() == 0,
                    "device_factor_accumulator::add: non-finite input (NaN or infinity) in a [{}, {}] batch",
                    x.rows(), x.cols());
    // The event has completed, so this wait is free; it documents the dependency all the same.
    SURGEON_CUDA_CHECK(cudaStreamWaitEvent(ctx.stream(), s.copied.get(), 0));
    try {
      update(ctx, s.device.data(), x.rows(), x.cols(), area.scratch<T>());
    } catch (...) {
      // Part of the update may be queued and still read the slot: order its next refill after it.
      if (cudaEventRecord(s.computed.get(), ctx.stream()) == cudaSuccess) s.used = true;
      throw;
    }
    SURGEON_CUDA_CHECK(cudaEventRecord(s.computed.get(), ctx.stream()));
    s.used = true;
    staging.next = 1 - staging.next;
  }

  /// @copydoc add(context&, host_matrix_view<const In>, host_staging_area&)
  template <typename In>
  void add(context& ctx, host_matrix_view<In> x, host_staging_area& area) {
    add(ctx, host_matrix_view<const In>(x), area);
  }

  /// @brief Adds another device accumulator's tokens (exact, up to the order of the sums).
  /// Enqueued on `ctx`'s stream. `other` must live on the same device; if it was filled through
  /// another context, synchronize that context first.
  /// @throws logic_error if the dimensions or bias settings differ, or either side is an EMA;
  ///         cuda_error on a launch failure.
  void merge(context& ctx, const device_factor_accumulator& other) {
    check_mergeable(other.dim_, other.options_);
    detail::launch_accumulate(state_.data(), other.state_.data(), state_.size(), ctx.stream());
    count_ += other.count_;
  }

  /// @brief Adds a host accumulator's tokens (uploads its state, then as the device overload; waits
  /// for the upload).
  /// @throws as the device overload.
  void merge(context& ctx, const factor_accumulator<T>& other) {
    check_mergeable(other.dim(), other.options());
    device_buffer<T> upload(ctx, state_.size());
    upload.copy_from_host_sync(other.lower_data(), state_.size());
    detail::launch_accumulate(state_.data(), upload.data(), state_.size(), ctx.stream());
    count_ += other.count();
  }

  /// @brief Forgets every token (keeps dimension and options). Enqueued on the state's stream.
  /// @throws cuda_error if the memset cannot be enqueued.
  void reset() {
    state_.fill_zero();
    count_ = 0;
  }

  /// @brief The factor `(1/N) Σ ã ãᵀ` (or the EMA mean) as a packed, symmetric `size() x size()`
  /// device matrix of double (row- and column-major alike). Enqueued on `ctx`'s stream.
  /// Cost: O(size²). @throws logic_error if no token was added; cuda_error on failure.
  device_buffer<double> mean(context& ctx) const {
    SURGEON_EXPECTS(count_ > 0, "device_factor_accumulator::mean: no tokens were added");
    const index_t n = size();
    device_buffer<double> result(ctx, n * n);
    detail::launch_symmetrised(state_.data(), n, is_ema() ? 1.0 : 1.0 / static_cast<double>(count_),
                               result.data(), ctx.stream());
    return result;
  }

  /// @brief A host `factor_accumulator<T>` with identical dimension, options, count and state
  /// (bit for bit), e.g. to `save` it or to factorise on the CPU. Waits for the state's stream.
  /// Cost: one device-to-host copy of size()² elements plus O(size²) host work.
  /// @throws cuda_error if the copy fails.
  factor_accumulator<T> to_host() const {
    return factor_accumulator<T>::from_state(dim_, options_, count_, state_.to_host());
  }

 private:
  void check_shape(index_t rows, index_t cols) const {
    SURGEON_EXPECTS(rows > 0, "device_factor_accumulator::add: empty input (0 token rows)");
    SURGEON_EXPECTS(cols == dim_, "device_factor_accumulator::add: input is [{}, {}], expected [tokens, {}]",
                    rows, cols, dim_);
    detail::to_int(rows, "cuda::device_factor_accumulator", "token count");
  }

  void check_mergeable(index_t other_dim, const accumulator_options& other_options) const {
    SURGEON_EXPECTS(other_dim == dim_ && other_options.bias == options_.bias,
                    "device_factor_accumulator::merge: shapes differ ({}{} vs {}{})", dim_,
                    options_.bias ? "+bias" : "", other_dim, other_options.bias ? "+bias" : "");
    SURGEON_EXPECTS(
        !is_ema() && !other_options.ema_decay.has_value(),
        "device_factor_accumulator::merge: exponential-moving-average state cannot be merged exactly");
  }

  /// Enqueues the update by the checked device rows `x` ([rows, dim], leading dimension `ld`) on
  /// `ctx`'s stream, with the CPU accumulator's alpha/beta, then counts the rows. `scratch` holds
  /// the converted rows when In differs from T (grown as needed, reused in stream order).
  template <typename In>
  void update(context& ctx, const In* x, index_t rows, index_t ld, device_buffer<T>& scratch) {
    const auto [alpha, beta] = batch_weights<T>(rows);
    const index_t n = size();
    cudaStream_t stream = ctx.stream();
    cublasHandle_t handle = ctx.cublas();
    SURGEON_CUBLAS_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
    const int order = detail::to_int(dim_, "cuda::device_factor_accumulator", "dimension");
    const int ldc = detail::to_int(n, "cuda::device_factor_accumulator", "order");
    if constexpr (std::is_same_v<In, T>) {
      detail::syrk_lower(handle, order,
                         detail::to_int(rows, "cuda::device_factor_accumulator", "token count"), alpha, x,
                         detail::to_int(ld, "cuda::device_factor_accumulator", "leading dimension"), beta,
                         state_.data(), ldc);
    } else {
      const index_t block = std::min(convert_block, rows);
      // The old scratch is freed in stream order, after the updates that read it.
      if (scratch.size() < block * dim_) scratch = device_buffer<T>(ctx, block * dim_);
      for (index_t first = 0; first < rows; first += block) {
        const index_t chunk = std::min(block, rows - first);
        detail::launch_convert_rows(x + first * ld, chunk, dim_, ld, scratch.data(), stream);
        detail::syrk_lower(handle, order, static_cast<int>(chunk), alpha, scratch.data(), order,
                           first == 0 ? beta : T(1), state_.data(), ldc);
      }
    }
    if (options_.bias) detail::launch_bias_update(x, rows, dim_, ld, alpha, beta, state_.data(), n, stream);
    count_ += rows;
  }

  device_buffer<T> state_;
  device_buffer<int> nonfinite_;
  device_buffer<T> converted_;                      // conversion scratch of the device `add`
  std::unique_ptr<host_staging_area> own_staging_;  // staging of the host `add` without an area
};

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
