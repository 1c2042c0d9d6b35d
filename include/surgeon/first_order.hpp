/// @file first_order.hpp
/// @brief The first-order correction between shots (METHOD.md §9; the paper's §3.6): low-rank
/// adapters `ΔW = B·A` per prunable matrix, trained with Adam on the next-token loss of the
/// calibration text and absorbed into the weights *through the current mask*, so that every
/// pruned weight stays exactly zero (unstructured, N:M and structured masks alike).
///
/// The OBS update of a shot is second-order: it assumes the gradient of the loss is zero at the
/// weights it starts from, which stops being true once earlier shots have pruned the model. A few
/// steps of gradient descent on a low-rank, masked correction recover part of what the quadratic
/// model misses.
///
/// The adapter of a matrix W `[out, in]` with mask M (1 = kept) adds `M ⊙ (B·A)` to W, B `[out, r]`
/// starting at zero and A `[r, in]` at small seeded random values. Its gradients follow from the
/// layer's input X `[tokens, in]` and output gradient Gy `[tokens, out]` — what the K-FAC hooks
/// already deliver:
///
///     E = M ⊙ (Gyᵀ X)            the weight gradient restricted to the kept weights  [out, in]
///     ∂L/∂B = E · Aᵀ             [out, r]
///     ∂L/∂A = Bᵀ · E             [r, in]
///
/// (without the mask these are `Σ gy (A x)ᵀ` and `Σ Bᵀ gy xᵀ`; with it, the adapter trains exactly
/// the function that `absorb` writes, where an unmasked adapter would be trained for weights that
/// absorbing then discards). For a structured mask M ⊙ (B·A) = (B with removed rows zeroed) ·
/// (A with removed columns zeroed), and the masked gradients equal those of that factorisation.
///
/// The backends implement the adapter (`cpu::low_rank_adapter`, `cuda::low_rank_adapter`) with
/// one interface; the driver (driver/correction.hpp) runs the phase after each shot's update when
/// `prune_options::first_order` asks for steps. This header is backend-neutral and free of Eigen.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace surgeon {

/// @brief The first-order correction's settings (`prune_options::first_order`). The defaults are
/// the paper's (rank 8, Adam with learning rate 1e-4) with no steps: the correction is off until a
/// caller asks for steps. `surgeon-prune --first-order` sets the measured starting point
/// (docs/RESULTS.md, "First-order correction").
struct first_order_options {
  /// Adam steps after each shot's update; each step is one pass of the adapter's `fine_tune` over
  /// its next sequences (0: no correction after the shots before the last).
  int steps = 0;
  /// Further steps after the last shot's (the paper trains longer after the last shot).
  int final_steps = 0;
  int rank = 8;                 ///< r, the adapters' rank
  double learning_rate = 1e-4;  ///< Adam's step size
  double beta1 = 0.9;           ///< Adam's first-moment decay
  double beta2 = 0.999;         ///< Adam's second-moment decay
  double epsilon = 1e-8;        ///< Adam's denominator guard
  std::uint64_t seed = 0;       ///< seeds the adapters' A (with the shot and the matrix index)

  /// @brief True when any step is asked for. O(1).
  bool enabled() const noexcept { return steps > 0 || final_steps > 0; }
  /// @brief The steps after shot `shot` of `shots`: `steps`, plus `final_steps` after the last. O(1).
  int steps_after(int shot, int shots) const noexcept { return steps + (shot == shots ? final_steps : 0); }
};

/// @brief Checks `options`: steps ≥ 0, rank ≥ 1, a positive finite learning rate, betas in [0, 1),
/// epsilon > 0. O(1).
/// @throws logic_error naming the first bad field.
inline void validate(const first_order_options& options) {
  SURGEON_EXPECTS(options.steps >= 0 && options.final_steps >= 0,
                  "first_order: steps must be >= 0, got {} and {} after the last shot", options.steps,
                  options.final_steps);
  SURGEON_EXPECTS(options.rank >= 1, "first_order: rank must be >= 1, got {}", options.rank);
  SURGEON_EXPECTS(std::isfinite(options.learning_rate) && options.learning_rate > 0.0,
                  "first_order: learning rate must be positive, got {}", options.learning_rate);
  SURGEON_EXPECTS(options.beta1 >= 0.0 && options.beta1 < 1.0 && options.beta2 >= 0.0 && options.beta2 < 1.0,
                  "first_order: Adam's betas must lie in [0, 1), got {} and {}", options.beta1,
                  options.beta2);
  SURGEON_EXPECTS(options.epsilon > 0.0, "first_order: Adam's epsilon must be positive, got {}",
                  options.epsilon);
}

/// @brief The initial A `[rank, cols]` (row-major) of an adapter: uniform in ±1/√cols (the
/// Kaiming-uniform bound PyTorch's and PEFT's LoRA use), from a SplitMix64 stream of `seed`, so
/// that every backend and platform starts from the same values. O(rank·cols).
/// @throws logic_error when rank < 1 or cols < 1.
inline std::vector<float> initial_adapter_a(index_t rank, index_t cols, std::uint64_t seed) {
  SURGEON_EXPECTS(rank >= 1 && cols >= 1, "first_order: adapter of rank {} over {} columns", rank, cols);
  std::vector<float> a(static_cast<std::size_t>(rank * cols));
  std::uint64_t state = seed;
  const double bound = 1.0 / std::sqrt(static_cast<double>(cols));
  for (float& value : a) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const double unit = static_cast<double>(z >> 11) * 0x1.0p-53;  // [0, 1)
    value = static_cast<float>((2.0 * unit - 1.0) * bound);
  }
  return a;
}

/// @brief The seed of the adapter of matrix `index` in shot `shot` from the options' seed: distinct
/// streams for every matrix and shot. O(1).
inline std::uint64_t adapter_seed(std::uint64_t seed, int shot, std::size_t index) {
  return seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(shot) * 0xD1B54A32D192ED03ull +
         static_cast<std::uint64_t>(index) * 0xABC98388FB8FAC03ull;
}

}  // namespace surgeon
