/// @file cuda/detail/whole_mask.hpp
/// @brief The solvers of the whole-mask OBS update on the GPU (`cuda::obs_update_full`): the
/// mirror of cpu/detail/whole_mask.hpp, same iterations, same stopping rules, same results up to
/// rounding. Internal; nvcc only, no Eigen.
///
/// Layouts: the live sub-layer and every work matrix are packed column-major double `[r, c]`
/// (cuda/detail/layer_kernels.cuh); the curvature's factors are packed symmetric `[n, n]`.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/cost.hpp>
#include <surgeon/cuda/curvature.hpp>
#include <surgeon/cuda/detail/layer_kernels.cuh>
#include <surgeon/cuda/detail/whole_mask_kernels.cuh>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/update.hpp>

#include <cublas_v2.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace surgeon::cuda::detail {

/// `result = mask ∘ (left · x · right)` on the device (no mask when `mask` is null): two GEMMs, SGEMMs on
/// float copies when `single` (the conversions are elementwise kernels), DGEMMs otherwise. `left` [r, r],
/// `right` [c, c], x and result [r, c].
class device_sandwich {
 public:
  device_sandwich(context& ctx, const double* left, const double* right, index_t r, index_t c, bool single)
      : ctx_(ctx), left_(left), right_(right), r_(r), c_(c), single_(single), temp_(ctx, r * c) {
    if (single_) {
      left_f_ = device_buffer<float>(ctx, r * r);
      right_f_ = device_buffer<float>(ctx, c * c);
      x_f_ = device_buffer<float>(ctx, r * c);
      temp_f_ = device_buffer<float>(ctx, r * c);
      launch_convert(left, left_f_.data(), r * r, ctx.stream());
      launch_convert(right, right_f_.data(), c * c, ctx.stream());
    }
  }

  void apply(const double* x, const double* mask, double* result) {
    cudaStream_t stream = ctx_.stream();
    if (single_) {
      const float one = 1.0f;
      const float zero = 0.0f;
      launch_convert(x, x_f_.data(), r_ * c_, stream);
      SURGEON_CUBLAS_CHECK(cublasSgemm_64(ctx_.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, r_, c_, r_, &one,
                                          left_f_.data(), r_, x_f_.data(), r_, &zero, temp_f_.data(), r_));
      SURGEON_CUBLAS_CHECK(cublasSgemm_64(ctx_.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, r_, c_, c_, &one,
                                          temp_f_.data(), r_, right_f_.data(), c_, &zero, x_f_.data(), r_));
      launch_convert(x_f_.data(), result, r_ * c_, stream);
    } else {
      gemm(ctx_, CUBLAS_OP_N, CUBLAS_OP_N, r_, c_, r_, 1.0, left_, r_, x, r_, 0.0, temp_.data(), r_);
      gemm(ctx_, CUBLAS_OP_N, CUBLAS_OP_N, r_, c_, c_, 1.0, temp_.data(), r_, right_, c_, 0.0, result, r_);
    }
    if (mask != nullptr) launch_multiply(result, mask, result, r_ * c_, stream);
  }

 private:
  context& ctx_;
  const double* left_;
  const double* right_;
  index_t r_, c_;
  bool single_;
  device_buffer<double> temp_;
  device_buffer<float> left_f_, right_f_, x_f_, temp_f_;
};

/// ⟨x, y⟩ over `count` entries (one host round trip).
inline double device_dot(context& ctx, const double* x, const double* y, index_t count) {
  double value = 0.0;
  SURGEON_CUBLAS_CHECK(cublasDdot_64(ctx.cublas(), count, x, 1, y, 1, &value));
  return value;
}

/// The sweep preconditioner of `pcg_form::removed_sweep` (see cpu/detail/whole_mask.hpp): columns
/// permuted by how many rows remove them (counted on the host from the mask), the lower Cholesky
/// factor L of the permuted Â⁻¹ by cuSOLVER (U = Lᵀ), and two triangular sweeps over all rows per
/// application: blocks of 128 columns, the columns before (or after) a block folded in by one
/// DGEMM, the block itself by a kernel with one thread per row.
class device_removed_sweep {
 public:
  /// @param removed_count how many rows remove each live column (host, c entries).
  /// @throws numerical_error if the permuted Â⁻¹ is not numerically positive definite.
  device_removed_sweep(context& ctx, const char* who, const kronecker_curvature& curv, const double* keep,
                       const std::vector<index_t>& removed_count)
      : ctx_(ctx),
        r_(curv.g.order()),
        c_(curv.a.order()),
        l_(ctx, c_ * c_),
        removed_(ctx, r_ * c_),
        g_(ctx, r_),
        y_(ctx, r_ * c_) {
    std::vector<index_t> order(static_cast<std::size_t>(c_));
    for (index_t j = 0; j < c_; ++j) order[static_cast<std::size_t>(j)] = j;
    std::stable_sort(order.begin(), order.end(), [&](index_t x, index_t y) {
      return removed_count[static_cast<std::size_t>(x)] > removed_count[static_cast<std::size_t>(y)];
    });
    order_ = upload_indices(ctx, order);
    cudaStream_t stream = ctx.stream();
    launch_gather_square(curv.a.inverse().data(), c_, order_.data(), c_, l_.data(), stream);
    const int n = to_int(c_, "obs_update_full", "input factor order");
    int lwork = 0;
    SURGEON_CUSOLVER_CHECK(
        cusolverDnDpotrf_bufferSize(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n, l_.data(), n, &lwork));
    device_buffer<double> work(ctx, std::max(lwork, 1));
    device_buffer<int> info(ctx, 1);
    SURGEON_CUSOLVER_CHECK(cusolverDnDpotrf(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n, l_.data(), n,
                                            work.data(), lwork, info.data()));
    if (fetch_cusolver_info(info.data(), stream, "cusolverDnDpotrf") != 0) {
      SURGEON_THROW(numerical_error, "{}: the damped inverse input factor is not positive definite", who);
    }
    launch_permute_columns(keep, r_, c_, order_.data(), true, removed_.data(), stream);
    launch_diagonal(curv.g.inverse().data(), r_, r_, g_.data(), stream);
  }

  /// z = B⁻¹ r (device [r, c], live column order, zero outside Q).
  void apply(const double* residual, double* z) {
    cudaStream_t stream = ctx_.stream();
    double* y = y_.data();
    const double* l = l_.data();
    launch_permute_columns(residual, r_, c_, order_.data(), false, y, stream);
    for (index_t j0 = 0; j0 < c_; j0 += block) {
      const index_t j1 = std::min(c_, j0 + block);
      if (j0 > 0) {  // y[:, j0:j1] −= y[:, :j0] · U(:j0, j0:j1), U(:j0, j0:j1) = L(j0:j1, :j0)ᵀ
        gemm(ctx_, CUBLAS_OP_N, CUBLAS_OP_T, r_, j1 - j0, j0, -1.0, y, r_, l + j0, c_, 1.0, y + j0 * r_, r_);
      }
      launch_sweep_forward(y, r_, l, c_, removed_.data(), j0, j1, stream);
    }
    for (index_t j1 = c_; j1 > 0;) {
      const index_t j0 = std::max<index_t>(0, j1 - block);
      if (j1 < c_) {  // y[:, j0:j1] −= y[:, j1:] · U(j0:j1, j1:)ᵀ, U(j0:j1, j1:)ᵀ = L(j1:, j0:j1)
        gemm(ctx_, CUBLAS_OP_N, CUBLAS_OP_N, r_, j1 - j0, c_ - j1, -1.0, y + j1 * r_, r_, l + j0 * c_ + j1,
             c_, 1.0, y + j0 * r_, r_);
      }
      launch_sweep_backward(y, r_, l, c_, removed_.data(), j0, j1, stream);
      j1 = j0;
    }
    launch_unpermute_scale(y, r_, c_, order_.data(), g_.data(), z, stream);
  }

  static constexpr index_t block = 128;

 private:
  context& ctx_;
  index_t r_, c_;
  device_buffer<index_t> order_;
  device_buffer<double> l_;        // lower Cholesky factor of the permuted Â⁻¹
  device_buffer<double> removed_;  // indicator of Q, permuted columns
  device_buffer<double> g_;        // [Ĝ⁻¹]_ii
  device_buffer<double> y_;        // work space
};

/// The dual conjugate gradients of `pcg_form::removed_sweep` (cpu/detail/whole_mask.hpp
/// `removed_pcg`): `live` updated in place, Q exactly 0.
inline void removed_pcg(context& ctx, const char* who, const kronecker_curvature& curv, double* live,
                        const double* keep, const std::vector<index_t>& removed_count,
                        const pcg_options& options, update_report& report) {
  const index_t r = curv.g.order();
  const index_t c = curv.a.order();
  const index_t count = r * c;
  cudaStream_t stream = ctx.stream();
  cublasHandle_t blas = ctx.cublas();
  device_buffer<double> removed(ctx, count);
  launch_complement(keep, removed.data(), count, stream);
  device_buffer<double> residual(ctx, count);
  launch_masked_part(live, keep, residual.data(), count, stream);  // b = W_Q
  const double b_norm = std::sqrt(device_dot(ctx, residual.data(), residual.data(), count));
  if (!(b_norm > 0.0)) return;
  device_removed_sweep sweep(ctx, who, curv, keep, removed_count);
  device_sandwich dual(ctx, curv.g.inverse().data(), curv.a.inverse().data(), r, c, options.float_products);
  device_buffer<double> x(ctx, count);
  x.fill_zero();
  device_buffer<double> z(ctx, count);
  device_buffer<double> mp(ctx, count);
  device_buffer<double> direction(ctx, count);
  sweep.apply(residual.data(), z.data());
  SURGEON_CUDA_CHECK(
      cudaMemcpyAsync(direction.data(), z.data(), z.size_bytes(), cudaMemcpyDeviceToDevice, stream));
  double rz = device_dot(ctx, residual.data(), z.data(), count);
  double relative = 1.0;
  for (int iteration = 1; iteration <= options.max_iterations && relative > options.tolerance; ++iteration) {
    dual.apply(direction.data(), removed.data(), mp.data());
    const double curvature = device_dot(ctx, direction.data(), mp.data(), count);
    if (!(curvature > 0.0)) break;  // converged to rounding: no descent direction is left
    const double alpha = rz / curvature;
    const double minus_alpha = -alpha;
    SURGEON_CUBLAS_CHECK(cublasDaxpy_64(blas, count, &alpha, direction.data(), 1, x.data(), 1));
    SURGEON_CUBLAS_CHECK(cublasDaxpy_64(blas, count, &minus_alpha, mp.data(), 1, residual.data(), 1));
    report.loss += 0.5 * alpha * rz;
    report.iterations = iteration;
    relative = std::sqrt(device_dot(ctx, residual.data(), residual.data(), count)) / b_norm;
    if (!std::isfinite(relative)) {
      SURGEON_THROW(numerical_error, "{}: conjugate gradients diverged at iteration {}", who, iteration);
    }
    if (relative <= options.tolerance) break;
    sweep.apply(residual.data(), z.data());
    const double rz_next = device_dot(ctx, residual.data(), z.data(), count);
    launch_direction(z.data(), rz_next / rz, direction.data(), count, stream);
    rz = rz_next;
  }
  report.relative_residual = relative;
  device_sandwich primal(ctx, curv.g.inverse().data(), curv.a.inverse().data(), r, c, false);
  primal.apply(x.data(), keep, mp.data());  // the update on K
  launch_multiply(live, keep, live, count, stream);
  const double minus_one = -1.0;
  SURGEON_CUBLAS_CHECK(cublasDaxpy_64(blas, count, &minus_one, mp.data(), 1, live, 1));
}

/// The whole-mask update of `live` for the kept-entry indicator `keep` by `options.form`.
/// `removed_count[q]`: the rows that remove live column q (host).
inline void whole_mask_update(context& ctx, const char* who, const kronecker_curvature& curv, double* live,
                              const double* keep, const std::vector<index_t>& removed_count,
                              const pcg_options& options, update_report& report);

/// The kept-weight conjugate gradients of `pcg_form::kept_kronecker` (cpu/detail/whole_mask.hpp
/// `kept_pcg`): `live` updated in place, Q exactly 0.
inline void kept_pcg(context& ctx, const char* who, const kronecker_curvature& curv, double* live,
                     const double* keep, const pcg_options& options, update_report& report) {
  const index_t r = curv.g.order();
  const index_t c = curv.a.order();
  const index_t count = r * c;
  cudaStream_t stream = ctx.stream();
  cublasHandle_t blas = ctx.cublas();
  device_sandwich fisher(ctx, curv.g.damped().data(), curv.a.damped().data(), r, c, options.float_products);
  device_sandwich inverse(ctx, curv.g.inverse().data(), curv.a.inverse().data(), r, c,
                          options.float_products);
  device_buffer<double> w_q(ctx, count);  // −Δ₀ = W on Q
  launch_masked_part(live, keep, w_q.data(), count, stream);
  device_buffer<double> residual(ctx, count);
  fisher.apply(w_q.data(), nullptr, residual.data());  // Ĝ W_Q Â
  // The loss of Δ₀ + U: ½⟨W_Q, Ĝ W_Q Â⟩, lowered by each step.
  double loss = 0.5 * device_dot(ctx, w_q.data(), residual.data(), count);
  launch_multiply(residual.data(), keep, residual.data(), count, stream);  // b = P_K(Ĝ W_Q Â)
  const double b_norm = std::sqrt(device_dot(ctx, residual.data(), residual.data(), count));
  device_buffer<double> u(ctx, count);
  u.fill_zero();
  if (b_norm > 0.0) {
    device_buffer<double> z(ctx, count);
    device_buffer<double> product(ctx, count);
    device_buffer<double> direction(ctx, count);
    inverse.apply(residual.data(), keep, z.data());
    SURGEON_CUDA_CHECK(
        cudaMemcpyAsync(direction.data(), z.data(), z.size_bytes(), cudaMemcpyDeviceToDevice, stream));
    double rz = device_dot(ctx, residual.data(), z.data(), count);
    double relative = 1.0;
    for (int iteration = 1; iteration <= options.max_iterations; ++iteration) {
      fisher.apply(direction.data(), keep, product.data());
      const double curvature = device_dot(ctx, direction.data(), product.data(), count);
      if (!(curvature > 0.0)) break;  // converged to rounding: no descent direction is left
      const double alpha = rz / curvature;
      const double minus_alpha = -alpha;
      SURGEON_CUBLAS_CHECK(cublasDaxpy_64(blas, count, &alpha, direction.data(), 1, u.data(), 1));
      SURGEON_CUBLAS_CHECK(cublasDaxpy_64(blas, count, &minus_alpha, product.data(), 1, residual.data(), 1));
      loss -= 0.5 * alpha * rz;
      report.iterations = iteration;
      relative = std::sqrt(device_dot(ctx, residual.data(), residual.data(), count)) / b_norm;
      if (!std::isfinite(relative)) {
        SURGEON_THROW(numerical_error, "{}: conjugate gradients diverged at iteration {}", who, iteration);
      }
      if (relative <= options.tolerance) break;
      inverse.apply(residual.data(), keep, z.data());
      const double rz_next = device_dot(ctx, residual.data(), z.data(), count);
      launch_direction(z.data(), rz_next / rz, direction.data(), count, stream);
      rz = rz_next;
    }
    report.relative_residual = relative;
  }
  report.loss = loss;
  launch_finish_pcg(live, u.data(), keep, count, stream);  // W + Δ₀ + U; Q exactly 0
}

inline void whole_mask_update(context& ctx, const char* who, const kronecker_curvature& curv, double* live,
                              const double* keep, const std::vector<index_t>& removed_count,
                              const pcg_options& options, update_report& report) {
  switch (options.form) {
    case pcg_form::kept_kronecker:
      kept_pcg(ctx, who, curv, live, keep, options, report);
      return;
    case pcg_form::removed_sweep:
      removed_pcg(ctx, who, curv, live, keep, removed_count, options, report);
      return;
  }
  SURGEON_THROW(logic_error, "{}: unknown pcg_form {}", who, static_cast<int>(options.form));
}

}  // namespace surgeon::cuda::detail

#endif  // SURGEON_HAS_CUDA
