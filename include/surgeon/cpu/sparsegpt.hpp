/// @file cpu/sparsegpt.hpp
/// @brief SparseGPT (Frantar & Alistarh 2023) on surgeon's factors, CPU backend (METHOD.md §6).
///
/// SparseGPT is the row-wise OBS baseline: the output side is taken as `G = I` and the input
/// covariance `H = A` (the factor mean of a `factor_accumulator`, [C, C]) is the Hessian of every
/// row. The algorithm, in this library's notation:
///
/// 1. Damp `H ← H + λ·mean(diag H)·I` (λ = `sparsegpt_options::damping`, default 0.01; the mean is
///    over the diagonal of `h` as given). Dead inputs (`H_jj = 0`) get their row and column of H
///    cleared, `H_jj = 1` and `W[:, j] = 0`.
/// 2. `U` = upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`); `H⁻¹` itself comes from a Cholesky
///    factorisation in double. When a factorisation fails, λ is raised ×10 (a zero λ first becomes
///    1e-8) and both are retried, at most 6 times (the defaults of `surgeon::damping`).
/// 3. Columns are processed in blocks of `block_size`. Inside a block the mask is chosen from the
///    scores `W_ij² / U_jj²` of the current (already updated) weights, then the columns are
///    eliminated one by one: `e = W[:, j]` restricted to the rows pruned at column j, divided by
///    `U_jj`; `W[:, j:block_end] −= e · U[j, j:block_end]`; pruned entries are set to exactly 0.
///    After the block, the accumulated errors `E` [R, B] reach the remaining columns through one
///    matrix product (lazy batch update): `W[:, block_end:] −= E · U[block, block_end:]`.
///
/// Because `U[j, j:] / U_jj = [H_F⁻¹]_{j,:} / [H_F⁻¹]_jj` with `F = {j, …, C−1}`, step 3 is, row by
/// row, the exact OBS update for removing each pruned weight given the columns not yet eliminated.
///
/// **Mask rules.**
/// - Unstructured, sparsity s: the block-wise quantile of the original (the lowest-scoring entries
///   of the whole R×B block, not per row), with an exact count. The block of columns `[j0, j1)`
///   prunes `k = round(s·R·j1) − (weights pruned in earlier blocks)` entries, clamped to
///   `[forced entries of the block, R·(j1 − j0)]`. Without forced entries every block prunes
///   `round(s·R·j1) − round(s·R·j0)` and the layer total is exactly `round(s·R·C)`.
///   Ties are broken by the row-major flat index (lower first), so the result is deterministic.
/// - N:M: in every row, each group of M consecutive columns loses its N lowest-scoring weights.
///   As in the original, a group's choice is made when elimination reaches its first column, from
///   the weights updated so far; the block size is rounded up to a multiple of M so that no group
///   straddles two blocks.
/// - **Forced entries** are pruned first, whatever their score: every weight that is exactly 0 on
///   entry (earlier shots, dead inputs) and, in the overloads that take one, every weight of the
///   `must_prune` mask. They count towards the block's (or group's) quota; when a group holds more
///   than N forced entries, all of them are pruned and that group exceeds N. Forced weights are
///   exactly 0 afterwards, so zeros from earlier shots stay zero.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/detail/dense.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/sparsegpt.hpp>
#include <surgeon/view.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

namespace surgeon::cpu {

/// @brief Parameters of SparseGPT (surgeon/sparsegpt.hpp, shared by both backends).
using surgeon::sparsegpt_options;

namespace detail {

using surgeon::detail::sparsegpt_target;

/// The upper Cholesky factor U of `(H + shift·I)⁻¹` (dead inputs: row/column cleared, `H_jj = 1`),
/// with the ×10 escalation of METHOD.md §2. `h` must already be validated. Cost: C³ flops.
inline dense_matrix sparsegpt_inverse_factor(host_matrix_view<const double> h, double lambda,
                                             const std::vector<char>& dead) {
  const index_t c = h.rows();
  dense_matrix base(c, c);
  double trace = 0.0;
  for (index_t i = 0; i < c; ++i) {
    for (index_t j = 0; j <= i; ++j) {
      // Lower triangle, mirrored: the factorisation reads one triangle anyway.
      const bool cleared = dead[static_cast<std::size_t>(i)] != 0 || dead[static_cast<std::size_t>(j)] != 0;
      base(i, j) = base(j, i) = cleared ? 0.0 : h(i, j);
    }
    trace += h(i, i);
  }
  const double mean_diagonal = c == 0 ? 0.0 : trace / static_cast<double>(c);
  dense_matrix factor;
  surgeon::detail::escalate_damping(surgeon::detail::sparsegpt_escalation, lambda, mean_diagonal,
                                    "sparsegpt_prune", fmt::format("the damped {}x{} input covariance", c, c),
                                    [&](double shift) {
                                      dense_matrix work = base;
                                      work.diagonal().array() += shift;
                                      for (index_t j = 0; j < c; ++j) {
                                        if (dead[static_cast<std::size_t>(j)] != 0) work(j, j) = 1.0;
                                      }
                                      if (!cholesky_lower_in_place(work)) return false;
                                      inverse_from_cholesky_in_place(work);  // full symmetric H⁻¹
                                      if (!cholesky_lower_in_place(work)) return false;  // H⁻¹ = L Lᵀ, U = Lᵀ
                                      factor = work.triangularView<Eigen::Lower>().transpose();
                                      return true;
                                    });
  return factor;
}

/// Selects the `count` lowest (score, flat index) candidates; returns their flat indices.
inline std::vector<index_t> sparsegpt_lowest(std::vector<std::pair<double, index_t>>& candidates,
                                             index_t count) {
  std::vector<index_t> chosen;
  if (count <= 0) return chosen;
  const auto k = static_cast<std::size_t>(std::min<index_t>(count, static_cast<index_t>(candidates.size())));
  if (k < candidates.size()) {
    std::nth_element(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(k),
                     candidates.end());
  }
  chosen.reserve(k);
  for (std::size_t p = 0; p < k; ++p) chosen.push_back(candidates[p].second);
  return chosen;
}

/// The whole algorithm; the public overloads only describe the target.
template <typename T>
mask sparsegpt_run(host_matrix_view<const double> h, host_matrix_view<T> w, const sparsegpt_target& target,
                   const mask* must_prune, const sparsegpt_options& options) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "sparsegpt_prune: float or double weights");
  const index_t rows = w.rows();
  const index_t cols = w.cols();
  surgeon::detail::check_sparsegpt_arguments(h.rows(), h.cols(), rows, cols, target, must_prune, options);
  for (index_t i = 0; i < cols; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      SURGEON_EXPECTS(std::isfinite(h(i, j)), "sparsegpt_prune: non-finite h entry {} at ({}, {})", h(i, j),
                      i, j);
    }
    SURGEON_EXPECTS(h(i, i) >= 0.0, "sparsegpt_prune: h({}, {}) = {} is negative: not a covariance", i, i,
                    h(i, i));
  }
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      SURGEON_EXPECTS(std::isfinite(w(i, j)), "sparsegpt_prune: non-finite weight {} at ({}, {})",
                      static_cast<double>(w(i, j)), i, j);
    }
  }

  mask pruned(rows, cols);
  if (rows == 0 || cols == 0) return pruned;

  // Dead inputs, the working copy in double (column-major: columns are eliminated), forced entries.
  std::vector<char> dead(static_cast<std::size_t>(cols), 0);
  for (index_t j = 0; j < cols; ++j) dead[static_cast<std::size_t>(j)] = h(j, j) == 0.0 ? 1 : 0;
  dense_matrix work(rows, cols);
  mask forced = must_prune != nullptr ? *must_prune : mask(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      const double value = dead[static_cast<std::size_t>(j)] != 0 ? 0.0 : static_cast<double>(w(i, j));
      work(i, j) = value;
      if (value == 0.0) forced.prune(i, j);
    }
  }
  const dense_matrix u = sparsegpt_inverse_factor(h, options.damping, dead);

  index_t block = std::min(options.block_size, cols);
  if (target.n_m) block = (block + target.pattern.m - 1) / target.pattern.m * target.pattern.m;
  const double total = static_cast<double>(rows);
  index_t pruned_so_far = 0;
  dense_matrix errors(rows, block);
  std::vector<std::pair<double, index_t>> candidates;

  for (index_t j0 = 0; j0 < cols; j0 += block) {
    const index_t j1 = std::min(cols, j0 + block);
    const index_t width = j1 - j0;
    if (!target.n_m) {
      // Block-wise quantile with an exact, cumulatively rounded count.
      index_t forced_here = 0;
      candidates.clear();
      for (index_t i = 0; i < rows; ++i) {
        for (index_t j = j0; j < j1; ++j) {
          if (forced.pruned(i, j)) {
            pruned.prune(i, j);
            ++forced_here;
          } else {
            const double score = work(i, j) * work(i, j) / (u(j, j) * u(j, j));
            candidates.emplace_back(score, i * cols + j);
          }
        }
      }
      const auto cumulative =
          static_cast<index_t>(std::llround(target.sparsity * total * static_cast<double>(j1)));
      const index_t count = std::clamp(cumulative - pruned_so_far, forced_here, rows * width);
      for (const index_t flat : sparsegpt_lowest(candidates, count - forced_here)) {
        pruned.prune(flat / cols, flat % cols);
      }
      pruned_so_far += count;
    }
    errors.setZero();
    for (index_t j = j0; j < j1; ++j) {
      if (target.n_m && (j - j0) % target.pattern.m == 0) {
        // Choose this group's N per row from the weights updated so far.
        const index_t m = target.pattern.m;
        for (index_t i = 0; i < rows; ++i) {
          index_t forced_here = 0;
          candidates.clear();
          for (index_t q = j; q < j + m; ++q) {
            if (forced.pruned(i, q)) {
              pruned.prune(i, q);
              ++forced_here;
            } else {
              candidates.emplace_back(work(i, q) * work(i, q) / (u(q, q) * u(q, q)), q);
            }
          }
          for (const index_t q : sparsegpt_lowest(candidates, target.pattern.n - forced_here))
            pruned.prune(i, q);
        }
      }
      const double d = u(j, j);
      bool any = false;
      for (index_t i = 0; i < rows; ++i) {
        if (pruned.pruned(i, j)) {
          errors(i, j - j0) = work(i, j) / d;
          any = any || work(i, j) != 0.0;
        }
      }
      if (any) {
        work.middleCols(j, j1 - j).noalias() -= errors.col(j - j0) * u.block(j, j, 1, j1 - j);
      }
      for (index_t i = 0; i < rows; ++i) {
        if (pruned.pruned(i, j)) work(i, j) = 0.0;
      }
    }
    if (j1 < cols) {
      // Lazy batch update of the columns after the block: one GEMM.
      work.rightCols(cols - j1).noalias() -= errors.leftCols(width) * u.block(j0, j1, width, cols - j1);
    }
  }

  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) w(i, j) = pruned.pruned(i, j) ? T(0) : static_cast<T>(work(i, j));
  }
  return pruned;
}

}  // namespace detail

/// @brief SparseGPT with unstructured sparsity: prunes `round(s·R·C)` weights of `w` in place with
/// row-wise OBS updates (G = I, H = `h`), see the file comment for the exact rule.
/// @tparam T weight type, float or double (internal arithmetic is double on a copy).
/// @param h input covariance A [C, C], host, symmetric (lower triangle used), undamped.
/// @param w weights [R, C], host, row-major with any `ld`; updated in place, pruned entries exactly 0.
/// @param sparsity fraction of the layer to prune, in [0, 1). Weights already exactly 0 and dead
///        inputs count as pruned first.
/// @param options block size and relative damping of `h`.
/// @return the mask of every pruned weight [R, C] (including the forced ones).
/// Cost: O(R·C² + C³) flops (C³ for the factorisations, R·C² for the lazy updates, R·C·B within
/// blocks); memory O(R·C + C²) doubles.
/// @throws logic_error if `h` is not [C, C], `sparsity` is outside [0, 1), `block_size < 1`, the
///         damping is negative, `w` or `h` holds a non-finite value, or a diagonal entry of `h` is
///         negative; numerical_error if the damped `h` stays indefinite after every escalation.
template <typename T>
mask sparsegpt_prune(context& /*ctx*/, host_matrix_view<const double> h, host_matrix_view<T> w,
                     double sparsity, sparsegpt_options options = {}) {
  detail::sparsegpt_target target;
  target.sparsity = sparsity;
  return detail::sparsegpt_run(h, w, target, nullptr, options);
}

/// @brief SparseGPT with an N:M pattern: in every row, each group of M consecutive columns loses
/// its N lowest-scoring weights, with row-wise OBS updates (G = I, H = `h`).
/// @tparam T weight type, float or double.
/// @param h input covariance A [C, C], host, symmetric (lower triangle used), undamped.
/// @param w weights [R, C], host; updated in place, pruned entries exactly 0.
/// @param pattern N:M with 0 < N <= M and M dividing C. Weights already exactly 0 count towards N.
/// @param options block size (rounded up to a multiple of M) and relative damping of `h`.
/// @return the mask of every pruned weight [R, C].
/// Cost: O(R·C² + C³) flops; memory O(R·C + C²) doubles.
/// @throws logic_error if `h` is not [C, C], the pattern is invalid (N > M, M not dividing C),
///         `block_size < 1`, the damping is negative, or an input is non-finite or `h` has a negative
///         diagonal entry; numerical_error as the unstructured overload.
template <typename T>
mask sparsegpt_prune(context& /*ctx*/, host_matrix_view<const double> h, host_matrix_view<T> w,
                     nm_pattern pattern, sparsegpt_options options = {}) {
  detail::sparsegpt_target target;
  target.n_m = true;
  target.pattern = pattern;
  return detail::sparsegpt_run(h, w, target, nullptr, options);
}

/// @brief Unstructured SparseGPT that also prunes every weight of `must_prune` (e.g. the mask of
/// an earlier shot), whatever its score; those weights count towards `round(s·R·C)` and end exactly 0.
/// @param h input covariance A [C, C], host, symmetric (lower triangle used), undamped.
/// @param w weights [R, C], host; updated in place, pruned entries exactly 0.
/// @param sparsity fraction of the layer to prune, in [0, 1), `must_prune` included.
/// @param must_prune [R, C] mask of weights that must be pruned.
/// @param options block size and relative damping of `h`.
/// Cost, parameters and other throws as the unstructured overload.
/// @throws logic_error also if `must_prune` is not [R, C].
template <typename T>
mask sparsegpt_prune(context& /*ctx*/, host_matrix_view<const double> h, host_matrix_view<T> w,
                     double sparsity, const mask& must_prune, sparsegpt_options options = {}) {
  detail::sparsegpt_target target;
  target.sparsity = sparsity;
  return detail::sparsegpt_run(h, w, target, &must_prune, options);
}

/// @brief N:M SparseGPT that also prunes every weight of `must_prune`; they count towards each
/// group's N (a group with more than N of them loses all of them) and end exactly 0.
/// @param h input covariance A [C, C], host, symmetric (lower triangle used), undamped.
/// @param w weights [R, C], host; updated in place, pruned entries exactly 0.
/// @param pattern N:M with 0 < N <= M and M dividing C.
/// @param must_prune [R, C] mask of weights that must be pruned.
/// @param options block size (rounded up to a multiple of M) and relative damping of `h`.
/// Cost, parameters and other throws as the N:M overload.
/// @throws logic_error also if `must_prune` is not [R, C].
template <typename T>
mask sparsegpt_prune(context& /*ctx*/, host_matrix_view<const double> h, host_matrix_view<T> w,
                     nm_pattern pattern, const mask& must_prune, sparsegpt_options options = {}) {
  detail::sparsegpt_target target;
  target.n_m = true;
  target.pattern = pattern;
  return detail::sparsegpt_run(h, w, target, &must_prune, options);
}

}  // namespace surgeon::cpu
