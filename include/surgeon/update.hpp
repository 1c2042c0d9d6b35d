/// @file update.hpp
/// @brief Backend-neutral options and reports of the OBS weight updates (SPEC.md §4), shared by
/// `cpu/update.hpp` and `cuda/update.hpp` (which also name them `cpu::correlate`, ...).
#pragma once

#include <surgeon/config.hpp>

namespace surgeon {

/// @brief Correlation budget of the element-set update `obs_update` (the paper's `max_correlate`).
///
/// The masked entries Q are split into chunks of whole rows, solved one after the other:
/// - `max > 0`: consecutive rows are grouped while a chunk holds at most `max` masked entries; a
///   single row with more than `max` entries forms a chunk of its own (paper's runs: 2000);
/// - `max == 0`: one solve over all of Q (a |Q|×|Q| system: small layers only);
/// - `max == -1`: one row per chunk.
struct correlate {
  index_t max = 2000;
  /// How each chunk's |Q_c|×|Q_c| system `M x = w_Q` is solved.
  enum class solver {
    direct,     ///< form M and factorise it (Cholesky): |Q_c|³/3 flops a chunk
    iterative,  ///< conjugate gradients on M without forming it, preconditioned by its row blocks
    automatic,  ///< iterative for chunks of more than 512 entries, direct otherwise
  };
  solver method = solver::automatic;
  /// Iterative solves stop at ‖M x − w_Q‖ ≤ tolerance·‖w_Q‖ — far below the float weights'
  /// precision, so the result is the direct solve's; a chunk that has not converged after
  /// `max_iterations` is solved directly instead.
  double tolerance = 1e-12;
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
};

/// @brief Stopping rule of the preconditioned conjugate gradients of `obs_update_full`.
struct pcg_options {
  double tolerance = 1e-3;   ///< stop when ‖r‖ / ‖b‖ <= tolerance (> 0)
  int max_iterations = 100;  ///< at most this many iterations (>= 1)
};

}  // namespace surgeon
