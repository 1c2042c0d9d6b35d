/// @file cpu/cost.hpp
/// @brief CPU pruning costs (METHOD.md §3): element, row, column and N:M block costs of one layer for
/// every method, from its weights and its `kronecker_curvature`.
///
/// **Conventions.** The weights `W̃` are `[R, C]`, row-major, host, float or double; with a bias the
/// bias is simply column C−1 and is costed like any other column. The curvature holds the damped
/// factors restricted to the live rows and columns (`curvature.dead`): every cost is computed on
/// that live sub-layer, and dead rows and columns (METHOD.md §2) cost exactly 0, since they are
/// already removed. Row costs use the live columns only and column costs the live rows only.
///
/// **Which factors.** LLM Surgeon (and SparseGPT's element score, reported with the same
/// formula) are exact OBS costs under the damped Fisher `F̂ = Ĝ ⊗ Â`: they use the damped factors
/// and their inverses. The diagonal baselines (Wanda, L-OBD, K-OBD) use the *undamped* factors
/// G = Ĝ − shift_G·I and A = Â − shift_A·I. Everything is computed in double.
#pragma once

#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/curvature.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/select.hpp>
#include <surgeon/types.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace surgeon::cpu {

namespace detail {

template <typename T>
void expect_cost_inputs(const kronecker_curvature& curvature, host_matrix_view<const T> w, const char* who) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "costs: weights must be float or double");
  const dead_structure& dead = curvature.dead;
  const auto rows = static_cast<index_t>(dead.live_rows.size() + dead.dead_rows.size());
  const auto cols = static_cast<index_t>(dead.live_cols.size() + dead.dead_cols.size());
  SURGEON_EXPECTS(w.rows() == rows && w.cols() == cols,
                  "{}: weights [{}, {}] do not fit a curvature of a [{}, {}] layer", who, w.rows(), w.cols(),
                  rows, cols);
  SURGEON_EXPECTS(curvature.g.order() == static_cast<index_t>(dead.live_rows.size()) &&
                      curvature.a.order() == static_cast<index_t>(dead.live_cols.size()),
                  "{}: factors of order {} and {} do not match {} live rows and {} live columns", who,
                  curvature.g.order(), curvature.a.order(), dead.live_rows.size(), dead.live_cols.size());
  for (index_t i = 0; i < w.rows(); ++i) {
    for (index_t j = 0; j < w.cols(); ++j) {
      SURGEON_EXPECTS(std::isfinite(w(i, j)), "{}: non-finite weight {} at ({}, {})", who, w(i, j), i, j);
    }
  }
}

/// The live sub-layer `W̃[live_rows, live_cols]` in double. Cost: O(r·c).
template <typename T>
matrix live_weights(const kronecker_curvature& curvature, host_matrix_view<const T> w) {
  const auto& rows = curvature.dead.live_rows;
  const auto& cols = curvature.dead.live_cols;
  matrix result(static_cast<index_t>(rows.size()), static_cast<index_t>(cols.size()));
  for (index_t l = 0; l < result.cols(); ++l) {
    const index_t j = cols[static_cast<std::size_t>(l)];
    for (index_t k = 0; k < result.rows(); ++k)
      result(k, l) = static_cast<double>(w(rows[static_cast<std::size_t>(k)], j));
  }
  return result;
}

/// The undamped diagonal of a factor, `diag(F̂) − shift` (clamped at 0 against rounding).
inline vector undamped_diagonal(const damped_factor& f) {
  return (f.damped().diagonal().array() - f.report().shift).max(0.0).matrix();
}

/// The undamped factor `F̂ − shift·I`.
inline matrix undamped(const damped_factor& f) {
  matrix result = f.damped();
  result.diagonal().array() -= f.report().shift;
  return result;
}

inline void expect_structured(method how, const char* who) {
  SURGEON_EXPECTS(
      how != method::wanda && how != method::sparsegpt,
      "{}: method {} has no row or column score (METHOD.md §3); use magnitude, lobd, kobd or llm-surgeon",
      who, to_string(how));
}

}  // namespace detail

/// @brief Element pruning costs of one layer (METHOD.md §3).
///
/// | method | cost of (i, j) |
/// |---|---|
/// | magnitude | W_ij² |
/// | wanda | \|W_ij\|·√A_jj (compare within each output row: `select_per_row`) |
/// | lobd | ½ W_ij² A_jj |
/// | kobd | ½ W_ij² G_ii A_jj |
/// | sparsegpt, llm_surgeon | W_ij² / (2 [Ĝ⁻¹]_ii [Â⁻¹]_jj) (exact OBS under F̂ = Ĝ ⊗ Â) |
///
/// G and A are undamped, Ĝ and Â damped (see the file comment). Dead rows and columns cost 0.
/// The CPU context (first argument) is not used. @param how the method.
/// @param curvature the layer's curvature.
/// @param w the weights `W̃` `[R, C]`, host, float or double, any `ld`.
/// @returns `[R, C]` costs in double, host, row-major.
/// Cost: O(R·C) flops and one double copy of the live weights.
/// @throws logic_error if `w` does not fit the curvature.
template <typename T>
host_matrix<double> element_costs(context& /*ctx*/, method how, const kronecker_curvature& curvature,
                                  host_matrix_view<const T> w) {
  detail::expect_cost_inputs(curvature, w, "element_costs");
  const matrix live = detail::live_weights(curvature, w);
  matrix cost;
  switch (how) {
    case method::magnitude:
      cost = live.array().square().matrix();
      break;
    case method::wanda: {
      const vector a = detail::undamped_diagonal(curvature.a).array().sqrt().matrix();
      cost = live.array().abs().matrix() * a.asDiagonal();
      break;
    }
    case method::lobd: {
      const vector a = detail::undamped_diagonal(curvature.a);
      cost = 0.5 * live.array().square().matrix() * a.asDiagonal();
      break;
    }
    case method::kobd: {
      const vector g = detail::undamped_diagonal(curvature.g);
      const vector a = detail::undamped_diagonal(curvature.a);
      cost = 0.5 * g.asDiagonal() * live.array().square().matrix() * a.asDiagonal();
      break;
    }
    case method::sparsegpt:
    case method::llm_surgeon: {
      const vector g = curvature.g.inverse().diagonal().cwiseInverse();
      const vector a = curvature.a.inverse().diagonal().cwiseInverse();
      cost = 0.5 * g.asDiagonal() * live.array().square().matrix() * a.asDiagonal();
      break;
    }
  }
  host_matrix<double> result(w.rows(), w.cols());
  const auto& rows = curvature.dead.live_rows;
  const auto& cols = curvature.dead.live_cols;
  for (index_t k = 0; k < cost.rows(); ++k) {
    const index_t i = rows[static_cast<std::size_t>(k)];
    for (index_t l = 0; l < cost.cols(); ++l) result(i, cols[static_cast<std::size_t>(l)]) = cost(k, l);
  }
  return result;
}

/// @brief Non-const-view convenience overload of `element_costs`.
template <typename T, typename = std::enable_if_t<!std::is_const_v<T>>>
host_matrix<double> element_costs(context& ctx, method how, const kronecker_curvature& curvature,
                                  host_matrix_view<T> w) {
  return element_costs<T>(ctx, how, curvature, host_matrix_view<const T>(w));
}

/// @brief Row (output) pruning costs of one layer (METHOD.md §3).
///
/// | method | cost of row i (w_i = row i over the live columns) |
/// |---|---|
/// | magnitude | ‖w_i‖² |
/// | lobd | ½ Σ_j W_ij² A_jj |
/// | kobd | ½ G_ii w_iᵀ A w_i |
/// | llm_surgeon | w_iᵀ Â w_i / (2 [Ĝ⁻¹]_ii) (exact OBS for the whole row under F̂ = Ĝ ⊗ Â) |
///
/// Dead rows cost 0.
/// @param how the method (not wanda or sparsegpt).
/// @param curvature the layer's curvature.
/// @param w the weights `W̃` `[R, C]`, host, float or double, any `ld`.
/// @returns R costs in double.
/// Cost: kobd and llm_surgeon 2·r·c² flops (one GEMM `W·A` and a row-wise dot with W, r and c the
/// live counts); the others O(R·C).
/// @throws logic_error if `w` does not fit the curvature, or for wanda and sparsegpt (no row score).
template <typename T>
std::vector<double> row_costs(context& /*ctx*/, method how, const kronecker_curvature& curvature,
                              host_matrix_view<const T> w) {
  detail::expect_structured(how, "row_costs");
  detail::expect_cost_inputs(curvature, w, "row_costs");
  const matrix live = detail::live_weights(curvature, w);
  vector cost;
  switch (how) {
    case method::magnitude:
      cost = live.rowwise().squaredNorm();
      break;
    case method::lobd:
      cost = 0.5 * (live.array().square().matrix() * detail::undamped_diagonal(curvature.a));
      break;
    case method::kobd: {
      const matrix product = live * detail::undamped(curvature.a);
      const vector quadratic = product.cwiseProduct(live).rowwise().sum();
      cost = 0.5 * detail::undamped_diagonal(curvature.g).cwiseProduct(quadratic);
      break;
    }
    case method::llm_surgeon: {
      const matrix product = live * curvature.a.damped();
      const vector quadratic = product.cwiseProduct(live).rowwise().sum();
      cost = 0.5 * quadratic.cwiseQuotient(curvature.g.inverse().diagonal());
      break;
    }
    case method::wanda:
    case method::sparsegpt:
      break;  // rejected above
  }
  std::vector<double> result(static_cast<std::size_t>(w.rows()), 0.0);
  const auto& rows = curvature.dead.live_rows;
  for (index_t k = 0; k < cost.size(); ++k)
    result[static_cast<std::size_t>(rows[static_cast<std::size_t>(k)])] = cost(k);
  return result;
}

/// @brief Non-const-view convenience overload of `row_costs`.
template <typename T, typename = std::enable_if_t<!std::is_const_v<T>>>
std::vector<double> row_costs(context& ctx, method how, const kronecker_curvature& curvature,
                              host_matrix_view<T> w) {
  return row_costs<T>(ctx, how, curvature, host_matrix_view<const T>(w));
}

/// @brief Column (input, or bias) pruning costs of one layer (METHOD.md §3).
///
/// | method | cost of column j (w_j = column j over the live rows) |
/// |---|---|
/// | magnitude | ‖w_j‖² |
/// | lobd | ½ A_jj ‖w_j‖² |
/// | kobd | ½ A_jj w_jᵀ G w_j |
/// | llm_surgeon | w_jᵀ Ĝ w_j / (2 [Â⁻¹]_jj) (exact OBS for the whole column under F̂ = Ĝ ⊗ Â) |
///
/// Dead columns cost 0.
/// @param how the method (not wanda or sparsegpt).
/// @param curvature the layer's curvature.
/// @param w the weights `W̃` `[R, C]`, host, float or double, any `ld`.
/// @returns C costs in double.
/// Cost: kobd and llm_surgeon 2·r²·c flops (one GEMM `G·W` and a column-wise dot with W); the
/// others O(R·C).
/// @throws logic_error if `w` does not fit the curvature, or for wanda and sparsegpt (no column score).
template <typename T>
std::vector<double> column_costs(context& /*ctx*/, method how, const kronecker_curvature& curvature,
                                 host_matrix_view<const T> w) {
  detail::expect_structured(how, "column_costs");
  detail::expect_cost_inputs(curvature, w, "column_costs");
  const matrix live = detail::live_weights(curvature, w);
  vector cost;
  switch (how) {
    case method::magnitude:
      cost = live.colwise().squaredNorm().transpose();
      break;
    case method::lobd:
      cost =
          0.5 * detail::undamped_diagonal(curvature.a).cwiseProduct(live.colwise().squaredNorm().transpose());
      break;
    case method::kobd: {
      const matrix product = detail::undamped(curvature.g) * live;
      const vector quadratic = product.cwiseProduct(live).colwise().sum().transpose();
      cost = 0.5 * detail::undamped_diagonal(curvature.a).cwiseProduct(quadratic);
      break;
    }
    case method::llm_surgeon: {
      const matrix product = curvature.g.damped() * live;
      const vector quadratic = product.cwiseProduct(live).colwise().sum().transpose();
      cost = 0.5 * quadratic.cwiseQuotient(curvature.a.inverse().diagonal());
      break;
    }
    case method::wanda:
    case method::sparsegpt:
      break;  // rejected above
  }
  std::vector<double> result(static_cast<std::size_t>(w.cols()), 0.0);
  const auto& cols = curvature.dead.live_cols;
  for (index_t l = 0; l < cost.size(); ++l)
    result[static_cast<std::size_t>(cols[static_cast<std::size_t>(l)])] = cost(l);
  return result;
}

/// @brief Non-const-view convenience overload of `column_costs`.
template <typename T, typename = std::enable_if_t<!std::is_const_v<T>>>
std::vector<double> column_costs(context& ctx, method how, const kronecker_curvature& curvature,
                                 host_matrix_view<T> w) {
  return column_costs<T>(ctx, how, curvature, host_matrix_view<const T>(w));
}

/// @brief N:M block costs (METHOD.md §3): for each block of M consecutive columns of a row, the sum
/// of its N smallest element costs. Forwards to `surgeon::block_costs` (select.hpp).
/// @param element_costs `[R, C]`, e.g. from `element_costs`.
/// @param p the N:M pattern; M must divide C.
/// @returns `[R, C/M]`; entry (i, b) covers columns `[b·M, (b+1)·M)` of row i.
/// Cost: O(R·C·log M) comparisons.
/// @throws logic_error if the pattern is invalid for C (`validate(nm_pattern, cols)`) or a cost is NaN.
inline host_matrix<double> block_costs(const host_matrix<double>& element_costs, nm_pattern p) {
  return surgeon::block_costs(element_costs.view(), p);
}

}  // namespace surgeon::cpu
