// CPU SparseGPT results for test_cuda_sparsegpt.cu (host compiler: the CPU backend sees Eigen here,
// never in the nvcc translation unit).
#include "sparsegpt_reference.hpp"

#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/sparsegpt.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <cstddef>

namespace surgeon_test {
namespace {

template <typename T>
sparsegpt_reference_result run_cpu(const std::vector<double>& h, const std::vector<T>& w, std::int64_t rows,
                                   std::int64_t cols, const sparsegpt_reference_case& run,
                                   const std::vector<std::uint64_t>& must_prune_words) {
  surgeon::cpu::context ctx;
  surgeon::cpu::sparsegpt_options options;
  options.block_size = run.block_size;
  options.damping = run.damping;
  std::vector<T> weights = w;
  const auto h_view = surgeon::make_host_matrix_view(h, cols, cols);
  const auto w_view = surgeon::make_host_matrix_view(weights, rows, cols);
  const surgeon::nm_pattern pattern{run.n, run.m};
  sparsegpt_reference_result result;
  try {
    surgeon::mask pruned;
    if (must_prune_words.empty()) {
      pruned = run.n_m ? surgeon::cpu::sparsegpt_prune(ctx, h_view, w_view, pattern, options)
                       : surgeon::cpu::sparsegpt_prune(ctx, h_view, w_view, run.sparsity, options);
    } else {
      const surgeon::mask must_prune = surgeon::mask::from_words(rows, cols, must_prune_words);
      pruned = run.n_m
                   ? surgeon::cpu::sparsegpt_prune(ctx, h_view, w_view, pattern, must_prune, options)
                   : surgeon::cpu::sparsegpt_prune(ctx, h_view, w_view, run.sparsity, must_prune, options);
    }
    result.mask_words = pruned.words();
  } catch (const surgeon::numerical_error&) {
    result.failed = true;
    return result;
  }
  result.weights.resize(weights.size());
  for (std::size_t k = 0; k < weights.size(); ++k) result.weights[k] = static_cast<double>(weights[k]);
  return result;
}

}  // namespace

sparsegpt_reference_result cpu_sparsegpt(const std::vector<double>& h, const std::vector<float>& w,
                                         std::int64_t rows, std::int64_t cols,
                                         const sparsegpt_reference_case& run,
                                         const std::vector<std::uint64_t>& must_prune_words) {
  return run_cpu(h, w, rows, cols, run, must_prune_words);
}

sparsegpt_reference_result cpu_sparsegpt(const std::vector<double>& h, const std::vector<double>& w,
                                         std::int64_t rows, std::int64_t cols,
                                         const sparsegpt_reference_case& run,
                                         const std::vector<std::uint64_t>& must_prune_words) {
  return run_cpu(h, w, rows, cols, run, must_prune_words);
}

}  // namespace surgeon_test
