// The diagonal methods without dense factors (diagonal.hpp): the diagonal accumulator against the
// full factor accumulator, and every diagonal cost against the CPU costs from full factors, with
// dead rows and columns; bad input.
#include <surgeon/cpu/cost.hpp>
#include <surgeon/diagonal.hpp>

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "support/catch.hpp"
#include "support/random.hpp"

using surgeon::host_matrix;
using surgeon::host_matrix_view;
using surgeon::index_t;
using surgeon::method;
using surgeon::structure;

namespace {

bool close(double x, double y, double tol = 1e-12) {
  return std::abs(x - y) <= tol * std::max(std::abs(y), 1e-300);
}

host_matrix<double> from_rows(const std::vector<double>& values, index_t rows, index_t cols) {
  host_matrix<double> m(rows, cols);
  std::copy(values.begin(), values.end(), m.data());
  return m;
}

std::vector<double> diagonal_of(const host_matrix<double>& m) {
  std::vector<double> d(static_cast<std::size_t>(m.rows()));
  for (index_t i = 0; i < m.rows(); ++i) d[static_cast<std::size_t>(i)] = m(i, i);
  return d;
}

host_matrix<double> identity(index_t n) {
  host_matrix<double> m(n, n);
  for (index_t i = 0; i < n; ++i) m(i, i) = 1.0;
  return m;
}

// A layer with real factor means from token rows, a dead row (zero gradient column) and a dead
// column (zero weights), as a model would have them.
struct layer {
  index_t rows = 9;
  index_t cols = 14;
  host_matrix<double> g, a, w;
  layer() {
    surgeon::cpu::context ctx;
    std::vector<float> gy = surgeon::test::random_rows<float>(40, rows, rows, 3);
    std::vector<float> x = surgeon::test::random_rows<float>(40, cols, cols, 4, 0.5);
    for (index_t t = 0; t < 40; ++t) gy[static_cast<std::size_t>(t * rows + 2)] = 0.0f;  // row 2: G_22 = 0
    surgeon::factor_accumulator<double> fg(rows);
    surgeon::factor_accumulator<double> fa(cols);
    fg.add(ctx, host_matrix_view<const float>(gy.data(), 40, rows));
    fa.add(ctx, host_matrix_view<const float>(x.data(), 40, cols));
    g = fg.mean();
    a = fa.mean();
    w = from_rows(surgeon::test::random_rows<double>(rows, cols, cols, 5), rows, cols);
    for (index_t i = 0; i < rows; ++i) w(i, 6) = 0.0;  // column 6: all weights zero
  }
};

}  // namespace

TEST_CASE("diagonal_accumulator holds the diagonal of the full factor mean", "[diagonal]") {
  surgeon::cpu::context ctx;
  const index_t dim = 23;
  surgeon::diagonal_accumulator diagonal(dim);
  surgeon::factor_accumulator<double> full(dim);
  for (unsigned batch = 0; batch < 3; ++batch) {
    const index_t tokens = 17 + 5 * static_cast<index_t>(batch);
    // A padded leading dimension: the accumulator must honour `ld`.
    const std::vector<float> x = surgeon::test::random_rows<float>(tokens, dim, dim + 3, 10 + batch, 0.3);
    const host_matrix_view<const float> view(x.data(), tokens, dim, dim + 3);
    diagonal.add(view);
    full.add(ctx, view);
  }
  CHECK(diagonal.count() == full.count());
  CHECK(diagonal.size() == dim);
  const std::vector<double> mean = diagonal.mean();
  const std::vector<double> expected = diagonal_of(full.mean());
  for (index_t j = 0; j < dim; ++j) {
    CAPTURE(j);
    CHECK(close(mean[static_cast<std::size_t>(j)], expected[static_cast<std::size_t>(j)], 1e-13));
    CHECK(close(diagonal.sum()[static_cast<std::size_t>(j)],
                expected[static_cast<std::size_t>(j)] * static_cast<double>(full.count()), 1e-13));
  }

  SECTION("bad input") {
    CHECK_THROWS_AS(surgeon::diagonal_accumulator(0), surgeon::logic_error);
    surgeon::diagonal_accumulator empty(4);
    CHECK(empty.empty());
    CHECK_THROWS_AS(empty.mean(), surgeon::logic_error);
    std::vector<float> x(12, 1.0f);
    CHECK_THROWS_AS(empty.add(host_matrix_view<const float>(x.data(), 4, 3)), surgeon::logic_error);
    x[5] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(empty.add(host_matrix_view<const float>(x.data(), 3, 4)), surgeon::logic_error);
    CHECK(empty.empty());
  }
}

TEST_CASE("diagonal costs equal the CPU costs from the full factors", "[diagonal]") {
  const layer l;
  surgeon::cpu::context ctx;
  const host_matrix_view<const double> w = l.w.view();
  const auto how = GENERATE(method::magnitude, method::wanda, method::lobd, method::kobd);
  CAPTURE(surgeon::to_string(how));
  const bool needs_a = how != method::magnitude;
  const bool needs_g = how == method::kobd;
  // The reference: full means, an identity for an ignored factor, damped and factorised.
  const host_matrix<double> g = needs_g ? l.g : identity(l.rows);
  const host_matrix<double> a = needs_a ? l.a : identity(l.cols);
  const auto full = surgeon::cpu::factorize(ctx, g.view(), a.view(), surgeon::damping{0.1, 0.01}, w);
  const surgeon::diagonal_curvature diagonal =
      surgeon::make_diagonal_curvature(needs_g ? diagonal_of(l.g) : std::vector<double>(),
                                       needs_a ? diagonal_of(l.a) : std::vector<double>(), w);
  CHECK(diagonal.dead.live_rows == full.dead.live_rows);
  CHECK(diagonal.dead.live_cols == full.dead.live_cols);
  CHECK(diagonal.dead.dead_cols == std::vector<index_t>{6});
  CHECK(diagonal.dead.dead_rows == (needs_g ? std::vector<index_t>{2} : std::vector<index_t>{}));

  const host_matrix<double> expected = surgeon::cpu::element_costs(ctx, how, full, w);
  const host_matrix<double> costs = surgeon::diagonal_element_costs(how, diagonal, w);
  REQUIRE(costs.rows() == l.rows);
  REQUIRE(costs.cols() == l.cols);
  for (index_t i = 0; i < l.rows; ++i) {
    for (index_t j = 0; j < l.cols; ++j) {
      CAPTURE(i, j);
      CHECK(close(costs(i, j), expected(i, j), 1e-12));
      if (j == 6 || (needs_g && i == 2)) CHECK(costs(i, j) == 0.0);
    }
  }
  if (how == method::magnitude || how == method::lobd) {
    const std::vector<double> rows = surgeon::diagonal_row_costs(how, diagonal, w);
    const std::vector<double> cols = surgeon::diagonal_column_costs(how, diagonal, w);
    const std::vector<double> expected_rows = surgeon::cpu::row_costs(ctx, how, full, w);
    const std::vector<double> expected_cols = surgeon::cpu::column_costs(ctx, how, full, w);
    REQUIRE(rows.size() == expected_rows.size());
    REQUIRE(cols.size() == expected_cols.size());
    for (std::size_t i = 0; i < rows.size(); ++i) CHECK(close(rows[i], expected_rows[i], 1e-12));
    for (std::size_t j = 0; j < cols.size(); ++j) CHECK(close(cols[j], expected_cols[j], 1e-12));
    CHECK(cols[6] == 0.0);
  } else {
    CHECK_THROWS_AS(surgeon::diagonal_row_costs(how, diagonal, w), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::diagonal_column_costs(how, diagonal, w), surgeon::logic_error);
  }
}

TEST_CASE("which methods are diagonal, and bad diagonal input", "[diagonal]") {
  for (const structure what : {structure::unstructured, structure::n_m, structure::rows_columns}) {
    CHECK(surgeon::uses_diagonals_only(method::magnitude, what));
    CHECK(surgeon::uses_diagonals_only(method::wanda, what));
    CHECK(surgeon::uses_diagonals_only(method::lobd, what));
    CHECK_FALSE(surgeon::uses_diagonals_only(method::sparsegpt, what));
    CHECK_FALSE(surgeon::uses_diagonals_only(method::llm_surgeon, what));
  }
  CHECK(surgeon::uses_diagonals_only(method::kobd, structure::unstructured));
  CHECK(surgeon::uses_diagonals_only(method::kobd, structure::n_m));
  CHECK_FALSE(surgeon::uses_diagonals_only(method::kobd, structure::rows_columns));

  const layer l;
  const host_matrix_view<const double> w = l.w.view();
  const std::vector<double> g = diagonal_of(l.g);
  const std::vector<double> a = diagonal_of(l.a);
  // Lengths that do not fit, a negative or NaN entry.
  CHECK_THROWS_AS(surgeon::make_diagonal_curvature(a, a, w), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::make_diagonal_curvature(g, g, w), surgeon::logic_error);
  std::vector<double> negative = a;
  negative[3] = -1e-3;
  CHECK_THROWS_AS(surgeon::make_diagonal_curvature(g, negative, w), surgeon::logic_error);
  std::vector<double> nan = g;
  nan[1] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(surgeon::make_diagonal_curvature(nan, a, w), surgeon::logic_error);

  const surgeon::diagonal_curvature full = surgeon::make_diagonal_curvature(g, a, w);
  const surgeon::diagonal_curvature no_g = surgeon::make_diagonal_curvature({}, a, w);
  const surgeon::diagonal_curvature none = surgeon::make_diagonal_curvature({}, {}, w);
  // Methods that need the full factors, and factors a method needs but the curvature lacks.
  CHECK_THROWS_AS(surgeon::diagonal_element_costs(method::llm_surgeon, full, w), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::diagonal_element_costs(method::sparsegpt, full, w), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::diagonal_element_costs(method::kobd, no_g, w), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::diagonal_element_costs(method::wanda, none, w), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::diagonal_row_costs(method::lobd, none, w), surgeon::logic_error);
  CHECK_NOTHROW(surgeon::diagonal_element_costs(method::magnitude, none, w));
  // Weights of another shape, or non-finite.
  const host_matrix<double> other(l.rows + 1, l.cols);
  CHECK_THROWS_AS(surgeon::diagonal_element_costs(method::wanda, full, other.view()), surgeon::logic_error);
  host_matrix<double> bad = l.w;
  bad(4, 4) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(surgeon::diagonal_element_costs(method::wanda, full, std::as_const(bad).view()),
                  surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::diagonal_column_costs(method::magnitude, full, std::as_const(bad).view()),
                  surgeon::logic_error);
}
