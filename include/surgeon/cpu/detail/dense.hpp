/// @file cpu/detail/dense.hpp
/// @brief The CPU backend's dense kernels: one switch point between OpenBLAS/LAPACKE and Eigen.
///
/// Everything above this file is written once; `SURGEON_USE_OPENBLAS` selects CBLAS/LAPACKE calls
/// here, otherwise Eigen's own kernels. Matrices are Eigen column-major (symmetric matrices do not
/// care, and LAPACK wants column-major).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>

#include <Eigen/Dense>

#include <type_traits>

#if defined(SURGEON_USE_OPENBLAS)
#include <cblas.h>
#include <lapacke.h>
#endif

namespace surgeon::cpu::detail {

using dense_matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using dense_vector = Eigen::Matrix<double, Eigen::Dynamic, 1>;

/// Symmetric rank-k update of the lower triangle of the column-major `n x n` matrix `c` (column
/// stride `ldc`): `c = alpha * a aᵀ + beta * c`, where `a` is `n x k` column-major with column
/// stride `lda` (equivalently a row-major `[k, n]` block with leading dimension `lda`: one token
/// per row). Only the lower triangle of `c` is read and written. Cost: k·n² flops (half a GEMM).
template <typename T>
void syrk_lower(index_t n, index_t k, T alpha, const T* a, index_t lda, T beta, T* c, index_t ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "syrk_lower: float or double");
  if (n == 0) return;
#if defined(SURGEON_USE_OPENBLAS)
  const auto bn = static_cast<blasint>(n);
  const auto bk = static_cast<blasint>(k);
  const auto blda = static_cast<blasint>(k == 0 ? n : lda);
  const auto bldc = static_cast<blasint>(ldc);
  if constexpr (std::is_same_v<T, float>) {
    cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, bn, bk, alpha, a, blda, beta, c, bldc);
  } else {
    cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, bn, bk, alpha, a, blda, beta, c, bldc);
  }
#else
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  Eigen::Map<matrix, 0, Eigen::OuterStride<>> result(c, n, n, Eigen::OuterStride<>(ldc));
  if (beta != T(1)) result.template triangularView<Eigen::Lower>() *= beta;
  if (k == 0) return;
  Eigen::Map<const matrix, 0, Eigen::OuterStride<>> factor(a, n, k, Eigen::OuterStride<>(lda));
  result.template selfadjointView<Eigen::Lower>().rankUpdate(factor, alpha);
#endif
}

/// In-place Cholesky factorisation of the lower triangle of `m` (n x n). Returns false when `m` is
/// not numerically positive definite. Cost: n³/3 flops.
inline bool cholesky_lower_in_place(dense_matrix& m) {
  const index_t n = m.rows();
  if (n == 0) return true;
#if defined(SURGEON_USE_OPENBLAS)
  const lapack_int info =
      LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', static_cast<lapack_int>(n), m.data(), static_cast<lapack_int>(n));
  SURGEON_EXPECTS(info >= 0, "LAPACKE_dpotrf: argument {} is invalid", -info);
  return info == 0;
#else
  Eigen::LLT<Eigen::Ref<dense_matrix>> llt(m);
  return llt.info() == Eigen::Success;
#endif
}

/// Inverse of a symmetric positive definite matrix from its lower Cholesky factor (as left in `l`
/// by `cholesky_lower_in_place`); the full symmetric inverse replaces `l`. Cost: 2n³/3 flops.
inline void inverse_from_cholesky_in_place(dense_matrix& l) {
  const index_t n = l.rows();
  if (n == 0) return;
#if defined(SURGEON_USE_OPENBLAS)
  const lapack_int info =
      LAPACKE_dpotri(LAPACK_COL_MAJOR, 'L', static_cast<lapack_int>(n), l.data(), static_cast<lapack_int>(n));
  SURGEON_EXPECTS(info >= 0, "LAPACKE_dpotri: argument {} is invalid", -info);
  if (info > 0) SURGEON_THROW(numerical_error, "LAPACKE_dpotri: the Cholesky factor is singular at {}", info);
  l.template triangularView<Eigen::StrictlyUpper>() = l.transpose();
#else
  // inv(L Lᵀ) = L⁻ᵀ L⁻¹: invert the triangle once, then one triangular product.
  dense_matrix inverse_l = dense_matrix::Identity(n, n);
  l.template triangularView<Eigen::Lower>().solveInPlace(inverse_l);
  dense_matrix result(n, n);
  result.setZero();
  result.template selfadjointView<Eigen::Lower>().rankUpdate(
      inverse_l.template triangularView<Eigen::Lower>().transpose().toDenseMatrix(), 1.0);
  l = result.template selfadjointView<Eigen::Lower>();
#endif
}

/// Eigendecomposition of the symmetric `m` (lower triangle read): ascending `values`, orthonormal
/// eigenvectors in the columns of `vectors`. Cost: about 9n³ flops (divide and conquer).
/// @throws numerical_error if the solver does not converge.
inline void symmetric_eigen(const dense_matrix& m, dense_vector& values, dense_matrix& vectors) {
  const index_t n = m.rows();
  values.resize(n);
  if (n == 0) {
    vectors.resize(0, 0);
    return;
  }
#if defined(SURGEON_USE_OPENBLAS)
  vectors = m;
  const lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', static_cast<lapack_int>(n),
                                         vectors.data(), static_cast<lapack_int>(n), values.data());
  SURGEON_EXPECTS(info >= 0, "LAPACKE_dsyevd: argument {} is invalid", -info);
  if (info > 0)
    SURGEON_THROW(numerical_error, "LAPACKE_dsyevd did not converge ({} off-diagonal elements)", info);
#else
  Eigen::SelfAdjointEigenSolver<dense_matrix> solver(m, Eigen::ComputeEigenvectors);
  if (solver.info() != Eigen::Success) {
    SURGEON_THROW(numerical_error, "Eigen::SelfAdjointEigenSolver did not converge on a {}x{} matrix", n, n);
  }
  values = solver.eigenvalues();
  vectors = solver.eigenvectors();
#endif
}

}  // namespace surgeon::cpu::detail
