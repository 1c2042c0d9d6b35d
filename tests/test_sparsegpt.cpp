#include <surgeon/cpu/sparsegpt.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "support/catch.hpp"
#include "support/obs_oracle.hpp"
#include "support/random.hpp"

using surgeon::host_matrix;
using surgeon::host_matrix_view;
using surgeon::index_t;
using surgeon::mask;
using surgeon::nm_pattern;
using surgeon::cpu::sparsegpt_options;
using surgeon::cpu::sparsegpt_prune;

namespace {

using surgeon::test::dense;
using surgeon::test::to_dense;

host_matrix<double> from_dense(const dense& m) {
  host_matrix<double> result(m.rows(), m.cols());
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) result(i, j) = m(i, j);
  }
  return result;
}

host_matrix<double> random_weights(index_t rows, index_t cols, unsigned seed) {
  const std::vector<double> values = surgeon::test::random_rows<double>(rows, cols, cols, seed);
  host_matrix<double> w(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) w(i, j) = values[static_cast<std::size_t>(i * cols + j)];
  }
  return w;
}

// H + λ·mean(diag H)·I, as METHOD.md §6 damps.
dense damped(const host_matrix<double>& h, double lambda) {
  dense result = to_dense(h.view());
  result.diagonal().array() += lambda * result.diagonal().mean();
  return result;
}

// Sequential row-wise OBS (G = I): for each row, columns left to right; removing a pruned w_ij given
// the columns F = {j, ..., C-1} not yet eliminated applies δ = −w_ij / [H_F⁻¹]_jj · [H_F⁻¹]_{j,:}.
// Brute force: a full inverse of the sub-Hessian at every step.
dense sequential_obs(const dense& h, const dense& w0, const mask& m) {
  const index_t cols = w0.cols();
  dense w = w0;
  for (index_t i = 0; i < w.rows(); ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (!m.pruned(i, j)) continue;
      const index_t n = cols - j;
      const dense inverse = h.bottomRightCorner(n, n).inverse();
      const Eigen::RowVectorXd delta = -w(i, j) / inverse(0, 0) * inverse.row(0);
      w.row(i).tail(n) += delta;
      w(i, j) = 0.0;
    }
  }
  return w;
}

double relative_difference(const dense& a, const dense& b) {
  return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff();
}

}  // namespace

TEST_CASE("with G = I, SparseGPT equals sequential row-wise OBS", "[sparsegpt]") {
  surgeon::cpu::context cpu;
  const index_t rows = 6;
  const index_t cols = 24;
  const host_matrix<double> h = surgeon::test::random_spd(cols, 3u);
  const dense h_damped = damped(h, 0.01);
  for (const index_t block : {index_t{128}, index_t{4}, index_t{5}, index_t{1}}) {
    CAPTURE(block);
    sparsegpt_options options;
    options.block_size = block;
    host_matrix<double> w = random_weights(rows, cols, 7u);
    SECTION("unstructured 50 %") {
      const dense w0 = to_dense(w.view());
      const mask m = sparsegpt_prune(cpu, h.view(), w.view(), 0.5, options);
      CHECK(m.count() == rows * cols / 2);
      CHECK(relative_difference(to_dense(w.view()), sequential_obs(h_damped, w0, m)) < 1e-10);
    }
    SECTION("unstructured 30 % with zeros from an earlier shot") {
      w(0, 3) = w(2, 0) = w(5, 23) = w(4, 11) = 0.0;
      const dense w0 = to_dense(w.view());
      const mask m = sparsegpt_prune(cpu, h.view(), w.view(), 0.3, options);
      CHECK(m.pruned(0, 3));
      CHECK(m.pruned(2, 0));
      CHECK(m.pruned(5, 23));
      CHECK(m.pruned(4, 11));
      CHECK(relative_difference(to_dense(w.view()), sequential_obs(h_damped, w0, m)) < 1e-10);
    }
    SECTION("2:4") {
      const dense w0 = to_dense(w.view());
      const mask m = sparsegpt_prune(cpu, h.view(), w.view(), nm_pattern{2, 4}, options);
      CHECK(relative_difference(to_dense(w.view()), sequential_obs(h_damped, w0, m)) < 1e-10);
    }
    SECTION("4:8, damping 0.1") {
      options.damping = 0.1;
      const dense w0 = to_dense(w.view());
      const mask m = sparsegpt_prune(cpu, h.view(), w.view(), nm_pattern{4, 8}, options);
      CHECK(relative_difference(to_dense(w.view()), sequential_obs(damped(h, 0.1), w0, m)) < 1e-10);
    }
  }
}

TEST_CASE("SparseGPT in float matches the double run up to float rounding", "[sparsegpt]") {
  surgeon::cpu::context cpu;
  const index_t rows = 5;
  const index_t cols = 16;
  const index_t ld = 19;  // padding holds NaN: it must be neither read nor written
  const host_matrix<double> h = surgeon::test::random_spd(cols, 4u);
  std::vector<float> wf = surgeon::test::random_rows<float>(rows, cols, ld, 9u);
  host_matrix<double> wd(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j)
      wd(i, j) = static_cast<double>(wf[static_cast<std::size_t>(i * ld + j)]);
  }
  const host_matrix_view<float> view(wf.data(), rows, cols, ld);
  sparsegpt_options options;
  options.block_size = 8;
  const mask mf = sparsegpt_prune(cpu, h.view(), view, nm_pattern{2, 4}, options);
  const mask md = sparsegpt_prune(cpu, h.view(), wd.view(), nm_pattern{2, 4}, options);
  CHECK(mf == md);
  CHECK(surgeon::test::max_relative_difference(view, wd, rows, cols) < 1e-6);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (mf.pruned(i, j)) CHECK(view(i, j) == 0.0f);
    }
    for (index_t j = cols; j < ld; ++j) CHECK(std::isnan(wf[static_cast<std::size_t>(i * ld + j)]));
  }
}

TEST_CASE("N:M masks prune exactly N of every M in every row", "[sparsegpt]") {
  surgeon::cpu::context cpu;
  const index_t rows = 7;
  const index_t cols = 32;
  const host_matrix<double> h = surgeon::test::random_spd(cols, 5u);
  for (const nm_pattern p : {nm_pattern{2, 4}, nm_pattern{4, 8}, nm_pattern{1, 4}, nm_pattern{8, 8}}) {
    for (const index_t block : {index_t{128}, index_t{6}, index_t{1}}) {
      CAPTURE(p.n, p.m, block);
      host_matrix<double> w = random_weights(rows, cols, 11u);
      sparsegpt_options options;
      options.block_size = block;
      const mask m = sparsegpt_prune(cpu, h.view(), w.view(), p, options);
      CHECK(m.count() == rows * cols / p.m * p.n);
      for (index_t i = 0; i < rows; ++i) {
        for (index_t g = 0; g < cols; g += p.m) {
          index_t in_group = 0;
          for (index_t j = g; j < g + p.m; ++j) in_group += m.pruned(i, j) ? 1 : 0;
          CHECK(in_group == p.n);
        }
      }
    }
  }
  SECTION("forced entries count towards N; a group with more than N forced loses all of them") {
    host_matrix<double> w = random_weights(rows, cols, 12u);
    mask must(rows, cols);
    must.prune(0, 1);                                   // group 0 of row 0: 1 forced, 1 chosen
    w(1, 4) = 0.0;                                      // an earlier shot's zero
    for (index_t j = 8; j < 11; ++j) must.prune(2, j);  // 3 forced > N = 2
    const mask m = sparsegpt_prune(cpu, h.view(), w.view(), nm_pattern{2, 4}, must);
    CHECK(m.pruned(0, 1));
    CHECK(m.pruned(1, 4));
    CHECK(m.count_in_row(0) == cols / 2);
    CHECK(m.count_in_row(1) == cols / 2);
    CHECK(m.count_in_row(2) == cols / 2 + 1);
    for (index_t j = 8; j < 11; ++j) CHECK(m.pruned(2, j));
    CHECK_FALSE(m.pruned(2, 11));
  }
}

TEST_CASE("unstructured sparsity follows the cumulative block rounding rule", "[sparsegpt]") {
  surgeon::cpu::context cpu;
  const index_t rows = 6;
  const index_t cols = 20;
  const host_matrix<double> h = surgeon::test::random_spd(cols, 6u);
  for (const double s : {0.0, 0.1, 0.3, 0.5, 0.77, 0.95}) {
    for (const index_t block : {index_t{128}, index_t{8}, index_t{7}, index_t{1}}) {
      CAPTURE(s, block);
      host_matrix<double> w = random_weights(rows, cols, 13u);
      sparsegpt_options options;
      options.block_size = block;
      const mask m = sparsegpt_prune(cpu, h.view(), w.view(), s, options);
      const double rc = static_cast<double>(rows);
      CHECK(m.count() == std::llround(s * rc * static_cast<double>(cols)));
      for (index_t j0 = 0; j0 < cols; j0 += block) {
        const index_t j1 = std::min(cols, j0 + block);
        index_t in_block = 0;
        for (index_t i = 0; i < rows; ++i) {
          for (index_t j = j0; j < j1; ++j) in_block += m.pruned(i, j) ? 1 : 0;
        }
        CHECK(in_block == std::llround(s * rc * static_cast<double>(j1)) -
                              std::llround(s * rc * static_cast<double>(j0)));
      }
    }
  }
  SECTION("the block quantile is over the whole block, not per row") {
    // Row 0 small, row 1 large: at 50 % the quantile over the block prunes mostly row 0.
    host_matrix<double> w = random_weights(2, cols, 14u);
    for (index_t j = 0; j < cols; ++j) w(0, j) *= 1e-3;
    const mask m = sparsegpt_prune(cpu, h.view(), w.view(), 0.5);
    CHECK(m.count() == cols);
    CHECK(m.count_in_row(0) == cols);
  }
  SECTION("must_prune entries are pruned first and the layer total still holds") {
    host_matrix<double> w = random_weights(rows, cols, 15u);
    mask must(rows, cols);
    must.prune(0, 0);
    must.prune(3, 7);
    must.prune(5, 19);
    w(2, 2) = 0.0;
    const host_matrix<double> before = w;
    const mask m = sparsegpt_prune(cpu, h.view(), w.view(), 0.4, must);
    CHECK(m.count() == std::llround(0.4 * static_cast<double>(rows * cols)));
    CHECK(m.pruned(0, 0));
    CHECK(m.pruned(3, 7));
    CHECK(m.pruned(5, 19));
    CHECK(m.pruned(2, 2));
    CHECK(w(3, 7) == 0.0);
    CHECK(w(2, 2) == 0.0);
    CHECK(before(3, 7) != 0.0);
  }
  SECTION("forced entries beyond a block's quota are compensated by later blocks") {
    host_matrix<double> w = random_weights(rows, cols, 16u);
    mask must(rows, cols);
    for (index_t i = 0; i < rows; ++i) {
      for (index_t j = 0; j < 4; ++j) must.prune(i, j);  // block 0 fully forced
    }
    sparsegpt_options options;
    options.block_size = 4;
    const mask m = sparsegpt_prune(cpu, h.view(), w.view(), 0.5, must, options);
    CHECK(m.count() == rows * cols / 2);
  }
}

TEST_CASE("pruned entries are exactly zero and kept entries are not", "[sparsegpt]") {
  surgeon::cpu::context cpu;
  const index_t rows = 8;
  const index_t cols = 24;
  const host_matrix<double> h = surgeon::test::random_spd(cols, 17u);
  for (const index_t block : {index_t{128}, index_t{5}}) {
    CAPTURE(block);
    sparsegpt_options options;
    options.block_size = block;
    host_matrix<double> w = random_weights(rows, cols, 18u);
    const mask m = sparsegpt_prune(cpu, h.view(), w.view(), 0.6, options);
    host_matrix<double> w_nm = random_weights(rows, cols, 19u);
    const mask m_nm = sparsegpt_prune(cpu, h.view(), w_nm.view(), nm_pattern{4, 8}, options);
    for (index_t i = 0; i < rows; ++i) {
      for (index_t j = 0; j < cols; ++j) {
        CHECK((w(i, j) == 0.0) == m.pruned(i, j));
        CHECK((w_nm(i, j) == 0.0) == m_nm.pruned(i, j));
      }
    }
  }
}

TEST_CASE("on correlated inputs SparseGPT reconstructs better than magnitude pruning", "[sparsegpt]") {
  surgeon::cpu::context cpu;
  const index_t rows = 16;
  const index_t cols = 32;
  const index_t tokens = 512;
  // AR(1) inputs, correlation 0.95 between neighbouring features.
  std::mt19937_64 engine(21u);
  std::normal_distribution<double> normal(0.0, 1.0);
  dense x(tokens, cols);
  const double rho = 0.95;
  for (index_t n = 0; n < tokens; ++n) {
    x(n, 0) = normal(engine);
    for (index_t j = 1; j < cols; ++j)
      x(n, j) = rho * x(n, j - 1) + std::sqrt(1.0 - rho * rho) * normal(engine);
  }
  const host_matrix<double> h = from_dense(x.transpose() * x / static_cast<double>(tokens));
  const host_matrix<double> w0 = random_weights(rows, cols, 22u);
  const dense original = to_dense(w0.view());

  // Magnitude: the 50 % smallest |W| of the layer, no update.
  std::vector<double> magnitudes;
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) magnitudes.push_back(std::abs(w0(i, j)));
  }
  std::nth_element(magnitudes.begin(), magnitudes.begin() + rows * cols / 2, magnitudes.end());
  const double threshold = magnitudes[static_cast<std::size_t>(rows * cols / 2)];
  dense magnitude = original;
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (std::abs(magnitude(i, j)) < threshold) magnitude(i, j) = 0.0;
    }
  }
  CHECK((magnitude.array() == 0.0).count() == rows * cols / 2);

  SECTION("unstructured 50 %") {
    host_matrix<double> w = w0;
    const mask m = sparsegpt_prune(cpu, h.view(), w.view(), 0.5);
    REQUIRE(m.count() == rows * cols / 2);
    const double sparsegpt_error = (x * (original - to_dense(w.view())).transpose()).norm();
    const double magnitude_error = (x * (original - magnitude).transpose()).norm();
    CAPTURE(sparsegpt_error, magnitude_error);
    CHECK(sparsegpt_error < 0.5 * magnitude_error);
  }
  SECTION("2:4, against magnitude 2:4") {
    dense magnitude_nm = original;
    for (index_t i = 0; i < rows; ++i) {
      for (index_t g = 0; g < cols; g += 4) {
        std::vector<index_t> order{g, g + 1, g + 2, g + 3};
        std::sort(order.begin(), order.end(),
                  [&](index_t a, index_t b) { return std::abs(original(i, a)) < std::abs(original(i, b)); });
        magnitude_nm(i, order[0]) = magnitude_nm(i, order[1]) = 0.0;
      }
    }
    host_matrix<double> w = w0;
    sparsegpt_prune(cpu, h.view(), w.view(), nm_pattern{2, 4});
    const double sparsegpt_error = (x * (original - to_dense(w.view())).transpose()).norm();
    const double magnitude_error = (x * (original - magnitude_nm).transpose()).norm();
    CAPTURE(sparsegpt_error, magnitude_error);
    CHECK(sparsegpt_error < 0.5 * magnitude_error);
  }
}

TEST_CASE("dead inputs are zeroed and counted as pruned", "[sparsegpt]") {
  surgeon::cpu::context cpu;
  const index_t rows = 6;
  const index_t cols = 16;
  host_matrix<double> h = surgeon::test::random_spd(cols, 23u);
  for (const index_t dead : {index_t{2}, index_t{9}}) {
    for (index_t k = 0; k < cols; ++k) h(dead, k) = h(k, dead) = 0.0;
  }
  SECTION("unstructured") {
    host_matrix<double> w = random_weights(rows, cols, 24u);
    sparsegpt_options options;
    options.block_size = 4;
    const mask m = sparsegpt_prune(cpu, h.view(), w.view(), 0.25, options);
    CHECK(m.count() == std::llround(0.25 * static_cast<double>(rows * cols)));
    for (index_t i = 0; i < rows; ++i) {
      CHECK(w(i, 2) == 0.0);
      CHECK(w(i, 9) == 0.0);
      CHECK(m.pruned(i, 2));
      CHECK(m.pruned(i, 9));
    }
    // The live columns are still the sequential OBS result on the live sub-Hessian.
    host_matrix<double> w_oracle = random_weights(rows, cols, 24u);
    for (index_t i = 0; i < rows; ++i) w_oracle(i, 2) = w_oracle(i, 9) = 0.0;
    dense h_oracle = damped(h, 0.01);
    h_oracle(2, 2) = h_oracle(9, 9) = 1.0;
    CHECK(relative_difference(to_dense(w.view()), sequential_obs(h_oracle, to_dense(w_oracle.view()), m)) <
          1e-10);
  }
  SECTION("2:4") {
    host_matrix<double> w = random_weights(rows, cols, 25u);
    const mask m = sparsegpt_prune(cpu, h.view(), w.view(), nm_pattern{2, 4});
    for (index_t i = 0; i < rows; ++i) {
      CHECK(w(i, 2) == 0.0);
      CHECK(w(i, 9) == 0.0);
      CHECK(m.count_in_row(i) == cols / 2);
    }
  }
  SECTION("every input dead") {
    const host_matrix<double> zero(cols, cols);
    host_matrix<double> w = random_weights(rows, cols, 26u);
    const mask m = sparsegpt_prune(cpu, zero.view(), w.view(), 0.5);
    CHECK(m.count() == rows * cols);
    for (index_t i = 0; i < rows; ++i) {
      for (index_t j = 0; j < cols; ++j) CHECK(w(i, j) == 0.0);
    }
  }
}

TEST_CASE("sparsity 0 and empty layers leave the weights alone", "[sparsegpt]") {
  surgeon::cpu::context cpu;
  const host_matrix<double> h = surgeon::test::random_spd(8, 27u);
  host_matrix<double> w = random_weights(3, 8, 28u);
  const host_matrix<double> before = w;
  const mask m = sparsegpt_prune(cpu, h.view(), w.view(), 0.0);
  CHECK(m.count() == 0);
  CHECK(w.values() == before.values());
  host_matrix<double> no_rows(0, 8);
  CHECK(sparsegpt_prune(cpu, h.view(), no_rows.view(), 0.5).rows() == 0);
}

TEST_CASE("bad input is a logic_error", "[sparsegpt]") {
  surgeon::cpu::context cpu;
  const index_t rows = 4;
  const index_t cols = 8;
  const host_matrix<double> h = surgeon::test::random_spd(cols, 29u);
  host_matrix<double> w = random_weights(rows, cols, 30u);
  using surgeon::logic_error;
  SECTION("shape mismatch") {
    const host_matrix<double> wrong = surgeon::test::random_spd(cols + 1, 31u);
    CHECK_THROWS_AS(sparsegpt_prune(cpu, wrong.view(), w.view(), 0.5), logic_error);
    const host_matrix<double> not_square(cols, cols + 1);
    CHECK_THROWS_AS(sparsegpt_prune(cpu, not_square.view(), w.view(), 0.5), logic_error);
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), 0.5, mask(rows + 1, cols)), logic_error);
  }
  SECTION("sparsity outside [0, 1)") {
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), -0.1), logic_error);
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), 1.0), logic_error);
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), std::numeric_limits<double>::quiet_NaN()),
                    logic_error);
  }
  SECTION("bad N:M") {
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), nm_pattern{3, 2}), logic_error);
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), nm_pattern{2, 3}), logic_error);
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), nm_pattern{0, 4}), logic_error);
  }
  SECTION("NaN in w or h") {
    host_matrix<double> bad_w = w;
    bad_w(1, 5) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), bad_w.view(), 0.5), logic_error);
    host_matrix<double> bad_h = h;
    bad_h(3, 2) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(sparsegpt_prune(cpu, bad_h.view(), w.view(), 0.5), logic_error);
    host_matrix<double> negative = h;
    negative(4, 4) = -1.0;
    CHECK_THROWS_AS(sparsegpt_prune(cpu, negative.view(), w.view(), 0.5), logic_error);
  }
  SECTION("bad options") {
    sparsegpt_options options;
    options.block_size = 0;
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), 0.5, options), logic_error);
    options.block_size = 128;
    options.damping = -0.01;
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), nm_pattern{2, 4}, options), logic_error);
  }
  SECTION("the weights are untouched when a precondition fails") {
    const host_matrix<double> before = w;
    CHECK_THROWS_AS(sparsegpt_prune(cpu, h.view(), w.view(), 1.5), logic_error);
    CHECK(w.values() == before.values());
  }
}
