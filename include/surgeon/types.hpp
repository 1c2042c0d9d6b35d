/// @file types.hpp
/// @brief Small owning value types shared by every backend.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/view.hpp>

#include <limits>
#include <vector>

namespace surgeon {

/// @brief An owning, dense, row-major `[rows, cols]` host matrix (`ld == cols`).
///
/// The value type the library returns when it hands a matrix back (factor means, sums); its
/// `view()` follows the layout convention of view.hpp. Cost: `rows * cols` elements of storage.
template <typename T>
class host_matrix {
 public:
  /// @brief An empty `[0, 0]` matrix; allocates nothing.
  host_matrix() = default;
  /// @brief A `[rows, cols]` matrix with every element set to `value`.
  /// @throws logic_error if a dimension is negative or `rows * cols` overflows.
  host_matrix(index_t rows, index_t cols, T value = T(0)) : rows_(rows), cols_(cols) {
    SURGEON_EXPECTS(rows >= 0 && cols >= 0, "host_matrix: negative shape [{}, {}]", rows, cols);
    SURGEON_EXPECTS(cols == 0 || rows <= std::numeric_limits<index_t>::max() / cols,
                    "host_matrix: [{}, {}] overflows", rows, cols);
    values_.assign(static_cast<std::size_t>(rows * cols), value);
  }

  /// @brief Number of rows. O(1).
  index_t rows() const { return rows_; }
  /// @brief Number of columns. O(1).
  index_t cols() const { return cols_; }
  /// @brief Number of elements, `rows * cols`. O(1).
  index_t size() const { return rows_ * cols_; }
  /// @brief Pointer to element (0, 0) of the packed row-major host storage. O(1).
  T* data() { return values_.data(); }
  /// @brief Pointer to element (0, 0) of the packed row-major host storage (read-only). O(1).
  const T* data() const { return values_.data(); }
  /// @brief Element (i, j); no bounds check.
  T& operator()(index_t i, index_t j) { return values_[static_cast<std::size_t>(i * cols_ + j)]; }
  /// @brief Element (i, j), read-only; no bounds check.
  const T& operator()(index_t i, index_t j) const { return values_[static_cast<std::size_t>(i * cols_ + j)]; }
  /// @brief A mutable row-major `[rows, cols]` host view of the storage (`ld == cols`). O(1).
  host_matrix_view<T> view() { return host_matrix_view<T>(values_.data(), rows_, cols_); }
  /// @brief A read-only row-major `[rows, cols]` host view of the storage (`ld == cols`). O(1).
  host_matrix_view<const T> view() const { return host_matrix_view<const T>(values_.data(), rows_, cols_); }
  /// @brief The elements in row-major order.
  const std::vector<T>& values() const { return values_; }

 private:
  index_t rows_ = 0;
  index_t cols_ = 0;
  std::vector<T> values_;
};

}  // namespace surgeon
