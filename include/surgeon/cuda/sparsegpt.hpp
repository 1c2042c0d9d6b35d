/// @file cuda/sparsegpt.hpp
/// @brief SparseGPT (Frantar & Alistarh 2023) on device matrices, CUDA backend (METHOD.md §6): the
/// mirror of cpu/sparsegpt.hpp, with the same overloads, rules, results and exceptions.
///
/// The algorithm and every rule (damping with ×10 escalation, dead inputs, forced entries, the
/// block-wise quantile with its cumulatively rounded count, ties by row-major flat index, N:M groups
/// chosen when elimination reaches them, the lazy batch update, pruned weights exactly 0) are those
/// of cpu/sparsegpt.hpp; read its file comment. How they map onto the device:
///
/// - The working copy of W is double and column-major `[R, C]`, so that the per-row elimination
///   steps through coalesced columns and cuBLAS applies the lazy batch update directly.
/// - `H⁻¹ = L Lᵀ` comes from cuSOLVER in double: `potrf` of the damped H, `potri`, `potrf` again.
///   `U = Lᵀ`, so row j of U is column j of the column-major L (contiguous).
/// - Unstructured selection of a block is a stable CUB radix sort of (score key, block-local
///   row-major index) pairs, forced entries keyed last; the first `count − forced` are pruned. The
///   forced counts of all blocks are known before the first block, so the whole schedule is
///   enqueued without waiting for the device.
/// - Elimination inside a block runs one thread per row (rows are independent), which also makes
///   each row's N:M choices. The errors `E [R, B]` reach the later columns in one `cublasDgemm`.
///
/// Results agree with the CPU backend up to rounding (cuSOLVER and cuBLAS sum in other orders than
/// LAPACK/Eigen), so masks are identical unless two scores are within rounding of each other.
///
/// Every CUDA runtime, cuBLAS and cuSOLVER status is checked, and every cuSOLVER `info`. Device
/// memory comes from `device_buffer` on the context's stream only. nvcc translation units only (the
/// kernels live in detail/sparsegpt_kernels.cuh); no Eigen. Defined only when `SURGEON_HAS_CUDA`
/// is defined (target `surgeon::cuda`).
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/detail/kfac_kernels.cuh>
#include <surgeon/cuda/detail/solver.hpp>
#include <surgeon/cuda/detail/sparsegpt_kernels.cuh>
#include <surgeon/cuda/mask.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/sparsegpt.hpp>
#include <surgeon/view.hpp>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>
#include <fmt/format.h>
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <vector>

namespace surgeon::cuda {

/// @brief Parameters of SparseGPT (surgeon/sparsegpt.hpp, shared by both backends).
using surgeon::sparsegpt_options;

namespace detail {

using surgeon::detail::sparsegpt_target;

/// Writes into `l` (C·C doubles) the lower factor L of `(H + shift·I)⁻¹ = L Lᵀ`, column-major, dead
/// inputs with their row and column cleared and `H_jj = 1`, shift = λ·`mean_diagonal`, with the ×10
/// escalation of the CPU backend (a zero λ first becomes 1e-8; at most 6 times). Only the lower
/// triangle of `l` is meaningful afterwards (cuSOLVER reads and writes only that triangle, so the
/// inverse is never mirrored). `h` must already be validated. Waits for every `info`.
/// Cost: C³ flops per attempt (C³/3 + 2C³/3 + C³/3), two syncs per factorisation.
/// @throws numerical_error when every attempt fails; cuda_error on a CUDA/cuSOLVER failure.
inline void sparsegpt_inverse_factor(context& ctx, device_matrix_view<const double> h, double lambda,
                                     double mean_diagonal, const unsigned char* dead, double* l) {
  const index_t c = h.rows();
  cudaStream_t stream = ctx.stream();
  cholesky_workspace cholesky(ctx, c, l, "sparsegpt_prune");
  surgeon::detail::escalate_damping(
      surgeon::detail::sparsegpt_escalation, lambda, mean_diagonal, "sparsegpt_prune",
      fmt::format("the damped {}x{} input covariance", c, c), [&](double shift) {
        launch_sparsegpt_factor_input(h.data(), c, h.ld(), dead, shift, l, stream);
        if (!cholesky.factor(l)) return false;
        cholesky.invert(l);
        // H⁻¹ = L Lᵀ: the lower factor of the inverse, so U = Lᵀ.
        return cholesky.factor(l);
      });
}

/// The whole algorithm; the public overloads only describe the target.
template <typename T>
mask sparsegpt_run(context& ctx, device_matrix_view<const double> h, device_matrix_view<T> w,
                   const sparsegpt_target& target, const mask* must_prune, const sparsegpt_options& options) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "sparsegpt_prune: float or double weights");
  const index_t rows = w.rows();
  const index_t cols = w.cols();
  surgeon::detail::check_sparsegpt_arguments(h.rows(), h.cols(), rows, cols, target, must_prune, options);
  // cuBLAS and cuSOLVER take int dimensions; checked before any device work.
  const int ri = to_int(rows, "sparsegpt_prune", "row count");
  const int ci = to_int(cols, "sparsegpt_prune", "column count");
  cudaStream_t stream = ctx.stream();

  // Input checks on the device: a flag per input and the diagonal of h, one synchronization.
  device_buffer<int> flags(ctx, 2);
  flags.fill_zero();
  device_buffer<double> diagonal_device(ctx, cols);
  launch_flag_nonfinite(h.data(), cols, cols, h.ld(), flags.data(), stream);
  launch_flag_nonfinite(w.data(), rows, cols, w.ld(), flags.data() + 1, stream);
  launch_sparsegpt_diagonal(h.data(), cols, h.ld(), diagonal_device.data(), stream);
  int nonfinite[2] = {0, 0};
  std::vector<double> diagonal(static_cast<std::size_t>(cols));
  flags.copy_to_host(nonfinite, 2);
  diagonal_device.copy_to_host_sync(diagonal.data(), cols);
  SURGEON_EXPECTS(nonfinite[0] == 0, "sparsegpt_prune: h [{}, {}] holds a non-finite entry", cols, cols);
  for (index_t i = 0; i < cols; ++i) {
    const double hii = diagonal[static_cast<std::size_t>(i)];
    SURGEON_EXPECTS(hii >= 0.0, "sparsegpt_prune: h({}, {}) = {} is negative: not a covariance", i, i, hii);
  }
  SURGEON_EXPECTS(nonfinite[1] == 0, "sparsegpt_prune: the [{}, {}] weights hold a non-finite value", rows,
                  cols);

  if (rows == 0 || cols == 0) return mask(rows, cols);

  // Dead inputs and the mean diagonal on the host, summed in the CPU backend's order so that the
  // shift is the same double.
  std::vector<unsigned char> dead_host(static_cast<std::size_t>(cols), 0);
  double trace = 0.0;
  for (index_t j = 0; j < cols; ++j) {
    const double hjj = diagonal[static_cast<std::size_t>(j)];
    dead_host[static_cast<std::size_t>(j)] = hjj == 0.0 ? 1 : 0;
    trace += hjj;
  }
  const double mean_diagonal = trace / static_cast<double>(cols);
  const device_buffer<unsigned char> dead(ctx, dead_host);

  // The working copy (dead columns zeroed) and the mask, which starts as the forced entries: the
  // must_prune mask and every weight that is exactly 0 on entry.
  device_mask pruned =
      must_prune != nullptr ? device_mask::from_host(ctx, *must_prune) : device_mask(ctx, rows, cols);
  const index_t wpr = pruned.words_per_row();
  device_buffer<double> work(ctx, rows * cols);
  launch_sparsegpt_load(w.data(), rows, cols, w.ld(), dead.data(), work.data(), stream);
  // Forced entries: every entry of the column-major work copy that is exactly 0 (zeros on entry
  // and dead inputs), on top of the bits already set.
  launch_zeros_to_mask(work.data(), rows, cols, index_t{1}, rows, wpr, pruned.words(), stream);

  device_buffer<double> l(ctx, cols * cols);
  sparsegpt_inverse_factor(ctx, h, options.damping, mean_diagonal, dead.data(), l.data());

  index_t block = std::min(options.block_size, cols);
  if (target.n_m) block = (block + target.pattern.m - 1) / target.pattern.m * target.pattern.m;
  const index_t blocks = (cols + block - 1) / block;
  const index_t last_width = cols - (blocks - 1) * block;
  device_buffer<double> errors(ctx, rows * block);

  // Unstructured: the forced entries of every block (the bits set so far) and the sort buffers.
  std::vector<index_t> forced_counts;
  device_buffer<std::uint64_t> keys_in;
  device_buffer<std::uint64_t> keys_out;
  device_buffer<index_t> values_in;
  device_buffer<index_t> values_out;
  device_buffer<unsigned char> sort_storage;
  std::size_t sort_bytes = 0;
  if (!target.n_m) {
    device_buffer<index_t> counts(ctx, blocks);
    launch_sparsegpt_block_counts(pruned.words(), rows, cols, wpr, block, blocks, counts.data(), stream);
    forced_counts = counts.to_host();
    keys_in = device_buffer<std::uint64_t>(ctx, rows * block);
    keys_out = device_buffer<std::uint64_t>(ctx, rows * block);
    values_in = device_buffer<index_t>(ctx, rows * block);
    values_out = device_buffer<index_t>(ctx, rows * block);
    // The storage CUB needs for either block width (a query only: nothing is launched).
    for (const index_t width : {block, last_width}) {
      std::size_t bytes = 0;
      SURGEON_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys_in.data(), keys_out.data(),
                                                         values_in.data(), values_out.data(), rows * width, 0,
                                                         64, stream));
      sort_bytes = std::max(sort_bytes, bytes);
    }
    sort_storage =
        device_buffer<unsigned char>(ctx, static_cast<index_t>(std::max<std::size_t>(sort_bytes, 1)));
  }

  cublasHandle_t blas = ctx.cublas();
  SURGEON_CUBLAS_CHECK(cublasSetPointerMode(blas, CUBLAS_POINTER_MODE_HOST));
  const double minus_one = -1.0;
  const double one = 1.0;
  const double total = static_cast<double>(rows);
  index_t pruned_so_far = 0;
  for (index_t b = 0; b < blocks; ++b) {
    const index_t j0 = b * block;
    const index_t j1 = std::min(cols, j0 + block);
    const index_t width = j1 - j0;
    if (!target.n_m) {
      // Block-wise quantile with an exact, cumulatively rounded count (the CPU backend's arithmetic).
      const index_t forced_here = forced_counts[static_cast<std::size_t>(b)];
      const auto cumulative =
          static_cast<index_t>(std::llround(target.sparsity * total * static_cast<double>(j1)));
      const index_t count = std::clamp(cumulative - pruned_so_far, forced_here, rows * width);
      const index_t chosen = count - forced_here;
      if (chosen > 0) {
        launch_sparsegpt_keys(work.data(), rows, l.data(), cols, pruned.words(), wpr, j0, width,
                              keys_in.data(), values_in.data(), stream);
        std::size_t bytes = sort_bytes;
        SURGEON_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_storage.data(), bytes, keys_in.data(),
                                                           keys_out.data(), values_in.data(),
                                                           values_out.data(), rows * width, 0, 64, stream));
        launch_sparsegpt_mark(values_out.data(), chosen, j0, width, wpr, pruned.words(), stream);
      }
      pruned_so_far += count;
    }
    launch_sparsegpt_eliminate(target.n_m, work.data(), rows, l.data(), cols, pruned.words(), wpr, j0, j1,
                               target.pattern.n, target.pattern.m, errors.data(), stream);
    if (j1 < cols) {
      // Lazy batch update: work[:, j1:] −= E · U[j0:j1, j1:]. U[j0:j1, j1:] is the transpose of the
      // column-major L block at rows j1.., columns j0..j1 (leading dimension C).
      SURGEON_CUBLAS_CHECK(cublasDgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, ri,
                                       to_int(cols - j1, "sparsegpt_prune", "width"),
                                       to_int(width, "sparsegpt_prune", "block"), &minus_one, errors.data(),
                                       ri, l.data() + j0 * cols + j1, ci, &one, work.data() + j1 * rows, ri));
    }
  }

  launch_sparsegpt_store(work.data(), rows, cols, pruned.words(), wpr, w.data(), w.ld(), stream);
  return pruned.to_host();  // waits for the stream, so `w` is written too
}

}  // namespace detail

/// @brief SparseGPT with unstructured sparsity on the device: prunes `round(s·R·C)` weights of `w` in
/// place with row-wise OBS updates (G = I, H = `h`), exactly the rules of `cpu::sparsegpt_prune`.
/// @tparam T weight type, float or double (internal arithmetic is double on a device copy).
/// @param ctx the CUDA context; everything runs on its stream.
/// @param h input covariance A [C, C], device, row-major with any `ld`, symmetric (lower triangle
///        used), undamped.
/// @param w weights [R, C], device, row-major with any `ld`; updated in place, pruned entries exactly 0.
/// @param sparsity fraction of the layer to prune, in [0, 1). Weights already exactly 0 and dead
///        inputs count as pruned first.
/// @param options the block size and relative damping λ (`H += λ·mean(diag H)·I`).
/// @return the host mask of every pruned weight [R, C] (including the forced ones). The call waits
///         for the stream: `w` holds the result on return.
/// Cost: O(R·C² + C³) flops (C³ for the factorisations, R·C² for the lazy updates in cuBLAS, R·C·B
/// within blocks), a radix sort of R·B pairs per block, a handful of synchronizations (input check,
/// factorisation infos, forced counts, the mask); device memory O(R·C + C²) doubles plus about
/// 48·R·B bytes for the sort (keys, values and CUB's own storage).
/// @throws logic_error if `h` is not [C, C], `sparsity` is outside [0, 1), `block_size < 1`, the
///         damping is negative, `w` or `h` holds a non-finite value, a diagonal entry of `h` is
///         negative, or a dimension exceeds cuBLAS's `int`; numerical_error if the damped `h` stays
///         indefinite after every escalation; cuda_error on a CUDA/cuBLAS/cuSOLVER failure.
template <typename T>
mask sparsegpt_prune(context& ctx, device_matrix_view<const double> h, device_matrix_view<T> w,
                     double sparsity, const sparsegpt_options& options = {}) {
  detail::sparsegpt_target target;
  target.sparsity = sparsity;
  return detail::sparsegpt_run(ctx, h, w, target, nullptr, options);
}

/// @brief SparseGPT with an N:M pattern on the device: in every row, each group of M consecutive
/// columns loses its N lowest-scoring weights, with row-wise OBS updates (G = I, H = `h`).
/// @tparam T weight type, float or double.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param h input covariance A [C, C], device, symmetric (lower triangle used), undamped.
/// @param w weights [R, C], device; updated in place, pruned entries exactly 0.
/// @param pattern N:M with 0 < N <= M and M dividing C. Weights already exactly 0 count towards N.
/// @param options the block size and relative damping λ (`H += λ·mean(diag H)·I`).
/// @return the host mask of every pruned weight [R, C]; `w` holds the result on return.
/// Cost: O(R·C² + C³) flops (plus O(R·C·M) for the group choices); device memory O(R·C + C²).
/// @throws logic_error if `h` is not [C, C], the pattern is invalid (N > M, M not dividing C),
///         `block_size < 1`, the damping is negative, or an input is non-finite or `h` has a negative
///         diagonal entry; numerical_error and cuda_error as the unstructured overload.
template <typename T>
mask sparsegpt_prune(context& ctx, device_matrix_view<const double> h, device_matrix_view<T> w,
                     nm_pattern pattern, const sparsegpt_options& options = {}) {
  detail::sparsegpt_target target;
  target.n_m = true;
  target.pattern = pattern;
  return detail::sparsegpt_run(ctx, h, w, target, nullptr, options);
}

/// @brief Unstructured SparseGPT that also prunes every weight of `must_prune` (e.g. the mask of
/// an earlier shot), whatever its score; those weights count towards `round(s·R·C)` and end exactly 0.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param h input covariance A [C, C], device, symmetric (lower triangle used), undamped.
/// @param w weights [R, C], device, any `ld`; updated in place, pruned entries exactly 0.
/// @param sparsity fraction of the layer to prune, in [0, 1), `must_prune` included.
/// @param must_prune [R, C] host mask of weights that must be pruned (copied to the device).
/// @param options the block size and relative damping λ (`H += λ·mean(diag H)·I`).
/// Cost, parameters and other throws as the unstructured overload.
/// @throws logic_error also if `must_prune` is not [R, C].
template <typename T>
mask sparsegpt_prune(context& ctx, device_matrix_view<const double> h, device_matrix_view<T> w,
                     double sparsity, const mask& must_prune, const sparsegpt_options& options = {}) {
  detail::sparsegpt_target target;
  target.sparsity = sparsity;
  return detail::sparsegpt_run(ctx, h, w, target, &must_prune, options);
}

/// @brief N:M SparseGPT that also prunes every weight of `must_prune`; they count towards each
/// group's N (a group with more than N of them loses all of them) and end exactly 0.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param h input covariance A [C, C], device, symmetric (lower triangle used), undamped.
/// @param w weights [R, C], device, any `ld`; updated in place, pruned entries exactly 0.
/// @param pattern N:M with 0 < N <= M and M dividing C.
/// @param must_prune [R, C] host mask of weights that must be pruned (copied to the device).
/// @param options the block size and relative damping λ (`H += λ·mean(diag H)·I`).
/// Cost, parameters and other throws as the N:M overload.
/// @throws logic_error also if `must_prune` is not [R, C].
template <typename T>
mask sparsegpt_prune(context& ctx, device_matrix_view<const double> h, device_matrix_view<T> w,
                     nm_pattern pattern, const mask& must_prune, const sparsegpt_options& options = {}) {
  detail::sparsegpt_target target;
  target.n_m = true;
  target.pattern = pattern;
  return detail::sparsegpt_run(ctx, h, w, target, &must_prune, options);
}

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
