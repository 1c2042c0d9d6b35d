/// @file select.hpp
/// @brief Global mask selection from pruning costs (METHOD.md §5), backend-neutral.
///
/// Every function here turns per-layer costs (host memory, any backend computed them) into one
/// `surgeon::mask` per layer, bit set = pruned. The layers compete under one threshold τ unless the
/// function says otherwise (`select_uniform`, `select_per_row` are the per-layer and per-row
/// comparison groups that SparseGPT and Wanda use).
///
/// **Counts.** A sparsity `s` over `P` parameters prunes `prune_count(s, P)` = ⌊s·P⌋ of them; the
/// floor tolerates the rounding of `s·P` in floating point (a relative 1e-12), so that `0.29` of 100
/// is 29, not 28.
///
/// **Ties.** Candidates of equal cost are taken in a fixed order: by layer, then by row-major flat
/// index (element), block index (N:M), or row before column, then by index (rows and columns). The
/// same costs always give the same masks.
///
/// **Already-dead structure.** Weights, rows and columns that are already zero (pruned by an
/// earlier shot, or dead by METHOD.md §2) have cost exactly 0 and are candidates like any other cost-0
/// entry: they are taken first and count toward the removed total, so a target sparsity is the
/// total sparsity of the layers, old zeros included (the multi-shot schedule asks for `t·s/T`).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/types.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace surgeon {

/// @brief The result of an element-wise or N:M selection.
struct selection {
  /// @brief One mask per layer, shaped like that layer's costs; bit set = pruned.
  std::vector<mask> masks;
  /// @brief The cost of the most expensive candidate taken (element cost for unstructured and the
  /// per-layer/per-row selections, block cost for N:M); −∞ when nothing was taken.
  double threshold = -std::numeric_limits<double>::infinity();
  /// @brief Number of weights pruned over all layers (= Σ masks[m].count()).
  index_t removed = 0;
};

/// @brief The result of a row-and-column selection.
struct structured_selection {
  /// @brief One mask per layer, `[R_m, C_m]`, whole rows and columns set.
  std::vector<mask> masks;
  /// @brief Per layer, the removed row indices, ascending.
  std::vector<std::vector<index_t>> rows;
  /// @brief Per layer, the removed column indices, ascending.
  std::vector<std::vector<index_t>> cols;
  /// @brief The cost of the most expensive row or column taken; −∞ when nothing was taken.
  double threshold = -std::numeric_limits<double>::infinity();
  /// @brief Number of weights removed over all layers: Σ_m r_m·C_m + c_m·R_m − r_m·c_m.
  index_t removed = 0;
};

/// @brief ⌊s·total⌋, tolerant of the floating-point rounding of `s·total` (relative 1e-12).
/// @throws logic_error if `sparsity` is not in [0, 1) or `total < 0`. Cost: O(1).
inline index_t prune_count(double sparsity, index_t total) {
  SURGEON_EXPECTS(std::isfinite(sparsity) && sparsity >= 0.0 && sparsity < 1.0,
                  "sparsity must be in [0, 1), got {}", sparsity);
  SURGEON_EXPECTS(total >= 0, "prune_count: negative total {}", total);
  const double x = sparsity * static_cast<double>(total);
  const auto count = static_cast<index_t>(std::floor(x + 1e-12 * std::max(1.0, x)));
  return std::min(count, total);
}

namespace detail {

/// Order-preserving map of a (non-NaN) double to an unsigned key; -0 and +0 map to the same key.
inline std::uint64_t order_key(double x) {
  x += 0.0;  // -0.0 becomes +0.0
  std::uint64_t bits = 0;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits >> 63) != 0 ? ~bits : (bits | (std::uint64_t{1} << 63));
}

/// Inverse of `order_key`.
inline double from_order_key(std::uint64_t key) {
  const std::uint64_t bits = (key >> 63) != 0 ? (key & ~(std::uint64_t{1} << 63)) : ~key;
  double x = 0.0;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

/// The k-th smallest key (1 <= k <= number of candidates) by a four-pass 16-bit radix select.
/// `visit(f)` must call `f(key)` once for every candidate. Returns the key and how many candidates
/// equal to it are among the k smallest (the rest of the k are strictly smaller).
/// Cost: four visits plus O(65536) per pass; O(65536) memory whatever the number of candidates.
template <typename Visit>
std::pair<std::uint64_t, index_t> kth_smallest_key(const Visit& visit, index_t k) {
  std::vector<index_t> histogram(std::size_t{1} << 16);
  std::uint64_t prefix = 0;
  std::uint64_t known = 0;
  index_t rank = k - 1;
  for (int shift = 48; shift >= 0; shift -= 16) {
    std::fill(histogram.begin(), histogram.end(), index_t{0});
    visit([&](std::uint64_t key) {
      if ((key & known) == prefix) ++histogram[static_cast<std::size_t>((key >> shift) & 0xFFFFu)];
    });
    std::size_t digit = 0;
    for (; digit + 1 < histogram.size(); ++digit) {
      if (rank < histogram[digit]) break;
      rank -= histogram[digit];
    }
    prefix |= static_cast<std::uint64_t>(digit) << shift;
    known |= std::uint64_t{0xFFFF} << shift;
  }
  return {prefix, rank + 1};
}

/// Takes the k smallest candidates in tie-break order: `visit(f)` calls `f(key)` for every
/// candidate in that order, and `take()` is called (through the returned functor) for each taken.
/// Returns the threshold (the k-th smallest value, −∞ for k = 0).
template <typename Visit, typename Take>
double take_smallest(const Visit& visit, index_t k, const Take& take) {
  if (k <= 0) return -std::numeric_limits<double>::infinity();
  // Plain variables, not a structured binding: C++17 lambdas cannot capture those.
  const std::pair<std::uint64_t, index_t> kth = kth_smallest_key(visit, k);
  const std::uint64_t pivot = kth.first;
  index_t equal_left = kth.second;
  index_t position = 0;
  visit([&](std::uint64_t key) {
    if (key < pivot || (key == pivot && equal_left > 0)) {
      if (key == pivot) --equal_left;
      take(position);
    }
    ++position;
  });
  return from_order_key(pivot);
}

inline void expect_layers(std::size_t count, const char* who) {
  SURGEON_EXPECTS(count > 0, "{}: empty layer list", who);
}

inline void expect_sparsity(double sparsity, const char* who) {
  SURGEON_EXPECTS(std::isfinite(sparsity) && sparsity >= 0.0 && sparsity < 1.0,
                  "{}: sparsity must be in [0, 1), got {}", who, sparsity);
}

inline void expect_no_nan(host_matrix_view<const double> costs, std::size_t layer, const char* who) {
  for (index_t i = 0; i < costs.rows(); ++i) {
    const double* row = costs.row(i);
    for (index_t j = 0; j < costs.cols(); ++j) {
      SURGEON_EXPECTS(!std::isnan(row[j]), "{}: NaN cost at ({}, {}) of layer {}", who, i, j, layer);
    }
  }
}

/// The checks every selection over layers' costs makes first: a non-empty layer list, a sparsity
/// in [0, 1) and no NaN cost.
inline void expect_selection_inputs(const std::vector<host_matrix_view<const double>>& costs, double sparsity,
                                    const char* who) {
  expect_layers(costs.size(), who);
  expect_sparsity(sparsity, who);
  for (std::size_t m = 0; m < costs.size(); ++m) expect_no_nan(costs[m], m, who);
}

/// Sorts `order[0, m)` (column offsets of one block) by (cost, offset).
inline void sort_block(const double* costs, std::vector<index_t>& order) {
  for (std::size_t k = 0; k < order.size(); ++k) order[k] = static_cast<index_t>(k);
  std::sort(order.begin(), order.end(),
            [costs](index_t x, index_t y) { return costs[x] < costs[y] || (costs[x] == costs[y] && x < y); });
}

/// Sum of the n smallest of `costs[0, m)`, added in ascending order (deterministic rounding).
inline double block_cost(const double* costs, index_t n, std::vector<index_t>& order) {
  sort_block(costs, order);
  double sum = 0.0;
  for (index_t k = 0; k < n; ++k) sum += costs[order[static_cast<std::size_t>(k)]];
  return sum;
}

}  // namespace detail

/// @brief N:M block costs of one layer (METHOD.md §3): the sum of the N smallest element costs in
/// each block of M consecutive columns of a row.
/// @param element_costs `[R, C]`, host, any `ld`.
/// @param p the N:M pattern; M must divide C.
/// @returns `[R, C/M]`: entry (i, b) covers columns `[b·M, (b+1)·M)` of row i.
/// Cost: O(R·C·log M) comparisons.
/// @throws logic_error if the pattern is invalid for C (`validate(nm_pattern, cols)`) or a cost is NaN.
inline host_matrix<double> block_costs(host_matrix_view<const double> element_costs, nm_pattern p) {
  validate(p, element_costs.cols());
  detail::expect_no_nan(element_costs, 0, "block_costs");
  const index_t blocks = element_costs.cols() / p.m;
  host_matrix<double> result(element_costs.rows(), blocks);
  std::vector<index_t> order(static_cast<std::size_t>(p.m));
  for (index_t i = 0; i < element_costs.rows(); ++i) {
    for (index_t b = 0; b < blocks; ++b) {
      result(i, b) = detail::block_cost(element_costs.row(i) + b * p.m, p.n, order);
    }
  }
  return result;
}

/// @brief Unstructured selection under one global threshold (METHOD.md §5).
///
/// Prunes exactly k = ⌊s·P⌋ elements (P = Σ R_m·C_m) with the smallest costs over all layers, ties
/// broken by layer, then row-major flat index; `threshold` is the k-th smallest cost τ, so every
/// cost < τ is pruned and, of the costs equal to τ, the first ones in tie order.
/// @param costs per layer `[R_m, C_m]` element costs, host, any `ld` (e.g. from `cpu::element_costs`).
/// @param sparsity target fraction s ∈ [0, 1) of pruned weights over all layers.
/// Cost: five passes over the P costs (a 16-bit radix select, then marking); O(P/64) words for the
/// masks and O(65536) scratch, never a copy of the costs.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1), or a NaN cost.
inline selection select_unstructured(const std::vector<host_matrix_view<const double>>& costs,
                                     double sparsity) {
  detail::expect_selection_inputs(costs, sparsity, "select_unstructured");
  index_t total = 0;
  selection result;
  for (std::size_t m = 0; m < costs.size(); ++m) {
    total += costs[m].size();
    result.masks.emplace_back(costs[m].rows(), costs[m].cols());
  }
  const index_t k = prune_count(sparsity, total);
  const auto visit = [&costs](const auto& f) {
    for (const auto& layer : costs) {
      for (index_t i = 0; i < layer.rows(); ++i) {
        const double* row = layer.row(i);
        for (index_t j = 0; j < layer.cols(); ++j) f(detail::order_key(row[j]));
      }
    }
  };
  // Positions are global flat indices in visiting order; map them back to (layer, i, j).
  std::size_t layer = 0;
  index_t first = 0;
  result.threshold = detail::take_smallest(visit, k, [&](index_t position) {
    while (position >= first + costs[layer].size()) first += costs[layer++].size();
    const index_t flat = position - first;
    result.masks[layer].prune(flat / costs[layer].cols(), flat % costs[layer].cols());
  });
  result.removed = k;
  return result;
}

/// @brief Uniform selection: each layer prunes its own ⌊s·R_m·C_m⌋ smallest costs (the layer-wise
/// allocation of SparseGPT), ties by row-major flat index.
/// @param costs per layer `[R_m, C_m]` element costs, host, any `ld`.
/// @param sparsity target fraction s ∈ [0, 1) of pruned weights in each layer.
/// @returns masks; `threshold` is the largest of the per-layer thresholds.
/// Cost: five passes over each layer's costs.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1), or a NaN cost.
inline selection select_uniform(const std::vector<host_matrix_view<const double>>& costs, double sparsity) {
  detail::expect_selection_inputs(costs, sparsity, "select_uniform");
  selection result;
  for (const auto& layer : costs) {
    mask layer_mask(layer.rows(), layer.cols());
    const index_t k = prune_count(sparsity, layer.size());
    const auto visit = [&layer](const auto& f) {
      for (index_t i = 0; i < layer.rows(); ++i) {
        const double* row = layer.row(i);
        for (index_t j = 0; j < layer.cols(); ++j) f(detail::order_key(row[j]));
      }
    };
    const double tau = detail::take_smallest(
        visit, k, [&](index_t flat) { layer_mask.prune(flat / layer.cols(), flat % layer.cols()); });
    result.threshold = std::max(result.threshold, tau);
    result.removed += k;
    result.masks.push_back(std::move(layer_mask));
  }
  return result;
}

/// @brief Per-row selection: each output row of each layer prunes its own ⌊s·C_m⌋ smallest costs
/// (Wanda's comparison group), ties by column index.
/// @param costs per layer `[R_m, C_m]` element costs, host, any `ld`.
/// @param sparsity target fraction s ∈ [0, 1) of pruned weights in each row of each layer.
/// @returns masks; `threshold` is the largest cost pruned in any row.
/// Cost: O(C_m) expected per row (nth_element) plus O(C_m) scratch.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1), or a NaN cost.
inline selection select_per_row(const std::vector<host_matrix_view<const double>>& costs, double sparsity) {
  detail::expect_selection_inputs(costs, sparsity, "select_per_row");
  selection result;
  std::vector<index_t> order;
  for (const auto& layer : costs) {
    mask layer_mask(layer.rows(), layer.cols());
    const index_t k = prune_count(sparsity, layer.cols());
    order.resize(static_cast<std::size_t>(layer.cols()));
    for (index_t i = 0; i < layer.rows() && k > 0; ++i) {
      const double* row = layer.row(i);
      for (std::size_t j = 0; j < order.size(); ++j) order[j] = static_cast<index_t>(j);
      const auto less = [row](index_t x, index_t y) {
        return row[x] < row[y] || (row[x] == row[y] && x < y);
      };
      std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), less);
      for (index_t t = 0; t < k; ++t) layer_mask.prune(i, order[static_cast<std::size_t>(t)]);
      result.threshold = std::max(result.threshold, row[order[static_cast<std::size_t>(k - 1)]] + 0.0);
    }
    result.removed += k * layer.rows();
    result.masks.push_back(std::move(layer_mask));
  }
  return result;
}

/// @brief Global N:M selection (METHOD.md §5): prunes the ⌊(M/N)·s·B⌋ lowest-cost blocks over all
/// layers (B = Σ R_m·C_m/M blocks; block cost = sum of its N smallest element costs, see
/// `block_costs`), and in each pruned block exactly its N lowest-cost elements (ties by column).
/// s = N/M prunes every block. Block ties are broken by layer, then row-major block index.
/// @param element_costs per layer `[R_m, C_m]` element costs, host, any `ld`; M must divide C_m.
/// @param p the pattern (e.g. 2:4).
/// @param sparsity s ∈ [0, N/M].
/// @returns masks with 0 or N pruned weights in every block; `threshold` is the block-cost τ and
///          `removed` = N·(pruned blocks).
/// Cost: O(P·log M) to cost the blocks, five passes over the B block costs; O(B) doubles of scratch.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1) or above N/M, an invalid
///         pattern for some layer's width, or a NaN cost.
inline selection select_nm(const std::vector<host_matrix_view<const double>>& element_costs, nm_pattern p,
                           double sparsity) {
  detail::expect_layers(element_costs.size(), "select_nm");
  detail::expect_sparsity(sparsity, "select_nm");
  SURGEON_EXPECTS(p.m >= 1 && p.n >= 1 && p.n <= p.m, "select_nm: N:M pattern {}:{} needs 0 < N <= M", p.n,
                  p.m);
  const double n_over_m = static_cast<double>(p.n) / static_cast<double>(p.m);
  SURGEON_EXPECTS(sparsity <= n_over_m * (1.0 + 1e-12), "select_nm: sparsity {} exceeds N/M = {}:{} = {}",
                  sparsity, p.n, p.m, n_over_m);
  std::vector<host_matrix<double>> blocks;
  index_t total_blocks = 0;
  selection result;
  for (std::size_t m = 0; m < element_costs.size(); ++m) {
    SURGEON_EXPECTS(element_costs[m].cols() % p.m == 0,
                    "select_nm: layer {} has {} columns, not a multiple of M = {}", m,
                    element_costs[m].cols(), p.m);
    detail::expect_no_nan(element_costs[m], m, "select_nm");
    blocks.push_back(block_costs(element_costs[m], p));
    total_blocks += blocks.back().size();
    result.masks.emplace_back(element_costs[m].rows(), element_costs[m].cols());
  }
  // ⌊(M/N)·s·B⌋ with the same rounding tolerance as prune_count.
  const double x =
      sparsity * static_cast<double>(p.m) * static_cast<double>(total_blocks) / static_cast<double>(p.n);
  const index_t k = std::min(total_blocks, static_cast<index_t>(std::floor(x + 1e-12 * std::max(1.0, x))));
  const auto visit = [&blocks](const auto& f) {
    for (const auto& layer : blocks) {
      for (const double value : layer.values()) f(detail::order_key(value));
    }
  };
  std::vector<index_t> order(static_cast<std::size_t>(p.m));
  std::size_t layer = 0;
  index_t first = 0;
  result.threshold = detail::take_smallest(visit, k, [&](index_t position) {
    while (position >= first + blocks[layer].size()) first += blocks[layer++].size();
    const index_t flat = position - first;
    const index_t i = flat / blocks[layer].cols();
    const index_t col0 = (flat % blocks[layer].cols()) * p.m;
    detail::sort_block(element_costs[layer].row(i) + col0, order);
    for (index_t t = 0; t < p.n; ++t) result.masks[layer].prune(i, col0 + order[static_cast<std::size_t>(t)]);
  });
  result.removed = k * p.n;
  return result;
}

/// @brief Global row-and-column selection (METHOD.md §5).
///
/// Every row and column of every layer is a candidate with its cost. Walking all candidates in
/// ascending cost (ties: layer, then rows before columns, then index), taking row i of layer m
/// removes `C_m − c_m` more weights and taking a column removes `R_m − r_m` (r_m, c_m = rows and
/// columns of layer m already taken), so the layer has lost `r·C + c·R − r·c`. Candidates are taken
/// while the total removed stays ≤ ⌊s·Σ R_m·C_m⌋; the walk stops at the first candidate that would
/// exceed it, which is the largest τ whose removed count fits the budget.
/// @param row_costs per layer, R_m row costs; @param col_costs per layer, C_m column costs (both host,
///        e.g. from `cpu::row_costs` / `cpu::column_costs`).
/// @param sparsity target fraction s ∈ [0, 1) of pruned weights over all layers.
/// Cost: O(K log K) for K = Σ (R_m + C_m) candidates, plus O(Σ R_m·C_m / 64) to fill the masks.
/// @throws logic_error on an empty layer list, different numbers of row and column lists,
///         sparsity outside [0, 1), or a NaN cost.
inline structured_selection select_rows_columns(const std::vector<std::vector<double>>& row_costs,
                                                const std::vector<std::vector<double>>& col_costs,
                                                double sparsity) {
  detail::expect_layers(row_costs.size(), "select_rows_columns");
  detail::expect_sparsity(sparsity, "select_rows_columns");
  SURGEON_EXPECTS(row_costs.size() == col_costs.size(),
                  "select_rows_columns: {} layers of row costs but {} layers of column costs",
                  row_costs.size(), col_costs.size());
  struct candidate {
    double cost;
    std::size_t layer;
    bool is_col;
    index_t index;
  };
  std::vector<candidate> candidates;
  index_t total = 0;
  for (std::size_t m = 0; m < row_costs.size(); ++m) {
    const auto& rows = row_costs[m];
    const auto& cols = col_costs[m];
    total += static_cast<index_t>(rows.size()) * static_cast<index_t>(cols.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      SURGEON_EXPECTS(!std::isnan(rows[i]), "select_rows_columns: NaN cost of row {} of layer {}", i, m);
      candidates.push_back({rows[i] + 0.0, m, false, static_cast<index_t>(i)});
    }
    for (std::size_t j = 0; j < cols.size(); ++j) {
      SURGEON_EXPECTS(!std::isnan(cols[j]), "select_rows_columns: NaN cost of column {} of layer {}", j, m);
      candidates.push_back({cols[j] + 0.0, m, true, static_cast<index_t>(j)});
    }
  }
  std::sort(candidates.begin(), candidates.end(), [](const candidate& x, const candidate& y) {
    if (x.cost != y.cost) return x.cost < y.cost;
    if (x.layer != y.layer) return x.layer < y.layer;
    if (x.is_col != y.is_col) return !x.is_col;
    return x.index < y.index;
  });
  const index_t budget = prune_count(sparsity, total);
  structured_selection result;
  result.rows.resize(row_costs.size());
  result.cols.resize(row_costs.size());
  for (const candidate& c : candidates) {
    const auto r_total = static_cast<index_t>(row_costs[c.layer].size());
    const auto c_total = static_cast<index_t>(col_costs[c.layer].size());
    const auto r_taken = static_cast<index_t>(result.rows[c.layer].size());
    const auto c_taken = static_cast<index_t>(result.cols[c.layer].size());
    const index_t added = c.is_col ? r_total - r_taken : c_total - c_taken;
    if (result.removed + added > budget) break;
    result.removed += added;
    result.threshold = c.cost;
    (c.is_col ? result.cols : result.rows)[c.layer].push_back(c.index);
  }
  for (std::size_t m = 0; m < row_costs.size(); ++m) {
    std::sort(result.rows[m].begin(), result.rows[m].end());
    std::sort(result.cols[m].begin(), result.cols[m].end());
    mask layer_mask(static_cast<index_t>(row_costs[m].size()), static_cast<index_t>(col_costs[m].size()));
    for (const index_t i : result.rows[m]) layer_mask.prune_row(i);
    for (const index_t j : result.cols[m]) layer_mask.prune_column(j);
    result.masks.push_back(std::move(layer_mask));
  }
  return result;
}

}  // namespace surgeon
