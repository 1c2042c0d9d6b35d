/// @file cpu/detail/whole_mask.hpp
/// @brief The solvers of the whole-mask OBS update (`cpu::obs_update_full`, docs/METHOD.md §4):
/// conjugate gradients on the kept weights (`pcg_form::kept_kronecker`) or on the multipliers of
/// the removed ones (`pcg_form::removed_sweep`).
///
/// The problem, on the live sub-layer `W` [R, C] with removed entries Q and kept entries K:
/// minimise ½ tr(Δᵀ Ĝ Δ Â) subject to Δ_Q = −W_Q. Its Lagrange form gives Δ = −Ĝ⁻¹ X Â⁻¹ for
/// multipliers X supported on Q with P_Q(Ĝ⁻¹ X Â⁻¹) = W_Q (the dual system, SPD on Q). Every
/// matrix here is column-major double (`dense_matrix`) unless it says float.
#pragma once

#include <surgeon/cpu/curvature.hpp>
#include <surgeon/cpu/detail/dense.hpp>
#include <surgeon/error.hpp>
#include <surgeon/update.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <vector>

namespace surgeon::cpu::detail {

using float_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

/// `result = P(left · x · right)` for an indicator `mask` [R, C]: two GEMMs, in float when
/// `single` (the inputs rounded, the result widened back; conjugate gradients to the tolerances of
/// `pcg_options` lose nothing measurable to it) or in double.
class masked_sandwich {
 public:
  masked_sandwich(const dense_matrix& left, const dense_matrix& right, bool single)
      : left_(left), right_(right), single_(single) {
    if (single_) {
      left_f_ = left.cast<float>();
      right_f_ = right.cast<float>();
    }
  }

  void apply(const dense_matrix& x, const dense_matrix& mask, dense_matrix& result) {
    if (single_) {
      x_f_ = x.cast<float>();
      temp_f_.noalias() = left_f_ * x_f_;
      x_f_.noalias() = temp_f_ * right_f_;
      result = x_f_.cast<double>();
    } else {
      temp_.noalias() = left_ * x;
      result.noalias() = temp_ * right_;
    }
    result.array() *= mask.array();
  }

 private:
  const dense_matrix& left_;
  const dense_matrix& right_;
  bool single_;
  float_matrix left_f_, right_f_, x_f_, temp_f_;
  dense_matrix temp_;
};

/// The sweep preconditioner of `pcg_form::removed_sweep`. With U the upper Cholesky factor of Â⁻¹
/// (Â⁻¹ = UᵀU, columns permuted so that the columns removed from the most rows come first),
/// [Â⁻¹]_{QQ} = U_{:,Q}ᵀ U_{:,Q} = U_{QQ}ᵀ U_{QQ} + U_{KQ}ᵀ U_{KQ} for every row's Q and K. Dropping
/// the second term (the kept columns ordered before removed ones: few, by the permutation) leaves
/// a row block that two triangular solves with the submatrix U_{QQ} invert:
/// z_i = U_{QQ}⁻¹ U_{QQ}⁻ᵀ r_i / [Ĝ⁻¹]_ii. Done for all rows at once, column by column, these are
/// the two sweeps of SparseGPT's elimination (lazy updates in blocks of 128 columns): about R·C²
/// flops an application, no per-row factorisation, memory O(R·C + C²).
template <typename Scalar>
class removed_sweep_preconditioner {
 public:
  using matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  using vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// @throws numerical_error if the permuted Â⁻¹ is not numerically positive definite.
  removed_sweep_preconditioner(const char* who, const dense_matrix& keep, const dense_matrix& a_inverse,
                               const dense_matrix& g_inverse) {
    const index_t rows = keep.rows();
    const index_t cols = keep.cols();
    std::vector<index_t> removed_count(static_cast<std::size_t>(cols), 0);
    for (index_t j = 0; j < cols; ++j) {
      removed_count[static_cast<std::size_t>(j)] = rows - static_cast<index_t>(keep.col(j).sum());
    }
    order_.resize(static_cast<std::size_t>(cols));
    for (index_t j = 0; j < cols; ++j) order_[static_cast<std::size_t>(j)] = j;
    std::stable_sort(order_.begin(), order_.end(), [&](index_t x, index_t y) {
      return removed_count[static_cast<std::size_t>(x)] > removed_count[static_cast<std::size_t>(y)];
    });
    dense_matrix permuted(cols, cols);
    for (index_t c = 0; c < cols; ++c) {
      for (index_t r = 0; r < cols; ++r) permuted(r, c) = a_inverse(position(r), position(c));
    }
    if (!cholesky_lower_in_place(permuted)) {  // in double; only the factor is rounded
      SURGEON_THROW(numerical_error, "{}: the damped inverse input factor is not positive definite", who);
    }
    const dense_matrix upper = permuted.triangularView<Eigen::Lower>().transpose();
    u_ = upper.cast<Scalar>();
    removed_.resize(rows, cols);
    for (index_t c = 0; c < cols; ++c) {
      removed_.col(c) = (dense_vector::Ones(rows) - keep.col(position(c))).template cast<Scalar>();
    }
    g_ = g_inverse.diagonal();
    y_.resize(rows, cols);
  }

  /// z = B⁻¹ r; r and z [R, C] in live column order, zero outside Q.
  void apply(const dense_matrix& r, dense_matrix& z) {
    const index_t cols = r.cols();
    for (index_t c = 0; c < cols; ++c) y_.col(c) = r.col(position(c)).template cast<Scalar>();
    // Forward: U_QQᵀ y = r, columns in order; later columns of a block see earlier ones at once,
    // later blocks through one GEMM.
    for (index_t j0 = 0; j0 < cols; j0 += block) {
      const index_t j1 = std::min(cols, j0 + block);
      if (j0 > 0) y_.middleCols(j0, j1 - j0).noalias() -= y_.leftCols(j0) * u_.block(0, j0, j0, j1 - j0);
      for (index_t j = j0; j < j1; ++j) {
        if (j > j0) y_.col(j).noalias() -= y_.middleCols(j0, j - j0) * u_.block(j0, j, j - j0, 1);
        y_.col(j) = y_.col(j).cwiseProduct(removed_.col(j)) / u_(j, j);
      }
    }
    // Backward: U_QQ x = y, from the last column.
    for (index_t j1 = cols; j1 > 0;) {
      const index_t j0 = std::max<index_t>(0, j1 - block);
      if (j1 < cols) {
        y_.middleCols(j0, j1 - j0).noalias() -=
            y_.rightCols(cols - j1) * u_.block(j0, j1, j1 - j0, cols - j1).transpose();
      }
      for (index_t j = j1 - 1; j >= j0; --j) {
        if (j + 1 < j1) {
          y_.col(j).noalias() -=
              y_.middleCols(j + 1, j1 - j - 1) * u_.block(j, j + 1, 1, j1 - j - 1).transpose();
        }
        y_.col(j) = y_.col(j).cwiseProduct(removed_.col(j)) / u_(j, j);
      }
      j1 = j0;
    }
    for (index_t c = 0; c < cols; ++c)
      z.col(position(c)) = y_.col(c).template cast<double>().cwiseQuotient(g_);
  }

  static constexpr index_t block = 128;

 private:
  index_t position(index_t permuted) const { return order_[static_cast<std::size_t>(permuted)]; }

  std::vector<index_t> order_;  // order_[k]: the live column at permuted position k
  matrix u_;                    // upper Cholesky factor of the permuted Â⁻¹
  matrix removed_;              // indicator of Q, permuted columns
  dense_vector g_;              // [Ĝ⁻¹]_ii
  matrix y_;                    // work space [R, C]
};

/// The whole-mask update through the dual system: conjugate gradients on the multipliers X of
/// the removed entries, M X = P_Q(Ĝ⁻¹ X Â⁻¹) = W_Q, preconditioned by `precondition`; stops at
/// ‖W_Q − M X‖ ≤ tolerance·‖W_Q‖ (the part of the removed weights the update has not yet
/// compensated) or after `max_iterations`; then W ← W − Ĝ⁻¹ X Â⁻¹ with Q exactly 0. `loss` in the
/// report is the dual objective ⟨W_Q, X⟩ − ½⟨X, M X⟩, which approaches the optimal loss from below.
/// Cost per iteration: 4R·C(R + C) flops (two GEMMs, float when `float_products`) plus one
/// preconditioner application. Updates `live` in place.
inline void removed_pcg(const char* who, const kronecker_curvature& curv, dense_matrix& live,
                        const dense_matrix& keep, const pcg_options& options,
                        const std::function<void(const dense_matrix&, dense_matrix&)>& precondition,
                        update_report& report) {
  const index_t rows = live.rows();
  const index_t cols = live.cols();
  const dense_matrix removed = dense_matrix::Ones(rows, cols) - keep;
  dense_matrix r = live.cwiseProduct(removed);  // b = W_Q; r = b − M·0
  const double b_norm = r.norm();
  if (!(b_norm > 0.0)) return;  // every removed weight is already 0: nothing to compensate
  masked_sandwich dual(curv.g.inverse(), curv.a.inverse(), options.float_products);
  dense_matrix x = dense_matrix::Zero(rows, cols);
  dense_matrix z(rows, cols);
  dense_matrix mp(rows, cols);
  precondition(r, z);
  dense_matrix direction = z;
  double rz = r.cwiseProduct(z).sum();
  double relative = 1.0;
  for (int iteration = 1; iteration <= options.max_iterations && relative > options.tolerance; ++iteration) {
    dual.apply(direction, removed, mp);
    const double curvature = direction.cwiseProduct(mp).sum();
    if (!(curvature > 0.0)) break;  // converged to rounding: no descent direction is left
    const double alpha = rz / curvature;
    x.noalias() += alpha * direction;
    r.noalias() -= alpha * mp;
    report.loss += 0.5 * alpha * rz;
    report.iterations = iteration;
    relative = r.norm() / b_norm;
    if (!std::isfinite(relative)) {
      SURGEON_THROW(numerical_error, "{}: conjugate gradients diverged at iteration {}", who, iteration);
    }
    if (relative <= options.tolerance) break;
    precondition(r, z);
    const double rz_next = r.cwiseProduct(z).sum();
    direction = z + (rz_next / rz) * direction;
    rz = rz_next;
  }
  report.relative_residual = relative;
  masked_sandwich primal(curv.g.inverse(), curv.a.inverse(), false);
  primal.apply(x, keep, mp);  // the update on K; Q becomes exactly 0
  live = live.cwiseProduct(keep) - mp;
}

/// The whole-mask update on the kept weights (`pcg_form::kept_kronecker`): with Δ = Δ₀ + U,
/// Δ₀ = −W on Q, it solves P_K(Ĝ U Â) = P_K(Ĝ W_Q Â) on K from U = 0 by conjugate gradients
/// preconditioned by R ↦ P_K(Ĝ⁻¹ R Â⁻¹); stops at ‖r‖ ≤ tolerance·‖b‖ (the gradient of the loss
/// on K) or after `max_iterations`; then W ← W + Δ₀ + U. `loss` in the report is the damped loss of
/// the final iterate. Cost: 2R·C(R + C) flops for b plus 4R·C(R + C) per iteration (four GEMMs).
inline void kept_pcg(const char* who, const kronecker_curvature& curv, dense_matrix& live,
                     const dense_matrix& keep, const pcg_options& options, update_report& report) {
  const index_t rows = live.rows();
  const index_t cols = live.cols();
  const dense_matrix w_q = live.cwiseProduct(dense_matrix::Ones(rows, cols) - keep);  // −Δ₀
  masked_sandwich fisher(curv.g.damped(), curv.a.damped(), options.float_products);
  masked_sandwich inverse(curv.g.inverse(), curv.a.inverse(), options.float_products);
  dense_matrix r(rows, cols);
  fisher.apply(w_q, dense_matrix::Ones(rows, cols), r);  // Ĝ W_Q Â
  // The loss of Δ₀ + U: ½⟨W_Q, Ĝ W_Q Â⟩ − ⟨U, Ĝ W_Q Â⟩ + ½⟨U, Ĝ U Â⟩, lowered by each step.
  double loss = 0.5 * w_q.cwiseProduct(r).sum();
  r.array() *= keep.array();  // b = P_K(Ĝ W_Q Â)
  const double b_norm = r.norm();
  if (!(b_norm > 0.0)) {
    live.array() *= keep.array();
    report.loss = loss;
    return;
  }
  dense_matrix u = dense_matrix::Zero(rows, cols);
  dense_matrix z(rows, cols);
  dense_matrix ap(rows, cols);
  inverse.apply(r, keep, z);
  dense_matrix direction = z;
  double rz = r.cwiseProduct(z).sum();
  double relative = 1.0;
  for (int iteration = 1; iteration <= options.max_iterations; ++iteration) {
    fisher.apply(direction, keep, ap);
    const double curvature = direction.cwiseProduct(ap).sum();
    if (!(curvature > 0.0)) break;  // converged to rounding: no descent direction is left
    const double alpha = rz / curvature;
    u.noalias() += alpha * direction;
    r.noalias() -= alpha * ap;
    loss -= 0.5 * alpha * rz;
    report.iterations = iteration;
    relative = r.norm() / b_norm;
    if (!std::isfinite(relative)) {
      SURGEON_THROW(numerical_error, "{}: conjugate gradients diverged at iteration {}", who, iteration);
    }
    if (relative <= options.tolerance) break;
    inverse.apply(r, keep, z);
    const double rz_next = r.cwiseProduct(z).sum();
    direction = z + (rz_next / rz) * direction;
    rz = rz_next;
  }
  report.relative_residual = relative;
  report.loss = loss;
  live = (live + u).cwiseProduct(keep);  // W + Δ₀ + U: U vanishes on Q, and Q becomes exactly 0
}

/// The whole-mask update of `live` for the kept-entry indicator `keep` by `options.form`.
inline void whole_mask_update(const char* who, const kronecker_curvature& curv, dense_matrix& live,
                              const dense_matrix& keep, const pcg_options& options, update_report& report) {
  switch (options.form) {
    case pcg_form::kept_kronecker:
      kept_pcg(who, curv, live, keep, options, report);
      return;
    case pcg_form::removed_sweep:
      if (options.float_products) {
        removed_sweep_preconditioner<float> sweep(who, keep, curv.a.inverse(), curv.g.inverse());
        removed_pcg(
            who, curv, live, keep, options,
            [&sweep](const dense_matrix& r, dense_matrix& z) { sweep.apply(r, z); }, report);
      } else {
        removed_sweep_preconditioner<double> sweep(who, keep, curv.a.inverse(), curv.g.inverse());
        removed_pcg(
            who, curv, live, keep, options,
            [&sweep](const dense_matrix& r, dense_matrix& z) { sweep.apply(r, z); }, report);
      }
      return;
  }
  SURGEON_THROW(logic_error, "{}: unknown pcg_form {}", who, static_cast<int>(options.form));
}

}  // namespace surgeon::cpu::detail
