/// @file view.hpp
/// @brief Non-owning matrix and vector views that carry their memory space in the type.
///
/// **Layout convention (the only one in surgeon).** A matrix view of shape `[rows, cols]` is
/// row-major: element (i, j) lives at `data[i * ld + j]`, where the leading dimension `ld` is the
/// distance in elements between the starts of consecutive rows and `ld >= cols`. This is the
/// storage order of model files and PyTorch (`nn.Linear` weights `[out, in]`, activations
/// `[tokens, features]`), so a user's buffers are viewed without a copy. A sub-block of a larger
/// matrix is viewed by keeping the parent's `ld`.
///
/// The memory space is part of the type: a `host_matrix_view` can never be passed where a
/// `device_matrix_view` is expected, so mixing host and device pointers fails to compile.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>

#include <type_traits>
#include <vector>

namespace surgeon {

/// @brief Where the memory behind a view lives.
enum class memory_space { host, device };

/// @brief A non-owning view of a row-major `[rows, cols]` matrix with leading dimension `ld`.
/// @tparam T element type (`const` for read-only views).
/// @tparam Space memory space of `data()`: host or device.
/// Cost: O(1) to construct, copy and index; never allocates.
template <typename T, memory_space Space>
class matrix_view {
 public:
  /// @brief The element type without `const`/`volatile`.
  using value_type = std::remove_cv_t<T>;
  /// @brief The element type as viewed (`const`-qualified for read-only views).
  using element_type = T;
  /// @brief The memory space of `data()` (the `Space` template argument).
  static constexpr memory_space space = Space;

  /// @brief An empty `[0, 0]` view.
  constexpr matrix_view() = default;

  /// @brief Views `rows * cols` elements at `data` with leading dimension `ld` (default: `cols`).
  /// @throws logic_error if a dimension is negative, `ld < cols`, or `data` is null while the
  ///         view is non-empty.
  matrix_view(T* data, index_t rows, index_t cols, index_t ld = -1)
      : data_(data), rows_(rows), cols_(cols), ld_(ld < 0 ? cols : ld) {
    SURGEON_EXPECTS(rows >= 0 && cols >= 0, "matrix_view: negative shape [{}, {}]", rows, cols);
    SURGEON_EXPECTS(ld_ >= cols, "matrix_view: leading dimension {} is smaller than cols {}", ld_, cols);
    SURGEON_EXPECTS(data != nullptr || rows == 0 || cols == 0, "matrix_view: null data for a [{}, {}] view",
                    rows, cols);
  }

  /// @brief A read-only view of a writable one.
  template <typename U, typename = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  constexpr matrix_view(const matrix_view<U, Space>& other)  // NOLINT(google-explicit-constructor)
      : data_(other.data()), rows_(other.rows()), cols_(other.cols()), ld_(other.ld()) {}

  /// @brief Pointer to element (0, 0), in memory space `Space`; null for a default-constructed view. O(1).
  constexpr T* data() const { return data_; }
  /// @brief Number of rows. O(1).
  constexpr index_t rows() const { return rows_; }
  /// @brief Number of columns. O(1).
  constexpr index_t cols() const { return cols_; }
  /// @brief Leading dimension: elements between the starts of consecutive rows.
  constexpr index_t ld() const { return ld_; }
  /// @brief Number of elements, `rows * cols` (excludes padding between rows). O(1).
  constexpr index_t size() const { return rows_ * cols_; }
  /// @brief True when the view has no elements (`rows == 0` or `cols == 0`). O(1).
  constexpr bool empty() const { return rows_ == 0 || cols_ == 0; }
  /// @brief True when the rows are packed (`ld == cols`), so the data is one contiguous block.
  constexpr bool contiguous() const { return ld_ == cols_ || rows_ <= 1; }

  /// @brief Element (i, j). Host views only; no bounds check.
  template <memory_space S = Space, typename = std::enable_if_t<S == memory_space::host>>
  constexpr T& operator()(index_t i, index_t j) const {
    return data_[i * ld_ + j];
  }

  /// @brief Pointer to the first element of row i.
  constexpr T* row(index_t i) const { return data_ + i * ld_; }

  /// @brief The sub-view of rows `[first, first + count)`, sharing this view's `ld`.
  /// @throws logic_error if the range is outside the view.
  matrix_view row_block(index_t first, index_t count) const {
    SURGEON_EXPECTS(first >= 0 && count >= 0 && first + count <= rows_,
                    "matrix_view::row_block: rows [{}, {}) outside a view of {} rows", first, first + count,
                    rows_);
    return matrix_view(count == 0 ? data_ : data_ + first * ld_, count, cols_, ld_);
  }

  /// @brief The sub-view `[row0, row0 + rows) x [col0, col0 + cols)`, sharing this view's `ld`.
  /// @throws logic_error if the block is outside the view.
  matrix_view block(index_t row0, index_t col0, index_t rows, index_t cols) const {
    SURGEON_EXPECTS(
        row0 >= 0 && col0 >= 0 && rows >= 0 && cols >= 0 && row0 + rows <= rows_ && col0 + cols <= cols_,
        "matrix_view::block: [{}+{}, {}+{}] outside a [{}, {}] view", row0, rows, col0, cols, rows_, cols_);
    return matrix_view(empty() ? data_ : data_ + row0 * ld_ + col0, rows, cols, ld_);
  }

 private:
  T* data_ = nullptr;
  index_t rows_ = 0;
  index_t cols_ = 0;
  index_t ld_ = 0;
};

/// @brief A non-owning view of `size` elements spaced `stride` apart (default contiguous).
template <typename T, memory_space Space>
class vector_view {
 public:
  /// @brief The element type without `const`/`volatile`.
  using value_type = std::remove_cv_t<T>;
  /// @brief The memory space of `data()` (the `Space` template argument).
  static constexpr memory_space space = Space;

  /// @brief An empty view of 0 elements.
  constexpr vector_view() = default;
  /// @brief Views `size` elements at `data`, element k at `data[k * stride]` (default: contiguous).
  /// @throws logic_error if `size < 0`, `stride < 1`, or `data` is null while `size > 0`.
  vector_view(T* data, index_t size, index_t stride = 1) : data_(data), size_(size), stride_(stride) {
    SURGEON_EXPECTS(size >= 0 && stride >= 1, "vector_view: bad size {} or stride {}", size, stride);
    SURGEON_EXPECTS(data != nullptr || size == 0, "vector_view: null data for {} elements", size);
  }
  /// @brief A read-only view of a writable one. O(1).
  template <typename U, typename = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  constexpr vector_view(const vector_view<U, Space>& other)  // NOLINT(google-explicit-constructor)
      : data_(other.data()), size_(other.size()), stride_(other.stride()) {}

  /// @brief Pointer to element 0, in memory space `Space`; null for a default-constructed view. O(1).
  constexpr T* data() const { return data_; }
  /// @brief Number of elements. O(1).
  constexpr index_t size() const { return size_; }
  /// @brief Distance in elements between consecutive elements (1 when contiguous). O(1).
  constexpr index_t stride() const { return stride_; }
  /// @brief True when the view has no elements. O(1).
  constexpr bool empty() const { return size_ == 0; }
  /// @brief Element i, at `data()[i * stride()]`. Host views only; no bounds check. O(1).
  template <memory_space S = Space, typename = std::enable_if_t<S == memory_space::host>>
  constexpr T& operator[](index_t i) const {
    return data_[i * stride_];
  }

 private:
  T* data_ = nullptr;
  index_t size_ = 0;
  index_t stride_ = 1;
};

/// @brief A row-major `[rows, cols]` matrix view of host memory.
template <typename T>
using host_matrix_view = matrix_view<T, memory_space::host>;
/// @brief A row-major `[rows, cols]` matrix view of device (GPU) memory.
template <typename T>
using device_matrix_view = matrix_view<T, memory_space::device>;
/// @brief A strided vector view of host memory.
template <typename T>
using host_vector_view = vector_view<T, memory_space::host>;
/// @brief A strided vector view of device (GPU) memory.
template <typename T>
using device_vector_view = vector_view<T, memory_space::device>;

/// @brief Views a host buffer as a row-major `[rows, cols]` matrix with leading dimension `ld`.
/// @throws logic_error as `matrix_view`'s constructor.
template <typename T>
host_matrix_view<T> make_host_matrix_view(T* data, index_t rows, index_t cols, index_t ld = -1) {
  return host_matrix_view<T>(data, rows, cols, ld);
}

/// @brief Views a packed `std::vector` as `[rows, cols]`.
/// @throws logic_error if `values.size() != rows * cols`.
template <typename T>
host_matrix_view<const T> make_host_matrix_view(const std::vector<T>& values, index_t rows, index_t cols) {
  SURGEON_EXPECTS(static_cast<index_t>(values.size()) == rows * cols,
                  "make_host_matrix_view: {} values cannot be viewed as [{}, {}]", values.size(), rows, cols);
  return host_matrix_view<const T>(values.data(), rows, cols);
}

/// @brief Views a packed, writable `std::vector` as a mutable row-major `[rows, cols]` host matrix.
/// @throws logic_error if `values.size() != rows * cols`.
template <typename T>
host_matrix_view<T> make_host_matrix_view(std::vector<T>& values, index_t rows, index_t cols) {
  SURGEON_EXPECTS(static_cast<index_t>(values.size()) == rows * cols,
                  "make_host_matrix_view: {} values cannot be viewed as [{}, {}]", values.size(), rows, cols);
  return host_matrix_view<T>(values.data(), rows, cols);
}

}  // namespace surgeon
