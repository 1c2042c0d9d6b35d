/// @file prune_reference.hpp
/// @brief The CPU driver's result on `toy_model` (prune_reference.cpp, host compiler), for the
/// CUDA driver test.
#pragma once

#include <surgeon/driver.hpp>

#include <vector>

namespace surgeon_test {

/// @brief Every weight of a fresh `toy_model` after `surgeon::prune` (CPU) with `options`, and
/// the achieved sparsity of each shot.
struct reference_pruning {
  std::vector<double> weights;
  std::vector<double> achieved;
};

reference_pruning cpu_prune_toy(const surgeon::prune_options& options);

}  // namespace surgeon_test
