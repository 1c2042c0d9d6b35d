// CPU reference results for test_cuda (host compiler; the only test_cuda source that sees Eigen).
#include "cpu_reference.hpp"

#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/curvature.hpp>
#include <surgeon/cpu/kfac.hpp>
#include <surgeon/curvature.hpp>
#include <surgeon/error.hpp>
#include <surgeon/kfac.hpp>
#include <surgeon/view.hpp>

#include <cstddef>

namespace surgeon_test {
namespace {

template <typename Acc, typename In>
reference_factor accumulate(const std::vector<std::vector<In>>& batches, std::int64_t dim,
                            reference_options options) {
  surgeon::accumulator_options opts;
  opts.bias = options.bias;
  if (options.ema_decay > 0.0) opts.ema_decay = options.ema_decay;
  surgeon::cpu::context ctx;
  surgeon::factor_accumulator<Acc> acc(dim, opts);
  for (const auto& batch : batches) {
    const auto rows = static_cast<surgeon::index_t>(batch.size()) / dim;
    acc.add(ctx, surgeon::make_host_matrix_view(batch, rows, dim));
  }
  reference_factor result;
  result.count = acc.count();
  const surgeon::index_t n = acc.size();
  const surgeon::host_matrix<double> mean = acc.mean();
  result.mean = mean.values();
  result.lower.assign(static_cast<std::size_t>(n * n), 0.0);
  for (surgeon::index_t j = 0; j < n; ++j) {
    for (surgeon::index_t i = j; i < n; ++i) {
      const auto k = static_cast<std::size_t>(j * n + i);
      result.lower[k] = static_cast<double>(acc.lower_data()[k]);
    }
  }
  return result;
}

}  // namespace

reference_factor cpu_accumulate(const std::vector<std::vector<float>>& batches, std::int64_t dim,
                                reference_options options, bool double_accumulator) {
  return double_accumulator ? accumulate<double>(batches, dim, options)
                            : accumulate<float>(batches, dim, options);
}

reference_factor cpu_accumulate(const std::vector<std::vector<double>>& batches, std::int64_t dim,
                                reference_options options, bool double_accumulator) {
  return double_accumulator ? accumulate<double>(batches, dim, options)
                            : accumulate<float>(batches, dim, options);
}

reference_damped cpu_damp_and_invert(const std::vector<double>& factor, std::int64_t n, double lambda,
                                     bool relative, int max_escalations, double escalation) {
  surgeon::damping d;
  d.mode = relative ? surgeon::damping_mode::relative : surgeon::damping_mode::absolute;
  d.max_escalations = max_escalations;
  d.escalation = escalation;
  surgeon::cpu::context ctx;
  reference_damped result;
  try {
    const surgeon::cpu::damped_factor f =
        surgeon::cpu::damp_and_invert(ctx, surgeon::make_host_matrix_view(factor, n, n), lambda, d);
    result.damped.resize(static_cast<std::size_t>(n * n));
    result.inverse.resize(static_cast<std::size_t>(n * n));
    for (surgeon::index_t i = 0; i < n; ++i) {
      for (surgeon::index_t j = 0; j < n; ++j) {
        result.damped[static_cast<std::size_t>(i * n + j)] = f.damped()(i, j);
        result.inverse[static_cast<std::size_t>(i * n + j)] = f.inverse()(i, j);
      }
    }
    result.lambda_used = f.report().lambda_used;
    result.shift = f.report().shift;
    result.escalations = f.report().escalations;
  } catch (const surgeon::numerical_error&) {
    result.failed = true;
  }
  return result;
}

std::vector<double> cpu_eigenvalues(const std::vector<double>& m, std::int64_t n) {
  surgeon::cpu::matrix dense(n, n);
  for (surgeon::index_t i = 0; i < n; ++i) {
    for (surgeon::index_t j = 0; j < n; ++j) dense(i, j) = m[static_cast<std::size_t>(i * n + j)];
  }
  surgeon::cpu::vector values;
  surgeon::cpu::matrix vectors;
  surgeon::cpu::detail::symmetric_eigen(dense, values, vectors);
  return std::vector<double>(values.data(), values.data() + values.size());
}

}  // namespace surgeon_test
