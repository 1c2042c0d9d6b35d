// CUDA timings of the K-FAC primitives on LLM shapes, printed beside cuBLAS's GEMM of the same
// data so that the results read as ratios.
//
//   bench_cuda [--no-large-eigen] [--no-layer] [--layer-rows N]
//
// - Factor accumulation, 8192 tokens, C = 4096 and 11008: `device_factor_accumulator<float>::add`
//   (NaN check + SSYRK), the raw cublasSsyrk, and cublasSgemm of XᵀX (2·T·C² flops); float input
//   into a double accumulator (conversion + DSYRK); and the host-staged path (pinned, double-
//   buffered, 4 batches of 2048 tokens from host memory into a double accumulator).
// - Eigendecomposition (cusolverDn?syevd, vectors) of 4096² and 11008² in float and double, time
//   only (`--no-large-eigen` skips 11008²).
//
// - One LLM Surgeon unstructured 50 % shot on a 4096 x 11008 layer (Llama-7B's down projection:
//   G 4096², A 11008²) from 8192 calibration tokens: factor means, factorisation (dead structure,
//   damping, Cholesky inverses), costs, the CUB global threshold, then the chunked sparse-row update
//   (budget 2000: every row is its own chunk of ~5504 entries) and, on a fresh copy, the whole-mask
//   PCG update (tolerance 1e-3). `--layer-rows N` shrinks the layer to N rows (quick runs).
//
// TFLOP/s are compared with H200 SXM peaks, stated as assumptions: FP32 67 TFLOP/s (SIMT; cuBLAS's
// default math mode uses no TF32), FP64 67 TFLOP/s on the tensor cores (DMMA, which cuBLAS's FP64
// level-3 routines use on Hopper) and 34 TFLOP/s without them. SYRK work is counted as T·C·(C+1)
// flops, GEMM as 2·T·C². Plain main with cudaEvent timing (Google Benchmark may be absent).
#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/cost.hpp>
#include <surgeon/cuda/curvature.hpp>
#include <surgeon/cuda/kfac.hpp>
#include <surgeon/cuda/select.hpp>
#include <surgeon/cuda/update.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <type_traits>
#include <vector>

namespace {

using surgeon::index_t;
using surgeon::cuda::context;
using surgeon::cuda::device_buffer;

constexpr double fp32_peak_tflops = 67.0;
constexpr double fp64_tensor_peak_tflops = 67.0;
constexpr double fp64_simt_peak_tflops = 34.0;

/// Deterministic pseudo-random values in [-1, 1) (a 64-bit hash of the index).
__global__ void fill_kernel(float* x, index_t count, std::uint64_t seed) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < count; k += stride) {
    std::uint64_t h = static_cast<std::uint64_t>(k) * 0x9E3779B97F4A7C15ULL + seed;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    x[k] = static_cast<float>(static_cast<double>(h >> 11) * (2.0 / 9007199254740992.0) - 1.0);
  }
}

/// A float-to-double copy, for the double eigen input.
__global__ void to_double_kernel(const float* src, double* dst, index_t count) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < count; k += stride) {
    dst[k] = static_cast<double>(src[k]);
  }
}

unsigned blocks_for(index_t count) {
  const index_t blocks = (count + 255) / 256;
  return static_cast<unsigned>(blocks < 4096 ? (blocks < 1 ? 1 : blocks) : 4096);
}

/// Mean milliseconds of `body` over `reps` runs after one warm-up, timed by events on `stream`.
double time_ms(cudaStream_t stream, int reps, const std::function<void()>& body) {
  body();
  SURGEON_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  SURGEON_CUDA_CHECK(cudaEventCreate(&start));
  SURGEON_CUDA_CHECK(cudaEventCreate(&stop));
  SURGEON_CUDA_CHECK(cudaEventRecord(start, stream));
  for (int r = 0; r < reps; ++r) body();
  SURGEON_CUDA_CHECK(cudaEventRecord(stop, stream));
  SURGEON_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.0f;
  SURGEON_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  SURGEON_CUDA_CHECK(cudaEventDestroy(start));
  SURGEON_CUDA_CHECK(cudaEventDestroy(stop));
  return static_cast<double>(ms) / reps;
}

/// Wall-clock seconds of one run of `body` (which must synchronize before returning).
double time_once_s(const std::function<void()>& body) {
  const auto begin = std::chrono::steady_clock::now();
  body();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
}

double tflops(double flops, double ms) {
  return flops / (ms * 1e-3) / 1e12;
}

void bench_accumulation(context& ctx, index_t c, index_t tokens) {
  const int reps = c <= 4096 ? 10 : 3;
  cudaStream_t stream = ctx.stream();
  cublasHandle_t blas = ctx.cublas();
  SURGEON_CUBLAS_CHECK(cublasSetPointerMode(blas, CUBLAS_POINTER_MODE_HOST));
  device_buffer<float> x(ctx, tokens * c);
  fill_kernel<<<blocks_for(x.size()), 256, 0, stream>>>(x.data(), x.size(), 12345);
  SURGEON_CUDA_CHECK_LAUNCH();
  device_buffer<float> out(ctx, c * c);
  const int n = static_cast<int>(c);
  const int k = static_cast<int>(tokens);
  const float one = 1.0f;
  const float zero = 0.0f;

  const double gemm_ms = time_ms(stream, reps, [&] {
    // X row-major [T, C] is column-major C x T (ld C); XᵀX = M Mᵀ.
    SURGEON_CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, n, n, k, &one, x.data(), n, x.data(), n,
                                     &zero, out.data(), n));
  });
  const double syrk_ms = time_ms(stream, reps, [&] {
    SURGEON_CUBLAS_CHECK(cublasSsyrk(blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one, x.data(), n,
                                     &zero, out.data(), n));
  });
  surgeon::cuda::device_factor_accumulator<float> acc_float(ctx, c);
  const auto view = x.view(tokens, c);
  const double add_float_ms = time_ms(stream, reps, [&] { acc_float.add(ctx, view); });
  surgeon::cuda::device_factor_accumulator<double> acc_double(ctx, c);
  const double add_double_ms = time_ms(stream, reps, [&] { acc_double.add(ctx, view); });

  // Host-staged: the same tokens from (pageable) host memory, 4 batches, into a double accumulator.
  std::vector<float> host(static_cast<std::size_t>(tokens * c));
  x.copy_to_host_sync(host.data(), x.size());
  surgeon::cuda::device_factor_accumulator<double> acc_staged(ctx, c);
  const index_t batch = tokens / 4;
  const auto staged_pass = [&] {
    for (index_t first = 0; first + batch <= tokens; first += batch) {
      acc_staged.add(ctx, surgeon::make_host_matrix_view(host.data() + first * c, batch, c));
    }
    ctx.synchronize();
  };
  staged_pass();  // warm-up: allocates the staging buffers
  const double staged_s = time_once_s(staged_pass);

  const double syrk_flops = static_cast<double>(tokens) * static_cast<double>(c) * static_cast<double>(c + 1);
  const double gemm_flops =
      2.0 * static_cast<double>(tokens) * static_cast<double>(c) * static_cast<double>(c);
  std::printf("accumulation C=%lld tokens=%lld\n", static_cast<long long>(c), static_cast<long long>(tokens));
  std::printf("  cublasSgemm XtX            %9.3f ms  %6.2f TFLOP/s  (%4.1f%% of %.0f FP32)\n", gemm_ms,
              tflops(gemm_flops, gemm_ms), 100.0 * tflops(gemm_flops, gemm_ms) / fp32_peak_tflops,
              fp32_peak_tflops);
  std::printf("  cublasSsyrk                %9.3f ms  %6.2f TFLOP/s  time/GEMM %.2f\n", syrk_ms,
              tflops(syrk_flops, syrk_ms), syrk_ms / gemm_ms);
  std::printf("  accumulator<float>::add    %9.3f ms  %6.2f TFLOP/s  time/GEMM %.2f  (NaN check + SSYRK)\n",
              add_float_ms, tflops(syrk_flops, add_float_ms), add_float_ms / gemm_ms);
  std::printf(
      "  accumulator<double>::add   %9.3f ms  %6.2f TFLOP/s  (%4.1f%% of %.0f FP64 tensor, %.0f SIMT)\n",
      add_double_ms, tflops(syrk_flops, add_double_ms),
      100.0 * tflops(syrk_flops, add_double_ms) / fp64_tensor_peak_tflops, fp64_tensor_peak_tflops,
      fp64_simt_peak_tflops);
  std::printf("  host-staged <double>, 4x%lld tokens  %9.3f ms  %6.2f TFLOP/s  %.1f GB/s of input\n",
              static_cast<long long>(batch), staged_s * 1e3, tflops(syrk_flops, staged_s * 1e3),
              static_cast<double>(host.size() * sizeof(float)) / staged_s / 1e9);
}

template <typename T>
void bench_eigen(context& ctx, const device_buffer<float>& spd, index_t c, const char* name) {
  double seconds = 0.0;
  if constexpr (std::is_same_v<T, float>) {
    seconds = time_once_s([&] {
      const auto e = surgeon::cuda::symmetric_eigen(ctx, spd.view(c, c));
      ctx.synchronize();
    });
  } else {
    device_buffer<double> spd_double(ctx, c * c);
    to_double_kernel<<<blocks_for(c * c), 256, 0, ctx.stream()>>>(spd.data(), spd_double.data(), c * c);
    SURGEON_CUDA_CHECK_LAUNCH();
    ctx.synchronize();
    seconds = time_once_s([&] {
      const auto e = surgeon::cuda::symmetric_eigen(ctx, spd_double.view(c, c));
      ctx.synchronize();
    });
  }
  std::printf("  syevd %-6s %5lld^2   %9.3f s\n", name, static_cast<long long>(c), seconds);
}

void bench_eigens(context& ctx, index_t c) {
  // An SPD matrix: XᵀX / T + I from 8192 pseudo-random tokens.
  const index_t tokens = 8192;
  device_buffer<float> x(ctx, tokens * c);
  fill_kernel<<<blocks_for(x.size()), 256, 0, ctx.stream()>>>(x.data(), x.size(), 777);
  SURGEON_CUDA_CHECK_LAUNCH();
  surgeon::cuda::device_factor_accumulator<float> acc(ctx, c);
  acc.add(ctx, x.view(tokens, c));
  const device_buffer<double> mean = acc.mean(ctx);
  device_buffer<float> spd(ctx, c * c);
  std::vector<double> host_mean = mean.to_host();
  std::vector<float> host_spd(host_mean.size());
  for (std::size_t k = 0; k < host_mean.size(); ++k) host_spd[k] = static_cast<float>(host_mean[k]);
  for (index_t i = 0; i < c; ++i) host_spd[static_cast<std::size_t>(i * c + i)] += 1.0f;
  spd.copy_from_host_sync(host_spd.data(), spd.size());
  bench_eigen<float>(ctx, spd, c, "float");
  bench_eigen<double>(ctx, spd, c, "double");
}

/// One LLM Surgeon shot on a [rows, cols] layer (see the file comment).
void bench_llm_surgeon_layer(context& ctx, index_t rows, index_t cols, index_t tokens) {
  cudaStream_t stream = ctx.stream();
  std::printf("LLM Surgeon unstructured 50%% shot, layer %lld x %lld, %lld tokens\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(tokens));
  device_buffer<float> x(ctx, tokens * cols);
  device_buffer<float> dy(ctx, tokens * rows);
  device_buffer<float> w(ctx, rows * cols);
  fill_kernel<<<blocks_for(x.size()), 256, 0, stream>>>(x.data(), x.size(), 1);
  SURGEON_CUDA_CHECK_LAUNCH();
  fill_kernel<<<blocks_for(dy.size()), 256, 0, stream>>>(dy.data(), dy.size(), 2);
  SURGEON_CUDA_CHECK_LAUNCH();
  fill_kernel<<<blocks_for(w.size()), 256, 0, stream>>>(w.data(), w.size(), 3);
  SURGEON_CUDA_CHECK_LAUNCH();
  std::vector<float> w_host(static_cast<std::size_t>(w.size()));
  w.copy_to_host_sync(w_host.data(), w.size());

  surgeon::cuda::device_factor_accumulator<double> acc_a(ctx, cols);
  surgeon::cuda::device_factor_accumulator<double> acc_g(ctx, rows);
  const double accumulate_s = time_once_s([&] {
    acc_a.add(ctx, x.view(tokens, cols));
    acc_g.add(ctx, dy.view(tokens, rows));
    ctx.synchronize();
  });
  surgeon::cuda::kronecker_curvature curvature;
  const double factorize_s = time_once_s([&] {
    const device_buffer<double> g = acc_g.mean(ctx);
    const device_buffer<double> a = acc_a.mean(ctx);
    curvature = surgeon::cuda::factorize<float>(ctx, g.view(rows, rows), a.view(cols, cols),
                                                surgeon::damping{0.1, 0.01}, w.view(rows, cols));
    ctx.synchronize();
  });
  device_buffer<double> costs;
  const double costs_s = time_once_s([&] {
    costs =
        surgeon::cuda::element_costs<float>(ctx, surgeon::method::llm_surgeon, curvature, w.view(rows, cols));
    ctx.synchronize();
  });
  surgeon::selection chosen;
  const double select_s =
      time_once_s([&] { chosen = surgeon::cuda::select_unstructured(ctx, {costs.view(rows, cols)}, 0.5); });
  surgeon::update_report chunked;
  const double chunked_s = time_once_s([&] {
    chunked = surgeon::cuda::obs_update(ctx, curvature, w.view(rows, cols), chosen.masks[0],
                                        surgeon::correlate{2000});
  });
  w.copy_from_host_sync(w_host.data(), w.size());
  surgeon::update_report whole;
  const double whole_s = time_once_s([&] {
    whole = surgeon::cuda::obs_update_full(ctx, curvature, w.view(rows, cols), chosen.masks[0],
                                           surgeon::pcg_options{1e-3, 100});
  });
  // Flops: Cholesky inverse n³ per factor; per chunk n³/3 (potrf) + 2m·C² + 2R·m·C (update);
  // PCG 4R·C(R + C) per iteration.
  const double r = static_cast<double>(rows);
  const double c = static_cast<double>(cols);
  const double per_row =
      static_cast<double>(chunked.solved) / static_cast<double>(std::max<index_t>(chunked.chunks, 1));
  const double chunk_flops =
      static_cast<double>(chunked.chunks) * (per_row * per_row * per_row / 3.0 + 2.0 * c * c + 2.0 * r * c);
  const double pcg_flops = (static_cast<double>(whole.iterations) + 0.5) * 4.0 * r * c * (r + c);
  std::printf("  accumulate G and A (double)   %8.3f s\n", accumulate_s);
  std::printf("  factorize (G %lld², A %lld²)  %8.3f s  %6.2f TFLOP/s\n", static_cast<long long>(rows),
              static_cast<long long>(cols), factorize_s, (r * r * r + c * c * c) / factorize_s / 1e12);
  std::printf("  element costs                 %8.3f s\n", costs_s);
  std::printf("  global threshold (CUB)        %8.3f s  removed %lld of %lld\n", select_s,
              static_cast<long long>(chosen.removed), static_cast<long long>(rows * cols));
  std::printf(
      "  chunked update (budget 2000)  %8.3f s  %lld chunks, %lld entries, residual %.1e, %6.2f TFLOP/s\n",
      chunked_s, static_cast<long long>(chunked.chunks), static_cast<long long>(chunked.solved),
      chunked.relative_residual, chunk_flops / chunked_s / 1e12);
  std::printf("  whole-mask PCG (tol 1e-3)     %8.3f s  %d iterations, residual %.1e, %6.2f TFLOP/s\n",
              whole_s, whole.iterations, whole.relative_residual, pcg_flops / whole_s / 1e12);
  std::printf("  shot total (chunked update)   %8.3f s\n",
              accumulate_s + factorize_s + costs_s + select_s + chunked_s);
}

}  // namespace

int main(int argc, char* argv[]) {
  bool large_eigen = true;
  bool layer = true;
  long long layer_rows = 4096;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-large-eigen") == 0) {
      large_eigen = false;
    } else if (std::strcmp(argv[i], "--no-layer") == 0) {
      layer = false;
    } else if (std::strcmp(argv[i], "--layer-rows") == 0 && i + 1 < argc) {
      layer_rows = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--no-large-eigen] [--no-layer] [--layer-rows N]\n", argv[0]);
      return 2;
    }
  }
  if (!surgeon::cuda::device_available()) {
    std::puts("no CUDA device visible: skipping");
    return 77;
  }
  try {
    context ctx;
    cudaDeviceProp prop{};
    SURGEON_CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx.device()));
    std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount);
    std::printf("assumed peaks: FP32 %.0f TFLOP/s, FP64 %.0f (tensor) / %.0f (SIMT) TFLOP/s\n",
                fp32_peak_tflops, fp64_tensor_peak_tflops, fp64_simt_peak_tflops);
    bench_accumulation(ctx, 4096, 8192);
    bench_accumulation(ctx, 11008, 8192);
    std::puts("eigendecomposition (vectors, time only)");
    {
      // Warm-up: cuSOLVER's first call pays for its own initialisation.
      device_buffer<float> small(ctx, std::vector<float>(64 * 64, 0.0f));
      std::vector<float> eye(64 * 64, 0.0f);
      for (int i = 0; i < 64; ++i) eye[static_cast<std::size_t>(i * 64 + i)] = 1.0f;
      small.copy_from_host_sync(eye.data(), small.size());
      const auto e = surgeon::cuda::symmetric_eigen(ctx, small.view(64, 64));
      ctx.synchronize();
    }
    bench_eigens(ctx, 4096);
    if (large_eigen) bench_eigens(ctx, 11008);
    if (layer) bench_llm_surgeon_layer(ctx, static_cast<index_t>(layer_rows), 11008, 8192);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
