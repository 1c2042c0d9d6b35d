// CPU results for test_cuda_layer.cu (see layer_reference.hpp). Host compiler only.
#include "layer_reference.hpp"

#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/cost.hpp>
#include <surgeon/cpu/curvature.hpp>
#include <surgeon/cpu/update.hpp>
#include <surgeon/types.hpp>
#include <surgeon/view.hpp>

#include <vector>

namespace surgeon_test {
namespace {

using surgeon::index_t;

surgeon::cpu::kronecker_curvature factorize(const layer_case& layer, const std::vector<double>& w) {
  surgeon::cpu::context ctx;
  const surgeon::host_matrix_view<const double> g(layer.g.data(), layer.rows, layer.rows);
  const surgeon::host_matrix_view<const double> a(layer.a.data(), layer.cols, layer.cols);
  const surgeon::damping d{layer.lambda_g, layer.lambda_a};
  return surgeon::cpu::factorize<double>(
      ctx, g, a, d, surgeon::host_matrix_view<const double>(w.data(), layer.rows, layer.cols));
}

/// Runs `body(ctx, curvature, weights view)` on float or double weights as the case asks, and
/// returns the weights widened to double.
template <typename Body>
std::vector<double> with_weights(const layer_case& layer, const Body& body) {
  surgeon::cpu::context ctx;
  const surgeon::cpu::kronecker_curvature curvature = factorize(layer, layer.w);
  if (layer.float_weights) {
    std::vector<float> w(layer.w.begin(), layer.w.end());
    body(ctx, curvature, surgeon::host_matrix_view<float>(w.data(), layer.rows, layer.cols));
    return std::vector<double>(w.begin(), w.end());
  }
  std::vector<double> w = layer.w;
  body(ctx, curvature, surgeon::host_matrix_view<double>(w.data(), layer.rows, layer.cols));
  return w;
}

std::vector<double> row_major(const surgeon::cpu::matrix& m) {
  std::vector<double> out(static_cast<std::size_t>(m.rows() * m.cols()));
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) out[static_cast<std::size_t>(i * m.cols() + j)] = m(i, j);
  }
  return out;
}

}  // namespace

reference_curvature cpu_curvature(const layer_case& layer) {
  const surgeon::cpu::kronecker_curvature curvature = factorize(layer, layer.w);
  reference_curvature result;
  result.live_rows.assign(curvature.dead.live_rows.begin(), curvature.dead.live_rows.end());
  result.live_cols.assign(curvature.dead.live_cols.begin(), curvature.dead.live_cols.end());
  result.g_inverse = row_major(curvature.g.inverse());
  result.a_inverse = row_major(curvature.a.inverse());
  result.lambda_g_used = curvature.g.report().lambda_used;
  result.lambda_a_used = curvature.a.report().lambda_used;
  return result;
}

std::vector<double> cpu_element_costs(const layer_case& layer, surgeon::method how) {
  surgeon::cpu::context ctx;
  const surgeon::cpu::kronecker_curvature curvature = factorize(layer, layer.w);
  const surgeon::host_matrix<double> costs = surgeon::cpu::element_costs(
      ctx, how, curvature, surgeon::host_matrix_view<const double>(layer.w.data(), layer.rows, layer.cols));
  std::vector<double> out(static_cast<std::size_t>(layer.rows * layer.cols));
  for (index_t i = 0; i < layer.rows; ++i) {
    for (index_t j = 0; j < layer.cols; ++j) out[static_cast<std::size_t>(i * layer.cols + j)] = costs(i, j);
  }
  return out;
}

std::vector<double> cpu_row_costs(const layer_case& layer, surgeon::method how) {
  surgeon::cpu::context ctx;
  const surgeon::cpu::kronecker_curvature curvature = factorize(layer, layer.w);
  return surgeon::cpu::row_costs(
      ctx, how, curvature, surgeon::host_matrix_view<const double>(layer.w.data(), layer.rows, layer.cols));
}

std::vector<double> cpu_column_costs(const layer_case& layer, surgeon::method how) {
  surgeon::cpu::context ctx;
  const surgeon::cpu::kronecker_curvature curvature = factorize(layer, layer.w);
  return surgeon::cpu::column_costs(
      ctx, how, curvature, surgeon::host_matrix_view<const double>(layer.w.data(), layer.rows, layer.cols));
}

std::vector<double> cpu_update_rows_columns(const layer_case& layer, const std::vector<std::int64_t>& rows,
                                            const std::vector<std::int64_t>& cols) {
  const std::vector<index_t> r(rows.begin(), rows.end());
  const std::vector<index_t> c(cols.begin(), cols.end());
  return with_weights(layer, [&](surgeon::cpu::context& ctx, const auto& curvature, auto w) {
    surgeon::cpu::update_rows_columns(ctx, curvature, w, r, c);
  });
}

std::vector<double> cpu_obs_update(const layer_case& layer, const surgeon::mask& pruned, std::int64_t max) {
  surgeon::cpu::correlate budget;
  budget.max = max;
  budget.method = surgeon::cpu::correlate::solver::direct;
  return with_weights(layer, [&](surgeon::cpu::context& ctx, const auto& curvature, auto w) {
    surgeon::cpu::obs_update(ctx, curvature, w, pruned, budget);
  });
}

std::vector<double> cpu_obs_update_full(const layer_case& layer, const surgeon::mask& pruned,
                                        double tolerance, int max_iterations) {
  return with_weights(layer, [&](surgeon::cpu::context& ctx, const auto& curvature, auto w) {
    surgeon::cpu::obs_update_full(
        ctx, curvature, w, pruned,
        surgeon::cpu::pcg_options{tolerance, max_iterations, surgeon::pcg_form::removed_sweep, false});
  });
}

}  // namespace surgeon_test
