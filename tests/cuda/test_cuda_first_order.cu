// The CUDA low-rank adapter (cuda/first_order.hpp) against the CPU one on the same seeded inputs:
// a 37x70 matrix with a random ~50% unstructured mask, rank 3, nonzero B, batches of 19 tokens.
// Gradients after two batches (one through padded views) agree to 1e-4 relative to their largest
// entry; three rounds of accumulate, adam_step and absorb give B, A and the weights to 1e-4, and
// pruned weights stay exactly 0.0f. Also: the seeded start (B = 0, A = initial_adapter_a, through
// `prune_backend::make_low_rank`) and every precondition. The CPU results come from
// first_order_reference.cpp (host compiler), so this nvcc translation unit never includes Eigen.
// cuda_test_main.cpp skips the whole binary (exit 77) when no device is visible.
#include "first_order_reference.hpp"
#include "support/catch.hpp"

#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/first_order.hpp>
#include <surgeon/cuda/prune.hpp>
#include <surgeon/error.hpp>
#include <surgeon/first_order.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace {

using surgeon::index_t;
using surgeon::mask;
using surgeon::cuda::context;
using surgeon::cuda::low_rank_adapter;
using surgeon_test::adapter_batch;
using surgeon_test::adapter_start;
using surgeon_test::adapter_state;

constexpr index_t rows = 37;
constexpr index_t cols = 70;
constexpr int rank = 3;
constexpr index_t tokens = 19;
constexpr double tolerance = 1e-4;

std::vector<float> random_values(index_t count, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<float> values(static_cast<std::size_t>(count));
  for (float& v : values) v = static_cast<float>(normal(engine));
  return values;
}

/// A `[rows, cols]` mask pruning each weight with probability 1/2.
mask random_mask(std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::bernoulli_distribution coin(0.5);
  mask result(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (coin(engine)) result.prune(i, j);
    }
  }
  return result;
}

/// The adapter every comparison starts from: a random mask, B and A (B nonzero).
adapter_start make_start() {
  adapter_start start;
  start.rows = rows;
  start.cols = cols;
  start.rank = rank;
  start.mask_words = random_mask(11).words();
  start.b = random_values(rows * rank, 12, 0.1);
  start.a = random_values(rank * cols, 13, 0.1);
  return start;
}

adapter_batch make_batch(std::uint64_t seed) {
  adapter_batch batch;
  batch.tokens = tokens;
  batch.x = random_values(tokens * cols, seed);
  batch.gy = random_values(tokens * rows, seed + 1000);
  return batch;
}

/// `values` (packed `[count_rows, count_cols]`) copied into rows of `ld` floats, the padding NaN.
std::vector<float> padded(const std::vector<float>& values, index_t count_rows, index_t count_cols,
                          index_t ld) {
  std::vector<float> result(static_cast<std::size_t>(count_rows * ld),
                            std::numeric_limits<float>::quiet_NaN());
  for (index_t i = 0; i < count_rows; ++i) {
    std::copy(values.begin() + i * count_cols, values.begin() + (i + 1) * count_cols,
              result.begin() + i * ld);
  }
  return result;
}

/// max |a - b| / max |b|: the error relative to the scale of the reference.
double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0.0;
  double scale = 0.0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[k]) - static_cast<double>(b[k])));
    scale = std::max(scale, std::fabs(static_cast<double>(b[k])));
  }
  return diff / std::max(scale, std::numeric_limits<double>::min());
}

low_rank_adapter device_adapter(context& ctx, const adapter_start& start) {
  return low_rank_adapter(ctx, mask::from_words(start.rows, start.cols, start.mask_words), start.b, start.a,
                          start.rank);
}

surgeon::host_matrix_view<const float> view(const std::vector<float>& values, index_t count_rows,
                                            index_t count_cols) {
  return surgeon::make_host_matrix_view(values, count_rows, count_cols);
}

}  // namespace

TEST_CASE("cuda low_rank_adapter: gradients of two batches match the CPU adapter", "[cuda][first_order]") {
  context ctx;
  const adapter_start start = make_start();
  const std::vector<adapter_batch> batches = {make_batch(21), make_batch(22)};
  const adapter_state cpu = surgeon_test::cpu_adapter_run(start, {}, {batches}, {}, false);

  low_rank_adapter adapter = device_adapter(ctx, start);
  CHECK(adapter.rows() == rows);
  CHECK(adapter.cols() == cols);
  CHECK(adapter.rank() == rank);
  CHECK(adapter.steps() == 0);
  CHECK(adapter.pruned() == mask::from_words(rows, cols, start.mask_words));
  CHECK(adapter.b() == start.b);
  CHECK(adapter.a() == start.a);
  CHECK(adapter.gradient_b() == std::vector<float>(rows * rank, 0.0f));
  CHECK(adapter.gradient_a() == std::vector<float>(rank * cols, 0.0f));

  adapter.accumulate(view(batches[0].x, tokens, cols), view(batches[0].gy, tokens, rows));
  // The second batch through padded views (NaN padding, which must not be read).
  const std::vector<float> x = padded(batches[1].x, tokens, cols, cols + 5);
  const std::vector<float> gy = padded(batches[1].gy, tokens, rows, rows + 3);
  adapter.accumulate(surgeon::make_host_matrix_view(x.data(), tokens, cols, cols + 5),
                     surgeon::make_host_matrix_view(gy.data(), tokens, rows, rows + 3));
  CHECK(relative_difference(adapter.gradient_b(), cpu.gradient_b) < tolerance);
  CHECK(relative_difference(adapter.gradient_a(), cpu.gradient_a) < tolerance);
  CHECK(adapter.b() == start.b);
  CHECK(adapter.a() == start.a);

  // An empty batch adds nothing; zero_gradients clears.
  adapter.accumulate(surgeon::host_matrix_view<const float>(nullptr, 0, cols),
                     surgeon::host_matrix_view<const float>(nullptr, 0, rows));
  CHECK(relative_difference(adapter.gradient_b(), cpu.gradient_b) < tolerance);
  adapter.zero_gradients();
  CHECK(adapter.gradient_b() == std::vector<float>(rows * rank, 0.0f));
  CHECK(adapter.gradient_a() == std::vector<float>(rank * cols, 0.0f));
}

TEST_CASE("cuda low_rank_adapter: three rounds of Adam and absorb match the CPU adapter",
          "[cuda][first_order]") {
  context ctx;
  const adapter_start start = make_start();
  const mask pruned = mask::from_words(rows, cols, start.mask_words);
  std::vector<float> weights = random_values(rows * cols, 31);
  pruned.apply(surgeon::make_host_matrix_view(weights, rows, cols));
  const std::vector<float> initial = weights;
  surgeon::first_order_options options;
  options.learning_rate = 1e-2;
  const std::vector<std::vector<adapter_batch>> rounds = {
      {make_batch(41)}, {make_batch(42)}, {make_batch(43)}};
  const adapter_state cpu = surgeon_test::cpu_adapter_run(start, weights, rounds, options, true);

  low_rank_adapter adapter = device_adapter(ctx, start);
  for (const std::vector<adapter_batch>& round : rounds) {
    for (const adapter_batch& batch : round) {
      adapter.accumulate(view(batch.x, tokens, cols), view(batch.gy, tokens, rows));
    }
    adapter.adam_step(options);
    adapter.absorb(surgeon::make_host_matrix_view(weights, rows, cols));
  }
  CHECK(adapter.steps() == 3);
  CHECK(cpu.steps == 3);
  CHECK(relative_difference(adapter.b(), cpu.b) < tolerance);
  CHECK(relative_difference(adapter.a(), cpu.a) < tolerance);
  CHECK(relative_difference(weights, cpu.weights) < tolerance);
  // The change of the weights, M ⊙ (B·A) after the last step, on its own scale.
  std::vector<float> change(weights.size());
  std::vector<float> cpu_change(weights.size());
  for (std::size_t k = 0; k < weights.size(); ++k) {
    change[k] = weights[k] - initial[k];
    cpu_change[k] = cpu.weights[k] - initial[k];
  }
  CHECK(relative_difference(change, cpu_change) < tolerance);
  // The steps moved the factors, and zeroed the gradients.
  CHECK(relative_difference(adapter.a(), start.a) > 1e-3);
  CHECK(adapter.gradient_b() == std::vector<float>(rows * rank, 0.0f));
  CHECK(adapter.gradient_a() == std::vector<float>(rank * cols, 0.0f));
  // Pruned weights stay exactly +0.0f; every kept weight changed.
  index_t kept_changed = 0;
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      const float w = weights[static_cast<std::size_t>(i * cols + j)];
      if (pruned.pruned(i, j)) {
        REQUIRE(w == 0.0f);
        REQUIRE_FALSE(std::signbit(w));
      } else if (w != initial[static_cast<std::size_t>(i * cols + j)]) {
        ++kept_changed;
      }
    }
  }
  CHECK(kept_changed > (rows * cols - pruned.count()) / 2);
}

TEST_CASE("cuda low_rank_adapter: the seeded start through prune_backend::make_low_rank",
          "[cuda][first_order]") {
  context ctx;
  const surgeon::cuda::prune_backend backend(ctx);
  const mask pruned = random_mask(51);
  const std::uint64_t seed = surgeon::adapter_seed(7, 2, 5);
  surgeon::cuda::prune_backend::low_rank_adapter adapter = backend.make_low_rank(pruned, rank, seed);
  CHECK(adapter.rows() == rows);
  CHECK(adapter.cols() == cols);
  CHECK(adapter.rank() == rank);
  CHECK(adapter.pruned() == pruned);
  CHECK(adapter.b() == std::vector<float>(rows * rank, 0.0f));
  CHECK(adapter.a() == surgeon::initial_adapter_a(rank, cols, seed));
  // B = 0: the first absorb leaves the weights as they are.
  std::vector<float> weights = random_values(rows * cols, 52);
  const std::vector<float> before = weights;
  adapter.absorb(surgeon::make_host_matrix_view(weights, rows, cols));
  CHECK(weights == before);
}

TEST_CASE("cuda low_rank_adapter: shape mismatches and bad options throw", "[cuda][first_order]") {
  context ctx;
  const adapter_start start = make_start();
  const mask pruned = mask::from_words(rows, cols, start.mask_words);
  using surgeon::logic_error;
  CHECK_THROWS_AS(low_rank_adapter(ctx, pruned, 0, 1), logic_error);
  CHECK_THROWS_AS(low_rank_adapter(ctx, mask(0, cols), rank, 1), logic_error);
  CHECK_THROWS_AS(low_rank_adapter(ctx, pruned, std::vector<float>(rows * rank + 1), start.a, rank),
                  logic_error);
  CHECK_THROWS_AS(low_rank_adapter(ctx, pruned, start.b, std::vector<float>(rank * cols - 1), rank),
                  logic_error);
  CHECK_THROWS_AS(low_rank_adapter(ctx, pruned, start.b, start.a, rank + 1), logic_error);
  CHECK_THROWS_AS(low_rank_adapter(ctx, pruned, {}, {}, 0), logic_error);

  low_rank_adapter adapter = device_adapter(ctx, start);
  const std::vector<float> x = random_values((tokens + 1) * (cols + 1), 61);
  const std::vector<float> gy = random_values((tokens + 1) * (rows + 1), 62);
  const auto raw = [](const std::vector<float>& values, index_t count_rows, index_t count_cols) {
    return surgeon::host_matrix_view<const float>(values.data(), count_rows, count_cols);
  };
  CHECK_THROWS_AS(adapter.accumulate(raw(x, tokens, cols + 1), raw(gy, tokens, rows)), logic_error);
  CHECK_THROWS_AS(adapter.accumulate(raw(x, tokens, cols), raw(gy, tokens, rows + 1)), logic_error);
  CHECK_THROWS_AS(adapter.accumulate(raw(x, tokens + 1, cols), raw(gy, tokens, rows)), logic_error);
  std::vector<float> weights(static_cast<std::size_t>((rows + 1) * (cols + 1)), 0.0f);
  CHECK_THROWS_AS(adapter.absorb(surgeon::make_host_matrix_view(weights.data(), rows, cols + 1)),
                  logic_error);
  CHECK_THROWS_AS(adapter.absorb(surgeon::make_host_matrix_view(weights.data(), rows + 1, cols)),
                  logic_error);
  surgeon::first_order_options bad;
  bad.learning_rate = 0.0;
  CHECK_THROWS_AS(adapter.adam_step(bad), logic_error);
  bad = {};
  bad.beta1 = 1.0;
  CHECK_THROWS_AS(adapter.adam_step(bad), logic_error);
  CHECK(adapter.steps() == 0);
  // Nothing changed by the failed calls.
  CHECK(adapter.b() == start.b);
  CHECK(adapter.a() == start.a);
  CHECK(adapter.gradient_b() == std::vector<float>(rows * rank, 0.0f));
}
