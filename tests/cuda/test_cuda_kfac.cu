// The CUDA K-FAC accumulator and curvature against the CPU backend on the same seeded inputs:
// accumulation (float to 1e-4 relative, double to 1e-10), bias, EMA, merge, host-staged batches,
// float into double, non-finite input, to_host/from_host; damping, inverses and escalation; the
// eigendecomposition by its properties and its eigenvalues. The CPU results come from
// cpu_reference.cpp (host compiler), so this nvcc translation unit never includes Eigen.
// cuda_test_main.cpp skips the whole binary (exit 77) when no device is visible.
#include "cpu_reference.hpp"
#include "support/catch.hpp"

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/curvature.hpp>
#include <surgeon/cuda/kfac.hpp>
#include <surgeon/curvature.hpp>
#include <surgeon/kfac.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace {

using surgeon::accumulator_options;
using surgeon::index_t;
using surgeon::cuda::context;
using surgeon::cuda::device_buffer;
using surgeon::cuda::device_factor_accumulator;
using surgeon_test::reference_options;

template <typename T>
std::vector<T> random_rows(index_t rows, index_t cols, std::uint64_t seed, double offset = 0.25) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<T> values(static_cast<std::size_t>(rows * cols));
  for (auto& v : values) v = static_cast<T>(normal(engine) + offset);
  return values;
}

/// Copies `count` elements of device memory written on `ctx`'s (non-blocking) stream: waits for
/// the stream first, since a plain cudaMemcpy does not order with it.
template <typename T>
std::vector<T> download(context& ctx, const T* device, index_t count) {
  std::vector<T> host(static_cast<std::size_t>(count));
  SURGEON_CUDA_CHECK(
      cudaMemcpyAsync(host.data(), device, host.size() * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.synchronize();
  return host;
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

/// The lower triangle of a host accumulator's raw state, widened to double (upper = 0).
template <typename T>
std::vector<double> lower_of(const surgeon::factor_accumulator<T>& acc) {
  const index_t n = acc.size();
  std::vector<double> lower(static_cast<std::size_t>(n * n), 0.0);
  for (index_t j = 0; j < n; ++j) {
    for (index_t i = j; i < n; ++i) {
      const auto k = static_cast<std::size_t>(j * n + i);
      lower[k] = static_cast<double>(acc.lower_data()[k]);
    }
  }
  return lower;
}

accumulator_options to_options(reference_options r) {
  accumulator_options o;
  o.bias = r.bias;
  if (r.ema_decay > 0.0) o.ema_decay = r.ema_decay;
  return o;
}

/// Adds each batch to `acc` through device views (with a padded leading dimension when `pad > 0`).
template <typename T, typename In>
void add_on_device(context& ctx, device_factor_accumulator<T>& acc,
                   const std::vector<std::vector<In>>& batches, index_t dim, index_t pad = 0) {
  for (const auto& batch : batches) {
    const auto rows = static_cast<index_t>(batch.size()) / dim;
    const index_t ld = dim + pad;
    std::vector<In> padded(static_cast<std::size_t>(rows * ld), In(0));
    for (index_t t = 0; t < rows; ++t) {
      std::copy(batch.begin() + t * dim, batch.begin() + (t + 1) * dim, padded.begin() + t * ld);
    }
    device_buffer<In> buffer(ctx, padded);
    acc.add(ctx, buffer.view(rows, dim, ld));
  }
}

template <typename T, typename In>
void add_on_host(context& ctx, device_factor_accumulator<T>& acc, const std::vector<std::vector<In>>& batches,
                 index_t dim) {
  for (const auto& batch : batches) {
    acc.add(ctx, surgeon::make_host_matrix_view(batch, static_cast<index_t>(batch.size()) / dim, dim));
  }
}

template <typename In>
std::vector<std::vector<In>> make_batches(index_t dim, const std::vector<index_t>& rows, std::uint64_t seed) {
  std::vector<std::vector<In>> batches;
  for (std::size_t b = 0; b < rows.size(); ++b) batches.push_back(random_rows<In>(rows[b], dim, seed + b));
  return batches;
}

/// Checks a device accumulator against the CPU reference: count, mean (also the device mean),
/// and raw state, to `tolerance` relative.
template <typename T>
void check_against(context& ctx, const device_factor_accumulator<T>& acc,
                   const surgeon_test::reference_factor& ref, double tolerance) {
  const surgeon::factor_accumulator<T> host = acc.to_host();
  CHECK(host.count() == ref.count);
  CHECK(acc.count() == ref.count);
  CHECK(host.dim() == acc.dim());
  CHECK(host.has_bias() == acc.has_bias());
  CHECK(host.is_ema() == acc.is_ema());
  CHECK(relative_difference(host.mean().values(), ref.mean) <= tolerance);
  CHECK(relative_difference(lower_of(host), ref.lower) <= tolerance);
  const device_buffer<double> device_mean = acc.mean(ctx);
  CHECK(relative_difference(device_mean.to_host(), ref.mean) <= tolerance);
}

/// Row-major `[n, n]` product of two row-major `[n, n]` matrices.
std::vector<double> multiply(const std::vector<double>& a, const std::vector<double>& b, index_t n) {
  std::vector<double> c(static_cast<std::size_t>(n * n), 0.0);
  for (index_t i = 0; i < n; ++i) {
    for (index_t k = 0; k < n; ++k) {
      const double aik = a[static_cast<std::size_t>(i * n + k)];
      for (index_t j = 0; j < n; ++j)
        c[static_cast<std::size_t>(i * n + j)] += aik * b[static_cast<std::size_t>(k * n + j)];
    }
  }
  return c;
}

double max_abs_minus_identity(const std::vector<double>& m, index_t n) {
  double worst = 0.0;
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      worst = std::max(worst, std::fabs(m[static_cast<std::size_t>(i * n + j)] - (i == j ? 1.0 : 0.0)));
    }
  }
  return worst;
}

/// `Q diag(d) Q` with the Householder reflection `Q = I - 2 u uᵀ / uᵀu` (orthogonal, symmetric):
/// a symmetric matrix with exactly the eigenvalues `d`, row-major.
std::vector<double> with_eigenvalues(const std::vector<double>& d, std::uint64_t seed) {
  const auto n = static_cast<index_t>(d.size());
  const std::vector<double> u = random_rows<double>(n, 1, seed, 0.0);
  double uu = 0.0;
  for (double x : u) uu += x * x;
  std::vector<double> q(static_cast<std::size_t>(n * n));
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      q[static_cast<std::size_t>(i * n + j)] =
          (i == j ? 1.0 : 0.0) - 2.0 * u[static_cast<std::size_t>(i)] * u[static_cast<std::size_t>(j)] / uu;
    }
  }
  std::vector<double> qd = q;
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) qd[static_cast<std::size_t>(i * n + j)] *= d[static_cast<std::size_t>(j)];
  }
  std::vector<double> m = multiply(qd, q, n);
  for (index_t i = 0; i < n; ++i) {  // exact symmetry
    for (index_t j = 0; j < i; ++j) {
      m[static_cast<std::size_t>(j * n + i)] = m[static_cast<std::size_t>(i * n + j)];
    }
  }
  return m;
}

/// A symmetric positive definite factor mean from accumulated tokens (order dim).
std::vector<double> spd_factor(index_t dim, std::uint64_t seed) {
  const auto batches = make_batches<double>(dim, {3 * dim}, seed);
  return surgeon_test::cpu_accumulate(batches, dim, {}, true).mean;
}

constexpr double float_tolerance = 1e-4;
constexpr double double_tolerance = 1e-10;

}  // namespace

TEST_CASE("device accumulation matches the CPU accumulator", "[cuda][kfac]") {
  context ctx;
  const index_t dim = 37;
  const std::vector<index_t> rows = {100, 1, 250};

  SECTION("float input, float accumulation") {
    const auto batches = make_batches<float>(dim, rows, 11);
    device_factor_accumulator<float> acc(ctx, dim);
    add_on_device(ctx, acc, batches, dim);
    check_against(ctx, acc, surgeon_test::cpu_accumulate(batches, dim, {}, false), float_tolerance);
  }
  SECTION("double input, double accumulation, padded leading dimension") {
    const auto batches = make_batches<double>(dim, rows, 12);
    device_factor_accumulator<double> acc(ctx, dim);
    add_on_device(ctx, acc, batches, dim, 5);
    check_against(ctx, acc, surgeon_test::cpu_accumulate(batches, dim, {}, true), double_tolerance);
  }
  SECTION("float input into a double accumulator is converted on the device") {
    // More rows than one conversion block, so the blocked path (beta only on the first block) runs.
    const auto batches =
        make_batches<float>(dim, {device_factor_accumulator<double>::convert_block + 3, 17}, 13);
    device_factor_accumulator<double> acc(ctx, dim);
    add_on_device(ctx, acc, batches, dim, 3);
    check_against(ctx, acc, surgeon_test::cpu_accumulate(batches, dim, {}, true), double_tolerance);
  }
  SECTION("bias augmentation: column sums and the count") {
    reference_options opts;
    opts.bias = true;
    const auto batches = make_batches<float>(dim, rows, 14);
    device_factor_accumulator<double> acc(ctx, dim, to_options(opts));
    CHECK(acc.size() == dim + 1);
    add_on_device(ctx, acc, batches, dim, 2);
    const auto ref = surgeon_test::cpu_accumulate(batches, dim, opts, true);
    check_against(ctx, acc, ref, double_tolerance);
    CHECK(acc.to_host().mean()(dim, dim) == 1.0);

    const auto float_batches = make_batches<float>(dim, rows, 15);
    device_factor_accumulator<float> facc(ctx, dim, to_options(opts));
    add_on_device(ctx, facc, float_batches, dim);
    check_against(ctx, facc, surgeon_test::cpu_accumulate(float_batches, dim, opts, false), float_tolerance);
  }
  SECTION("exponential moving average") {
    reference_options opts;
    opts.ema_decay = 0.9;
    const auto batches = make_batches<double>(dim, rows, 16);
    device_factor_accumulator<double> acc(ctx, dim, to_options(opts));
    add_on_device(ctx, acc, batches, dim);
    check_against(ctx, acc, surgeon_test::cpu_accumulate(batches, dim, opts, true), double_tolerance);

    opts.bias = true;
    const auto float_batches = make_batches<float>(dim, rows, 17);
    device_factor_accumulator<float> facc(ctx, dim, to_options(opts));
    add_on_device(ctx, facc, float_batches, dim);
    check_against(ctx, facc, surgeon_test::cpu_accumulate(float_batches, dim, opts, false), float_tolerance);
  }
}

TEST_CASE("host-staged batches match the CPU accumulator", "[cuda][kfac]") {
  context ctx;
  const index_t dim = 29;
  // Growing, shrinking and growing again: the staging buffers are reallocated while the other slot
  // may still be in use. The last four batches fit both slots, so no reallocation (which waits for
  // the context's stream) separates a slot's reuse from the update of its previous batch.
  const std::vector<index_t> rows = {10, 64, 3, 200, 1, 500, 7, 400, 8, 450, 2};

  SECTION("float input into a double accumulator, with bias") {
    reference_options opts;
    opts.bias = true;
    const auto batches = make_batches<float>(dim, rows, 21);
    device_factor_accumulator<double> acc(ctx, dim, to_options(opts));
    add_on_host(ctx, acc, batches, dim);
    check_against(ctx, acc, surgeon_test::cpu_accumulate(batches, dim, opts, true), double_tolerance);
  }
  SECTION("float input, float accumulation") {
    const auto batches = make_batches<float>(dim, rows, 22);
    device_factor_accumulator<float> acc(ctx, dim);
    add_on_host(ctx, acc, batches, dim);
    check_against(ctx, acc, surgeon_test::cpu_accumulate(batches, dim, {}, false), float_tolerance);
  }
  SECTION("double input, interleaved with device batches, EMA") {
    reference_options opts;
    opts.ema_decay = 0.75;
    const auto batches = make_batches<double>(dim, rows, 23);
    device_factor_accumulator<double> acc(ctx, dim, to_options(opts));
    for (std::size_t b = 0; b < batches.size(); ++b) {
      const std::vector<std::vector<double>> one = {batches[b]};
      if (b % 2 == 0) {
        add_on_host(ctx, acc, one, dim);
      } else {
        add_on_device(ctx, acc, one, dim);
      }
    }
    check_against(ctx, acc, surgeon_test::cpu_accumulate(batches, dim, opts, true), double_tolerance);
  }
  SECTION("a strided host view") {
    const index_t tokens = 40;
    const index_t ld = dim + 4;
    const std::vector<float> padded = random_rows<float>(tokens, ld, 24);
    std::vector<float> packed(static_cast<std::size_t>(tokens * dim));
    for (index_t t = 0; t < tokens; ++t) {
      std::copy(padded.begin() + t * ld, padded.begin() + t * ld + dim, packed.begin() + t * dim);
    }
    device_factor_accumulator<double> acc(ctx, dim);
    acc.add(ctx, surgeon::make_host_matrix_view(padded.data(), tokens, dim, ld));
    check_against(ctx, acc,
                  surgeon_test::cpu_accumulate(std::vector<std::vector<float>>{packed}, dim, {}, true),
                  double_tolerance);
  }
}

TEST_CASE("accumulators sharing one host_staging_area match the CPU accumulator", "[cuda][kfac]") {
  context ctx;
  surgeon::cuda::host_staging_area area(ctx);
  // Three factors of different widths and precisions, their batches interleaved through the one
  // area (as the pruning driver's calibration feeds a whole model's factors): the shared slots and
  // scratch are reused by a different accumulator on every add, growing and shrinking. Float
  // input into the double accumulators goes through the area's conversion scratch; the batch of
  // 2100 rows spans two conversion blocks.
  const index_t wide = 37;
  const index_t narrow = 11;
  const std::vector<index_t> rows = {12, 300, 5, 2100, 64, 1, 250, 9};
  const auto wide_batches = make_batches<float>(wide, rows, 41);
  const auto narrow_batches = make_batches<float>(narrow, rows, 42);
  const auto double_batches = make_batches<double>(narrow, rows, 43);
  reference_options with_bias;
  with_bias.bias = true;
  device_factor_accumulator<double> a(ctx, wide, to_options(with_bias));
  device_factor_accumulator<double> b(ctx, narrow);
  device_factor_accumulator<float> c(ctx, narrow);
  for (std::size_t k = 0; k < rows.size(); ++k) {
    a.add(ctx, surgeon::make_host_matrix_view(wide_batches[k], rows[k], wide), area);
    b.add(ctx, surgeon::make_host_matrix_view(narrow_batches[k], rows[k], narrow), area);
    c.add(ctx, surgeon::make_host_matrix_view(double_batches[k], rows[k], narrow), area);
  }
  check_against(ctx, a, surgeon_test::cpu_accumulate(wide_batches, wide, with_bias, true), double_tolerance);
  check_against(ctx, b, surgeon_test::cpu_accumulate(narrow_batches, narrow, {}, true), double_tolerance);
  check_against(ctx, c, surgeon_test::cpu_accumulate(double_batches, narrow, {}, false), float_tolerance);
  // A bad batch through the area leaves the state unchanged and the area usable.
  std::vector<float> bad(static_cast<std::size_t>(4 * narrow), 1.0f);
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(b.add(ctx, surgeon::make_host_matrix_view(bad, 4, narrow), area), surgeon::logic_error);
  b.add(ctx, surgeon::make_host_matrix_view(narrow_batches[0], rows[0], narrow), area);
  std::vector<std::vector<float>> with_repeat = narrow_batches;
  with_repeat.push_back(narrow_batches[0]);
  check_against(ctx, b, surgeon_test::cpu_accumulate(with_repeat, narrow, {}, true), double_tolerance);
}

TEST_CASE("merge, reset, to_host and from_host", "[cuda][kfac]") {
  context ctx;
  const index_t dim = 23;
  reference_options opts;
  opts.bias = true;
  const auto first = make_batches<float>(dim, {50, 20}, 31);
  const auto second = make_batches<float>(dim, {33}, 32);
  std::vector<std::vector<float>> both = first;
  both.insert(both.end(), second.begin(), second.end());
  const auto ref = surgeon_test::cpu_accumulate(both, dim, opts, true);

  SECTION("merging two device accumulators equals one fed with both") {
    device_factor_accumulator<double> a(ctx, dim, to_options(opts));
    device_factor_accumulator<double> b(ctx, dim, to_options(opts));
    add_on_device(ctx, a, first, dim);
    add_on_host(ctx, b, second, dim);
    a.merge(ctx, b);
    check_against(ctx, a, ref, double_tolerance);
  }
  SECTION("merging a host accumulator") {
    device_factor_accumulator<double> a(ctx, dim, to_options(opts));
    add_on_device(ctx, a, first, dim);
    device_factor_accumulator<double> b(ctx, dim, to_options(opts));
    add_on_device(ctx, b, second, dim);
    a.merge(ctx, b.to_host());
    check_against(ctx, a, ref, double_tolerance);
  }
  SECTION("merge rejects EMA state and other shapes") {
    device_factor_accumulator<double> a(ctx, dim, to_options(opts));
    device_factor_accumulator<double> other_dim(ctx, dim + 1, to_options(opts));
    device_factor_accumulator<double> no_bias(ctx, dim);
    accumulator_options ema = to_options(opts);
    ema.ema_decay = 0.5;
    device_factor_accumulator<double> with_ema(ctx, dim, ema);
    CHECK_THROWS_AS(a.merge(ctx, other_dim), surgeon::logic_error);
    CHECK_THROWS_AS(a.merge(ctx, no_bias), surgeon::logic_error);
    CHECK_THROWS_AS(a.merge(ctx, with_ema), surgeon::logic_error);
    CHECK_THROWS_AS(with_ema.merge(ctx, with_ema), surgeon::logic_error);
  }
  SECTION("to_host is bit-identical to the device state, from_host round-trips") {
    device_factor_accumulator<float> a(ctx, dim, to_options(opts));
    add_on_device(ctx, a, both, dim);
    const index_t n = a.size();
    const std::vector<float> raw = download(ctx, a.lower_data(), n * n);
    const surgeon::factor_accumulator<float> host = a.to_host();
    bool identical = true;
    for (index_t j = 0; j < n; ++j) {
      for (index_t i = j; i < n; ++i) {
        const auto k = static_cast<std::size_t>(j * n + i);
        identical = identical && raw[k] == host.lower_data()[k];
      }
    }
    CHECK(identical);
    CHECK(host.count() == a.count());
    const device_factor_accumulator<float> back = device_factor_accumulator<float>::from_host(ctx, host);
    CHECK(back.count() == a.count());
    CHECK(back.to_host().mean().values() == host.mean().values());
  }
  SECTION("reset forgets every token") {
    device_factor_accumulator<double> a(ctx, dim, to_options(opts));
    add_on_device(ctx, a, first, dim);
    a.reset();
    CHECK(a.count() == 0);
    CHECK(a.empty());
    CHECK_THROWS_AS(a.mean(ctx), surgeon::logic_error);
    add_on_device(ctx, a, both, dim);
    check_against(ctx, a, ref, double_tolerance);
  }
}

TEST_CASE("device accumulation rejects bad input", "[cuda][kfac]") {
  context ctx;
  const index_t dim = 8;
  CHECK_THROWS_AS(device_factor_accumulator<float>(ctx, 0), surgeon::logic_error);
  accumulator_options bad_ema;
  bad_ema.ema_decay = 1.0;
  CHECK_THROWS_AS(device_factor_accumulator<float>(ctx, dim, bad_ema), surgeon::logic_error);

  device_factor_accumulator<double> acc(ctx, dim);
  const auto good = make_batches<float>(dim, {16}, 41);
  add_on_device(ctx, acc, good, dim);
  const std::vector<double> before = acc.to_host().mean().values();

  SECTION("wrong shape or no rows") {
    const std::vector<float> wide(static_cast<std::size_t>(4 * (dim + 1)), 1.0f);
    CHECK_THROWS_AS(acc.add(ctx, surgeon::make_host_matrix_view(wide, 4, dim + 1)), surgeon::logic_error);
    device_buffer<float> empty(ctx, 0);
    CHECK_THROWS_AS(acc.add(ctx, empty.view(0, dim)), surgeon::logic_error);
  }
  SECTION("NaN on the device, infinity through the host staging") {
    std::vector<float> bad = good[0];
    bad[37] = std::numeric_limits<float>::quiet_NaN();
    device_buffer<float> device_bad(ctx, bad);
    CHECK_THROWS_AS(acc.add(ctx, device_bad.view(16, dim)), surgeon::logic_error);
    bad[37] = std::numeric_limits<float>::infinity();
    CHECK_THROWS_AS(acc.add(ctx, surgeon::make_host_matrix_view(bad, 16, dim)), surgeon::logic_error);
    std::vector<double> bad_double(bad.begin(), bad.end());
    bad_double[37] = -std::numeric_limits<double>::infinity();
    CHECK_THROWS_AS(acc.add(ctx, surgeon::make_host_matrix_view(bad_double, 16, dim)), surgeon::logic_error);
  }
  // The state is unchanged by a rejected batch, and the accumulator still works.
  CHECK(acc.count() == 16);
  CHECK(acc.to_host().mean().values() == before);
  add_on_host(ctx, acc, good, dim);
  CHECK(acc.count() == 32);
  CHECK(relative_difference(acc.to_host().mean().values(), before) <= double_tolerance);
}

TEST_CASE("damp_and_invert matches the CPU backend", "[cuda][curvature]") {
  context ctx;
  const index_t n = 40;
  const std::vector<double> factor = spd_factor(n, 51);
  surgeon::damping d;

  SECTION("relative and absolute damping, padded leading dimension") {
    for (const bool relative : {true, false}) {
      d.mode = relative ? surgeon::damping_mode::relative : surgeon::damping_mode::absolute;
      const double lambda = relative ? 0.01 : 0.05;
      const auto ref =
          surgeon_test::cpu_damp_and_invert(factor, n, lambda, relative, d.max_escalations, d.escalation);
      REQUIRE_FALSE(ref.failed);
      const index_t ld = n + 3;
      std::vector<double> padded(static_cast<std::size_t>(n * ld), -1.0);
      for (index_t i = 0; i < n; ++i) {
        std::copy(factor.begin() + i * n, factor.begin() + (i + 1) * n, padded.begin() + i * ld);
      }
      device_buffer<double> device_factor(ctx, padded);
      const surgeon::cuda::damped_factor f =
          surgeon::cuda::damp_and_invert(ctx, device_factor.view(n, n, ld), lambda, d);
      CHECK(f.order() == n);
      CHECK(f.report().lambda_requested == lambda);
      CHECK(f.report().lambda_used == ref.lambda_used);
      CHECK(f.report().escalations == 0);
      CHECK(f.report().shift == Approx(ref.shift).epsilon(1e-13));
      const std::vector<double> damped = download(ctx, f.damped().data(), n * n);
      const std::vector<double> inverse = download(ctx, f.inverse().data(), n * n);
      CHECK(relative_difference(damped, ref.damped) <= double_tolerance);
      CHECK(relative_difference(inverse, ref.inverse) <= double_tolerance);
      CHECK(max_abs_minus_identity(multiply(damped, inverse, n), n) <= 1e-9);
      bool symmetric = true;
      for (index_t i = 0; i < n; ++i) {
        for (index_t j = 0; j < n; ++j) {
          symmetric = symmetric && inverse[static_cast<std::size_t>(i * n + j)] ==
                                       inverse[static_cast<std::size_t>(j * n + i)];
        }
      }
      CHECK(symmetric);
    }
  }
  SECTION("an indefinite factor escalates lambda as the CPU does") {
    const index_t m = 20;
    std::vector<double> values;
    for (index_t i = 1; i < m; ++i) values.push_back(static_cast<double>(i));
    values.push_back(-0.3);  // mean diagonal 9.485: lambda 0.01 fails, 0.1 succeeds
    const std::vector<double> indefinite = with_eigenvalues(values, 52);
    device_buffer<double> device_factor(ctx, indefinite);
    const auto ref =
        surgeon_test::cpu_damp_and_invert(indefinite, m, 0.01, true, d.max_escalations, d.escalation);
    REQUIRE_FALSE(ref.failed);
    d.mode = surgeon::damping_mode::relative;
    const auto f = surgeon::cuda::damp_and_invert(ctx, device_factor.view(m, m), 0.01, d);
    CHECK(f.report().escalations == ref.escalations);
    CHECK(f.report().escalations == 1);
    CHECK(f.report().lambda_used == Approx(ref.lambda_used).epsilon(1e-15));
    CHECK(f.report().shift == Approx(ref.shift).epsilon(1e-13));
    const std::vector<double> inverse = download(ctx, f.inverse().data(), m * m);
    CHECK(relative_difference(inverse, ref.inverse) <= 1e-9);

    // Absolute damping from lambda 0: 0 -> 1e-8 -> ... -> 1: nine escalations for a shift > 0.3.
    d.mode = surgeon::damping_mode::absolute;
    d.max_escalations = 10;
    const auto from_zero = surgeon::cuda::damp_and_invert(ctx, device_factor.view(m, m), 0.0, d);
    const auto ref_zero = surgeon_test::cpu_damp_and_invert(indefinite, m, 0.0, false, 10, d.escalation);
    REQUIRE_FALSE(ref_zero.failed);
    CHECK(from_zero.report().escalations == ref_zero.escalations);
    CHECK(from_zero.report().lambda_used == Approx(ref_zero.lambda_used).epsilon(1e-15));

    SECTION("exhausted escalations are a numerical_error") {
      surgeon::damping none;
      none.max_escalations = 0;
      CHECK(surgeon_test::cpu_damp_and_invert(indefinite, m, 0.01, true, 0, none.escalation).failed);
      CHECK_THROWS_AS(surgeon::cuda::damp_and_invert(ctx, device_factor.view(m, m), 0.01, none),
                      surgeon::numerical_error);
    }
  }
  SECTION("bad input") {
    device_buffer<double> device_factor(ctx, factor);
    CHECK_THROWS_AS(surgeon::cuda::damp_and_invert(ctx, device_factor.view(n, n), -1.0, d),
                    surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::cuda::damp_and_invert(ctx, device_factor.view(n - 1, n), 0.01, d),
                    surgeon::logic_error);
    std::vector<double> bad = factor;
    bad[5] = std::numeric_limits<double>::quiet_NaN();
    device_buffer<double> device_bad(ctx, bad);
    CHECK_THROWS_AS(surgeon::cuda::damp_and_invert(ctx, device_bad.view(n, n), 0.01, d),
                    surgeon::logic_error);
    const std::vector<double> zero(static_cast<std::size_t>(n * n), 0.0);
    device_buffer<double> device_zero(ctx, zero);
    CHECK_THROWS_AS(surgeon::cuda::damp_and_invert(ctx, device_zero.view(n, n), 0.01, d),
                    surgeon::numerical_error);
  }
}

TEST_CASE("eigendecomposition on the device", "[cuda][curvature]") {
  context ctx;
  const index_t n = 48;
  const std::vector<double> factor = spd_factor(n, 61);
  device_buffer<double> device_factor(ctx, factor);
  const surgeon::cuda::damped_factor f =
      surgeon::cuda::damp_and_invert(ctx, device_factor.view(n, n), 0.01, {});
  const std::vector<double> damped = download(ctx, f.damped().data(), n * n);

  CHECK_FALSE(f.has_eigen());
  const auto& eig = f.eigen(ctx);
  CHECK(f.has_eigen());
  CHECK(&f.eigen(ctx) == &eig);  // cached
  REQUIRE(eig.order == n);
  const std::vector<double> values = eig.values.to_host();
  const std::vector<double> vectors = eig.vectors.to_host();  // eigenvector k at [k * n, (k + 1) * n)

  // Eigenvalues: ascending, positive, and equal to the CPU's.
  CHECK(std::is_sorted(values.begin(), values.end()));
  CHECK(values.front() > 0.0);
  CHECK(relative_difference(values, surgeon_test::cpu_eigenvalues(damped, n)) <= double_tolerance);
  // Residuals ‖M v − λ v‖ and orthonormality VᵀV = I.
  double residual = 0.0;
  double orthogonality = 0.0;
  for (index_t k = 0; k < n; ++k) {
    const double* v = vectors.data() + k * n;
    for (index_t i = 0; i < n; ++i) {
      double mv = 0.0;
      for (index_t j = 0; j < n; ++j) mv += damped[static_cast<std::size_t>(i * n + j)] * v[j];
      residual = std::max(residual, std::fabs(mv - values[static_cast<std::size_t>(k)] * v[i]));
    }
    for (index_t l = 0; l < n; ++l) {
      const double* w = vectors.data() + l * n;
      double dot = 0.0;
      for (index_t i = 0; i < n; ++i) dot += v[i] * w[i];
      orthogonality = std::max(orthogonality, std::fabs(dot - (k == l ? 1.0 : 0.0)));
    }
  }
  CHECK(residual <= 1e-10 * values.back());
  CHECK(orthogonality <= 1e-12);

  SECTION("float syevd agrees to float precision") {
    const std::vector<float> damped_float(damped.begin(), damped.end());
    device_buffer<float> device_float(ctx, damped_float);
    const auto eig_float = surgeon::cuda::symmetric_eigen(ctx, device_float.view(n, n));
    const std::vector<float> float_values = eig_float.values.to_host();
    CHECK(relative_difference(std::vector<double>(float_values.begin(), float_values.end()), values) <=
          float_tolerance);
  }
}
