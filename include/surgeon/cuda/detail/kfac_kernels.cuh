/// @file cuda/detail/kfac_kernels.cuh
/// @brief Device kernels of the CUDA K-FAC and curvature code, with their checked launchers.
///
/// Internal: used by cuda/kfac.hpp and cuda/curvature.hpp. nvcc only; no Eigen, no fmt in device
/// code (the launchers are host code and report failures through `SURGEON_CUDA_CHECK_LAUNCH`).
///
/// Layout: matrices handed to these kernels are either row-major token blocks `[rows, cols]` with
/// leading dimension `ld` (element (t, j) at `x[t * ld + j]`, as view.hpp), or square column-major
/// factors of order n with column stride `ldc` (element (r, c) at `a[c * ldc + r]`).
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/check.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace surgeon::cuda::detail {

/// Threads per block of the one-dimensional kernels.
inline constexpr int threads_per_block = 256;

/// Blocks of a grid-stride launch over `total` elements (at least 1, at most 65535·32).
inline unsigned grid_for(index_t total) {
  const index_t blocks = (total + threads_per_block - 1) / threads_per_block;
  return static_cast<unsigned>(std::clamp<index_t>(blocks, 1, index_t{65535} * 32));
}

/// Calls `f(e, outer, inner)` for every flat index e of an `[outer_count, inner_count]` grid
/// (`e = outer·inner_count + inner`), one thread per index over a grid-stride loop: the loop of
/// the element-wise kernels, which each say only what an element does.
template <typename F>
__device__ void for_each_index(index_t outer_count, index_t inner_count, const F& f) {
  const index_t total = outer_count * inner_count;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t outer = e / inner_count;
    f(e, outer, e - outer * inner_count);
  }
}

template <typename T>
__device__ inline bool is_finite_value(T value) {
  return isfinite(value);
}

// ---- non-finite detection ------------------------------------------------------------------------

/// Sets `*flag = 1` when any element of the row-major `[rows, cols]` block (leading dimension `ld`)
/// is a NaN or an infinity. Every writer writes the same value, so plain stores suffice.
template <typename T>
__global__ void flag_nonfinite_kernel(const T* __restrict__ x, index_t rows, index_t cols, index_t ld,
                                      int* __restrict__ flag) {
  const index_t total = rows * cols;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  bool bad = false;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t t = e / cols;
    const index_t j = e - t * cols;
    bad |= !is_finite_value(x[t * ld + j]);
  }
  if (bad) *flag = 1;
}

/// Enqueues `flag_nonfinite_kernel` on `stream` (the flag is not reset here).
template <typename T>
void launch_flag_nonfinite(const T* x, index_t rows, index_t cols, index_t ld, int* flag,
                           cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  flag_nonfinite_kernel<T><<<grid_for(rows * cols), threads_per_block, 0, stream>>>(x, rows, cols, ld, flag);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- conversion ----------------------------------------------------------------------------------

/// Copies the row-major `[rows, cols]` block `src` (leading dimension `ld`) into the packed
/// `dst` (leading dimension `cols`), converting each element to `Out`.
template <typename In, typename Out>
__global__ void convert_rows_kernel(const In* __restrict__ src, index_t rows, index_t cols, index_t ld,
                                    Out* __restrict__ dst) {
  for_each_index(rows, cols,
                 [&](index_t e, index_t t, index_t j) { dst[e] = static_cast<Out>(src[t * ld + j]); });
}

template <typename In, typename Out>
void launch_convert_rows(const In* src, index_t rows, index_t cols, index_t ld, Out* dst,
                         cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  convert_rows_kernel<In, Out>
      <<<grid_for(rows * cols), threads_per_block, 0, stream>>>(src, rows, cols, ld, dst);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- bias augmentation ---------------------------------------------------------------------------

/// Block shape of `bias_update_kernel`: 32 columns by 8 row partitions.
inline constexpr int bias_block_x = 32;
inline constexpr int bias_block_y = 8;

/// The bias row of a factor of order `n = cols + 1` (column-major lower triangle, column stride
/// `ldc`): for every column j, `state(cols, j) = beta · state(cols, j) + alpha · Σ_t x(t, j)` with
/// the sum formed in double and rounded to `Acc` (as the CPU accumulator); block (0, 0) also
/// updates the corner `state(cols, cols) = beta · corner + alpha · rows`.
/// Deterministic: each column is reduced by one block in a fixed order.
template <typename In, typename Acc>
__global__ void bias_update_kernel(const In* __restrict__ x, index_t rows, index_t cols, index_t ld,
                                   Acc alpha, Acc beta, Acc* __restrict__ state, index_t ldc) {
  __shared__ double partial[bias_block_y][bias_block_x];
  const index_t j = static_cast<index_t>(blockIdx.x) * bias_block_x + threadIdx.x;
  double sum = 0.0;
  if (j < cols) {
    for (index_t t = threadIdx.y; t < rows; t += bias_block_y) sum += static_cast<double>(x[t * ld + j]);
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0) {
    double total = 0.0;
    for (int k = 0; k < bias_block_y; ++k) total += partial[k][threadIdx.x];
    if (j < cols) {
      Acc& entry = state[j * ldc + cols];
      entry = static_cast<Acc>(beta * entry + alpha * static_cast<Acc>(total));
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      Acc& corner = state[cols * ldc + cols];
      corner = static_cast<Acc>(beta * corner + alpha * static_cast<Acc>(rows));
    }
  }
}

template <typename In, typename Acc>
void launch_bias_update(const In* x, index_t rows, index_t cols, index_t ld, Acc alpha, Acc beta, Acc* state,
                        index_t ldc, cudaStream_t stream) {
  const index_t blocks = std::max<index_t>(1, (cols + bias_block_x - 1) / bias_block_x);
  const dim3 block(bias_block_x, bias_block_y);
  bias_update_kernel<In, Acc>
      <<<static_cast<unsigned>(blocks), block, 0, stream>>>(x, rows, cols, ld, alpha, beta, state, ldc);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- element-wise helpers ------------------------------------------------------------------------

/// `y[k] += x[k]` for k in [0, count).
template <typename T>
__global__ void accumulate_kernel(T* __restrict__ y, const T* __restrict__ x, index_t count) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < count; k += stride) {
    y[k] += x[k];
  }
}

template <typename T>
void launch_accumulate(T* y, const T* x, index_t count, cudaStream_t stream) {
  if (count == 0) return;
  accumulate_kernel<T><<<grid_for(count), threads_per_block, 0, stream>>>(y, x, count);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `out` (packed n x n, symmetric) = `scale` · the symmetric matrix whose lower triangle is the
/// column-major `lower` (column stride n), in double.
template <typename T>
__global__ void symmetrised_kernel(const T* __restrict__ lower, index_t n, double scale,
                                   double* __restrict__ out) {
  for_each_index(n, n, [&](index_t e, index_t c, index_t r) {
    const T value = r >= c ? lower[c * n + r] : lower[r * n + c];
    out[e] = scale * static_cast<double>(value);
  });
}

template <typename T>
void launch_symmetrised(const T* lower, index_t n, double scale, double* out, cudaStream_t stream) {
  symmetrised_kernel<T><<<grid_for(n * n), threads_per_block, 0, stream>>>(lower, n, scale, out);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `a(i, i) += shift` for i in [0, n), column stride `ldc`.
template <typename T>
__global__ void add_diagonal_kernel(T* __restrict__ a, index_t n, index_t ldc, T shift) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    a[i * ldc + i] += shift;
  }
}

template <typename T>
void launch_add_diagonal(T* a, index_t n, index_t ldc, T shift, cudaStream_t stream) {
  add_diagonal_kernel<T><<<grid_for(n), threads_per_block, 0, stream>>>(a, n, ldc, shift);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `*trace = Σ_i a(i, i)` (column stride `ldc`), by one block in a fixed order (deterministic).
template <typename T>
__global__ void trace_kernel(const T* __restrict__ a, index_t n, index_t ldc, double* __restrict__ trace) {
  __shared__ double partial[threads_per_block];
  double sum = 0.0;
  for (index_t i = threadIdx.x; i < n; i += threads_per_block) sum += static_cast<double>(a[i * ldc + i]);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = threads_per_block / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) *trace = partial[0];
}

template <typename T>
void launch_trace(const T* a, index_t n, index_t ldc, double* trace, cudaStream_t stream) {
  trace_kernel<T><<<1, threads_per_block, 0, stream>>>(a, n, ldc, trace);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- symmetrisation ------------------------------------------------------------------------------

inline constexpr int tile_dim = 32;
inline constexpr int tile_rows = 8;

/// Copies the lower triangle of the column-major `a` (order n, column stride `ldc`) onto its strict
/// upper triangle, `a(r, c) = a(c, r)` for r < c, through 32 x 32 shared-memory tiles so that reads
/// and writes are coalesced. Block (bx, by) fills destination tile rows `by`, columns `bx`; tiles
/// below the diagonal (by > bx) have nothing to do.
template <typename T>
__global__ void lower_to_upper_kernel(T* __restrict__ a, index_t n, index_t ldc) {
  __shared__ T tile[tile_dim][tile_dim + 1];
  if (blockIdx.y > blockIdx.x) return;
  const index_t row0 = static_cast<index_t>(blockIdx.y) * tile_dim;  // destination rows
  const index_t col0 = static_cast<index_t>(blockIdx.x) * tile_dim;  // destination columns
  // Source (the transposed tile): rows col0 + threadIdx.x, columns row0 + k.
  for (int k = threadIdx.y; k < tile_dim; k += tile_rows) {
    const index_t r = col0 + threadIdx.x;
    const index_t c = row0 + k;
    if (r < n && c < n) tile[threadIdx.x][k] = a[c * ldc + r];
  }
  __syncthreads();
  for (int k = threadIdx.y; k < tile_dim; k += tile_rows) {
    const index_t r = row0 + threadIdx.x;
    const index_t c = col0 + k;
    // a(r, c) = a(c, r), which sits in the tile at [c - col0][r - row0] = [k][threadIdx.x].
    if (r < c && c < n) a[c * ldc + r] = tile[k][threadIdx.x];
  }
}

template <typename T>
void launch_lower_to_upper(T* a, index_t n, index_t ldc, cudaStream_t stream) {
  const index_t tiles = (n + tile_dim - 1) / tile_dim;
  SURGEON_EXPECTS(tiles <= 65535, "lower_to_upper: order {} is too large for one grid", n);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(tiles));
  const dim3 block(tile_dim, tile_rows);
  lower_to_upper_kernel<T><<<grid, block, 0, stream>>>(a, n, ldc);
  SURGEON_CUDA_CHECK_LAUNCH();
}

}  // namespace surgeon::cuda::detail

#endif  // SURGEON_HAS_CUDA
