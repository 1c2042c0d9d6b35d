// The CUDA SparseGPT against the CPU backend on the same seeded inputs: unstructured and N:M,
// float and double weights, shapes with C not a multiple of the block size and R not a multiple of
// 32, padded leading dimensions (with NaN padding, which must be neither read nor written), dead
// inputs, zeros on entry, must_prune masks, damping escalation and its exhaustion, empty layers, and
// every precondition. Weights agree to 1e-4 (float) or 1e-10 (double) relative to max |w|, masks
// exactly, pruned weights are exactly 0. The CPU results come from sparsegpt_reference.cpp (host
// compiler), so this nvcc translation unit never includes Eigen.
// cuda_test_main.cpp skips the whole binary (exit 77) when no device is visible.
#include "sparsegpt_reference.hpp"
#include "support/catch.hpp"

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/sparsegpt.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

namespace {

using surgeon::index_t;
using surgeon::mask;
using surgeon::nm_pattern;
using surgeon::cuda::context;
using surgeon::cuda::device_buffer;
using surgeon_test::sparsegpt_reference_case;
using surgeon_test::sparsegpt_reference_result;

constexpr double float_tolerance = 1e-4;
constexpr double double_tolerance = 1e-10;

template <typename T>
std::vector<T> random_rows(index_t rows, index_t cols, std::uint64_t seed, double offset = 0.25) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<T> values(static_cast<std::size_t>(rows * cols));
  for (auto& v : values) v = static_cast<T>(normal(engine) + offset);
  return values;
}

/// max |a - b| / max |b|: the error relative to the scale of the reference.
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

/// A symmetric positive definite input covariance `XᵀX / tokens` (row-major `[cols, cols]`, exactly
/// symmetric) of activations with correlated neighbouring inputs and uneven scales, as real layers
/// have.
std::vector<double> covariance(index_t cols, std::uint64_t seed) {
  const index_t tokens = 3 * cols + 8;
  std::vector<double> x = random_rows<double>(tokens, cols, seed);
  for (index_t t = 0; t < tokens; ++t) {
    double* row = x.data() + t * cols;
    for (index_t j = cols - 1; j > 0; --j) row[j] += 0.5 * row[j - 1];
    for (index_t j = 0; j < cols; ++j) row[j] *= 0.5 + 0.25 * static_cast<double>(j % 7);
  }
  std::vector<double> h(static_cast<std::size_t>(cols * cols), 0.0);
  for (index_t i = 0; i < cols; ++i) {
    for (index_t j = 0; j <= i; ++j) {
      double sum = 0.0;
      for (index_t t = 0; t < tokens; ++t)
        sum += x[static_cast<std::size_t>(t * cols + i)] * x[static_cast<std::size_t>(t * cols + j)];
      h[static_cast<std::size_t>(i * cols + j)] = h[static_cast<std::size_t>(j * cols + i)] =
          sum / static_cast<double>(tokens);
    }
  }
  return h;
}

double& at(std::vector<double>& m, index_t cols, index_t i, index_t j) {
  return m[static_cast<std::size_t>(i * cols + j)];
}

/// Copies the packed row-major `[rows, cols]` `values` into a device buffer with leading dimension
/// `ld`, the padding filled with NaN (which the device code must never read nor write).
template <typename T>
device_buffer<T> upload(context& ctx, const std::vector<T>& values, index_t rows, index_t cols, index_t ld) {
  std::vector<T> padded(static_cast<std::size_t>(std::max<index_t>(rows * ld, 0)),
                        std::numeric_limits<T>::quiet_NaN());
  for (index_t i = 0; i < rows; ++i) {
    std::copy(values.begin() + i * cols, values.begin() + (i + 1) * cols, padded.begin() + i * ld);
  }
  return device_buffer<T>(ctx, padded);
}

/// The device run of one case: the mask, the weights (widened, packed) and whether the padding of
/// `w` is still NaN.
struct device_outcome {
  mask pruned;
  std::vector<double> weights;
  bool padding_intact = true;
};

template <typename T>
device_outcome run_device(context& ctx, const std::vector<double>& h, const std::vector<T>& w, index_t rows,
                          index_t cols, const sparsegpt_reference_case& run, const mask* must_prune,
                          index_t h_pad = 0, index_t w_pad = 0) {
  const index_t h_ld = cols + h_pad;
  const index_t w_ld = cols + w_pad;
  const device_buffer<double> h_device = upload(ctx, h, cols, cols, h_ld);
  device_buffer<T> w_device = upload(ctx, w, rows, cols, w_ld);
  surgeon::cuda::sparsegpt_options options;
  options.block_size = run.block_size;
  options.damping = run.damping;
  const auto h_view = h_device.view(cols, cols, h_ld);
  const auto w_view = w_device.view(rows, cols, w_ld);
  const nm_pattern pattern{run.n, run.m};
  device_outcome outcome;
  if (must_prune == nullptr) {
    outcome.pruned = run.n_m ? surgeon::cuda::sparsegpt_prune(ctx, h_view, w_view, pattern, options)
                             : surgeon::cuda::sparsegpt_prune(ctx, h_view, w_view, run.sparsity, options);
  } else {
    outcome.pruned =
        run.n_m ? surgeon::cuda::sparsegpt_prune(ctx, h_view, w_view, pattern, *must_prune, options)
                : surgeon::cuda::sparsegpt_prune(ctx, h_view, w_view, run.sparsity, *must_prune, options);
  }
  const std::vector<T> padded = w_device.to_host();
  outcome.weights.resize(static_cast<std::size_t>(rows * cols));
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < w_ld; ++j) {
      const T value = padded[static_cast<std::size_t>(i * w_ld + j)];
      if (j < cols) {
        outcome.weights[static_cast<std::size_t>(i * cols + j)] = static_cast<double>(value);
      } else {
        outcome.padding_intact = outcome.padding_intact && std::isnan(value);
      }
    }
  }
  return outcome;
}

/// Every pruned weight is exactly 0.
bool pruned_are_zero(const device_outcome& outcome) {
  const index_t cols = outcome.pruned.cols();
  for (index_t i = 0; i < outcome.pruned.rows(); ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (outcome.pruned.pruned(i, j) && outcome.weights[static_cast<std::size_t>(i * cols + j)] != 0.0) {
        return false;
      }
    }
  }
  return true;
}

/// Runs one case on the device and on the CPU and checks that they agree: identical masks, weights
/// to the tolerance of T, pruned weights exactly 0, padding untouched. Returns the device outcome.
template <typename T>
device_outcome check_against_cpu(context& ctx, const std::vector<double>& h, const std::vector<T>& w,
                                 index_t rows, index_t cols, const sparsegpt_reference_case& run,
                                 const mask* must_prune = nullptr, index_t h_pad = 0, index_t w_pad = 0) {
  const sparsegpt_reference_result ref = surgeon_test::cpu_sparsegpt(
      h, w, rows, cols, run, must_prune == nullptr ? std::vector<std::uint64_t>{} : must_prune->words());
  REQUIRE_FALSE(ref.failed);
  device_outcome outcome = run_device(ctx, h, w, rows, cols, run, must_prune, h_pad, w_pad);
  REQUIRE(outcome.pruned.rows() == rows);
  REQUIRE(outcome.pruned.cols() == cols);
  const mask expected = mask::from_words(rows, cols, ref.mask_words);
  CHECK(outcome.pruned == expected);
  CHECK(outcome.pruned.count() == expected.count());
  const double tolerance = std::is_same_v<T, float> ? float_tolerance : double_tolerance;
  CHECK(relative_difference(outcome.weights, ref.weights) <= tolerance);
  CHECK(pruned_are_zero(outcome));
  CHECK(outcome.padding_intact);
  if (must_prune != nullptr) {
    mask merged = outcome.pruned;
    merged.merge(*must_prune);
    CHECK(merged == outcome.pruned);  // every must_prune weight is pruned
  }
  return outcome;
}

/// Every group of `m` consecutive columns of every row has exactly `n` pruned weights.
bool exact_n_m(const mask& pruned, index_t n, index_t m) {
  for (index_t i = 0; i < pruned.rows(); ++i) {
    for (index_t g = 0; g < pruned.cols(); g += m) {
      index_t count = 0;
      for (index_t q = g; q < g + m; ++q) count += pruned.pruned(i, q) ? 1 : 0;
      if (count != n) return false;
    }
  }
  return true;
}

struct layer_shape {
  index_t rows;
  index_t cols;
  index_t block;
  index_t h_pad;
  index_t w_pad;
};

/// A random mask with each weight pruned with probability `p`.
mask random_mask(index_t rows, index_t cols, double p, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::bernoulli_distribution coin(p);
  mask m(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (coin(engine)) m.prune(i, j);
    }
  }
  return m;
}

/// `w` with each weight set to exactly 0 with probability `p` (zeros from an earlier shot).
template <typename T>
std::vector<T> with_zeros(std::vector<T> w, double p, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::bernoulli_distribution coin(p);
  for (auto& v : w) {
    if (coin(engine)) v = T(0);
  }
  return w;
}

}  // namespace

TEST_CASE("cuda sparsegpt unstructured matches the CPU backend", "[cuda][sparsegpt]") {
  context ctx;
  // C a multiple of the block, C not a multiple (a narrow last block), one block wider than C,
  // block size 1 and 7, R not a multiple of 32, padded leading dimensions, and a layer with several
  // warps of rows and 128-column blocks.
  const std::vector<layer_shape> shapes = {{40, 96, 32, 0, 0},   {37, 100, 128, 3, 5}, {70, 200, 64, 1, 2},
                                           {33, 45, 7, 0, 3},    {16, 24, 1, 0, 0},    {129, 160, 128, 2, 0},
                                           {300, 384, 128, 0, 1}};
  std::uint64_t seed = 100;
  for (const layer_shape& s : shapes) {
    for (const double sparsity : {0.5, 0.3}) {
      CAPTURE(s.rows, s.cols, s.block, sparsity);
      const std::vector<double> h = covariance(s.cols, ++seed);
      sparsegpt_reference_case run;
      run.sparsity = sparsity;
      run.block_size = s.block;
      const auto expected_count =
          static_cast<index_t>(std::llround(sparsity * static_cast<double>(s.rows * s.cols)));
      const auto wf = random_rows<float>(s.rows, s.cols, ++seed, 0.0);
      const device_outcome f = check_against_cpu(ctx, h, wf, s.rows, s.cols, run, nullptr, s.h_pad, s.w_pad);
      CHECK(f.pruned.count() == expected_count);
      const auto wd = random_rows<double>(s.rows, s.cols, ++seed, 0.0);
      const device_outcome d = check_against_cpu(ctx, h, wd, s.rows, s.cols, run, nullptr, s.h_pad, s.w_pad);
      CHECK(d.pruned.count() == expected_count);
    }
  }
}

TEST_CASE("cuda sparsegpt N:M matches the CPU backend", "[cuda][sparsegpt]") {
  context ctx;
  struct nm_case {
    layer_shape shape;
    index_t n;
    index_t m;
  };
  // Block sizes that are rounded up to a multiple of M (30 -> 32, 5 -> 6, 1 -> 4), a block wider
  // than C, a narrow last block (200 = 3·64 + 8), R not a multiple of 32.
  const std::vector<nm_case> cases = {{{45, 96, 30, 0, 0}, 2, 4},  {{37, 64, 128, 2, 3}, 4, 8},
                                      {{70, 200, 64, 0, 1}, 2, 4}, {{31, 48, 5, 1, 0}, 1, 3},
                                      {{20, 32, 1, 0, 0}, 2, 4},   {{300, 384, 128, 0, 0}, 2, 4},
                                      {{24, 64, 16, 0, 0}, 16, 32}};
  std::uint64_t seed = 200;
  for (const nm_case& c : cases) {
    const layer_shape& s = c.shape;
    CAPTURE(s.rows, s.cols, s.block, c.n, c.m);
    const std::vector<double> h = covariance(s.cols, ++seed);
    sparsegpt_reference_case run;
    run.n_m = true;
    run.n = c.n;
    run.m = c.m;
    run.block_size = s.block;
    const auto wf = random_rows<float>(s.rows, s.cols, ++seed, 0.0);
    const device_outcome f = check_against_cpu(ctx, h, wf, s.rows, s.cols, run, nullptr, s.h_pad, s.w_pad);
    CHECK(exact_n_m(f.pruned, c.n, c.m));
    const auto wd = random_rows<double>(s.rows, s.cols, ++seed, 0.0);
    const device_outcome d = check_against_cpu(ctx, h, wd, s.rows, s.cols, run, nullptr, s.h_pad, s.w_pad);
    CHECK(exact_n_m(d.pruned, c.n, c.m));
  }
}

TEST_CASE("cuda sparsegpt damping: 0.1, none, and damping 0 on a definite covariance", "[cuda][sparsegpt]") {
  context ctx;
  const index_t rows = 50;
  const index_t cols = 72;
  const std::vector<double> h = covariance(cols, 301);
  const auto w = random_rows<double>(rows, cols, 302, 0.0);
  for (const double damping : {0.1, 0.0}) {
    CAPTURE(damping);
    sparsegpt_reference_case run;
    run.damping = damping;
    run.block_size = 32;
    check_against_cpu(ctx, h, w, rows, cols, run);
    run.n_m = true;
    check_against_cpu(ctx, h, w, rows, cols, run);
  }
}

TEST_CASE("cuda sparsegpt reads only the lower triangle of h, as the CPU backend", "[cuda][sparsegpt]") {
  context ctx;
  const index_t rows = 33;
  const index_t cols = 60;
  std::vector<double> h = covariance(cols, 351);
  // A finite, wrong strict upper triangle (row-major j > i): only the lower one may be read.
  for (index_t i = 0; i < cols; ++i) {
    for (index_t j = i + 1; j < cols; ++j) at(h, cols, i, j) = 100.0 + static_cast<double>(i + j);
  }
  const auto w = random_rows<double>(rows, cols, 352, 0.0);
  sparsegpt_reference_case run;
  run.block_size = 16;
  check_against_cpu(ctx, h, w, rows, cols, run, nullptr, 2, 0);
  run.n_m = true;
  check_against_cpu(ctx, h, w, rows, cols, run);
}

TEST_CASE("cuda sparsegpt dead inputs are pruned and stay exactly 0", "[cuda][sparsegpt]") {
  context ctx;
  const index_t rows = 50;
  const index_t cols = 80;
  std::vector<double> h = covariance(cols, 401);
  const std::vector<index_t> dead = {0, 13, 14, 79};
  for (const index_t j : dead) {
    for (index_t k = 0; k < cols; ++k) at(h, cols, j, k) = at(h, cols, k, j) = 0.0;
  }
  const auto wf = random_rows<float>(rows, cols, 402);
  const auto wd = random_rows<double>(rows, cols, 403);
  sparsegpt_reference_case run;
  run.block_size = 32;
  const auto check_dead = [&](const device_outcome& outcome) {
    for (const index_t j : dead) {
      for (index_t i = 0; i < rows; ++i) {
        CHECK(outcome.pruned.pruned(i, j));
        CHECK(outcome.weights[static_cast<std::size_t>(i * cols + j)] == 0.0);
      }
    }
  };
  SECTION("unstructured 50 %") {
    check_dead(check_against_cpu(ctx, h, wf, rows, cols, run, nullptr, 1, 2));
    const device_outcome d = check_against_cpu(ctx, h, wd, rows, cols, run);
    check_dead(d);
    CHECK(d.pruned.count() == rows * cols / 2);  // the dead columns count towards the total
  }
  SECTION("2:4") {
    run.n_m = true;
    check_dead(check_against_cpu(ctx, h, wf, rows, cols, run));
    check_dead(check_against_cpu(ctx, h, wd, rows, cols, run, nullptr, 0, 3));
  }
}

TEST_CASE("cuda sparsegpt forced entries: zeros on entry and must_prune", "[cuda][sparsegpt]") {
  context ctx;
  const index_t rows = 48;
  const index_t cols = 96;
  const std::vector<double> h = covariance(cols, 501);
  const auto wf = with_zeros(random_rows<float>(rows, cols, 502, 0.0), 0.05, 503);
  const auto wd = with_zeros(random_rows<double>(rows, cols, 504, 0.0), 0.05, 505);
  sparsegpt_reference_case run;
  run.block_size = 32;

  const auto check_zeros_pruned = [&](const auto& w, const device_outcome& outcome) {
    for (index_t k = 0; k < rows * cols; ++k) {
      if (w[static_cast<std::size_t>(k)] == 0) CHECK(outcome.pruned.pruned(k / cols, k % cols));
    }
  };

  SECTION("zeros on entry count towards the layer total") {
    const device_outcome f = check_against_cpu(ctx, h, wf, rows, cols, run, nullptr, 0, 1);
    check_zeros_pruned(wf, f);
    CHECK(f.pruned.count() == rows * cols / 2);
    const device_outcome d = check_against_cpu(ctx, h, wd, rows, cols, run);
    check_zeros_pruned(wd, d);
    CHECK(d.pruned.count() == rows * cols / 2);
  }
  SECTION("a must_prune mask on top of the zeros") {
    const mask must = random_mask(rows, cols, 0.1, 506);
    check_zeros_pruned(wf, check_against_cpu(ctx, h, wf, rows, cols, run, &must, 2, 0));
    check_zeros_pruned(wd, check_against_cpu(ctx, h, wd, rows, cols, run, &must));
  }
  SECTION("more forced entries than the quota: every block prunes exactly its forced ones") {
    const mask must = random_mask(rows, cols, 0.3, 507);
    run.sparsity = 0.1;
    const device_outcome f = check_against_cpu(ctx, h, wf, rows, cols, run, &must);
    const device_outcome d = check_against_cpu(ctx, h, wd, rows, cols, run, &must);
    mask forced = must;
    forced.merge(mask::of_zeros(surgeon::make_host_matrix_view(wd, rows, cols)));
    CHECK(d.pruned == forced);
  }
  SECTION("forced entries beyond an early block's quota lower the quota of the later blocks") {
    // Columns [0, 40) forced at 50 %: block 0 prunes all 32·R, block 1 only its 8·R forced ones,
    // block 2 the remaining 8·R, so the layer total is still exactly round(s·R·C).
    mask must(rows, cols);
    for (index_t i = 0; i < rows; ++i) {
      for (index_t j = 0; j < 40; ++j) must.prune(i, j);
    }
    const auto dense_f = random_rows<float>(rows, cols, 510, 0.0);
    const device_outcome f = check_against_cpu(ctx, h, dense_f, rows, cols, run, &must);
    CHECK(f.pruned.count() == rows * cols / 2);
    index_t last_block = 0;
    for (index_t i = 0; i < rows; ++i) {
      for (index_t j = 64; j < cols; ++j) last_block += f.pruned.pruned(i, j) ? 1 : 0;
    }
    CHECK(last_block == 8 * rows);
  }
  SECTION("sparsity 0 prunes only the forced entries") {
    const mask must = random_mask(rows, cols, 0.05, 508);
    run.sparsity = 0.0;
    const device_outcome d = check_against_cpu(ctx, h, wd, rows, cols, run, &must);
    mask forced = must;
    forced.merge(mask::of_zeros(surgeon::make_host_matrix_view(wd, rows, cols)));
    CHECK(d.pruned == forced);
  }
  SECTION("N:M: forced entries count towards N; a group with more than N loses all of them") {
    mask must = random_mask(rows, cols, 0.1, 509);
    for (const index_t q : {0, 1, 2}) must.prune(0, q);     // three forced in one 2:4 group
    for (const index_t q : {4, 5, 6, 7}) must.prune(1, q);  // a whole group
    run.n_m = true;
    const device_outcome f = check_against_cpu(ctx, h, wf, rows, cols, run, &must);
    check_zeros_pruned(wf, f);
    const device_outcome d = check_against_cpu(ctx, h, wd, rows, cols, run, &must, 1, 1);
    check_zeros_pruned(wd, d);
    for (const device_outcome* o : {&f, &d}) {
      CHECK(o->pruned.pruned(0, 0));
      CHECK(o->pruned.pruned(0, 1));
      CHECK(o->pruned.pruned(0, 2));
      CHECK_FALSE(o->pruned.pruned(0, 3));
      for (const index_t q : {4, 5, 6, 7}) CHECK(o->pruned.pruned(1, q));
      // Every group has at least N pruned weights.
      for (index_t i = 0; i < rows; ++i) {
        for (index_t g = 0; g < cols; g += 4) {
          index_t count = 0;
          for (index_t q = g; q < g + 4; ++q) count += o->pruned.pruned(i, q) ? 1 : 0;
          CHECK(count >= 2);
        }
      }
    }
  }
}

TEST_CASE("cuda sparsegpt breaks exact ties as the CPU backend does", "[cuda][sparsegpt]") {
  // H = 4·I undamped: U is diagonal with one value, so no update moves a weight and weights in
  // {±1, ±2, ±3} give exactly equal scores within and across columns and blocks, on both backends.
  // Ties go to the lower row-major flat index (unstructured) or the lower column (N:M). Powers of
  // two throughout (H⁻¹ = I/4, U = I/2), so that every Cholesky path gives the same U_jj in every
  // column, whatever reciprocals or square roots the solver uses.
  context ctx;
  const index_t rows = 37;
  const index_t cols = 72;
  std::vector<double> h(static_cast<std::size_t>(cols * cols), 0.0);
  for (index_t j = 0; j < cols; ++j) at(h, cols, j, j) = 4.0;
  std::mt19937_64 engine(1001);
  std::uniform_int_distribution<int> level(1, 3);
  std::bernoulli_distribution sign(0.5);
  std::vector<float> wf(static_cast<std::size_t>(rows * cols));
  for (auto& v : wf) v = static_cast<float>(sign(engine) ? level(engine) : -level(engine));
  const std::vector<double> wd(wf.begin(), wf.end());
  for (const index_t block : {index_t{16}, index_t{128}}) {
    CAPTURE(block);
    sparsegpt_reference_case run;
    run.block_size = block;
    run.damping = 0.0;
    for (const double sparsity : {0.5, 0.3}) {
      run.sparsity = sparsity;
      check_against_cpu(ctx, h, wf, rows, cols, run);
      const device_outcome d = check_against_cpu(ctx, h, wd, rows, cols, run, nullptr, 1, 0);
      for (std::size_t k = 0; k < wd.size(); ++k) {
        if (!d.pruned.pruned(static_cast<index_t>(k) / cols, static_cast<index_t>(k) % cols)) {
          CHECK(d.weights[k] == wd[k]);  // nothing moves
        }
      }
    }
    run.n_m = true;
    CHECK(exact_n_m(check_against_cpu(ctx, h, wf, rows, cols, run).pruned, 2, 4));
    run.n = 4;
    run.m = 8;
    CHECK(exact_n_m(check_against_cpu(ctx, h, wd, rows, cols, run).pruned, 4, 8));
  }
}

TEST_CASE("cuda sparsegpt with nothing to prune leaves the weights unchanged", "[cuda][sparsegpt]") {
  context ctx;
  const index_t rows = 35;
  const index_t cols = 70;
  const std::vector<double> h = covariance(cols, 601);
  const auto w = random_rows<float>(rows, cols, 602, 0.0);
  sparsegpt_reference_case run;
  run.sparsity = 0.0;
  run.block_size = 16;
  const device_outcome outcome = check_against_cpu(ctx, h, w, rows, cols, run);
  CHECK(outcome.pruned.count() == 0);
  bool unchanged = true;
  for (std::size_t k = 0; k < w.size(); ++k)
    unchanged = unchanged && outcome.weights[k] == static_cast<double>(w[k]);
  CHECK(unchanged);
}

TEST_CASE("cuda sparsegpt escalates the damping as the CPU backend does", "[cuda][sparsegpt]") {
  context ctx;
  const index_t rows = 40;
  const index_t cols = 64;
  std::vector<double> h = covariance(cols, 701);
  const auto w = random_rows<double>(rows, cols, 702, 0.0);
  sparsegpt_reference_case run;
  run.block_size = 16;

  SECTION("an indefinite covariance succeeds after escalations") {
    // A 2x2 principal minor with |h01| = 3·sqrt(h00·h11): indefinite, whatever the rest is.
    at(h, cols, 0, 1) = at(h, cols, 1, 0) = 3.0 * std::sqrt(at(h, cols, 0, 0) * at(h, cols, 1, 1));
    check_against_cpu(ctx, h, w, rows, cols, run);
    run.n_m = true;
    check_against_cpu(ctx, h, w, rows, cols, run);
  }
  SECTION("exhausted escalations are a numerical_error and leave the weights unchanged") {
    // λ reaches 0.01·10⁶ = 1e4 relative; the minor [[1e-9, b], [b, 1e-9]] with b = 1e5·mean(diag)
    // needs a shift above b.
    double trace = 0.0;
    for (index_t j = 0; j < cols; ++j) trace += at(h, cols, j, j);
    at(h, cols, 0, 0) = at(h, cols, 1, 1) = 1e-9;
    at(h, cols, 0, 1) = at(h, cols, 1, 0) = 1e5 * trace / static_cast<double>(cols);
    CHECK(surgeon_test::cpu_sparsegpt(h, w, rows, cols, run).failed);
    const device_buffer<double> h_device(ctx, h);
    device_buffer<double> w_device(ctx, w);
    CHECK_THROWS_AS(
        surgeon::cuda::sparsegpt_prune(ctx, h_device.view(cols, cols), w_device.view(rows, cols), 0.5),
        surgeon::numerical_error);
    CHECK_THROWS_AS(surgeon::cuda::sparsegpt_prune(ctx, h_device.view(cols, cols), w_device.view(rows, cols),
                                                   nm_pattern{2, 4}),
                    surgeon::numerical_error);
    CHECK(w_device.to_host() == w);
  }
}

TEST_CASE("cuda sparsegpt on empty layers", "[cuda][sparsegpt]") {
  context ctx;
  const index_t cols = 16;
  const std::vector<double> h = covariance(cols, 801);
  const device_buffer<double> h_device(ctx, h);
  device_buffer<float> no_rows(ctx, 0);
  const mask a = surgeon::cuda::sparsegpt_prune(ctx, h_device.view(cols, cols), no_rows.view(0, cols), 0.5);
  CHECK(a.rows() == 0);
  CHECK(a.cols() == cols);
  const mask b =
      surgeon::cuda::sparsegpt_prune(ctx, h_device.view(cols, cols), no_rows.view(0, cols), nm_pattern{2, 4});
  CHECK(b.rows() == 0);
  const device_buffer<double> no_h(ctx, 0);
  device_buffer<double> no_cols(ctx, 0);
  const mask c = surgeon::cuda::sparsegpt_prune(ctx, no_h.view(0, 0), no_cols.view(5, 0), 0.5);
  CHECK(c.rows() == 5);
  CHECK(c.cols() == 0);
  CHECK(c.count() == 0);
  const mask d = surgeon::cuda::sparsegpt_prune(ctx, no_h.view(0, 0), no_cols.view(5, 0), nm_pattern{2, 4});
  CHECK(d.rows() == 5);
  CHECK(d.count() == 0);
}

TEST_CASE("cuda sparsegpt rejects bad input", "[cuda][sparsegpt]") {
  context ctx;
  const index_t rows = 12;
  const index_t cols = 96;
  const std::vector<double> h = covariance(cols, 901);
  const auto w = random_rows<float>(rows, cols, 902, 0.0);
  const device_buffer<double> h_device(ctx, h);
  device_buffer<float> w_device(ctx, w);
  const auto hv = h_device.view(cols, cols);
  const auto wv = w_device.view(rows, cols);
  using surgeon::logic_error;
  using surgeon::cuda::sparsegpt_prune;

  SECTION("shapes") {
    const device_buffer<double> wide(ctx, cols * (cols + 1));
    CHECK_THROWS_AS(sparsegpt_prune(ctx, wide.view(cols, cols + 1), wv, 0.5), logic_error);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, h_device.view(cols - 1, cols - 1), wv, 0.5), logic_error);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, h_device.view(cols - 1, cols - 1), wv, nm_pattern{2, 4}),
                    logic_error);
    const mask wrong(rows, cols + 1);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, 0.5, wrong), logic_error);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, nm_pattern{2, 4}, mask(rows + 1, cols)), logic_error);
  }
  SECTION("options") {
    surgeon::cuda::sparsegpt_options options;
    options.block_size = 0;
    CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, 0.5, options), logic_error);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, nm_pattern{2, 4}, options), logic_error);
    for (const double damping :
         {-1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
      options = {};
      options.damping = damping;
      CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, 0.5, options), logic_error);
      CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, nm_pattern{2, 4}, options), logic_error);
    }
  }
  SECTION("targets") {
    for (const double sparsity : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
      CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, sparsity), logic_error);
      CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, sparsity, mask(rows, cols)), logic_error);
    }
    for (const nm_pattern p : {nm_pattern{3, 2}, nm_pattern{0, 4}, nm_pattern{2, 5}, nm_pattern{1, 0}}) {
      CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, p), logic_error);
      CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, wv, p, mask(rows, cols)), logic_error);
    }
  }
  SECTION("non-finite or negative-diagonal input") {
    std::vector<double> bad_h = h;
    bad_h[static_cast<std::size_t>(5 * cols + 17)] = std::numeric_limits<double>::quiet_NaN();
    const device_buffer<double> nan_h(ctx, bad_h);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, nan_h.view(cols, cols), wv, 0.5), logic_error);
    bad_h = h;
    bad_h[static_cast<std::size_t>(cols * cols - 1)] = -std::numeric_limits<double>::infinity();
    const device_buffer<double> inf_h(ctx, bad_h);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, inf_h.view(cols, cols), wv, nm_pattern{2, 4}), logic_error);
    bad_h = h;
    at(bad_h, cols, 7, 7) = -1e-3;
    const device_buffer<double> negative_h(ctx, bad_h);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, negative_h.view(cols, cols), wv, 0.5), logic_error);

    std::vector<float> bad_w = w;
    bad_w[37] = std::numeric_limits<float>::quiet_NaN();
    device_buffer<float> nan_w(ctx, bad_w);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, nan_w.view(rows, cols), 0.5), logic_error);
    std::vector<double> bad_wd(w.begin(), w.end());
    bad_wd.back() = std::numeric_limits<double>::infinity();
    device_buffer<double> inf_w(ctx, bad_wd);
    CHECK_THROWS_AS(sparsegpt_prune(ctx, hv, inf_w.view(rows, cols), nm_pattern{2, 4}), logic_error);
  }
  // Rejected calls leave the weights alone, and the same buffers still prune afterwards.
  CHECK(w_device.to_host() == w);
  const mask pruned = sparsegpt_prune(ctx, hv, wv, 0.5);
  CHECK(pruned.count() == rows * cols / 2);
}
