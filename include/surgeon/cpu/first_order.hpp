/// @file cpu/first_order.hpp
/// @brief `cpu::low_rank_adapter`: one matrix's masked low-rank correction (first_order.hpp) on
/// the CPU — its gradients from a layer's inputs and output gradients, Adam, and `absorb`.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/first_order.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <Eigen/Dense>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace surgeon::cpu {

/// @brief The masked low-rank adapter `ΔW = M ⊙ (B·A)` of one weight matrix `[rows, cols]` (see
/// first_order.hpp for the gradients), in float on the host: the mask (held), B `[rows, r]`,
/// A `[r, cols]`, their gradients and Adam's two moments, 8·r·(rows + cols) floats and
/// rows·cols bits in all.
///
/// Use: `accumulate` every batch of a step, `adam_step`, then `absorb` into the weights. `absorb` keeps track
/// of what it wrote: after each call the weights hold `W₀ + M ⊙ (B·A)`, W₀ being the weights before the first
/// call, so the forward and backward passes between steps run on the corrected model with no adapter code in
/// the caller's runtime.
class low_rank_adapter {
 public:
  /// Row-major float matrices, the layout of the caller's views.
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// @brief A fresh adapter of the matrix whose pruned weights `pruned` marks (`mask::of_zeros`
  /// of the pruned weights, say): B = 0, A = `initial_adapter_a(rank, cols, seed)`.
  /// O(r·(rows + cols) + rows·cols / 64).
  /// @throws logic_error when a dimension or the rank is < 1.
  low_rank_adapter(mask pruned, int rank, std::uint64_t seed)
      : low_rank_adapter(pruned, matrix::Zero(pruned.rows(), rank), initial_a(rank, pruned.cols(), seed)) {}

  /// @brief An adapter with the given factors B `[rows, r]` and A `[r, cols]` (gradients and Adam's
  /// moments at zero, nothing absorbed yet).
  /// @throws logic_error when the shapes do not match the mask or the rank is zero.
  low_rank_adapter(mask pruned, matrix b, matrix a)
      : pruned_(std::move(pruned)), b_(std::move(b)), a_(std::move(a)) {
    SURGEON_EXPECTS(b_.cols() == a_.rows() && b_.cols() >= 1 && b_.rows() == pruned_.rows() &&
                        a_.cols() == pruned_.cols() && b_.rows() >= 1 && a_.cols() >= 1,
                    "low_rank_adapter: B [{}, {}] and A [{}, {}] for a [{}, {}] mask", b_.rows(), b_.cols(),
                    a_.rows(), a_.cols(), pruned_.rows(), pruned_.cols());
    grad_b_ = matrix::Zero(b_.rows(), b_.cols());
    grad_a_ = matrix::Zero(a_.rows(), a_.cols());
    m_b_ = grad_b_;
    v_b_ = grad_b_;
    m_a_ = grad_a_;
    v_a_ = grad_a_;
  }

  index_t rows() const noexcept { return b_.rows(); }            ///< rows of the weight matrix
  index_t cols() const noexcept { return a_.cols(); }            ///< columns of the weight matrix
  index_t rank() const noexcept { return b_.cols(); }            ///< r
  const matrix& b() const noexcept { return b_; }                ///< B `[rows, r]`
  const matrix& a() const noexcept { return a_; }                ///< A `[r, cols]`
  const matrix& gradient_b() const noexcept { return grad_b_; }  ///< ∂L/∂B accumulated since the last step
  const matrix& gradient_a() const noexcept { return grad_a_; }  ///< ∂L/∂A accumulated since the last step
  int steps() const noexcept { return steps_; }                  ///< Adam steps taken
  const mask& pruned() const noexcept { return pruned_; }        ///< the weights the adapter leaves alone

  /// @brief Adds the gradients of one batch: the layer's input `x` `[tokens, cols]` and the
  /// gradient at its output `gy` `[tokens, rows]` (of the loss being minimised), restricted to the
  /// weights the mask keeps. Cost: 2·tokens·rows·cols flops (the weight gradient Gyᵀ X) plus
  /// 4·r·rows·cols; memory: one `[rows, cols]` float temporary.
  /// @throws logic_error on shapes that do not match the adapter.
  void accumulate(host_matrix_view<const float> x, host_matrix_view<const float> gy) {
    SURGEON_EXPECTS(x.cols() == cols() && gy.cols() == rows() && x.rows() == gy.rows(),
                    "low_rank_adapter::accumulate: input [{}, {}] and output gradient [{}, {}] for a "
                    "[{}, {}] matrix",
                    x.rows(), x.cols(), gy.rows(), gy.cols(), rows(), cols());
    using stride = Eigen::OuterStride<>;
    const Eigen::Map<const matrix, 0, stride> input(x.data(), x.rows(), x.cols(), stride(x.ld()));
    const Eigen::Map<const matrix, 0, stride> grad(gy.data(), gy.rows(), gy.cols(), stride(gy.ld()));
    matrix e(rows(), cols());
    e.noalias() = grad.transpose() * input;
    apply_mask(e);
    grad_b_.noalias() += e * a_.transpose();
    grad_a_.noalias() += b_.transpose() * e;
  }

  /// @brief Sets the accumulated gradients to zero. O(r·(rows + cols)).
  void zero_gradients() {
    grad_b_.setZero();
    grad_a_.setZero();
  }

  /// @brief One Adam step on B and A from the accumulated gradients (bias-corrected moments), then
  /// zeroes the gradients. O(r·(rows + cols)).
  /// @throws logic_error on invalid options (see `validate`).
  void adam_step(const first_order_options& options) {
    validate(options);
    ++steps_;
    const float beta1 = static_cast<float>(options.beta1);
    const float beta2 = static_cast<float>(options.beta2);
    const double correction1 = 1.0 - std::pow(options.beta1, steps_);
    const double correction2 = 1.0 - std::pow(options.beta2, steps_);
    const float step = static_cast<float>(options.learning_rate / correction1);
    const float root2 = static_cast<float>(std::sqrt(correction2));
    const float epsilon = static_cast<float>(options.epsilon);
    const auto adam = [&](matrix& p, const matrix& g, matrix& m, matrix& v) {
      m = beta1 * m + (1.0f - beta1) * g;
      v = beta2 * v + (1.0f - beta2) * g.cwiseAbs2();
      p.array() -= step * m.array() / (v.array().sqrt() / root2 + epsilon);
    };
    adam(b_, grad_b_, m_b_, v_b_);
    adam(a_, grad_a_, m_a_, v_a_);
    zero_gradients();
  }

  /// @brief Makes the weights `w` `[rows, cols]` hold `W₀ + M ⊙ (B·A)`: adds the kept entries of
  /// `B·A − (the product absorbed last)`, leaving every weight the mask marks untouched (pruned
  /// weights stay exactly zero). Cost: 4·r·rows·cols flops; one `[rows, cols]` float temporary.
  /// @throws logic_error on shapes that do not match the adapter.
  void absorb(host_matrix_view<float> w) {
    SURGEON_EXPECTS(w.rows() == rows() && w.cols() == cols(),
                    "low_rank_adapter::absorb: weights [{}, {}] for a [{}, {}] adapter", w.rows(), w.cols(),
                    rows(), cols());
    matrix delta(rows(), cols());
    delta.noalias() = b_ * a_;
    if (absorbed_b_.size() != 0) delta.noalias() -= absorbed_b_ * absorbed_a_;
    for (index_t i = 0; i < rows(); ++i) {
      float* row = w.row(i);
      for (index_t j = 0; j < cols(); ++j) {
        if (!pruned_.pruned(i, j)) row[j] += delta(i, j);
      }
    }
    absorbed_b_ = b_;
    absorbed_a_ = a_;
  }

 private:
  static matrix initial_a(int rank, index_t cols, std::uint64_t seed) {
    const std::vector<float> values = initial_adapter_a(rank, cols, seed);
    return Eigen::Map<const matrix>(values.data(), rank, cols);
  }

  // Zeroes the entries of `e` the mask marks.
  void apply_mask(matrix& e) const {
    for (index_t i = 0; i < e.rows(); ++i) {
      if (pruned_.count_in_row(i) == 0) continue;
      for (index_t j = 0; j < e.cols(); ++j) {
        if (pruned_.pruned(i, j)) e(i, j) = 0.0f;
      }
    }
  }

  mask pruned_;
  matrix b_, a_;
  matrix grad_b_, grad_a_;
  matrix m_b_, v_b_, m_a_, v_a_;
  matrix absorbed_b_, absorbed_a_;  // the factors of the product the weights hold (empty: none)
  int steps_ = 0;
};

}  // namespace surgeon::cpu
