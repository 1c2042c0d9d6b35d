/// @file curvature.hpp
/// @brief Damping parameters and dead-structure detection (METHOD.md §2), backend-neutral.
///
/// The backends turn accumulated factors into damped factors with inverses and cached
/// eigendecompositions: `cpu::factorize` (cpu/curvature.hpp), later `cuda::factorize`.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/types.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

namespace surgeon {

/// @brief How a damping value λ is turned into the diagonal shift added to a factor.
enum class damping_mode {
  relative,  ///< shift = λ · mean(diag F) (METHOD.md §2, the default)
  absolute,  ///< shift = λ
};

/// @brief Damping of the two Kronecker factors: `Ĝ = G + shift_G·I`, `Â = A + shift_A·I`.
///
/// Defaults λ_G = λ_A = 0.01 (METHOD.md §2; the paper's unstructured and N:M runs use g = 0.1). When
/// a Cholesky factorisation fails, λ is multiplied by `escalation` and the factorisation retried,
/// at most `max_escalations` times; the λ actually used is reported.
struct damping {
  double g = 0.01;  ///< λ_G, output side
  double a = 0.01;  ///< λ_A, input side
  /// How λ becomes the diagonal shift (default: relative to the mean of the factor's diagonal).
  damping_mode mode = damping_mode::relative;
  int max_escalations = 6;   ///< retries after the first failed factorisation
  double escalation = 10.0;  ///< λ ← λ · escalation on each retry
};

/// @brief What damping one factor received.
struct damping_report {
  double lambda_requested = 0.0;  ///< λ as asked for
  double lambda_used = 0.0;       ///< λ after escalation (equal to the request when none was needed)
  double shift = 0.0;             ///< the value added to the diagonal
  int escalations = 0;            ///< how many times λ was raised
};

/// @brief Checks the parameters of a `damping`.
/// @throws logic_error if a λ is negative or not finite, `max_escalations < 0` or `escalation <= 1`.
inline void validate(const damping& d) {
  SURGEON_EXPECTS(std::isfinite(d.g) && d.g >= 0.0, "damping: lambda_g must be finite and >= 0, got {}", d.g);
  SURGEON_EXPECTS(std::isfinite(d.a) && d.a >= 0.0, "damping: lambda_a must be finite and >= 0, got {}", d.a);
  SURGEON_EXPECTS(d.max_escalations >= 0, "damping: max_escalations must be >= 0, got {}", d.max_escalations);
  SURGEON_EXPECTS(std::isfinite(d.escalation) && d.escalation > 1.0,
                  "damping: escalation must be > 1, got {}", d.escalation);
}

namespace detail {

/// The argument checks of `damp_and_invert` on every backend: a valid `damping`, a square,
/// non-empty factor `[rows, cols]` and a finite λ >= 0.
inline void check_damp_arguments(index_t rows, index_t cols, double lambda, const damping& d) {
  validate(d);
  SURGEON_EXPECTS(rows == cols, "damp_and_invert: factor [{}, {}] is not square", rows, cols);
  SURGEON_EXPECTS(rows > 0, "damp_and_invert: empty factor");
  SURGEON_EXPECTS(std::isfinite(lambda) && lambda >= 0.0, "damp_and_invert: lambda must be >= 0, got {}",
                  lambda);
}

/// What λ multiplies into the diagonal shift: 1 for absolute damping, the mean diagonal
/// `trace / n` for relative damping.
/// @throws numerical_error for relative damping of a factor whose mean diagonal is not positive.
inline double damping_scale(const damping& d, double trace, index_t n) {
  if (d.mode != damping_mode::relative) return 1.0;
  const double scale = trace / static_cast<double>(n);
  if (!(scale > 0.0)) {
    SURGEON_THROW(numerical_error,
                  "damp_and_invert: relative damping of a factor with mean diagonal {} (dead?)", scale);
  }
  return scale;
}

/// The escalation rule of METHOD.md §2, one home for every backend: `attempt(shift)` tries a
/// factorisation with `shift` = λ·`scale` added to the diagonal and returns true on success; on
/// failure λ becomes λ·`d.escalation` (a zero λ first becomes 1e-8), at most `d.max_escalations`
/// times. Returns what damping the successful attempt received.
/// @throws numerical_error "`who`: `what` is not positive definite even with lambda … after …
///         escalations" when every attempt fails.
template <typename Attempt>
damping_report escalate_damping(const damping& d, double lambda, double scale, const char* who,
                                const std::string& what, Attempt&& attempt) {
  damping_report report;
  report.lambda_requested = lambda;
  double current = lambda;
  for (int escalations = 0; escalations <= d.max_escalations; ++escalations) {
    const double shift = current * scale;
    if (attempt(shift)) {
      report.lambda_used = current;
      report.shift = shift;
      report.escalations = escalations;
      return report;
    }
    current = std::max(current * d.escalation, 1e-8);
  }
  SURGEON_THROW(numerical_error, "{}: {} is not positive definite even with lambda {} after {} escalations",
                who, what, current / d.escalation, d.max_escalations);
}

/// The position of each layer index among the live ones (`live` sorted, all in [0, size)), −1 for
/// a dead index. Cost: O(size).
inline std::vector<index_t> positions_of(const std::vector<index_t>& live, index_t size) {
  std::vector<index_t> position(static_cast<std::size_t>(size), -1);
  for (std::size_t k = 0; k < live.size(); ++k)
    position[static_cast<std::size_t>(live[k])] = static_cast<index_t>(k);
  return position;
}

/// Sorted, de-duplicated live positions of the given layer indices (dead ones dropped), from the
/// table of `positions_of`. Cost: O(k log k) for k indices.
/// @throws logic_error "`who`: `what` i is outside [0, size)" for an index outside the layer.
inline std::vector<index_t> selected_positions(const char* who, const char* what,
                                               const std::vector<index_t>& indices,
                                               const std::vector<index_t>& position) {
  std::vector<index_t> result;
  result.reserve(indices.size());
  const auto size = static_cast<index_t>(position.size());
  for (const index_t index : indices) {
    SURGEON_EXPECTS(index >= 0 && index < size, "{}: {} {} is outside [0, {})", who, what, index, size);
    const index_t p = position[static_cast<std::size_t>(index)];
    if (p >= 0) result.push_back(p);
  }
  std::sort(result.begin(), result.end());
  result.erase(std::unique(result.begin(), result.end()), result.end());
  return result;
}

}  // namespace detail

/// @brief Rows and columns of a layer that carry no information (METHOD.md §2).
///
/// Row i is dead when `W̃[i,:] = 0` or `G_ii = 0`; column j when `W̃[:,j] = 0` or `A_jj = 0`. The
/// live lists are the complements, ascending. Dead structure is counted as already removed (cost
/// 0) and kept exactly zero; the factors are restricted to the live indices.
struct dead_structure {
  /// Indices of the dead rows, ascending.
  std::vector<index_t> dead_rows;
  /// Indices of the dead columns, ascending.
  std::vector<index_t> dead_cols;
  /// Indices of the live rows (the complement of `dead_rows`), ascending.
  std::vector<index_t> live_rows;
  /// Indices of the live columns (the complement of `dead_cols`), ascending.
  std::vector<index_t> live_cols;
};

/// @brief Finds the dead rows and columns of a layer from its factors and weights.
/// @param g_diag diagonal of G, length R (rows of `w`).
/// @param a_diag diagonal of A, length C (columns of `w`; with a bias, the bias column included).
/// @param w the weights `W̃ [R, C]`, host. Cost: O(R·C).
/// @throws logic_error if the lengths do not match `w`'s shape.
template <typename G, typename A, typename W>
dead_structure find_dead(host_vector_view<const G> g_diag, host_vector_view<const A> a_diag,
                         host_matrix_view<const W> w) {
  SURGEON_EXPECTS(g_diag.size() == w.rows() && a_diag.size() == w.cols(),
                  "find_dead: factors of order {} and {} do not fit weights [{}, {}]", g_diag.size(),
                  a_diag.size(), w.rows(), w.cols());
  std::vector<char> row_alive(static_cast<std::size_t>(w.rows()), 0);
  std::vector<char> col_alive(static_cast<std::size_t>(w.cols()), 0);
  for (index_t i = 0; i < w.rows(); ++i) {
    const W* row = w.row(i);
    for (index_t j = 0; j < w.cols(); ++j) {
      if (row[j] != W(0)) {
        row_alive[static_cast<std::size_t>(i)] = 1;
        col_alive[static_cast<std::size_t>(j)] = 1;
      }
    }
  }
  dead_structure result;
  for (index_t i = 0; i < w.rows(); ++i) {
    const bool alive = row_alive[static_cast<std::size_t>(i)] && g_diag[i] != G(0);
    (alive ? result.live_rows : result.dead_rows).push_back(i);
  }
  for (index_t j = 0; j < w.cols(); ++j) {
    const bool alive = col_alive[static_cast<std::size_t>(j)] && a_diag[j] != A(0);
    (alive ? result.live_cols : result.dead_cols).push_back(j);
  }
  return result;
}

/// @brief Indices `i` with `diag[i] != 0`, ascending: the live part of a factor on its own.
template <typename T>
std::vector<index_t> nonzero_diagonal(host_matrix_view<T> m) {
  SURGEON_EXPECTS(m.rows() == m.cols(), "nonzero_diagonal: [{}, {}] is not square", m.rows(), m.cols());
  std::vector<index_t> live;
  for (index_t i = 0; i < m.rows(); ++i) {
    if (m(i, i) != std::remove_const_t<T>(0)) live.push_back(i);
  }
  return live;
}

/// @brief The principal sub-matrix `m[live, live]` of a square matrix. Cost: O(|live|²).
/// @throws logic_error if `m` is not square or an index is out of range or not ascending.
template <typename T>
host_matrix<std::remove_const_t<T>> extract_live(host_matrix_view<T> m, const std::vector<index_t>& live) {
  SURGEON_EXPECTS(m.rows() == m.cols(), "extract_live: [{}, {}] is not square", m.rows(), m.cols());
  for (std::size_t k = 0; k < live.size(); ++k) {
    SURGEON_EXPECTS(live[k] >= 0 && live[k] < m.rows() && (k == 0 || live[k] > live[k - 1]),
                    "extract_live: index {} at position {} is out of range or not ascending", live[k], k);
  }
  const auto n = static_cast<index_t>(live.size());
  host_matrix<std::remove_const_t<T>> result(n, n);
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < n; ++j)
      result(i, j) = m(live[static_cast<std::size_t>(i)], live[static_cast<std::size_t>(j)]);
  }
  return result;
}

}  // namespace surgeon
