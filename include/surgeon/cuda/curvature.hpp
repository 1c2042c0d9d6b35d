/// @file cuda/curvature.hpp
/// @brief CUDA curvature (METHOD.md §2): damping, Cholesky inverses in double with escalation, and
/// cached eigendecompositions, on device matrices. The mirror of cpu/curvature.hpp.
///
/// Every CUDA runtime, cuBLAS and cuSOLVER status is checked, and every cuSOLVER `info`.
/// nvcc translation units only (the kernels live in detail/kfac_kernels.cuh); no Eigen. Defined only
/// when `SURGEON_HAS_CUDA` is defined (target `surgeon::cuda`).
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/detail/kfac_kernels.cuh>
#include <surgeon/cuda/detail/layer_kernels.cuh>
#include <surgeon/cuda/detail/solver.hpp>
#include <surgeon/curvature.hpp>
#include <surgeon/error.hpp>
#include <surgeon/view.hpp>

#include <cuda_runtime_api.h>
#include <cusolverDn.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace surgeon::cuda {

/// @brief Eigendecomposition `M = V diag(values) Vᵀ` in device memory.
///
/// `values` holds the n eigenvalues in ascending order. `vectors` holds V column-major (column
/// stride n): eigenvector k is the n contiguous elements starting at `vectors.data() + k * n`.
/// Seen through `vectors_view()` (row-major, as every surgeon view) that is row k.
template <typename T = double>
struct eigen_decomposition {
  /// @brief n, the order of the decomposed matrix.
  index_t order = 0;
  /// @brief The n eigenvalues in ascending order, device.
  device_buffer<T> values;
  /// @brief V, n² elements, device, column-major (eigenvector k starts at element `k * n`).
  device_buffer<T> vectors;

  /// @brief `[n, n]` device view whose row k is the k-th eigenvector (unit norm).
  device_matrix_view<const T> vectors_view() const { return vectors.view(order, order); }
};

namespace detail {

inline void syevd_buffer_size(cusolverDnHandle_t h, int n, const float* a, const float* w, int* lwork) {
  SURGEON_CUSOLVER_CHECK(
      cusolverDnSsyevd_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lwork));
}
inline void syevd_buffer_size(cusolverDnHandle_t h, int n, const double* a, const double* w, int* lwork) {
  SURGEON_CUSOLVER_CHECK(
      cusolverDnDsyevd_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, lwork));
}
inline void syevd(cusolverDnHandle_t h, int n, float* a, float* w, float* work, int lwork, int* info) {
  SURGEON_CUSOLVER_CHECK(
      cusolverDnSsyevd(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, work, lwork, info));
}
inline void syevd(cusolverDnHandle_t h, int n, double* a, double* w, double* work, int lwork, int* info) {
  SURGEON_CUSOLVER_CHECK(
      cusolverDnDsyevd(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, work, lwork, info));
}

/// Copies the `[n, n]` device view `m` (any leading dimension) into the packed `dst` on `stream`.
template <typename T>
void copy_square(T* dst, device_matrix_view<const T> m, cudaStream_t stream) {
  const index_t n = m.rows();
  SURGEON_CUDA_CHECK(cudaMemcpy2DAsync(dst, static_cast<std::size_t>(n) * sizeof(T), m.data(),
                                       static_cast<std::size_t>(m.ld()) * sizeof(T),
                                       static_cast<std::size_t>(n) * sizeof(T), static_cast<std::size_t>(n),
                                       cudaMemcpyDeviceToDevice, stream));
}

}  // namespace detail

/// @brief Eigendecomposition of a symmetric device matrix by cuSOLVER's divide and conquer
/// (`syevd`), on `ctx`'s stream; waits for the routine's `info`.
/// @param ctx the CUDA context: its cuSOLVER handle and stream run the routine.
/// @param m symmetric `[n, n]`, device (the triangle that is the lower one in column-major order,
///        i.e. the upper triangle of the row-major view, is read; pass a symmetric matrix).
/// Cost: about 9n³ flops; workspace of about 2n² elements plus the n² copy.
/// @throws logic_error if `m` is not square or empty, or n > 32766 (the 32-bit syevd's workspace
///         size would overflow); numerical_error if syevd does not converge; cuda_error on any
///         CUDA/cuSOLVER failure.
template <typename T>
eigen_decomposition<T> symmetric_eigen(context& ctx, device_matrix_view<const T> m) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "symmetric_eigen<float|double>");
  SURGEON_EXPECTS(m.rows() == m.cols() && m.rows() > 0, "symmetric_eigen: [{}, {}] is not a square matrix",
                  m.rows(), m.cols());
  const index_t n = m.rows();
  // syevd's workspace of 1 + 6n + 2n² elements is counted in an int.
  const int ni = detail::to_square_int(n, 32766, "symmetric_eigen");
  cudaStream_t stream = ctx.stream();
  eigen_decomposition<T> result;
  result.order = n;
  result.values = device_buffer<T>(ctx, n);
  result.vectors = device_buffer<T>(ctx, n * n);
  detail::copy_square(result.vectors.data(), m, stream);
  int lwork = 0;
  detail::syevd_buffer_size(ctx.cusolver(), ni, result.vectors.data(), result.values.data(), &lwork);
  SURGEON_EXPECTS(lwork >= 0, "symmetric_eigen: cuSOLVER asked for a negative workspace {}", lwork);
  device_buffer<T> work(ctx, std::max(lwork, 1));
  device_buffer<int> info(ctx, 1);
  detail::syevd(ctx.cusolver(), ni, result.vectors.data(), result.values.data(), work.data(), lwork,
                info.data());
  const int status = fetch_cusolver_info(info.data(), stream, "cusolverDn?syevd");
  if (status > 0) {
    SURGEON_THROW(numerical_error, "symmetric_eigen: syevd did not converge on a {}x{} matrix (info = {})", n,
                  n, status);
  }
  return result;
}

/// @brief Eigendecomposition of a symmetric device matrix given through a mutable view: the same as
/// the overload taking `device_matrix_view<const T>`, with the same context, cost and exceptions
/// (the matrix is copied and left unchanged).
template <typename T>
eigen_decomposition<T> symmetric_eigen(context& ctx, device_matrix_view<T> m) {
  return symmetric_eigen(ctx, device_matrix_view<const T>(m));
}

/// @brief One damped Kronecker factor `F̂ = F + shift·I` in device memory, with its inverse
/// (always) and its eigendecomposition (computed on first use, then cached).
///
/// Both matrices are packed, symmetric `[n, n]` double (row- and column-major alike). Move-only
/// (it owns device memory). The lazy cache is not synchronised between host threads.
class damped_factor {
 public:
  damped_factor() = default;

  /// @brief Order n of the factor.
  index_t order() const { return order_; }
  /// @brief `F̂ = F + shift·I`, `[n, n]`, device, symmetric.
  device_matrix_view<const double> damped() const { return damped_.view(order_, order_); }
  /// @brief `F̂⁻¹`, `[n, n]`, device, symmetric, from the Cholesky factorisation in double.
  device_matrix_view<const double> inverse() const { return inverse_.view(order_, order_); }
  /// @brief The λ and shift used, and how many escalations were needed.
  const damping_report& report() const { return report_; }

  /// @brief Eigendecomposition of `F̂` (ascending eigenvalues), computed by `symmetric_eigen` on
  /// `ctx`'s stream on the first call and cached. Cost: about 9n³ flops once, then O(1).
  /// @throws numerical_error if the eigensolver does not converge; cuda_error on failure.
  const eigen_decomposition<double>& eigen(context& ctx) const {
    if (!eigen_) eigen_ = std::make_shared<const eigen_decomposition<double>>(symmetric_eigen(ctx, damped()));
    return *eigen_;
  }
  /// @brief Whether the eigendecomposition has been computed and cached (by `eigen`). Cost: O(1).
  bool has_eigen() const { return eigen_ != nullptr; }

 private:
  friend damped_factor damp_and_invert(context&, device_matrix_view<const double>, double, const damping&);
  index_t order_ = 0;
  device_buffer<double> damped_;
  device_buffer<double> inverse_;
  damping_report report_;
  mutable std::shared_ptr<const eigen_decomposition<double>> eigen_;
};

/// @brief Damps a symmetric device factor and inverts it by Cholesky in double, escalating λ on
/// failure: the CUDA mirror of `cpu::damp_and_invert`.
///
/// shift = λ·mean(diag F) (relative) or λ (absolute). When `potrf` reports that `F + shift·I` is
/// not positive definite (info > 0), λ ← λ·`d.escalation` (a λ below 1e-8 becomes 1e-8) and the
/// factorisation is retried, at most `d.max_escalations` times. The inverse comes from `potri` on
/// the Cholesky factor, then its lower triangle is mirrored onto the upper one. The mode,
/// escalation and retry limit come from `d`; its `g`/`a` fields are ignored in favour of `lambda`.
/// @param ctx the CUDA context: its cuSOLVER handle and stream run the factorisations.
/// @param factor symmetric `[n, n]`, device, any leading dimension (every entry is checked to be
///        finite; the Cholesky reads one triangle: pass a symmetric matrix).
/// @param lambda the initial damping λ (≥ 0, finite), relative or absolute as `d` says.
/// @param d the damping options: mode, escalation factor and retry limit.
/// Work is enqueued on `ctx`'s stream; the call waits for each attempt's `info`, and the returned
/// matrices are ready in stream order.
/// Cost: n³/3 flops per attempt plus 2n³/3 for the inverse; device memory for two n² matrices and
/// the cuSOLVER workspace.
/// @throws logic_error if `factor` is not square, is empty, holds a non-finite value or has
///         n > 46340 (the 32-bit potrf/potri), or `lambda` is negative or not finite; numerical_error if a
///         relative damping has a non-positive mean diagonal or every attempt fails; cuda_error on any
///         CUDA/cuSOLVER failure.
inline damped_factor damp_and_invert(context& ctx, device_matrix_view<const double> factor, double lambda,
                                     const damping& d) {
  surgeon::detail::check_damp_arguments(factor.rows(), factor.cols(), lambda, d);
  const index_t n = factor.rows();
  SURGEON_EXPECTS(n <= detail::cholesky_largest_order, "{}: order {} exceeds the 32-bit cuSOLVER limit of {}",
                  "damp_and_invert", n, detail::cholesky_largest_order);
  cudaStream_t stream = ctx.stream();

  device_buffer<double> base(ctx, n * n);
  detail::copy_square(base.data(), factor, stream);
  device_buffer<int> flag(ctx, 1);
  device_buffer<double> trace(ctx, 1);
  SURGEON_CUDA_CHECK(cudaMemsetAsync(flag.data(), 0, sizeof(int), stream));
  detail::launch_flag_nonfinite(base.data(), n, n, n, flag.data(), stream);
  detail::launch_trace(base.data(), n, n, trace.data(), stream);
  int nonfinite = 0;
  double trace_value = 0.0;
  flag.copy_to_host(&nonfinite, 1);
  trace.copy_to_host_sync(&trace_value, 1);
  SURGEON_EXPECTS(nonfinite == 0, "damp_and_invert: the {}x{} factor holds a non-finite entry", n, n);

  const double scale = surgeon::detail::damping_scale(d, trace_value, n);

  device_buffer<double> work(ctx, n * n);
  detail::cholesky_workspace cholesky(ctx, n, work.data(), "damp_and_invert");
  damped_factor result;
  result.report_ = surgeon::detail::escalate_damping(
      d, lambda, scale, "damp_and_invert", fmt::format("a {}x{} factor", n, n), [&](double shift) {
        SURGEON_CUDA_CHECK(
            cudaMemcpyAsync(work.data(), base.data(), base.size_bytes(), cudaMemcpyDeviceToDevice, stream));
        detail::launch_add_diagonal(work.data(), n, n, shift, stream);
        if (!cholesky.factor(work.data())) return false;
        cholesky.invert(work.data());
        detail::launch_lower_to_upper(work.data(), n, n, stream);
        detail::launch_add_diagonal(base.data(), n, n, shift, stream);
        result.order_ = n;
        result.damped_ = std::move(base);
        result.inverse_ = std::move(work);
        return true;
      });
  return result;
}

/// @brief The live index lists of a layer in device memory, for the layer kernels.
struct device_layer_indices {
  device_buffer<index_t> live_rows;     ///< `dead.live_rows`
  device_buffer<index_t> live_cols;     ///< `dead.live_cols`
  device_buffer<index_t> row_position;  ///< layer row → live position, −1 when dead (R entries)
  device_buffer<index_t> col_position;  ///< layer column → live position, −1 when dead (C entries)
};

/// @brief The curvature of one layer in device memory: the damped live sub-factors of G and A,
/// their inverses and (on demand) eigendecompositions, which rows and columns are dead, and those
/// index lists on the device. The mirror of `cpu::kronecker_curvature`: index k of `g` is row
/// `dead.live_rows[k]` of the layer, and every cost and update works on that live sub-layer.
/// Move-only (device memory).
struct kronecker_curvature {
  /// @brief The damped output-side factor Ĝ on the r live rows, `[r, r]`, device.
  damped_factor g;
  /// @brief The damped input-side factor Â on the c live columns, `[c, c]`, device.
  damped_factor a;
  /// @brief Which layer rows and columns are live or dead (host index lists).
  dead_structure dead;
  /// @brief The index lists of `dead` and each layer index's live position, in device memory.
  device_layer_indices indices;
};

namespace detail {

using surgeon::detail::positions_of;

inline device_buffer<index_t> upload_indices(const context& ctx, const std::vector<index_t>& values) {
  device_buffer<index_t> buffer(ctx, static_cast<index_t>(values.size()));
  buffer.copy_from_host_sync(values.data(), static_cast<index_t>(values.size()));
  return buffer;
}

/// The dead structure of METHOD.md §2 from device factors and weights (the host `find_dead` rules:
/// a row is dead when its weights are all 0 or G_ii = 0, a column likewise with A_jj).
template <typename W>
dead_structure find_dead_on_device(context& ctx, device_matrix_view<const double> g,
                                   device_matrix_view<const double> a, device_matrix_view<const W> w) {
  const index_t rows = g.rows();
  const index_t cols = a.rows();
  cudaStream_t stream = ctx.stream();
  device_buffer<double> diagonals(ctx, rows + cols);
  launch_diagonal(g.data(), rows, g.ld(), diagonals.data(), stream);
  launch_diagonal(a.data(), cols, a.ld(), diagonals.data() + rows, stream);
  std::vector<double> diagonal(static_cast<std::size_t>(rows + cols));
  std::vector<int> alive(static_cast<std::size_t>(rows + cols), 1);
  if (!w.empty()) {
    device_buffer<int> flags(ctx, rows + cols);
    flags.fill_zero();
    launch_nonzero_rows_cols(w.data(), rows, cols, w.ld(), flags.data(), flags.data() + rows, stream);
    flags.copy_to_host(alive.data(), rows + cols);
  }
  diagonals.copy_to_host_sync(diagonal.data(), rows + cols);
  dead_structure dead;
  for (index_t i = 0; i < rows; ++i) {
    const auto k = static_cast<std::size_t>(i);
    (alive[k] != 0 && diagonal[k] != 0.0 ? dead.live_rows : dead.dead_rows).push_back(i);
  }
  for (index_t j = 0; j < cols; ++j) {
    const auto k = static_cast<std::size_t>(rows + j);
    (alive[k] != 0 && diagonal[k] != 0.0 ? dead.live_cols : dead.dead_cols).push_back(j);
  }
  return dead;
}

}  // namespace detail

/// @brief Factorises a layer's K-FAC curvature from device factor means: the CUDA mirror of
/// `cpu::factorize`.
///
/// Finds the dead rows and columns (METHOD.md §2; from the factors' diagonals alone when `w` is
/// empty), restricts G and A to the live indices, damps and inverts each (`damp_and_invert`, with
/// escalation), and uploads the index lists the layer kernels use.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param g output-side factor G `[R, R]`, device, symmetric; @param a input-side factor A `[C, C]`
///        (C includes the bias column when the layer has one); @param w the weights `W̃ [R, C]`,
///        device, float or double, any `ld` (or empty).
/// @param d the damping: λ for G (`d.g`) and A (`d.a`), the mode and the escalation policy.
/// The result is ready in the order of `ctx`'s stream: use it with `ctx` (as the driver does), or
/// synchronize `ctx` before handing it to work on another context's stream.
/// Cost: O(R³ + C³) flops on the device (two Cholesky factorisations and inverses); a few small
/// host transfers; device memory for two copies of each live factor.
/// @throws logic_error on mismatched shapes or bad damping; numerical_error as `damp_and_invert`,
///         or when every row or every column is dead; cuda_error on any CUDA failure.
template <typename W = float>
kronecker_curvature factorize(context& ctx, device_matrix_view<const double> g,
                              device_matrix_view<const double> a, const damping& d,
                              device_matrix_view<const W> w = {}) {
  static_assert(std::is_same_v<W, float> || std::is_same_v<W, double>, "factorize: float or double weights");
  validate(d);
  SURGEON_EXPECTS(g.rows() == g.cols() && a.rows() == a.cols(),
                  "factorize: factors [{}, {}] and [{}, {}] must be square", g.rows(), g.cols(), a.rows(),
                  a.cols());
  if (!w.empty()) {
    SURGEON_EXPECTS(w.rows() == g.rows() && w.cols() == a.rows(),
                    "factorize: weights [{}, {}] do not fit factors G [{}, {}] and A [{}, {}]", w.rows(),
                    w.cols(), g.rows(), g.cols(), a.rows(), a.cols());
  }
  kronecker_curvature result;
  result.dead = detail::find_dead_on_device(ctx, g, a, w);
  if (result.dead.live_rows.empty() || result.dead.live_cols.empty()) {
    SURGEON_THROW(numerical_error, "factorize: the layer is entirely dead ({} live rows, {} live columns)",
                  result.dead.live_rows.size(), result.dead.live_cols.size());
  }
  device_layer_indices& indices = result.indices;
  indices.live_rows = detail::upload_indices(ctx, result.dead.live_rows);
  indices.live_cols = detail::upload_indices(ctx, result.dead.live_cols);
  indices.row_position = detail::upload_indices(ctx, detail::positions_of(result.dead.live_rows, g.rows()));
  indices.col_position = detail::upload_indices(ctx, detail::positions_of(result.dead.live_cols, a.rows()));
  const auto r = static_cast<index_t>(result.dead.live_rows.size());
  const auto c = static_cast<index_t>(result.dead.live_cols.size());
  device_buffer<double> g_live(ctx, r * r);
  device_buffer<double> a_live(ctx, c * c);
  detail::launch_gather_square(g.data(), g.ld(), indices.live_rows.data(), r, g_live.data(), ctx.stream());
  detail::launch_gather_square(a.data(), a.ld(), indices.live_cols.data(), c, a_live.data(), ctx.stream());
  result.g = damp_and_invert(ctx, g_live.view(r, r), d.g, d);
  result.a = damp_and_invert(ctx, a_live.view(c, c), d.a, d);
  return result;
}

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
