/// @file mask.hpp
/// @brief Pruning masks (a compact bitmask per layer), pruning methods and structures.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/view.hpp>

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace surgeon {

/// @brief How a pruning score is computed (METHOD.md §3).
enum class method {
  magnitude,    ///< W², no update
  wanda,        ///< |W_ij|·√A_jj, compared within each output row, no update
  lobd,         ///< L-OBD: ½ W² A_jj (G = I), no update
  kobd,         ///< K-OBD: ½ W² G_ii A_jj, no update
  sparsegpt,    ///< SparseGPT (METHOD.md §6): row-wise OBS with G = I
  llm_surgeon,  ///< Kronecker OBS costs and correlated OBS updates (METHOD.md §3–4)
};

/// @brief What is removed together.
enum class structure {
  unstructured,  ///< single elements
  n_m,           ///< N of every M consecutive inputs of a row (2:4, 4:8)
  rows_columns,  ///< whole rows (outputs) and whole columns (inputs)
  /// Coupled units the adapter declares with `units()` (units.hpp): lines of several matrices
  /// removed together, such as a Llama block's FFN neurons and attention heads.
  coupled,
};

/// @brief True when `what` removes whole rows and columns (`rows_columns` and `coupled`): costed
/// by row and column, updated by the row/column OBS update. O(1).
constexpr bool removes_lines(structure what) noexcept {
  return what == structure::rows_columns || what == structure::coupled;
}

/// @brief An N:M pattern: N pruned weights in every block of M consecutive inputs of a row.
struct nm_pattern {
  /// @brief N: weights pruned in each block of `m` consecutive inputs (default 2, as in 2:4).
  index_t n = 2;
  /// @brief M: width of each block of consecutive inputs of a row (default 4, as in 2:4).
  index_t m = 4;
};

/// @brief Checks an N:M pattern against a layer width.
/// @throws logic_error unless `0 < n <= m` and `m` divides `cols`.
inline void validate(const nm_pattern& p, index_t cols) {
  SURGEON_EXPECTS(p.m >= 1 && p.n >= 1 && p.n <= p.m, "N:M pattern {}:{} needs 0 < N <= M", p.n, p.m);
  SURGEON_EXPECTS(cols % p.m == 0, "N:M pattern {}:{}: M does not divide the {} columns", p.n, p.m, cols);
}

/// @brief The name of a method as the command-line tools spell it ("llm-surgeon", ...).
inline constexpr std::string_view to_string(method m) {
  switch (m) {
    case method::magnitude:
      return "magnitude";
    case method::wanda:
      return "wanda";
    case method::lobd:
      return "lobd";
    case method::kobd:
      return "kobd";
    case method::sparsegpt:
      return "sparsegpt";
    case method::llm_surgeon:
      return "llm-surgeon";
  }
  return "unknown";
}

/// @brief Which weights of an `[rows, cols]` layer are pruned: one bit per weight.
///
/// Each row starts on a 64-bit word boundary, so a row is `ceil(cols / 64)` words and row scans
/// touch contiguous memory. Storage: rows·ceil(cols/64)·8 bytes (1/32 of a float copy).
class mask {
 public:
  /// @brief An empty `[0, 0]` mask.
  mask() = default;
  /// @brief A mask with nothing pruned. @throws logic_error on a negative shape.
  mask(index_t rows, index_t cols) : rows_(rows), cols_(cols), words_per_row_((cols + 63) / 64) {
    SURGEON_EXPECTS(rows >= 0 && cols >= 0, "mask: negative shape [{}, {}]", rows, cols);
    bits_.assign(static_cast<std::size_t>(rows_ * words_per_row_), 0);
  }

  /// @brief Number of rows (layer outputs). O(1).
  index_t rows() const { return rows_; }
  /// @brief Number of columns (layer inputs). O(1).
  index_t cols() const { return cols_; }
  /// @brief 64-bit words per row, `ceil(cols / 64)`; bit `j & 63` of word `i·words_per_row() + j/64`
  /// is weight (i, j). Bits past `cols` in a row's last word are always 0.
  index_t words_per_row() const { return words_per_row_; }
  /// @brief The raw words, `rows·words_per_row()` of them (for backends that copy masks to device
  /// memory; `cuda::device_mask` uses the same layout).
  const std::vector<std::uint64_t>& words() const { return bits_; }
  /// @brief A mask from raw words in the layout of `words()`.
  /// @throws logic_error if the word count does not match the shape or a bit past `cols` is set.
  static mask from_words(index_t rows, index_t cols, std::vector<std::uint64_t> words) {
    mask result(rows, cols);
    SURGEON_EXPECTS(words.size() == result.bits_.size(),
                    "mask::from_words: {} words for a [{}, {}] mask ({})", words.size(), rows, cols,
                    result.bits_.size());
    if (cols % 64 != 0) {
      const std::uint64_t tail = ~std::uint64_t{0} << (cols % 64);
      for (index_t i = 0; i < rows; ++i) {
        SURGEON_EXPECTS((words[static_cast<std::size_t>((i + 1) * result.words_per_row_ - 1)] & tail) == 0,
                        "mask::from_words: row {} has bits set past column {}", i, cols);
      }
    }
    result.bits_ = std::move(words);
    return result;
  }
  /// @brief True when weight (i, j) is pruned. No bounds check.
  bool pruned(index_t i, index_t j) const { return (word(i, j) >> (j & 63)) & 1u; }
  /// @brief Marks weight (i, j) as pruned. No bounds check.
  void prune(index_t i, index_t j) { word(i, j) |= std::uint64_t{1} << (j & 63); }
  /// @brief Marks weight (i, j) as kept. No bounds check.
  void keep(index_t i, index_t j) { word(i, j) &= ~(std::uint64_t{1} << (j & 63)); }
  /// @brief Prunes all of row i. Cost: O(cols / 64).
  void prune_row(index_t i) {
    for (index_t j = 0; j < cols_; ++j) prune(i, j);
  }
  /// @brief Prunes all of column j. Cost: O(rows).
  void prune_column(index_t j) {
    for (index_t i = 0; i < rows_; ++i) prune(i, j);
  }
  /// @brief Number of pruned weights. Cost: O(rows·cols / 64).
  index_t count() const {
    index_t total = 0;
    for (const std::uint64_t w : bits_) total += __builtin_popcountll(w);
    return total;
  }
  /// @brief Number of pruned weights in row i. Cost: O(cols / 64).
  index_t count_in_row(index_t i) const {
    index_t total = 0;
    for (index_t k = 0; k < words_per_row_; ++k) {
      total += __builtin_popcountll(bits_[static_cast<std::size_t>(i * words_per_row_ + k)]);
    }
    return total;
  }
  /// @brief The pruned columns of row i, ascending.
  std::vector<index_t> pruned_in_row(index_t i) const {
    std::vector<index_t> result;
    for (index_t j = 0; j < cols_; ++j) {
      if (pruned(i, j)) result.push_back(j);
    }
    return result;
  }
  /// @brief Adds every weight pruned in `other` (same shape). @throws logic_error on a shape mismatch.
  void merge(const mask& other) {
    SURGEON_EXPECTS(other.rows_ == rows_ && other.cols_ == cols_, "mask::merge: [{}, {}] vs [{}, {}]", rows_,
                    cols_, other.rows_, other.cols_);
    for (std::size_t k = 0; k < bits_.size(); ++k) bits_[k] |= other.bits_[k];
  }
  /// @brief Fraction of weights kept: `1 - count() / (rows·cols)`.
  double density() const {
    const index_t total = rows_ * cols_;
    return total == 0 ? 1.0 : 1.0 - static_cast<double>(count()) / static_cast<double>(total);
  }
  /// @brief True when both masks have the same shape and prune the same weights. Cost: O(rows·cols / 64).
  bool operator==(const mask& other) const {
    return rows_ == other.rows_ && cols_ == other.cols_ && bits_ == other.bits_;
  }
  /// @brief Negation of `operator==`. Cost: O(rows·cols / 64).
  bool operator!=(const mask& other) const { return !(*this == other); }

  /// @brief Sets every pruned weight of `w` (same shape) to exactly zero.
  /// @throws logic_error on a shape mismatch.
  template <typename T>
  void apply(host_matrix_view<T> w) const {
    SURGEON_EXPECTS(w.rows() == rows_ && w.cols() == cols_, "mask::apply: weights [{}, {}], mask [{}, {}]",
                    w.rows(), w.cols(), rows_, cols_);
    for (index_t i = 0; i < rows_; ++i) {
      for (index_t j = 0; j < cols_; ++j) {
        if (pruned(i, j)) w(i, j) = T(0);
      }
    }
  }

  /// @brief The mask of the zeros of `w`: every weight that is exactly 0 counts as pruned.
  template <typename T>
  static mask of_zeros(host_matrix_view<const T> w) {
    mask result(w.rows(), w.cols());
    for (index_t i = 0; i < w.rows(); ++i) {
      for (index_t j = 0; j < w.cols(); ++j) {
        if (w(i, j) == T(0)) result.prune(i, j);
      }
    }
    return result;
  }

 private:
  std::uint64_t& word(index_t i, index_t j) {
    return bits_[static_cast<std::size_t>(i * words_per_row_ + (j >> 6))];
  }
  const std::uint64_t& word(index_t i, index_t j) const {
    return bits_[static_cast<std::size_t>(i * words_per_row_ + (j >> 6))];
  }

  index_t rows_ = 0;
  index_t cols_ = 0;
  index_t words_per_row_ = 0;
  std::vector<std::uint64_t> bits_;
};

}  // namespace surgeon
