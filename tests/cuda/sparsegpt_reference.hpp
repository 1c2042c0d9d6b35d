/// @file sparsegpt_reference.hpp
/// @brief CPU SparseGPT results for the CUDA SparseGPT tests, behind a plain `std::vector`
/// interface.
///
/// Implemented in sparsegpt_reference.cpp (host compiler, CPU backend on Eigen), so that the nvcc
/// translation unit test_cuda_sparsegpt.cu never includes Eigen.
#pragma once

#include <cstdint>
#include <vector>

namespace surgeon_test {

/// @brief What a reference SparseGPT run prunes and with which options (mirrors the arguments of
/// `surgeon::cpu::sparsegpt_prune`).
struct sparsegpt_reference_case {
  bool n_m = false;       ///< N:M pattern (`n`, `m`) instead of the unstructured `sparsity`
  double sparsity = 0.5;  ///< unstructured: fraction of the layer to prune
  std::int64_t n = 2;     ///< N:M: pruned per group
  std::int64_t m = 4;     ///< N:M: group width
  std::int64_t block_size = 128;
  double damping = 0.01;
};

/// @brief The outcome of a reference run.
struct sparsegpt_reference_result {
  bool failed = false;                    ///< true when it threw numerical_error
  std::vector<double> weights;            ///< the pruned weights, row-major `[rows, cols]`, widened
  std::vector<std::uint64_t> mask_words;  ///< the returned mask's words (`surgeon::mask::words()`)
};

/// @brief Runs `surgeon::cpu::sparsegpt_prune` on float weights.
/// @param h row-major `[cols, cols]` input covariance.
/// @param w row-major `[rows, cols]` weights (packed); not modified (the run works on a copy).
/// @param must_prune_words the words of a `[rows, cols]` must_prune mask, or empty for none.
sparsegpt_reference_result cpu_sparsegpt(const std::vector<double>& h, const std::vector<float>& w,
                                         std::int64_t rows, std::int64_t cols,
                                         const sparsegpt_reference_case& run,
                                         const std::vector<std::uint64_t>& must_prune_words = {});

/// @brief As above with double weights.
sparsegpt_reference_result cpu_sparsegpt(const std::vector<double>& h, const std::vector<double>& w,
                                         std::int64_t rows, std::int64_t cols,
                                         const sparsegpt_reference_case& run,
                                         const std::vector<std::uint64_t>& must_prune_words = {});

}  // namespace surgeon_test
