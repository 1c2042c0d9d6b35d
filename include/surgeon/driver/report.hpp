/// @file driver/report.hpp
/// @brief What the pruning driver reports after each shot: `shot_report` and its phase timings.
#pragma once

#include <surgeon/config.hpp>

#include <optional>

namespace surgeon {

/// @brief Wall time of one shot, phase by phase, in seconds. Every moment of the shot is counted
/// in exactly one phase (the bookkeeping between two phases in the one that follows), so the
/// phases add up to `shot_report::seconds`. On an asynchronous backend (CUDA) each phase ends with a
/// synchronisation of the backend's stream, so its device work is counted where it is queued.
struct shot_timings {
  /// The adapter's calibration passes (every group's; a grouped LLM Surgeon shot runs two per
  /// group, one for the costs and one for the update).
  double calibration = 0.0;
  /// Factor means, damping, Cholesky inverses and eigendecompositions (for the diagonal methods,
  /// the diagonals' means and the dead-structure test).
  double curvature = 0.0;
  double costs = 0.0;      ///< element, row or column costs of every matrix
  double selection = 0.0;  ///< the global threshold (per row for Wanda, per group for N:M) and the masks
  /// The OBS updates and the masking; for SparseGPT its whole per-matrix pass (its Cholesky
  /// factorisation of H included).
  double update = 0.0;
  /// The first-order correction (`prune_options::first_order`): the adapter's fine-tuning passes,
  /// the adapters' gradients, Adam steps and absorbing into the weights.
  double correction = 0.0;
  double evaluation = 0.0;  ///< `adapter.evaluate(shot)`, when the adapter has one
  /// A run over several processes (METHOD.md §10): summing the factors over the processes and
  /// sending updated weights from their owners to every process (the selections' few all-reduces
  /// count in `selection`). 0 in a single-process run.
  double communication = 0.0;
};

/// @brief What one shot did.
struct shot_report {
  int shot = 0;                    ///< 1-based
  double target_sparsity = 0.0;    ///< t·s/T
  double achieved_sparsity = 0.0;  ///< zeros / parameters over the prunable matrices
  index_t removed = 0;             ///< weights selected this shot (cumulative zeros included)
  double seconds = 0.0;            ///< wall time of the shot (calibration and evaluation included)
  shot_timings timings;            ///< `seconds`, phase by phase
  /// Largest λ_G used after escalation (0 when nothing was damped: SparseGPT, whose damping is its
  /// own, and the diagonal methods, whose costs use undamped diagonals).
  double max_lambda_g = 0.0;
  double max_lambda_a = 0.0;  ///< largest λ_A used after escalation (0 as for `max_lambda_g`)
  int escalations = 0;        ///< total damping escalations
  /// LLM Surgeon's element updates: conjugate-gradient iterations summed over the matrices (the
  /// whole-mask update's, or the chunk solves' of the chunked one), and the largest final relative
  /// residual of a matrix (see `update_report`). 0 for the other methods and structures.
  long long update_iterations = 0;
  double max_update_residual = 0.0;  ///< see `update_iterations`
  int group_size = 0;                ///< matrices per group used (0 = all at once; see memory_budget)
  /// First-order correction steps run after this shot's update (0: none), and the loss the
  /// adapter's `fine_tune` returned at the first and at the last of them (each measured before its
  /// step's update; 0 without steps).
  int correction_steps = 0;
  double correction_first_loss = 0.0;  ///< see `correction_steps`
  double correction_last_loss = 0.0;   ///< see `correction_steps`
  std::optional<double> evaluation;    ///< `adapter.evaluate(shot)` after the shot, when it has one
};

}  // namespace surgeon
