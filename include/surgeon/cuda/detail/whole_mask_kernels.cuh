/// @file cuda/detail/whole_mask_kernels.cuh
/// @brief Device kernels of the whole-mask OBS update's removed-sweep form (cuda/update.hpp,
/// `pcg_form::removed_sweep`), with their checked launchers: precision conversions, column
/// permutations, and the within-block triangular sweeps of the preconditioner.
///
/// Internal. Layouts as layer_kernels.cuh: the live sub-layer and every [r, c] work matrix are
/// packed column-major double (element (p, q) at `m[q * r + p]`); `l` is the lower Cholesky factor
/// of the permuted Â⁻¹, packed column-major `[c, c]` (element (x, y) at `l[y * c + x]`), so that
/// the upper factor of the CPU code is U(x, y) = l[x * c + y] for x ≤ y. nvcc only.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/detail/layer_kernels.cuh>

#include <cuda_runtime.h>

namespace surgeon::cuda::detail {

/// `dst[k] = static_cast<Out>(src[k])`.
template <typename In, typename Out>
__global__ void convert_kernel(const In* __restrict__ src, Out* __restrict__ dst, index_t count) {
  for (index_t k = first_index(); k < count; k += grid_stride()) dst[k] = static_cast<Out>(src[k]);
}

template <typename In, typename Out>
void launch_convert(const In* src, Out* dst, index_t count, cudaStream_t stream) {
  if (count == 0) return;
  convert_kernel<In, Out><<<grid_for(count), threads_per_block, 0, stream>>>(src, dst, count);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `dst[k] = 1 − src[k]` (the removed indicator from the kept one).
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void complement_kernel(const double* __restrict__ src, double* __restrict__ dst, index_t count) {
  for (index_t k = first_index(); k < count; k += grid_stride()) dst[k] = 1.0 - src[k];
}

inline void launch_complement(const double* src, double* dst, index_t count, cudaStream_t stream) {
  if (count == 0) return;
  complement_kernel<><<<grid_for(count), threads_per_block, 0, stream>>>(src, dst, count);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Column k of `dst` [r, c] is column `order[k]` of `src`; with `complement`, `1 − src` instead
/// (the removed indicator from the kept one).
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void permute_columns_kernel(const double* __restrict__ src, index_t r, index_t c,
                                       const index_t* __restrict__ order, bool complement,
                                       double* __restrict__ dst) {
  const index_t total = r * c;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t k = e / r;
    const index_t p = e - k * r;
    const double value = src[order[k] * r + p];
    dst[e] = complement ? 1.0 - value : value;
  }
}

inline void launch_permute_columns(const double* src, index_t r, index_t c, const index_t* order,
                                   bool complement, double* dst, cudaStream_t stream) {
  if (r * c == 0) return;
  permute_columns_kernel<>
      <<<grid_for(r * c), threads_per_block, 0, stream>>>(src, r, c, order, complement, dst);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// The inverse permutation with a row scale: column `order[k]` of `dst` is column k of `src`
/// divided row by row by `g`.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void unpermute_scale_kernel(const double* __restrict__ src, index_t r, index_t c,
                                       const index_t* __restrict__ order, const double* __restrict__ g,
                                       double* __restrict__ dst) {
  const index_t total = r * c;
  for (index_t e = first_index(); e < total; e += grid_stride()) {
    const index_t k = e / r;
    const index_t p = e - k * r;
    dst[order[k] * r + p] = src[e] / g[p];
  }
}

inline void launch_unpermute_scale(const double* src, index_t r, index_t c, const index_t* order,
                                   const double* g, double* dst, cudaStream_t stream) {
  if (r * c == 0) return;
  unpermute_scale_kernel<><<<grid_for(r * c), threads_per_block, 0, stream>>>(src, r, c, order, g, dst);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Forward sweep inside columns [j0, j1) of `y` [r, c], one thread per row: for j in order,
/// y_j ← (y_j − Σ_{j0 ≤ x < j} y_x U(x, j)) / U(j, j) on removed entries, 0 on kept ones
/// (the columns before j0 were folded into y by a GEMM beforehand).
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void sweep_forward_kernel(double* __restrict__ y, index_t r, const double* __restrict__ l,
                                     index_t c, const double* __restrict__ removed, index_t j0, index_t j1) {
  for (index_t p = first_index(); p < r; p += grid_stride()) {
    for (index_t j = j0; j < j1; ++j) {
      double sum = y[j * r + p];
      for (index_t x = j0; x < j; ++x) sum -= y[x * r + p] * l[x * c + j];  // U(x, j) = L(j, x)
      y[j * r + p] = removed[j * r + p] != 0.0 ? sum / l[j * c + j] : 0.0;
    }
  }
}

inline void launch_sweep_forward(double* y, index_t r, const double* l, index_t c, const double* removed,
                                 index_t j0, index_t j1, cudaStream_t stream) {
  if (r == 0 || j1 <= j0) return;
  sweep_forward_kernel<><<<grid_for(r), threads_per_block, 0, stream>>>(y, r, l, c, removed, j0, j1);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Backward sweep inside columns [j0, j1), from the last: y_j ← (y_j − Σ_{j < x < j1} y_x U(j, x))
/// / U(j, j) on removed entries, 0 on kept ones (the columns from j1 on were folded in before).
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void sweep_backward_kernel(double* __restrict__ y, index_t r, const double* __restrict__ l,
                                      index_t c, const double* __restrict__ removed, index_t j0, index_t j1) {
  for (index_t p = first_index(); p < r; p += grid_stride()) {
    for (index_t j = j1 - 1; j >= j0; --j) {
      double sum = y[j * r + p];
      for (index_t x = j + 1; x < j1; ++x) sum -= y[x * r + p] * l[j * c + x];  // U(j, x) = L(x, j)
      y[j * r + p] = removed[j * r + p] != 0.0 ? sum / l[j * c + j] : 0.0;
    }
  }
}

inline void launch_sweep_backward(double* y, index_t r, const double* l, index_t c, const double* removed,
                                  index_t j0, index_t j1, cudaStream_t stream) {
  if (r == 0 || j1 <= j0) return;
  sweep_backward_kernel<><<<grid_for(r), threads_per_block, 0, stream>>>(y, r, l, c, removed, j0, j1);
  SURGEON_CUDA_CHECK_LAUNCH();
}

}  // namespace surgeon::cuda::detail

#endif  // SURGEON_HAS_CUDA
