/// @file cuda/cost.hpp
/// @brief CUDA pruning costs (METHOD.md §3): element, row and column costs of one layer for every
/// method, from its device weights and its device `kronecker_curvature`. The mirror of
/// cpu/cost.hpp, with the same formulas, conventions and exceptions.
///
/// **Conventions** (as on the CPU). Weights `W̃` are a row-major `[R, C]` device view, float or
/// double; every cost is computed on the live sub-layer and dead rows and columns cost exactly 0.
/// LLM Surgeon and SparseGPT use the damped factors and their inverses; Wanda, L-OBD and K-OBD the
/// undamped G = Ĝ − shift_G·I and A = Â − shift_A·I. Arithmetic in double. N:M block costs and the
/// global threshold are in cuda/select.hpp.
///
/// nvcc translation units only; no Eigen. Defined only when `SURGEON_HAS_CUDA` is defined.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/curvature.hpp>
#include <surgeon/cuda/detail/layer_kernels.cuh>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/view.hpp>

#include <cublas_v2.h>

#include <type_traits>
#include <vector>

namespace surgeon::cuda {

namespace detail {

/// Checks that `w` is the layer `curvature` was factorised for and that every weight is finite
/// (one device pass and one flag copy).
template <typename T>
void expect_layer_inputs(context& ctx, const kronecker_curvature& curvature, device_matrix_view<const T> w,
                         const char* who) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuda costs: float or double weights");
  const dead_structure& dead = curvature.dead;
  const auto rows = static_cast<index_t>(dead.live_rows.size() + dead.dead_rows.size());
  const auto cols = static_cast<index_t>(dead.live_cols.size() + dead.dead_cols.size());
  SURGEON_EXPECTS(!dead.live_rows.empty() && !dead.live_cols.empty(),
                  "{}: the curvature is empty (not factorised)", who);
  SURGEON_EXPECTS(w.rows() == rows && w.cols() == cols,
                  "{}: weights [{}, {}] do not fit a curvature of a [{}, {}] layer", who, w.rows(), w.cols(),
                  rows, cols);
  SURGEON_EXPECTS(curvature.g.order() == static_cast<index_t>(dead.live_rows.size()) &&
                      curvature.a.order() == static_cast<index_t>(dead.live_cols.size()) &&
                      curvature.indices.row_position.size() == rows &&
                      curvature.indices.col_position.size() == cols,
                  "{}: factors of order {} and {} do not match {} live rows and {} live columns", who,
                  curvature.g.order(), curvature.a.order(), dead.live_rows.size(), dead.live_cols.size());
  device_buffer<int> flag(ctx, 1);
  flag.fill_zero();
  launch_flag_nonfinite(w.data(), w.rows(), w.cols(), w.ld(), flag.data(), ctx.stream());
  int bad = 0;
  flag.copy_to_host_sync(&bad, 1);
  SURGEON_EXPECTS(bad == 0, "{}: a weight of the [{}, {}] layer is not finite", who, w.rows(), w.cols());
}

inline void expect_structured(method how, const char* who) {
  SURGEON_EXPECTS(
      how != method::wanda && how != method::sparsegpt,
      "{}: method {} has no row or column score (METHOD.md §3); use magnitude, lobd, kobd or llm-surgeon",
      who, to_string(how));
}

/// The live sub-layer of `w` in double, column-major `[r, c]`.
template <typename T>
device_buffer<double> gather_live(context& ctx, const kronecker_curvature& curvature,
                                  device_matrix_view<const T> w) {
  const index_t r = curvature.g.order();
  const index_t c = curvature.a.order();
  device_buffer<double> live(ctx, r * c);
  launch_gather_live(w.data(), w.ld(), curvature.indices.live_rows.data(), r,
                     curvature.indices.live_cols.data(), c, live.data(), ctx.stream());
  return live;
}

/// A per-index scale vector of length n (see `scale_kind`).
inline device_buffer<double> make_scale(context& ctx, const damped_factor& f, scale_kind kind,
                                        double factor) {
  const index_t n = f.order();
  device_buffer<double> out(ctx, n);
  const double* source = kind == scale_kind::inverse_of_inv ? f.inverse().data() : f.damped().data();
  launch_scale(source, n, f.report().shift, kind, factor, out.data(), ctx.stream());
  return out;
}

/// The undamped factor `F̂ − shift·I`, packed `[n, n]`.
inline device_buffer<double> make_undamped(context& ctx, const damped_factor& f) {
  const index_t n = f.order();
  device_buffer<double> out(ctx, n * n);
  SURGEON_CUDA_CHECK(cudaMemcpyAsync(out.data(), f.damped().data(), out.size_bytes(),
                                     cudaMemcpyDeviceToDevice, ctx.stream()));
  launch_add_diagonal(out.data(), n, n, -f.report().shift, ctx.stream());
  return out;
}

/// `c = alpha · op(a) · op(b) + beta · c` in double, column-major, on `ctx`'s stream.
inline void gemm(context& ctx, cublasOperation_t op_a, cublasOperation_t op_b, index_t m, index_t n,
                 index_t k, double alpha, const double* a, index_t lda, const double* b, index_t ldb,
                 double beta, double* c, index_t ldc) {
  if (m == 0 || n == 0) return;
  SURGEON_CUBLAS_CHECK(
      cublasDgemm_64(ctx.cublas(), op_a, op_b, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc));
}

/// Scatters live-indexed values `live[k]` into a host vector of `size` entries at `index[k]`
/// (others 0).
inline std::vector<double> scatter_to_layer(const device_buffer<double>& live,
                                            const std::vector<index_t>& index, index_t size) {
  const std::vector<double> values = live.to_host();
  std::vector<double> result(static_cast<std::size_t>(size), 0.0);
  for (std::size_t k = 0; k < index.size(); ++k) result[static_cast<std::size_t>(index[k])] = values[k];
  return result;
}

}  // namespace detail

/// @brief Element pruning costs of one layer (METHOD.md §3), into a device matrix.
///
/// | method | cost of (i, j) |
/// |---|---|
/// | magnitude | W_ij² |
/// | wanda | \|W_ij\|·√A_jj |
/// | lobd | ½ W_ij² A_jj |
/// | kobd | ½ W_ij² G_ii A_jj |
/// | sparsegpt, llm_surgeon | W_ij² / (2 [Ĝ⁻¹]_ii [Â⁻¹]_jj) |
///
/// @param ctx the CUDA context; everything runs on its stream.
/// @param how the pruning method whose cost is computed (every method has an element cost).
/// @param curvature the layer's curvature, factorised for `w` (its live rows, columns and factors).
/// @param w the weights `W̃` `[R, C]`, device, float or double, any `ld`.
/// @param out `[R, C]` device doubles (any `ld`), overwritten; dead rows and columns get 0.
/// Cost: one pass over `w` and `out` (O(R·C)) and O(R + C) for the scales; enqueued on `ctx`'s
/// stream (the finiteness check waits for it).
/// @throws logic_error if `w` or `out` does not fit the curvature or a weight is not finite.
template <typename T>
void element_costs(context& ctx, method how, const kronecker_curvature& curvature,
                   device_matrix_view<const T> w, device_matrix_view<double> out) {
  detail::expect_layer_inputs(ctx, curvature, w, "element_costs");
  SURGEON_EXPECTS(out.rows() == w.rows() && out.cols() == w.cols(),
                  "element_costs: output [{}, {}] for weights [{}, {}]", out.rows(), out.cols(), w.rows(),
                  w.cols());
  using detail::scale_kind;
  scale_kind row_kind = scale_kind::ones;
  scale_kind col_kind = scale_kind::ones;
  double row_factor = 1.0;
  bool absolute = false;
  switch (how) {
    case method::magnitude:
      break;
    case method::wanda:
      col_kind = scale_kind::sqrt_undamped;
      absolute = true;
      break;
    case method::lobd:
      col_kind = scale_kind::undamped;
      row_factor = 0.5;
      break;
    case method::kobd:
      row_kind = scale_kind::undamped;
      col_kind = scale_kind::undamped;
      row_factor = 0.5;
      break;
    case method::sparsegpt:
    case method::llm_surgeon:
      row_kind = scale_kind::inverse_of_inv;
      col_kind = scale_kind::inverse_of_inv;
      row_factor = 0.5;
      break;
  }
  const device_buffer<double> row_scale = detail::make_scale(ctx, curvature.g, row_kind, row_factor);
  const device_buffer<double> col_scale = detail::make_scale(ctx, curvature.a, col_kind, 1.0);
  detail::launch_element_costs(w.data(), w.rows(), w.cols(), w.ld(), curvature.indices.row_position.data(),
                               curvature.indices.col_position.data(), row_scale.data(), col_scale.data(),
                               absolute, out.data(), out.ld(), ctx.stream());
}

/// @brief Element costs into a new packed `[R, C]` device buffer (see the overload with `out`).
template <typename T>
device_buffer<double> element_costs(context& ctx, method how, const kronecker_curvature& curvature,
                                    device_matrix_view<const T> w) {
  device_buffer<double> out(ctx, w.rows() * w.cols());
  element_costs<T>(ctx, how, curvature, w, out.view(w.rows(), w.cols()));
  return out;
}

/// @brief Row (output) pruning costs of one layer (METHOD.md §3), as in `cpu::row_costs`:
/// magnitude ‖w_i‖², lobd ½ Σ_j W_ij² A_jj, kobd ½ G_ii w_iᵀ A w_i, llm_surgeon
/// w_iᵀ Â w_i / (2 [Ĝ⁻¹]_ii); dead rows 0.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param how the pruning method: magnitude, lobd, kobd or llm_surgeon.
/// @param curvature the layer's curvature, factorised for `w`.
/// @param w the weights `W̃` `[R, C]`, device, float or double, any `ld`.
/// @returns R costs in double, host (the selection over rows and columns runs on the host).
/// Cost: kobd and llm_surgeon one DGEMM of 2·r·c² flops; the others O(R·C); waits for the stream.
/// @throws logic_error if `w` does not fit the curvature or holds a non-finite value, or for wanda
///         and sparsegpt (no row score); cuda_error on CUDA failure.
template <typename T>
std::vector<double> row_costs(context& ctx, method how, const kronecker_curvature& curvature,
                              device_matrix_view<const T> w) {
  detail::expect_structured(how, "row_costs");
  detail::expect_layer_inputs(ctx, curvature, w, "row_costs");
  using detail::scale_kind;
  const index_t r = curvature.g.order();
  const index_t c = curvature.a.order();
  const device_buffer<double> live = detail::gather_live(ctx, curvature, w);
  device_buffer<double> cost(ctx, r);
  cudaStream_t stream = ctx.stream();
  switch (how) {
    case method::magnitude: {
      const device_buffer<double> ones = detail::make_scale(ctx, curvature.g, scale_kind::ones, 1.0);
      detail::launch_row_quadratic(live.data(), nullptr, nullptr, r, c, ones.data(), cost.data(), stream);
      break;
    }
    case method::lobd: {
      const device_buffer<double> half = detail::make_scale(ctx, curvature.g, scale_kind::ones, 0.5);
      const device_buffer<double> a = detail::make_scale(ctx, curvature.a, scale_kind::undamped, 1.0);
      detail::launch_row_quadratic(live.data(), nullptr, a.data(), r, c, half.data(), cost.data(), stream);
      break;
    }
    case method::kobd:
    case method::llm_surgeon: {
      // product = W A (A undamped for K-OBD, damped for LLM Surgeon); quadratic_i = Σ_j product ⊙ W.
      const bool kobd = how == method::kobd;
      device_buffer<double> undamped_a;
      if (kobd) undamped_a = detail::make_undamped(ctx, curvature.a);
      const double* a = kobd ? undamped_a.data() : curvature.a.damped().data();
      device_buffer<double> product(ctx, r * c);
      detail::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, r, c, c, 1.0, live.data(), r, a, c, 0.0, product.data(), r);
      const device_buffer<double> scale =
          kobd ? detail::make_scale(ctx, curvature.g, scale_kind::undamped, 0.5)
               : detail::make_scale(ctx, curvature.g, scale_kind::inverse_of_inv, 0.5);
      detail::launch_row_quadratic(product.data(), live.data(), nullptr, r, c, scale.data(), cost.data(),
                                   stream);
      break;
    }
    case method::wanda:
    case method::sparsegpt:
      break;  // rejected above
  }
  return detail::scatter_to_layer(cost, curvature.dead.live_rows, w.rows());
}

/// @brief Column (input, or bias) pruning costs of one layer (METHOD.md §3), as in
/// `cpu::column_costs`: magnitude ‖w_j‖², lobd ½ A_jj ‖w_j‖², kobd ½ A_jj w_jᵀ G w_j, llm_surgeon
/// w_jᵀ Ĝ w_j / (2 [Â⁻¹]_jj); dead columns 0.
/// @param ctx the CUDA context; everything runs on its stream.
/// @param how the pruning method: magnitude, lobd, kobd or llm_surgeon.
/// @param curvature the layer's curvature, factorised for `w`.
/// @param w the weights `W̃` `[R, C]`, device, float or double, any `ld`.
/// @returns C costs in double, host.
/// Cost: kobd and llm_surgeon one DGEMM of 2·r²·c flops; the others O(R·C); waits for the stream.
/// @throws as `row_costs`.
template <typename T>
std::vector<double> column_costs(context& ctx, method how, const kronecker_curvature& curvature,
                                 device_matrix_view<const T> w) {
  detail::expect_structured(how, "column_costs");
  detail::expect_layer_inputs(ctx, curvature, w, "column_costs");
  using detail::scale_kind;
  const index_t r = curvature.g.order();
  const index_t c = curvature.a.order();
  const device_buffer<double> live = detail::gather_live(ctx, curvature, w);
  device_buffer<double> cost(ctx, c);
  cudaStream_t stream = ctx.stream();
  switch (how) {
    case method::magnitude: {
      const device_buffer<double> ones = detail::make_scale(ctx, curvature.a, scale_kind::ones, 1.0);
      detail::launch_column_quadratic(live.data(), nullptr, r, c, ones.data(), cost.data(), stream);
      break;
    }
    case method::lobd: {
      const device_buffer<double> a = detail::make_scale(ctx, curvature.a, scale_kind::undamped, 0.5);
      detail::launch_column_quadratic(live.data(), nullptr, r, c, a.data(), cost.data(), stream);
      break;
    }
    case method::kobd:
    case method::llm_surgeon: {
      const bool kobd = how == method::kobd;
      device_buffer<double> undamped_g;
      if (kobd) undamped_g = detail::make_undamped(ctx, curvature.g);
      const double* g = kobd ? undamped_g.data() : curvature.g.damped().data();
      device_buffer<double> product(ctx, r * c);
      detail::gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, r, c, r, 1.0, g, r, live.data(), r, 0.0, product.data(), r);
      const device_buffer<double> scale =
          kobd ? detail::make_scale(ctx, curvature.a, scale_kind::undamped, 0.5)
               : detail::make_scale(ctx, curvature.a, scale_kind::inverse_of_inv, 0.5);
      detail::launch_column_quadratic(product.data(), live.data(), r, c, scale.data(), cost.data(), stream);
      break;
    }
    case method::wanda:
    case method::sparsegpt:
      break;  // rejected above
  }
  return detail::scatter_to_layer(cost, curvature.dead.live_cols, w.cols());
}

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
