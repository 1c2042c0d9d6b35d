/// @file cuda/detail/solver.hpp
/// @brief The CUDA backend's one home for cuSOLVER's dense Cholesky routines and for the 32-bit
/// limits of the legacy cuBLAS/cuSOLVER interfaces: `int` narrowing with the caller's name in the
/// message, and a workspace that factors (potrf) and inverts (potri) one n×n lower triangle at a
/// time. Every call runs on the context's stream; `factor` and `invert` wait for cuSOLVER's status.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/error.hpp>

#include <cusolverDn.h>

#include <algorithm>
#include <limits>

namespace surgeon::cuda::detail {

/// `value` as the `int` a cuBLAS/cuSOLVER argument takes.
/// @throws logic_error "`who`: `what` `value` does not fit a cuBLAS/cuSOLVER int".
inline int to_int(index_t value, const char* who, const char* what) {
  SURGEON_EXPECTS(value >= 0 && value <= std::numeric_limits<int>::max(),
                  "{}: {} {} does not fit a cuBLAS/cuSOLVER int", who, what, value);
  return static_cast<int>(value);
}

/// The order of a square matrix for a 32-bit (legacy) cuSOLVER routine whose int arithmetic (the
/// workspace size, the n² offsets) holds up to `largest` (46340 for potrf/potri: n² < 2³¹).
/// @throws logic_error when `n` exceeds it.
inline int to_square_int(index_t n, index_t largest, const char* who) {
  SURGEON_EXPECTS(n <= largest, "{}: order {} exceeds the 32-bit cuSOLVER limit of {}", who, n, largest);
  return to_int(n, who, "order");
}

/// The largest order `cholesky_workspace` takes.
inline constexpr index_t cholesky_largest_order = 46340;

/// Workspace and status of potrf/potri for n×n column-major double matrices (lower triangle), made
/// once for every attempt of a damping escalation. Storage: cuSOLVER's workspace and one int.
class cholesky_workspace {
 public:
  /// @throws logic_error if n exceeds `cholesky_largest_order`; cuda_error on a cuSOLVER failure.
  cholesky_workspace(context& ctx, index_t n, double* sample, const char* who)
      : ctx_(&ctx), n_(to_square_int(n, cholesky_largest_order, who)), who_(who), info_(ctx, 1) {
    int lwork_potrf = 0;
    int lwork_potri = 0;
    SURGEON_CUSOLVER_CHECK(
        cusolverDnDpotrf_bufferSize(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n_, sample, n_, &lwork_potrf));
    SURGEON_CUSOLVER_CHECK(
        cusolverDnDpotri_bufferSize(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n_, sample, n_, &lwork_potri));
    SURGEON_EXPECTS(lwork_potrf >= 0 && lwork_potri >= 0, "{}: negative cuSOLVER workspace", who);
    lwork_ = std::max({lwork_potrf, lwork_potri, 1});
    workspace_ = device_buffer<double>(ctx, lwork_);
  }

  /// Overwrites the lower triangle of `a` with its Cholesky factor L (`a = L Lᵀ`).
  /// @returns false when `a` is not positive definite (cuSOLVER's info > 0).
  bool factor(double* a) {
    SURGEON_CUSOLVER_CHECK(cusolverDnDpotrf(ctx_->cusolver(), CUBLAS_FILL_MODE_LOWER, n_, a, n_,
                                            workspace_.data(), lwork_, info_.data()));
    return fetch_cusolver_info(info_.data(), ctx_->stream(), "cusolverDnDpotrf") == 0;
  }

  /// Overwrites the lower triangle of `a`, holding L from `factor`, with that of `(L Lᵀ)⁻¹`.
  /// @throws numerical_error on a zero pivot.
  void invert(double* a) {
    SURGEON_CUSOLVER_CHECK(cusolverDnDpotri(ctx_->cusolver(), CUBLAS_FILL_MODE_LOWER, n_, a, n_,
                                            workspace_.data(), lwork_, info_.data()));
    const int singular = fetch_cusolver_info(info_.data(), ctx_->stream(), "cusolverDnDpotri");
    if (singular > 0) {
      SURGEON_THROW(numerical_error, "{}: potri found a zero pivot at {} of a {}x{} factor", who_, singular,
                    n_, n_);
    }
  }

 private:
  context* ctx_;
  int n_;
  const char* who_;
  int lwork_ = 1;
  device_buffer<double> workspace_;
  device_buffer<int> info_;
};

/// Solves `system · X = rhs` on `ctx`'s stream: `system` packed `[n, n]` symmetric (not modified),
/// `rhs` column-major `[n, k]` (ld n), overwritten by X. Cholesky first; LU with partial pivoting
/// when the Cholesky finds the system not positive definite. Waits for each routine's `info`.
/// Cost: n³/3 + 2n²k flops (Cholesky), 2n³/3 + 2n²k (LU); device memory n² doubles.
/// @throws logic_error if n > 46340 (n² would overflow the 32-bit solver API).
inline void solve_spd(context& ctx, const char* who, const double* system, index_t n, double* rhs,
                      index_t k) {
  if (n == 0 || k == 0) return;
  // The 32-bit cuSOLVER routines index the n x n factor with int: n² must stay below 2³¹.
  constexpr index_t largest = 46340;
  SURGEON_EXPECTS(n <= largest,
                  "{}: a system of {} entries exceeds the 32-bit cuSOLVER limit of {} (lower correlate::max, "
                  "or use the whole-mask PCG update)",
                  who, n, largest);
  const int ni = to_int(n, who, "system order");
  const int ki = to_int(k, who, "right-hand sides");
  cudaStream_t stream = ctx.stream();
  cusolverDnHandle_t solver = ctx.cusolver();
  device_buffer<double> factor(ctx, n * n);
  SURGEON_CUDA_CHECK(
      cudaMemcpyAsync(factor.data(), system, factor.size_bytes(), cudaMemcpyDeviceToDevice, stream));
  device_buffer<int> info(ctx, 1);
  int lwork = 0;
  SURGEON_CUSOLVER_CHECK(
      cusolverDnDpotrf_bufferSize(solver, CUBLAS_FILL_MODE_LOWER, ni, factor.data(), ni, &lwork));
  device_buffer<double> work(ctx, std::max(lwork, 1));
  SURGEON_CUSOLVER_CHECK(cusolverDnDpotrf(solver, CUBLAS_FILL_MODE_LOWER, ni, factor.data(), ni, work.data(),
                                          lwork, info.data()));
  if (fetch_cusolver_info(info.data(), stream, "cusolverDnDpotrf") == 0) {
    SURGEON_CUSOLVER_CHECK(
        cusolverDnDpotrs(solver, CUBLAS_FILL_MODE_LOWER, ni, ki, factor.data(), ni, rhs, ni, info.data()));
    fetch_cusolver_info(info.data(), stream, "cusolverDnDpotrs");
    return;
  }
  SURGEON_CUDA_CHECK(
      cudaMemcpyAsync(factor.data(), system, factor.size_bytes(), cudaMemcpyDeviceToDevice, stream));
  SURGEON_CUSOLVER_CHECK(cusolverDnDgetrf_bufferSize(solver, ni, ni, factor.data(), ni, &lwork));
  work = device_buffer<double>(ctx, std::max(lwork, 1));
  device_buffer<int> pivots(ctx, n);
  SURGEON_CUSOLVER_CHECK(
      cusolverDnDgetrf(solver, ni, ni, factor.data(), ni, work.data(), pivots.data(), info.data()));
  if (fetch_cusolver_info(info.data(), stream, "cusolverDnDgetrf") != 0) {
    SURGEON_THROW(numerical_error, "{}: the {}x{} OBS system could not be factorised", who, n, n);
  }
  SURGEON_CUSOLVER_CHECK(
      cusolverDnDgetrs(solver, CUBLAS_OP_N, ni, ki, factor.data(), ni, pivots.data(), rhs, ni, info.data()));
  fetch_cusolver_info(info.data(), stream, "cusolverDnDgetrs");
}

}  // namespace surgeon::cuda::detail

#endif  // SURGEON_HAS_CUDA
