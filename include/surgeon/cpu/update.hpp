/// @file cpu/update.hpp
/// @brief CPU optimal-brain-surgeon weight updates on a Kronecker curvature (METHOD.md §4): row sets,
/// column sets, rows then columns, correlated element sets chunk by chunk, and the whole mask at
/// once by preconditioned conjugate gradients.
///
/// Every update works on the live sub-layer `W̃[live_rows, live_cols]` of `kronecker_curvature`
/// (index k of `curv.g` is layer row `curv.dead.live_rows[k]`, likewise for columns); dead rows and
/// columns of the weights are written as exactly 0. Weights are `host_matrix_view<T>` of shape
/// `[R, C]` (row-major with leading dimension, view.hpp), `T` = float or double, updated in place;
/// the arithmetic is double throughout and the result is rounded to `T` once at the end. Removed
/// weights are exactly 0 afterwards. Dense products are Eigen GEMMs, which go to OpenBLAS when
/// `EIGEN_USE_BLAS` is defined; Cholesky factorisations go through `cpu/detail/dense.hpp`.
///
/// Notation in the costs: `R`, `C` the live rows and columns, `k` the number of rows or columns
/// removed, `n` the masked entries of one chunk, `m` the rows that chunk touches. Every function
/// also reads and writes the `[R, C]` weights once (O(R·C)) and holds one double copy of the live
/// sub-layer (8·R·C bytes).
#pragma once

#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/curvature.hpp>
#include <surgeon/cpu/detail/dense.hpp>
#include <surgeon/cpu/detail/whole_mask.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/update.hpp>
#include <surgeon/view.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace surgeon::cpu {

/// @brief The correlation budget of `obs_update` (backend-neutral, surgeon/update.hpp).
using correlate = surgeon::correlate;
/// @brief What an update did (surgeon/update.hpp).
using update_report = surgeon::update_report;
/// @brief Stopping rule of `obs_update_full` (surgeon/update.hpp).
using pcg_options = surgeon::pcg_options;

namespace detail {

/// The live sub-layer of a weight matrix in double, with the maps from layer to live indices.
struct live_layer {
  dense_matrix w;                     // [R_live, C_live]
  std::vector<index_t> row_position;  // layer row -> live position, -1 when dead
  std::vector<index_t> col_position;  // layer column -> live position, -1 when dead
};

using surgeon::detail::positions_of;
using surgeon::detail::selected_positions;

// Checks that `w` is the layer `curv` was factorised for, and that every weight is finite.
template <typename T>
void check_update_inputs(const char* who, const kronecker_curvature& curv, host_matrix_view<T> w) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "surgeon updates: weights are float or double");
  const dead_structure& dead = curv.dead;
  const auto live_rows = static_cast<index_t>(dead.live_rows.size());
  const auto live_cols = static_cast<index_t>(dead.live_cols.size());
  SURGEON_EXPECTS(live_rows > 0 && live_cols > 0, "{}: the curvature is empty (not factorised)", who);
  SURGEON_EXPECTS(curv.g.order() == live_rows && curv.a.order() == live_cols &&
                      curv.g.inverse().rows() == live_rows && curv.a.inverse().rows() == live_cols,
                  "{}: factors of order {} and {} do not match {} live rows and {} live columns", who,
                  curv.g.order(), curv.a.order(), live_rows, live_cols);
  const index_t rows = live_rows + static_cast<index_t>(dead.dead_rows.size());
  const index_t cols = live_cols + static_cast<index_t>(dead.dead_cols.size());
  SURGEON_EXPECTS(w.rows() == rows && w.cols() == cols,
                  "{}: weights [{}, {}] are not the [{}, {}] layer the curvature was factorised for", who,
                  w.rows(), w.cols(), rows, cols);
  for (std::size_t k = 0; k < dead.live_rows.size(); ++k) {
    SURGEON_EXPECTS(dead.live_rows[k] >= 0 && dead.live_rows[k] < rows &&
                        (k == 0 || dead.live_rows[k] > dead.live_rows[k - 1]),
                    "{}: live row {} at position {} is out of range or not ascending", who, dead.live_rows[k],
                    k);
  }
  for (std::size_t k = 0; k < dead.live_cols.size(); ++k) {
    SURGEON_EXPECTS(dead.live_cols[k] >= 0 && dead.live_cols[k] < cols &&
                        (k == 0 || dead.live_cols[k] > dead.live_cols[k - 1]),
                    "{}: live column {} at position {} is out of range or not ascending", who,
                    dead.live_cols[k], k);
  }
  for (index_t i = 0; i < w.rows(); ++i) {
    const T* row = w.row(i);
    for (index_t j = 0; j < w.cols(); ++j) {
      SURGEON_EXPECTS(std::isfinite(row[j]), "{}: weight ({}, {}) is not finite ({})", who, i, j, row[j]);
    }
  }
}

template <typename T>
live_layer gather_live(const kronecker_curvature& curv, host_matrix_view<T> w) {
  live_layer layer;
  layer.row_position = positions_of(curv.dead.live_rows, w.rows());
  layer.col_position = positions_of(curv.dead.live_cols, w.cols());
  const auto rows = static_cast<index_t>(curv.dead.live_rows.size());
  const auto cols = static_cast<index_t>(curv.dead.live_cols.size());
  layer.w.resize(rows, cols);
  for (index_t p = 0; p < rows; ++p) {
    const T* row = w.row(curv.dead.live_rows[static_cast<std::size_t>(p)]);
    for (index_t q = 0; q < cols; ++q)
      layer.w(p, q) = static_cast<double>(row[curv.dead.live_cols[static_cast<std::size_t>(q)]]);
  }
  return layer;
}

// Writes the live sub-layer back into `w`; dead rows and columns become exactly 0.
template <typename T>
void scatter_live(const live_layer& layer, host_matrix_view<T> w) {
  for (index_t i = 0; i < w.rows(); ++i) {
    T* row = w.row(i);
    const index_t p = layer.row_position[static_cast<std::size_t>(i)];
    for (index_t j = 0; j < w.cols(); ++j) {
      const index_t q = layer.col_position[static_cast<std::size_t>(j)];
      row[j] = (p < 0 || q < 0) ? T(0) : static_cast<T>(layer.w(p, q));
    }
  }
}

// Solves the symmetric positive definite system m x = rhs (Cholesky, LDLT when Cholesky fails).
// Cost: n³/3 + 2n²·k flops for an [n, n] system with k right-hand sides.
inline dense_matrix solve_spd(const char* who, const dense_matrix& m, const dense_matrix& rhs) {
  dense_matrix factor = m;
  if (cholesky_lower_in_place(factor)) {
    dense_matrix x = rhs;
    factor.triangularView<Eigen::Lower>().solveInPlace(x);
    factor.triangularView<Eigen::Lower>().transpose().solveInPlace(x);
    return x;
  }
  const Eigen::LDLT<dense_matrix> ldlt(m);
  if (ldlt.info() != Eigen::Success) {
    SURGEON_THROW(numerical_error, "{}: the {}x{} OBS system could not be factorised", who, m.rows(),
                  m.cols());
  }
  return ldlt.solve(rhs);
}

// Row-set or column-set OBS on the live sub-layer (METHOD.md §4), with `inverse` the removed
// side's Ĝ⁻¹ (rows) or Â⁻¹ (columns) and P the positions:
//   rows:    ΔW = −Ĝ⁻¹[:,P] ([Ĝ⁻¹]_PP)⁻¹ W[P,:]
//   columns: ΔW = −W[:,P] ([Â⁻¹]_PP)⁻¹ Â⁻¹[P,:]
// i.e. ΔW = −left · block⁻¹ · right, then the removed lines are set to 0.
inline void remove_lines(const char* who, const dense_matrix& inverse, dense_matrix& w,
                         const std::vector<index_t>& positions, bool rows) {
  const auto k = static_cast<index_t>(positions.size());
  if (k == 0) return;
  dense_matrix left(w.rows(), k);   // Ĝ⁻¹[:, P] or W[:, P]
  dense_matrix right(k, w.cols());  // W[P, :] or Â⁻¹[P, :]
  dense_matrix block(k, k);         // the inverse's [P, P]
  for (index_t b = 0; b < k; ++b) {
    const index_t pb = positions[static_cast<std::size_t>(b)];
    const dense_matrix& left_source = rows ? inverse : w;
    const dense_matrix& right_source = rows ? w : inverse;
    left.col(b) = left_source.col(pb);
    right.row(b) = right_source.row(pb);
    for (index_t a = 0; a < k; ++a) block(a, b) = inverse(positions[static_cast<std::size_t>(a)], pb);
  }
  const dense_matrix solved = solve_spd(who, block, right);
  w.noalias() -= left * solved;
  for (const index_t p : positions) {
    if (rows) {
      w.row(p).setZero();
    } else {
      w.col(p).setZero();
    }
  }
}

template <typename T>
void check_mask(const char* who, host_matrix_view<T> w, const mask& pruned) {
  SURGEON_EXPECTS(pruned.rows() == w.rows() && pruned.cols() == w.cols(),
                  "{}: mask [{}, {}] does not fit weights [{}, {}]", who, pruned.rows(), pruned.cols(),
                  w.rows(), w.cols());
}

// The chunked element-set OBS of METHOD.md §4; `dense_product` selects ΔW = −Ĝ⁻¹ Z Â⁻¹ instead of
// the sparse-row form −Ĝ⁻¹[:,rows] (Z[rows,:] Â⁻¹).
// Solves one chunk's system M x = w_Q without forming M, by conjugate gradients.
//
// The chunk holds m rows; row a owns the entries S_a (columns of the live sub-layer), and
// M = E_Qᵀ (Ĝ⁻¹[rows, rows] ⊗ Â⁻¹) E_Q. A product M·v scatters v into Z [m, C] and gathers
// (Ĝ⁻¹[rows, rows] · (Z Â⁻¹)) on Q: 2m·C² + 2m²·C flops, no |Q|² memory. The preconditioner is M's
// block diagonal, B_a = [Ĝ⁻¹]_aa · Â⁻¹[S_a, S_a], factorised once per row (|S_a|³/3 flops); with
// exact Kronecker structure the preconditioned system would have only m distinct eigenvalues, so
// CG needs few iterations. Returns false (and leaves x unspecified) if it does not converge.
inline bool solve_chunk_iterative(const dense_matrix& g_inverse, const dense_matrix& a_inverse,
                                  const std::vector<index_t>& rows,
                                  const std::vector<std::vector<index_t>>& entries,
                                  const std::vector<index_t>& offset, const dense_matrix& rhs,
                                  double tolerance, int max_iterations, dense_matrix& x, int& iterations,
                                  double& relative_residual) {
  const auto m = static_cast<index_t>(rows.size());
  const index_t n = offset.back();
  const index_t cols = a_inverse.rows();
  dense_matrix g_rows(m, m);
  for (index_t a = 0; a < m; ++a) {
    for (index_t b = 0; b < m; ++b)
      g_rows(a, b) = g_inverse(rows[static_cast<std::size_t>(a)], rows[static_cast<std::size_t>(b)]);
  }
  std::vector<dense_matrix> blocks(static_cast<std::size_t>(m));
  for (index_t a = 0; a < m; ++a) {
    const std::vector<index_t>& s = entries[static_cast<std::size_t>(rows[static_cast<std::size_t>(a)])];
    const auto size = static_cast<index_t>(s.size());
    dense_matrix& block = blocks[static_cast<std::size_t>(a)];
    block.resize(size, size);
    for (index_t q = 0; q < size; ++q) {
      for (index_t p = q; p < size; ++p)
        block(p, q) =
            g_rows(a, a) * a_inverse(s[static_cast<std::size_t>(p)], s[static_cast<std::size_t>(q)]);
    }
    if (!cholesky_lower_in_place(block)) return false;
  }
  dense_matrix z = dense_matrix::Zero(m, cols);
  dense_matrix za(m, cols);
  dense_matrix y(m, cols);
  auto apply_m = [&](const dense_matrix& v, dense_matrix& out) {
    for (index_t a = 0; a < m; ++a) {
      const std::vector<index_t>& s = entries[static_cast<std::size_t>(rows[static_cast<std::size_t>(a)])];
      for (std::size_t k = 0; k < s.size(); ++k)
        z(a, s[k]) = v(offset[static_cast<std::size_t>(a)] + static_cast<index_t>(k), 0);
    }
    za.noalias() = z * a_inverse;
    y.noalias() = g_rows * za;
    for (index_t a = 0; a < m; ++a) {
      const std::vector<index_t>& s = entries[static_cast<std::size_t>(rows[static_cast<std::size_t>(a)])];
      for (std::size_t k = 0; k < s.size(); ++k)
        out(offset[static_cast<std::size_t>(a)] + static_cast<index_t>(k), 0) = y(a, s[k]);
    }
  };
  auto apply_preconditioner = [&](const dense_matrix& r, dense_matrix& out) {
    for (index_t a = 0; a < m; ++a) {
      const index_t first = offset[static_cast<std::size_t>(a)];
      const index_t size = offset[static_cast<std::size_t>(a) + 1] - first;
      auto segment = out.middleRows(first, size);
      segment = r.middleRows(first, size);
      const dense_matrix& l = blocks[static_cast<std::size_t>(a)];
      l.triangularView<Eigen::Lower>().solveInPlace(segment);
      l.triangularView<Eigen::Lower>().transpose().solveInPlace(segment);
    }
  };
  const double rhs_norm = rhs.norm();
  x = dense_matrix::Zero(n, 1);
  iterations = 0;
  relative_residual = 0.0;
  if (rhs_norm == 0.0) return true;
  dense_matrix r = rhs;
  dense_matrix zr(n, 1);
  dense_matrix p(n, 1);
  dense_matrix mp(n, 1);
  apply_preconditioner(r, zr);
  p = zr;
  double rz = r.col(0).dot(zr.col(0));
  for (iterations = 1; iterations <= max_iterations; ++iterations) {
    apply_m(p, mp);
    const double curvature = p.col(0).dot(mp.col(0));
    if (!(curvature > 0.0)) return false;
    const double alpha = rz / curvature;
    x.noalias() += alpha * p;
    r.noalias() -= alpha * mp;
    relative_residual = r.norm() / rhs_norm;
    if (relative_residual <= tolerance) return true;
    apply_preconditioner(r, zr);
    const double rz_next = r.col(0).dot(zr.col(0));
    p = zr + (rz_next / rz) * p;
    rz = rz_next;
  }
  return false;
}

template <typename T>
update_report chunked_obs_update(const char* who, const kronecker_curvature& curv, host_matrix_view<T> w,
                                 const mask& pruned, correlate budget, bool dense_product) {
  check_update_inputs(who, curv, w);
  check_mask(who, w, pruned);
  surgeon::detail::check_budget(who, budget);
  live_layer layer = gather_live(curv, w);
  dense_matrix& live = layer.w;
  const dense_matrix& g_inverse = curv.g.inverse();
  const dense_matrix& a_inverse = curv.a.inverse();
  const std::vector<std::vector<index_t>> entries = surgeon::detail::masked_live_entries(curv.dead, pruned);
  const std::vector<std::vector<index_t>> chunks = surgeon::detail::chunk_rows(entries, budget.max);

  update_report report;
  for (const std::vector<index_t>& rows : chunks) {
    const auto m = static_cast<index_t>(rows.size());
    std::vector<index_t> offset(rows.size() + 1, 0);
    for (std::size_t a = 0; a < rows.size(); ++a) {
      offset[a + 1] = offset[a] + static_cast<index_t>(entries[static_cast<std::size_t>(rows[a])].size());
    }
    const index_t n = offset.back();
    dense_matrix rhs(n, 1);
    for (std::size_t b = 0; b < rows.size(); ++b) {
      const std::vector<index_t>& cols_b = entries[static_cast<std::size_t>(rows[b])];
      for (std::size_t l = 0; l < cols_b.size(); ++l)
        rhs(offset[b] + static_cast<index_t>(l), 0) = live(rows[b], cols_b[l]);
    }
    dense_matrix x;
    const bool iterative = budget.method == correlate::solver::iterative ||
                           (budget.method == correlate::solver::automatic && n > 512);
    int iterations = 0;
    double residual = 0.0;
    if (iterative && solve_chunk_iterative(g_inverse, a_inverse, rows, entries, offset, rhs, budget.tolerance,
                                           budget.max_iterations, x, iterations, residual)) {
      report.iterations += iterations;
      report.relative_residual = std::max(report.relative_residual, residual);
    } else {
      // M_kl = [Ĝ⁻¹]_{r_k r_l} [Â⁻¹]_{c_k c_l}, built block by block of row pairs.
      dense_matrix system(n, n);
      for (std::size_t b = 0; b < rows.size(); ++b) {
        const std::vector<index_t>& cols_b = entries[static_cast<std::size_t>(rows[b])];
        for (std::size_t l = 0; l < cols_b.size(); ++l) {
          const index_t column = offset[b] + static_cast<index_t>(l);
          for (std::size_t a = 0; a < rows.size(); ++a) {
            const std::vector<index_t>& cols_a = entries[static_cast<std::size_t>(rows[a])];
            const double g = g_inverse(rows[a], rows[b]);
            for (std::size_t k = 0; k < cols_a.size(); ++k) {
              system(offset[a] + static_cast<index_t>(k), column) = g * a_inverse(cols_a[k], cols_b[l]);
            }
          }
        }
      }
      x = solve_spd(who, system, rhs);
      const double rhs_norm = rhs.norm();
      if (rhs_norm > 0.0) {
        report.relative_residual = std::max(report.relative_residual, (system * x - rhs).norm() / rhs_norm);
      }
    }
    if (dense_product) {
      dense_matrix z = dense_matrix::Zero(live.rows(), live.cols());
      for (std::size_t a = 0; a < rows.size(); ++a) {
        const std::vector<index_t>& cols_a = entries[static_cast<std::size_t>(rows[a])];
        for (std::size_t k = 0; k < cols_a.size(); ++k)
          z(rows[a], cols_a[k]) = x(offset[a] + static_cast<index_t>(k), 0);
      }
      const dense_matrix za = z * a_inverse;
      live.noalias() -= g_inverse * za;
    } else {
      dense_matrix z_rows = dense_matrix::Zero(m, live.cols());  // Z[rows, :]
      dense_matrix g_columns(live.rows(), m);                    // Ĝ⁻¹[:, rows]
      for (std::size_t a = 0; a < rows.size(); ++a) {
        const std::vector<index_t>& cols_a = entries[static_cast<std::size_t>(rows[a])];
        for (std::size_t k = 0; k < cols_a.size(); ++k) {
          z_rows(static_cast<index_t>(a), cols_a[k]) = x(offset[a] + static_cast<index_t>(k), 0);
        }
        g_columns.col(static_cast<index_t>(a)) = g_inverse.col(rows[a]);
      }
      const dense_matrix za = z_rows * a_inverse;
      live.noalias() -= g_columns * za;
    }
    for (const index_t p : rows) {
      for (const index_t q : entries[static_cast<std::size_t>(p)]) live(p, q) = 0.0;
    }
    ++report.chunks;
    report.solved += n;
  }
  // Later chunks disturb the entries removed by earlier ones: zero the whole mask again.
  for (std::size_t p = 0; p < entries.size(); ++p) {
    for (const index_t q : entries[p]) live(static_cast<index_t>(p), q) = 0.0;
  }
  scatter_live(layer, w);
  pruned.apply(w);
  return report;
}

}  // namespace detail

namespace detail {

// The row update, then the column update on the weights it left (the exact joint OBS solution for
// the union), on one gather and scatter of the live sub-layer; removed rows and columns exactly 0.
template <typename T>
void remove_rows_columns(const char* who, const kronecker_curvature& curv, host_matrix_view<T> w,
                         const std::vector<index_t>& rows, const std::vector<index_t>& cols) {
  detail::check_update_inputs(who, curv, w);
  detail::live_layer layer = detail::gather_live(curv, w);
  const std::vector<index_t> row_positions = detail::selected_positions(who, "row", rows, layer.row_position);
  const std::vector<index_t> col_positions =
      detail::selected_positions(who, "column", cols, layer.col_position);
  detail::remove_lines(who, curv.g.inverse(), layer.w, row_positions, true);
  detail::remove_lines(who, curv.a.inverse(), layer.w, col_positions, false);
  detail::scatter_live(layer, w);
  for (const index_t i : rows) {
    for (index_t j = 0; j < w.cols(); ++j) w(i, j) = T(0);
  }
  for (index_t i = 0; i < w.rows(); ++i) {
    for (const index_t j : cols) w(i, j) = T(0);
  }
}

}  // namespace detail

/// @brief Removes a set of whole rows (outputs) with the joint OBS update (METHOD.md §4):
/// `ΔW = −Ĝ⁻¹[:,R] ([Ĝ⁻¹]_RR)⁻¹ W̃[R,:]` on the live sub-layer (A cancels), then `W̃[R,:] = 0`.
///
/// @param curv curvature factorised for this layer (`factorize` with these weights).
/// @param w weights `W̃` [R, C], host, float or double, updated in place; dead rows and columns
///        become exactly 0.
/// @param rows layer row indices to remove, any order; duplicates are ignored, dead rows are just
///        zeroed.
/// Cost: k³/3 + 2k²·C + 2R·k·C flops (k live rows removed); memory O(k² + k·(R + C)) doubles.
/// @throws logic_error if `w` is not the layer `curv` was factorised for, holds a non-finite
///         value, or a row index is outside [0, R); numerical_error if the system is singular.
template <typename T>
void update_rows(context& /*ctx*/, const kronecker_curvature& curv, host_matrix_view<T> w,
                 const std::vector<index_t>& rows) {
  detail::remove_rows_columns("update_rows", curv, w, rows, {});
}

/// @brief Removes a set of whole columns (inputs, or the bias column) with the joint OBS update
/// (METHOD.md §4): `ΔW = −W̃[:,S] ([Â⁻¹]_SS)⁻¹ Â⁻¹[S,:]` on the live sub-layer (G cancels), then
/// `W̃[:,S] = 0`.
///
/// @param curv curvature factorised for this layer.
/// @param w weights `W̃` [R, C], host, float or double, updated in place; dead rows and columns
///        become exactly 0.
/// @param cols layer column indices to remove, any order; duplicates are ignored, dead columns are
///        just zeroed.
/// Cost: k³/3 + 2k²·C + 2R·k·C flops (k live columns removed); memory O(k² + k·(R + C)) doubles.
/// @throws logic_error if `w` is not the layer `curv` was factorised for, holds a non-finite
///         value, or a column index is outside [0, C); numerical_error if the system is singular.
template <typename T>
void update_columns(context& /*ctx*/, const kronecker_curvature& curv, host_matrix_view<T> w,
                    const std::vector<index_t>& cols) {
  detail::remove_rows_columns("update_columns", curv, w, {}, cols);
}

/// @brief Removes rows and columns together: the row update first, then the column update on the
/// weights it left (METHOD.md §4). The sequence equals the exact joint OBS solution for the union of
/// the removed rows and columns; summing two independent updates would not.
///
/// @param curv curvature factorised for this layer.
/// @param w weights `W̃` [R, C], host, float or double, updated in place.
/// @param rows, cols layer indices to remove (duplicates ignored, dead ones just zeroed).
/// Cost: the sum of `update_rows` and `update_columns`, with one gather and scatter of the weights.
/// @throws logic_error and numerical_error as `update_rows` and `update_columns`.
template <typename T>
void update_rows_columns(context& /*ctx*/, const kronecker_curvature& curv, host_matrix_view<T> w,
                         const std::vector<index_t>& rows, const std::vector<index_t>& cols) {
  detail::remove_rows_columns("update_rows_columns", curv, w, rows, cols);
}

/// @brief Correlated OBS update for an element mask, chunk by chunk (METHOD.md §4, the LLM Surgeon
/// update).
///
/// Q = every masked entry in a live row and column, including weights already zero (which keeps
/// them zero). Q is split into chunks of whole rows by `budget` (see `correlate`). Per chunk, with
/// entries (r_k, c_k): `M_kl = [Ĝ⁻¹]_{r_k r_l} [Â⁻¹]_{c_k c_l}`, solve `M x = w_Q` (Cholesky), scatter
/// x into Z and apply the sparse-row form `ΔW = −Ĝ⁻¹[:,rows] (Z[rows,:] Â⁻¹)`, never the dense
/// product. Each chunk sees the weights updated by the previous ones; at the end every masked
/// entry (dead rows and columns included) is set to exactly 0.
///
/// @param curv curvature factorised for this layer.
/// @param w weights `W̃` [R, C], host, float or double, updated in place.
/// @param pruned the mask [R, C] of weights to remove.
/// @param budget the correlation budget.
/// @return chunks solved, |Q|, and the largest relative residual of the chunk solves.
/// Cost per chunk: n² to build M, n³/3 + 4n² for the solve and its residual, 2m·C² + 2R·m·C for the
/// update; memory 2n² + m·(R + C) doubles (n ≤ max unless one row alone exceeds it). Budget 0 makes
/// n = |Q|: |Q|³/3 flops and 16·|Q|² bytes, small layers only.
/// @throws logic_error if the mask or weights do not fit the curvature, a weight is non-finite, or
///         `budget.max < -1`; numerical_error if a chunk system cannot be factorised.
template <typename T>
update_report obs_update(context& /*ctx*/, const kronecker_curvature& curv, host_matrix_view<T> w,
                         const mask& pruned, correlate budget = {}) {
  return detail::chunked_obs_update("obs_update", curv, w, pruned, budget, false);
}

/// @brief The chunked update of `obs_update` with the dense-product form `ΔW = −Ĝ⁻¹ Z Â⁻¹` (for
/// benchmark comparison; same result up to rounding).
///
/// Parameters, result and exceptions as `obs_update`.
/// Cost per chunk: as `obs_update`, but the update is 2R·C² + 2R²·C flops whatever the chunk's rows,
/// and Z takes R·C doubles.
template <typename T>
update_report obs_update_dense(context& /*ctx*/, const kronecker_curvature& curv, host_matrix_view<T> w,
                               const mask& pruned, correlate budget = {}) {
  return detail::chunked_obs_update("obs_update_dense", curv, w, pruned, budget, true);
}

/// @brief Exact OBS for the whole mask at once by preconditioned conjugate gradients (METHOD.md §4).
///
/// Minimises `½ tr(Δᵀ Ĝ Δ Â)` subject to `Δ_Q = −W_Q` on the live sub-layer (Q = the masked live
/// entries, K = the kept ones). With `Δ = Δ₀ + U`, `Δ₀ = −W` on Q and 0 elsewhere, U supported on
/// K, it solves `P_K(Ĝ U Â) = −P_K(Ĝ Δ₀ Â)` (an SPD operator on K) by conjugate gradients from
/// U = 0, preconditioned by `R ↦ P_K(Ĝ⁻¹ R Â⁻¹)` (SPD on K: a principal block of F̂⁻¹). No |Q|×|Q|
/// matrix is formed. Stops at `‖r‖/‖b‖ <= tolerance` or after `max_iterations`; then
/// `W ← W + Δ₀ + U`, every masked entry exactly 0.
///
/// @param curv curvature factorised for this layer.
/// @param w weights `W̃` [R, C], host, float or double, updated in place.
/// @param pruned the mask [R, C] of weights to remove.
/// @param options stopping rule.
/// @return chunks = 1 (0 for an empty Q), solved = |Q|, iterations, final ‖r‖/‖b‖ (0 when b = 0,
///         e.g. every masked weight already zero: then U = 0 and the kept weights are unchanged).
/// Cost: 2R·C(R + C) flops for the right-hand side plus 4R·C(R + C) per iteration (four GEMMs);
/// memory about 8 [R, C] double matrices.
/// @throws logic_error if the mask or weights do not fit the curvature, a weight is non-finite,
///         `tolerance <= 0` (or not finite) or `max_iterations < 1`; numerical_error if the
///         iteration produces a non-finite residual.
template <typename T>
update_report obs_update_full(context& /*ctx*/, const kronecker_curvature& curv, host_matrix_view<T> w,
                              const mask& pruned, pcg_options options = {}) {
  using detail::dense_matrix;
  constexpr const char* who = "obs_update_full";
  detail::check_update_inputs(who, curv, w);
  detail::check_mask(who, w, pruned);
  SURGEON_EXPECTS(std::isfinite(options.tolerance) && options.tolerance > 0.0,
                  "{}: tolerance must be > 0, got {}", who, options.tolerance);
  SURGEON_EXPECTS(options.max_iterations >= 1, "{}: max_iterations must be >= 1, got {}", who,
                  options.max_iterations);
  detail::live_layer layer = detail::gather_live(curv, w);
  dense_matrix& live = layer.w;
  const index_t rows = live.rows();
  const index_t cols = live.cols();
  dense_matrix keep = dense_matrix::Ones(rows, cols);  // indicator of K
  update_report report;
  for (std::size_t p = 0; p < curv.dead.live_rows.size(); ++p) {
    for (std::size_t q = 0; q < curv.dead.live_cols.size(); ++q) {
      if (pruned.pruned(curv.dead.live_rows[p], curv.dead.live_cols[q])) {
        keep(static_cast<index_t>(p), static_cast<index_t>(q)) = 0.0;
        ++report.solved;
      }
    }
  }
  if (report.solved > 0) {
    report.chunks = 1;
    detail::whole_mask_update(who, curv, live, keep, options, report);
  }
  detail::scatter_live(layer, w);
  pruned.apply(w);
  return report;
}

}  // namespace surgeon::cpu
