/// @file cuda/select.hpp
/// @brief Mask selection from device costs (METHOD.md §5): the CUDA mirror of select.hpp.
///
/// Every function here takes per-layer costs in device memory (row-major device views, any `ld`,
/// e.g. the output of the CUDA cost kernels) and returns exactly what the host function of the same
/// name returns on the same costs: the same masks bit for bit, the same `threshold` and the same
/// `removed` (the counts ⌊s·P⌋, the tie order "by layer, then row-major flat index / block index /
/// column", cost-0 candidates, the NaN rejection are all the host's). The `*_on_device` variants
/// leave the masks in device memory (`device_mask`, same layout), for the updates that run there;
/// `to_host` brings such a result back.
///
/// **Algorithm.** The host's: a radix select over the order keys of the costs (`order_key`, -0 and +0
/// equal) finds the k-th smallest key τ and how many of the k smallest equal it; when not every
/// candidate equal to τ is taken, a second radix select over the *positions* of those candidates
/// (layer offset + flat index, i.e. tie order) finds the last one taken. A candidate is then taken
/// iff its key is below τ, or equal to τ and at or before that position — exactly the host's choice.
/// Histogram passes (8-bit digits here, 16-bit on the host: the k-th key does not depend on the
/// digit width) run on the device; only their 256 counts come back, so the costs are never copied,
/// sorted or duplicated — a device sort of (key, position) pairs would need about 32 bytes per
/// candidate plus scratch, more than the costs themselves. Keys and counts are exact integers, so
/// the result does not depend on the order in which the device runs the work. The per-row selection
/// runs the same radix select inside one block per row; N:M block costs are summed in the host's
/// order, so they are bit-identical too.
///
/// **Synchronisation.** Everything is enqueued on `ctx.stream()`. Each function synchronizes that
/// stream several times (the NaN check, each radix pass: 8 for the pivot, up to 8 more for the tie
/// position); the `*_on_device` variants return with the marking still in flight, ordered before
/// any later work on the stream. The cost views must be ready for the stream (written on it, or
/// synchronized with it).
///
/// Defined only when `SURGEON_HAS_CUDA` is defined (target `surgeon::cuda`). nvcc translation units
/// only (it launches kernels; they live in detail/select_kernels.cuh); no Eigen.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/detail/select_kernels.cuh>
#include <surgeon/cuda/mask.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/select.hpp>
#include <surgeon/view.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace surgeon::cuda {

/// @brief The result of an element-wise or N:M selection with the masks left in device memory;
/// the fields mean what they mean in `surgeon::selection`.
struct device_selection {
  /// @brief One mask per layer, shaped like that layer's costs; bit set = pruned. Made on the
  /// context passed to the selection (stream-ordered on its stream).
  std::vector<device_mask> masks;
  /// @brief As `surgeon::selection::threshold`; −∞ when nothing was taken.
  double threshold = -std::numeric_limits<double>::infinity();
  /// @brief Number of weights pruned over all layers (= Σ masks[m] pruned bits).
  index_t removed = 0;
};

/// @brief The host copy of a device selection: its masks copied to host memory (all copies are
/// enqueued, then one synchronization of `ctx`'s stream), threshold and removed unchanged.
/// @param ctx the context the masks were made with.
/// @param chosen the device selection to copy; its masks are read, not changed.
/// Cost: Σ rows·ceil(cols/64)·8 bytes copied; one stream synchronization.
/// @throws cuda_error if a copy or the synchronization fails.
inline selection to_host(const context& ctx, const device_selection& chosen) {
  std::vector<std::vector<std::uint64_t>> words(chosen.masks.size());
  try {
    for (std::size_t m = 0; m < chosen.masks.size(); ++m) {
      const device_mask& layer = chosen.masks[m];
      words[m].resize(static_cast<std::size_t>(layer.rows() * layer.words_per_row()));
      if (words[m].empty()) continue;
      SURGEON_CUDA_CHECK(cudaMemcpyAsync(words[m].data(), layer.words(),
                                         words[m].size() * sizeof(std::uint64_t), cudaMemcpyDeviceToHost,
                                         ctx.stream()));
    }
    ctx.synchronize();
  } catch (...) {
    // Copies already enqueued write into `words`: let them land before it is freed.
    static_cast<void>(cudaStreamSynchronize(ctx.stream()));
    throw;
  }
  selection result;
  for (std::size_t m = 0; m < chosen.masks.size(); ++m) {
    const device_mask& layer = chosen.masks[m];
    result.masks.push_back(mask::from_words(layer.rows(), layer.cols(), std::move(words[m])));
  }
  result.threshold = chosen.threshold;
  result.removed = chosen.removed;
  return result;
}

namespace detail {

/// The candidates of one layer: a row-major `[rows, cols]` matrix of costs (device, leading
/// dimension `ld`); candidate (i, j) has global position `offset + i·cols + j`.
struct select_layer {
  const double* costs = nullptr;
  index_t rows = 0;
  index_t cols = 0;
  index_t ld = 0;
  std::uint64_t offset = 0;
};

/// Which candidates are taken: those with key < `pivot`, and those with key == `pivot` at a position
/// <= `cut` (the maximum when every tie is taken).
struct select_cut {
  std::uint64_t pivot = 0;
  std::uint64_t cut = 0;
};

/// Throws logic_error naming the first NaN (row-major, lowest layer first) of `costs`, as
/// `surgeon::detail::expect_no_nan` does. Cost: one pass over the costs, one synchronization.
inline void select_expect_no_nan(const context& ctx,
                                 const std::vector<device_matrix_view<const double>>& costs,
                                 const char* who) {
  constexpr unsigned long long none = ~0ull;
  device_buffer<unsigned long long> first(ctx, static_cast<index_t>(costs.size()));
  SURGEON_CUDA_CHECK(cudaMemsetAsync(first.data(), 0xFF, first.size_bytes(), ctx.stream()));  // = none
  for (std::size_t m = 0; m < costs.size(); ++m) {
    const auto& layer = costs[m];
    launch_select_first_nan(layer.data(), layer.rows(), layer.cols(), layer.ld(),
                            first.data() + static_cast<std::ptrdiff_t>(m), ctx.stream());
  }
  const std::vector<unsigned long long> found = first.to_host();
  for (std::size_t m = 0; m < costs.size(); ++m) {
    if (found[m] == none) continue;
    const auto flat = static_cast<index_t>(found[m]);
    SURGEON_THROW(logic_error, "{}: NaN cost at ({}, {}) of layer {}", who, flat / costs[m].cols(),
                  flat % costs[m].cols(), m);
  }
}

/// The digit holding the `rank`-th (0-based) counted candidate, and the rank within it, as in
/// `surgeon::detail::kth_smallest_key`.
inline int select_pick_digit(const std::vector<unsigned long long>& histogram, index_t& rank) {
  int digit = 0;
  for (; digit + 1 < select_bins; ++digit) {
    const auto count = static_cast<index_t>(histogram[static_cast<std::size_t>(digit)]);
    if (rank < count) break;
    rank -= count;
  }
  return digit;
}

/// The cut that takes the k smallest of the `total` candidates of `layers` in tie order
/// (1 <= k <= total). Cost: 8 histogram passes over the candidates, plus one per byte of `total − 1`
/// over the ties when some but not all candidates equal to the pivot are taken; one synchronization and
/// 2 KiB of transfer per pass.
inline select_cut select_smallest_cut(const context& ctx, const std::vector<select_layer>& layers,
                                      index_t total, index_t k) {
  device_buffer<unsigned long long> histogram(ctx, select_bins);
  std::vector<unsigned long long> counts(static_cast<std::size_t>(select_bins));
  // One radix select; `by_position` selects among the candidates equal to `pivot` by position.
  const auto radix_select = [&](bool by_position, std::uint64_t pivot, int top_shift, index_t& rank,
                                index_t& last_count) {
    std::uint64_t prefix = 0;
    std::uint64_t known = 0;
    for (int shift = top_shift; shift >= 0; shift -= 8) {
      histogram.fill_zero();
      for (const select_layer& layer : layers) {
        if (by_position) {
          launch_select_histogram<double, true>(layer.costs, layer.rows, layer.cols, layer.ld, layer.offset,
                                                pivot, prefix, known, shift, histogram.data(), ctx.stream());
        } else {
          launch_select_histogram<double, false>(layer.costs, layer.rows, layer.cols, layer.ld, layer.offset,
                                                 pivot, prefix, known, shift, histogram.data(), ctx.stream());
        }
      }
      histogram.copy_to_host_sync(counts.data(), select_bins);
      const int digit = select_pick_digit(counts, rank);
      last_count = static_cast<index_t>(counts[static_cast<std::size_t>(digit)]);
      prefix |= static_cast<std::uint64_t>(digit) << shift;
      known |= std::uint64_t{0xFF} << shift;
    }
    return prefix;
  };
  select_cut result;
  index_t rank = k - 1;
  index_t ties = 0;  // after the last pass: the number of candidates whose key equals the pivot
  result.pivot = radix_select(false, 0, 56, rank, ties);
  const index_t ties_taken = rank + 1;
  if (ties_taken == ties) {
    result.cut = std::numeric_limits<std::uint64_t>::max();
    return result;
  }
  // Positions are below `total`: only their low bytes need passes.
  int top_shift = 0;
  for (auto rest = static_cast<std::uint64_t>(total - 1) >> 8; rest != 0; rest >>= 8) top_shift += 8;
  index_t position_rank = ties_taken - 1;
  index_t unused = 0;
  result.cut = radix_select(true, result.pivot, top_shift, position_rank, unused);
  return result;
}

/// Element layers of `costs` with consecutive global offsets; `total` receives Σ R_m·C_m.
inline std::vector<select_layer> select_element_layers(
    const std::vector<device_matrix_view<const double>>& costs, index_t& total) {
  std::vector<select_layer> layers;
  total = 0;
  for (const auto& c : costs) {
    layers.push_back({c.data(), c.rows(), c.cols(), c.ld(), static_cast<std::uint64_t>(total)});
    total += c.size();
  }
  return layers;
}

/// Fresh (all kept) device masks shaped like `costs`.
inline std::vector<device_mask> select_empty_masks(
    const context& ctx, const std::vector<device_matrix_view<const double>>& costs) {
  std::vector<device_mask> masks;
  masks.reserve(costs.size());
  for (const auto& c : costs) masks.emplace_back(ctx, c.rows(), c.cols());
  return masks;
}

/// Takes the k smallest elements of `layers` (tie order: layer, then row-major flat index) into
/// the zeroed `masks[0, layers.size())` (writing every word); returns the threshold (−∞ for k = 0).
inline double select_take_smallest(const context& ctx, const std::vector<select_layer>& layers, index_t total,
                                   index_t k, device_mask* masks) {
  if (k <= 0) return -std::numeric_limits<double>::infinity();
  const select_cut cut = select_smallest_cut(ctx, layers, total, k);
  for (std::size_t m = 0; m < layers.size(); ++m) {
    const select_layer& layer = layers[m];
    launch_select_mark_elements(layer.costs, layer.rows, layer.cols, layer.ld, layer.offset, cut.pivot,
                                cut.cut, masks[m].words_per_row(), masks[m].words(), ctx.stream());
  }
  return ::surgeon::detail::from_order_key(cut.pivot);
}

}  // namespace detail

/// @brief `select_unstructured` with the masks left on the device: prunes exactly k = ⌊s·P⌋
/// elements (P = Σ R_m·C_m) with the smallest costs over all layers, ties by layer, then row-major
/// flat index; `threshold` is the k-th smallest cost.
/// @param ctx the context; everything runs on its stream, the masks are made on it.
/// @param costs per layer `[R_m, C_m]` element costs, device, any `ld`.
/// @param sparsity target fraction s ∈ [0, 1) of pruned weights over all layers.
/// Cost: one NaN pass, 8 (up to 16 with ties at τ) histogram passes and one marking pass over the
/// P costs, each pass one launch per layer, each histogram pass one synchronization; device memory
/// O(P/64) words for the masks plus 2 KiB, never a copy of the costs.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1), or a NaN cost;
///         cuda_error on a CUDA failure.
inline device_selection select_unstructured_on_device(
    const context& ctx, const std::vector<device_matrix_view<const double>>& costs, double sparsity) {
  ::surgeon::detail::expect_layers(costs.size(), "select_unstructured");
  ::surgeon::detail::expect_sparsity(sparsity, "select_unstructured");
  detail::select_expect_no_nan(ctx, costs, "select_unstructured");
  index_t total = 0;
  const std::vector<detail::select_layer> layers = detail::select_element_layers(costs, total);
  device_selection result;
  result.masks = detail::select_empty_masks(ctx, costs);
  const index_t k = prune_count(sparsity, total);
  result.threshold = detail::select_take_smallest(ctx, layers, total, k, result.masks.data());
  result.removed = k;
  return result;
}

/// @brief Unstructured selection under one global threshold, from device costs: the result of
/// `surgeon::select_unstructured` on the same costs, bit for bit.
/// @param ctx the context; @param costs per layer `[R_m, C_m]`, device, any `ld`;
/// @param sparsity s ∈ [0, 1).
/// Cost: as `select_unstructured_on_device`, plus copying the masks to the host.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1), or a NaN cost;
///         cuda_error on a CUDA failure.
inline selection select_unstructured(const context& ctx,
                                     const std::vector<device_matrix_view<const double>>& costs,
                                     double sparsity) {
  return to_host(ctx, select_unstructured_on_device(ctx, costs, sparsity));
}

/// @brief `select_uniform` with the masks left on the device: each layer prunes its own
/// ⌊s·R_m·C_m⌋ smallest costs, ties by row-major flat index; `threshold` is the largest of the
/// per-layer thresholds.
/// @param ctx the context; @param costs per layer `[R_m, C_m]`, device, any `ld`;
/// @param sparsity s ∈ [0, 1).
/// Cost: per layer, 8 (up to 16) histogram passes and one marking pass, each with one
/// synchronization; device memory as `select_unstructured_on_device`.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1), or a NaN cost;
///         cuda_error on a CUDA failure.
inline device_selection select_uniform_on_device(const context& ctx,
                                                 const std::vector<device_matrix_view<const double>>& costs,
                                                 double sparsity) {
  ::surgeon::detail::expect_layers(costs.size(), "select_uniform");
  ::surgeon::detail::expect_sparsity(sparsity, "select_uniform");
  detail::select_expect_no_nan(ctx, costs, "select_uniform");
  device_selection result;
  result.masks = detail::select_empty_masks(ctx, costs);
  for (std::size_t m = 0; m < costs.size(); ++m) {
    const auto& c = costs[m];
    const index_t k = prune_count(sparsity, c.size());
    // A one-layer candidate list: positions are the layer's own flat indices.
    const std::vector<detail::select_layer> layer = {{c.data(), c.rows(), c.cols(), c.ld(), 0}};
    const double tau = detail::select_take_smallest(ctx, layer, c.size(), k, &result.masks[m]);
    result.threshold = std::max(result.threshold, tau);
    result.removed += k;
  }
  return result;
}

/// @brief Uniform (per-layer) selection from device costs: the result of `surgeon::select_uniform`
/// on the same costs, bit for bit.
/// @param ctx the context; @param costs per layer `[R_m, C_m]`, device, any `ld`;
/// @param sparsity s ∈ [0, 1).
/// Cost: as `select_uniform_on_device`, plus copying the masks to the host.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1), or a NaN cost;
///         cuda_error on a CUDA failure.
inline selection select_uniform(const context& ctx,
                                const std::vector<device_matrix_view<const double>>& costs, double sparsity) {
  return to_host(ctx, select_uniform_on_device(ctx, costs, sparsity));
}

/// @brief `select_per_row` with the masks left on the device: each output row of each layer prunes
/// its own ⌊s·C_m⌋ smallest costs (Wanda's comparison group), ties by column index; `threshold` is
/// the largest cost pruned in any row.
/// @param ctx the context; @param costs per layer `[R_m, C_m]`, device, any `ld`;
/// @param sparsity s ∈ [0, 1).
/// Cost: one block per row, 9 passes over the row (radix select, then marking); one launch per
/// layer and one synchronization in all (after the NaN check's); no scratch beyond 8 bytes.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1), or a NaN cost;
///         cuda_error on a CUDA failure.
inline device_selection select_per_row_on_device(const context& ctx,
                                                 const std::vector<device_matrix_view<const double>>& costs,
                                                 double sparsity) {
  ::surgeon::detail::expect_layers(costs.size(), "select_per_row");
  ::surgeon::detail::expect_sparsity(sparsity, "select_per_row");
  detail::select_expect_no_nan(ctx, costs, "select_per_row");
  device_selection result;
  result.masks = detail::select_empty_masks(ctx, costs);
  // The largest per-row pivot key; 0 is no key of a non-NaN double, so it stands for "none".
  device_buffer<unsigned long long> max_key(ctx, 1);
  max_key.fill_zero();
  for (std::size_t m = 0; m < costs.size(); ++m) {
    const auto& c = costs[m];
    const index_t k = prune_count(sparsity, c.cols());
    detail::launch_select_per_row(c.data(), c.rows(), c.cols(), c.ld(), k, result.masks[m].words_per_row(),
                                  result.masks[m].words(), max_key.data(), ctx.stream());
    result.removed += k * c.rows();
  }
  unsigned long long key = 0;
  max_key.copy_to_host_sync(&key, 1);
  if (key != 0) result.threshold = ::surgeon::detail::from_order_key(key);
  return result;
}

/// @brief Per-row selection from device costs: the result of `surgeon::select_per_row` on the same
/// costs, bit for bit.
/// @param ctx the context; @param costs per layer `[R_m, C_m]`, device, any `ld`;
/// @param sparsity s ∈ [0, 1).
/// Cost: as `select_per_row_on_device`, plus copying the masks to the host.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1), or a NaN cost;
///         cuda_error on a CUDA failure.
inline selection select_per_row(const context& ctx,
                                const std::vector<device_matrix_view<const double>>& costs, double sparsity) {
  return to_host(ctx, select_per_row_on_device(ctx, costs, sparsity));
}

/// @brief N:M block costs of one layer on the device: `out(i, b)` = the sum of the N smallest
/// element costs of columns `[b·M, (b+1)·M)` of row i, added in ascending order — bit-identical to
/// `surgeon::block_costs`.
/// @param ctx the context; @param element_costs `[R, C]`, device, any `ld`;
/// @param p the pattern; @param out `[R, C/M]`, device, any `ld`, written (must not overlap
///        `element_costs`).
/// Enqueued on `ctx.stream()`; returns after the NaN check (one synchronization) with the block
/// kernel in flight. Cost: O(R·C·N) loads; no scratch beyond 8 bytes.
/// @throws logic_error if the pattern is invalid for C (`validate(p, cols)`), `out` is not
///         `[R, C/M]`, or a cost is NaN; cuda_error on a CUDA failure.
inline void block_costs(const context& ctx, device_matrix_view<const double> element_costs, nm_pattern p,
                        device_matrix_view<double> out) {
  ::surgeon::validate(p, element_costs.cols());
  SURGEON_EXPECTS(out.rows() == element_costs.rows() && out.cols() == element_costs.cols() / p.m,
                  "block_costs: output [{}, {}] for [{}, {}] costs and M = {} (needs [{}, {}])", out.rows(),
                  out.cols(), element_costs.rows(), element_costs.cols(), p.m, element_costs.rows(),
                  element_costs.cols() / p.m);
  detail::select_expect_no_nan(ctx, {element_costs}, "block_costs");
  detail::launch_select_block_costs(element_costs.data(), element_costs.rows(), element_costs.cols(),
                                    element_costs.ld(), p.m, p.n, out.data(), out.ld(), ctx.stream());
}

/// @brief `select_nm` with the masks left on the device: prunes the ⌊(M/N)·s·B⌋ lowest-cost blocks
/// over all layers (B = Σ R_m·C_m/M; block cost as `block_costs`), ties by layer, then row-major
/// block index, and in each pruned block its N lowest-cost elements (ties by column).
/// @param ctx the context; @param element_costs per layer `[R_m, C_m]`, device, any `ld`; M must
///        divide C_m; @param p the pattern (e.g. 2:4); @param sparsity s ∈ [0, N/M].
/// @returns masks with 0 or N pruned weights in every block; `threshold` is the block-cost τ and
///          `removed` = N·(pruned blocks).
/// Cost: O(P·N) loads to cost the blocks, 8 (up to 16) histogram passes over the B block costs,
/// one marking pass of O(P·M) loads; device memory B doubles for the block costs (freed on return,
/// stream-ordered) plus the masks.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1) or above N/M, an invalid
///         pattern for some layer's width, or a NaN cost; cuda_error on a CUDA failure.
inline device_selection select_nm_on_device(
    const context& ctx, const std::vector<device_matrix_view<const double>>& element_costs, nm_pattern p,
    double sparsity) {
  ::surgeon::detail::expect_layers(element_costs.size(), "select_nm");
  ::surgeon::detail::expect_sparsity(sparsity, "select_nm");
  SURGEON_EXPECTS(p.m >= 1 && p.n >= 1 && p.n <= p.m, "select_nm: N:M pattern {}:{} needs 0 < N <= M", p.n,
                  p.m);
  const double n_over_m = static_cast<double>(p.n) / static_cast<double>(p.m);
  SURGEON_EXPECTS(sparsity <= n_over_m * (1.0 + 1e-12), "select_nm: sparsity {} exceeds N/M = {}:{} = {}",
                  sparsity, p.n, p.m, n_over_m);
  for (std::size_t m = 0; m < element_costs.size(); ++m) {
    SURGEON_EXPECTS(element_costs[m].cols() % p.m == 0,
                    "select_nm: layer {} has {} columns, not a multiple of M = {}", m,
                    element_costs[m].cols(), p.m);
  }
  detail::select_expect_no_nan(ctx, element_costs, "select_nm");
  std::vector<device_buffer<double>> blocks;
  std::vector<detail::select_layer> layers;
  index_t total_blocks = 0;
  for (const auto& c : element_costs) {
    const index_t per_row = c.cols() / p.m;
    blocks.emplace_back(ctx, c.rows() * per_row);
    detail::launch_select_block_costs(c.data(), c.rows(), c.cols(), c.ld(), p.m, p.n, blocks.back().data(),
                                      per_row, ctx.stream());
    layers.push_back(
        {blocks.back().data(), c.rows(), per_row, per_row, static_cast<std::uint64_t>(total_blocks)});
    total_blocks += c.rows() * per_row;
  }
  device_selection result;
  result.masks = detail::select_empty_masks(ctx, element_costs);
  // ⌊(M/N)·s·B⌋ with the same rounding tolerance, written as the host writes it (same rounding).
  const double x =
      sparsity * static_cast<double>(p.m) * static_cast<double>(total_blocks) / static_cast<double>(p.n);
  const index_t k = std::min(total_blocks, static_cast<index_t>(std::floor(x + 1e-12 * std::max(1.0, x))));
  if (k > 0) {
    const detail::select_cut cut = detail::select_smallest_cut(ctx, layers, total_blocks, k);
    for (std::size_t m = 0; m < element_costs.size(); ++m) {
      const auto& c = element_costs[m];
      detail::launch_select_mark_nm(c.data(), c.rows(), c.cols(), c.ld(), blocks[m].data(), p.m, p.n,
                                    layers[m].offset, cut.pivot, cut.cut, result.masks[m].words_per_row(),
                                    result.masks[m].words(), ctx.stream());
    }
    result.threshold = ::surgeon::detail::from_order_key(cut.pivot);
  }
  result.removed = k * p.n;
  return result;
}

/// @brief Global N:M selection from device costs: the result of `surgeon::select_nm` on the same
/// costs, bit for bit.
/// @param ctx the context; @param element_costs per layer `[R_m, C_m]`, device, any `ld`;
/// @param p the pattern; @param sparsity s ∈ [0, N/M].
/// Cost: as `select_nm_on_device`, plus copying the masks to the host.
/// @throws logic_error on an empty layer list, sparsity outside [0, 1) or above N/M, an invalid
///         pattern for some layer's width, or a NaN cost; cuda_error on a CUDA failure.
inline selection select_nm(const context& ctx,
                           const std::vector<device_matrix_view<const double>>& element_costs, nm_pattern p,
                           double sparsity) {
  return to_host(ctx, select_nm_on_device(ctx, element_costs, p, sparsity));
}

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
