/// @file cuda/detail/first_order_kernels.cuh
/// @brief Device kernels of the CUDA first-order correction (cuda/first_order.hpp), with their
/// checked launchers: Adam's element-wise step.
///
/// Internal: used by cuda/first_order.hpp. nvcc only; no Eigen, no fmt in device code.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/detail/kfac_kernels.cuh>

#include <cuda_runtime.h>

namespace surgeon::cuda::detail {

/// One Adam step on `n` parameters `p` from their gradients `g` and moments `m`, `v`, then `g = 0`:
///   m = β₁ m + (1 − β₁) g;  v = β₂ v + (1 − β₂) g²;  p −= step · m / (√v / root2 + ε)
/// with `step = lr / (1 − β₁ᵗ)` and `root2 = √(1 − β₂ᵗ)` from the host. Every operation is rounded
/// on its own (no contraction into FMAs), as the CPU adapter evaluates it in float.
template <int = 0>  // a template, so that the header defines no non-inline symbol
__global__ void adam_kernel(float* __restrict__ p, float* __restrict__ g, float* __restrict__ m,
                            float* __restrict__ v, index_t n, float beta1, float beta2, float step,
                            float root2, float epsilon) {
  const float keep1 = 1.0f - beta1;
  const float keep2 = 1.0f - beta2;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const float grad = g[e];
    const float mean = __fadd_rn(__fmul_rn(beta1, m[e]), __fmul_rn(keep1, grad));
    const float square = __fadd_rn(__fmul_rn(beta2, v[e]), __fmul_rn(keep2, __fmul_rn(grad, grad)));
    const float denominator = __fadd_rn(__fdiv_rn(__fsqrt_rn(square), root2), epsilon);
    p[e] = __fsub_rn(p[e], __fdiv_rn(__fmul_rn(step, mean), denominator));
    m[e] = mean;
    v[e] = square;
    g[e] = 0.0f;
  }
}

/// Enqueues `adam_kernel` on `stream` (nothing for n = 0).
inline void launch_adam(float* p, float* g, float* m, float* v, index_t n, float beta1, float beta2,
                        float step, float root2, float epsilon, cudaStream_t stream) {
  if (n == 0) return;
  adam_kernel<>
      <<<grid_for(n), threads_per_block, 0, stream>>>(p, g, m, v, n, beta1, beta2, step, root2, epsilon);
  SURGEON_CUDA_CHECK_LAUNCH();
}

}  // namespace surgeon::cuda::detail

#endif  // SURGEON_HAS_CUDA
