/// @file driver/distribution.hpp
/// @brief What a pruning run over several processes adds to the driver (METHOD.md §10): which
/// process owns each matrix (`plan_owners`), the sums of the processes' factor accumulators
/// (`reduce_factor_state`), and the global selections computed where the costs are, without
/// gathering them (`select_*_across`). Backend-neutral and free of Eigen; the communicator is
/// distributed/communicator.hpp.
///
/// The selections return the same masks as their single-process counterparts in select.hpp would
/// for the same costs (the same threshold and the same tie order: layer, then index), each process
/// holding the masks of the layers it owns (the others' masks are empty). Element and N:M costs
/// stay where they were computed: a 16-bit radix select needs four all-reduces of a 65536-entry
/// histogram plus one of a count per layer. Row and column costs (R + C per layer, a few per
/// thousand of the weights) are summed to every process, which then runs the single-process
/// selection itself.
#pragma once

#include <surgeon/distributed/communicator.hpp>
#include <surgeon/driver/calibration.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/select.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <optional>
#include <utility>
#include <vector>

namespace surgeon {

/// @brief The work of one matrix `[rows, cols]` in a shot, for balancing: the eigendecompositions
/// and inverses of both factors (rows³ + cols³) and the costs and update (rows·cols·(rows + cols)).
/// O(1).
inline double matrix_work(index_t rows, index_t cols) {
  const double r = static_cast<double>(rows);
  const double c = static_cast<double>(cols);
  return r * r * r + c * c * c + r * c * (r + c);
}

/// @brief The owner process of each matrix: longest-processing-time bin packing of `matrix_work`
/// (largest first, each to the least-loaded process; ties to the lower rank), so that the
/// factorisations, costs and updates, and with them the factor memory, split about evenly. With
/// `groups` (the session's calibration groups, run one after the other), each group is packed in
/// turn and its matrices go to distinct processes first, so that a group's updates run side by
/// side; the loads carry over from group to group. The same on every process (it depends on the
/// shapes and groups only). Cost: O(n log n + n·ranks).
/// @throws logic_error if `ranks` < 1 or a group names a matrix that does not exist.
inline std::vector<int> plan_owners(const std::vector<prunable_matrix>& matrices, int ranks,
                                    const std::vector<std::vector<std::size_t>>& groups = {}) {
  SURGEON_EXPECTS(ranks >= 1, "plan_owners: {} processes", ranks);
  const auto work = [&](std::size_t k) {
    return matrix_work(matrices[k].weight.rows(), matrices[k].weight.cols());
  };
  std::vector<std::vector<std::size_t>> packs = groups;
  if (packs.empty()) {
    packs.emplace_back(matrices.size());
    std::iota(packs.front().begin(), packs.front().end(), std::size_t{0});
  }
  std::vector<double> load(static_cast<std::size_t>(ranks), 0.0);
  std::vector<int> owner(matrices.size(), 0);
  for (std::vector<std::size_t> pack : packs) {
    for (const std::size_t k : pack) {
      SURGEON_EXPECTS(k < matrices.size(), "plan_owners: matrix {} of {}", k, matrices.size());
    }
    std::stable_sort(pack.begin(), pack.end(),
                     [&](std::size_t x, std::size_t y) { return work(x) > work(y); });
    std::vector<int> taken(static_cast<std::size_t>(ranks), 0);  // matrices of this pack per process
    for (const std::size_t k : pack) {
      std::size_t best = 0;
      for (std::size_t r = 1; r < load.size(); ++r) {
        if (taken[r] < taken[best] || (taken[r] == taken[best] && load[r] < load[best])) best = r;
      }
      owner[k] = static_cast<int>(best);
      load[best] += work(k);
      ++taken[best];
    }
  }
  return owner;
}

namespace detail {

/// Sums an accumulator's state over the group: `n` doubles at `values` (or, with `lower`, the
/// lower triangle of a column-major n×n state, packed column by column into pieces of at most
/// 2²² doubles so that the zeros above the diagonal are not sent), and the token count. The sum
/// lands at `root`, or at every process without one; the count at every process.
inline void reduce_factor_state(communicator& comm, double* values, index_t n, bool lower,
                                std::int64_t& count, std::optional<int> root) {
  const auto reduce = [&](double* data, std::size_t size) {
    if (root) {
      comm.reduce_sum(data, size, *root);
    } else {
      comm.all_reduce_sum(data, size);
    }
  };
  if (!lower) {
    reduce(values, static_cast<std::size_t>(n));
  } else {
    constexpr std::size_t piece = std::size_t{1} << 22;
    std::vector<double> packed;
    index_t column = 0;
    while (column < n) {
      // Columns [column, end) whose lower parts fit one piece (at least one column).
      packed.clear();
      index_t end = column;
      while (end < n && (end == column || packed.size() + static_cast<std::size_t>(n - end) <= piece)) {
        const double* first = values + end * n + end;
        packed.insert(packed.end(), first, first + (n - end));
        ++end;
      }
      reduce(packed.data(), packed.size());
      std::size_t at = 0;
      for (index_t j = column; j < end; ++j) {
        std::copy(packed.begin() + static_cast<std::ptrdiff_t>(at),
                  packed.begin() + static_cast<std::ptrdiff_t>(at + static_cast<std::size_t>(n - j)),
                  values + j * n + j);
        at += static_cast<std::size_t>(n - j);
      }
      column = end;
    }
  }
  comm.all_reduce_sum(&count, 1);
}

/// Takes the k smallest of candidates spread over the processes, in the tie order of
/// `take_smallest` (layer, then row-major index): layer l's candidates are `layers[l]`, present on
/// its owner only (`owned[l]`). `take(l, flat)` is called on the owner for every candidate taken.
/// Returns the k-th smallest value (−∞ for k = 0), the same on every process.
template <typename Take>
double take_smallest_across(communicator& comm, const std::vector<host_matrix_view<const double>>& layers,
                            const std::vector<bool>& owned, index_t k, const Take& take) {
  if (k <= 0) return -std::numeric_limits<double>::infinity();
  const auto visit_owned = [&](const auto& f) {
    for (std::size_t l = 0; l < layers.size(); ++l) {
      if (!owned[l]) continue;
      for (index_t i = 0; i < layers[l].rows(); ++i) {
        const double* row = layers[l].row(i);
        for (index_t j = 0; j < layers[l].cols(); ++j) f(l, i * layers[l].cols() + j, order_key(row[j]));
      }
    }
  };
  // The 16-bit radix select of `kth_smallest_key`, each pass's histogram summed over the group.
  std::vector<std::int64_t> histogram(std::size_t{1} << 16);
  std::uint64_t prefix = 0;
  std::uint64_t known = 0;
  std::int64_t rank = k - 1;
  for (int shift = 48; shift >= 0; shift -= 16) {
    std::fill(histogram.begin(), histogram.end(), std::int64_t{0});
    visit_owned([&](std::size_t, index_t, std::uint64_t key) {
      if ((key & known) == prefix) ++histogram[static_cast<std::size_t>((key >> shift) & 0xFFFFu)];
    });
    comm.all_reduce_sum(histogram.data(), histogram.size());
    std::size_t digit = 0;
    for (; digit + 1 < histogram.size(); ++digit) {
      if (rank < histogram[digit]) break;
      rank -= histogram[digit];
    }
    prefix |= static_cast<std::uint64_t>(digit) << shift;
    known |= std::uint64_t{0xFFFF} << shift;
  }
  const std::uint64_t pivot = prefix;
  // Of the candidates equal to the pivot, the first rank + 1 in tie order are taken: count them
  // per layer over the group, then hand each layer its part in layer order.
  std::vector<std::int64_t> equal(layers.size(), 0);
  visit_owned([&](std::size_t l, index_t, std::uint64_t key) { equal[l] += key == pivot ? 1 : 0; });
  comm.all_reduce_sum(equal.data(), equal.size());
  std::int64_t equal_left = rank + 1;
  for (std::int64_t& e : equal) {
    e = std::min(e, equal_left);
    equal_left -= e;
  }
  visit_owned([&](std::size_t l, index_t flat, std::uint64_t key) {
    if (key < pivot || (key == pivot && equal[l] > 0)) {
      if (key == pivot) --equal[l];
      take(l, flat);
    }
  });
  return from_order_key(pivot);
}

/// Empty masks `[rows[l], cols[l]]` for every layer.
inline std::vector<mask> empty_masks(const std::vector<index_t>& rows, const std::vector<index_t>& cols) {
  std::vector<mask> masks;
  masks.reserve(rows.size());
  for (std::size_t l = 0; l < rows.size(); ++l) masks.emplace_back(rows[l], cols[l]);
  return masks;
}

}  // namespace detail

/// @brief The layers' shapes and where their costs are, for the selections across processes:
/// layer l is `[rows[l], cols[l]]`, its costs live on the process with `owned[l]` true.
struct distributed_layers {
  std::vector<index_t> rows;  ///< R_l of every layer
  std::vector<index_t> cols;  ///< C_l of every layer
  std::vector<bool> owned;    ///< true where this process holds layer l's costs
};

/// @brief `select_unstructured` over layers whose costs are spread over the processes: the same
/// masks (each on its layer's owner), threshold and count. `costs[l]` is read only where owned.
/// Cost: five passes over the owned costs, four all-reduces of 65536 counts and one of a count per
/// layer.
/// @throws logic_error on a sparsity outside [0, 1) or a NaN cost.
inline selection select_unstructured_across(communicator& comm,
                                            const std::vector<host_matrix_view<const double>>& costs,
                                            const distributed_layers& layers, double sparsity) {
  detail::expect_sparsity(sparsity, "select_unstructured");
  index_t total = 0;
  for (std::size_t l = 0; l < layers.rows.size(); ++l) {
    total += layers.rows[l] * layers.cols[l];
    if (layers.owned[l]) detail::expect_no_nan(costs[l], l, "select_unstructured");
  }
  selection result;
  result.masks = detail::empty_masks(layers.rows, layers.cols);
  const index_t k = prune_count(sparsity, total);
  result.threshold =
      detail::take_smallest_across(comm, costs, layers.owned, k, [&](std::size_t l, index_t flat) {
        result.masks[l].prune(flat / layers.cols[l], flat % layers.cols[l]);
      });
  result.removed = k;
  return result;
}

/// @brief `select_nm` over layers whose costs are spread over the processes (block costs on the
/// owners, the block threshold across processes). Cost: as `select_nm` on the owned layers, plus
/// the all-reduces of `select_unstructured_across`.
/// @throws logic_error as `select_nm`.
inline selection select_nm_across(communicator& comm,
                                  const std::vector<host_matrix_view<const double>>& costs,
                                  const distributed_layers& layers, nm_pattern p, double sparsity) {
  detail::expect_sparsity(sparsity, "select_nm");
  SURGEON_EXPECTS(p.m >= 1 && p.n >= 1 && p.n <= p.m, "select_nm: N:M pattern {}:{} needs 0 < N <= M", p.n,
                  p.m);
  const double n_over_m = static_cast<double>(p.n) / static_cast<double>(p.m);
  SURGEON_EXPECTS(sparsity <= n_over_m * (1.0 + 1e-12), "select_nm: sparsity {} exceeds N/M = {}:{} = {}",
                  sparsity, p.n, p.m, n_over_m);
  std::vector<host_matrix<double>> blocks(layers.rows.size());
  std::vector<host_matrix_view<const double>> block_views(layers.rows.size());
  index_t total_blocks = 0;
  for (std::size_t l = 0; l < layers.rows.size(); ++l) {
    SURGEON_EXPECTS(layers.cols[l] % p.m == 0, "select_nm: layer {} has {} columns, not a multiple of M = {}",
                    l, layers.cols[l], p.m);
    total_blocks += layers.rows[l] * (layers.cols[l] / p.m);
    if (!layers.owned[l]) continue;
    detail::expect_no_nan(costs[l], l, "select_nm");
    blocks[l] = block_costs(costs[l], p);
    block_views[l] = blocks[l].view();
  }
  selection result;
  result.masks = detail::empty_masks(layers.rows, layers.cols);
  const double x =
      sparsity * static_cast<double>(p.m) * static_cast<double>(total_blocks) / static_cast<double>(p.n);
  const index_t k = std::min(total_blocks, static_cast<index_t>(std::floor(x + 1e-12 * std::max(1.0, x))));
  std::vector<index_t> order(static_cast<std::size_t>(p.m));
  result.threshold =
      detail::take_smallest_across(comm, block_views, layers.owned, k, [&](std::size_t l, index_t flat) {
        const index_t i = flat / blocks[l].cols();
        const index_t col0 = (flat % blocks[l].cols()) * p.m;
        detail::sort_block(costs[l].row(i) + col0, order);
        for (index_t t = 0; t < p.n; ++t) result.masks[l].prune(i, col0 + order[static_cast<std::size_t>(t)]);
      });
  result.removed = k * p.n;
  return result;
}

/// @brief `select_per_row` over layers spread over the processes: each owner selects its rows;
/// the threshold is the maximum over the group, `removed` the sum. Cost: as `select_per_row` on
/// the owned layers, plus two all-reduces of one value.
/// @throws logic_error on a sparsity outside [0, 1) or a NaN cost.
inline selection select_per_row_across(communicator& comm,
                                       const std::vector<host_matrix_view<const double>>& costs,
                                       const distributed_layers& layers, double sparsity) {
  detail::expect_sparsity(sparsity, "select_per_row");
  selection result;
  result.masks = detail::empty_masks(layers.rows, layers.cols);
  std::int64_t removed = 0;
  for (std::size_t l = 0; l < layers.rows.size(); ++l) {
    if (!layers.owned[l]) continue;
    selection one = select_per_row({costs[l]}, sparsity);
    result.masks[l] = std::move(one.masks.front());
    result.threshold = std::max(result.threshold, one.threshold);
    removed += one.removed;
  }
  comm.all_reduce_sum(&removed, 1);
  comm.all_reduce_max(&result.threshold, 1);
  result.removed = removed;
  return result;
}

/// @brief Row or column costs of every layer on every process: `lines[l]` holds `sizes[l]` costs
/// on the owner of layer l (empty elsewhere); afterwards every process holds all of them. One
/// all-reduce of Σ sizes doubles (each entry is the owner's value plus zeros, so exact).
inline void share_line_costs(communicator& comm, std::vector<std::vector<double>>& lines,
                             const std::vector<index_t>& sizes, const std::vector<bool>& owned) {
  std::vector<double> flat;
  for (std::size_t l = 0; l < sizes.size(); ++l) {
    if (owned[l]) {
      SURGEON_EXPECTS(static_cast<index_t>(lines[l].size()) == sizes[l],
                      "share_line_costs: layer {} has {} costs, not {}", l, lines[l].size(), sizes[l]);
      flat.insert(flat.end(), lines[l].begin(), lines[l].end());
    } else {
      flat.insert(flat.end(), static_cast<std::size_t>(sizes[l]), 0.0);
    }
  }
  comm.all_reduce_sum(flat.data(), flat.size());
  std::size_t at = 0;
  for (std::size_t l = 0; l < sizes.size(); ++l) {
    lines[l].assign(flat.begin() + static_cast<std::ptrdiff_t>(at),
                    flat.begin() + static_cast<std::ptrdiff_t>(at + static_cast<std::size_t>(sizes[l])));
    at += static_cast<std::size_t>(sizes[l]);
  }
}

}  // namespace surgeon
