/// @file cuda/detail/sparsegpt_kernels.cuh
/// @brief Device kernels of the CUDA SparseGPT (cuda/sparsegpt.hpp), with their checked launchers.
///
/// Internal: used by cuda/sparsegpt.hpp only. nvcc only; no Eigen, no fmt in device code (the
/// launchers are host code and report failures through `SURGEON_CUDA_CHECK_LAUNCH`).
///
/// Layouts (R rows, C columns):
/// - `w`: the caller's weights, row-major `[R, C]` with leading dimension `ld` (element (i, j) at
///   `w[i * ld + j]`, as view.hpp).
/// - `work`: the working copy in double, column-major `[R, C]` (element (i, j) at `work[j * R + i]`),
///   so that the R threads that step through one column touch one contiguous, coalesced column, and
///   cuBLAS applies the lazy batch update directly.
/// - `l`: the lower Cholesky factor L of `H⁻¹ = L Lᵀ`, packed column-major of order C (L(r, c) at
///   `l[c * C + r]`, r >= c). `U = Lᵀ` is the upper factor of SparseGPT (`H⁻¹ = UᵀU`), so row j of U
///   is the contiguous `l[j * C + q]`, q >= j, and `U_jj = l[j * C + j]`.
/// - masks: the words of `surgeon::mask` (row i starts at word `i * wpr`, bit `j & 63` of word
///   `j >> 6` of the row is (i, j)); a row never shares a word with another row.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/detail/kfac_kernels.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace surgeon::cuda::detail {

/// Threads per block of the per-row elimination: one warp, so that the few hundred warps of a
/// layer (one thread per row) spread over every SM instead of filling a few.
inline constexpr int sparsegpt_row_threads = 32;

/// Threads per block of the per-block reduction of forced counts.
inline constexpr int sparsegpt_count_threads = 256;

__device__ inline bool sparsegpt_bit(const std::uint64_t* row_words, index_t j) {
  return ((row_words[j >> 6] >> (j & 63)) & 1u) != 0;
}

__device__ inline void sparsegpt_set_bit(std::uint64_t* row_words, index_t j) {
  row_words[j >> 6] |= std::uint64_t{1} << (j & 63);
}

/// The order-preserving key of `detail::order_key` (select.hpp), on the device: unsigned order of
/// the keys is the numeric order of the doubles (-0.0 and +0.0 map to one key).
__device__ inline std::uint64_t sparsegpt_order_key(double x) {
  x += 0.0;  // -0.0 becomes +0.0
  const auto bits = static_cast<std::uint64_t>(__double_as_longlong(x));
  return (bits >> 63) != 0 ? ~bits : (bits | (std::uint64_t{1} << 63));
}

/// The SparseGPT score `W_iq² / U_qq²` of row i's current weight in column q (`wi` = `work + i`).
/// Written exactly as the CPU backend's expression (no addition, so nothing to contract into an FMA).
__device__ inline double sparsegpt_score(const double* wi, index_t rows, const double* l, index_t cols,
                                         index_t q) {
  const double v = wi[q * rows];
  const double d = l[q * cols + q];
  return v * v / (d * d);
}

// ---- input checks and set-up ---------------------------------------------------------------------

/// `diagonal[i] = h(i, i)` of the row-major `[n, n]` `h` (leading dimension `ld`).
template <typename T>
__global__ void sparsegpt_diagonal_kernel(const T* __restrict__ h, index_t n, index_t ld,
                                          T* __restrict__ diagonal) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    diagonal[i] = h[i * ld + i];
  }
}

inline void launch_sparsegpt_diagonal(const double* h, index_t n, index_t ld, double* diagonal,
                                      cudaStream_t stream) {
  if (n == 0) return;
  sparsegpt_diagonal_kernel<double><<<grid_for(n), threads_per_block, 0, stream>>>(h, n, ld, diagonal);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// The matrix whose Cholesky factorisation is attempted, column-major packed order n:
/// `a(r, c) = h(max(r, c), min(r, c))` (the lower triangle of the row-major `h` mirrored, exactly the
/// entries the CPU backend reads), with the rows and columns of dead inputs cleared, `shift` added
/// to the diagonal and `a(j, j) = 1` for a dead j. Rebuilt from `h` at every attempt, so no pristine
/// copy has to be kept.
template <typename T>
__global__ void sparsegpt_factor_input_kernel(const T* __restrict__ h, index_t n, index_t ld,
                                              const unsigned char* __restrict__ dead, T shift,
                                              T* __restrict__ a) {
  for_each_index(n, n, [&](index_t e, index_t c, index_t r) {
    T value = T(0);
    if (r == c) {
      value = dead[r] != 0 ? T(1) : h[r * ld + r] + shift;
    } else if (dead[r] == 0 && dead[c] == 0) {
      value = r > c ? h[r * ld + c] : h[c * ld + r];
    }
    a[e] = value;
  });
}

inline void launch_sparsegpt_factor_input(const double* h, index_t n, index_t ld, const unsigned char* dead,
                                          double shift, double* a, cudaStream_t stream) {
  if (n == 0) return;
  sparsegpt_factor_input_kernel<double>
      <<<grid_for(n * n), threads_per_block, 0, stream>>>(h, n, ld, dead, shift, a);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `work(i, j) = dead[j] ? 0 : double(w(i, j))`, from the row-major `w` into the column-major `work`
/// (enumerated in `work`'s order, so the writes are coalesced).
template <typename T>
__global__ void sparsegpt_load_kernel(const T* __restrict__ w, index_t rows, index_t cols, index_t ld,
                                      const unsigned char* __restrict__ dead, double* __restrict__ work) {
  const index_t total = rows * cols;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t j = e / rows;
    const index_t i = e - j * rows;
    work[e] = dead[j] != 0 ? 0.0 : static_cast<double>(w[i * ld + j]);
  }
}

template <typename T>
void launch_sparsegpt_load(const T* w, index_t rows, index_t cols, index_t ld, const unsigned char* dead,
                           double* work, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  sparsegpt_load_kernel<T>
      <<<grid_for(rows * cols), threads_per_block, 0, stream>>>(w, rows, cols, ld, dead, work);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// `counts[b]` = set mask bits in columns `[b·block, min(cols, (b + 1)·block))` of all rows: the
/// forced entries of every column block, counted before any selection (selection only ever sets
/// bits in the current block, so these stay the counts the CPU backend sees). One thread block per
/// column block, reduced in a fixed order (deterministic, no atomics).
template <typename Word>
__global__ void sparsegpt_block_counts_kernel(const Word* __restrict__ words, index_t rows, index_t cols,
                                              index_t wpr, index_t block, index_t* __restrict__ counts) {
  __shared__ index_t partial[sparsegpt_count_threads];
  const index_t j0 = static_cast<index_t>(blockIdx.x) * block;
  const index_t j1 = j0 + block < cols ? j0 + block : cols;
  index_t local = 0;
  for (index_t i = threadIdx.x; i < rows; i += sparsegpt_count_threads) {
    const Word* row = words + i * wpr;
    for (index_t k = j0 >> 6; k <= (j1 - 1) >> 6; ++k) {
      // Bits [lo, hi) of word k lie in [j0, j1).
      const index_t lo = (j0 > k * 64 ? j0 : k * 64) - k * 64;
      const index_t hi = (j1 < k * 64 + 64 ? j1 : k * 64 + 64) - k * 64;
      const Word upper = hi == 64 ? ~Word{0} : (Word{1} << hi) - 1;
      const Word bits = row[k] & upper & (~Word{0} << lo);
      local += __popcll(static_cast<unsigned long long>(bits));
    }
  }
  partial[threadIdx.x] = local;
  __syncthreads();
  for (int width = sparsegpt_count_threads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) counts[blockIdx.x] = partial[0];
}

inline void launch_sparsegpt_block_counts(const std::uint64_t* words, index_t rows, index_t cols, index_t wpr,
                                          index_t block, index_t blocks, index_t* counts,
                                          cudaStream_t stream) {
  SURGEON_EXPECTS(blocks >= 1 && blocks <= 0x7fffffff, "sparsegpt: {} column blocks do not fit one grid",
                  blocks);
  sparsegpt_block_counts_kernel<std::uint64_t>
      <<<static_cast<unsigned>(blocks), sparsegpt_count_threads, 0, stream>>>(words, rows, cols, wpr, block,
                                                                              counts);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- unstructured selection ----------------------------------------------------------------------

/// Sort input of the column block `[j0, j0 + width)`: for the block-local row-major index
/// `e = i·width + (j − j0)` (increasing with the flat index `i·C + j`), `keys[e]` is the order key of
/// the score, or the largest key for a forced entry (already pruned: never among the chosen), and
/// `values[e] = e`. A stable sort of these pairs orders equal scores by flat index, the CPU rule.
template <typename T>
__global__ void sparsegpt_keys_kernel(const T* __restrict__ work, index_t rows, const T* __restrict__ l,
                                      index_t cols, const std::uint64_t* __restrict__ words, index_t wpr,
                                      index_t j0, index_t width, std::uint64_t* __restrict__ keys,
                                      index_t* __restrict__ values) {
  const index_t total = rows * width;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t i = e / width;
    const index_t j = j0 + (e - i * width);
    keys[e] = sparsegpt_bit(words + i * wpr, j)
                  ? ~std::uint64_t{0}
                  : sparsegpt_order_key(sparsegpt_score(work + i, rows, l, cols, j));
    values[e] = e;
  }
}

inline void launch_sparsegpt_keys(const double* work, index_t rows, const double* l, index_t cols,
                                  const std::uint64_t* words, index_t wpr, index_t j0, index_t width,
                                  std::uint64_t* keys, index_t* values, cudaStream_t stream) {
  sparsegpt_keys_kernel<double><<<grid_for(rows * width), threads_per_block, 0, stream>>>(
      work, rows, l, cols, words, wpr, j0, width, keys, values);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Marks the first `chosen` entries of the sorted block-local indices as pruned. Entries of one row
/// may share a mask word, hence the atomic OR.
template <typename Word>
__global__ void sparsegpt_mark_kernel(const index_t* __restrict__ sorted, index_t chosen, index_t j0,
                                      index_t width, index_t wpr, Word* words) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t p = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < chosen; p += stride) {
    const index_t e = sorted[p];
    const index_t i = e / width;
    const index_t j = j0 + (e - i * width);
    atomicOr(words + i * wpr + (j >> 6), Word{1} << (j & 63));
  }
}

inline void launch_sparsegpt_mark(const index_t* sorted, index_t chosen, index_t j0, index_t width,
                                  index_t wpr, std::uint64_t* words, cudaStream_t stream) {
  static_assert(sizeof(std::uint64_t) == sizeof(unsigned long long), "64-bit mask words");
  if (chosen == 0) return;
  sparsegpt_mark_kernel<unsigned long long><<<grid_for(chosen), threads_per_block, 0, stream>>>(
      sorted, chosen, j0, width, wpr, reinterpret_cast<unsigned long long*>(words));
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- elimination ---------------------------------------------------------------------------------

/// N:M choice of one row for the group of columns `[g0, g0 + m)`, from the row's current weights:
/// the forced entries of the group (bits already set) count first, then the `n − forced` lowest
/// (score, column) pairs among the others are set. Two passes: find the pair of rank `need − 1`
/// (ranks of a total order are distinct), then set every candidate at or below it. Cost O(m²) per
/// group, no local arrays, so any m works; per block that is at most the elimination's own O(B²).
__device__ inline void sparsegpt_choose_group(const double* wi, index_t rows, const double* l, index_t cols,
                                              std::uint64_t* row_words, index_t g0, index_t n, index_t m) {
  const index_t g1 = g0 + m;
  index_t forced = 0;
  for (index_t q = g0; q < g1; ++q) forced += sparsegpt_bit(row_words, q) ? 1 : 0;
  const index_t need = n - forced;
  if (need <= 0) return;
  double limit_score = 0.0;
  index_t limit_column = -1;
  for (index_t q = g0; q < g1 && limit_column < 0; ++q) {
    if (sparsegpt_bit(row_words, q)) continue;
    const double s = sparsegpt_score(wi, rows, l, cols, q);
    index_t rank = 0;
    for (index_t p = g0; p < g1; ++p) {
      if (p == q || sparsegpt_bit(row_words, p)) continue;
      const double t = sparsegpt_score(wi, rows, l, cols, p);
      if (t < s || (t == s && p < q)) ++rank;
    }
    if (rank == need - 1) {
      limit_score = s;
      limit_column = q;
    }
  }
  // Only column q's own bit is set at step q, so the candidate test still sees the entry state.
  for (index_t q = g0; q < g1; ++q) {
    if (sparsegpt_bit(row_words, q)) continue;
    const double s = sparsegpt_score(wi, rows, l, cols, q);
    if (s < limit_score || (s == limit_score && q <= limit_column)) sparsegpt_set_bit(row_words, q);
  }
}

/// Eliminates the columns `[j0, j1)` of one row per thread, in order. Rows are independent: row i's
/// update reads only its own weights, its own mask bits and the rows of U. For each column j: (N:M,
/// at a group's first column) choose the group; if (i, j) is pruned, `e = W_ij / U_jj`,
/// `W_iq −= e·U_jq` for q in (j, j1) and `W_ij = 0` exactly (the CPU's update at q = j leaves
/// rounding residue there, then zeroes it). `errors(i, j − j0) = e` (0 when kept), column-major
/// `[R, j1 − j0]` with leading dimension R, for the lazy batch update. A row whose pruned weight is
/// already 0 skips the update, which the CPU's would leave unchanged anyway.
template <bool NM>
__global__ void sparsegpt_eliminate_kernel(double* __restrict__ work, index_t rows,
                                           const double* __restrict__ l, index_t cols,
                                           std::uint64_t* __restrict__ words, index_t wpr, index_t j0,
                                           index_t j1, index_t n, index_t m, double* __restrict__ errors) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows) return;
  double* wi = work + i;  // (i, q) at wi[q * rows]
  std::uint64_t* row_words = words + i * wpr;
  double* ei = errors + i;  // (i, j − j0) at ei[(j − j0) * rows]
  for (index_t j = j0; j < j1; ++j) {
    if constexpr (NM) {
      if ((j - j0) % m == 0) sparsegpt_choose_group(wi, rows, l, cols, row_words, j, n, m);
    }
    double e = 0.0;
    if (sparsegpt_bit(row_words, j)) {
      const double* u = l + j * cols;  // u[q] = U(j, q), the same for every thread: a broadcast
      const double v = wi[j * rows];
      e = v / u[j];
      if (v != 0.0) {
#pragma unroll 4
        for (index_t q = j + 1; q < j1; ++q) wi[q * rows] -= e * u[q];
      }
      wi[j * rows] = 0.0;
    }
    ei[(j - j0) * rows] = e;
  }
}

inline void launch_sparsegpt_eliminate(bool n_m, double* work, index_t rows, const double* l, index_t cols,
                                       std::uint64_t* words, index_t wpr, index_t j0, index_t j1, index_t n,
                                       index_t m, double* errors, cudaStream_t stream) {
  const index_t blocks = (rows + sparsegpt_row_threads - 1) / sparsegpt_row_threads;
  SURGEON_EXPECTS(blocks <= 0x7fffffff, "sparsegpt: {} rows do not fit one grid", rows);
  const auto grid = static_cast<unsigned>(blocks);
  if (n_m) {
    sparsegpt_eliminate_kernel<true>
        <<<grid, sparsegpt_row_threads, 0, stream>>>(work, rows, l, cols, words, wpr, j0, j1, n, m, errors);
  } else {
    sparsegpt_eliminate_kernel<false>
        <<<grid, sparsegpt_row_threads, 0, stream>>>(work, rows, l, cols, words, wpr, j0, j1, n, m, errors);
  }
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- write-back ----------------------------------------------------------------------------------

/// `w(i, j) = pruned ? 0 : T(work(i, j))`: the weights rounded to T once, pruned entries exactly 0
/// (enumerated in `w`'s row-major order, so the writes to the caller's matrix are coalesced).
template <typename T>
__global__ void sparsegpt_store_kernel(const double* __restrict__ work, index_t rows, index_t cols,
                                       const std::uint64_t* __restrict__ words, index_t wpr,
                                       T* __restrict__ w, index_t ld) {
  const index_t total = rows * cols;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t i = e / cols;
    const index_t j = e - i * cols;
    w[i * ld + j] = sparsegpt_bit(words + i * wpr, j) ? T(0) : static_cast<T>(work[j * rows + i]);
  }
}

template <typename T>
void launch_sparsegpt_store(const double* work, index_t rows, index_t cols, const std::uint64_t* words,
                            index_t wpr, T* w, index_t ld, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  sparsegpt_store_kernel<T>
      <<<grid_for(rows * cols), threads_per_block, 0, stream>>>(work, rows, cols, words, wpr, w, ld);
  SURGEON_CUDA_CHECK_LAUNCH();
}

}  // namespace surgeon::cuda::detail

#endif  // SURGEON_HAS_CUDA
