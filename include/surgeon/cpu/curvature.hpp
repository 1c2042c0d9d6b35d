/// @file cpu/curvature.hpp
/// @brief CPU curvature (METHOD.md §2): damping, Cholesky inverses in double with escalation,
/// cached eigendecompositions, and the live sub-factors of a layer.
#pragma once

#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/detail/dense.hpp>
#include <surgeon/cpu/kfac.hpp>
#include <surgeon/curvature.hpp>
#include <surgeon/kfac.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>

namespace surgeon::cpu {

/// @brief Dense column-major double matrix of the CPU backend.
using matrix = detail::dense_matrix;
/// @brief Dense double vector of the CPU backend.
using vector = detail::dense_vector;

/// @brief Eigendecomposition `M = V diag(values) Vᵀ`: ascending `values` [n], orthonormal
/// eigenvectors in the columns of `vectors` [n, n].
struct eigen_decomposition {
  /// Eigenvalues in ascending order, length n.
  vector values;
  /// Eigenvectors `[n, n]`, orthonormal; column k belongs to `values[k]`.
  matrix vectors;
};

/// @brief One damped Kronecker factor `F̂ = F + shift·I` with its inverse (always) and its
/// eigendecomposition (computed once, on first use).
///
/// Copies share the cached eigendecomposition. The lazy cache is not synchronised: call
/// `eigen()` once before sharing a factor between threads.
class damped_factor {
 public:
  /// @brief An empty factor of order 0 (no damping, no inverse).
  damped_factor() = default;

  /// @brief Order n of the factor.
  index_t order() const { return damped_.rows(); }
  /// @brief `F̂ = F + shift·I`, [n, n], symmetric.
  const matrix& damped() const { return damped_; }
  /// @brief `F̂⁻¹`, [n, n], symmetric, from the Cholesky factorisation in double.
  const matrix& inverse() const { return inverse_; }
  /// @brief The λ and shift used, and how many escalations were needed.
  const damping_report& report() const { return report_; }

  /// @brief Eigendecomposition of `F̂` (ascending eigenvalues, all > 0), computed on the first
  /// call and cached. Cost: about 9n³ flops once, then O(1).
  /// @throws numerical_error if the eigensolver does not converge.
  const eigen_decomposition& eigen() const {
    if (!eigen_) {
      auto result = std::make_shared<eigen_decomposition>();
      detail::symmetric_eigen(damped_, result->values, result->vectors);
      eigen_ = std::move(result);
    }
    return *eigen_;
  }
  /// @brief True when `eigen()` has already computed and cached the eigendecomposition. O(1).
  bool has_eigen() const { return eigen_ != nullptr; }

 private:
  friend damped_factor damp_and_invert(context&, host_matrix_view<const double>, double, const damping&);
  matrix damped_;
  matrix inverse_;
  damping_report report_;
  mutable std::shared_ptr<const eigen_decomposition> eigen_;
};

/// @brief Damps a symmetric factor and inverts it by Cholesky in double, escalating λ on failure.
///
/// shift = λ·mean(diag F) (relative) or λ (absolute). When the factorisation of `F + shift·I` fails
/// (not numerically positive definite), λ ← λ·`d.escalation` (a zero λ first becomes 1e-8) and the
/// factorisation is retried, at most `d.max_escalations` times. The mode, escalation and retry
/// limit come from `d`; its `g`/`a` fields are ignored in favour of `lambda`.
/// @param factor symmetric [n, n], host (both triangles read).
/// @param lambda λ to start from (>= 0), e.g. `d.g` or `d.a`.
/// @param d damping mode, escalation factor and retry limit.
/// Cost: n³/3 flops per attempt plus 2n³/3 for the inverse; O(n²) memory for three matrices.
/// @throws logic_error if `factor` is not square, is empty, or holds a non-finite value, or `lambda`
///         is negative; numerical_error if a relative damping has a non-positive mean diagonal or
///         every attempt fails.
inline damped_factor damp_and_invert(context& /*ctx*/, host_matrix_view<const double> factor, double lambda,
                                     const damping& d) {
  surgeon::detail::check_damp_arguments(factor.rows(), factor.cols(), lambda, d);
  const index_t n = factor.rows();
  matrix base(n, n);
  double trace = 0.0;
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      const double value = factor(i, j);
      SURGEON_EXPECTS(std::isfinite(value), "damp_and_invert: non-finite factor entry {} at ({}, {})", value,
                      i, j);
      base(i, j) = value;
    }
    trace += factor(i, i);
  }
  const double scale = surgeon::detail::damping_scale(d, trace, n);
  damped_factor result;
  result.report_ = surgeon::detail::escalate_damping(d, lambda, scale, "damp_and_invert",
                                                     fmt::format("a {}x{} factor", n, n), [&](double shift) {
                                                       matrix work = base;
                                                       work.diagonal().array() += shift;
                                                       if (!detail::cholesky_lower_in_place(work))
                                                         return false;
                                                       detail::inverse_from_cholesky_in_place(work);
                                                       result.damped_ = base;
                                                       result.damped_.diagonal().array() += shift;
                                                       result.inverse_ = std::move(work);
                                                       return true;
                                                     });
  return result;
}

/// @brief The curvature of one layer: damped live sub-factors of G and A, their inverses and
/// eigendecompositions, and which rows and columns are dead.
///
/// `g` has order `dead.live_rows.size()`, `a` order `dead.live_cols.size()`: index k of `g` is row
/// `dead.live_rows[k]` of the layer. Every cost and update works on that live sub-layer.
struct kronecker_curvature {
  /// Damped live sub-factor of G, order `dead.live_rows.size()`.
  damped_factor g;
  /// Damped live sub-factor of A, order `dead.live_cols.size()`.
  damped_factor a;
  /// The layer's dead and live rows and columns.
  dead_structure dead;
};

/// @brief Factorises a layer's K-FAC curvature from explicit factor means.
/// @param g output-side factor G [R, R]; @param a input-side factor A [C, C] (C includes the bias
///        column when the layer has one); @param w the weights `W̃` [R, C], used to find dead rows and
///        columns (pass an empty view to use the factors' diagonals alone).
/// @param ctx CPU context, passed on to `damp_and_invert`.
/// @param d damping: λ_G = `d.g` for G, λ_A = `d.a` for A, and the shared escalation settings.
/// Cost: O(R³ + C³) flops (two Cholesky factorisations and inverses); eigendecompositions on demand.
/// @throws logic_error on mismatched shapes or bad damping; numerical_error as `damp_and_invert`, or
///         when every row or every column is dead.
template <typename W = float>
kronecker_curvature factorize(context& ctx, host_matrix_view<const double> g,
                              host_matrix_view<const double> a, const damping& d,
                              host_matrix_view<const W> w = {}) {
  validate(d);
  SURGEON_EXPECTS(g.rows() == g.cols() && a.rows() == a.cols(),
                  "factorize: factors [{}, {}] and [{}, {}] must be square", g.rows(), g.cols(), a.rows(),
                  a.cols());
  kronecker_curvature result;
  if (w.empty()) {
    result.dead.live_rows = nonzero_diagonal(g);
    result.dead.live_cols = nonzero_diagonal(a);
    for (index_t i = 0, k = 0; i < g.rows(); ++i) {
      if (k < static_cast<index_t>(result.dead.live_rows.size()) &&
          result.dead.live_rows[static_cast<std::size_t>(k)] == i) {
        ++k;
      } else {
        result.dead.dead_rows.push_back(i);
      }
    }
    for (index_t j = 0, k = 0; j < a.rows(); ++j) {
      if (k < static_cast<index_t>(result.dead.live_cols.size()) &&
          result.dead.live_cols[static_cast<std::size_t>(k)] == j) {
        ++k;
      } else {
        result.dead.dead_cols.push_back(j);
      }
    }
  } else {
    SURGEON_EXPECTS(w.rows() == g.rows() && w.cols() == a.rows(),
                    "factorize: weights [{}, {}] do not fit factors G [{}, {}] and A [{}, {}]", w.rows(),
                    w.cols(), g.rows(), g.cols(), a.rows(), a.cols());
    std::vector<double> g_diag(static_cast<std::size_t>(g.rows()));
    std::vector<double> a_diag(static_cast<std::size_t>(a.rows()));
    for (index_t i = 0; i < g.rows(); ++i) g_diag[static_cast<std::size_t>(i)] = g(i, i);
    for (index_t j = 0; j < a.rows(); ++j) a_diag[static_cast<std::size_t>(j)] = a(j, j);
    result.dead = find_dead(host_vector_view<const double>(g_diag.data(), g.rows()),
                            host_vector_view<const double>(a_diag.data(), a.rows()), w);
  }
  if (result.dead.live_rows.empty() || result.dead.live_cols.empty()) {
    SURGEON_THROW(numerical_error, "factorize: the layer is entirely dead ({} live rows, {} live columns)",
                  result.dead.live_rows.size(), result.dead.live_cols.size());
  }
  const host_matrix<double> g_live = extract_live(g, result.dead.live_rows);
  const host_matrix<double> a_live = extract_live(a, result.dead.live_cols);
  result.g = damp_and_invert(ctx, g_live.view(), d.g, d);
  result.a = damp_and_invert(ctx, a_live.view(), d.a, d);
  return result;
}

/// @brief Factorises a layer's curvature from its accumulators (their exact means).
/// @throws as the explicit-factor overload, and logic_error if an accumulator is empty.
template <typename T, typename W = float>
kronecker_curvature factorize(context& ctx, const factor_accumulator<T>& g, const factor_accumulator<T>& a,
                              const damping& d, host_matrix_view<const W> w = {}) {
  const host_matrix<double> g_mean = g.mean();
  const host_matrix<double> a_mean = a.mean();
  return factorize<W>(ctx, g_mean.view(), a_mean.view(), d, w);
}

}  // namespace surgeon::cpu
