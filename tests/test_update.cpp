#include <surgeon/cpu/update.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "support/catch.hpp"
#include "support/obs_oracle.hpp"
#include "support/random.hpp"

using surgeon::host_matrix;
using surgeon::host_matrix_view;
using surgeon::index_t;
using surgeon::mask;
using surgeon::cpu::kronecker_curvature;
using surgeon::test::dense;
using surgeon::test::dense_vector;

namespace {

constexpr double oracle_tolerance = 1e-10;

// A layer: factors, row-major weights and its curvature, factorised for those weights.
struct layer {
  index_t rows = 0;
  index_t cols = 0;
  host_matrix<double> g;
  host_matrix<double> a;
  std::vector<double> w;
  kronecker_curvature curv;

  host_matrix_view<double> view() { return host_matrix_view<double>(w.data(), rows, cols); }
  void factorize(surgeon::damping d = {}) {
    surgeon::cpu::context cpu;
    curv = surgeon::cpu::factorize(cpu, g.view(), a.view(), d,
                                   host_matrix_view<const double>(w.data(), rows, cols));
  }
};

layer random_layer(index_t rows, index_t cols, unsigned seed) {
  layer result;
  result.rows = rows;
  result.cols = cols;
  result.g = surgeon::test::random_spd(rows, seed);
  result.a = surgeon::test::random_spd(cols, seed + 1000u);
  result.w = surgeon::test::random_rows<double>(rows, cols, cols, seed + 2000u);
  return result;
}

// The explicit Fisher of the live sub-layer: F = Ĝ_live ⊗ Â_live (row-major vectorisation).
dense fisher(const kronecker_curvature& curv) {
  return surgeon::test::kronecker(curv.g.damped(), curv.a.damped());
}

// The live sub-layer of row-major weights as a dense matrix.
template <typename T>
dense live_part(const kronecker_curvature& curv, const std::vector<T>& w, index_t cols) {
  const auto& rows = curv.dead.live_rows;
  const auto& columns = curv.dead.live_cols;
  dense result(static_cast<index_t>(rows.size()), static_cast<index_t>(columns.size()));
  for (std::size_t p = 0; p < rows.size(); ++p) {
    for (std::size_t q = 0; q < columns.size(); ++q) {
      result(static_cast<index_t>(p), static_cast<index_t>(q)) =
          static_cast<double>(w[static_cast<std::size_t>(rows[p] * cols + columns[q])]);
    }
  }
  return result;
}

// Flat live indices (row-major over the live sub-layer) of the masked live entries, optionally
// restricted to some layer rows.
std::vector<index_t> live_indices(const kronecker_curvature& curv, const mask& m,
                                  const std::vector<index_t>& only_rows = {}) {
  std::vector<index_t> result;
  const auto& rows = curv.dead.live_rows;
  const auto& columns = curv.dead.live_cols;
  const auto live_cols = static_cast<index_t>(columns.size());
  for (std::size_t p = 0; p < rows.size(); ++p) {
    if (!only_rows.empty() && std::find(only_rows.begin(), only_rows.end(), rows[p]) == only_rows.end())
      continue;
    for (std::size_t q = 0; q < columns.size(); ++q) {
      if (m.pruned(rows[p], columns[q]))
        result.push_back(static_cast<index_t>(p) * live_cols + static_cast<index_t>(q));
    }
  }
  return result;
}

mask rows_mask(index_t rows, index_t cols, const std::vector<index_t>& pruned_rows) {
  mask m(rows, cols);
  for (const index_t i : pruned_rows) m.prune_row(i);
  return m;
}

mask columns_mask(index_t rows, index_t cols, const std::vector<index_t>& pruned_cols) {
  mask m(rows, cols);
  for (const index_t j : pruned_cols) m.prune_column(j);
  return m;
}

mask random_mask(index_t rows, index_t cols, double fraction, unsigned seed) {
  std::mt19937_64 engine(seed);
  std::bernoulli_distribution prune(fraction);
  mask m(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (prune(engine)) m.prune(i, j);
    }
  }
  return m;
}

// The oracle: θ ← obs_updated(F, θ, Q) on the live sub-layer, with Q exactly zero afterwards.
dense oracle_updated(const dense& f, const dense& w_live, const std::vector<index_t>& q) {
  dense_vector theta = surgeon::test::flatten(w_live);
  theta = surgeon::test::obs_updated(f, theta, q);
  for (const index_t k : q) theta(k) = 0.0;
  return surgeon::test::unflatten(theta, w_live.rows(), w_live.cols());
}

template <typename T>
void check_masked_zero(const std::vector<T>& w, index_t cols, const mask& m) {
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) {
      if (m.pruned(i, j)) {
        CAPTURE(i, j);
        CHECK(w[static_cast<std::size_t>(i * cols + j)] == T(0));
      }
    }
  }
}

double difference(const dense& x, const dense& y) {
  return surgeon::test::max_relative_difference(x, y, x.rows(), x.cols());
}

}  // namespace

TEST_CASE("row-set update equals brute-force OBS for the set", "[update]") {
  surgeon::cpu::context cpu;
  layer l = random_layer(7, 5, 1u);
  l.factorize();
  const dense f = fisher(l.curv);
  const dense before = live_part(l.curv, l.w, l.cols);

  SECTION("one row") {
    surgeon::cpu::update_rows(cpu, l.curv, l.view(), {3});
    const dense expected = oracle_updated(f, before, live_indices(l.curv, rows_mask(7, 5, {3})));
    CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < oracle_tolerance);
    check_masked_zero(l.w, l.cols, rows_mask(7, 5, {3}));
  }
  SECTION("several rows, unsorted and repeated, removed jointly") {
    surgeon::cpu::update_rows(cpu, l.curv, l.view(), {5, 0, 2, 5});
    const mask removed = rows_mask(7, 5, {0, 2, 5});
    const dense expected = oracle_updated(f, before, live_indices(l.curv, removed));
    CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < oracle_tolerance);
    check_masked_zero(l.w, l.cols, removed);
  }
  SECTION("no rows leaves the weights unchanged") {
    const std::vector<double> original = l.w;
    surgeon::cpu::update_rows(cpu, l.curv, l.view(), {});
    CHECK(l.w == original);
  }
  SECTION("float weights, double arithmetic") {
    std::vector<float> w32(l.w.begin(), l.w.end());
    const dense expected =
        oracle_updated(f, live_part(l.curv, w32, 5), live_indices(l.curv, rows_mask(7, 5, {1, 4})));
    surgeon::cpu::update_rows(cpu, l.curv, host_matrix_view<float>(w32.data(), 7, 5), {1, 4});
    CHECK(difference(live_part(l.curv, w32, l.cols), expected) < 1e-6);
    check_masked_zero(w32, l.cols, rows_mask(7, 5, {1, 4}));
  }
  SECTION("a view with a leading dimension") {
    const index_t ld = 8;
    std::vector<double> padded(static_cast<std::size_t>(7 * ld), 42.0);
    for (index_t i = 0; i < 7; ++i) {
      for (index_t j = 0; j < 5; ++j)
        padded[static_cast<std::size_t>(i * ld + j)] = l.w[static_cast<std::size_t>(i * 5 + j)];
    }
    surgeon::cpu::update_rows(cpu, l.curv, host_matrix_view<double>(padded.data(), 7, 5, ld), {6});
    surgeon::cpu::update_rows(cpu, l.curv, l.view(), {6});
    for (index_t i = 0; i < 7; ++i) {
      for (index_t j = 0; j < ld; ++j) {
        const double value = padded[static_cast<std::size_t>(i * ld + j)];
        CHECK(value == (j < 5 ? l.w[static_cast<std::size_t>(i * 5 + j)] : 42.0));
      }
    }
  }
}

TEST_CASE("column-set update equals brute-force OBS for the set", "[update]") {
  surgeon::cpu::context cpu;
  layer l = random_layer(6, 9, 2u);
  l.factorize();
  const dense f = fisher(l.curv);
  const dense before = live_part(l.curv, l.w, l.cols);

  SECTION("one column") {
    surgeon::cpu::update_columns(cpu, l.curv, l.view(), {4});
    const dense expected = oracle_updated(f, before, live_indices(l.curv, columns_mask(6, 9, {4})));
    CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < oracle_tolerance);
    check_masked_zero(l.w, l.cols, columns_mask(6, 9, {4}));
  }
  SECTION("several columns including the last (a bias column)") {
    surgeon::cpu::update_columns(cpu, l.curv, l.view(), {8, 1, 3, 1});
    const mask removed = columns_mask(6, 9, {1, 3, 8});
    const dense expected = oracle_updated(f, before, live_indices(l.curv, removed));
    CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < oracle_tolerance);
    check_masked_zero(l.w, l.cols, removed);
  }
}

TEST_CASE("rows then columns equals the joint OBS solution for the union", "[update]") {
  surgeon::cpu::context cpu;
  layer l = random_layer(8, 7, 3u);
  l.factorize();
  const dense f = fisher(l.curv);
  const dense before = live_part(l.curv, l.w, l.cols);
  mask removed = rows_mask(8, 7, {1, 6});
  removed.merge(columns_mask(8, 7, {0, 2, 5}));
  const dense expected = oracle_updated(f, before, live_indices(l.curv, removed));

  SECTION("the sequential form is exact") {
    surgeon::cpu::update_rows_columns(cpu, l.curv, l.view(), {6, 1}, {5, 0, 2});
    CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < oracle_tolerance);
    check_masked_zero(l.w, l.cols, removed);
  }
  SECTION("update_rows then update_columns gives the same") {
    surgeon::cpu::update_rows(cpu, l.curv, l.view(), {1, 6});
    surgeon::cpu::update_columns(cpu, l.curv, l.view(), {0, 2, 5});
    CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < oracle_tolerance);
  }
  SECTION("summing two independent updates is only approximate") {
    std::vector<double> by_rows = l.w;
    std::vector<double> by_cols = l.w;
    surgeon::cpu::update_rows(cpu, l.curv, host_matrix_view<double>(by_rows.data(), 8, 7), {1, 6});
    surgeon::cpu::update_columns(cpu, l.curv, host_matrix_view<double>(by_cols.data(), 8, 7), {0, 2, 5});
    dense summed = live_part(l.curv, by_rows, 7) + live_part(l.curv, by_cols, 7) - before;
    for (const index_t k : live_indices(l.curv, removed)) summed(k / 7, k % 7) = 0.0;
    CHECK(difference(summed, expected) > 1e-6);
  }
}

TEST_CASE("element update with budget 0 is one OBS solve over the whole mask", "[update]") {
  surgeon::cpu::context cpu;
  for (const unsigned seed : {4u, 5u, 6u}) {
    CAPTURE(seed);
    layer l = random_layer(9, 11, seed);
    l.factorize();
    const mask m = random_mask(9, 11, 0.4, seed);
    const dense expected =
        oracle_updated(fisher(l.curv), live_part(l.curv, l.w, l.cols), live_indices(l.curv, m));
    const auto report = surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{0});
    CHECK(report.chunks == 1);
    CHECK(report.solved == m.count());
    CHECK(report.iterations == 0);
    CHECK(report.relative_residual < 1e-12);
    CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < oracle_tolerance);
    check_masked_zero(l.w, l.cols, m);
  }
}

TEST_CASE("element update with budget -1 is the sequential OBS, row by row", "[update]") {
  surgeon::cpu::context cpu;
  layer l = random_layer(10, 8, 7u);
  l.factorize();
  mask m = random_mask(10, 8, 0.5, 7u);
  for (index_t j = 0; j < 8; ++j) m.keep(4, j);  // a row with nothing masked is no chunk
  const dense f = fisher(l.curv);
  dense expected = live_part(l.curv, l.w, l.cols);
  index_t chunks = 0;
  for (index_t i = 0; i < 10; ++i) {
    const std::vector<index_t> q = live_indices(l.curv, m, {i});
    if (q.empty()) continue;
    expected = oracle_updated(f, expected, q);
    ++chunks;
  }
  for (const index_t k : live_indices(l.curv, m)) expected(k / 8, k % 8) = 0.0;
  const auto report = surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{-1});
  CHECK(report.chunks == chunks);
  CHECK(report.chunks == 9);
  CHECK(report.solved == m.count());
  CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < oracle_tolerance);
  check_masked_zero(l.w, l.cols, m);
}

TEST_CASE("a positive budget groups whole rows into chunks of at most max entries", "[update]") {
  surgeon::cpu::context cpu;
  layer l = random_layer(6, 10, 8u);
  l.factorize();
  // Masked entries per row: 3, 3, 3, 8, 5, 1. With max = 6 the chunks are {0, 1}, {2}, {3} (one row
  // over the budget on its own), {4, 5}.
  const std::vector<index_t> counts = {3, 3, 3, 8, 5, 1};
  mask m(6, 10);
  for (index_t i = 0; i < 6; ++i) {
    for (index_t j = 0; j < counts[static_cast<std::size_t>(i)]; ++j) m.prune(i, (3 * j + i) % 10);
  }
  const std::vector<std::vector<index_t>> groups = {{0, 1}, {2}, {3}, {4, 5}};
  const dense f = fisher(l.curv);
  dense expected = live_part(l.curv, l.w, l.cols);
  for (const auto& group : groups) expected = oracle_updated(f, expected, live_indices(l.curv, m, group));
  for (const index_t k : live_indices(l.curv, m)) expected(k / 10, k % 10) = 0.0;

  SECTION("chunked as documented and equal to the sequential oracle") {
    const auto report = surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{6});
    CHECK(report.chunks == 4);
    CHECK(report.solved == 23);
    CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < oracle_tolerance);
  }
  SECTION("a budget above |Q| is one chunk") {
    const auto report = surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{2000});
    CHECK(report.chunks == 1);
  }
  SECTION("budget 1 is one row per chunk") {
    CHECK(surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{1}).chunks == 6);
  }
}

TEST_CASE("the dense-product form equals the sparse-row form", "[update]") {
  surgeon::cpu::context cpu;
  for (const index_t budget : {index_t{0}, index_t{-1}, index_t{7}}) {
    CAPTURE(budget);
    layer l = random_layer(12, 12, 9u);
    l.factorize();
    const mask m = random_mask(12, 12, 0.5, 9u);
    std::vector<double> dense_w = l.w;
    const auto sparse_report =
        surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{budget});
    const auto dense_report = surgeon::cpu::obs_update_dense(
        cpu, l.curv, host_matrix_view<double>(dense_w.data(), 12, 12), m, surgeon::cpu::correlate{budget});
    CHECK(sparse_report.chunks == dense_report.chunks);
    CHECK(sparse_report.solved == dense_report.solved);
    CHECK(difference(live_part(l.curv, dense_w, 12), live_part(l.curv, l.w, 12)) < 1e-12);
    check_masked_zero(dense_w, 12, m);
  }
}

TEST_CASE("whole-mask PCG equals the exact joint OBS solution", "[update]") {
  using surgeon::pcg_form;
  surgeon::cpu::context cpu;
  const pcg_form form = GENERATE(pcg_form::removed_sweep, pcg_form::kept_kronecker);
  for (const unsigned seed : {10u, 11u}) {
    CAPTURE(static_cast<int>(form), seed);
    layer l = random_layer(10, 12, seed);
    l.factorize();
    const mask m = random_mask(10, 12, 0.5, seed);
    const dense expected =
        oracle_updated(fisher(l.curv), live_part(l.curv, l.w, l.cols), live_indices(l.curv, m));
    const dense before = live_part(l.curv, l.w, l.cols);
    const std::vector<float> original(l.w.begin(), l.w.end());
    const auto report = surgeon::cpu::obs_update_full(cpu, l.curv, l.view(), m,
                                                      surgeon::cpu::pcg_options{1e-13, 1000, form, false});
    CHECK(report.chunks == 1);
    CHECK(report.solved == m.count());
    CHECK(report.iterations > 0);
    CHECK(report.relative_residual <= 1e-13);
    CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < 1e-8);
    // The loss the solver tracked is the damped loss of the change it made.
    const double loss = surgeon::test::quadratic_loss(
        fisher(l.curv), surgeon::test::flatten(live_part(l.curv, l.w, l.cols) - before));
    CHECK(report.loss == Approx(loss).epsilon(1e-8));
    check_masked_zero(l.w, l.cols, m);
    {  // the iteration limit stops it
      std::vector<float> w32 = original;
      const auto capped =
          surgeon::cpu::obs_update_full(cpu, l.curv, host_matrix_view<float>(w32.data(), 10, 12), m,
                                        surgeon::cpu::pcg_options{1e-13, 2, form, false});
      CHECK(capped.iterations == 2);
      CHECK(capped.relative_residual > 1e-13);
      check_masked_zero(w32, 12, m);
    }
    {  // a looser tolerance stops it early, with the residual it asked for
      std::vector<float> w32 = original;
      const auto loose =
          surgeon::cpu::obs_update_full(cpu, l.curv, host_matrix_view<float>(w32.data(), 10, 12), m,
                                        surgeon::cpu::pcg_options{1e-3, 100, form, false});
      CHECK(loose.iterations >= 1);
      CHECK(loose.relative_residual <= 1e-3);
      CHECK(loose.iterations <= report.iterations);
      check_masked_zero(w32, 12, m);
    }
    {  // float products: the same solution to float precision
      std::vector<double> single(original.begin(), original.end());
      const auto report_single =
          surgeon::cpu::obs_update_full(cpu, l.curv, host_matrix_view<double>(single.data(), 10, 12), m,
                                        surgeon::cpu::pcg_options{1e-5, 1000, form, true});
      CHECK(report_single.relative_residual <= 1e-5);
      CHECK(difference(live_part(l.curv, single, l.cols), expected) < 1e-3);
      check_masked_zero(single, 12, m);
    }
  }
}

TEST_CASE("the removed-sweep preconditioner is exact when G is diagonal and every row removes a prefix",
          "[update]") {
  // With Ĝ diagonal the dual system splits by rows, and when a row's removed columns are the first
  // columns of the sweep's order its block [Â⁻¹]_QQ = U_QQᵀ U_QQ exactly: one iteration solves it.
  surgeon::cpu::context cpu;
  const index_t rows = 8;
  const index_t cols = 10;
  layer l = random_layer(rows, cols, 31u);
  l.g = host_matrix<double>(rows, rows);
  for (index_t i = 0; i < rows; ++i) l.g(i, i) = 1.0 + static_cast<double>(i);
  l.factorize();
  // Column j is removed from the rows i < 8 − j: counts descend with j, so the order is 0, 1, 2...,
  // and row i removes exactly the columns j < 8 − i, a prefix of that order.
  mask m(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (i < 8 - j) m.prune(i, j);
    }
  }
  const dense expected =
      oracle_updated(fisher(l.curv), live_part(l.curv, l.w, l.cols), live_indices(l.curv, m));
  const auto report = surgeon::cpu::obs_update_full(
      cpu, l.curv, l.view(), m,
      surgeon::cpu::pcg_options{1e-12, 50, surgeon::pcg_form::removed_sweep, false});
  CHECK(report.iterations == 1);
  CHECK(difference(live_part(l.curv, l.w, l.cols), expected) < 1e-8);
  check_masked_zero(l.w, l.cols, m);
}

TEST_CASE("the removed-sweep form needs far fewer iterations than the kept form on coupled inputs",
          "[update]") {
  // Strongly correlated inputs (ρ = 0.99) couple kept and removed weights: the kept form's
  // Kronecker preconditioner leaves that coupling to the iteration, the sweep solves most of it.
  surgeon::cpu::context cpu;
  const index_t n = 48;
  layer l = random_layer(n, n, 32u);
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      l.a(i, j) += 20.0 * std::pow(0.99, static_cast<double>(std::abs(i - j)));
      l.g(i, j) = (i == j ? 1.0 : 0.0) + 0.01 * l.g(i, j);  // weakly coupled outputs
    }
  }
  l.factorize(surgeon::damping{0.1, 1e-4});
  // As in real layers, some inputs are removed from most rows and others from few: column j from
  // a fraction 0.95 − 0.9·(j·7 mod n)/n of the rows.
  std::mt19937_64 engine(32u);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  mask m(n, n);
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      if (uniform(engine) < 0.95 - 0.9 * static_cast<double>((j * 7) % n) / static_cast<double>(n))
        m.prune(i, j);
    }
  }
  std::vector<double> kept = l.w;
  const auto kept_report = surgeon::cpu::obs_update_full(
      cpu, l.curv, host_matrix_view<double>(kept.data(), n, n), m,
      surgeon::cpu::pcg_options{1e-8, 5000, surgeon::pcg_form::kept_kronecker, false});
  std::vector<double> removed = l.w;
  const auto removed_report = surgeon::cpu::obs_update_full(
      cpu, l.curv, host_matrix_view<double>(removed.data(), n, n), m,
      surgeon::cpu::pcg_options{1e-8, 5000, surgeon::pcg_form::removed_sweep, false});
  INFO("iterations: kept " << kept_report.iterations << ", removed " << removed_report.iterations);
  CHECK(removed_report.relative_residual <= 1e-8);
  CHECK(kept_report.relative_residual <= 1e-8);
  CHECK(2 * removed_report.iterations < kept_report.iterations);
  CHECK(difference(live_part(l.curv, removed, n), live_part(l.curv, kept, n)) < 1e-5);
}

TEST_CASE("masked weights end exactly zero; weights pruned earlier stay zero", "[update]") {
  surgeon::cpu::context cpu;
  layer l = random_layer(9, 10, 12u);
  // Weights pruned in an earlier shot: zero, and in the mask again.
  const std::vector<std::pair<index_t, index_t>> earlier = {{0, 0}, {2, 5}, {2, 6}, {7, 9}, {8, 3}};
  for (const auto& [i, j] : earlier) l.w[static_cast<std::size_t>(i * 10 + j)] = 0.0;
  l.factorize();
  mask m = random_mask(9, 10, 0.3, 12u);
  for (const auto& [i, j] : earlier) m.prune(i, j);
  const dense expected =
      oracle_updated(fisher(l.curv), live_part(l.curv, l.w, l.cols), live_indices(l.curv, m));

  const auto check = [&](const std::vector<double>& w, double tolerance) {
    check_masked_zero(w, 10, m);
    CHECK(difference(live_part(l.curv, w, 10), expected) < tolerance);
  };
  SECTION("chunked, budget 0") {
    surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{0});
    check(l.w, oracle_tolerance);
  }
  SECTION("chunked, one row per chunk") {
    surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{-1});
    check_masked_zero(l.w, 10, m);
  }
  SECTION("dense form") {
    surgeon::cpu::obs_update_dense(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{0});
    check(l.w, oracle_tolerance);
  }
  SECTION("whole mask") {
    surgeon::cpu::obs_update_full(
        cpu, l.curv, l.view(), m,
        surgeon::cpu::pcg_options{1e-13, 1000, surgeon::pcg_form::removed_sweep, false});
    check(l.w, 1e-8);
  }
  SECTION("float weights") {
    std::vector<float> w32(l.w.begin(), l.w.end());
    surgeon::cpu::obs_update(cpu, l.curv, host_matrix_view<float>(w32.data(), 9, 10), m,
                             surgeon::cpu::correlate{4});
    check_masked_zero(w32, 10, m);
  }
}

TEST_CASE("pruning an already-pruned layer again with the same mask changes nothing", "[update]") {
  surgeon::cpu::context cpu;
  layer l = random_layer(11, 9, 13u);
  l.factorize();
  const mask m = random_mask(11, 9, 0.5, 13u);
  SECTION("chunked") {
    surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{10});
    const std::vector<double> once = l.w;
    const auto report = surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{10});
    CHECK(report.relative_residual == 0.0);
    CHECK(std::memcmp(l.w.data(), once.data(), once.size() * sizeof(double)) == 0);
  }
  SECTION("dense form") {
    surgeon::cpu::obs_update_dense(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{-1});
    const std::vector<double> once = l.w;
    surgeon::cpu::obs_update_dense(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{-1});
    CHECK(std::memcmp(l.w.data(), once.data(), once.size() * sizeof(double)) == 0);
  }
  SECTION("whole mask") {
    surgeon::cpu::obs_update_full(cpu, l.curv, l.view(), m);
    const std::vector<double> once = l.w;
    const auto report = surgeon::cpu::obs_update_full(cpu, l.curv, l.view(), m);
    CHECK(report.iterations == 0);
    CHECK(std::memcmp(l.w.data(), once.data(), once.size() * sizeof(double)) == 0);
  }
  SECTION("rows and columns") {
    surgeon::cpu::update_rows_columns(cpu, l.curv, l.view(), {2, 3}, {7});
    const std::vector<double> once = l.w;
    surgeon::cpu::update_rows_columns(cpu, l.curv, l.view(), {2, 3}, {7});
    CHECK(std::memcmp(l.w.data(), once.data(), once.size() * sizeof(double)) == 0);
  }
}

TEST_CASE("whole-mask PCG loses no more damped-Fisher loss than the chunked update", "[update]") {
  surgeon::cpu::context cpu;
  const index_t n = 40;
  // Strongly correlated factors: ρ^|i-j| plus a random SPD part.
  layer l = random_layer(n, n, 14u);
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      const double distance = static_cast<double>(std::abs(i - j));
      l.g(i, j) += std::pow(0.95, distance);
      l.a(i, j) += 2.0 * std::pow(0.9, distance);
    }
  }
  l.factorize();
  // Prune the 50 % of elements with the smallest OBS cost W² / [Ĝ⁻¹]_ii [Â⁻¹]_jj.
  std::vector<std::pair<double, index_t>> costs;
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      const double w = l.w[static_cast<std::size_t>(i * n + j)];
      costs.emplace_back(w * w / (l.curv.g.inverse()(i, i) * l.curv.a.inverse()(j, j)), i * n + j);
    }
  }
  std::sort(costs.begin(), costs.end());
  mask m(n, n);
  for (std::size_t k = 0; k < costs.size() / 2; ++k) m.prune(costs[k].second / n, costs[k].second % n);

  const dense f = fisher(l.curv);
  const dense before = live_part(l.curv, l.w, n);
  std::vector<double> chunked = l.w;
  const auto chunked_report = surgeon::cpu::obs_update(
      cpu, l.curv, host_matrix_view<double>(chunked.data(), n, n), m, surgeon::cpu::correlate{50});
  std::vector<double> full = l.w;
  const auto full_report = surgeon::cpu::obs_update_full(
      cpu, l.curv, host_matrix_view<double>(full.data(), n, n), m,
      surgeon::cpu::pcg_options{1e-10, 2000, surgeon::pcg_form::removed_sweep, false});
  const double chunked_loss =
      surgeon::test::quadratic_loss(f, surgeon::test::flatten(live_part(l.curv, chunked, n) - before));
  const double full_loss =
      surgeon::test::quadratic_loss(f, surgeon::test::flatten(live_part(l.curv, full, n) - before));
  // No compensation at all: Δ = −W on Q.
  dense unpruned = before;
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      if (m.pruned(i, j)) unpruned(i, j) = 0.0;
    }
  }
  const double no_update_loss = surgeon::test::quadratic_loss(f, surgeon::test::flatten(unpruned - before));
  INFO("chunks " << chunked_report.chunks << ", PCG iterations " << full_report.iterations
                 << ", losses: full " << full_loss << ", chunked " << chunked_loss << ", no update "
                 << no_update_loss);
  CHECK(chunked_report.chunks > 1);
  CHECK(full_report.relative_residual <= 1e-10);
  CHECK(full_loss <= chunked_loss);
  CHECK(chunked_loss < no_update_loss);
  check_masked_zero(full, n, m);
  check_masked_zero(chunked, n, m);
}

TEST_CASE("iterative chunk solves give the direct solves' result", "[update]") {
  surgeon::cpu::context cpu;
  const index_t rows = 24;
  const index_t cols = 48;
  // Correlated factors, so that rows of a chunk are coupled through Ĝ⁻¹ and CG has work to do.
  layer l = random_layer(rows, cols, 21u);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < rows; ++j) l.g(i, j) += std::pow(0.9, static_cast<double>(std::abs(i - j)));
  }
  for (index_t i = 0; i < cols; ++i) {
    for (index_t j = 0; j < cols; ++j)
      l.a(i, j) += 3.0 * std::pow(0.95, static_cast<double>(std::abs(i - j)));
  }
  l.factorize();
  mask m(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if ((i * 7 + j * 3) % 5 < 2 || j % 11 == 0) m.prune(i, j);
    }
  }
  for (const index_t budget : {index_t{0}, index_t{100}, index_t{-1}}) {
    CAPTURE(budget);
    surgeon::cpu::correlate direct{budget};
    direct.method = surgeon::cpu::correlate::solver::direct;
    surgeon::cpu::correlate iterative{budget};
    iterative.method = surgeon::cpu::correlate::solver::iterative;
    std::vector<double> by_direct = l.w;
    std::vector<double> by_iterative = l.w;
    const auto direct_report = surgeon::cpu::obs_update(
        cpu, l.curv, host_matrix_view<double>(by_direct.data(), rows, cols), m, direct);
    const auto iterative_report = surgeon::cpu::obs_update(
        cpu, l.curv, host_matrix_view<double>(by_iterative.data(), rows, cols), m, iterative);
    CHECK(direct_report.iterations == 0);
    CHECK(iterative_report.iterations > 0);
    CHECK(iterative_report.relative_residual <= 1e-12);
    CHECK(iterative_report.chunks == direct_report.chunks);
    double difference = 0.0;
    double scale = 0.0;
    for (std::size_t k = 0; k < by_direct.size(); ++k) {
      difference = std::max(difference, std::abs(by_direct[k] - by_iterative[k]));
      scale = std::max(scale, std::abs(by_direct[k]));
    }
    CHECK(difference <= 1e-10 * scale);
    check_masked_zero(by_iterative, cols, m);
  }
}

TEST_CASE("dead rows and columns stay zero and the live sub-layer matches the oracle", "[update]") {
  surgeon::cpu::context cpu;
  layer l = random_layer(8, 9, 15u);
  for (index_t j = 0; j < 9; ++j) l.w[static_cast<std::size_t>(3 * 9 + j)] = 0.0;  // row 3 zero: dead
  for (index_t i = 0; i < 8; ++i) l.w[static_cast<std::size_t>(i * 9 + 6)] = 0.0;  // column 6 zero: dead
  for (index_t k = 0; k < 9; ++k) l.a(2, k) = l.a(k, 2) = 0.0;  // A_22 = 0: column 2 dead, weights not zero
  l.factorize();
  REQUIRE(l.curv.dead.dead_rows == std::vector<index_t>{3});
  REQUIRE(l.curv.dead.dead_cols == std::vector<index_t>{2, 6});
  const dense f = fisher(l.curv);
  const dense before = live_part(l.curv, l.w, 9);
  mask m = random_mask(8, 9, 0.4, 15u);
  const auto check_dead = [&](const std::vector<double>& w) {
    for (index_t j = 0; j < 9; ++j) CHECK(w[static_cast<std::size_t>(3 * 9 + j)] == 0.0);
    for (index_t i = 0; i < 8; ++i) {
      CHECK(w[static_cast<std::size_t>(i * 9 + 2)] == 0.0);
      CHECK(w[static_cast<std::size_t>(i * 9 + 6)] == 0.0);
    }
  };
  SECTION("element mask, one solve") {
    const auto report = surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{0});
    CHECK(report.solved == static_cast<index_t>(live_indices(l.curv, m).size()));
    CHECK(difference(live_part(l.curv, l.w, 9), oracle_updated(f, before, live_indices(l.curv, m))) <
          oracle_tolerance);
    check_dead(l.w);
    check_masked_zero(l.w, 9, m);
  }
  SECTION("element mask, whole-mask PCG") {
    surgeon::cpu::obs_update_full(
        cpu, l.curv, l.view(), m,
        surgeon::cpu::pcg_options{1e-13, 1000, surgeon::pcg_form::removed_sweep, false});
    CHECK(difference(live_part(l.curv, l.w, 9), oracle_updated(f, before, live_indices(l.curv, m))) < 1e-8);
    check_dead(l.w);
  }
  SECTION("rows and columns, dead ones among them") {
    surgeon::cpu::update_rows_columns(cpu, l.curv, l.view(), {3, 5}, {2, 4});
    mask removed = rows_mask(8, 9, {3, 5});
    removed.merge(columns_mask(8, 9, {2, 4}));
    CHECK(difference(live_part(l.curv, l.w, 9), oracle_updated(f, before, live_indices(l.curv, removed))) <
          oracle_tolerance);
    check_dead(l.w);
    check_masked_zero(l.w, 9, removed);
  }
  SECTION("removing only a dead row zeroes it and changes nothing else") {
    surgeon::cpu::update_rows(cpu, l.curv, l.view(), {3});
    CHECK(difference(live_part(l.curv, l.w, 9), before) == 0.0);
    check_dead(l.w);
  }
}

TEST_CASE("bad input to the updates is a logic_error", "[update]") {
  SECTION("bad iterative solve parameters") {
    layer bad = random_layer(4, 4, 3u);
    bad.factorize();
    surgeon::cpu::context cpu;
    mask m(4, 4);
    m.prune(1, 1);
    surgeon::cpu::correlate budget;
    budget.tolerance = 0.0;
    CHECK_THROWS_AS(surgeon::cpu::obs_update(cpu, bad.curv, bad.view(), m, budget), surgeon::logic_error);
    budget = surgeon::cpu::correlate{};
    budget.max_iterations = 0;
    CHECK_THROWS_AS(surgeon::cpu::obs_update(cpu, bad.curv, bad.view(), m, budget), surgeon::logic_error);
  }
  surgeon::cpu::context cpu;
  layer l = random_layer(6, 5, 16u);
  l.factorize();
  const mask m = random_mask(6, 5, 0.5, 16u);
  using surgeon::logic_error;
  SECTION("a mask of another shape") {
    const mask wrong(5, 5);
    CHECK_THROWS_AS(surgeon::cpu::obs_update(cpu, l.curv, l.view(), wrong), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::obs_update_dense(cpu, l.curv, l.view(), wrong), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::obs_update_full(cpu, l.curv, l.view(), wrong), logic_error);
  }
  SECTION("weights that are not the factorised layer") {
    std::vector<double> bigger(7 * 5, 1.0);
    const host_matrix_view<double> tall(bigger.data(), 7, 5);
    const host_matrix_view<double> narrow(bigger.data(), 6, 4);
    CHECK_THROWS_AS(surgeon::cpu::obs_update(cpu, l.curv, tall, mask(7, 5)), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::obs_update_full(cpu, l.curv, narrow, mask(6, 4)), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::update_rows(cpu, l.curv, tall, {0}), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::update_columns(cpu, l.curv, narrow, {0}), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::update_rows(cpu, kronecker_curvature{}, l.view(), {0}), logic_error);
  }
  SECTION("a NaN weight") {
    l.w[7] = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(surgeon::cpu::obs_update(cpu, l.curv, l.view(), m), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::obs_update_full(cpu, l.curv, l.view(), m), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::update_rows_columns(cpu, l.curv, l.view(), {0}, {1}), logic_error);
  }
  SECTION("bad options") {
    CHECK_THROWS_AS(surgeon::cpu::obs_update(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{-2}),
                    logic_error);
    CHECK_THROWS_AS(surgeon::cpu::obs_update_dense(cpu, l.curv, l.view(), m, surgeon::cpu::correlate{-5}),
                    logic_error);
    CHECK_THROWS_AS(
        surgeon::cpu::obs_update_full(cpu, l.curv, l.view(), m, surgeon::cpu::pcg_options{0.0, 10}),
        logic_error);
    CHECK_THROWS_AS(
        surgeon::cpu::obs_update_full(cpu, l.curv, l.view(), m, surgeon::cpu::pcg_options{-1.0, 10}),
        logic_error);
    CHECK_THROWS_AS(
        surgeon::cpu::obs_update_full(cpu, l.curv, l.view(), m, surgeon::cpu::pcg_options{1e-3, 0}),
        logic_error);
  }
  SECTION("row or column indices out of range") {
    CHECK_THROWS_AS(surgeon::cpu::update_rows(cpu, l.curv, l.view(), {6}), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::update_columns(cpu, l.curv, l.view(), {-1}), logic_error);
    CHECK_THROWS_AS(surgeon::cpu::update_rows_columns(cpu, l.curv, l.view(), {0}, {5}), logic_error);
  }
  SECTION("a failed call leaves the weights untouched") {
    const std::vector<double> original = l.w;
    CHECK_THROWS_AS(surgeon::cpu::update_rows_columns(cpu, l.curv, l.view(), {0}, {5}), logic_error);
    CHECK(l.w == original);
  }
}
