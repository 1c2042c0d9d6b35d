/// @file driver/options.hpp
/// @brief What the pruning driver is asked to do (`prune_options`) and the defaults it fills in
/// (`default_shots`, `default_damping`, `recommended_sequential`), with the reasons measured for
/// them (docs/RESULTS.md). Backend-neutral and free of Eigen.
#pragma once

#include <surgeon/curvature.hpp>
#include <surgeon/error.hpp>
#include <surgeon/first_order.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/method_traits.hpp>
#include <surgeon/update.hpp>

#include <cmath>
#include <cstddef>
#include <optional>

namespace surgeon {

/// @brief LLM Surgeon's weight update for element masks (unstructured and N:M).
enum class update_kind {
  /// The exact OBS update of each matrix's whole mask (`obs_update_full`, by `prune_options::pcg`):
  /// the default, best on text the model was not calibrated on (docs/RESULTS.md).
  whole_mask,
  /// The paper's update: chunks of whole rows of at most `prune_options::budget` removed weights,
  /// each solved exactly, later chunks seeing the earlier ones (`obs_update`).
  chunked,
  /// No update: LLM Surgeon's costs and global threshold only, the weights just masked (an
  /// ablation that separates the costs' effect from the update's).
  none,
};

/// @brief The shot count T of `prune_options::shots` when it is not set: 8 for rows and columns
/// and coupled units (one shot of structured pruning to 70 % destroys a model, eight keep it;
/// docs/RESULTS.md), 1
/// otherwise (with the whole-mask update, five shots gain 3 % on the calibration text's domain and
/// under 1 % on another text, for three times the time).
constexpr int default_shots(structure what) noexcept {
  return removes_lines(what) ? 8 : 1;
}

/// @brief Whether sequential calibration (`prune_options::sequential`) gave the better model for
/// this method and structure on SmolLM2, on the calibration text's domain and on another
/// (docs/RESULTS.md, "Across domains"): SparseGPT and Wanda (their own tools' protocol) and LLM
/// Surgeon's element masks. At 2:4 it is LLM Surgeon's main lever (77.4 vs 82.9 on wikitext-2,
/// 102.9 vs 113.0 on the Debian Policy Manual, seed 4); unstructured it is better on both texts
/// and both seeds by 0.2–1.3 % and needs less than half the peak memory (3.6 vs 8.5 GB) for 1.25×
/// the time. Not rows and columns (no sequential form) nor the other global-threshold methods.
/// `prune_options::sequential` stays false unless the caller sets it, because its cost depends on
/// the adapter: one forward pass per group, cheap only when the adapter resumes each pass from the
/// previous one as the Llama adapter does; `surgeon-prune` sets it from this function. O(1).
constexpr bool recommended_sequential(method how, structure what) noexcept {
  return has_sequential_form(how, what);
}

/// @brief The damping a method gets when `prune_options::damp` is unset. LLM Surgeon: λ_G = 1,
/// λ_A = 0.1. The paper's λ_G = 0.1, λ_A = 0.01 fit the update to the calibration text's factors:
/// on SmolLM2 at 50 % the stronger damping keeps wikitext-2 about equal and lowers the perplexity
/// on a text of another domain by 7–11 %, and the better-conditioned system needs half the
/// conjugate-gradient iterations (docs/RESULTS.md, "Across domains"). Every other method keeps
/// λ_G = 0.1, λ_A = 0.01 (SparseGPT's 1 % of the mean diagonal of H is its authors' setting). O(1).
constexpr damping default_damping(method how) noexcept {
  damping d;
  d.g = how == method::llm_surgeon ? 1.0 : 0.1;
  d.a = how == method::llm_surgeon ? 0.1 : 0.01;
  return d;
}

/// @brief What to prune and how (defaults: LLM Surgeon, unstructured, the whole-mask update,
/// `default_shots`).
struct prune_options {
  method how = method::llm_surgeon;          ///< the method (METHOD.md §3)
  structure what = structure::unstructured;  ///< what is removed together
  nm_pattern pattern{2, 4};                  ///< for structure::n_m
  double sparsity = 0.5;                     ///< final fraction of weights removed from the matrices
  /// T; the target at shot t is t·sparsity/T. Unset: `default_shots(what)`.
  std::optional<int> shots;
  /// λ_G, λ_A (SparseGPT uses λ_A alone). Unset: `default_damping(how)`.
  std::optional<damping> damp;
  update_kind update = update_kind::whole_mask;  ///< LLM Surgeon's update of element masks
  correlate budget{2000};                        ///< `update_kind::chunked`'s chunks
  pcg_options pcg{};                             ///< `update_kind::whole_mask`'s solver
  /// Matrices whose factors are alive at once: 0 = all. With k > 0 the driver runs one
  /// calibration pass per group of k matrices (in adapter order) and frees each group's factors
  /// and inverses before the next, bounding memory at the cost of more passes. The costs of every
  /// group are computed before any weight changes, but the update pass of a group runs after the
  /// earlier groups were updated, so on a real model its curvature is measured on the partly
  /// pruned model (closer to layer-sequential pruning) and results differ slightly from k = 0.
  int group_size = 0;
  /// Bytes the driver's own buffers may hold at once (0 = no limit): with `group_size = 0` the
  /// session then picks the largest group size whose `estimate_working_bytes` fits (0 — all
  /// matrices at once — when that fits), and refuses to start when not even one matrix at a time
  /// fits. An explicit `group_size` is used as given.
  std::size_t memory_budget = 0;
  /// Sequential pruning, the protocol of SparseGPT's and Wanda's own tools: the matrices are
  /// calibrated and pruned group by group in adapter order, each group's calibration pass running
  /// on the model with every earlier group already pruned, so each layer compensates the errors of
  /// the layers before it. A group is a maximal run of consecutive matrices that read the same
  /// input (`sequential_groups`; a Llama block gives q,k,v | o | gate,up | down). For SparseGPT
  /// (uniform per layer) and Wanda (per row, or N:M), which need no global threshold, each group is
  /// masked and updated from its own pass. For LLM Surgeon (element masks), one pass of every
  /// matrix (A and G) gives the costs and the one global threshold first; then each group's pass
  /// re-measures only its input's A (a forward pass), and the group is updated with that A and the
  /// first pass's G. `group_size` must stay 0 (the memory budget is checked against the largest
  /// group). Costs one calibration pass per group; an adapter can make a pass that wants only late
  /// layers cheap by resuming from cached activations, as the Llama adapter does.
  bool sequential = false;
  /// The first-order correction after each shot's update (first_order.hpp; METHOD.md §9): off
  /// unless it asks for steps. Needs an adapter with `fine_tune` (driver.hpp). Every method may use
  /// it; with no steps the run is exactly the run without it.
  first_order_options first_order{};
};

/// @brief Checks `options` and fills in its defaults (`default_shots`, `default_damping`).
/// Cost: O(1).
/// @throws logic_error on inconsistent options: sparsity outside [0, 1), shots < 1, a negative
///         group size, invalid damping, a method without a score for the structure, an N:M sparsity
///         above N/M (for SparseGPT: other than N/M), sequential pruning for a method and structure
///         without a sequential form or with a group size, invalid `first_order` options.
inline prune_options with_defaults(prune_options options) {
  SURGEON_EXPECTS(options.sparsity >= 0.0 && options.sparsity < 1.0, "prune: sparsity {} outside [0, 1)",
                  options.sparsity);
  if (!options.shots) options.shots = default_shots(options.what);
  SURGEON_EXPECTS(*options.shots >= 1, "prune: shots must be >= 1, got {}", *options.shots);
  SURGEON_EXPECTS(options.group_size >= 0, "prune: group_size must be >= 0, got {}", options.group_size);
  if (!options.damp) options.damp = default_damping(options.how);
  validate(*options.damp);
  if (removes_lines(options.what)) {
    SURGEON_EXPECTS(traits_of(options.how).scores_rows_columns,
                    "prune: {} has no row/column score, so it cannot remove {}", to_string(options.how),
                    options.what == structure::coupled ? "coupled units" : "rows and columns");
  }
  if (options.what == structure::n_m) {
    const double most = static_cast<double>(options.pattern.n) / static_cast<double>(options.pattern.m);
    if (options.how == method::sparsegpt) {
      SURGEON_EXPECTS(std::abs(options.sparsity - most) < 1e-12,
                      "prune: SparseGPT's {}:{} prunes N of every M weights (sparsity {}), asked {}",
                      options.pattern.n, options.pattern.m, most, options.sparsity);
    }
    SURGEON_EXPECTS(options.sparsity <= most + 1e-12,
                    "prune: {}:{} removes at most {} of the weights, asked {}", options.pattern.n,
                    options.pattern.m, most, options.sparsity);
  }
  validate(options.first_order);
  if (options.sequential) {
    SURGEON_EXPECTS(has_sequential_form(options.how, options.what),
                    "prune: sequential pruning is for SparseGPT, Wanda and LLM Surgeon's element masks "
                    "(unstructured, N:M); not {} with this structure",
                    to_string(options.how));
    SURGEON_EXPECTS(options.group_size == 0,
                    "prune: sequential pruning makes its own groups (runs of matrices with one input); "
                    "group_size must be 0, got {}",
                    options.group_size);
  }
  return options;
}

}  // namespace surgeon
