/// @file cuda/detail/select_kernels.cuh
/// @brief Device kernels of the CUDA mask selection (cuda/select.hpp), with their checked launchers.
///
/// Internal. nvcc only; no Eigen, no fmt in device code (the launchers are host code and report
/// failures through `SURGEON_CUDA_CHECK_LAUNCH`).
///
/// The selection mirrors the host's (select.hpp) exactly: the k-th smallest candidate is found by a
/// radix select over the same order keys, so only histograms of 256 counts ever leave the device,
/// and ties are resolved by a second radix select over candidate positions. Layout: costs are
/// row-major `[rows, cols]` with leading dimension `ld` (view.hpp); a candidate's *position* is its
/// layer's offset plus its row-major flat index `i·cols + j` (elements) or `i·(cols/M) + b`
/// (blocks); masks are words as `surgeon::mask` (bit `j & 63` of word `i·words_per_row + j/64`).
///
/// The kernels and launchers are templates on the cost type `T` (only `double` is used) so that this
/// header, included by several translation units, defines no non-inline symbol.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/check.hpp>

#include <cuda_runtime.h>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cstdint>

namespace surgeon::cuda::detail {

/// Threads per block of every selection kernel (a multiple of 64: see `select_per_row_kernel`).
inline constexpr int select_threads = 256;
/// Warps per block of the word-per-warp marking kernels.
inline constexpr int select_warps = select_threads / 32;
/// Digits of the radix select: 8 bits, so a block's histogram (256 counters) lives in shared memory.
inline constexpr int select_bins = 256;
/// At most this many blocks per histogram launch: about one resident wave on a large GPU, so that
/// the per-block flush of the shared histogram costs at most 256 global atomics per block.
inline constexpr index_t select_histogram_blocks = 1024;

static_assert(select_threads % 64 == 0, "select_threads must be a multiple of 64");
static_assert(sizeof(unsigned long long) == sizeof(std::uint64_t), "mask words are 64-bit");

/// Blocks for `work` items at `per_block` items per block, clamped to [1, `max_blocks`] (the kernels
/// are grid-stride loops, so fewer blocks than items is always correct).
inline unsigned select_grid(index_t work, index_t per_block, index_t max_blocks = index_t{65535} * 32) {
  const index_t blocks = work / per_block + (work % per_block != 0 ? 1 : 0);
  return static_cast<unsigned>(std::clamp<index_t>(blocks, 1, max_blocks));
}

/// The device twin of `surgeon::detail::order_key`: an order-preserving map of a non-NaN double to
/// an unsigned key, -0 and +0 to the same key. Works on the bits (rather than `x + 0.0`) so that no
/// compiler flag can change it; equal to the host key for every non-NaN double.
__device__ inline std::uint64_t select_order_key(double x) {
  auto bits = static_cast<std::uint64_t>(__double_as_longlong(x));
  if ((bits << 1) == 0) bits = 0;  // -0.0 -> +0.0
  return (bits >> 63) != 0 ? ~bits : (bits | (std::uint64_t{1} << 63));
}

/// True when a candidate with order key `key` at global position `position` is among the k
/// smallest: strictly below the pivot, or equal to it and not after the cut position.
__device__ inline bool select_taken(std::uint64_t key, std::uint64_t position, std::uint64_t pivot,
                                    std::uint64_t cut) {
  return key < pivot || (key == pivot && position <= cut);
}

// ---- NaN detection -------------------------------------------------------------------------------

/// `*first = min(*first, e)` over the row-major flat indices e of the NaNs of the `[rows, cols]`
/// matrix. A grid-stride thread meets its indices in ascending order, so its first NaN is its
/// smallest and one atomic per thread suffices.
template <typename T>
__global__ void select_first_nan_kernel(const T* __restrict__ costs, index_t rows, index_t cols, index_t ld,
                                        unsigned long long* __restrict__ first) {
  const index_t total = rows * cols;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t i = e / cols;
    const index_t j = e - i * cols;
    if (isnan(costs[i * ld + j])) {
      atomicMin(first, static_cast<unsigned long long>(e));
      return;
    }
  }
}

/// Enqueues `select_first_nan_kernel` (`*first` is not reset here).
template <typename T>
void launch_select_first_nan(const T* costs, index_t rows, index_t cols, index_t ld,
                             unsigned long long* first, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  select_first_nan_kernel<T>
      <<<select_grid(rows * cols, select_threads), select_threads, 0, stream>>>(costs, rows, cols, ld, first);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- radix-select histograms ---------------------------------------------------------------------

/// One pass of the radix select over the candidates of one layer: counts, per 8-bit digit
/// `(value >> shift) & 255`, the candidates whose already-chosen high digits match
/// (`(value & known) == prefix`), adding into `histogram[256]`.
/// `ByPosition == false`: value = the order key of the cost (finding the pivot key).
/// `ByPosition == true`: only candidates whose key equals `pivot` count, value = their global
/// position `offset + i·cols + j` (finding the cut among the ties).
/// Counts are exact integers, so the result does not depend on the order of the atomics.
template <typename T, bool ByPosition>
__global__ void select_histogram_kernel(const T* __restrict__ costs, index_t rows, index_t cols, index_t ld,
                                        std::uint64_t offset, std::uint64_t pivot, std::uint64_t prefix,
                                        std::uint64_t known, int shift,
                                        unsigned long long* __restrict__ histogram) {
  __shared__ unsigned long long local[select_bins];
  for (int b = static_cast<int>(threadIdx.x); b < select_bins; b += static_cast<int>(blockDim.x))
    local[b] = 0;
  __syncthreads();
  const index_t total = rows * cols;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t i = e / cols;
    const index_t j = e - i * cols;
    const std::uint64_t key = select_order_key(costs[i * ld + j]);
    std::uint64_t value = key;
    if constexpr (ByPosition) {
      if (key != pivot) continue;
      value = offset + static_cast<std::uint64_t>(e);
    }
    if ((value & known) == prefix) atomicAdd(&local[(value >> shift) & 0xFFu], 1ull);
  }
  __syncthreads();
  for (int b = static_cast<int>(threadIdx.x); b < select_bins; b += static_cast<int>(blockDim.x)) {
    if (local[b] != 0) atomicAdd(&histogram[b], local[b]);
  }
}

/// Enqueues one histogram pass over a layer's `[rows, cols]` candidates (nothing for an empty one).
template <typename T, bool ByPosition>
void launch_select_histogram(const T* costs, index_t rows, index_t cols, index_t ld, std::uint64_t offset,
                             std::uint64_t pivot, std::uint64_t prefix, std::uint64_t known, int shift,
                             unsigned long long* histogram, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  select_histogram_kernel<T, ByPosition>
      <<<select_grid(rows * cols, select_threads, select_histogram_blocks), select_threads, 0, stream>>>(
          costs, rows, cols, ld, offset, pivot, prefix, known, shift, histogram);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- marking -------------------------------------------------------------------------------------

/// Writes every mask word `words[i·words_per_row + w]` of a `[rows, cols]` layer from
/// `take(i, j)` (called for j < cols only): one warp per word, lane l decides columns `64w + l` and
/// `64w + 32 + l`, two ballots form the word, lane 0 stores it, so there are no atomics and loads
/// are coalesced. Bits past `cols` come out 0. Called by every thread of the marking kernels.
template <typename Take>
__device__ void mark_words(index_t rows, index_t cols, index_t words_per_row,
                           std::uint64_t* __restrict__ words, const Take& take) {
  const index_t total_words = rows * words_per_row;
  const index_t warp_stride = static_cast<index_t>(gridDim.x) * select_warps;
  const unsigned lane = threadIdx.x & 31u;
  // The loop bound depends on the warp only, so every lane reaches every ballot.
  for (index_t w = static_cast<index_t>(blockIdx.x) * select_warps + threadIdx.x / 32; w < total_words;
       w += warp_stride) {
    const index_t i = w / words_per_row;
    const index_t first = (w - i * words_per_row) * 64;
    std::uint64_t word = 0;
    for (int half = 0; half < 2; ++half) {
      const index_t j = first + 32 * half + lane;
      const bool taken = j < cols && take(i, j);
      word |= static_cast<std::uint64_t>(__ballot_sync(0xFFFFFFFFu, taken)) << (32 * half);
    }
    if (lane == 0) words[w] = word;
  }
}

/// Writes every mask word of a layer whose candidates are its elements: bit (i, j) is set iff the
/// element is taken (`select_taken` with position `offset + i·cols + j`). One warp per word: lane l
/// decides columns `64w + l` and `64w + 32 + l`, two ballots form the word, lane 0 stores it, so
/// there are no atomics and loads are coalesced. Bits past `cols` come out 0.
template <typename T>
__global__ void select_mark_elements_kernel(const T* __restrict__ costs, index_t rows, index_t cols,
                                            index_t ld, std::uint64_t offset, std::uint64_t pivot,
                                            std::uint64_t cut, index_t words_per_row,
                                            std::uint64_t* __restrict__ words) {
  mark_words(rows, cols, words_per_row, words, [&](index_t i, index_t j) {
    const std::uint64_t position = offset + static_cast<std::uint64_t>(i * cols + j);
    return select_taken(select_order_key(costs[i * ld + j]), position, pivot, cut);
  });
}

template <typename T>
void launch_select_mark_elements(const T* costs, index_t rows, index_t cols, index_t ld, std::uint64_t offset,
                                 std::uint64_t pivot, std::uint64_t cut, index_t words_per_row,
                                 std::uint64_t* words, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  select_mark_elements_kernel<T>
      <<<select_grid(rows * words_per_row, select_warps), select_threads, 0, stream>>>(
          costs, rows, cols, ld, offset, pivot, cut, words_per_row, words);
  SURGEON_CUDA_CHECK_LAUNCH();
}

/// Writes every mask word of a layer selected by N:M blocks: bit (i, j) is set iff block
/// (i, b = j / m) is taken (its cost `block_costs[i·(cols/m) + b]`, position `offset + i·(cols/m) + b`)
/// and column j is among the n smallest of the block in (cost, column) order, i.e. fewer than n
/// columns of the block come before it — the set `surgeon::detail::sort_block` takes. One warp per
/// word as `select_mark_elements_kernel`. Cost: O(m) loads per element.
template <typename T>
__global__ void select_mark_nm_kernel(const T* __restrict__ costs, index_t rows, index_t cols, index_t ld,
                                      const T* __restrict__ block_costs, index_t m, index_t n,
                                      std::uint64_t offset, std::uint64_t pivot, std::uint64_t cut,
                                      index_t words_per_row, std::uint64_t* __restrict__ words) {
  const index_t blocks_per_row = cols / m;
  mark_words(rows, cols, words_per_row, words, [&](index_t i, index_t j) {
    const index_t b = j / m;
    const index_t block = i * blocks_per_row + b;
    const std::uint64_t position = offset + static_cast<std::uint64_t>(block);
    if (!select_taken(select_order_key(block_costs[block]), position, pivot, cut)) return false;
    const T* values = costs + i * ld + b * m;
    const index_t o = j - b * m;
    const std::uint64_t key = select_order_key(values[o]);
    index_t before = 0;
    for (index_t t = 0; t < m; ++t) {
      const std::uint64_t other = select_order_key(values[t]);
      if (other < key || (other == key && t < o)) ++before;
    }
    return before < n;
  });
}

template <typename T>
void launch_select_mark_nm(const T* costs, index_t rows, index_t cols, index_t ld, const T* block_costs,
                           index_t m, index_t n, std::uint64_t offset, std::uint64_t pivot, std::uint64_t cut,
                           index_t words_per_row, std::uint64_t* words, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  select_mark_nm_kernel<T><<<select_grid(rows * words_per_row, select_warps), select_threads, 0, stream>>>(
      costs, rows, cols, ld, block_costs, m, n, offset, pivot, cut, words_per_row, words);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- N:M block costs -----------------------------------------------------------------------------

/// `out[i·out_ld + b]` = the sum of the n smallest costs of block (i, b) (columns `[b·m, (b+1)·m)`
/// of row i), added in ascending (cost, column) order from 0.0 — the order of
/// `surgeon::detail::block_cost`, so the sums are bit-identical to the host's. One thread per
/// block; the t-th smallest is found as the smallest (key, column) after the (t-1)-th, so no
/// per-thread array of m entries is needed. Cost: O(n·m) loads per block.
template <typename T>
__global__ void select_block_costs_kernel(const T* __restrict__ costs, index_t rows, index_t cols, index_t ld,
                                          index_t m, index_t n, T* __restrict__ out, index_t out_ld) {
  const index_t blocks_per_row = cols / m;
  const index_t total = rows * blocks_per_row;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t i = e / blocks_per_row;
    const index_t b = e - i * blocks_per_row;
    const T* values = costs + i * ld + b * m;
    T sum = T(0);
    std::uint64_t previous_key = 0;
    index_t previous = -1;  // none yet
    for (index_t t = 0; t < n; ++t) {
      std::uint64_t best_key = 0;
      index_t best = -1;
      for (index_t o = 0; o < m; ++o) {
        const std::uint64_t key = select_order_key(values[o]);
        const bool after_previous =
            previous < 0 || key > previous_key || (key == previous_key && o > previous);
        // Strict `<` keeps the lowest column among equal keys (o ascends).
        if (after_previous && (best < 0 || key < best_key)) {
          best_key = key;
          best = o;
        }
      }
      sum += values[best];  // n <= m, so some column is always left
      previous_key = best_key;
      previous = best;
    }
    out[i * out_ld + b] = sum;
  }
}

template <typename T>
void launch_select_block_costs(const T* costs, index_t rows, index_t cols, index_t ld, index_t m, index_t n,
                               T* out, index_t out_ld, cudaStream_t stream) {
  const index_t total = rows * (cols / m);
  if (total == 0) return;
  select_block_costs_kernel<T><<<select_grid(total, select_threads), select_threads, 0, stream>>>(
      costs, rows, cols, ld, m, n, out, out_ld);
  SURGEON_CUDA_CHECK_LAUNCH();
}

// ---- per-row selection ---------------------------------------------------------------------------

/// Per-row selection of one layer: one block per row (grid-stride over rows) takes the k smallest
/// costs of its row in (cost, column) order (1 <= k <= cols), sets their bits in the zeroed mask
/// words, and raises `*max_key` to the row's k-th smallest key.
///
/// The block runs the host's radix select on its row (8 passes of 8-bit digits, histogram in shared
/// memory), which gives the pivot key and how many of the k smallest equal it (`equal_left`); then
/// it walks the row in chunks of `select_threads` columns in ascending order, numbering the ties with
/// a block-wide exclusive scan, and takes every cost below the pivot and the first `equal_left` ties.
/// Each warp's 32 columns are one half of a mask word (chunks start on multiples of 64), so a ballot
/// and one `atomicOr` per warp write them.
template <typename T>
__global__ void select_per_row_kernel(const T* __restrict__ costs, index_t rows, index_t cols, index_t ld,
                                      index_t k, index_t words_per_row, std::uint64_t* __restrict__ words,
                                      unsigned long long* __restrict__ max_key) {
  using block_scan = cub::BlockScan<int, select_threads>;
  __shared__ typename block_scan::TempStorage scan_storage;
  __shared__ unsigned long long histogram[select_bins];
  __shared__ std::uint64_t chosen_prefix;
  __shared__ index_t chosen_rank;
  const unsigned lane = threadIdx.x & 31u;
  const unsigned warp = threadIdx.x / 32;
  auto* word_base = reinterpret_cast<unsigned long long*>(words);
  // The loop bound depends on the block only, so every thread reaches every barrier.
  for (index_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const T* row = costs + i * ld;
    std::uint64_t prefix = 0;
    std::uint64_t known = 0;
    index_t rank = k - 1;
    for (int shift = 56; shift >= 0; shift -= 8) {
      for (int b = static_cast<int>(threadIdx.x); b < select_bins; b += select_threads) histogram[b] = 0;
      __syncthreads();
      for (index_t j = threadIdx.x; j < cols; j += select_threads) {
        const std::uint64_t key = select_order_key(row[j]);
        if ((key & known) == prefix) atomicAdd(&histogram[(key >> shift) & 0xFFu], 1ull);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        // As surgeon::detail::kth_smallest_key: the digit holding the rank-th candidate.
        index_t remaining = rank;
        int digit = 0;
        for (; digit + 1 < select_bins; ++digit) {
          const auto count = static_cast<index_t>(histogram[digit]);
          if (remaining < count) break;
          remaining -= count;
        }
        chosen_prefix = prefix | (static_cast<std::uint64_t>(digit) << shift);
        chosen_rank = remaining;
      }
      __syncthreads();
      // Read before the next pass's first barrier; thread 0 rewrites them only after its second.
      prefix = chosen_prefix;
      rank = chosen_rank;
      known |= std::uint64_t{0xFF} << shift;
    }
    const std::uint64_t pivot = prefix;
    const index_t equal_left = rank + 1;
    index_t ties_before = 0;  // ties in the chunks already walked (the same in every thread)
    for (index_t base = 0; base < cols; base += select_threads) {
      const index_t j = base + threadIdx.x;
      const bool valid = j < cols;
      const std::uint64_t key = valid ? select_order_key(row[j]) : 0;
      const int tie = valid && key == pivot ? 1 : 0;
      int tie_rank = 0;
      int chunk_ties = 0;
      block_scan(scan_storage).ExclusiveSum(tie, tie_rank, chunk_ties);
      const bool take = valid && (key < pivot || (tie != 0 && ties_before + tie_rank < equal_left));
      const unsigned bits = __ballot_sync(0xFFFFFFFFu, take);
      if (lane == 0 && bits != 0) {
        const index_t column = base + 32 * static_cast<index_t>(warp);  // < cols: lane 0's column is valid
        atomicOr(word_base + i * words_per_row + column / 64, static_cast<unsigned long long>(bits)
                                                                  << (column % 64));
      }
      ties_before += chunk_ties;
      __syncthreads();  // scan_storage is reused by the next chunk
    }
    if (threadIdx.x == 0) atomicMax(max_key, static_cast<unsigned long long>(pivot));
  }
}

/// Enqueues `select_per_row_kernel` for a layer with `1 <= k <= cols` (nothing when `rows == 0`).
template <typename T>
void launch_select_per_row(const T* costs, index_t rows, index_t cols, index_t ld, index_t k,
                           index_t words_per_row, std::uint64_t* words, unsigned long long* max_key,
                           cudaStream_t stream) {
  if (rows == 0 || cols == 0 || k <= 0) return;
  select_per_row_kernel<T><<<select_grid(rows, 1), select_threads, 0, stream>>>(
      costs, rows, cols, ld, k, words_per_row, words, max_key);
  SURGEON_CUDA_CHECK_LAUNCH();
}

}  // namespace surgeon::cuda::detail

#endif  // SURGEON_HAS_CUDA
