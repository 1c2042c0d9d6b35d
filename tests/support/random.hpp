/// @file random.hpp
/// @brief Seeded random test data shared by the unit tests.
#pragma once

#include <surgeon/types.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace surgeon::test {

/// Row-major [rows, cols] with a leading dimension `ld` (>= cols); the padding holds NaN so that a
/// kernel that reads it fails the test.
template <typename T>
std::vector<T> random_rows(index_t rows, index_t cols, index_t ld, unsigned seed, double mean = 0.0) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<double> normal(mean, 1.0);
  std::vector<T> values(static_cast<std::size_t>(rows * ld), std::numeric_limits<T>::quiet_NaN());
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j)
      values[static_cast<std::size_t>(i * ld + j)] = static_cast<T>(normal(engine));
  }
  return values;
}

/// A random symmetric positive definite [n, n] matrix B Bᵀ / n + shift·I (row-major).
inline host_matrix<double> random_spd(index_t n, unsigned seed, double shift = 0.1) {
  const std::vector<double> b = random_rows<double>(n, n, n, seed);
  host_matrix<double> m(n, n);
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (index_t k = 0; k < n; ++k)
        sum += b[static_cast<std::size_t>(i * n + k)] * b[static_cast<std::size_t>(j * n + k)];
      m(i, j) = sum / static_cast<double>(n) + (i == j ? shift : 0.0);
    }
  }
  return m;
}

/// The largest |a - b| relative to the largest |b|.
template <typename A, typename B>
double max_relative_difference(const A& a, const B& b, index_t rows, index_t cols) {
  double difference = 0.0;
  double scale = 0.0;
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      const double x = static_cast<double>(a(i, j));
      const double y = static_cast<double>(b(i, j));
      difference = std::max(difference, std::abs(x - y));
      scale = std::max(scale, std::abs(y));
    }
  }
  return scale == 0.0 ? difference : difference / scale;
}

}  // namespace surgeon::test
