/// @file cuda/update.hpp
/// @brief CUDA optimal-brain-surgeon weight updates on a Kronecker curvature (METHOD.md §4): row
/// sets, column sets, rows then columns, correlated element sets chunk by chunk in the sparse-row
/// form, and the whole mask at once by preconditioned conjugate gradients. The mirror of
/// cpu/update.hpp: same formulas, same results up to rounding, same exceptions.
///
/// Every update works on the live sub-layer of the device `kronecker_curvature`, gathered once into
/// a packed column-major double matrix (the layout cuBLAS and cuSOLVER take directly); dead rows
/// and columns of the weights are written as exactly 0, and the result is rounded to the weights'
/// type once at the end. Dense products are DGEMMs, systems are solved by Cholesky (`potrf`/`potrs`)
/// with an LU fallback (`getrf`/`getrs`) when a system is not numerically positive definite (the
/// CPU falls back to LDLᵀ).
///
/// Difference from the CPU: every chunk of `obs_update` is solved directly (`correlate::method` is
/// ignored): a dense Cholesky of a few thousand unknowns is a few milliseconds on a GPU, while the
/// CPU's iterative chunk solver exists to avoid that cost on 2 cores.
///
/// Masks come in as host `surgeon::mask` (the chunking is planned on the host); the weights stay on
/// the device. nvcc translation units only; no Eigen. Defined only when `SURGEON_HAS_CUDA` is defined.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/cost.hpp>
#include <surgeon/cuda/curvature.hpp>
#include <surgeon/cuda/detail/layer_kernels.cuh>
#include <surgeon/cuda/detail/solver.hpp>
#include <surgeon/cuda/detail/whole_mask.hpp>
#include <surgeon/cuda/mask.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/update.hpp>
#include <surgeon/view.hpp>

#include <cublas_v2.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace surgeon::cuda {

namespace detail {

/// Sorted, de-duplicated live positions of the given layer indices (dead ones dropped).
inline std::vector<index_t> selected_positions(const char* who, const char* what,
                                               const std::vector<index_t>& indices,
                                               const std::vector<index_t>& live, index_t size) {
  return surgeon::detail::selected_positions(who, what, indices, positions_of(live, size));
}

/// Row-set or column-set OBS on the live sub-layer (column-major `[r, c]`), as the CPU's
/// `remove_lines`, with `inverse` the removed side's Ĝ⁻¹ (rows, order r) or Â⁻¹ (columns, order c):
///   rows:    ΔW = −Ĝ⁻¹[:,P] ([Ĝ⁻¹]_PP)⁻¹ W[P,:]
///   columns: ΔW = −W[:,P] ([Â⁻¹]_PP)⁻¹ Â⁻¹[P,:]
/// i.e. ΔW = −left · block⁻¹ · right, then the removed lines are set to 0.
inline void remove_lines(context& ctx, const char* who, const kronecker_curvature& curv, double* live,
                         const std::vector<index_t>& positions, bool rows) {
  const auto k = static_cast<index_t>(positions.size());
  if (k == 0) return;
  const index_t r = curv.g.order();
  const index_t c = curv.a.order();
  const index_t n = rows ? r : c;  // the inverse's order
  cudaStream_t stream = ctx.stream();
  const device_buffer<index_t> index = upload_indices(ctx, positions);
  const double* inverse = rows ? curv.g.inverse().data() : curv.a.inverse().data();
  device_buffer<double> left(ctx, r * k);   // Ĝ⁻¹[:, P] or W[:, P]
  device_buffer<double> block(ctx, k * k);  // the inverse's [P, P]
  device_buffer<double> right(ctx, k * c);  // W[P, :] or Â⁻¹[P, :], then block⁻¹ · right
  launch_gather_columns(rows ? inverse : live, r, r, index.data(), k, left.data(), r, stream);
  launch_gather_square(inverse, n, index.data(), k, block.data(), stream);
  launch_gather_rows(rows ? live : inverse, rows ? r : c, c, index.data(), k, right.data(), stream);
  solve_spd(ctx, who, block.data(), k, right.data(), c);
  gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, r, c, k, -1.0, left.data(), r, right.data(), k, 1.0, live, r);
  if (rows) {
    launch_zero_rows(live, r, c, index.data(), k, stream);
  } else {
    launch_zero_columns(live, r, index.data(), k, stream);
  }
}

template <typename T>
void check_update(context& ctx, const char* who, const kronecker_curvature& curv, device_matrix_view<T> w) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "cuda updates: float or double weights");
  expect_layer_inputs(ctx, curv, device_matrix_view<const T>(w), who);
}

template <typename T>
void check_mask(const char* who, device_matrix_view<T> w, const mask& pruned) {
  SURGEON_EXPECTS(pruned.rows() == w.rows() && pruned.cols() == w.cols(),
                  "{}: mask [{}, {}] does not fit weights [{}, {}]", who, pruned.rows(), pruned.cols(),
                  w.rows(), w.cols());
}

/// Writes the live sub-layer back into `w` (dead rows and columns exactly 0, one rounding).
template <typename T>
void scatter_live(context& ctx, const kronecker_curvature& curv, const device_buffer<double>& live,
                  device_matrix_view<T> w) {
  launch_scatter_live(live.data(), curv.g.order(), curv.indices.row_position.data(),
                      curv.indices.col_position.data(), w.data(), w.rows(), w.cols(), w.ld(), ctx.stream());
}

/// Zeroes the given layer rows and columns of `w` on the device (they are zero already unless
/// dead, and then the scatter zeroed them; this keeps the contract independent of that).
template <typename T>
void zero_layer_rows_columns(context& ctx, device_matrix_view<T> w, const std::vector<index_t>& rows,
                             const std::vector<index_t>& cols) {
  if (rows.empty() && cols.empty()) return;
  mask removed(w.rows(), w.cols());
  for (const index_t i : rows) removed.prune_row(i);
  for (const index_t j : cols) removed.prune_column(j);
  device_mask::from_host(ctx, removed).apply(ctx, w);
}

}  // namespace detail

namespace detail {

// The row update, then the column update on the weights it left (the exact joint OBS solution for
// the union), on one gather and scatter of the live sub-layer; removed rows and columns exactly 0.
template <typename T>
void remove_rows_columns(context& ctx, const char* who, const kronecker_curvature& curv,
                         device_matrix_view<T> w, const std::vector<index_t>& rows,
                         const std::vector<index_t>& cols) {
  detail::check_update(ctx, who, curv, w);
  const std::vector<index_t> row_positions =
      detail::selected_positions(who, "row", rows, curv.dead.live_rows, w.rows());
  const std::vector<index_t> col_positions =
      detail::selected_positions(who, "column", cols, curv.dead.live_cols, w.cols());
  device_buffer<double> live = detail::gather_live(ctx, curv, device_matrix_view<const T>(w));
  detail::remove_lines(ctx, who, curv, live.data(), row_positions, true);
  detail::remove_lines(ctx, who, curv, live.data(), col_positions, false);
  detail::scatter_live(ctx, curv, live, w);
  detail::zero_layer_rows_columns(ctx, w, rows, cols);
}

}  // namespace detail

/// @brief Removes a set of whole rows (outputs) with the joint OBS update (METHOD.md §4):
/// `ΔW = −Ĝ⁻¹[:,R] ([Ĝ⁻¹]_RR)⁻¹ W̃[R,:]` on the live sub-layer, then `W̃[R,:] = 0`. As
/// `cpu::update_rows`.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param curv the layer's curvature, factorised for `w` (its live rows, columns and inverses).
/// @param w weights `W̃ [R, C]`, device, float or double, any `ld`, updated in place.
/// @param rows layer row indices (host), any order; duplicates ignored, dead rows just zeroed.
/// Cost: k³/3 + 2k²·C + 2R·k·C flops on the device (k live rows removed); device memory
/// O(R·C + k² + k·(R + C)) doubles. Waits for the stream (the solver's `info`).
/// @throws logic_error if `w` is not the layer `curv` was factorised for, holds a non-finite value,
///         or an index is out of range; numerical_error if the system is singular; cuda_error.
template <typename T>
void update_rows(context& ctx, const kronecker_curvature& curv, device_matrix_view<T> w,
                 const std::vector<index_t>& rows) {
  detail::remove_rows_columns(ctx, "update_rows", curv, w, rows, {});
}

/// @brief Removes a set of whole columns (inputs, or the bias column) with the joint OBS update
/// (METHOD.md §4): `ΔW = −W̃[:,S] ([Â⁻¹]_SS)⁻¹ Â⁻¹[S,:]`, then `W̃[:,S] = 0`. As `cpu::update_columns`.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param curv the layer's curvature, factorised for `w` (its live rows, columns and inverses).
/// @param w weights `W̃ [R, C]`, device, updated in place. @param cols layer column indices (host).
/// Cost: k³/3 + 2k²·C + 2R·k·C flops on the device. @throws as `update_rows`.
template <typename T>
void update_columns(context& ctx, const kronecker_curvature& curv, device_matrix_view<T> w,
                    const std::vector<index_t>& cols) {
  detail::remove_rows_columns(ctx, "update_columns", curv, w, {}, cols);
}

/// @brief Removes rows and columns together: the row update, then the column update on the
/// weights it left, which equals the joint OBS solution for the union (METHOD.md §4). As
/// `cpu::update_rows_columns`.
/// Cost: the sum of `update_rows` and `update_columns`, one gather and scatter.
/// @throws as `update_rows`.
template <typename T>
void update_rows_columns(context& ctx, const kronecker_curvature& curv, device_matrix_view<T> w,
                         const std::vector<index_t>& rows, const std::vector<index_t>& cols) {
  detail::remove_rows_columns(ctx, "update_rows_columns", curv, w, rows, cols);
}

/// @brief Correlated OBS update for an element mask, chunk by chunk, in the sparse-row form
/// (METHOD.md §4, the LLM Surgeon update). As `cpu::obs_update`: Q = every masked live entry, split
/// into chunks of whole rows by `budget.max`; per chunk with entries (r_k, c_k) and rows `rows`,
/// `M_kl = [Ĝ⁻¹]_{r_k r_l} [Â⁻¹]_{c_k c_l}`, solve `M x = w_Q`, scatter x into Z[rows, :] and apply
/// `ΔW = −Ĝ⁻¹[:,rows] (Z[rows,:] Â⁻¹)`; each chunk sees the previous ones' updates; at the end every
/// masked entry is exactly 0.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param curv the layer's curvature, factorised for `w` (its live rows, columns and inverses).
/// @param w weights `W̃ [R, C]`, device, float or double, updated in place.
/// @param pruned the host mask `[R, C]` of weights to remove (chunks are planned on the host).
/// @param budget the correlation budget (`max`; the solver choice is ignored: direct solves).
/// @return chunks, |Q|, and the largest relative residual ‖M x − w_Q‖ / ‖w_Q‖ of the chunk solves
///         (`iterations` is 0).
/// Cost per chunk (n entries, m rows): n² to build M, n³/3 + 4n² for the solve and the residual,
/// 2m·C² + 2R·m·C for the update; device memory 3n² + m·(R + C) doubles; one host round trip per
/// chunk for the solver's `info`.
/// @throws logic_error if the mask or weights do not fit, a weight is non-finite, `budget.max < -1`,
///         or `budget.tolerance`/`max_iterations` are invalid (as on the CPU, although unused
///         here); numerical_error if a chunk system cannot be factorised; cuda_error.
template <typename T>
update_report obs_update(context& ctx, const kronecker_curvature& curv, device_matrix_view<T> w,
                         const mask& pruned, correlate budget = {}) {
  constexpr const char* who = "obs_update";
  detail::check_update(ctx, who, curv, w);
  detail::check_mask(who, w, pruned);
  surgeon::detail::check_budget(who, budget);
  const dead_structure& dead = curv.dead;
  const index_t r = curv.g.order();
  const index_t c = curv.a.order();
  cudaStream_t stream = ctx.stream();
  // The masked live columns of every live row, and the chunks of rows (as the CPU plans them).
  const std::vector<std::vector<index_t>> entries = surgeon::detail::masked_live_entries(dead, pruned);
  const std::vector<std::vector<index_t>> chunks = surgeon::detail::chunk_rows(entries, budget.max);

  device_buffer<double> live = detail::gather_live(ctx, curv, device_matrix_view<const T>(w));
  const double* g_inverse = curv.g.inverse().data();
  const double* a_inverse = curv.a.inverse().data();
  update_report report;
  std::vector<index_t> er;
  std::vector<index_t> ec;
  std::vector<index_t> packed;
  for (const std::vector<index_t>& rows : chunks) {
    const auto m = static_cast<index_t>(rows.size());
    er.clear();
    ec.clear();
    for (std::size_t a = 0; a < rows.size(); ++a) {
      for (const index_t q : entries[static_cast<std::size_t>(rows[a])]) {
        er.push_back(static_cast<index_t>(a));
        ec.push_back(q);
      }
    }
    const auto n = static_cast<index_t>(er.size());
    // One upload (one synchronisation) for the chunk's three index lists: rows | er | ec.
    packed.assign(rows.begin(), rows.end());
    packed.insert(packed.end(), er.begin(), er.end());
    packed.insert(packed.end(), ec.begin(), ec.end());
    const device_buffer<index_t> indices = detail::upload_indices(ctx, packed);
    const index_t* rows_device = indices.data();
    const index_t* er_device = rows_device + m;
    const index_t* ec_device = er_device + n;
    device_buffer<double> system(ctx, n * n);
    device_buffer<double> rhs(ctx, n);
    device_buffer<double> x(ctx, n);
    detail::launch_chunk_system(g_inverse, r, a_inverse, c, rows_device, er_device, ec_device, n,
                                system.data(), stream);
    detail::launch_gather_entries(live.data(), r, rows_device, er_device, ec_device, n, rhs.data(), stream);
    SURGEON_CUDA_CHECK(
        cudaMemcpyAsync(x.data(), rhs.data(), rhs.size_bytes(), cudaMemcpyDeviceToDevice, stream));
    detail::solve_spd(ctx, who, system.data(), n, x.data(), 1);
    // Residual ‖M x − w_Q‖ / ‖w_Q‖ (rhs becomes M x − w_Q).
    double rhs_norm = 0.0;
    double residual_norm = 0.0;
    const double one = 1.0;
    const double minus_one = -1.0;
    SURGEON_CUBLAS_CHECK(cublasDnrm2_64(ctx.cublas(), n, rhs.data(), 1, &rhs_norm));
    SURGEON_CUBLAS_CHECK(cublasDgemv_64(ctx.cublas(), CUBLAS_OP_N, n, n, &one, system.data(), n, x.data(), 1,
                                        &minus_one, rhs.data(), 1));
    SURGEON_CUBLAS_CHECK(cublasDnrm2_64(ctx.cublas(), n, rhs.data(), 1, &residual_norm));
    if (rhs_norm > 0.0)
      report.relative_residual = std::max(report.relative_residual, residual_norm / rhs_norm);
    // Sparse-row form: Z[rows, :] (m × C), ZA = Z[rows, :] Â⁻¹, W −= Ĝ⁻¹[:, rows] ZA.
    device_buffer<double> z_rows(ctx, m * c);
    z_rows.fill_zero();
    detail::launch_scatter_entries(x.data(), er_device, ec_device, n, m, z_rows.data(), stream);
    device_buffer<double> za(ctx, m * c);
    detail::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, m, c, c, 1.0, z_rows.data(), m, a_inverse, c, 0.0, za.data(),
                 m);
    device_buffer<double> g_columns(ctx, r * m);
    detail::launch_gather_columns(g_inverse, r, r, rows_device, m, g_columns.data(), r, stream);
    detail::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, r, c, m, -1.0, g_columns.data(), r, za.data(), m, 1.0,
                 live.data(), r);
    detail::launch_zero_entries(live.data(), r, rows_device, er_device, ec_device, n, stream);
    ++report.chunks;
    report.solved += n;
  }
  detail::scatter_live(ctx, curv, live, w);
  // Later chunks disturb the entries removed by earlier ones: zero the whole mask again.
  device_mask::from_host(ctx, pruned).apply(ctx, w);
  ctx.synchronize();
  return report;
}

/// @brief Exact OBS for the whole mask at once by preconditioned conjugate gradients (METHOD.md §4),
/// as `cpu::obs_update_full`: by default (`pcg_form::removed_sweep`) conjugate gradients on the
/// multipliers of the removed entries, preconditioned by SparseGPT-like triangular sweeps; or
/// (`pcg_form::kept_kronecker`) on the kept entries, preconditioned by `R ↦ P_K(Ĝ⁻¹ R Â⁻¹)`; then
/// every masked entry exactly 0.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param curv the layer's curvature, factorised for `w` (its live rows, columns and inverses).
/// @param w weights `W̃ [R, C]`, device, updated in place. @param pruned host mask `[R, C]`.
/// @param options the PCG options (form, tolerance, iteration limit; see `pcg_options`).
/// @return chunks = 1 (0 for an empty Q), solved = |Q|, iterations, final ‖r‖/‖b‖, loss.
/// Cost per iteration: 4R·C(R + C) flops (two GEMMs; SGEMMs with `float_products`) plus, for the
/// removed form, two sweeps (about R·C² flops, C/128 DGEMMs and kernels) and three dot products
/// (each a host round trip); device memory about 10 [R, C] doubles.
/// @throws logic_error on bad shapes, non-finite weights or bad options; numerical_error if the
///         residual becomes non-finite or Â⁻¹ is not positive definite; cuda_error.
template <typename T>
update_report obs_update_full(context& ctx, const kronecker_curvature& curv, device_matrix_view<T> w,
                              const mask& pruned, pcg_options options = {}) {
  constexpr const char* who = "obs_update_full";
  detail::check_update(ctx, who, curv, w);
  detail::check_mask(who, w, pruned);
  SURGEON_EXPECTS(std::isfinite(options.tolerance) && options.tolerance > 0.0,
                  "{}: tolerance must be > 0, got {}", who, options.tolerance);
  SURGEON_EXPECTS(options.max_iterations >= 1, "{}: max_iterations must be >= 1, got {}", who,
                  options.max_iterations);
  const index_t r = curv.g.order();
  const index_t c = curv.a.order();
  const index_t count = r * c;
  cudaStream_t stream = ctx.stream();
  device_buffer<double> live = detail::gather_live(ctx, curv, device_matrix_view<const T>(w));
  const device_mask words = device_mask::from_host(ctx, pruned);
  device_buffer<double> keep(ctx, count);
  device_buffer<unsigned long long> masked(ctx, 1);
  masked.fill_zero();
  detail::launch_keep_indicator(words.words(), words.words_per_row(), curv.indices.live_rows.data(), r,
                                curv.indices.live_cols.data(), c, keep.data(), masked.data(), stream);
  unsigned long long masked_count = 0;
  masked.copy_to_host_sync(&masked_count, 1);
  update_report report;
  report.solved = static_cast<index_t>(masked_count);
  if (report.solved > 0) {
    report.chunks = 1;
    std::vector<index_t> removed_count(static_cast<std::size_t>(c), 0);
    if (options.form == pcg_form::removed_sweep) {
      for (const index_t i : curv.dead.live_rows) {
        for (std::size_t q = 0; q < curv.dead.live_cols.size(); ++q)
          removed_count[q] += pruned.pruned(i, curv.dead.live_cols[q]) ? 1 : 0;
      }
    }
    detail::whole_mask_update(ctx, who, curv, live.data(), keep.data(), removed_count, options, report);
  }
  detail::scatter_live(ctx, curv, live, w);
  words.apply(ctx, w);
  ctx.synchronize();
  return report;
}

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
