// Pruning one layer: costs, selection and OBS updates at LLM shapes (SmolLM2's 1536 x 576 MLP
// projection and a 4096 x 4096 projection), float weights, K-FAC factors from correlated data.
//
// BM_obs_update_sparse_rows and BM_obs_update_dense time the same chunked LLM Surgeon update
// (unstructured 50 %, max_correlate 2000) in the sparse-row form −Ĝ⁻¹[:,rows](Z[rows,:]Â⁻¹) and in
// the dense-product form −Ĝ⁻¹ Z Â⁻¹. They run the first `rows` rows of the layer's mask (a fixed
// number of chunks) and report per-chunk time and the extrapolation to the whole layer.
// BM_llm_surgeon_unstructured times costs + selection + the sparse-row update of a whole layer;
// BM_obs_update_full the whole-mask PCG solve; BM_structured_rows_cols the 30 % rows + columns
// pruning; BM_sparsegpt SparseGPT at 50 % on the same layer; BM_kobd_costs_dense / _diagonal a
// K-OBD layer's costs from calibration rows with full factors and with their diagonals alone. "loss" is the
// damped-Fisher loss ½ tr(ΔᵀĜΔÂ) of the change (lower is better; equal between forms of the same update).
#include <surgeon/surgeon.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <utility>
#include <vector>

namespace {

using surgeon::index_t;

struct layer_fixture {
  index_t rows = 0;
  index_t cols = 0;
  std::vector<float> w;
  surgeon::host_matrix<double> a_mean;
  surgeon::cpu::kronecker_curvature curvature;
  surgeon::mask unstructured;  // LLM Surgeon's 50 % mask of the layer
};

// Tokens with a low-rank correlated structure and spread scales, as real activations have.
std::vector<float> correlated_tokens(index_t tokens, index_t dim, unsigned seed) {
  std::mt19937 engine(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int latent = 32;
  std::vector<float> mixing(static_cast<std::size_t>(latent * dim));
  for (float& m : mixing) m = normal(engine);
  std::vector<float> scale(static_cast<std::size_t>(dim));
  for (float& s : scale) s = std::exp(0.5f * normal(engine));
  std::vector<float> z(static_cast<std::size_t>(tokens * latent));
  for (float& v : z) v = normal(engine);
  std::vector<float> x(static_cast<std::size_t>(tokens * dim));
  const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> zm(
      z.data(), tokens, latent);
  const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> mm(
      mixing.data(), latent, dim);
  Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> xm(x.data(), tokens, dim);
  xm.noalias() = zm * mm;
  for (index_t t = 0; t < tokens; ++t) {
    for (index_t j = 0; j < dim; ++j) {
      float& v = x[static_cast<std::size_t>(t * dim + j)];
      v = scale[static_cast<std::size_t>(j)] * (v + 0.3f * normal(engine));
    }
  }
  return x;
}

const layer_fixture& fixture(index_t rows, index_t cols) {
  static std::map<std::pair<index_t, index_t>, std::unique_ptr<layer_fixture>> cache;
  auto& slot = cache[{rows, cols}];
  if (slot) return *slot;
  slot = std::make_unique<layer_fixture>();
  layer_fixture& f = *slot;
  f.rows = rows;
  f.cols = cols;
  surgeon::cpu::context cpu;
  surgeon::factor_accumulator<double> a(cols);
  surgeon::factor_accumulator<double> g(rows);
  const std::vector<float> x = correlated_tokens(2 * cols, cols, 1u);
  const std::vector<float> gy = correlated_tokens(2 * rows, rows, 2u);
  a.add(cpu, surgeon::make_host_matrix_view(x, 2 * cols, cols));
  g.add(cpu, surgeon::make_host_matrix_view(gy, 2 * rows, rows));
  std::mt19937 engine(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  f.w.resize(static_cast<std::size_t>(rows * cols));
  for (float& v : f.w) v = normal(engine) / std::sqrt(static_cast<float>(cols));
  f.a_mean = a.mean();
  const surgeon::host_matrix_view<const float> w(f.w.data(), rows, cols);
  f.curvature = surgeon::cpu::factorize(cpu, g, a, surgeon::damping{0.1, 0.01}, w);
  const auto costs = surgeon::cpu::element_costs(cpu, surgeon::method::llm_surgeon, f.curvature, w);
  f.unstructured = surgeon::select_unstructured({costs.view()}, 0.5).masks.front();
  return f;
}

// ½ tr(Δᵀ Ĝ Δ Â) over the live sub-layer (every row and column is live in these fixtures).
double damped_fisher_loss(const layer_fixture& f, const std::vector<float>& updated) {
  Eigen::MatrixXd delta(f.rows, f.cols);
  for (index_t i = 0; i < f.rows; ++i) {
    for (index_t j = 0; j < f.cols; ++j) {
      const auto k = static_cast<std::size_t>(i * f.cols + j);
      delta(i, j) = static_cast<double>(updated[k]) - static_cast<double>(f.w[k]);
    }
  }
  return 0.5 * (delta.transpose() * f.curvature.g.damped() * delta * f.curvature.a.damped()).trace();
}

surgeon::mask first_rows(const surgeon::mask& m, index_t count) {
  surgeon::mask result(m.rows(), m.cols());
  for (index_t i = 0; i < count; ++i) {
    for (index_t j = 0; j < m.cols(); ++j) {
      if (m.pruned(i, j)) result.prune(i, j);
    }
  }
  return result;
}

template <bool Dense>
void chunked_update(benchmark::State& state) {
  const index_t rows = state.range(0);
  const index_t cols = state.range(1);
  const index_t timed_rows = state.range(2);
  const layer_fixture& f = fixture(rows, cols);
  const surgeon::mask part = first_rows(f.unstructured, timed_rows);
  surgeon::cpu::context cpu;
  surgeon::cpu::update_report report;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<float> w = f.w;
    state.ResumeTiming();
    const surgeon::host_matrix_view<float> view(w.data(), rows, cols);
    report = Dense
                 ? surgeon::cpu::obs_update_dense(cpu, f.curvature, view, part, surgeon::cpu::correlate{2000})
                 : surgeon::cpu::obs_update(cpu, f.curvature, view, part, surgeon::cpu::correlate{2000});
    benchmark::DoNotOptimize(w.data());
  }
  const double chunks = static_cast<double>(report.chunks);
  state.counters["chunks"] = chunks;
  state.counters["s_per_chunk"] =
      benchmark::Counter(chunks, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["s_per_layer_extrapolated"] =
      benchmark::Counter(static_cast<double>(timed_rows) / static_cast<double>(rows),
                         benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_obs_update_sparse_rows(benchmark::State& state) {
  chunked_update<false>(state);
}
void BM_obs_update_dense(benchmark::State& state) {
  chunked_update<true>(state);
}

// range(2): 0 = the default chunk solver (iterative for large chunks), 1 = direct Cholesky.
void BM_llm_surgeon_unstructured(benchmark::State& state) {
  const layer_fixture& f = fixture(state.range(0), state.range(1));
  surgeon::cpu::context cpu;
  surgeon::cpu::correlate budget{2000};
  if (state.range(2) == 1) budget.method = surgeon::cpu::correlate::solver::direct;
  std::vector<float> w;
  surgeon::cpu::update_report report;
  for (auto _ : state) {
    w = f.w;
    const surgeon::host_matrix_view<float> view(w.data(), f.rows, f.cols);
    const auto costs = surgeon::cpu::element_costs(cpu, surgeon::method::llm_surgeon, f.curvature,
                                                   surgeon::host_matrix_view<const float>(view));
    const auto chosen = surgeon::select_unstructured({costs.view()}, 0.5);
    report = surgeon::cpu::obs_update(cpu, f.curvature, view, chosen.masks.front(), budget);
    benchmark::DoNotOptimize(w.data());
  }
  state.counters["loss"] = damped_fisher_loss(f, w);
  state.counters["chunks"] = static_cast<double>(report.chunks);
  state.counters["cg_iterations"] = report.iterations;
  state.SetLabel(state.range(2) == 1 ? "direct" : "iterative");
}

void BM_obs_update_full(benchmark::State& state) {
  const layer_fixture& f = fixture(state.range(0), state.range(1));
  surgeon::cpu::context cpu;
  std::vector<float> w;
  surgeon::cpu::update_report report;
  for (auto _ : state) {
    w = f.w;
    const surgeon::host_matrix_view<float> view(w.data(), f.rows, f.cols);
    report = surgeon::cpu::obs_update_full(cpu, f.curvature, view, f.unstructured,
                                           surgeon::cpu::pcg_options{1e-3, 50});
    benchmark::DoNotOptimize(w.data());
  }
  state.counters["loss"] = damped_fisher_loss(f, w);
  state.counters["iterations"] = report.iterations;
  state.counters["relative_residual"] = report.relative_residual;
}

void BM_structured_rows_cols(benchmark::State& state) {
  const layer_fixture& f = fixture(state.range(0), state.range(1));
  surgeon::cpu::context cpu;
  std::vector<float> w;
  for (auto _ : state) {
    w = f.w;
    const surgeon::host_matrix_view<float> view(w.data(), f.rows, f.cols);
    const surgeon::host_matrix_view<const float> read(view);
    const auto row_costs = surgeon::cpu::row_costs(cpu, surgeon::method::llm_surgeon, f.curvature, read);
    const auto col_costs = surgeon::cpu::column_costs(cpu, surgeon::method::llm_surgeon, f.curvature, read);
    const auto chosen = surgeon::select_rows_columns({row_costs}, {col_costs}, 0.3);
    surgeon::cpu::update_rows_columns(cpu, f.curvature, view, chosen.rows.front(), chosen.cols.front());
    benchmark::DoNotOptimize(w.data());
  }
}

void BM_sparsegpt(benchmark::State& state) {
  const layer_fixture& f = fixture(state.range(0), state.range(1));
  surgeon::cpu::context cpu;
  std::vector<float> w;
  for (auto _ : state) {
    w = f.w;
    surgeon::cpu::sparsegpt_prune(cpu, f.a_mean.view(),
                                  surgeon::host_matrix_view<float>(w.data(), f.rows, f.cols), 0.5);
    benchmark::DoNotOptimize(w.data());
  }
  state.counters["loss"] = damped_fisher_loss(f, w);
}

// K-OBD costs of one layer from `tokens` calibration rows, the way the driver computed them before
// the diagonal path (Diagonal = false: full factor accumulators, cpu::factorize, element_costs) and
// now (Diagonal = true: diagonal_accumulator, diagonal_element_costs). The two give the same costs
// up to rounding ("max_rel_diff", computed once outside the timing).
template <bool Diagonal>
void kobd_layer_costs(benchmark::State& state) {
  const index_t rows = state.range(0);
  const index_t cols = state.range(1);
  const index_t tokens = state.range(2);
  const std::vector<float> x = correlated_tokens(tokens, cols, 4u);
  const std::vector<float> gy = correlated_tokens(tokens, rows, 5u);
  std::mt19937 engine(6);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> weights(static_cast<std::size_t>(rows * cols));
  for (float& v : weights) v = normal(engine);
  const surgeon::host_matrix_view<const float> w(weights.data(), rows, cols);
  surgeon::cpu::context cpu;
  const auto x_view = surgeon::make_host_matrix_view(x, tokens, cols);
  const auto gy_view = surgeon::make_host_matrix_view(gy, tokens, rows);
  const auto dense_costs = [&] {
    surgeon::factor_accumulator<double> a(cols);
    surgeon::factor_accumulator<double> g(rows);
    a.add(cpu, x_view);
    g.add(cpu, gy_view);
    const auto curvature = surgeon::cpu::factorize(cpu, g, a, surgeon::damping{0.1, 0.01}, w);
    return surgeon::cpu::element_costs(cpu, surgeon::method::kobd, curvature, w);
  };
  const auto diagonal_costs = [&] {
    surgeon::diagonal_accumulator a(cols);
    surgeon::diagonal_accumulator g(rows);
    a.add(x_view);
    g.add(gy_view);
    const auto curvature = surgeon::make_diagonal_curvature(g.mean(), a.mean(), w);
    return surgeon::diagonal_element_costs(surgeon::method::kobd, curvature, w);
  };
  surgeon::host_matrix<double> costs;
  for (auto _ : state) {
    costs = Diagonal ? diagonal_costs() : dense_costs();
    benchmark::DoNotOptimize(costs.data());
  }
  const surgeon::host_matrix<double> other = Diagonal ? dense_costs() : diagonal_costs();
  double worst = 0.0;
  for (index_t k = 0; k < costs.size(); ++k) {
    const double scale = std::max(std::abs(other.data()[k]), 1e-300);
    worst = std::max(worst, std::abs(costs.data()[k] - other.data()[k]) / scale);
  }
  state.counters["max_rel_diff"] = worst;
}
void BM_kobd_costs_dense(benchmark::State& state) {
  kobd_layer_costs<false>(state);
}
void BM_kobd_costs_diagonal(benchmark::State& state) {
  kobd_layer_costs<true>(state);
}

}  // namespace

// {rows, cols, tokens}: SmolLM2's MLP down projection (576 x 1536), a 4096² projection and a 7B
// Llama's down projection (4096 x 11008), each from 2048 calibration tokens.
BENCHMARK(BM_kobd_costs_dense)
    ->Args({576, 1536, 2048})
    ->Args({4096, 4096, 2048})
    ->Args({4096, 11008, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_kobd_costs_diagonal)
    ->Args({576, 1536, 2048})
    ->Args({4096, 4096, 2048})
    ->Args({4096, 11008, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);

// {rows, cols, timed rows}: 1536 x 576 has 6 rows (1728 entries) per 2000-entry chunk; in
// 4096 x 4096 each row (2048 entries) is a chunk of its own.
BENCHMARK(BM_obs_update_sparse_rows)
    ->Args({1536, 576, 48})
    ->Args({4096, 4096, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(2);
BENCHMARK(BM_obs_update_dense)
    ->Args({1536, 576, 48})
    ->Args({4096, 4096, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(2);
BENCHMARK(BM_llm_surgeon_unstructured)
    ->Args({1536, 576, 0})
    ->Args({1536, 576, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_obs_update_full)->Args({1536, 576})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_structured_rows_cols)
    ->Args({1536, 576})
    ->Args({4096, 4096})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_sparsegpt)
    ->Args({1536, 576})
    ->Args({4096, 4096})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);

BENCHMARK_MAIN();
