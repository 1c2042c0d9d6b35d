/// @file update.hpp
/// @brief Backend-neutral options and reports of the OBS weight updates (METHOD.md §4), shared by
/// `cpu/update.hpp` and `cuda/update.hpp` (which also name them `cpu::correlate`, ...).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/curvature.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>

#include <cmath>
#include <utility>
#include <vector>

namespace surgeon {

/// @brief Correlation budget of the element-set update `obs_update` (the paper's `max_correlate`).
///
/// The masked entries Q are split into chunks of whole rows, solved one after the other:
/// - `max > 0`: consecutive rows are grouped while a chunk holds at most `max` masked entries; a
///   single row with more than `max` entries forms a chunk of its own (paper's runs: 2000);
/// - `max == 0`: one solve over all of Q (a |Q|×|Q| system: small layers only);
/// - `max == -1`: one row per chunk.
struct correlate {
  /// Chunk budget: at most this many masked entries a chunk; 0 for one chunk, -1 for one row a chunk.
  index_t max = 2000;
  /// How each chunk's |Q_c|×|Q_c| system `M x = w_Q` is solved.
  enum class solver {
    direct,     ///< form M and factorise it (Cholesky): |Q_c|³/3 flops a chunk
    iterative,  ///< conjugate gradients on M without forming it, preconditioned by its row blocks
    automatic,  ///< iterative for chunks of more than 512 entries, direct otherwise
  };
  /// How each chunk is solved (default: `solver::automatic`).
  solver method = solver::automatic;
  /// Iterative solves stop at ‖M x − w_Q‖ ≤ tolerance·‖w_Q‖ — far below the float weights'
  /// precision, so the result is the direct solve's; a chunk that has not converged after
  /// `max_iterations` is solved directly instead.
  double tolerance = 1e-12;
  /// Iterations after which an unconverged iterative chunk solve falls back to the direct solve.
  int max_iterations = 400;
};

/// @brief What an update did.
struct update_report {
  index_t chunks = 0;  ///< linear systems solved (chunks of `obs_update`, 1 for `obs_update_full`)
  index_t solved = 0;  ///< masked entries of the live sub-layer that the solves removed (|Q|)
  int iterations = 0;  ///< conjugate-gradient iterations (of `obs_update_full`, or summed over the
                       ///< chunks that `obs_update` solved iteratively)
  /// `obs_update_full`: the final ‖r‖/‖b‖ of the conjugate gradients. `obs_update`: the largest
  /// ‖M x − w_Q‖ / ‖w_Q‖ over the chunk solves (0 for a zero right-hand side).
  double relative_residual = 0;
  /// `obs_update_full`: the damped loss ½ tr(ΔᵀĜΔÂ) of the update as the conjugate gradients
  /// track it (kept form: the loss of the iterate; removed form: the dual objective, which
  /// approaches the optimal loss from below). 0 when not tracked.
  double loss = 0;
};

/// @brief How `obs_update_full` solves the whole-mask OBS problem.
enum class pcg_form {
  /// Conjugate gradients on the kept weights U, preconditioned by `R ↦ P_K(Ĝ⁻¹ R Â⁻¹)`: four GEMMs
  /// an iteration and no setup, but many iterations when kept and removed weights are strongly
  /// coupled through Â (ill-conditioned activations).
  kept_kronecker,
  /// Conjugate gradients on the Lagrange multipliers X of the removed weights (the dual system
  /// `P_Q(Ĝ⁻¹ X Â⁻¹) = W_Q`), preconditioned by SparseGPT's column sweep: each row's block
  /// `[Ĝ⁻¹]_ii [Â⁻¹]_{Q_i Q_i}` approximated through `U_{Q_i Q_i}ᵀ U_{Q_i Q_i}` (U the upper Cholesky
  /// factor of Â⁻¹, columns ordered by how many rows remove them, most first), applied by two blocked
  /// triangular sweeps over all rows at once. The coupling through Â, the hard part, is nearly
  /// solved row by row; a few tens of iterations are left at most. Setup C³/3 flops; about R·C²
  /// flops more per iteration than the kept form's four GEMMs; memory O(R·C + C²).
  removed_sweep,
};

/// @brief How `obs_update_full` solves the whole-mask OBS problem, and when it stops.
struct pcg_options {
  /// Stop when ‖r‖ / ‖b‖ <= tolerance (> 0). Removed form: r is the part of the removed weights
  /// W_Q that the update has not yet compensated (it is set to 0 uncompensated at the end); kept
  /// form: the gradient of the loss on the kept weights.
  /// The default, 0.03, leaves 3 % of the removed weights' norm uncompensated; on SmolLM2 it gives
  /// the perplexities of a solve to 1e-3 on both evaluation texts (docs/RESULTS.md).
  double tolerance = 0.03;
  int max_iterations = 200;  ///< at most this many iterations (>= 1)
  /// Which system the conjugate gradients solve (default: the dual, `pcg_form::removed_sweep`).
  pcg_form form = pcg_form::removed_sweep;
  /// The two GEMMs of each iteration, and the removed form's sweeps, in float (inputs rounded,
  /// results widened; about 1.5x faster on CPUs, more on GPUs); the vectors, the dot products and
  /// the final update stay double. To the default tolerance it changes nothing measurable; an
  /// exact solve (tolerance below about 1e-6) needs false.
  bool float_products = true;
};

namespace detail {

/// The checks of a correlation budget, before any work.
inline void check_budget(const char* who, const correlate& budget) {
  SURGEON_EXPECTS(budget.max >= -1, "{}: correlation budget {} must be >= -1", who, budget.max);
  SURGEON_EXPECTS(std::isfinite(budget.tolerance) && budget.tolerance > 0.0 && budget.max_iterations >= 1,
                  "{}: iterative chunk solves need tolerance > 0 and max_iterations >= 1, got {} and {}", who,
                  budget.tolerance, budget.max_iterations);
}

// The masked columns (live positions) of every live row.
inline std::vector<std::vector<index_t>> masked_live_entries(const dead_structure& dead, const mask& pruned) {
  std::vector<std::vector<index_t>> entries(dead.live_rows.size());
  for (std::size_t p = 0; p < dead.live_rows.size(); ++p) {
    const index_t i = dead.live_rows[p];
    for (std::size_t q = 0; q < dead.live_cols.size(); ++q) {
      if (pruned.pruned(i, dead.live_cols[q])) entries[p].push_back(static_cast<index_t>(q));
    }
  }
  return entries;
}

// Groups the live rows that hold masked entries into chunks by the correlation budget.
inline std::vector<std::vector<index_t>> chunk_rows(const std::vector<std::vector<index_t>>& entries,
                                                    index_t max) {
  std::vector<std::vector<index_t>> chunks;
  std::vector<index_t> current;
  index_t count = 0;
  for (std::size_t p = 0; p < entries.size(); ++p) {
    const auto n = static_cast<index_t>(entries[p].size());
    if (n == 0) continue;
    const bool close = !current.empty() && (max == -1 || (max > 0 && count + n > max));
    if (close) {
      chunks.push_back(std::move(current));
      current.clear();
      count = 0;
    }
    current.push_back(static_cast<index_t>(p));
    count += n;
  }
  if (!current.empty()) chunks.push_back(std::move(current));
  return chunks;
}

}  // namespace detail

}  // namespace surgeon
