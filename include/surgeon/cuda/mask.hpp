/// @file cuda/mask.hpp
/// @brief `surgeon::cuda::device_mask`: a pruning bitmask in device memory, in exactly the layout
/// of `surgeon::mask` (rows on 64-bit word boundaries, bit `j & 63` of word `i·words_per_row + j/64`
/// is weight (i, j)), so masks move between host and device by a plain copy of the words.
///
/// Defined only when `SURGEON_HAS_CUDA` is defined (target `surgeon::cuda`). nvcc translation units
/// only (it launches kernels); no Eigen.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace surgeon::cuda {

namespace detail {

inline constexpr int mask_threads = 256;

inline unsigned mask_grid(index_t total) {
  const index_t blocks = (total + mask_threads - 1) / mask_threads;
  return static_cast<unsigned>(std::clamp<index_t>(blocks, 1, index_t{65535} * 32));
}

/// True when (i, j) is set in the words of a mask with `words_per_row` words per row.
__device__ inline bool mask_bit(const std::uint64_t* words, index_t words_per_row, index_t i, index_t j) {
  return ((words[i * words_per_row + (j >> 6)] >> (j & 63)) & 1u) != 0;
}

/// Zeroes every weight of the row-major `[rows, cols]` matrix (leading dimension `ld`) whose bit is
/// set.
template <typename T>
__global__ void apply_mask_kernel(const std::uint64_t* __restrict__ words, index_t words_per_row, T* w,
                                  index_t rows, index_t cols, index_t ld) {
  const index_t total = rows * cols;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t i = e / cols;
    const index_t j = e - i * cols;
    if (mask_bit(words, words_per_row, i, j)) w[i * ld + j] = T(0);
  }
}

/// Sets the bit of every weight of the `[rows, cols]` matrix that is exactly 0, on top of the bits
/// already set; element (i, j) is at `w[i·row_stride + j·col_stride]` (row-major with ld: ld, 1;
/// column-major: 1, rows). One thread per word, so no atomics are needed.
template <typename T>
__global__ void zeros_to_mask_kernel(const T* __restrict__ w, index_t rows, index_t cols, index_t row_stride,
                                     index_t col_stride, index_t words_per_row,
                                     std::uint64_t* __restrict__ words) {
  const index_t total = rows * words_per_row;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const index_t i = e / words_per_row;
    const index_t first = (e - i * words_per_row) * 64;
    const index_t last = first + 64 < cols ? first + 64 : cols;
    std::uint64_t word = 0;
    for (index_t j = first; j < last; ++j) {
      if (w[i * row_stride + j * col_stride] == T(0)) word |= std::uint64_t{1} << (j - first);
    }
    words[e] |= word;
  }
}

/// Enqueues `zeros_to_mask_kernel` on `stream` (nothing for an empty matrix).
template <typename T>
void launch_zeros_to_mask(const T* w, index_t rows, index_t cols, index_t row_stride, index_t col_stride,
                          index_t words_per_row, std::uint64_t* words, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  zeros_to_mask_kernel<T><<<mask_grid(rows * words_per_row), mask_threads, 0, stream>>>(
      w, rows, cols, row_stride, col_stride, words_per_row, words);
  SURGEON_CUDA_CHECK_LAUNCH();
}

}  // namespace detail

/// @brief A `[rows, cols]` pruning mask in device memory (bit set = pruned), laid out as
/// `surgeon::mask`. Move-only; stream-ordered on the context it was made with.
class device_mask {
 public:
  device_mask() = default;

  /// @brief A mask with nothing pruned, on `ctx`'s stream.
  /// @throws logic_error on a negative shape; cuda_error on allocation failure.
  device_mask(const context& ctx, index_t rows, index_t cols)
      : rows_(rows), cols_(cols), words_per_row_((cols + 63) / 64) {
    SURGEON_EXPECTS(rows >= 0 && cols >= 0, "device_mask: negative shape [{}, {}]", rows, cols);
    words_ = device_buffer<std::uint64_t>(ctx, rows_ * words_per_row_);
    words_.fill_zero();
  }

  /// @brief A copy of the host mask `m` (waits for the copy).
  /// @throws cuda_error on allocation or copy failure.
  static device_mask from_host(const context& ctx, const mask& m) {
    device_mask result(ctx, m.rows(), m.cols());
    result.words_.copy_from_host_sync(m.words().data(), static_cast<index_t>(m.words().size()));
    return result;
  }

  /// @brief Number of rows of the masked matrix.
  index_t rows() const { return rows_; }
  /// @brief Number of columns of the masked matrix.
  index_t cols() const { return cols_; }
  /// @brief 64-bit words per row, `ceil(cols() / 64)`.
  index_t words_per_row() const { return words_per_row_; }
  /// @brief Device pointer to the `rows·words_per_row()` words.
  const std::uint64_t* words() const { return words_.data(); }
  /// @brief Mutable device pointer to the `rows·words_per_row()` words (writes are stream-ordered).
  std::uint64_t* words() { return words_.data(); }

  /// @brief The mask copied to the host (waits for the stream).
  /// @throws cuda_error on failure.
  mask to_host() const {
    std::vector<std::uint64_t> host(static_cast<std::size_t>(words_.size()));
    words_.copy_to_host_sync(host.data(), words_.size());
    return mask::from_words(rows_, cols_, std::move(host));
  }

  /// @brief Enqueues zeroing every pruned weight of the device matrix `w` (same shape) on `ctx`'s
  /// stream. Cost: one pass over `w`.
  /// @throws logic_error on a shape mismatch; cuda_error if the launch fails.
  template <typename T>
  void apply(const context& ctx, device_matrix_view<T> w) const {
    SURGEON_EXPECTS(w.rows() == rows_ && w.cols() == cols_,
                    "device_mask::apply: weights [{}, {}], mask [{}, {}]", w.rows(), w.cols(), rows_, cols_);
    if (w.size() == 0) return;
    detail::apply_mask_kernel<T><<<detail::mask_grid(w.size()), detail::mask_threads, 0, ctx.stream()>>>(
        words_.data(), words_per_row_, w.data(), rows_, cols_, w.ld());
    SURGEON_CUDA_CHECK_LAUNCH();
  }

  /// @brief Enqueues marking every weight of `w` (same shape) that is exactly 0 as pruned, on top
  /// of the bits already set. Cost: one pass over `w`.
  /// @throws logic_error on a shape mismatch; cuda_error if the launch fails.
  template <typename T>
  void add_zeros_of(const context& ctx, device_matrix_view<const T> w) {
    SURGEON_EXPECTS(w.rows() == rows_ && w.cols() == cols_,
                    "device_mask::add_zeros_of: weights [{}, {}], mask [{}, {}]", w.rows(), w.cols(), rows_,
                    cols_);
    detail::launch_zeros_to_mask(w.data(), rows_, cols_, w.ld(), index_t{1}, words_per_row_, words_.data(),
                                 ctx.stream());
  }

 private:
  index_t rows_ = 0;
  index_t cols_ = 0;
  index_t words_per_row_ = 0;
  device_buffer<std::uint64_t> words_;
};

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
