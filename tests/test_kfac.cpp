#include <surgeon/cpu/kfac.hpp>
#include <surgeon/kfac.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "support/catch.hpp"
#include "support/random.hpp"

using surgeon::factor_accumulator;
using surgeon::host_matrix;
using surgeon::host_matrix_view;
using surgeon::index_t;

namespace {

// The oracle: a naive triple loop in long double over the rows of x (with an appended 1 when
// bias is set), divided by the token count when mean is set.
template <typename In>
host_matrix<double> naive_factor(const std::vector<In>& x, index_t tokens, index_t dim, index_t ld, bool bias,
                                 bool mean) {
  const index_t n = dim + (bias ? 1 : 0);
  host_matrix<double> result(n, n);
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      long double sum = 0.0L;
      for (index_t t = 0; t < tokens; ++t) {
        const long double xi =
            i < dim ? static_cast<long double>(x[static_cast<std::size_t>(t * ld + i)]) : 1.0L;
        const long double xj =
            j < dim ? static_cast<long double>(x[static_cast<std::size_t>(t * ld + j)]) : 1.0L;
        sum += xi * xj;
      }
      result(i, j) = static_cast<double>(mean ? sum / static_cast<long double>(tokens) : sum);
    }
  }
  return result;
}

template <typename Acc, typename In>
void check_against_oracle(index_t tokens, index_t dim, index_t ld, bool bias, double tolerance) {
  surgeon::cpu::context cpu;
  const std::vector<In> x = surgeon::test::random_rows<In>(tokens, dim, ld, 1234u, 0.3);
  factor_accumulator<Acc> acc(dim, {bias, std::nullopt});
  acc.add(cpu, host_matrix_view<const In>(x.data(), tokens, dim, ld));
  REQUIRE(acc.count() == tokens);
  REQUIRE(acc.size() == dim + (bias ? 1 : 0));
  const host_matrix<double> expected_sum = naive_factor(x, tokens, dim, ld, bias, false);
  const host_matrix<double> expected_mean = naive_factor(x, tokens, dim, ld, bias, true);
  const host_matrix<double> sum = acc.sum();
  const host_matrix<double> mean = acc.mean();
  CHECK(surgeon::test::max_relative_difference(sum, expected_sum, acc.size(), acc.size()) < tolerance);
  CHECK(surgeon::test::max_relative_difference(mean, expected_mean, acc.size(), acc.size()) < tolerance);
  // Symmetric on read, exactly.
  for (index_t i = 0; i < acc.size(); ++i) {
    for (index_t j = 0; j < acc.size(); ++j) REQUIRE(mean(i, j) == mean(j, i));
  }
}

}  // namespace

TEST_CASE("accumulation matches a naive triple loop", "[kfac]") {
  SECTION("double accumulation of double input") {
    check_against_oracle<double, double>(1, 7, 7, false, 1e-14);
    check_against_oracle<double, double>(300, 33, 33, false, 1e-13);
    check_against_oracle<double, double>(300, 33, 40, false, 1e-13);
  }
  SECTION("double accumulation of float input (widened, more than one 256-token block)") {
    check_against_oracle<double, float>(1, 5, 5, false, 1e-14);
    check_against_oracle<double, float>(700, 19, 19, false, 1e-13);
    check_against_oracle<double, float>(700, 19, 23, false, 1e-13);
  }
  SECTION("float accumulation of float input") {
    check_against_oracle<float, float>(1, 9, 9, false, 1e-6);
    check_against_oracle<float, float>(500, 48, 48, false, 2e-5);
    check_against_oracle<float, float>(500, 48, 64, false, 2e-5);
  }
  SECTION("bias augmentation appends a constant 1") {
    check_against_oracle<double, float>(1, 6, 6, true, 1e-14);
    check_against_oracle<double, double>(257, 12, 15, true, 1e-13);
    check_against_oracle<float, float>(100, 10, 12, true, 2e-5);
  }
}

TEST_CASE("accumulating in batches equals accumulating at once", "[kfac]") {
  surgeon::cpu::context cpu;
  const index_t dim = 16;
  const std::vector<double> x = surgeon::test::random_rows<double>(90, dim, dim, 7u);
  factor_accumulator<double> once(dim, {true, std::nullopt});
  factor_accumulator<double> batched(dim, {true, std::nullopt});
  const host_matrix_view<const double> all(x.data(), 90, dim);
  once.add(cpu, all);
  batched.add(cpu, all.row_block(0, 1));
  batched.add(cpu, all.row_block(1, 50));
  batched.add(cpu, all.row_block(51, 39));
  CHECK(batched.count() == 90);
  CHECK(surgeon::test::max_relative_difference(batched.mean(), once.mean(), dim + 1, dim + 1) < 1e-14);
}

TEST_CASE("merge is exact", "[kfac]") {
  surgeon::cpu::context cpu;
  const index_t dim = 11;
  SECTION("integer-valued input: bitwise equal to one accumulator over the union") {
    std::vector<double> x(static_cast<std::size_t>(60 * dim));
    for (std::size_t k = 0; k < x.size(); ++k)
      x[k] = static_cast<double>(static_cast<int>(k * 7919 % 13) - 6);
    const host_matrix_view<const double> all(x.data(), 60, dim);
    factor_accumulator<double> left(dim, {true, std::nullopt});
    factor_accumulator<double> right(dim, {true, std::nullopt});
    factor_accumulator<double> union_acc(dim, {true, std::nullopt});
    left.add(cpu, all.row_block(0, 25));
    right.add(cpu, all.row_block(25, 35));
    union_acc.add(cpu, all);
    left.merge(right);
    REQUIRE(left.count() == 60);
    const host_matrix<double> merged = left.sum();
    const host_matrix<double> expected = union_acc.sum();
    CHECK(merged.values() == expected.values());
    CHECK(left.mean().values() == union_acc.mean().values());
  }
  SECTION("random input: equal to rounding") {
    const std::vector<float> x = surgeon::test::random_rows<float>(80, dim, dim, 99u);
    const host_matrix_view<const float> all(x.data(), 80, dim);
    factor_accumulator<double> left(dim);
    factor_accumulator<double> right(dim);
    factor_accumulator<double> union_acc(dim);
    left.add(cpu, all.row_block(0, 30));
    right.add(cpu, all.row_block(30, 50));
    union_acc.add(cpu, all);
    left.merge(right);
    CHECK(surgeon::test::max_relative_difference(left.mean(), union_acc.mean(), dim, dim) < 1e-14);
  }
  SECTION("mismatched accumulators are rejected") {
    factor_accumulator<double> a(dim);
    CHECK_THROWS_AS(a.merge(factor_accumulator<double>(dim + 1)), surgeon::logic_error);
    CHECK_THROWS_AS(a.merge(factor_accumulator<double>(dim, {true, std::nullopt})), surgeon::logic_error);
    CHECK_THROWS_AS(a.merge(factor_accumulator<double>(dim, {false, 0.9})), surgeon::logic_error);
  }
}

TEST_CASE("exponential moving average of batch means", "[kfac]") {
  surgeon::cpu::context cpu;
  const index_t dim = 5;
  const double decay = 0.75;
  const std::vector<double> x = surgeon::test::random_rows<double>(30, dim, dim, 3u);
  const host_matrix_view<const double> all(x.data(), 30, dim);
  factor_accumulator<double> ema(dim, {true, decay});
  ema.add(cpu, all.row_block(0, 10));
  ema.add(cpu, all.row_block(10, 20));
  // Oracle: M = β·B1 + (1−β)·B2, with B the per-batch means.
  const std::vector<double> first(x.begin(), x.begin() + 10 * dim);
  const std::vector<double> second(x.begin() + 10 * dim, x.end());
  const host_matrix<double> b1 = naive_factor(first, 10, dim, dim, true, true);
  const host_matrix<double> b2 = naive_factor(second, 20, dim, dim, true, true);
  host_matrix<double> expected(dim + 1, dim + 1);
  for (index_t i = 0; i <= dim; ++i) {
    for (index_t j = 0; j <= dim; ++j) expected(i, j) = decay * b1(i, j) + (1.0 - decay) * b2(i, j);
  }
  CHECK(ema.count() == 30);
  CHECK(surgeon::test::max_relative_difference(ema.mean(), expected, dim + 1, dim + 1) < 1e-14);
  CHECK_THROWS_AS(ema.sum(), surgeon::logic_error);
  CHECK_THROWS_AS(factor_accumulator<double>(dim, {false, 1.0}), surgeon::logic_error);
  CHECK_THROWS_AS(factor_accumulator<double>(dim, {false, 0.0}), surgeon::logic_error);
}

TEST_CASE("every precondition of factor_accumulator throws logic_error", "[kfac]") {
  surgeon::cpu::context cpu;
  factor_accumulator<float> acc(4);
  std::vector<float> x(12, 1.0f);
  SECTION("shape mismatch") {
    CHECK_THROWS_AS(acc.add(cpu, host_matrix_view<const float>(x.data(), 4, 3)), surgeon::logic_error);
  }
  SECTION("empty input") {
    CHECK_THROWS_AS(acc.add(cpu, host_matrix_view<const float>(x.data(), 0, 4)), surgeon::logic_error);
    CHECK_THROWS_AS(acc.mean(), surgeon::logic_error);
  }
  SECTION("NaN and infinite input, and the state is left untouched") {
    x[6] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH(acc.add(cpu, host_matrix_view<const float>(x.data(), 3, 4)),
                      Catch::Contains("non-finite"));
    x[6] = std::numeric_limits<float>::infinity();
    CHECK_THROWS_AS(acc.add(cpu, host_matrix_view<const float>(x.data(), 3, 4)), surgeon::logic_error);
    CHECK(acc.count() == 0);
  }
  SECTION("bad dimension") {
    CHECK_THROWS_AS(factor_accumulator<float>(0), surgeon::logic_error);
  }
  SECTION("reset forgets every token") {
    std::fill(x.begin(), x.end(), 2.0f);
    acc.add(cpu, host_matrix_view<const float>(x.data(), 3, 4));
    acc.reset();
    CHECK(acc.count() == 0);
    CHECK(acc.sum()(1, 1) == 0.0);
  }
}

TEST_CASE("factor_bank shares one accumulator between layers that read the same input", "[kfac]") {
  surgeon::cpu::context cpu;
  surgeon::factor_bank<double> bank;
  bank.define("blk.0.attn_in", 8);
  bank.define("blk.0.q.g", 8);
  for (const char* layer : {"blk.0.q", "blk.0.k", "blk.0.v"}) bank.bind(layer, "blk.0.attn_in");
  const std::vector<double> x = surgeon::test::random_rows<double>(10, 8, 8, 5u);
  bank.add(cpu, "blk.0.attn_in", host_matrix_view<const double>(x.data(), 10, 8));
  CHECK(&bank.for_layer("blk.0.q") == &bank.for_layer("blk.0.v"));
  CHECK(bank.for_layer("blk.0.k").count() == 10);
  CHECK(bank.key_of("blk.0.v") == "blk.0.attn_in");
  CHECK(&bank.define("blk.0.attn_in", 8) == &bank.at("blk.0.attn_in"));
  CHECK_THROWS_AS(bank.define("blk.0.attn_in", 9), surgeon::logic_error);
  CHECK_THROWS_AS(bank.bind("blk.0.q", "blk.0.q.g"), surgeon::logic_error);
  CHECK_THROWS_AS(bank.bind("blk.0.o", "missing"), surgeon::logic_error);
  CHECK_THROWS_AS(bank.for_layer("blk.0.o"), surgeon::logic_error);
  CHECK_THROWS_AS(bank.at("missing"), surgeon::logic_error);

  SECTION("banks merge key by key") {
    surgeon::factor_bank<double> other;
    other.define("blk.0.attn_in", 8);
    other.define("blk.0.q.g", 8);
    other.add(cpu, "blk.0.attn_in", host_matrix_view<const double>(x.data(), 4, 8));
    bank.merge(other);
    CHECK(bank.at("blk.0.attn_in").count() == 14);
  }
}
