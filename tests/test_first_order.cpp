// The first-order correction (first_order.hpp): the masked adapter's gradients against a dense
// double oracle and central finite differences, Adam's first step, absorb keeping exactly the
// mask's zeros for unstructured, N:M and structured masks, a toy regression whose loss the steps
// lower, the driver's correction phase (zero steps change nothing, the mask survives every shot,
// the type-erased adapter agrees) and bad input.
#include <surgeon/adapter.hpp>
#include <surgeon/cpu/first_order.hpp>
#include <surgeon/prune.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "support/catch.hpp"

using surgeon::host_matrix_view;
using surgeon::index_t;
using surgeon::mask;
using surgeon::cpu::low_rank_adapter;
using matrix = low_rank_adapter::matrix;
using dmatrix = Eigen::MatrixXd;

namespace {

matrix random_matrix(index_t rows, index_t cols, unsigned seed, float scale = 1.0f) {
  std::mt19937 engine(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  matrix m(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) m(i, j) = normal(engine);
  }
  return m;
}

// About half the weights pruned at random.
mask random_mask(index_t rows, index_t cols, unsigned seed) {
  std::mt19937 engine(seed);
  std::bernoulli_distribution coin(0.5);
  mask m(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (coin(engine)) m.prune(i, j);
    }
  }
  return m;
}

// 2 of every 4 consecutive weights of each row.
mask two_of_four_mask(index_t rows, index_t cols, unsigned seed) {
  std::mt19937 engine(seed);
  mask m(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; j += 4) {
      int order[4] = {0, 1, 2, 3};
      std::shuffle(order, order + 4, engine);
      m.prune(i, j + order[0]);
      m.prune(i, j + order[1]);
    }
  }
  return m;
}

// Rows 1 and 4 and columns 0, 5 and 7 removed.
mask lines_mask(index_t rows, index_t cols) {
  mask m(rows, cols);
  for (const index_t i : {index_t{1}, index_t{4}}) m.prune_row(i);
  for (const index_t j : {index_t{0}, index_t{5}, index_t{7}}) m.prune_column(j);
  (void)rows;
  (void)cols;
  return m;
}

dmatrix keep(const mask& m) {
  dmatrix k(m.rows(), m.cols());
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) k(i, j) = m.pruned(i, j) ? 0.0 : 1.0;
  }
  return k;
}

host_matrix_view<const float> view(const matrix& m) {
  return {m.data(), m.rows(), m.cols()};
}

// 0.5 Σ_t ‖(W + M ⊙ B·A) x_t − y_t‖² in double.
double regression_loss(const dmatrix& w, const dmatrix& kept, const dmatrix& b, const dmatrix& a,
                       const dmatrix& x, const dmatrix& y) {
  const dmatrix effective = w + kept.cwiseProduct(b * a);
  return 0.5 * (x * effective.transpose() - y).squaredNorm();
}

}  // namespace

TEST_CASE("first_order: the adapter's gradients equal the dense oracle and finite differences",
          "[first_order]") {
  const index_t rows = 6, cols = 9, tokens = 11;
  const int rank = 3;
  const auto which = GENERATE(0, 1, 2);
  CAPTURE(which);
  const mask pruned = which == 0   ? random_mask(rows, cols, 3)
                      : which == 1 ? lines_mask(rows, cols)
                                   : mask(rows, cols);
  const matrix b = random_matrix(rows, rank, 4, 0.5f);
  const matrix a = random_matrix(rank, cols, 5, 0.5f);
  matrix w = random_matrix(rows, cols, 6);
  pruned.apply(host_matrix_view<float>(w.data(), rows, cols));
  const matrix x = random_matrix(tokens, cols, 7);
  const matrix y = random_matrix(tokens, rows, 8);
  const dmatrix kept = keep(pruned);
  const dmatrix wd = w.cast<double>(), bd = b.cast<double>(), ad = a.cast<double>();
  const dmatrix xd = x.cast<double>(), yd = y.cast<double>();
  const dmatrix effective = wd + kept.cwiseProduct(bd * ad);
  const matrix gy = (xd * effective.transpose() - yd).cast<float>();  // ∂L/∂y of each token

  low_rank_adapter adapter(pruned, b, a);
  // Two batches: the first 4 tokens, then the rest.
  adapter.accumulate(host_matrix_view<const float>(x.data(), 4, cols),
                     host_matrix_view<const float>(gy.data(), 4, rows));
  adapter.accumulate(host_matrix_view<const float>(x.data() + 4 * cols, tokens - 4, cols),
                     host_matrix_view<const float>(gy.data() + 4 * rows, tokens - 4, rows));
  // Oracle: E = M ⊙ Gyᵀ X, ∂B = E Aᵀ, ∂A = Bᵀ E.
  const dmatrix e = kept.cwiseProduct(gy.cast<double>().transpose() * xd);
  const dmatrix oracle_b = e * ad.transpose();
  const dmatrix oracle_a = bd.transpose() * e;
  CHECK((adapter.gradient_b().cast<double>() - oracle_b).norm() <= 1e-5 * oracle_b.norm());
  CHECK((adapter.gradient_a().cast<double>() - oracle_a).norm() <= 1e-5 * oracle_a.norm());
  // Central differences of the double loss.
  const double h = 1e-5;
  double worst = 0.0;
  for (index_t i = 0; i < rows; ++i) {
    for (index_t k = 0; k < rank; ++k) {
      dmatrix plus = bd, minus = bd;
      plus(i, k) += h;
      minus(i, k) -= h;
      const double fd =
          (regression_loss(wd, kept, plus, ad, xd, yd) - regression_loss(wd, kept, minus, ad, xd, yd)) /
          (2 * h);
      worst = std::max(worst, std::abs(fd - adapter.gradient_b()(i, k)) / (1.0 + std::abs(fd)));
    }
  }
  for (index_t k = 0; k < rank; ++k) {
    for (index_t j = 0; j < cols; ++j) {
      dmatrix plus = ad, minus = ad;
      plus(k, j) += h;
      minus(k, j) -= h;
      const double fd =
          (regression_loss(wd, kept, bd, plus, xd, yd) - regression_loss(wd, kept, bd, minus, xd, yd)) /
          (2 * h);
      worst = std::max(worst, std::abs(fd - adapter.gradient_a()(k, j)) / (1.0 + std::abs(fd)));
    }
  }
  CHECK(worst < 1e-4);
  // A column of A that only pruned weights read gets no gradient (the structured mask's column 0).
  if (which == 1) CHECK(adapter.gradient_a().col(0).norm() == 0.0f);
  adapter.zero_gradients();
  CHECK(adapter.gradient_b().norm() == 0.0f);
  CHECK(adapter.gradient_a().norm() == 0.0f);
}

TEST_CASE(
    "first_order: Adam's first step moves every parameter by the learning rate against its gradient's sign",
    "[first_order]") {
  const index_t rows = 5, cols = 8, tokens = 7;
  const mask pruned = random_mask(rows, cols, 9);
  low_rank_adapter adapter(pruned, random_matrix(rows, 2, 10), random_matrix(2, cols, 11));
  const matrix b0 = adapter.b(), a0 = adapter.a();
  const matrix x = random_matrix(tokens, cols, 12), gy = random_matrix(tokens, rows, 13);
  adapter.accumulate(view(x), view(gy));
  const matrix gb = adapter.gradient_b(), ga = adapter.gradient_a();
  surgeon::first_order_options options;
  options.learning_rate = 0.01;
  adapter.adam_step(options);
  CHECK(adapter.steps() == 1);
  // m̂ = g and v̂ = g² after one step: the step is lr · g / (|g| + ε).
  for (index_t i = 0; i < rows; ++i) {
    for (index_t k = 0; k < 2; ++k) {
      const double expected = b0(i, k) - 0.01 * gb(i, k) / (std::abs(gb(i, k)) + 1e-8);
      CHECK(adapter.b()(i, k) == Approx(expected).margin(1e-6));
    }
  }
  for (index_t k = 0; k < 2; ++k) {
    for (index_t j = 0; j < cols; ++j) {
      const double expected = a0(k, j) - 0.01 * ga(k, j) / (std::abs(ga(k, j)) + 1e-8);
      CHECK(adapter.a()(k, j) == Approx(expected).margin(1e-6));
    }
  }
  CHECK(adapter.gradient_b().norm() == 0.0f);  // the step consumed the gradients
}

TEST_CASE("first_order: absorb keeps exactly the mask's zeros and holds W0 + M (B A)", "[first_order]") {
  const index_t rows = 8, cols = 12, tokens = 10;
  const auto which = GENERATE(0, 1, 2);
  CAPTURE(which);
  const mask pruned = which == 0   ? random_mask(rows, cols, 14)
                      : which == 1 ? two_of_four_mask(rows, cols, 15)
                                   : lines_mask(rows, cols);
  matrix w = random_matrix(rows, cols, 16);
  const host_matrix_view<float> wv(w.data(), rows, cols);
  pruned.apply(wv);
  const matrix w0 = w;
  low_rank_adapter adapter(pruned, 3, 17);
  CHECK(adapter.b().norm() == 0.0f);  // B starts at zero: the first absorb changes nothing
  adapter.absorb(wv);
  CHECK(w == w0);
  surgeon::first_order_options options;
  options.learning_rate = 0.05;
  for (int step = 0; step < 4; ++step) {
    const matrix x = random_matrix(tokens, cols, 20 + step), gy = random_matrix(tokens, rows, 30 + step);
    adapter.accumulate(view(x), view(gy));
    adapter.adam_step(options);
    adapter.absorb(wv);
  }
  REQUIRE(adapter.b().norm() > 0.0f);
  const dmatrix expected =
      w0.cast<double>() + keep(pruned).cwiseProduct(adapter.b().cast<double>() * adapter.a().cast<double>());
  CHECK((w.cast<double>() - expected).cwiseAbs().maxCoeff() < 1e-5);
  index_t kept_changed = 0;
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (pruned.pruned(i, j)) {
        const float value = w(i, j);
        std::uint32_t bits = 0;
        std::memcpy(&bits, &value, sizeof bits);
        CHECK(bits == 0u);  // +0.0f exactly, not -0.0f or a denormal
      } else {
        kept_changed += w(i, j) != w0(i, j) ? 1 : 0;
      }
    }
  }
  CHECK(kept_changed == rows * cols - pruned.count());
}

TEST_CASE("first_order: Adam steps on a masked regression lower its loss", "[first_order]") {
  const index_t rows = 10, cols = 16, tokens = 64;
  const mask pruned = random_mask(rows, cols, 40);
  const matrix teacher = random_matrix(rows, cols, 41);
  matrix w = teacher;
  const host_matrix_view<float> wv(w.data(), rows, cols);
  pruned.apply(wv);
  // Correlated inputs (the masked teacher is optimal for independent ones): room to compensate.
  const matrix x = random_matrix(tokens, cols, 42) * random_matrix(cols, cols, 44);
  const matrix y = x * teacher.transpose();
  const auto loss = [&]() {
    return 0.5 * static_cast<double>((x * w.transpose() - y).squaredNorm()) / tokens;
  };
  const double before = loss();
  low_rank_adapter adapter(pruned, 4, 43);
  surgeon::first_order_options options;
  options.learning_rate = 0.05;
  double previous = before;
  int rises = 0;
  for (int step = 0; step < 200; ++step) {
    const matrix gy = (x * w.transpose() - y) / static_cast<float>(tokens);
    adapter.accumulate(view(x), view(gy));
    adapter.adam_step(options);
    adapter.absorb(wv);
    rises += loss() > previous ? 1 : 0;
    previous = loss();
  }
  const double after = loss();
  CHECK(rises < 20);  // mostly downhill
  CAPTURE(before, after);
  CHECK(after < 0.7 * before);
}

TEST_CASE("first_order: bad input is refused", "[first_order]") {
  const mask pruned(4, 6);
  CHECK_THROWS_AS(low_rank_adapter(pruned, 0, 1), surgeon::logic_error);
  CHECK_THROWS_AS(low_rank_adapter(pruned, random_matrix(5, 2, 1), random_matrix(2, 6, 2)),
                  surgeon::logic_error);
  CHECK_THROWS_AS(low_rank_adapter(pruned, random_matrix(4, 2, 1), random_matrix(3, 6, 2)),
                  surgeon::logic_error);
  low_rank_adapter adapter(pruned, 2, 3);
  const matrix x = random_matrix(3, 6, 4), gy = random_matrix(3, 4, 5), short_gy = random_matrix(2, 4, 6);
  CHECK_THROWS_AS(adapter.accumulate(view(gy), view(x)), surgeon::logic_error);
  CHECK_THROWS_AS(adapter.accumulate(view(x), view(short_gy)), surgeon::logic_error);
  matrix w = random_matrix(4, 5, 7);
  CHECK_THROWS_AS(adapter.absorb(host_matrix_view<float>(w.data(), 4, 5)), surgeon::logic_error);
  surgeon::first_order_options options;
  options.rank = 0;
  CHECK_THROWS_WITH(surgeon::validate(options), Catch::Contains("rank"));
  options = {};
  options.learning_rate = -1.0;
  CHECK_THROWS_WITH(surgeon::validate(options), Catch::Contains("learning rate"));
  options = {};
  options.beta2 = 1.0;
  CHECK_THROWS_AS(surgeon::validate(options), surgeon::logic_error);
  options = {};
  options.steps = -1;
  CHECK_THROWS_AS(surgeon::validate(options), surgeon::logic_error);
  const std::vector<float> a = surgeon::initial_adapter_a(3, 7, 9);
  CHECK(a == surgeon::initial_adapter_a(3, 7, 9));
  CHECK(a != surgeon::initial_adapter_a(3, 7, 10));
  for (const float v : a) CHECK(std::abs(v) <= 1.0f / std::sqrt(7.0f));
}

namespace {

// A two-layer linear student y = W2 (W1 x), trained to match its own dense weights: the pruning
// loss is 0.5/T Σ‖y − y_teacher‖². Calibration and fine-tuning feed the layers' inputs and the
// gradients of that loss, in forward-then-backward order.
struct regression_adapter {
  static constexpr index_t in = 16, mid = 12, out = 8, tokens = 96;
  matrix w1, w2, x, y;
  int fine_tunes = 0;
  regression_adapter() : w1(random_matrix(mid, in, 50)), w2(random_matrix(out, mid, 51)) {
    x = random_matrix(tokens, in, 52);
    for (index_t t = 0; t < tokens; ++t) x.row(t).array() += x(t, 0);  // correlated inputs
    y = x * w1.transpose() * w2.transpose();
  }
  std::vector<surgeon::prunable_matrix> matrices() {
    return {{"w1", "in", host_matrix_view<float>(w1.data(), mid, in)},
            {"w2", "mid", host_matrix_view<float>(w2.data(), out, mid)}};
  }
  double pass(surgeon::calibration_sink& sink) {
    const matrix h = x * w1.transpose();
    const matrix residual = h * w2.transpose() - y;
    sink.input("in", view(x));
    sink.input("mid", view(h));
    const matrix gy2 = residual / static_cast<float>(tokens);
    const matrix gy1 = gy2 * w2;
    sink.output_grad("w2", view(gy2));
    sink.output_grad("w1", view(gy1));
    return 0.5 * static_cast<double>(residual.squaredNorm()) / tokens;
  }
  void calibrate(surgeon::calibration_sink& sink, int /*shot*/) { pass(sink); }
  double fine_tune(surgeon::calibration_sink& sink, int /*shot*/, int /*step*/) {
    ++fine_tunes;
    return pass(sink);
  }
  double evaluate(int /*shot*/) {
    return 0.5 * static_cast<double>((x * w1.transpose() * w2.transpose() - y).squaredNorm()) / tokens;
  }
};

// The same without a fine-tuning pass.
struct calibration_only_adapter {
  regression_adapter model;
  std::vector<surgeon::prunable_matrix> matrices() { return model.matrices(); }
  void calibrate(surgeon::calibration_sink& sink, int shot) { model.calibrate(sink, shot); }
};

bool same_bytes(const matrix& p, const matrix& q) {
  return p.size() == q.size() &&
         std::memcmp(p.data(), q.data(), sizeof(float) * static_cast<std::size_t>(p.size())) == 0;
}

mask zeros_of(const matrix& m) {
  return mask::of_zeros(host_matrix_view<const float>(m.data(), m.rows(), m.cols()));
}

}  // namespace

TEST_CASE("first_order: the driver's correction phase", "[first_order][prune]") {
  const auto how = GENERATE(surgeon::method::llm_surgeon, surgeon::method::sparsegpt, surgeon::method::kobd);
  const auto what =
      GENERATE(surgeon::structure::unstructured, surgeon::structure::n_m, surgeon::structure::rows_columns);
  if (how == surgeon::method::sparsegpt && what == surgeon::structure::rows_columns) return;  // no row score
  CAPTURE(surgeon::to_string(how), static_cast<int>(what));
  surgeon::prune_options options;
  options.how = how;
  options.what = what;
  options.sparsity = what == surgeon::structure::rows_columns ? 0.3 : 0.5;
  options.shots = 2;

  regression_adapter plain;
  const auto plain_reports = surgeon::prune(plain, options);
  regression_adapter zero_steps;  // first_order with no steps: the same bytes
  surgeon::prune_options with_zero = options;
  with_zero.first_order.rank = 3;
  with_zero.first_order.learning_rate = 0.5;
  surgeon::prune(zero_steps, with_zero);
  CHECK(same_bytes(plain.w1, zero_steps.w1));
  CHECK(same_bytes(plain.w2, zero_steps.w2));
  CHECK(zero_steps.fine_tunes == 0);

  surgeon::prune_options corrected_options = options;
  corrected_options.first_order.steps = 5;
  corrected_options.first_order.final_steps = 20;
  corrected_options.first_order.rank = 4;
  corrected_options.first_order.learning_rate = 0.01;
  regression_adapter corrected;
  const auto reports = surgeon::prune(corrected, corrected_options);
  REQUIRE(reports.size() == 2);
  CHECK(corrected.fine_tunes == 30);
  CHECK(reports[0].correction_steps == 5);
  CHECK(reports[1].correction_steps == 25);
  CHECK(reports[1].timings.correction > 0.0);
  CHECK(reports[1].correction_last_loss < reports[1].correction_first_loss);
  for (const auto& r : reports) {
    const surgeon::shot_timings& t = r.timings;
    CHECK(r.seconds == Approx(t.calibration + t.curvature + t.costs + t.selection + t.update + t.correction +
                              t.evaluation + t.communication));
  }
  // The correction lowers the loss and keeps the sparsity: every weight pruned stays exactly zero.
  CAPTURE(*plain_reports.back().evaluation, *reports.back().evaluation);
  CHECK(*reports.back().evaluation < 0.9 * *plain_reports.back().evaluation);
  CHECK(reports.back().achieved_sparsity == Approx(plain_reports.back().achieved_sparsity).margin(0.02));
  if (what == surgeon::structure::n_m) {  // the 2:4 pattern survives: two zeros in every group of four
    for (const matrix* w : {&corrected.w1, &corrected.w2}) {
      for (index_t i = 0; i < w->rows(); ++i) {
        for (index_t j = 0; j < w->cols(); j += 4) {
          int zeros = 0;
          for (index_t k = j; k < j + 4; ++k) zeros += (*w)(i, k) == 0.0f ? 1 : 0;
          CHECK(zeros >= 2);
        }
      }
    }
  }
  // Through any_adapter: the same bytes.
  regression_adapter erased_model;
  surgeon::any_adapter erased(erased_model);
  surgeon::prune(erased, corrected_options);
  CHECK(same_bytes(erased_model.w1, corrected.w1));
  CHECK(same_bytes(erased_model.w2, corrected.w2));
}

TEST_CASE("first_order: a mask survives the correction of every shot", "[first_order][prune]") {
  surgeon::prune_options options;
  options.sparsity = 0.5;
  options.shots = 3;
  options.first_order.steps = 4;
  options.first_order.learning_rate = 0.05;
  regression_adapter model;
  std::vector<mask> after_shot;
  surgeon::prune(model, options,
                 [&](const surgeon::shot_report&) { after_shot.push_back(zeros_of(model.w1)); });
  REQUIRE(after_shot.size() == 3);
  for (std::size_t t = 1; t < after_shot.size(); ++t) {
    // every zero of shot t-1 is still a zero in shot t
    mask both = after_shot[t];
    both.merge(after_shot[t - 1]);
    CHECK(both == after_shot[t]);
    CHECK(after_shot[t].count() > after_shot[t - 1].count());
  }
}

TEST_CASE("first_order: refused without a fine-tuning pass", "[first_order][prune]") {
  surgeon::prune_options options;
  options.first_order.steps = 1;
  calibration_only_adapter model;
  CHECK_THROWS_WITH(surgeon::prune(model, options), Catch::Contains("fine_tune"));
  surgeon::any_adapter erased(model);
  CHECK_THROWS_WITH(surgeon::prune(erased, options), Catch::Contains("fine_tune"));
  options.first_order.rank = 0;
  CHECK_THROWS_WITH(surgeon::prune(model, options), Catch::Contains("rank"));
}
