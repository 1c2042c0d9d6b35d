/// @file obs_oracle.hpp
/// @brief Brute-force optimal brain surgeon on an explicit Fisher `F = G ⊗ A` (small layers only).
///
/// Vectorisation is row-major (METHOD.md §1): weight (i, j) of an `[R, C]` layer has flat index
/// `i·C + j`, and `F_{(i,j),(k,l)} = G_ik A_jl`. Everything in double; cost O((R·C)³).
#pragma once

#include <surgeon/config.hpp>

#include <Eigen/Dense>

#include <vector>

namespace surgeon::test {

using dense = Eigen::MatrixXd;
using dense_vector = Eigen::VectorXd;

/// A dense double copy of any `[rows, cols]` host matrix or view with element access `m(i, j)`.
template <typename Matrix>
dense to_dense(const Matrix& m) {
  dense result(m.rows(), m.cols());
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) result(i, j) = static_cast<double>(m(i, j));
  }
  return result;
}

/// `G ⊗ A` with row-major vectorisation: entry ((i, j), (k, l)) = G(i, k) · A(j, l).
inline dense kronecker(const dense& g, const dense& a) {
  const index_t r = g.rows();
  const index_t c = a.rows();
  dense f(r * c, r * c);
  for (index_t i = 0; i < r; ++i) {
    for (index_t k = 0; k < r; ++k) f.block(i * c, k * c, c, c) = g(i, k) * a;
  }
  return f;
}

/// Row-major flattening of an [R, C] matrix.
inline dense_vector flatten(const dense& w) {
  dense_vector theta(w.size());
  for (index_t i = 0; i < w.rows(); ++i) {
    for (index_t j = 0; j < w.cols(); ++j) theta(i * w.cols() + j) = w(i, j);
  }
  return theta;
}

inline dense unflatten(const dense_vector& theta, index_t rows, index_t cols) {
  dense w(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) w(i, j) = theta(i * cols + j);
  }
  return w;
}

/// OBS cost of removing the set K (flat indices): `½ θ_Kᵀ ([F⁻¹]_KK)⁻¹ θ_K`.
inline double obs_cost(const dense& f, const dense_vector& theta, const std::vector<index_t>& k) {
  const dense f_inverse = f.inverse();
  const auto n = static_cast<index_t>(k.size());
  dense f_kk(n, n);
  dense_vector theta_k(n);
  for (index_t p = 0; p < n; ++p) {
    theta_k(p) = theta(k[static_cast<std::size_t>(p)]);
    for (index_t q = 0; q < n; ++q)
      f_kk(p, q) = f_inverse(k[static_cast<std::size_t>(p)], k[static_cast<std::size_t>(q)]);
  }
  return 0.5 * theta_k.dot(f_kk.ldlt().solve(theta_k));
}

/// The OBS update for removing K, from the explicit Lagrangian: `Δθ = −F⁻¹ E_K ([F⁻¹]_KK)⁻¹ θ_K`.
/// Returns the updated weights θ + Δθ (entries of K are zero up to rounding).
inline dense_vector obs_updated(const dense& f, const dense_vector& theta, const std::vector<index_t>& k) {
  const dense f_inverse = f.inverse();
  const auto n = static_cast<index_t>(k.size());
  dense f_kk(n, n);
  dense f_k(f.rows(), n);
  dense_vector theta_k(n);
  for (index_t p = 0; p < n; ++p) {
    theta_k(p) = theta(k[static_cast<std::size_t>(p)]);
    f_k.col(p) = f_inverse.col(k[static_cast<std::size_t>(p)]);
    for (index_t q = 0; q < n; ++q)
      f_kk(p, q) = f_inverse(k[static_cast<std::size_t>(p)], k[static_cast<std::size_t>(q)]);
  }
  return theta - f_k * f_kk.ldlt().solve(theta_k);
}

/// The damped-Fisher loss of a change Δ: `½ vec(Δ)ᵀ F vec(Δ)`.
inline double quadratic_loss(const dense& f, const dense_vector& delta) {
  return 0.5 * delta.dot(f * delta);
}

}  // namespace surgeon::test
