// K-FAC factor accumulation and curvature kernels at LLM shapes.
//
// BM_factor_accumulate times surgeon's symmetric rank-k update (factor_accumulator<float>::add of
// X [tokens, C]); BM_gemm_xtx a plain Eigen GEMM XᵀX of the same X in the same binary. Both report
// GFLOP/s counting the GEMM's 2·tokens·C² flops, so the two figures compare directly (the update
// does half of that work). BM_cholesky_inverse and BM_eigendecomposition time the double-precision
// curvature kernels. Build variants: bench_kfac (the build's default kernels) and bench_kfac_eigen
// (Eigen's own kernels).
#include <surgeon/cpu/curvature.hpp>
#include <surgeon/cpu/kfac.hpp>
#include <surgeon/kfac.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Dense>

#include <random>
#include <vector>

namespace {

using row_major_float = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

std::vector<float> random_tokens(surgeon::index_t tokens, surgeon::index_t dim) {
  std::mt19937 engine(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(tokens * dim));
  for (float& v : x) v = normal(engine);
  return x;
}

void set_gemm_flops(benchmark::State& state, double tokens, double dim) {
  const double flops = 2.0 * tokens * dim * dim;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(surgeon::cpu::context::kernels());
}

void BM_factor_accumulate(benchmark::State& state) {
  const auto dim = static_cast<surgeon::index_t>(state.range(0));
  const auto tokens = static_cast<surgeon::index_t>(state.range(1));
  const std::vector<float> x = random_tokens(tokens, dim);
  surgeon::cpu::context cpu;
  surgeon::factor_accumulator<float> acc(dim);
  const surgeon::host_matrix_view<const float> view(x.data(), tokens, dim);
  for (auto _ : state) {
    acc.add(cpu, view);
    benchmark::DoNotOptimize(acc.lower_data());
    benchmark::ClobberMemory();
  }
  set_gemm_flops(state, static_cast<double>(tokens), static_cast<double>(dim));
}

void BM_factor_accumulate_double(benchmark::State& state) {
  const auto dim = static_cast<surgeon::index_t>(state.range(0));
  const auto tokens = static_cast<surgeon::index_t>(state.range(1));
  const std::vector<float> x = random_tokens(tokens, dim);
  surgeon::cpu::context cpu;
  surgeon::factor_accumulator<double> acc(dim);
  const surgeon::host_matrix_view<const float> view(x.data(), tokens, dim);
  for (auto _ : state) {
    acc.add(cpu, view);
    benchmark::DoNotOptimize(acc.lower_data());
    benchmark::ClobberMemory();
  }
  set_gemm_flops(state, static_cast<double>(tokens), static_cast<double>(dim));
}

void BM_gemm_xtx(benchmark::State& state) {
  const auto dim = static_cast<Eigen::Index>(state.range(0));
  const auto tokens = static_cast<Eigen::Index>(state.range(1));
  const std::vector<float> values = random_tokens(tokens, dim);
  const Eigen::Map<const row_major_float> x(values.data(), tokens, dim);
  Eigen::MatrixXf result = Eigen::MatrixXf::Zero(dim, dim);
  for (auto _ : state) {
    result.noalias() += x.transpose() * x;
    benchmark::DoNotOptimize(result.data());
    benchmark::ClobberMemory();
  }
  set_gemm_flops(state, static_cast<double>(tokens), static_cast<double>(dim));
}

surgeon::host_matrix<double> random_factor(surgeon::index_t dim) {
  // A factor as the accumulator builds it: the mean of x xᵀ over 2·dim tokens (full rank).
  const std::vector<float> x = random_tokens(2 * dim, dim);
  surgeon::cpu::context cpu;
  surgeon::factor_accumulator<double> acc(dim);
  acc.add(cpu, surgeon::host_matrix_view<const float>(x.data(), 2 * dim, dim));
  return acc.mean();
}

void BM_cholesky_inverse(benchmark::State& state) {
  const auto dim = static_cast<surgeon::index_t>(state.range(0));
  const surgeon::host_matrix<double> factor = random_factor(dim);
  surgeon::cpu::context cpu;
  for (auto _ : state) {
    auto damped = surgeon::cpu::damp_and_invert(cpu, factor.view(), 0.01, surgeon::damping{});
    benchmark::DoNotOptimize(damped.inverse().data());
  }
  // potrf n³/3 + potri 2n³/3.
  const double flops = static_cast<double>(dim) * static_cast<double>(dim) * static_cast<double>(dim);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(surgeon::cpu::context::kernels());
}

void BM_eigendecomposition(benchmark::State& state) {
  const auto dim = static_cast<surgeon::index_t>(state.range(0));
  const surgeon::host_matrix<double> factor = random_factor(dim);
  surgeon::cpu::context cpu;
  const auto damped = surgeon::cpu::damp_and_invert(cpu, factor.view(), 0.01, surgeon::damping{});
  for (auto _ : state) {
    surgeon::cpu::damped_factor fresh = damped;  // copies share the cache: decompose a fresh one
    surgeon::cpu::vector values;
    surgeon::cpu::matrix vectors;
    surgeon::cpu::detail::symmetric_eigen(fresh.damped(), values, vectors);
    benchmark::DoNotOptimize(vectors.data());
  }
  state.SetLabel(surgeon::cpu::context::kernels());
}

}  // namespace

BENCHMARK(BM_factor_accumulate)
    ->Args({576, 2048})
    ->Args({1536, 2048})
    ->Args({4096, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_gemm_xtx)
    ->Args({576, 2048})
    ->Args({1536, 2048})
    ->Args({4096, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_factor_accumulate_double)
    ->Args({576, 2048})
    ->Args({1536, 2048})
    ->Args({4096, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_cholesky_inverse)->Arg(576)->Arg(1536)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_eigendecomposition)
    ->Arg(576)
    ->Arg(1536)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);

BENCHMARK_MAIN();
