// CPU low-rank adapter runs for test_cuda_first_order.cu (host compiler: the CPU backend sees Eigen
// here, never in the nvcc translation unit).
#include "first_order_reference.hpp"

#include <surgeon/cpu/first_order.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <Eigen/Dense>

namespace surgeon_test {
namespace {

using matrix = surgeon::cpu::low_rank_adapter::matrix;

matrix to_matrix(const std::vector<float>& values, std::int64_t rows, std::int64_t cols) {
  return Eigen::Map<const matrix>(values.data(), rows, cols);
}

std::vector<float> to_vector(const matrix& m) {
  return std::vector<float>(m.data(), m.data() + m.size());
}

}  // namespace

adapter_state cpu_adapter_run(const adapter_start& start, const std::vector<float>& weights,
                              const std::vector<std::vector<adapter_batch>>& rounds,
                              const surgeon::first_order_options& options, bool step) {
  surgeon::cpu::low_rank_adapter adapter(surgeon::mask::from_words(start.rows, start.cols, start.mask_words),
                                         to_matrix(start.b, start.rows, start.rank),
                                         to_matrix(start.a, start.rank, start.cols));
  adapter_state state;
  state.weights = weights;
  for (const std::vector<adapter_batch>& round : rounds) {
    for (const adapter_batch& batch : round) {
      adapter.accumulate(surgeon::make_host_matrix_view(batch.x, batch.tokens, start.cols),
                         surgeon::make_host_matrix_view(batch.gy, batch.tokens, start.rows));
    }
    if (step) {
      adapter.adam_step(options);
      adapter.absorb(surgeon::make_host_matrix_view(state.weights, start.rows, start.cols));
    }
  }
  state.b = to_vector(adapter.b());
  state.a = to_vector(adapter.a());
  state.gradient_b = to_vector(adapter.gradient_b());
  state.gradient_a = to_vector(adapter.gradient_a());
  state.steps = adapter.steps();
  return state;
}

}  // namespace surgeon_test
