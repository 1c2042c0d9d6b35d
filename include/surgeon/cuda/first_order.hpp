/// @file cuda/first_order.hpp
/// @brief `cuda::low_rank_adapter`: one matrix's masked low-rank correction (first_order.hpp) on
/// the device — its gradients from a layer's inputs and output gradients, Adam, and `absorb`. The
/// mirror of cpu/first_order.hpp: same formulas, same results up to rounding, same exceptions.
///
/// The factors, their gradients, Adam's moments, the mask and the factors absorbed last live in
/// device memory; inputs, output gradients and weights come from (and go back to) the host, as the
/// driver (driver/session.hpp, `correct`) keeps them there. Products are cuBLAS SGEMMs on the
/// context's stream, Adam is one element-wise kernel.
///
/// nvcc translation units only; no Eigen. Defined only when `SURGEON_HAS_CUDA` is defined.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/detail/first_order_kernels.cuh>
#include <surgeon/cuda/mask.hpp>
#include <surgeon/error.hpp>
#include <surgeon/first_order.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace surgeon::cuda {

namespace detail {

/// `C = alpha · op(A) · op(B) + beta · C` on row-major float matrices (C `[m, n]`, op(A) `[m, k]`,
/// op(B) `[k, n]`, leading dimensions as stored): the column-major product `Cᵀ = op(B)ᵀ op(A)ᵀ`.
inline void row_major_sgemm(context& ctx, bool transpose_a, bool transpose_b, index_t m, index_t n, index_t k,
                            float alpha, const float* a, index_t lda, const float* b, index_t ldb, float beta,
                            float* c, index_t ldc) {
  if (m == 0 || n == 0) return;
  SURGEON_CUBLAS_CHECK(cublasSgemm_64(ctx.cublas(), transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                      transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a,
                                      lda, &beta, c, ldc));
}

/// The host matrix `x` packed (leading dimension `cols`) into a new device buffer on `ctx`'s
/// stream; waits for the copy, so `x` may change on return.
inline device_buffer<float> upload_packed(context& ctx, host_matrix_view<const float> x) {
  device_buffer<float> buffer(ctx, x.rows() * x.cols());
  if (x.size() > 0) {
    SURGEON_CUDA_CHECK(cudaMemcpy2DAsync(
        buffer.data(), static_cast<std::size_t>(x.cols()) * sizeof(float), x.data(),
        static_cast<std::size_t>(x.ld()) * sizeof(float), static_cast<std::size_t>(x.cols()) * sizeof(float),
        static_cast<std::size_t>(x.rows()), cudaMemcpyHostToDevice, ctx.stream()));
  }
  ctx.synchronize();
  return buffer;
}

}  // namespace detail

/// @brief The masked low-rank adapter `ΔW = M ⊙ (B·A)` of one weight matrix `[rows, cols]` (see
/// first_order.hpp for the gradients), in float on the device: the mask (uploaded once), B
/// `[rows, r]`, A `[r, cols]`, their gradients, Adam's two moments and the factors absorbed last,
/// 10·r·(rows + cols) floats and rows·cols bits of device memory in all. As `cpu::low_rank_adapter`.
///
/// Use: `accumulate` every batch of a step, `adam_step`, then `absorb` into the host weights.
/// `absorb` keeps track of what it wrote: after each call the weights hold `W₀ + M ⊙ (B·A)`, W₀
/// being the weights before the first call.
///
/// Everything runs on the context's stream, which must outlive the adapter; calls that read host
/// memory or return host data wait for it. Movable, not copyable.
class low_rank_adapter {
 public:
  /// @brief A fresh adapter of the matrix whose pruned weights `pruned` marks (`mask::of_zeros`
  /// of the pruned weights, say): B = 0, A = `initial_adapter_a(rank, cols, seed)`, on `ctx`.
  /// Cost: O(r·(rows + cols) + rows·cols / 64) host work and one upload.
  /// @throws logic_error when a dimension or the rank is < 1; cuda_error.
  low_rank_adapter(context& ctx, mask pruned, int rank, std::uint64_t seed)
      : low_rank_adapter(ctx, pruned, std::vector<float>(zero_b_size(pruned, rank), 0.0f),
                         initial_adapter_a(rank, pruned.cols(), seed), rank) {}

  /// @brief An adapter with the given factors, row-major host B `[rows, r]` and A `[r, cols]`
  /// (gradients and Adam's moments at zero, nothing absorbed yet), on `ctx`.
  /// Cost: O(r·(rows + cols) + rows·cols / 64) uploaded.
  /// @throws logic_error when the sizes do not match the mask and the rank, or a dimension or the
  ///         rank is < 1; cuda_error.
  low_rank_adapter(context& ctx, mask pruned, std::vector<float> b, std::vector<float> a, int rank)
      : ctx_(&ctx), pruned_(std::move(pruned)), rank_(rank) {
    SURGEON_EXPECTS(rank >= 1 && pruned_.rows() >= 1 && pruned_.cols() >= 1 &&
                        static_cast<index_t>(b.size()) == pruned_.rows() * rank &&
                        static_cast<index_t>(a.size()) == rank * pruned_.cols(),
                    "low_rank_adapter: {} values of B and {} of A for rank {} and a [{}, {}] mask", b.size(),
                    a.size(), rank, pruned_.rows(), pruned_.cols());
    const index_t n = parameter_count();
    parameters_ = device_buffer<float>(ctx, n);
    parameters_.copy_from_host(b.data(), static_cast<index_t>(b.size()));
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(parameters_.data() + b_size(), a.data(), a.size() * sizeof(float),
                                       cudaMemcpyHostToDevice, ctx.stream()));
    gradients_ = device_buffer<float>(ctx, n);
    first_moments_ = device_buffer<float>(ctx, n);
    second_moments_ = device_buffer<float>(ctx, n);
    gradients_.fill_zero();
    first_moments_.fill_zero();
    second_moments_.fill_zero();
    device_pruned_ = device_mask::from_host(ctx, pruned_);  // waits: the host factors may go
  }

  index_t rows() const noexcept { return pruned_.rows(); }  ///< rows of the weight matrix
  index_t cols() const noexcept { return pruned_.cols(); }  ///< columns of the weight matrix
  index_t rank() const noexcept { return rank_; }           ///< r
  int steps() const noexcept { return steps_; }             ///< Adam steps taken
  const mask& pruned() const noexcept { return pruned_; }   ///< the weights the adapter leaves alone

  /// @brief B `[rows, r]`, row-major, copied to the host (waits for the stream). O(r·rows).
  /// @throws cuda_error.
  std::vector<float> b() const { return download(parameters_, 0, b_size()); }
  /// @brief A `[r, cols]`, row-major, copied to the host (waits for the stream). O(r·cols).
  /// @throws cuda_error.
  std::vector<float> a() const { return download(parameters_, b_size(), a_size()); }
  /// @brief ∂L/∂B `[rows, r]` accumulated since the last step, row-major, copied to the host
  /// (waits for the stream). O(r·rows). @throws cuda_error.
  std::vector<float> gradient_b() const { return download(gradients_, 0, b_size()); }
  /// @brief ∂L/∂A `[r, cols]` accumulated since the last step, row-major, copied to the host
  /// (waits for the stream). O(r·cols). @throws cuda_error.
  std::vector<float> gradient_a() const { return download(gradients_, b_size(), a_size()); }

  /// @brief Adds the gradients of one batch: the layer's input `x` `[tokens, cols]` and the
  /// gradient at its output `gy` `[tokens, rows]` (host, any leading dimension; of the loss being
  /// minimised), restricted to the weights the mask keeps. Uploads both (and waits for that), then
  /// enqueues E = M ⊙ (Gyᵀ X), ∂L/∂B += E Aᵀ and ∂L/∂A += Bᵀ E. Cost: 2·tokens·rows·cols flops
  /// plus 4·r·rows·cols on the device; device memory: `[rows, cols]` floats for E and the batch.
  /// @throws logic_error on shapes that do not match the adapter; cuda_error.
  void accumulate(host_matrix_view<const float> x, host_matrix_view<const float> gy) {
    SURGEON_EXPECTS(x.cols() == cols() && gy.cols() == rows() && x.rows() == gy.rows(),
                    "low_rank_adapter::accumulate: input [{}, {}] and output gradient [{}, {}] for a "
                    "[{}, {}] matrix",
                    x.rows(), x.cols(), gy.rows(), gy.cols(), rows(), cols());
    const index_t tokens = x.rows();
    if (tokens == 0) return;
    context& ctx = *ctx_;
    const device_buffer<float> input = detail::upload_packed(ctx, x);
    const device_buffer<float> grad = detail::upload_packed(ctx, gy);
    device_buffer<float> e(ctx, rows() * cols());
    // E [rows, cols] = Gyᵀ X, then the pruned entries zeroed.
    detail::row_major_sgemm(ctx, true, false, rows(), cols(), tokens, 1.0f, grad.data(), rows(), input.data(),
                            cols(), 0.0f, e.data(), cols());
    device_pruned_.apply(ctx, e.view(rows(), cols()));
    const float* b_factor = parameters_.data();
    const float* a_factor = parameters_.data() + b_size();
    // ∂L/∂B [rows, r] += E Aᵀ;  ∂L/∂A [r, cols] += Bᵀ E.
    detail::row_major_sgemm(ctx, false, true, rows(), rank(), cols(), 1.0f, e.data(), cols(), a_factor,
                            cols(), 1.0f, gradients_.data(), rank());
    detail::row_major_sgemm(ctx, true, false, rank(), cols(), rows(), 1.0f, b_factor, rank(), e.data(),
                            cols(), 1.0f, gradients_.data() + b_size(), cols());
  }

  /// @brief Enqueues setting the accumulated gradients to zero. O(r·(rows + cols)).
  /// @throws cuda_error.
  void zero_gradients() { gradients_.fill_zero(); }

  /// @brief Enqueues one Adam step on B and A from the accumulated gradients (bias-corrected
  /// moments, as `cpu::low_rank_adapter::adam_step`), which it then zeroes: one element-wise
  /// kernel. O(r·(rows + cols)).
  /// @throws logic_error on invalid options (see `validate`); cuda_error.
  void adam_step(const first_order_options& options) {
    validate(options);
    ++steps_;
    const double correction1 = 1.0 - std::pow(options.beta1, steps_);
    const double correction2 = 1.0 - std::pow(options.beta2, steps_);
    detail::launch_adam(
        parameters_.data(), gradients_.data(), first_moments_.data(), second_moments_.data(),
        parameter_count(), static_cast<float>(options.beta1), static_cast<float>(options.beta2),
        static_cast<float>(options.learning_rate / correction1), static_cast<float>(std::sqrt(correction2)),
        static_cast<float>(options.epsilon), ctx_->stream());
  }

  /// @brief Makes the host weights `w` `[rows, cols]` (any leading dimension) hold
  /// `W₀ + M ⊙ (B·A)`: computes `B·A − (the product absorbed last)` on the device, downloads it
  /// and adds its kept entries, leaving every weight the mask marks untouched (pruned weights stay
  /// exactly zero). Cost: 4·r·rows·cols flops on the device, one `[rows, cols]` float download
  /// and temporary (device and host); waits for the stream.
  /// @throws logic_error on shapes that do not match the adapter; cuda_error.
  void absorb(host_matrix_view<float> w) {
    SURGEON_EXPECTS(w.rows() == rows() && w.cols() == cols(),
                    "low_rank_adapter::absorb: weights [{}, {}] for a [{}, {}] adapter", w.rows(), w.cols(),
                    rows(), cols());
    context& ctx = *ctx_;
    device_buffer<float> delta(ctx, rows() * cols());
    // delta [rows, cols] = B A (− B_abs A_abs).
    detail::row_major_sgemm(ctx, false, false, rows(), cols(), rank(), 1.0f, parameters_.data(), rank(),
                            parameters_.data() + b_size(), cols(), 0.0f, delta.data(), cols());
    if (!absorbed_.empty()) {
      detail::row_major_sgemm(ctx, false, false, rows(), cols(), rank(), -1.0f, absorbed_.data(), rank(),
                              absorbed_.data() + b_size(), cols(), 1.0f, delta.data(), cols());
    } else {
      absorbed_ = device_buffer<float>(ctx, parameter_count());
    }
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(absorbed_.data(), parameters_.data(), parameters_.size_bytes(),
                                       cudaMemcpyDeviceToDevice, ctx.stream()));
    const std::vector<float> host = delta.to_host();
    for (index_t i = 0; i < rows(); ++i) {
      float* row = w.row(i);
      const float* change = host.data() + i * cols();
      for (index_t j = 0; j < cols(); ++j) {
        if (!pruned_.pruned(i, j)) row[j] += change[j];
      }
    }
  }

 private:
  static std::size_t zero_b_size(const mask& pruned, int rank) {
    SURGEON_EXPECTS(rank >= 1 && pruned.rows() >= 1 && pruned.cols() >= 1,
                    "first_order: adapter of rank {} for a [{}, {}] mask", rank, pruned.rows(),
                    pruned.cols());
    return static_cast<std::size_t>(pruned.rows() * rank);
  }

  index_t b_size() const noexcept { return rows() * rank_; }
  index_t a_size() const noexcept { return rank_ * cols(); }
  index_t parameter_count() const noexcept { return b_size() + a_size(); }

  // `count` elements of `buffer` from `offset`, on the host (waits).
  std::vector<float> download(const device_buffer<float>& buffer, index_t offset, index_t count) const {
    std::vector<float> values(static_cast<std::size_t>(count));
    if (count > 0) {
      SURGEON_CUDA_CHECK(cudaMemcpyAsync(values.data(), buffer.data() + offset,
                                         static_cast<std::size_t>(count) * sizeof(float),
                                         cudaMemcpyDeviceToHost, ctx_->stream()));
    }
    ctx_->synchronize();
    return values;
  }

  context* ctx_;
  mask pruned_;  // host copy: `pruned()` and the host side of `absorb`
  device_mask device_pruned_;
  int rank_ = 0;
  int steps_ = 0;
  // B then A, packed: parameters, gradients, Adam's moments, and the factors absorbed last (empty
  // before the first `absorb`), so that Adam is one launch and every copy one call.
  device_buffer<float> parameters_;
  device_buffer<float> gradients_;
  device_buffer<float> first_moments_;
  device_buffer<float> second_moments_;
  device_buffer<float> absorbed_;
};

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
