#include <surgeon/cpu/curvature.hpp>

#include <Eigen/Dense>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "support/catch.hpp"
#include "support/random.hpp"

using surgeon::host_matrix;
using surgeon::host_matrix_view;
using surgeon::index_t;
using surgeon::cpu::matrix;

namespace {

matrix to_eigen(const host_matrix<double>& m) {
  matrix result(m.rows(), m.cols());
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) result(i, j) = m(i, j);
  }
  return result;
}

host_matrix<double> from_eigen(const matrix& m) {
  host_matrix<double> result(m.rows(), m.cols());
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) result(i, j) = m(i, j);
  }
  return result;
}

// Q diag(spectrum) Qᵀ with a seeded random orthogonal Q.
host_matrix<double> with_spectrum(const std::vector<double>& spectrum, unsigned seed) {
  const auto n = static_cast<index_t>(spectrum.size());
  const std::vector<double> random = surgeon::test::random_rows<double>(n, n, n, seed);
  const matrix q = Eigen::HouseholderQR<matrix>(Eigen::Map<const matrix>(random.data(), n, n)).householderQ();
  const Eigen::Map<const Eigen::VectorXd> s(spectrum.data(), n);
  const matrix m = q * s.asDiagonal() * q.transpose();
  return from_eigen(0.5 * (m + m.transpose()));
}

double mean_diagonal(const host_matrix<double>& m) {
  double trace = 0.0;
  for (index_t i = 0; i < m.rows(); ++i) trace += m(i, i);
  return trace / static_cast<double>(m.rows());
}

}  // namespace

TEST_CASE("relative and absolute damping add the documented shift", "[curvature]") {
  surgeon::cpu::context cpu;
  const host_matrix<double> f = surgeon::test::random_spd(12, 11u);
  surgeon::damping d;
  SECTION("relative: lambda times the mean diagonal") {
    const auto damped = surgeon::cpu::damp_and_invert(cpu, f.view(), 0.05, d);
    CHECK(damped.report().shift == Approx(0.05 * mean_diagonal(f)).epsilon(1e-14));
    CHECK(damped.report().lambda_used == 0.05);
    CHECK(damped.report().escalations == 0);
    CHECK(damped.damped()(3, 3) == Approx(f(3, 3) + damped.report().shift).epsilon(1e-15));
    CHECK(damped.damped()(3, 4) == f(3, 4));
  }
  SECTION("absolute: lambda itself") {
    d.mode = surgeon::damping_mode::absolute;
    const auto damped = surgeon::cpu::damp_and_invert(cpu, f.view(), 0.25, d);
    CHECK(damped.report().shift == 0.25);
  }
  SECTION("the inverse is the inverse of the damped factor") {
    const auto damped = surgeon::cpu::damp_and_invert(cpu, f.view(), 0.01, d);
    const matrix product = damped.damped() * damped.inverse();
    CHECK((product - matrix::Identity(12, 12)).norm() < 1e-12);
    CHECK((damped.inverse() - damped.inverse().transpose()).norm() == 0.0);
  }
}

TEST_CASE("Cholesky failure escalates lambda by x10 and reports it", "[curvature]") {
  surgeon::cpu::context cpu;
  const index_t n = 20;
  std::vector<double> spectrum(static_cast<std::size_t>(n));
  double others = 0.0;
  for (index_t k = 0; k + 1 < n; ++k)
    others += spectrum[static_cast<std::size_t>(k)] = 1.0 + static_cast<double>(k);
  // One eigenvalue of -5e-4 · mean diagonal: indefinite until lambda reaches 1e-3.
  spectrum.back() = -5e-4 * others / static_cast<double>(n);
  const host_matrix<double> f = with_spectrum(spectrum, 5u);
  surgeon::damping d;
  SECTION("escalates from 1e-6 to 1e-3 in three steps") {
    const auto damped = surgeon::cpu::damp_and_invert(cpu, f.view(), 1e-6, d);
    CHECK(damped.report().lambda_requested == 1e-6);
    CHECK(damped.report().lambda_used == Approx(1e-3).epsilon(1e-12));
    CHECK(damped.report().escalations == 3);
    CHECK((damped.damped() * damped.inverse() - matrix::Identity(n, n)).norm() < 1e-8);
  }
  SECTION("a singular factor with zero lambda escalates from 1e-8") {
    std::vector<double> singular = spectrum;
    singular.back() = 0.0;
    singular[0] = -1e-12;
    const auto damped = surgeon::cpu::damp_and_invert(cpu, with_spectrum(singular, 6u).view(), 0.0, d);
    CHECK(damped.report().escalations >= 1);
    CHECK(damped.report().lambda_used >= 1e-8);
  }
  SECTION("bounded: too few escalations is a numerical_error") {
    d.max_escalations = 2;
    CHECK_THROWS_AS(surgeon::cpu::damp_and_invert(cpu, f.view(), 1e-6, d), surgeon::numerical_error);
  }
  SECTION("a zero factor cannot be damped relative to itself") {
    const host_matrix<double> zero(4, 4);
    CHECK_THROWS_AS(surgeon::cpu::damp_and_invert(cpu, zero.view(), 0.01, d), surgeon::numerical_error);
  }
}

TEST_CASE("eigendecomposition: residual, orthonormality, ordering, reconstruction", "[curvature]") {
  surgeon::cpu::context cpu;
  for (const index_t n : {1, 2, 17, 64}) {
    CAPTURE(n);
    const host_matrix<double> f = surgeon::test::random_spd(n, static_cast<unsigned>(n));
    const auto damped = surgeon::cpu::damp_and_invert(cpu, f.view(), 0.01, surgeon::damping{});
    REQUIRE_FALSE(damped.has_eigen());
    const auto& eig = damped.eigen();
    REQUIRE(damped.has_eigen());
    CHECK(&damped.eigen() == &eig);  // cached
    const matrix& v = eig.vectors;
    const Eigen::VectorXd& s = eig.values;
    const double scale = damped.damped().norm();
    CHECK((damped.damped() * v - v * s.asDiagonal()).norm() < 1e-12 * scale);
    CHECK((v.transpose() * v - matrix::Identity(n, n)).norm() < 1e-12 * static_cast<double>(n));
    for (index_t k = 1; k < n; ++k) CHECK(s(k - 1) <= s(k));
    CHECK(s(0) > 0.0);
    CHECK((v * s.asDiagonal() * v.transpose() - damped.damped()).norm() < 1e-12 * scale);
    // Damping shifts the spectrum of the undamped factor.
    const Eigen::VectorXd undamped = Eigen::SelfAdjointEigenSolver<matrix>(to_eigen(f)).eigenvalues();
    CHECK((s - undamped - Eigen::VectorXd::Constant(n, damped.report().shift)).norm() < 1e-12 * scale);
  }
}

TEST_CASE("dead rows and columns are found and dropped", "[curvature]") {
  surgeon::cpu::context cpu;
  const index_t rows = 6;
  const index_t cols = 5;
  std::vector<float> w = surgeon::test::random_rows<float>(rows, cols, cols, 13u);
  for (index_t j = 0; j < cols; ++j) w[static_cast<std::size_t>(2 * cols + j)] = 0.0f;  // row 2 zero
  for (index_t i = 0; i < rows; ++i) w[static_cast<std::size_t>(i * cols + 4)] = 0.0f;  // column 4 zero
  host_matrix<double> g = surgeon::test::random_spd(rows, 1u);
  host_matrix<double> a = surgeon::test::random_spd(cols, 2u);
  for (index_t k = 0; k < rows; ++k) g(5, k) = g(k, 5) = 0.0;  // G_55 = 0: row 5 dead
  for (index_t k = 0; k < cols; ++k) a(1, k) = a(k, 1) = 0.0;  // A_11 = 0: column 1 dead
  const host_matrix_view<const float> weights(w.data(), rows, cols);

  std::vector<double> g_diag, a_diag;
  for (index_t i = 0; i < rows; ++i) g_diag.push_back(g(i, i));
  for (index_t j = 0; j < cols; ++j) a_diag.push_back(a(j, j));

  SECTION("find_dead applies the rule of METHOD.md §2") {
    const auto dead =
        surgeon::find_dead(surgeon::host_vector_view<const double>(g_diag.data(), rows),
                           surgeon::host_vector_view<const double>(a_diag.data(), cols), weights);
    CHECK(dead.dead_rows == std::vector<index_t>{2, 5});
    CHECK(dead.live_rows == std::vector<index_t>{0, 1, 3, 4});
    CHECK(dead.dead_cols == std::vector<index_t>{1, 4});
    CHECK(dead.live_cols == std::vector<index_t>{0, 2, 3});
  }
  SECTION("factorize works on the live sub-factors") {
    const auto curvature = surgeon::cpu::factorize(cpu, g.view(), a.view(), surgeon::damping{}, weights);
    REQUIRE(curvature.g.order() == 4);
    REQUIRE(curvature.a.order() == 3);
    const host_matrix<double> g_live = surgeon::extract_live(g.view(), curvature.dead.live_rows);
    CHECK(curvature.g.damped()(1, 2) == g_live(1, 2));
    CHECK(g_live(1, 2) == g(1, 3));
    // Relative damping uses the mean diagonal of the live sub-factor.
    CHECK(curvature.g.report().shift == Approx(0.01 * mean_diagonal(g_live)).epsilon(1e-14));
  }
  SECTION("without weights, zero diagonals alone decide") {
    const auto curvature = surgeon::cpu::factorize(cpu, g.view(), a.view(), surgeon::damping{});
    CHECK(curvature.dead.dead_rows == std::vector<index_t>{5});
    CHECK(curvature.dead.dead_cols == std::vector<index_t>{1});
    CHECK(curvature.g.order() == 5);
  }
  SECTION("an entirely dead layer is a numerical_error") {
    const std::vector<float> zeros(static_cast<std::size_t>(rows * cols), 0.0f);
    CHECK_THROWS_AS(surgeon::cpu::factorize(cpu, g.view(), a.view(), surgeon::damping{},
                                            host_matrix_view<const float>(zeros.data(), rows, cols)),
                    surgeon::numerical_error);
  }
}

TEST_CASE("factorize from accumulators equals factorize from their means", "[curvature]") {
  surgeon::cpu::context cpu;
  surgeon::factor_accumulator<double> g(4);
  surgeon::factor_accumulator<double> a(3, {true, std::nullopt});
  const std::vector<float> x = surgeon::test::random_rows<float>(50, 4, 4, 3u);
  g.add(cpu, host_matrix_view<const float>(x.data(), 50, 4));
  a.add(cpu, host_matrix_view<const float>(x.data(), 50, 3, 4));
  const auto from_acc = surgeon::cpu::factorize(cpu, g, a, surgeon::damping{0.1, 0.01});
  const auto g_mean = g.mean();
  const auto a_mean = a.mean();
  const auto from_means =
      surgeon::cpu::factorize(cpu, g_mean.view(), a_mean.view(), surgeon::damping{0.1, 0.01});
  CHECK(from_acc.a.order() == 4);
  CHECK((from_acc.a.inverse() - from_means.a.inverse()).norm() == 0.0);
  CHECK(from_acc.g.report().lambda_used == 0.1);
}

TEST_CASE("every curvature precondition throws logic_error", "[curvature]") {
  surgeon::cpu::context cpu;
  const host_matrix<double> f = surgeon::test::random_spd(4, 9u);
  const surgeon::damping d;
  SECTION("non-square and empty factors") {
    const host_matrix<double> rectangular(3, 4, 1.0);
    CHECK_THROWS_AS(surgeon::cpu::damp_and_invert(cpu, rectangular.view(), 0.01, d), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::cpu::damp_and_invert(cpu, host_matrix<double>().view(), 0.01, d),
                    surgeon::logic_error);
  }
  SECTION("NaN in a factor") {
    host_matrix<double> bad = f;
    bad(1, 2) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_WITH(surgeon::cpu::damp_and_invert(cpu, bad.view(), 0.01, d), Catch::Contains("non-finite"));
  }
  SECTION("bad damping parameters") {
    CHECK_THROWS_AS(surgeon::cpu::damp_and_invert(cpu, f.view(), -0.1, d), surgeon::logic_error);
    surgeon::damping bad;
    bad.escalation = 1.0;
    CHECK_THROWS_AS(surgeon::cpu::damp_and_invert(cpu, f.view(), 0.01, bad), surgeon::logic_error);
    bad = surgeon::damping{};
    bad.a = std::numeric_limits<double>::infinity();
    CHECK_THROWS_AS(surgeon::cpu::factorize(cpu, f.view(), f.view(), bad), surgeon::logic_error);
  }
  SECTION("weights that do not fit the factors") {
    const std::vector<float> w(12, 1.0f);
    CHECK_THROWS_AS(
        surgeon::cpu::factorize(cpu, f.view(), f.view(), d, host_matrix_view<const float>(w.data(), 3, 4)),
        surgeon::logic_error);
  }
  SECTION("extract_live indices") {
    CHECK_THROWS_AS(surgeon::extract_live(f.view(), {2, 1}), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::extract_live(f.view(), {0, 4}), surgeon::logic_error);
  }
}
