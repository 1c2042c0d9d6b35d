/// @file cuda/detail/layer_kernels.cuh
/// @brief Device kernels of the CUDA layer code (dead structure, live sub-layers, costs, OBS
/// systems), with their checked launchers.
///
/// Internal: used by cuda/curvature.hpp (factorize), cuda/cost.hpp and cuda/update.hpp. nvcc only;
/// no Eigen, no fmt in device code.
///
/// Layouts: layer weights are row-major `[R, C]` device views with leading dimension `ld` (element
/// (i, j) at `w[i * ld + j]`, as view.hpp). The live sub-layer the updates work on is a packed
/// column-major double matrix `[r, c]` (element (p, q) at `live[q * r + p]`), which is what cuBLAS
/// and cuSOLVER take without transposition. Square factors are packed and symmetric, so row- and
/// column-major read alike. Index arrays are `index_t` in device memory.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/detail/kfac_kernels.cuh>

#include <cuda_runtime.h>

#include <cstdint>

namespace surgeon::cuda::detail {

/// Grid-stride loop index of the calling thread and the stride.
__device__ inline index_t first_index() {
  return static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline index_t grid_stride() {
  return static_cast<index_t>(gridDim.x) * blockDim.x;
}

// ---- dead structure ------------------------------------------------------------------------------

/// `row_alive[i] = 1` when row i of `w` holds a nonzero, `col_alive[j] = 1` likewise (both arrays
/// zeroed beforehand). Every writer stores the same value, so plain stores suffice.
template <typename T>
__global__ void nonzero_rows_cols_kernel(const T* __restrict__ w, index_t rows, index_t cols, index_t ld,
                                         int* __restrict__ row_alive, int* __restrict__ col_alive) {
  for_each_index(rows, cols, [&](index_t, index_t i, index_t j) {
    if (w[i * ld + j] != T(0)) {
      row_alive[i] = 1;
      col_alive[j] = 1;
    }
  });
}

template <typename T>
void launch_nonzero_rows_cols(const T* w, index_t rows, index_t cols, index_t ld, int* row_alive,
                              int* col_alive, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  nonzero_rows_cols_kernel<T>
      <<<grid_for(rows * cols), threads_per_block, 0, stream>>>(w, rows, cols, ld, row_alive, col_alive);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `out[i] = m[i * ld + i]`, i < n.
template <typename T>
__global__ void diagonal_kernel(const T* __restrict__ m, index_t n, index_t ld, double* __restrict__ out) {
  for (index_t i = first_index(); i < n; i += grid_stride()) out[i] = static_cast<double>(m[i * ld + i]);
}

template <typename T>
void launch_diagonal(const T* m, index_t n, index_t ld, double* out, cudaStream_t stream) {
  if (n == 0) return;
  diagonal_kernel<T><<<grid_for(n), threads_per_block, 0, stream>>>(m, n, ld, out);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- gathers and scatters ------------------------------------------------------------------------

/// `dst[q * n + p] = src[index[p] * ld + index[q]]`: the principal sub-matrix of a square matrix at
/// the indices (packed, n = |index|; for a symmetric source the layout question does not arise).
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void gather_square_kernel(const double* __restrict__ src, index_t ld,
                                     const index_t* __restrict__ index, index_t n, double* __restrict__ dst) {
  const index_t total = n * n;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t q = e / n;
    const index_t p = e - q * n;
    dst[e] = src[index[p] * ld + index[q]];
  }
}

inline void launch_gather_square(const double* src, index_t ld, const index_t* index, index_t n, double* dst,
                                 cudaStream_t stream) {
  if (n == 0) return;
  gather_square_kernel<><<<grid_for(n * n), threads_per_block, 0, stream>>>(src, ld, index, n, dst);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// The live sub-layer: `live[q * r + p] = w[rows[p] * ld + cols[q]]` in double (column-major
/// `[r, c]`).
template <typename T>
__global__ void gather_live_kernel(const T* __restrict__ w, index_t ld, const index_t* __restrict__ rows,
                                   index_t r, const index_t* __restrict__ cols, index_t c,
                                   double* __restrict__ live) {
  const index_t total = r * c;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t q = e / r;
    const index_t p = e - q * r;
    live[e] = static_cast<double>(w[rows[p] * ld + cols[q]]);
  }
}

template <typename T>
void launch_gather_live(const T* w, index_t ld, const index_t* rows, index_t r, const index_t* cols,
                        index_t c, double* live, cudaStream_t stream) {
  if (r == 0 || c == 0) return;
  gather_live_kernel<T><<<grid_for(r * c), threads_per_block, 0, stream>>>(w, ld, rows, r, cols, c, live);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Writes the live sub-layer back: `w(i, j) = live(row_position[i], col_position[j])`, or exactly
/// 0 when the row or the column is dead (position −1). One rounding to T.
template <typename T>
__global__ void scatter_live_kernel(const double* __restrict__ live, index_t r,
                                    const index_t* __restrict__ row_position,
                                    const index_t* __restrict__ col_position, T* __restrict__ w, index_t rows,
                                    index_t cols, index_t ld) {
  for_each_index(rows, cols, [&](index_t, index_t i, index_t j) {
    const index_t p = row_position[i];
    const index_t q = col_position[j];
    w[i * ld + j] = (p < 0 || q < 0) ? T(0) : static_cast<T>(live[q * r + p]);
  });
}

template <typename T>
void launch_scatter_live(const double* live, index_t r, const index_t* row_position,
                         const index_t* col_position, T* w, index_t rows, index_t cols, index_t ld,
                         cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  scatter_live_kernel<T><<<grid_for(rows * cols), threads_per_block, 0, stream>>>(
      live, r, row_position, col_position, w, rows, cols, ld);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `dst[b * ld_dst + a] = src[index[b] * ld_src + a]` for a < n, b < k: the columns `index` of the
/// column-major `[n, ·]` source, packed column-major `[n, k]`.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void gather_columns_kernel(const double* __restrict__ src, index_t ld_src, index_t n,
                                      const index_t* __restrict__ index, index_t k, double* __restrict__ dst,
                                      index_t ld_dst) {
  const index_t total = n * k;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t b = e / n;
    const index_t a = e - b * n;
    dst[b * ld_dst + a] = src[index[b] * ld_src + a];
  }
}

inline void launch_gather_columns(const double* src, index_t ld_src, index_t n, const index_t* index,
                                  index_t k, double* dst, index_t ld_dst, cudaStream_t stream) {
  if (n == 0 || k == 0) return;
  gather_columns_kernel<>
      <<<grid_for(n * k), threads_per_block, 0, stream>>>(src, ld_src, n, index, k, dst, ld_dst);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `dst[q * k + b] = src[q * ld_src + index[b]]` for b < k, q < c: the rows `index` of the
/// column-major `[·, c]` source, packed column-major `[k, c]`.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void gather_rows_kernel(const double* __restrict__ src, index_t ld_src, index_t c,
                                   const index_t* __restrict__ index, index_t k, double* __restrict__ dst) {
  const index_t total = k * c;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t q = e / k;
    const index_t b = e - q * k;
    dst[e] = src[q * ld_src + index[b]];
  }
}

inline void launch_gather_rows(const double* src, index_t ld_src, index_t c, const index_t* index, index_t k,
                               double* dst, cudaStream_t stream) {
  if (k == 0 || c == 0) return;
  gather_rows_kernel<><<<grid_for(k * c), threads_per_block, 0, stream>>>(src, ld_src, c, index, k, dst);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Zeroes rows `index` (k of them) of the column-major `[r, c]` matrix.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void zero_rows_kernel(double* __restrict__ m, index_t r, index_t c,
                                 const index_t* __restrict__ index, index_t k) {
  const index_t total = k * c;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t q = e / k;
    const index_t b = e - q * k;
    m[q * r + index[b]] = 0.0;
  }
}

inline void launch_zero_rows(double* m, index_t r, index_t c, const index_t* index, index_t k,
                             cudaStream_t stream) {
  if (k == 0 || c == 0) return;
  zero_rows_kernel<><<<grid_for(k * c), threads_per_block, 0, stream>>>(m, r, c, index, k);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Zeroes columns `index` (k of them) of the column-major `[r, c]` matrix.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void zero_columns_kernel(double* __restrict__ m, index_t r, const index_t* __restrict__ index,
                                    index_t k) {
  const index_t total = r * k;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t b = e / r;
    const index_t p = e - b * r;
    m[index[b] * r + p] = 0.0;
  }
}

inline void launch_zero_columns(double* m, index_t r, const index_t* index, index_t k, cudaStream_t stream) {
  if (k == 0 || r == 0) return;
  zero_columns_kernel<><<<grid_for(r * k), threads_per_block, 0, stream>>>(m, r, index, k);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- costs ---------------------------------------------------------------------------------------

/// Element costs of the whole layer, row-major `[R, C]` (leading dimension `ld_out`):
/// `row_scale[p] · f(w_ij) · col_scale[q]` with p, q the live positions of i and j, f = w² or |w|,
/// and exactly 0 on dead rows and columns. Every method of METHOD.md §3 has this separable form.
template <typename T>
__global__ void element_costs_kernel(const T* __restrict__ w, index_t rows, index_t cols, index_t ld,
                                     const index_t* __restrict__ row_position,
                                     const index_t* __restrict__ col_position,
                                     const double* __restrict__ row_scale,
                                     const double* __restrict__ col_scale, bool absolute,
                                     double* __restrict__ out, index_t ld_out) {
  for_each_index(rows, cols, [&](index_t, index_t i, index_t j) {
    const index_t p = row_position[i];
    const index_t q = col_position[j];
    double cost = 0.0;
    if (p >= 0 && q >= 0) {
      const double x = static_cast<double>(w[i * ld + j]);
      cost = row_scale[p] * (absolute ? fabs(x) : x * x) * col_scale[q];
    }
    out[i * ld_out + j] = cost;
  });
}

template <typename T>
void launch_element_costs(const T* w, index_t rows, index_t cols, index_t ld, const index_t* row_position,
                          const index_t* col_position, const double* row_scale, const double* col_scale,
                          bool absolute, double* out, index_t ld_out, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  element_costs_kernel<T><<<grid_for(rows * cols), threads_per_block, 0, stream>>>(
      w, rows, cols, ld, row_position, col_position, row_scale, col_scale, absolute, out, ld_out);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// What a per-index scale vector is made of (see `scale_kernel`).
enum class scale_kind : int {
  ones,            ///< 1
  undamped,        ///< max(diag(F̂) − shift, 0)
  sqrt_undamped,   ///< √max(diag(F̂) − shift, 0)
  inverse_of_inv,  ///< 1 / [F̂⁻¹]_kk
};

/// `out[k] = factor · s_k` for k < n, with s_k of `kind` read from the packed `[n, n]` matrix `m`
/// (F̂ for the undamped kinds, F̂⁻¹ for `inverse_of_inv`).
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void scale_kernel(const double* __restrict__ m, index_t n, double shift, scale_kind kind,
                             double factor, double* __restrict__ out) {
  for (index_t k = first_index(); k < n; k += grid_stride()) {
    double s = 1.0;
    switch (kind) {
      case scale_kind::ones:
        s = 1.0;
        break;
      case scale_kind::undamped:
        s = fmax(m[k * n + k] - shift, 0.0);
        break;
      case scale_kind::sqrt_undamped:
        s = sqrt(fmax(m[k * n + k] - shift, 0.0));
        break;
      case scale_kind::inverse_of_inv:
        s = 1.0 / m[k * n + k];
        break;
    }
    out[k] = factor * s;
  }
}

inline void launch_scale(const double* m, index_t n, double shift, scale_kind kind, double factor,
                         double* out, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<><<<grid_for(n), threads_per_block, 0, stream>>>(m, n, shift, kind, factor, out);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Row sums of the column-major `[r, c]` matrices: `out[p] = scale[p] · Σ_q x(p,q)·y(p,q)`, or with
/// `y == nullptr` `scale[p] · Σ_q weight[q]·x(p,q)²` (`weight == nullptr`: 1). One thread per row;
/// consecutive threads read consecutive rows of a column, so the reads coalesce.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void row_quadratic_kernel(const double* __restrict__ x, const double* __restrict__ y,
                                     const double* __restrict__ weight, index_t r, index_t c,
                                     const double* __restrict__ scale, double* __restrict__ out) {
  for (index_t p = first_index(); p < r; p += grid_stride()) {
    double sum = 0.0;
    for (index_t q = 0; q < c; ++q) {
      const double v = x[q * r + p];
      sum += y != nullptr ? v * y[q * r + p] : (weight != nullptr ? weight[q] : 1.0) * v * v;
    }
    out[p] = scale[p] * sum;
  }
}

inline void launch_row_quadratic(const double* x, const double* y, const double* weight, index_t r, index_t c,
                                 const double* scale, double* out, cudaStream_t stream) {
  if (r == 0) return;
  row_quadratic_kernel<><<<grid_for(r), threads_per_block, 0, stream>>>(x, y, weight, r, c, scale, out);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Column sums of the column-major `[r, c]` matrices: `out[q] = scale[q] · Σ_p x(p,q)·y(p,q)`, or
/// with `y == nullptr` `scale[q] · Σ_p x(p,q)²`. One warp per column (contiguous in memory), summed
/// with shuffles.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void column_quadratic_kernel(const double* __restrict__ x, const double* __restrict__ y, index_t r,
                                        index_t c, const double* __restrict__ scale,
                                        double* __restrict__ out) {
  const index_t warps = static_cast<index_t>(gridDim.x) * (blockDim.x / 32);
  const index_t lane = threadIdx.x % 32;
  for (index_t q = static_cast<index_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; q < c;
       q += warps) {
    double sum = 0.0;
    for (index_t p = lane; p < r; p += 32) {
      const double v = x[q * r + p];
      sum += y != nullptr ? v * y[q * r + p] : v * v;
    }
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xFFFFFFFFu, sum, offset);
    if (lane == 0) out[q] = scale[q] * sum;
  }
}

inline void launch_column_quadratic(const double* x, const double* y, index_t r, index_t c,
                                    const double* scale, double* out, cudaStream_t stream) {
  if (c == 0) return;
  const index_t per_block = threads_per_block / 32;
  const index_t blocks = (c + per_block - 1) / per_block;
  column_quadratic_kernel<>
      <<<static_cast<unsigned>(blocks < 65535 * 32 ? blocks : 65535 * 32), threads_per_block, 0, stream>>>(
          x, y, r, c, scale, out);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- chunked element-set OBS ---------------------------------------------------------------------

/// The chunk's system `M_kl = [Ĝ⁻¹]_{rows[er_k], rows[er_l]} · [Â⁻¹]_{ec_k, ec_l}` (packed `[n, n]`),
/// entry k at chunk row `er[k]` (an index into `rows`) and live column `ec[k]`.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void chunk_system_kernel(const double* __restrict__ g_inverse, index_t r,
                                    const double* __restrict__ a_inverse, index_t c,
                                    const index_t* __restrict__ rows, const index_t* __restrict__ er,
                                    const index_t* __restrict__ ec, index_t n, double* __restrict__ system) {
  const index_t total = n * n;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t l = e / n;
    const index_t k = e - l * n;
    // Both inverses are symmetric: index them so that neighbouring k read neighbouring entries.
    system[e] = g_inverse[rows[er[l]] * r + rows[er[k]]] * a_inverse[ec[l] * c + ec[k]];
  }
}

inline void launch_chunk_system(const double* g_inverse, index_t r, const double* a_inverse, index_t c,
                                const index_t* rows, const index_t* er, const index_t* ec, index_t n,
                                double* system, cudaStream_t stream) {
  if (n == 0) return;
  chunk_system_kernel<><<<grid_for(n * n), threads_per_block, 0, stream>>>(g_inverse, r, a_inverse, c, rows,
                                                                           er, ec, n, system);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `out[k] = live(rows[er[k]], ec[k])` (live column-major `[r, ·]`).
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void gather_entries_kernel(const double* __restrict__ live, index_t r,
                                      const index_t* __restrict__ rows, const index_t* __restrict__ er,
                                      const index_t* __restrict__ ec, index_t n, double* __restrict__ out) {
  for (index_t k = first_index(); k < n; k += grid_stride()) out[k] = live[ec[k] * r + rows[er[k]]];
}

inline void launch_gather_entries(const double* live, index_t r, const index_t* rows, const index_t* er,
                                  const index_t* ec, index_t n, double* out, cudaStream_t stream) {
  if (n == 0) return;
  gather_entries_kernel<><<<grid_for(n), threads_per_block, 0, stream>>>(live, r, rows, er, ec, n, out);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `z[ec[k] * m + er[k]] = x[k]`: scatters the solution into the zeroed column-major `[m, c]`
/// Z[rows, :].
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void scatter_entries_kernel(const double* __restrict__ x, const index_t* __restrict__ er,
                                       const index_t* __restrict__ ec, index_t n, index_t m,
                                       double* __restrict__ z) {
  for (index_t k = first_index(); k < n; k += grid_stride()) z[ec[k] * m + er[k]] = x[k];
}

inline void launch_scatter_entries(const double* x, const index_t* er, const index_t* ec, index_t n,
                                   index_t m, double* z, cudaStream_t stream) {
  if (n == 0) return;
  scatter_entries_kernel<><<<grid_for(n), threads_per_block, 0, stream>>>(x, er, ec, n, m, z);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `live(rows[er[k]], ec[k]) = 0` for k < n.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void zero_entries_kernel(double* __restrict__ live, index_t r, const index_t* __restrict__ rows,
                                    const index_t* __restrict__ er, const index_t* __restrict__ ec,
                                    index_t n) {
  for (index_t k = first_index(); k < n; k += grid_stride()) live[ec[k] * r + rows[er[k]]] = 0.0;
}

inline void launch_zero_entries(double* live, index_t r, const index_t* rows, const index_t* er,
                                const index_t* ec, index_t n, cudaStream_t stream) {
  if (n == 0) return;
  zero_entries_kernel<><<<grid_for(n), threads_per_block, 0, stream>>>(live, r, rows, er, ec, n);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- whole-mask PCG ------------------------------------------------------------------------------

/// The keep indicator of the live sub-layer (column-major `[r, c]`: 1 kept, 0 masked) from mask
/// words (layout of surgeon::mask) and the live index lists; also counts the masked entries.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void keep_indicator_kernel(const std::uint64_t* __restrict__ words, index_t words_per_row,
                                      const index_t* __restrict__ rows, index_t r,
                                      const index_t* __restrict__ cols, index_t c, double* __restrict__ keep,
                                      unsigned long long* __restrict__ masked) {
  const index_t total = r * c;
  unsigned long long local = 0;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t q = e / r;
    const index_t p = e - q * r;
    const index_t i = rows[p];
    const index_t j = cols[q];
    const bool pruned = ((words[i * words_per_row + (j >> 6)] >> (j & 63)) & 1u) != 0;
    keep[e] = pruned ? 0.0 : 1.0;
    local += pruned ? 1u : 0u;
  }
  // One atomic per warp, not per thread, on the single counter (blocks are whole warps, and every
  // lane reaches the shuffle).
  for (int offset = 16; offset > 0; offset /= 2) local += __shfl_down_sync(0xFFFFFFFFu, local, offset);
  if ((threadIdx.x & 31u) == 0 && local != 0) atomicAdd(masked, local);
}

inline void launch_keep_indicator(const std::uint64_t* words, index_t words_per_row, const index_t* rows,
                                  index_t r, const index_t* cols, index_t c, double* keep,
                                  unsigned long long* masked, cudaStream_t stream) {
  if (r == 0 || c == 0) return;
  keep_indicator_kernel<><<<grid_for(r * c), threads_per_block, 0, stream>>>(words, words_per_row, rows, r,
                                                                             cols, c, keep, masked);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Runs `op(k)` for every k in [0, count), one thread per index over a grid-stride loop: the
/// loop of the vector kernels of the whole-mask update, whose operations are the small structs
/// below.
template <typename Op>
__global__ void for_each_kernel(Op op, index_t count) {
  for (index_t k = first_index(); k < count; k += grid_stride()) op(k);
}

/// Enqueues `for_each_kernel` (nothing for an empty range).
template <typename Op>
void launch_for_each(Op op, index_t count, cudaStream_t stream) {
  if (count == 0) return;
  for_each_kernel<Op><<<grid_for(count), threads_per_block, 0, stream>>>(op, count);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `y[k] = x[k] · scale[k]` (elementwise, `y` may alias `x`).
struct multiply_op {
  const double* x;
  const double* scale;
  double* y;
  __device__ void operator()(index_t k) const { y[k] = x[k] * scale[k]; }
};

/// `y[k] = x[k] · (1 − keep[k])` (the masked part).
struct masked_part_op {
  const double* x;
  const double* keep;
  double* y;
  __device__ void operator()(index_t k) const { y[k] = x[k] * (1.0 - keep[k]); }
};

/// `live[k] = (live[k] + u[k]) · keep[k]`.
struct finish_pcg_op {
  double* live;
  const double* u;
  const double* keep;
  __device__ void operator()(index_t k) const { live[k] = (live[k] + u[k]) * keep[k]; }
};

/// `p[k] = z[k] + beta · p[k]`.
struct direction_op {
  const double* z;
  double beta;
  double* p;
  __device__ void operator()(index_t k) const { p[k] = z[k] + beta * p[k]; }
};

inline void launch_multiply(const double* x, const double* scale, double* y, index_t count,
                            cudaStream_t stream) {
  launch_for_each(multiply_op{x, scale, y}, count, stream);
}

inline void launch_masked_part(const double* x, const double* keep, double* y, index_t count,
                               cudaStream_t stream) {
  launch_for_each(masked_part_op{x, keep, y}, count, stream);
}

inline void launch_finish_pcg(double* live, const double* u, const double* keep, index_t count,
                              cudaStream_t stream) {
  launch_for_each(finish_pcg_op{live, u, keep}, count, stream);
}

inline void launch_direction(const double* z, double beta, double* p, index_t count, cudaStream_t stream) {
  launch_for_each(direction_op{z, beta, p}, count, stream);
}

}  // namespace surgeon::cuda::detail

#endif  // SURGEON_HAS_CUDA
