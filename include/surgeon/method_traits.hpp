/// @file method_traits.hpp
/// @brief What each pruning method needs and does, in one table (METHOD.md §3–6): which K-FAC
/// factors it reads, how its mask is selected, whether it updates the weights, which structures it
/// scores and which factor scales its element cost multiplies. The driver, the memory estimate and
/// both backends' argument checks read this table instead of testing methods one by one.
#pragma once

#include <surgeon/mask.hpp>

namespace surgeon {

/// @brief How a method's mask is chosen from its costs.
enum class selection_scope {
  global,     ///< one threshold over every matrix (magnitude, L-OBD, K-OBD, LLM Surgeon)
  per_row,    ///< the same fraction of every output row (Wanda, as in its paper)
  per_layer,  ///< the same fraction of every matrix, chosen by the method's own sweep (SparseGPT)
};

/// @brief A per-row or per-column scale in an element cost `c · s_i · W_ij² · t_j` (METHOD.md §3).
enum class cost_scale {
  one,             ///< 1
  undamped,        ///< the factor's undamped diagonal, G_ii or A_jj
  inverse_of_inv,  ///< 1 / [F̂⁻¹]_ii of the damped factor (the exact OBS denominator)
};

/// @brief One method's row of the table (see `traits_of`).
struct method_traits {
  bool needs_inputs = false;            ///< reads A (layer inputs): every method but magnitude
  bool needs_output_gradients = false;  ///< reads G (output gradients): K-OBD and LLM Surgeon
  selection_scope selection = selection_scope::global;  ///< how the mask is chosen
  bool updates_weights = false;  ///< compensates the removed weights with an OBS update
  /// Has row and column costs (`structure::rows_columns`, and through them `structure::coupled`).
  bool scores_rows_columns = false;
  /// Has a sequential form (`prune_options::sequential`) for element masks.
  bool has_sequential_form = false;
  /// Element cost `coefficient · row_scale(G)_i · W_ij² · column_scale(A)_j`; Wanda's |W_ij|·√A_jj
  /// is the square root of the same product with coefficient 1 and is ranked within each row.
  double coefficient = 1.0;
  cost_scale row_scale = cost_scale::one;     ///< s_i, from G
  cost_scale column_scale = cost_scale::one;  ///< t_j, from A
  /// The element cost is the square root of the product, |W_ij|·√(s_i t_j) (Wanda's score).
  bool square_root = false;
};

/// @brief The table: one row per method. O(1).
constexpr method_traits traits_of(method how) noexcept {
  method_traits t;
  switch (how) {
    case method::magnitude:
      t.scores_rows_columns = true;
      break;
    case method::wanda:
      t.needs_inputs = true;
      t.selection = selection_scope::per_row;
      t.has_sequential_form = true;
      t.column_scale = cost_scale::undamped;
      t.square_root = true;
      break;
    case method::lobd:
      t.needs_inputs = true;
      t.scores_rows_columns = true;
      t.coefficient = 0.5;
      t.column_scale = cost_scale::undamped;
      break;
    case method::kobd:
      t.needs_inputs = t.needs_output_gradients = true;
      t.scores_rows_columns = true;
      t.coefficient = 0.5;
      t.row_scale = t.column_scale = cost_scale::undamped;
      break;
    case method::sparsegpt:
      t.needs_inputs = true;
      t.selection = selection_scope::per_layer;
      t.updates_weights = true;
      t.has_sequential_form = true;
      t.coefficient = 0.5;
      t.row_scale = t.column_scale = cost_scale::inverse_of_inv;
      break;
    case method::llm_surgeon:
      t.needs_inputs = t.needs_output_gradients = true;
      t.updates_weights = true;
      t.scores_rows_columns = true;
      t.has_sequential_form = true;
      t.coefficient = 0.5;
      t.row_scale = t.column_scale = cost_scale::inverse_of_inv;
      break;
  }
  return t;
}

/// @brief True when `how` has a sequential form for `what`: SparseGPT and Wanda for element masks,
/// LLM Surgeon for element masks (its row/column updates have none). O(1).
constexpr bool has_sequential_form(method how, structure what) noexcept {
  return traits_of(how).has_sequential_form && !removes_lines(what);
}

/// @brief True when the costs of `how` for `what` read only the diagonals of G and A (or neither):
/// magnitude, Wanda, L-OBD for every structure, K-OBD except rows-cols (whose row cost wᵢᵀ A wᵢ
/// needs the whole A, and whose column cost the whole G; coupled units alike). O(1).
constexpr bool uses_diagonals_only(method how, structure what) noexcept {
  return how == method::magnitude || how == method::wanda || how == method::lobd ||
         (how == method::kobd && !removes_lines(what));
}

}  // namespace surgeon
