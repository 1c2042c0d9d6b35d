/// @file driver/memory.hpp
/// @brief The pruning driver's working memory: `estimate_working_bytes` for a group size, and the
/// group size a memory budget allows (`choose_group_size`). Backend-neutral and free of Eigen.
#pragma once

#include <surgeon/driver/calibration.hpp>
#include <surgeon/driver/distribution.hpp>
#include <surgeon/driver/options.hpp>
#include <surgeon/error.hpp>
#include <surgeon/method_traits.hpp>

#include <algorithm>
#include <cstddef>
#include <set>
#include <string>
#include <vector>

namespace surgeon {

/// @brief The working memory of one shot in bytes, for groups of `group_size` matrices (0 = all at
/// once): the K-FAC accumulators of a group (one A per input key, one G per matrix, double; their
/// diagonals alone for the diagonal methods, `uses_diagonals_only`), the damped factors and their
/// inverses (double Ĝ, Ĝ⁻¹, Â, Â⁻¹ per matrix: of every matrix when one group holds them all for
/// the update, else of one matrix at a time; none for the diagonal methods), and the costs of every
/// matrix until the threshold (8 bytes per weight; per row and column for rows-cols). It leaves
/// out the model itself, the adapter's calibration buffers and each update's transient solver
/// buffers. The same on both backends (host memory on the CPU, device memory on CUDA, where
/// `costs_on_host` moves the cost term to the host). Cost: O(number of matrices).
/// With `options.sequential` the groups are `sequential_groups` whatever `group_size`, and each
/// group's costs are freed before the next group.
inline std::size_t estimate_working_bytes(const std::vector<prunable_matrix>& matrices,
                                          const prune_options& options, int group_size) {
  const std::vector<std::vector<std::size_t>> groups =
      options.sequential ? sequential_groups(matrices) : fixed_groups(matrices.size(), group_size);
  const method_traits traits = traits_of(options.how);
  const bool needs_a = traits.needs_inputs;
  const bool needs_g = traits.needs_output_gradients;
  const bool updates = options.how == method::llm_surgeon && options.update != update_kind::none;
  const bool keep_all = updates && groups.size() == 1;
  const bool diagonal = uses_diagonals_only(options.how, options.what);
  const auto square = [diagonal](index_t n) {
    return diagonal ? static_cast<double>(n) : static_cast<double>(n) * static_cast<double>(n);
  };
  double costs = 0.0;
  double largest_group_costs = 0.0;
  double largest_curvature = 0.0;
  double all_curvature = 0.0;
  double largest_group_state = 0.0;
  double largest_group_curvature = 0.0;
  for (const std::vector<std::size_t>& group : groups) {
    std::set<std::string> inputs;
    double state = 0.0;
    double group_costs = 0.0;
    double group_curvature = 0.0;
    for (const std::size_t k : group) {
      const prunable_matrix& m = matrices[k];
      const index_t rows = m.weight.rows();
      const index_t cols = m.weight.cols();
      if (needs_a && inputs.insert(m.input_key).second) state += square(cols);
      if (needs_g) state += square(rows);
      // SparseGPT factors H = A in place of the Kronecker pair: about three C² per matrix. The
      // diagonal methods factorise nothing.
      const double curvature = diagonal                           ? 0.0
                               : options.how == method::sparsegpt ? 3.0 * square(cols)
                                                                  : 2.0 * square(rows) + 2.0 * square(cols);
      largest_curvature = std::max(largest_curvature, curvature);
      all_curvature += curvature;
      group_curvature += curvature;
      if (options.how != method::sparsegpt) {
        group_costs += removes_lines(options.what) ? static_cast<double>(rows + cols)
                                                   : static_cast<double>(rows) * static_cast<double>(cols);
      }
    }
    costs += group_costs;
    largest_group_costs = std::max(largest_group_costs, group_costs);
    largest_group_state = std::max(largest_group_state, state);
    largest_group_curvature = std::max(largest_group_curvature, group_curvature);
  }
  // Sequential LLM Surgeon keeps the first pass's factors of every matrix and every cost until the
  // global selection, then one group's A and curvatures at a time.
  const bool sequential_global = options.sequential && options.how == method::llm_surgeon;
  double all_state = 0.0;
  if (sequential_global) {
    std::set<std::string> inputs;
    for (const prunable_matrix& m : matrices) {
      if (inputs.insert(m.input_key).second) all_state += square(m.weight.cols());
      all_state += square(m.weight.rows());
    }
  }
  const double doubles = sequential_global
                             ? all_state + largest_group_state + largest_group_curvature + costs
                             : largest_group_state + (keep_all ? all_curvature : largest_curvature) +
                                   (options.sequential ? largest_group_costs : costs);
  return static_cast<std::size_t>(doubles * static_cast<double>(sizeof(double)));
}

/// @brief The K-FAC accumulators one calibration pass holds, in bytes: those of the largest group
/// (of every matrix for sequential LLM Surgeon's first pass). In a run over several processes
/// every process holds them until they are summed onto their owners. Cost: O(number of matrices).
inline std::size_t estimate_accumulator_bytes(const std::vector<prunable_matrix>& matrices,
                                              const prune_options& options, int group_size) {
  const bool sequential_global = options.sequential && options.how == method::llm_surgeon;
  const std::vector<std::vector<std::size_t>> groups =
      sequential_global
          ? fixed_groups(matrices.size(), 0)
          : (options.sequential ? sequential_groups(matrices) : fixed_groups(matrices.size(), group_size));
  const method_traits traits = traits_of(options.how);
  const bool diagonal = uses_diagonals_only(options.how, options.what);
  double largest = 0.0;
  for (const std::vector<std::size_t>& group : groups) {
    std::set<std::string> inputs;
    double state = 0.0;
    for (const std::size_t k : group) {
      const prunable_matrix& m = matrices[k];
      const auto square = [diagonal](index_t n) {
        return diagonal ? static_cast<double>(n) : static_cast<double>(n) * static_cast<double>(n);
      };
      if (traits.needs_inputs && inputs.insert(m.input_key).second) state += square(m.weight.cols());
      if (traits.needs_output_gradients) state += square(m.weight.rows());
    }
    largest = std::max(largest, state);
  }
  return static_cast<std::size_t>(largest * static_cast<double>(sizeof(double)));
}

/// @brief The working memory of process `rank` of a run over several processes (METHOD.md §10)
/// whose matrices are owned as `owners` says (`plan_owners`): the larger of the accumulators of a
/// calibration pass, which every process holds until they are summed (`estimate_accumulator_bytes`),
/// and what the owned matrices need afterwards (`estimate_working_bytes` over them alone: their
/// accumulators, curvatures and costs). Cost: O(number of matrices).
/// @throws logic_error if `owners` does not have one entry per matrix.
inline std::size_t estimate_process_bytes(const std::vector<prunable_matrix>& matrices,
                                          const prune_options& options, int group_size,
                                          const std::vector<int>& owners, int rank) {
  SURGEON_EXPECTS(owners.size() == matrices.size(), "estimate_process_bytes: {} owners for {} matrices",
                  owners.size(), matrices.size());
  std::vector<prunable_matrix> owned;
  for (std::size_t k = 0; k < matrices.size(); ++k) {
    if (owners[k] == rank) owned.push_back(matrices[k]);
  }
  const std::size_t accumulators = estimate_accumulator_bytes(matrices, options, group_size);
  if (owned.empty()) return accumulators;
  return std::max(accumulators, estimate_working_bytes(owned, options, group_size));
}

/// @brief The largest working memory of any process of a run over `processes` processes with
/// groups of `group_size` matrices: `estimate_process_bytes` over the session's owner plan
/// (`plan_owners` with its groups); `estimate_working_bytes` for one process.
/// Cost: O(processes · number of matrices).
inline std::size_t estimate_largest_process_bytes(const std::vector<prunable_matrix>& matrices,
                                                  const prune_options& options, int group_size,
                                                  int processes) {
  if (processes <= 1) return estimate_working_bytes(matrices, options, group_size);
  const std::vector<std::vector<std::size_t>> groups =
      options.sequential ? sequential_groups(matrices) : fixed_groups(matrices.size(), group_size);
  const std::vector<int> owners = plan_owners(matrices, processes, groups);
  std::size_t largest = 0;
  for (int r = 0; r < processes; ++r) {
    largest = std::max(largest, estimate_process_bytes(matrices, options, group_size, owners, r));
  }
  return largest;
}

/// @brief The group size a session uses: `options.group_size` when set or without a budget;
/// otherwise 0 when everything fits `memory_budget`, else the largest k that fits. Over several
/// `processes` the budget is each process's and the need its largest process's
/// (`estimate_largest_process_bytes`).
/// Cost: O(number of matrices²) estimates at most (times `processes`).
/// @throws logic_error if a budget is set and not even one matrix at a time fits it.
inline int choose_group_size(const std::vector<prunable_matrix>& matrices, const prune_options& options,
                             int processes = 1) {
  const auto need = [&](int group_size) {
    return estimate_largest_process_bytes(matrices, options, group_size, processes);
  };
  if (options.sequential) {
    if (options.memory_budget != 0 && need(0) > options.memory_budget) {
      SURGEON_THROW(logic_error,
                    "prune: sequential pruning's largest group needs about {:.1f} MB of working memory, over "
                    "the budget of {:.1f} MB",
                    static_cast<double>(need(0)) / 1e6, static_cast<double>(options.memory_budget) / 1e6);
    }
    return 0;
  }
  if (options.group_size > 0 || options.memory_budget == 0) return options.group_size;
  if (need(0) <= options.memory_budget) return 0;
  for (std::size_t k = matrices.size(); k >= 1; --k) {
    if (need(static_cast<int>(k)) <= options.memory_budget) return static_cast<int>(k);
  }
  SURGEON_THROW(
      logic_error,
      "prune: even one matrix at a time needs about {:.1f} MB of working memory, over the budget of "
      "{:.1f} MB",
      static_cast<double>(need(1)) / 1e6, static_cast<double>(options.memory_budget) / 1e6);
}

}  // namespace surgeon
