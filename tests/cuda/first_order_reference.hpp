/// @file first_order_reference.hpp
/// @brief CPU low-rank adapter runs (`surgeon::cpu::low_rank_adapter`) for the CUDA first-order
/// tests, behind a plain `std::vector` interface.
///
/// Implemented in first_order_reference.cpp (host compiler, CPU backend on Eigen), so that the nvcc
/// translation unit test_cuda_first_order.cu never includes Eigen.
#pragma once

#include <surgeon/first_order.hpp>

#include <cstdint>
#include <vector>

namespace surgeon_test {

/// @brief An adapter to start from: the mask's words (`surgeon::mask::words()`) of a
/// `[rows, cols]` matrix, and row-major B `[rows, rank]` and A `[rank, cols]`.
struct adapter_start {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  int rank = 0;
  std::vector<std::uint64_t> mask_words;
  std::vector<float> b;
  std::vector<float> a;
};

/// @brief One batch: the layer's input `x` `[tokens, cols]` and output gradient `gy`
/// `[tokens, rows]`, both row-major and packed.
struct adapter_batch {
  std::int64_t tokens = 0;
  std::vector<float> x;
  std::vector<float> gy;
};

/// @brief The adapter and the weights after a run.
struct adapter_state {
  std::vector<float> b;           ///< B `[rows, rank]`
  std::vector<float> a;           ///< A `[rank, cols]`
  std::vector<float> gradient_b;  ///< ∂L/∂B accumulated since the last step
  std::vector<float> gradient_a;  ///< ∂L/∂A accumulated since the last step
  std::vector<float> weights;     ///< the weights `[rows, cols]` after the absorbs
  int steps = 0;                  ///< Adam steps taken
};

/// @brief Runs the CPU adapter from `start` over `rounds`: each round accumulates its batches, then
/// (when `step`) takes one Adam step with `options` and absorbs into a copy of `weights`.
adapter_state cpu_adapter_run(const adapter_start& start, const std::vector<float>& weights,
                              const std::vector<std::vector<adapter_batch>>& rounds,
                              const surgeon::first_order_options& options, bool step);

}  // namespace surgeon_test
