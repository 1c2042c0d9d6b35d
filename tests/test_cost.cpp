#include <surgeon/cpu/cost.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "support/catch.hpp"
#include "support/obs_oracle.hpp"
#include "support/random.hpp"

using surgeon::host_matrix;
using surgeon::host_matrix_view;
using surgeon::index_t;
using surgeon::method;
using surgeon::test::dense;
using surgeon::test::obs_cost;
using surgeon::test::to_dense;

namespace {

host_matrix<double> random_weights(index_t rows, index_t cols, unsigned seed) {
  const std::vector<double> values = surgeon::test::random_rows<double>(rows, cols, cols, seed);
  host_matrix<double> w(rows, cols);
  std::copy(values.begin(), values.end(), w.data());
  return w;
}

// |x - y| <= tol·|y| (or tol absolute when y is 0).
bool close(double x, double y, double tol = 1e-10) {
  return std::abs(x - y) <= tol * std::max(std::abs(y), 1e-300);
}

struct layer {
  host_matrix<double> g, a, w;
  surgeon::cpu::kronecker_curvature curvature;
};

layer make_layer(index_t rows, index_t cols, unsigned seed,
                 surgeon::damping d = surgeon::damping{0.1, 0.01}) {
  surgeon::cpu::context cpu;
  layer result{surgeon::test::random_spd(rows, seed),
               surgeon::test::random_spd(cols, seed + 100u),
               random_weights(rows, cols, seed + 200u),
               {}};
  result.curvature = surgeon::cpu::factorize(
      cpu, std::as_const(result.g).view(), std::as_const(result.a).view(), d, std::as_const(result.w).view());
  return result;
}

// Flat indices of row i / column j of the live sub-layer [r, c].
std::vector<index_t> row_set(index_t i, index_t c) {
  std::vector<index_t> k;
  for (index_t j = 0; j < c; ++j) k.push_back(i * c + j);
  return k;
}
std::vector<index_t> col_set(index_t j, index_t r, index_t c) {
  std::vector<index_t> k;
  for (index_t i = 0; i < r; ++i) k.push_back(i * c + j);
  return k;
}

// The live sub-matrix W[live_rows, live_cols].
dense live_part(const host_matrix<double>& w, const surgeon::dead_structure& dead) {
  dense result(static_cast<index_t>(dead.live_rows.size()), static_cast<index_t>(dead.live_cols.size()));
  for (index_t k = 0; k < result.rows(); ++k) {
    for (index_t l = 0; l < result.cols(); ++l) {
      result(k, l) =
          w(dead.live_rows[static_cast<std::size_t>(k)], dead.live_cols[static_cast<std::size_t>(l)]);
    }
  }
  return result;
}

}  // namespace

TEST_CASE("llm_surgeon costs equal brute-force OBS under the damped Kronecker Fisher", "[cost]") {
  surgeon::cpu::context cpu;
  std::vector<layer> layers;
  layers.push_back(make_layer(5, 7, 5u * 31u + 7u));
  layers.push_back(make_layer(12, 9, 12u * 31u + 9u));
  for (const layer& l : layers) {
    REQUIRE(l.curvature.dead.live_rows.size() == static_cast<std::size_t>(l.w.rows()));
    REQUIRE(l.curvature.dead.live_cols.size() == static_cast<std::size_t>(l.w.cols()));
  }
  SECTION("element (i, j): W² / (2 [Ĝ⁻¹]_ii [Â⁻¹]_jj)") {
    for (const layer& l : layers) {
      const index_t r = l.w.rows();
      const index_t c = l.w.cols();
      CAPTURE(r, c);
      const dense f = surgeon::test::kronecker(l.curvature.g.damped(), l.curvature.a.damped());
      const surgeon::test::dense_vector theta = surgeon::test::flatten(to_dense(l.w));
      const host_matrix<double> cost =
          surgeon::cpu::element_costs(cpu, method::llm_surgeon, l.curvature, l.w.view());
      REQUIRE(cost.rows() == r);
      REQUIRE(cost.cols() == c);
      for (index_t i = 0; i < r; ++i) {
        for (index_t j = 0; j < c; ++j) {
          CAPTURE(i, j);
          CHECK(close(cost(i, j), obs_cost(f, theta, {i * c + j})));
        }
      }
    }
  }
  SECTION("sparsegpt reports the same element formula") {
    for (const layer& l : layers) {
      const auto surgeon_cost =
          surgeon::cpu::element_costs(cpu, method::llm_surgeon, l.curvature, l.w.view());
      const auto sparsegpt_cost =
          surgeon::cpu::element_costs(cpu, method::sparsegpt, l.curvature, l.w.view());
      CHECK(surgeon_cost.values() == sparsegpt_cost.values());
    }
  }
  SECTION("row i: w_iᵀ Â w_i / (2 [Ĝ⁻¹]_ii)") {
    for (const layer& l : layers) {
      const index_t r = l.w.rows();
      const index_t c = l.w.cols();
      CAPTURE(r, c);
      const dense f = surgeon::test::kronecker(l.curvature.g.damped(), l.curvature.a.damped());
      const surgeon::test::dense_vector theta = surgeon::test::flatten(to_dense(l.w));
      const std::vector<double> cost =
          surgeon::cpu::row_costs(cpu, method::llm_surgeon, l.curvature, l.w.view());
      REQUIRE(cost.size() == static_cast<std::size_t>(r));
      for (index_t i = 0; i < r; ++i) {
        CAPTURE(i);
        CHECK(close(cost[static_cast<std::size_t>(i)], obs_cost(f, theta, row_set(i, c))));
      }
    }
  }
  SECTION("column j: w_jᵀ Ĝ w_j / (2 [Â⁻¹]_jj)") {
    for (const layer& l : layers) {
      const index_t r = l.w.rows();
      const index_t c = l.w.cols();
      CAPTURE(r, c);
      const dense f = surgeon::test::kronecker(l.curvature.g.damped(), l.curvature.a.damped());
      const surgeon::test::dense_vector theta = surgeon::test::flatten(to_dense(l.w));
      const std::vector<double> cost =
          surgeon::cpu::column_costs(cpu, method::llm_surgeon, l.curvature, l.w.view());
      REQUIRE(cost.size() == static_cast<std::size_t>(c));
      for (index_t j = 0; j < c; ++j) {
        CAPTURE(j);
        CHECK(close(cost[static_cast<std::size_t>(j)], obs_cost(f, theta, col_set(j, r, c))));
      }
    }
  }
}

TEST_CASE("baseline costs match direct loops over the undamped factors", "[cost]") {
  surgeon::cpu::context cpu;
  const index_t r = 6;
  const index_t c = 8;
  const layer l = make_layer(r, c, 7u);
  const auto& g = l.g;
  const auto& a = l.a;
  const auto& w = l.w;
  SECTION("element scores") {
    const auto magnitude = surgeon::cpu::element_costs(cpu, method::magnitude, l.curvature, w.view());
    const auto wanda = surgeon::cpu::element_costs(cpu, method::wanda, l.curvature, w.view());
    const auto lobd = surgeon::cpu::element_costs(cpu, method::lobd, l.curvature, w.view());
    const auto kobd = surgeon::cpu::element_costs(cpu, method::kobd, l.curvature, w.view());
    for (index_t i = 0; i < r; ++i) {
      for (index_t j = 0; j < c; ++j) {
        CAPTURE(i, j);
        const double w2 = w(i, j) * w(i, j);
        CHECK(close(magnitude(i, j), w2));
        CHECK(close(wanda(i, j), std::abs(w(i, j)) * std::sqrt(a(j, j))));
        CHECK(close(lobd(i, j), 0.5 * w2 * a(j, j)));
        CHECK(close(kobd(i, j), 0.5 * w2 * g(i, i) * a(j, j)));
      }
    }
  }
  SECTION("row scores") {
    const auto magnitude = surgeon::cpu::row_costs(cpu, method::magnitude, l.curvature, w.view());
    const auto lobd = surgeon::cpu::row_costs(cpu, method::lobd, l.curvature, w.view());
    const auto kobd = surgeon::cpu::row_costs(cpu, method::kobd, l.curvature, w.view());
    for (index_t i = 0; i < r; ++i) {
      CAPTURE(i);
      double norm = 0.0, diagonal = 0.0, quadratic = 0.0;
      for (index_t j = 0; j < c; ++j) {
        norm += w(i, j) * w(i, j);
        diagonal += w(i, j) * w(i, j) * a(j, j);
        for (index_t k = 0; k < c; ++k) quadratic += w(i, j) * a(j, k) * w(i, k);
      }
      const auto s = static_cast<std::size_t>(i);
      CHECK(close(magnitude[s], norm));
      CHECK(close(lobd[s], 0.5 * diagonal));
      CHECK(close(kobd[s], 0.5 * g(i, i) * quadratic));
    }
  }
  SECTION("column scores") {
    const auto magnitude = surgeon::cpu::column_costs(cpu, method::magnitude, l.curvature, w.view());
    const auto lobd = surgeon::cpu::column_costs(cpu, method::lobd, l.curvature, w.view());
    const auto kobd = surgeon::cpu::column_costs(cpu, method::kobd, l.curvature, w.view());
    for (index_t j = 0; j < c; ++j) {
      CAPTURE(j);
      double norm = 0.0, quadratic = 0.0;
      for (index_t i = 0; i < r; ++i) {
        norm += w(i, j) * w(i, j);
        for (index_t k = 0; k < r; ++k) quadratic += w(i, j) * g(i, k) * w(k, j);
      }
      const auto s = static_cast<std::size_t>(j);
      CHECK(close(magnitude[s], norm));
      CHECK(close(lobd[s], 0.5 * a(j, j) * norm));
      CHECK(close(kobd[s], 0.5 * a(j, j) * quadratic));
    }
  }
  SECTION("float weights give the costs of their double values") {
    std::vector<float> wf(static_cast<std::size_t>(r * c));
    host_matrix<double> wd(r, c);
    for (index_t i = 0; i < r; ++i) {
      for (index_t j = 0; j < c; ++j) {
        wf[static_cast<std::size_t>(i * c + j)] = static_cast<float>(w(i, j));
        wd(i, j) = static_cast<double>(static_cast<float>(w(i, j)));
      }
    }
    const auto wf_view = surgeon::make_host_matrix_view(wf, r, c);
    for (const method how :
         {method::magnitude, method::wanda, method::lobd, method::kobd, method::llm_surgeon}) {
      CAPTURE(surgeon::to_string(how));
      CHECK(surgeon::cpu::element_costs(cpu, how, l.curvature, wf_view).values() ==
            surgeon::cpu::element_costs(cpu, how, l.curvature, wd.view()).values());
    }
    CHECK(surgeon::cpu::row_costs(cpu, method::llm_surgeon, l.curvature, wf_view) ==
          surgeon::cpu::row_costs(cpu, method::llm_surgeon, l.curvature, wd.view()));
  }
  SECTION("a strided view reads only its own block") {
    const std::vector<double> padded = surgeon::test::random_rows<double>(r, c, c + 3, 9u);
    const host_matrix_view<const double> view(padded.data(), r, c, c + 3);
    host_matrix<double> packed(r, c);
    for (index_t i = 0; i < r; ++i) {
      for (index_t j = 0; j < c; ++j) packed(i, j) = view(i, j);
    }
    CHECK(surgeon::cpu::element_costs(cpu, method::llm_surgeon, l.curvature, view).values() ==
          surgeon::cpu::element_costs(cpu, method::llm_surgeon, l.curvature, packed.view()).values());
    CHECK(surgeon::cpu::column_costs(cpu, method::kobd, l.curvature, view) ==
          surgeon::cpu::column_costs(cpu, method::kobd, l.curvature, packed.view()));
  }
}

TEST_CASE("N:M block costs are the sum of the N smallest element costs of each block", "[cost]") {
  surgeon::cpu::context cpu;
  const layer l = make_layer(5, 16, 3u);
  const auto element = surgeon::cpu::element_costs(cpu, method::llm_surgeon, l.curvature, l.w.view());
  for (const surgeon::nm_pattern p : {surgeon::nm_pattern{2, 4}, surgeon::nm_pattern{4, 8},
                                      surgeon::nm_pattern{1, 16}, surgeon::nm_pattern{3, 3 + 1}}) {
    CAPTURE(p.n, p.m);
    const host_matrix<double> blocks = surgeon::cpu::block_costs(element, p);
    REQUIRE(blocks.rows() == 5);
    REQUIRE(blocks.cols() == 16 / p.m);
    for (index_t i = 0; i < 5; ++i) {
      for (index_t b = 0; b < blocks.cols(); ++b) {
        std::vector<double> values;
        for (index_t j = b * p.m; j < (b + 1) * p.m; ++j) values.push_back(element(i, j));
        std::sort(values.begin(), values.end());
        double expected = 0.0;
        for (index_t k = 0; k < p.n; ++k) expected += values[static_cast<std::size_t>(k)];
        CHECK(close(blocks(i, b), expected, 1e-14));
      }
    }
  }
  SECTION("an invalid pattern throws") {
    CHECK_THROWS_AS(surgeon::cpu::block_costs(element, surgeon::nm_pattern{3, 2}), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::cpu::block_costs(element, surgeon::nm_pattern{2, 3}), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::cpu::block_costs(element, surgeon::nm_pattern{0, 4}), surgeon::logic_error);
  }
}

TEST_CASE("dead rows and columns cost exactly zero and the rest is the live sub-layer's OBS", "[cost]") {
  surgeon::cpu::context cpu;
  const index_t r = 7;
  const index_t c = 6;
  layer l{
      surgeon::test::random_spd(r, 41u), surgeon::test::random_spd(c, 42u), random_weights(r, c, 43u), {}};
  for (index_t j = 0; j < c; ++j) l.w(2, j) = 0.0;  // zero row 2
  for (index_t i = 0; i < r; ++i) l.w(i, 3) = 0.0;  // zero column 3
  SECTION("zero weights") {}
  SECTION("zero weights and a zero diagonal of G (row 5) and of A (column 0)") {
    for (index_t k = 0; k < r; ++k) l.g(5, k) = l.g(k, 5) = 0.0;
    for (index_t k = 0; k < c; ++k) l.a(0, k) = l.a(k, 0) = 0.0;
  }
  l.curvature = surgeon::cpu::factorize(cpu, std::as_const(l.g).view(), std::as_const(l.a).view(),
                                        surgeon::damping{0.1, 0.01}, std::as_const(l.w).view());
  const auto& dead = l.curvature.dead;
  REQUIRE(std::find(dead.dead_rows.begin(), dead.dead_rows.end(), 2) != dead.dead_rows.end());
  REQUIRE(std::find(dead.dead_cols.begin(), dead.dead_cols.end(), 3) != dead.dead_cols.end());
  REQUIRE(static_cast<index_t>(dead.live_rows.size()) < r);
  REQUIRE(l.curvature.g.order() == static_cast<index_t>(dead.live_rows.size()));

  const dense live = live_part(l.w, dead);
  const index_t lr = live.rows();
  const index_t lc = live.cols();
  const dense f = surgeon::test::kronecker(l.curvature.g.damped(), l.curvature.a.damped());
  const surgeon::test::dense_vector theta = surgeon::test::flatten(live);
  for (const method how :
       {method::magnitude, method::wanda, method::lobd, method::kobd, method::llm_surgeon}) {
    CAPTURE(surgeon::to_string(how));
    const auto element = surgeon::cpu::element_costs(cpu, how, l.curvature, l.w.view());
    for (const index_t i : dead.dead_rows) {
      for (index_t j = 0; j < c; ++j) CHECK(element(i, j) == 0.0);
    }
    for (const index_t j : dead.dead_cols) {
      for (index_t i = 0; i < r; ++i) CHECK(element(i, j) == 0.0);
    }
    if (how == method::wanda) continue;
    const auto rows = surgeon::cpu::row_costs(cpu, how, l.curvature, l.w.view());
    const auto cols = surgeon::cpu::column_costs(cpu, how, l.curvature, l.w.view());
    for (const index_t i : dead.dead_rows) CHECK(rows[static_cast<std::size_t>(i)] == 0.0);
    for (const index_t j : dead.dead_cols) CHECK(cols[static_cast<std::size_t>(j)] == 0.0);
    if (how != method::llm_surgeon) continue;
    for (index_t k = 0; k < lr; ++k) {
      const index_t i = dead.live_rows[static_cast<std::size_t>(k)];
      CHECK(close(rows[static_cast<std::size_t>(i)], obs_cost(f, theta, row_set(k, lc))));
      for (index_t q = 0; q < lc; ++q) {
        const index_t j = dead.live_cols[static_cast<std::size_t>(q)];
        CHECK(close(element(i, j), obs_cost(f, theta, {k * lc + q})));
      }
    }
    for (index_t q = 0; q < lc; ++q) {
      const index_t j = dead.live_cols[static_cast<std::size_t>(q)];
      CHECK(close(cols[static_cast<std::size_t>(j)], obs_cost(f, theta, col_set(q, lr, lc))));
    }
  }
}

TEST_CASE("cost functions reject bad input", "[cost]") {
  surgeon::cpu::context cpu;
  const layer l = make_layer(5, 7, 5u);
  SECTION("wanda and sparsegpt have no row or column score") {
    for (const method how : {method::wanda, method::sparsegpt}) {
      CHECK_THROWS_AS(surgeon::cpu::row_costs(cpu, how, l.curvature, l.w.view()), surgeon::logic_error);
      CHECK_THROWS_AS(surgeon::cpu::column_costs(cpu, how, l.curvature, l.w.view()), surgeon::logic_error);
    }
  }
  SECTION("NaN weights") {
    host_matrix<double> bad = l.w;
    bad(2, 3) = std::numeric_limits<double>::quiet_NaN();
    for (const method how : {method::magnitude, method::wanda, method::kobd, method::llm_surgeon}) {
      CHECK_THROWS_WITH(surgeon::cpu::element_costs(cpu, how, l.curvature, bad.view()),
                        Catch::Contains("non-finite"));
    }
    CHECK_THROWS_AS(surgeon::cpu::row_costs(cpu, method::llm_surgeon, l.curvature, bad.view()),
                    surgeon::logic_error);
  }
  SECTION("weights that do not fit the curvature") {
    const host_matrix<double> wrong(5, 6);
    const host_matrix<double> transposed(7, 5);
    CHECK_THROWS_AS(surgeon::cpu::element_costs(cpu, method::llm_surgeon, l.curvature, wrong.view()),
                    surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::cpu::row_costs(cpu, method::kobd, l.curvature, transposed.view()),
                    surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::cpu::column_costs(cpu, method::magnitude, l.curvature, wrong.view()),
                    surgeon::logic_error);
  }
}
