/// @file prune.hpp
/// @brief The multi-shot pruning driver (METHOD.md §5) over a caller-provided model adapter, on the
/// CPU backend: `surgeon::pruning_session<Adapter>` and `surgeon::prune`.
///
/// The library never owns the model. The caller describes it through an *adapter*:
///
/// ```cpp
/// struct my_adapter {
///   // The prunable matrices: name, the key of the input they read (layers that read the same
///   // input share one A), and a view of the weights [out, in] in the caller's buffers.
///   std::vector<surgeon::prunable_matrix> matrices();
///   // One calibration pass: feed every prunable matrix's inputs (once per input key) and output
///   // gradients to the sink. `shot` lets the adapter vary or fix its sampling.
///   void calibrate(surgeon::calibration_sink& sink, int shot);
///   // Optional: a quality measure after each shot (e.g. perplexity); lower is better.
///   double evaluate();
/// };
/// ```
///
/// Each shot t of T recomputes the K-FAC factors from the current weights, computes every
/// matrix's costs, takes one global threshold for the target sparsity t·s/T, and applies the
/// method's update. Weights pruned in earlier shots have cost 0 and stay exactly zero.
///
/// The same driver runs on the CUDA backend with `surgeon/cuda/prune.hpp` (same adapter, same
/// options); the schedule itself is in detail/prune_driver.hpp.
#pragma once

#include <surgeon/cpu/prune_backend.hpp>
#include <surgeon/detail/prune_driver.hpp>

#include <functional>
#include <utility>
#include <vector>

namespace surgeon {

/// @brief The multi-shot driver on the CPU backend (see `basic_pruning_session`).
template <typename Adapter>
using pruning_session = basic_pruning_session<Adapter, cpu::prune_backend>;

/// @brief Prunes the adapter's model with the multi-shot schedule of `options`, on the CPU.
/// Cost per shot: one calibration pass per group (the adapter's), O(R³ + C³) per matrix for the
/// curvature, the costs, and the method's update (see cpu/update.hpp).
/// @throws as `basic_pruning_session`.
template <typename Adapter>
std::vector<shot_report> prune(Adapter& adapter, const prune_options& options,
                               const std::function<void(const shot_report&)>& on_shot = {}) {
  pruning_session<Adapter> session(adapter, options);
  return session.run(on_shot);
}

/// @brief As above, with the CPU backend's own choices, e.g. several matrices updated at once:
/// `surgeon::prune(model, options, surgeon::cpu::prune_backend({/*update_threads=*/8}))`.
template <typename Adapter>
std::vector<shot_report> prune(Adapter& adapter, const prune_options& options, cpu::prune_backend backend,
                               const std::function<void(const shot_report&)>& on_shot = {}) {
  pruning_session<Adapter> session(adapter, options, std::move(backend));
  return session.run(on_shot);
}

}  // namespace surgeon
