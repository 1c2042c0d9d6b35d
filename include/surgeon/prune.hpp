/// @file prune.hpp
/// @brief The multi-shot pruning driver (METHOD.md §5) over a caller-provided model adapter, on the
/// CPU backend: `surgeon::pruning_session<Adapter>` and `surgeon::prune`.
///
/// The adapter the driver prunes is described in surgeon/driver.hpp. Both backends are called
/// the same way, the backend chosen by the context (argument-dependent lookup, as for every
/// primitive):
///
/// ```cpp
/// surgeon::cpu::context ctx;                     // or surgeon::cuda::context
/// auto reports = prune(ctx, adapter, options);  // cpu::prune or cuda::prune
/// ```
///
/// `surgeon::prune(adapter, options)` is the CPU form without a context.
#pragma once

#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/prune_backend.hpp>
#include <surgeon/driver.hpp>

#include <functional>
#include <utility>
#include <vector>

namespace surgeon::cpu {

/// @brief The multi-shot driver on the CPU backend (see `basic_pruning_session`).
template <typename Adapter>
using pruning_session = basic_pruning_session<Adapter, prune_backend>;

/// @brief `surgeon::prune`, also found as `cpu::prune` (the same function for every backend).
using surgeon::prune;

}  // namespace surgeon::cpu

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
  return run_pruning(adapter, options, cpu::prune_backend(), on_shot);
}

/// @brief As above, with the CPU backend's own choices, e.g. several matrices updated at once:
/// `surgeon::prune(model, options, surgeon::cpu::prune_backend({/*update_threads=*/8}))`.
template <typename Adapter>
std::vector<shot_report> prune(Adapter& adapter, const prune_options& options, cpu::prune_backend backend,
                               const std::function<void(const shot_report&)>& on_shot = {}) {
  return run_pruning(adapter, options, std::move(backend), on_shot);
}

/// @brief As above, over the processes of `group` (METHOD.md §10): every process of the group
/// calls it with the same options on its own copy of the model (e.g. under `mpirun`, with a
/// `surgeon::mpi::communicator`), and every process ends with the same pruned weights.
/// @throws as `basic_pruning_session`, and communication_error as the communicator.
template <typename Adapter>
std::vector<shot_report> prune(Adapter& adapter, const prune_options& options, cpu::prune_backend backend,
                               communicator& group,
                               const std::function<void(const shot_report&)>& on_shot = {}) {
  return basic_pruning_session<Adapter, cpu::prune_backend>(adapter, options, std::move(backend), group)
      .run(on_shot);
}

}  // namespace surgeon
