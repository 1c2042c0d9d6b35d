/// @file layer_reference.hpp
/// @brief CPU reference results for the CUDA layer tests (curvature, costs, updates), behind plain
/// `std::vector` interfaces.
///
/// Implemented in layer_reference.cpp (host compiler, CPU backend on Eigen), so that the nvcc
/// translation units of test_cuda never include Eigen. surgeon/mask.hpp is Eigen-free.
#pragma once

#include <surgeon/mask.hpp>

#include <cstdint>
#include <vector>

namespace surgeon_test {

/// @brief One layer: factors G `[rows, rows]` and A `[cols, cols]` (row-major, symmetric), weights
/// `[rows, cols]` row-major (float-representable values when `float_weights`), the damping.
struct layer_case {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<double> g;
  std::vector<double> a;
  std::vector<double> w;
  bool float_weights = true;  ///< run the CPU on float weights (else double)
  double lambda_g = 0.1;
  double lambda_a = 0.01;
};

/// @brief What the CPU `factorize` found: live lists, λ used, and the damped inverses (row-major).
struct reference_curvature {
  std::vector<std::int64_t> live_rows;
  std::vector<std::int64_t> live_cols;
  std::vector<double> g_inverse;
  std::vector<double> a_inverse;
  double lambda_g_used = 0.0;
  double lambda_a_used = 0.0;
};

reference_curvature cpu_curvature(const layer_case& layer);

/// @brief `cpu::element_costs`, row-major `[rows, cols]`.
std::vector<double> cpu_element_costs(const layer_case& layer, surgeon::method how);
/// @brief `cpu::row_costs` / `cpu::column_costs`.
std::vector<double> cpu_row_costs(const layer_case& layer, surgeon::method how);
std::vector<double> cpu_column_costs(const layer_case& layer, surgeon::method how);

/// @brief The weights (row-major, widened to double) after `cpu::update_rows_columns` (either list
/// may be empty: then it is `update_rows` or `update_columns`).
std::vector<double> cpu_update_rows_columns(const layer_case& layer, const std::vector<std::int64_t>& rows,
                                            const std::vector<std::int64_t>& cols);
/// @brief The weights after `cpu::obs_update` with budget `max` and the direct chunk solver.
std::vector<double> cpu_obs_update(const layer_case& layer, const surgeon::mask& pruned, std::int64_t max);
/// @brief The weights after `cpu::obs_update_full` with the given stopping rule.
std::vector<double> cpu_obs_update_full(const layer_case& layer, const surgeon::mask& pruned,
                                        double tolerance, int max_iterations);

}  // namespace surgeon_test
