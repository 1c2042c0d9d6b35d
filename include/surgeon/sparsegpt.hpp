/// @file sparsegpt.hpp
/// @brief SparseGPT's parameters and argument checks, shared by both backends
/// (`cpu::sparsegpt_prune`, `cuda::sparsegpt_prune`; METHOD.md §6).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/curvature.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>

#include <cmath>

namespace surgeon {

/// @brief Parameters of SparseGPT (both backends).
struct sparsegpt_options {
  /// Columns per block (the original's 128): the unit of mask selection (unstructured) and of the
  /// lazy batch update. Must be >= 1; rounded up to a multiple of M for N:M patterns.
  index_t block_size = 128;
  /// Relative damping λ: `H += λ·mean(diag H)·I`. Must be finite and >= 0. A factorisation that
  /// fails raises λ as `damping`'s defaults say (×10, at most 6 times).
  double damping = 0.01;
};

namespace detail {

/// What a SparseGPT run prunes: a layer sparsity (unstructured) or an N:M pattern.
struct sparsegpt_target {
  bool n_m = false;
  double sparsity = 0.0;
  nm_pattern pattern{};
};

/// The shape and parameter checks of `sparsegpt_prune`, before any work: `h` `[h_rows, h_cols]`
/// square and as wide as the weights `[rows, cols]`, the options, the target and the mask.
inline void check_sparsegpt_arguments(index_t h_rows, index_t h_cols, index_t rows, index_t cols,
                                      const sparsegpt_target& target, const mask* must_prune,
                                      const sparsegpt_options& options) {
  SURGEON_EXPECTS(h_rows == h_cols, "sparsegpt_prune: h [{}, {}] is not square", h_rows, h_cols);
  SURGEON_EXPECTS(h_rows == cols, "sparsegpt_prune: h is [{}, {}] but the weights have {} columns", h_rows,
                  h_cols, cols);
  SURGEON_EXPECTS(options.block_size >= 1, "sparsegpt_prune: block_size must be >= 1, got {}",
                  options.block_size);
  SURGEON_EXPECTS(std::isfinite(options.damping) && options.damping >= 0.0,
                  "sparsegpt_prune: damping must be finite and >= 0, got {}", options.damping);
  if (target.n_m) {
    validate(target.pattern, cols);
  } else {
    SURGEON_EXPECTS(std::isfinite(target.sparsity) && target.sparsity >= 0.0 && target.sparsity < 1.0,
                    "sparsegpt_prune: sparsity must be in [0, 1), got {}", target.sparsity);
  }
  if (must_prune != nullptr) {
    SURGEON_EXPECTS(must_prune->rows() == rows && must_prune->cols() == cols,
                    "sparsegpt_prune: must_prune mask [{}, {}] for weights [{}, {}]", must_prune->rows(),
                    must_prune->cols(), rows, cols);
  }
}

/// The escalation of SparseGPT's damping: `damping`'s defaults.
inline constexpr damping sparsegpt_escalation{};

}  // namespace detail

}  // namespace surgeon
