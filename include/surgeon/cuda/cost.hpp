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
#include <surgeon/method_traits.hpp>
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

/// The scale vector kind of a traits-table scale (`square_root`: Wanda's √A).
inline scale_kind kind_of(cost_scale scale, bool square_root) {
  switch (scale) {
    case cost_scale::undamped:
      return square_root ? scale_kind::sqrt_undamped : scale_kind::undamped;
    case cost_scale::inverse_of_inv:
      return scale_kind::inverse_of_inv;
    case cost_scale::one:
      break;
  }
  return scale_kind::ones;
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

/// Row costs (`rows`) or column costs of one layer from the traits table: line k costs
/// coefficient · scale_k · q_k, with scale_k the method's scale on its own side (G for rows, A for
/// columns) and q_k = w_kᵀ M w_k over the other side: M = I when that side's scale is one, its
/// undamped diagonal for the diagonal methods (L-OBD), else the whole factor, undamped (K-OBD) or
/// damped (LLM Surgeon, whose line cost is then the exact OBS cost of the whole line).
template <typename T>
std::vector<double> line_costs(context& ctx, method how, const kronecker_curvature& curvature,
                               device_matrix_view<const T> w, bool rows, const char* who) {
  expect_structured(how, who);
  expect_layer_inputs(ctx, curvature, w, who);
  const method_traits traits = traits_of(how);
  const damped_factor& own = rows ? curvature.g : curvature.a;
  const damped_factor& other = rows ? curvature.a : curvature.g;
  const cost_scale other_scale = rows ? traits.column_scale : traits.row_scale;
  const index_t r = curvature.g.order();
  const index_t c = curvature.a.order();
  const device_buffer<double> live = gather_live(ctx, curvature, w);
  const device_buffer<double> scale =
      make_scale(ctx, own, kind_of(rows ? traits.row_scale : traits.column_scale, false), traits.coefficient);
  device_buffer<double> cost(ctx, rows ? r : c);
  cudaStream_t stream = ctx.stream();
  device_buffer<double> weight;   // the other side's diagonal
  device_buffer<double> product;  // W·M (rows) or M·W (columns)
  if (other_scale != cost_scale::one && uses_diagonals_only(how, structure::rows_columns)) {
    SURGEON_EXPECTS(rows, "{}: no column quadratic with a diagonal weight", who);  // L-OBD scales A only
    weight = make_scale(ctx, other, scale_kind::undamped, 1.0);
  } else if (other_scale != cost_scale::one) {
    device_buffer<double> undamped;
    if (other_scale == cost_scale::undamped) undamped = make_undamped(ctx, other);
    const double* m = other_scale == cost_scale::undamped ? undamped.data() : other.damped().data();
    product = device_buffer<double>(ctx, r * c);
    if (rows) {
      gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, r, c, c, 1.0, live.data(), r, m, c, 0.0, product.data(), r);
    } else {
      gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, r, c, r, 1.0, m, r, live.data(), r, 0.0, product.data(), r);
    }
  }
  // quadratic_k = Σ x ⊙ y over line k: x = W·M or M·W and y = W with a product, else x = W alone.
  const double* x = product.size() > 0 ? product.data() : live.data();
  const double* y = product.size() > 0 ? live.data() : nullptr;
  if (rows) {
    launch_row_quadratic(x, y, weight.size() > 0 ? weight.data() : nullptr, r, c, scale.data(), cost.data(),
                         stream);
  } else {
    launch_column_quadratic(x, y, r, c, scale.data(), cost.data(), stream);
  }
  return scatter_to_layer(cost, rows ? curvature.dead.live_rows : curvature.dead.live_cols,
                          rows ? w.rows() : w.cols());
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
  // The method's row of the traits table: coefficient · s_i · W_ij² · t_j (Wanda: its square root).
  const method_traits traits = traits_of(how);
  const detail::scale_kind row_kind = detail::kind_of(traits.row_scale, false);
  const detail::scale_kind col_kind = detail::kind_of(traits.column_scale, traits.square_root);
  const double row_factor = traits.coefficient;
  const bool absolute = traits.square_root;
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
  return detail::line_costs(ctx, how, curvature, w, true, "row_costs");
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
  return detail::line_costs(ctx, how, curvature, w, false, "column_costs");
}

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
