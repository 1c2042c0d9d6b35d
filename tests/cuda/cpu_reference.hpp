/// @file cpu_reference.hpp
/// @brief CPU reference results for the CUDA tests, behind plain `std::vector` interfaces.
///
/// Implemented in cpu_reference.cpp (host compiler, CPU backend on Eigen), so that the nvcc
/// translation units of test_cuda never include Eigen.
#pragma once

#include <cstdint>
#include <vector>

namespace surgeon_test {

/// @brief Options of a reference accumulation (mirrors `surgeon::accumulator_options`).
struct reference_options {
  bool bias = false;
  double ema_decay = 0.0;  ///< 0: exact running mean; otherwise the EMA decay in (0, 1)
};

/// @brief A CPU accumulator's result: its mean (row-major `[size, size]`), its raw lower state
/// widened to double (column-major `size x size`, lower triangle; the upper triangle is 0), count.
struct reference_factor {
  std::vector<double> mean;
  std::vector<double> lower;
  std::int64_t count = 0;
};

/// @brief Feeds `batches` (each row-major `[rows, dim]`, float input) to a CPU
/// `factor_accumulator<float>` (`double_accumulator` false) or `<double>` (true).
reference_factor cpu_accumulate(const std::vector<std::vector<float>>& batches, std::int64_t dim,
                                reference_options options, bool double_accumulator);

/// @brief As above with double input.
reference_factor cpu_accumulate(const std::vector<std::vector<double>>& batches, std::int64_t dim,
                                reference_options options, bool double_accumulator);

/// @brief The result of `surgeon::cpu::damp_and_invert` (row-major `[n, n]` matrices).
struct reference_damped {
  bool failed = false;  ///< true when it threw numerical_error
  std::vector<double> damped;
  std::vector<double> inverse;
  double lambda_used = 0.0;
  double shift = 0.0;
  int escalations = 0;
};

/// @brief Runs `surgeon::cpu::damp_and_invert` on the row-major `[n, n]` `factor`.
reference_damped cpu_damp_and_invert(const std::vector<double>& factor, std::int64_t n, double lambda,
                                     bool relative, int max_escalations, double escalation);

/// @brief Ascending eigenvalues of the symmetric row-major `[n, n]` `m` (CPU backend).
std::vector<double> cpu_eigenvalues(const std::vector<double>& m, std::int64_t n);

}  // namespace surgeon_test
