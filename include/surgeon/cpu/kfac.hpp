/// @file cpu/kfac.hpp
/// @brief CPU kernel behind `factor_accumulator::add`: the blocked symmetric rank-k update.
#pragma once

#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/detail/dense.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace surgeon::cpu {

/// @brief `lower = alpha · xᵀx + beta · lower` on the lower triangle of a column-major `n x n` matrix
/// with column stride `ldc >= n`, where `x` is a host view `[tokens, n]` (one token per row, any
/// leading dimension).
///
/// Same-precision input goes straight to SYRK without a copy. Float input into a double
/// accumulator is widened in blocks of 256 tokens (an O(256·n) buffer), so the sums are formed in
/// double. Cost: tokens·n² flops; the upper triangle is never touched.
/// @throws logic_error if `x.cols() != n`.
template <typename Acc, typename In>
void rank_k_update(context& /*ctx*/, host_matrix_view<const In> x, Acc alpha, Acc beta, Acc* lower, index_t n,
                   index_t ldc) {
  static_assert(std::is_floating_point_v<In> && std::is_floating_point_v<Acc>,
                "rank_k_update: floating point");
  SURGEON_EXPECTS(x.cols() == n, "rank_k_update: input has {} columns, the factor has order {}", x.cols(), n);
  SURGEON_EXPECTS(ldc >= n, "rank_k_update: column stride {} below the order {}", ldc, n);
  if constexpr (std::is_same_v<Acc, In>) {
    detail::syrk_lower<Acc>(n, x.rows(), alpha, x.data(), x.ld(), beta, lower, ldc);
  } else {
    constexpr index_t block = 256;
    if (x.rows() == 0) {
      detail::syrk_lower<Acc>(n, 0, alpha, nullptr, n, beta, lower, ldc);
      return;
    }
    std::vector<Acc> widened(static_cast<std::size_t>(std::min(block, x.rows()) * n));
    for (index_t first = 0; first < x.rows(); first += block) {
      const index_t count = std::min(block, x.rows() - first);
      for (index_t t = 0; t < count; ++t) {
        const In* source = x.row(first + t);
        std::copy(source, source + n, widened.begin() + t * n);
      }
      detail::syrk_lower<Acc>(n, count, alpha, widened.data(), n, first == 0 ? beta : Acc(1), lower, ldc);
    }
  }
}

}  // namespace surgeon::cpu
