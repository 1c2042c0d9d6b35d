// The CUDA layer code against the CPU backend on the same seeded layers: factorize (dead structure,
// live sub-factors, damping), element/row/column costs of every method, row/column/rows+columns
// updates, the chunked element-set update at several budgets and the whole-mask PCG update, in
// float (1e-4 relative to the largest weight) and double (1e-10) weights, with dead rows and
// columns and a leading dimension wider than the row. The CPU results come from
// layer_reference.cpp (host compiler), so this nvcc translation unit never includes Eigen.
#include "layer_reference.hpp"
#include "support/catch.hpp"

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/cost.hpp>
#include <surgeon/cuda/curvature.hpp>
#include <surgeon/cuda/update.hpp>
#include <surgeon/curvature.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace {

using surgeon::index_t;
using surgeon::method;
using surgeon::cuda::context;
using surgeon::cuda::device_buffer;
using surgeon_test::layer_case;

/// max |a − b| / max |b|.
double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0.0;
  double scale = 0.0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    diff = std::max(diff, std::fabs(a[k] - b[k]));
    scale = std::max(scale, std::fabs(b[k]));
  }
  return diff / std::max(scale, std::numeric_limits<double>::min());
}

/// XᵀX / T of a random [T, n] X with correlated columns: a realistic, well-posed factor.
std::vector<double> random_factor(index_t n, index_t tokens, std::mt19937_64& engine) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> x(static_cast<std::size_t>(tokens * n));
  for (index_t t = 0; t < tokens; ++t) {
    const double shared = normal(engine);
    for (index_t j = 0; j < n; ++j) x[static_cast<std::size_t>(t * n + j)] = normal(engine) + 0.3 * shared;
  }
  std::vector<double> f(static_cast<std::size_t>(n * n), 0.0);
  for (index_t t = 0; t < tokens; ++t) {
    for (index_t i = 0; i < n; ++i) {
      for (index_t j = 0; j < n; ++j) {
        f[static_cast<std::size_t>(i * n + j)] += x[static_cast<std::size_t>(t * n + i)] *
                                                  x[static_cast<std::size_t>(t * n + j)] /
                                                  static_cast<double>(tokens);
      }
    }
  }
  return f;
}

/// A layer with one zero weight row (dead), one zero weight column and one dead input (A_jj = 0).
layer_case make_layer(index_t rows, index_t cols, bool float_weights, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  layer_case layer;
  layer.rows = rows;
  layer.cols = cols;
  layer.float_weights = float_weights;
  layer.g = random_factor(rows, 2 * rows, engine);
  layer.a = random_factor(cols, 2 * cols, engine);
  layer.w.resize(static_cast<std::size_t>(rows * cols));
  for (auto& v : layer.w)
    v = float_weights ? static_cast<double>(static_cast<float>(normal(engine))) : normal(engine);
  for (index_t j = 0; j < cols; ++j) layer.w[static_cast<std::size_t>(3 * cols + j)] = 0.0;  // row 3 dead
  for (index_t i = 0; i < rows; ++i) layer.w[static_cast<std::size_t>(i * cols + 7)] = 0.0;  // column 7 dead
  for (index_t k = 0; k < cols; ++k) {                                                       // input 5 dead
    layer.a[static_cast<std::size_t>(5 * cols + k)] = 0.0;
    layer.a[static_cast<std::size_t>(k * cols + 5)] = 0.0;
  }
  return layer;
}

/// The layer's factors and weights on the device (weights with leading dimension cols + 3).
template <typename T>
struct device_layer {
  device_buffer<double> g;
  device_buffer<double> a;
  device_buffer<T> w;
  index_t rows = 0;
  index_t cols = 0;
  index_t ld = 0;

  device_layer(const context& ctx, const layer_case& layer)
      : g(ctx, layer.g), a(ctx, layer.a), rows(layer.rows), cols(layer.cols), ld(layer.cols + 3) {
    std::vector<T> padded(static_cast<std::size_t>(rows * ld), T(-7));
    for (index_t i = 0; i < rows; ++i) {
      for (index_t j = 0; j < cols; ++j)
        padded[static_cast<std::size_t>(i * ld + j)] =
            static_cast<T>(layer.w[static_cast<std::size_t>(i * cols + j)]);
    }
    w = device_buffer<T>(ctx, padded);
  }
  surgeon::device_matrix_view<T> weights() { return w.view(rows, cols, ld); }
  surgeon::device_matrix_view<const T> const_weights() const { return w.view(rows, cols, ld); }

  surgeon::cuda::kronecker_curvature factorize(context& ctx, const layer_case& layer) const {
    return surgeon::cuda::factorize<T>(ctx, g.view(rows, rows), a.view(cols, cols),
                                       surgeon::damping{layer.lambda_g, layer.lambda_a}, const_weights());
  }

  /// The weights back on the host, row-major [rows, cols], widened; checks the padding is untouched.
  std::vector<double> host_weights() const {
    const std::vector<T> padded = w.to_host();
    std::vector<double> out(static_cast<std::size_t>(rows * cols));
    for (index_t i = 0; i < rows; ++i) {
      for (index_t j = 0; j < ld; ++j) {
        const T value = padded[static_cast<std::size_t>(i * ld + j)];
        if (j < cols) {
          out[static_cast<std::size_t>(i * cols + j)] = static_cast<double>(value);
        } else {
          REQUIRE(value == T(-7));
        }
      }
    }
    return out;
  }
};

template <typename T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-10;
}

surgeon::mask random_mask(index_t rows, index_t cols, double fraction, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::bernoulli_distribution pick(fraction);
  surgeon::mask m(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (pick(engine)) m.prune(i, j);
    }
  }
  return m;
}

template <typename T>
void check_layer(index_t rows, index_t cols, std::uint64_t seed) {
  const layer_case layer = make_layer(rows, cols, std::is_same_v<T, float>, seed);
  context ctx;
  device_layer<T> dev(ctx, layer);
  const surgeon::cuda::kronecker_curvature curvature = dev.factorize(ctx, layer);
  const surgeon_test::reference_curvature expected = surgeon_test::cpu_curvature(layer);

  SECTION("factorize: dead structure, damping and inverses") {
    REQUIRE(std::vector<std::int64_t>(curvature.dead.live_rows.begin(), curvature.dead.live_rows.end()) ==
            expected.live_rows);
    REQUIRE(std::vector<std::int64_t>(curvature.dead.live_cols.begin(), curvature.dead.live_cols.end()) ==
            expected.live_cols);
    CHECK(curvature.dead.dead_rows == std::vector<index_t>{3});
    CHECK(curvature.dead.dead_cols == std::vector<index_t>{5, 7});
    CHECK(curvature.g.report().lambda_used == expected.lambda_g_used);
    CHECK(curvature.a.report().lambda_used == expected.lambda_a_used);
    const index_t r = curvature.g.order();
    const index_t c = curvature.a.order();
    std::vector<double> g_inverse(static_cast<std::size_t>(r * r));
    std::vector<double> a_inverse(static_cast<std::size_t>(c * c));
    // On the context's (non-blocking) stream: a plain cudaMemcpy would not wait for the inverses.
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(g_inverse.data(), curvature.g.inverse().data(),
                                       g_inverse.size() * sizeof(double), cudaMemcpyDeviceToHost,
                                       ctx.stream()));
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(a_inverse.data(), curvature.a.inverse().data(),
                                       a_inverse.size() * sizeof(double), cudaMemcpyDeviceToHost,
                                       ctx.stream()));
    ctx.synchronize();
    CHECK(relative_difference(g_inverse, expected.g_inverse) < 1e-10);
    CHECK(relative_difference(a_inverse, expected.a_inverse) < 1e-10);
  }

  SECTION("element costs of every method") {
    for (const method how : {method::magnitude, method::wanda, method::lobd, method::kobd, method::sparsegpt,
                             method::llm_surgeon}) {
      INFO("method " << surgeon::to_string(how));
      const device_buffer<double> costs =
          surgeon::cuda::element_costs<T>(ctx, how, curvature, dev.const_weights());
      const std::vector<double> got = costs.to_host();
      const std::vector<double> want = surgeon_test::cpu_element_costs(layer, how);
      CHECK(relative_difference(got, want) < 1e-10);
      for (index_t i = 0; i < rows; ++i) CHECK(got[static_cast<std::size_t>(i * cols + 5)] == 0.0);
    }
  }

  SECTION("row and column costs") {
    for (const method how : {method::magnitude, method::lobd, method::kobd, method::llm_surgeon}) {
      INFO("method " << surgeon::to_string(how));
      CHECK(relative_difference(surgeon::cuda::row_costs<T>(ctx, how, curvature, dev.const_weights()),
                                surgeon_test::cpu_row_costs(layer, how)) < 1e-10);
      CHECK(relative_difference(surgeon::cuda::column_costs<T>(ctx, how, curvature, dev.const_weights()),
                                surgeon_test::cpu_column_costs(layer, how)) < 1e-10);
    }
    CHECK_THROWS_AS(surgeon::cuda::row_costs<T>(ctx, method::wanda, curvature, dev.const_weights()),
                    surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::cuda::column_costs<T>(ctx, method::sparsegpt, curvature, dev.const_weights()),
                    surgeon::logic_error);
  }

  SECTION("rows, columns, rows then columns") {
    const std::vector<index_t> remove_rows{1, 3, 10, 10, rows - 1};
    const std::vector<index_t> remove_cols{2, 7, cols - 2};
    SECTION("rows") {
      surgeon::cuda::update_rows(ctx, curvature, dev.weights(), remove_rows);
      CHECK(relative_difference(dev.host_weights(),
                                surgeon_test::cpu_update_rows_columns(
                                    layer, {remove_rows.begin(), remove_rows.end()}, {})) < tolerance<T>());
    }
    SECTION("columns") {
      surgeon::cuda::update_columns(ctx, curvature, dev.weights(), remove_cols);
      CHECK(relative_difference(dev.host_weights(),
                                surgeon_test::cpu_update_rows_columns(
                                    layer, {}, {remove_cols.begin(), remove_cols.end()})) < tolerance<T>());
    }
    SECTION("both") {
      surgeon::cuda::update_rows_columns(ctx, curvature, dev.weights(), remove_rows, remove_cols);
      const std::vector<double> got = dev.host_weights();
      CHECK(relative_difference(got, surgeon_test::cpu_update_rows_columns(
                                         layer, {remove_rows.begin(), remove_rows.end()},
                                         {remove_cols.begin(), remove_cols.end()})) < tolerance<T>());
      for (index_t j = 0; j < cols; ++j) CHECK(got[static_cast<std::size_t>(10 * cols + j)] == 0.0);
      for (index_t i = 0; i < rows; ++i) CHECK(got[static_cast<std::size_t>(i * cols + 2)] == 0.0);
    }
    SECTION("bad indices") {
      CHECK_THROWS_AS(surgeon::cuda::update_rows(ctx, curvature, dev.weights(), {rows}),
                      surgeon::logic_error);
      CHECK_THROWS_AS(surgeon::cuda::update_columns(ctx, curvature, dev.weights(), {-1}),
                      surgeon::logic_error);
    }
  }

  SECTION("chunked element-set update at several budgets") {
    const surgeon::mask pruned = random_mask(rows, cols, 0.5, seed + 1);
    for (const index_t budget : {index_t{50}, index_t{0}, index_t{-1}, index_t{2000}}) {
      INFO("budget " << budget);
      device_layer<T> fresh(ctx, layer);
      const surgeon::cuda::kronecker_curvature curv = fresh.factorize(ctx, layer);
      surgeon::correlate c;
      c.max = budget;
      const surgeon::update_report report = surgeon::cuda::obs_update(ctx, curv, fresh.weights(), pruned, c);
      const std::vector<double> got = fresh.host_weights();
      CHECK(relative_difference(got, surgeon_test::cpu_obs_update(layer, pruned, budget)) < tolerance<T>());
      CHECK(report.relative_residual < 1e-8);
      CHECK(report.solved > 0);
      for (index_t i = 0; i < rows; ++i) {
        for (index_t j = 0; j < cols; ++j) {
          if (pruned.pruned(i, j)) CHECK(got[static_cast<std::size_t>(i * cols + j)] == 0.0);
        }
      }
    }
  }

  SECTION("whole-mask PCG update") {
    const surgeon::mask pruned = random_mask(rows, cols, 0.5, seed + 2);
    const surgeon::update_report report = surgeon::cuda::obs_update_full(
        ctx, curvature, dev.weights(), pruned,
        surgeon::pcg_options{1e-12, 500, surgeon::pcg_form::removed_sweep, false});
    CHECK(report.chunks == 1);
    CHECK(report.relative_residual <= 1e-12);
    // Both converge to the exact solution; compare with the CPU run to the same tolerance.
    CHECK(relative_difference(dev.host_weights(),
                              surgeon_test::cpu_obs_update_full(layer, pruned, 1e-12, 500)) <
          std::max(tolerance<T>(), 1e-8));
  }

  SECTION("preconditions") {
    CHECK_THROWS_AS(surgeon::cuda::obs_update(ctx, curvature, dev.weights(), surgeon::mask(rows + 1, cols)),
                    surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::cuda::obs_update_full(ctx, curvature, dev.weights(), surgeon::mask(rows, cols),
                                                   surgeon::pcg_options{0.0, 10}),
                    surgeon::logic_error);
    // The CPU's checks of the iterative settings, although the CUDA chunk solves are direct.
    surgeon::correlate no_tolerance;
    no_tolerance.tolerance = 0.0;
    CHECK_THROWS_AS(
        surgeon::cuda::obs_update(ctx, curvature, dev.weights(), surgeon::mask(rows, cols), no_tolerance),
        surgeon::logic_error);
    surgeon::correlate no_iterations;
    no_iterations.max_iterations = 0;
    CHECK_THROWS_AS(
        surgeon::cuda::obs_update(ctx, curvature, dev.weights(), surgeon::mask(rows, cols), no_iterations),
        surgeon::logic_error);
    const T nan = std::numeric_limits<T>::quiet_NaN();
    SURGEON_CUDA_CHECK(
        cudaMemcpyAsync(dev.w.data() + 4, &nan, sizeof(T), cudaMemcpyHostToDevice, ctx.stream()));
    ctx.synchronize();
    CHECK_THROWS_AS(surgeon::cuda::element_costs<T>(ctx, method::magnitude, curvature, dev.const_weights()),
                    surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::cuda::update_rows(ctx, curvature, dev.weights(), {0}), surgeon::logic_error);
  }
}

}  // namespace

TEST_CASE("cuda layer: curvature, costs and updates match the CPU (float weights)", "[cuda][layer]") {
  check_layer<float>(70, 48, 11);
}

TEST_CASE("cuda layer: curvature, costs and updates match the CPU (double weights)", "[cuda][layer]") {
  check_layer<double>(45, 96, 12);
}

TEST_CASE("cuda layer: an entirely dead layer is refused", "[cuda][layer]") {
  layer_case layer = make_layer(8, 8, false, 13);
  std::fill(layer.w.begin(), layer.w.end(), 0.0);
  context ctx;
  device_layer<double> dev(ctx, layer);
  CHECK_THROWS_AS(dev.factorize(ctx, layer), surgeon::numerical_error);
}

TEST_CASE("cuda layer: an OBS system beyond the 32-bit solver limit is refused before any work",
          "[cuda][layer]") {
  context ctx;
  // n = 46341: n² > 2³¹ − 1. The check comes before the pointers are touched or memory allocated.
  CHECK_THROWS_AS(surgeon::cuda::detail::solve_spd(ctx, "test", nullptr, 46341, nullptr, 1),
                  surgeon::logic_error);
  CHECK_NOTHROW(surgeon::cuda::detail::solve_spd(ctx, "test", nullptr, 46340, nullptr, 0));  // k = 0: nothing
}

TEST_CASE("cuda layer: factors beyond the 32-bit eigensolver and Cholesky limits are refused before any work",
          "[cuda][layer]") {
  context ctx;
  // The checks come before the matrix is read or memory allocated: a view of one element will do.
  surgeon::cuda::device_buffer<double> one(ctx, 1);
  const auto square = [&](index_t n) {
    return surgeon::device_matrix_view<const double>(one.data(), n, n, n);
  };
  // syevd's 1 + 6n + 2n² workspace elements must fit an int: n ≤ 32766.
  CHECK_THROWS_AS(surgeon::cuda::symmetric_eigen<double>(ctx, square(32767)), surgeon::logic_error);
  // potrf/potri index n² entries with an int: n ≤ 46340.
  CHECK_THROWS_AS(surgeon::cuda::damp_and_invert(ctx, square(46341), 0.1, surgeon::damping{}),
                  surgeon::logic_error);
}
