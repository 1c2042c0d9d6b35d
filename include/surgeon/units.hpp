/// @file units.hpp
/// @brief Coupled structures (METHOD.md §5, "Coupled units"): lines of several matrices that are
/// removed together because removing any one of them alone leaves the others computing nothing
/// useful. An FFN neuron of a Llama block is row i of gate and up and column i of down; an
/// attention head is its head_dim rows of q and head_dim columns of o; a key/value head is its rows
/// of k and v, removed once every query head that reads it is gone. The caller describes its
/// units (`coupled_units`); `select_units` picks them under one global threshold, and the driver
/// gives each matrix the OBS update for its removed rows or columns (`structure::coupled`).
/// Backend-neutral and free of Eigen.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/select.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace surgeon {

/// @brief Whether a unit's lines are rows (outputs) or columns (inputs) of a matrix.
enum class line_kind { row, column };

/// @brief `count` consecutive rows or columns, from `first`, of the matrix with index `matrix` in
/// the adapter's `matrices()` list.
struct unit_lines {
  std::size_t matrix = 0;           ///< index into the adapter's matrices
  line_kind kind = line_kind::row;  ///< rows or columns
  index_t first = 0;                ///< first line
  index_t count = 1;                ///< number of consecutive lines
  /// The lines' outputs are read by the unit's other lines only (rows of gate and up, read by a
  /// neuron's column of down; rows of q, read by a head's columns of o; rows of k and v, read by
  /// the heads that follow them): once the unit is gone they affect nothing. For a method that
  /// updates the weights (LLM Surgeon), whose cost is the loss left after the update, such lines
  /// cost nothing and are zeroed without an update: the update of the lines that read them
  /// compensates the unit. Other methods score every line of the unit.
  bool feeds_unit = false;
};

/// @brief One unit: the lines removed together. Its cost is the sum of its lines' row and column
/// costs (the Fisher is block-diagonal over matrices, and the lines of one matrix are costed one
/// by one, as `structure::rows_columns` costs them).
struct coupled_unit {
  std::string name;               ///< for messages and reports ("blk.3.ffn.17", "blk.3.head.2")
  std::vector<unit_lines> lines;  ///< non-empty
};

/// @brief A unit that follows others: it is removed, at no cost of its own, once every one of its
/// `leaders` is removed (a key/value head once all the query heads that read it are gone: its
/// outputs are then read by nothing).
struct follower_unit {
  coupled_unit unit;                 ///< its lines
  std::vector<std::size_t> leaders;  ///< indices into `coupled_units::units`, non-empty
};

/// @brief Every coupled unit of a model, as an adapter's `units()` returns it. Units and followers
/// must not share a line; lines not in any unit are never removed.
struct coupled_units {
  std::vector<coupled_unit> units;       ///< the candidates of the selection
  std::vector<follower_unit> followers;  ///< removed with their leaders
};

/// @brief The result of `select_units`: what `select_rows_columns` returns (masks, removed rows
/// and columns per matrix, the threshold, the removed count), plus which units were taken.
struct unit_selection : structured_selection {
  std::vector<std::size_t> taken;            ///< indices into `coupled_units::units`, ascending
  std::vector<std::size_t> followers_taken;  ///< indices into `coupled_units::followers`, ascending
};

namespace detail {

inline void expect_unit_lines(const coupled_unit& u, const std::vector<index_t>& rows,
                              const std::vector<index_t>& cols, const char* who) {
  SURGEON_EXPECTS(!u.lines.empty(), "{}: unit '{}' has no lines", who, u.name);
  for (const unit_lines& l : u.lines) {
    SURGEON_EXPECTS(l.matrix < rows.size(), "{}: unit '{}' names matrix {} of {}", who, u.name, l.matrix,
                    rows.size());
    const index_t extent = l.kind == line_kind::row ? rows[l.matrix] : cols[l.matrix];
    SURGEON_EXPECTS(l.count >= 1 && l.first >= 0 && l.first <= extent - l.count,
                    "{}: unit '{}' takes {} {} from {} of matrix {}, which has {}", who, u.name, l.count,
                    l.kind == line_kind::row ? "rows" : "columns", l.first, l.matrix, extent);
  }
}

}  // namespace detail

/// @brief Checks `units` against matrix shapes `rows[m]` × `cols[m]`: every unit and follower has
/// lines inside its matrices, no line belongs to two units, every follower has leaders that exist.
/// Cost: O(Σ lines + Σ (R_m + C_m)).
/// @throws logic_error naming the first unit at fault.
inline void validate(const coupled_units& units, const std::vector<index_t>& rows,
                     const std::vector<index_t>& cols) {
  SURGEON_EXPECTS(rows.size() == cols.size(), "coupled_units: {} row counts but {} column counts",
                  rows.size(), cols.size());
  std::vector<std::vector<char>> row_used(rows.size());
  std::vector<std::vector<char>> col_used(cols.size());
  for (std::size_t m = 0; m < rows.size(); ++m) {
    row_used[m].assign(static_cast<std::size_t>(rows[m]), 0);
    col_used[m].assign(static_cast<std::size_t>(cols[m]), 0);
  }
  const auto claim = [&](const coupled_unit& u) {
    detail::expect_unit_lines(u, rows, cols, "coupled_units");
    for (const unit_lines& l : u.lines) {
      std::vector<char>& used = l.kind == line_kind::row ? row_used[l.matrix] : col_used[l.matrix];
      for (index_t i = l.first; i < l.first + l.count; ++i) {
        SURGEON_EXPECTS(used[static_cast<std::size_t>(i)] == 0,
                        "coupled_units: {} {} of matrix {} belongs to unit '{}' and to an earlier one",
                        l.kind == line_kind::row ? "row" : "column", i, l.matrix, u.name);
        used[static_cast<std::size_t>(i)] = 1;
      }
    }
  };
  for (const coupled_unit& u : units.units) claim(u);
  for (const follower_unit& f : units.followers) {
    claim(f.unit);
    SURGEON_EXPECTS(!f.leaders.empty(), "coupled_units: follower '{}' has no leaders", f.unit.name);
    for (const std::size_t leader : f.leaders) {
      SURGEON_EXPECTS(leader < units.units.size(), "coupled_units: follower '{}' follows unit {} of {}",
                      f.unit.name, leader, units.units.size());
    }
  }
}

/// @brief The cost of one unit: the sum of its lines' costs, `row_costs[m][i]` for a row and
/// `col_costs[m][j]` for a column. O(lines of the unit).
inline double unit_cost(const coupled_unit& unit, const std::vector<std::vector<double>>& row_costs,
                        const std::vector<std::vector<double>>& col_costs) {
  double cost = 0.0;
  for (const unit_lines& l : unit.lines) {
    const std::vector<double>& costs = l.kind == line_kind::row ? row_costs[l.matrix] : col_costs[l.matrix];
    for (index_t i = l.first; i < l.first + l.count; ++i) cost += costs[static_cast<std::size_t>(i)];
  }
  return cost;
}

/// @brief Global selection of coupled units by parameter count (METHOD.md §5).
///
/// Walking the units in ascending cost (`unit_cost`; ties by unit index), taking a unit removes
/// its lines and, when it completes a follower's leaders, the follower's lines. A row of matrix m
/// removes `C_m − c_m` more weights and a column `R_m − r_m` (r_m, c_m: rows and columns of m
/// already removed), so overlapping rows and columns are counted once. Units are taken while the
/// total stays ≤ ⌊s·Σ R_m·C_m⌋; the walk stops at the first unit that would exceed it (one
/// threshold for every matrix, as `select_rows_columns`).
/// @param row_costs per matrix, R_m row costs; @param col_costs per matrix, C_m column costs (host;
///        `cpu::row_costs` / `cpu::column_costs` or the diagonal methods' ones).
/// @param units the units (checked with `validate`).
/// @param sparsity target fraction s ∈ [0, 1) of the weights of all matrices.
/// Cost: O(U log U + Σ lines) for U units, plus O(Σ R_m·C_m / 64) to fill the masks.
/// @throws logic_error on an empty matrix list, mismatched row and column lists, sparsity outside
///         [0, 1), a NaN cost, or invalid units.
inline unit_selection select_units(const std::vector<std::vector<double>>& row_costs,
                                   const std::vector<std::vector<double>>& col_costs,
                                   const coupled_units& units, double sparsity) {
  detail::expect_layers(row_costs.size(), "select_units");
  detail::expect_sparsity(sparsity, "select_units");
  SURGEON_EXPECTS(row_costs.size() == col_costs.size(),
                  "select_units: {} matrices of row costs but {} of column costs", row_costs.size(),
                  col_costs.size());
  std::vector<index_t> rows(row_costs.size());
  std::vector<index_t> cols(col_costs.size());
  index_t total = 0;
  for (std::size_t m = 0; m < row_costs.size(); ++m) {
    rows[m] = static_cast<index_t>(row_costs[m].size());
    cols[m] = static_cast<index_t>(col_costs[m].size());
    total += rows[m] * cols[m];
  }
  validate(units, rows, cols);
  struct candidate {
    double cost;
    std::size_t unit;
  };
  std::vector<candidate> order;
  order.reserve(units.units.size());
  for (std::size_t u = 0; u < units.units.size(); ++u) {
    const double cost = unit_cost(units.units[u], row_costs, col_costs);
    SURGEON_EXPECTS(!std::isnan(cost), "select_units: NaN cost of unit '{}'", units.units[u].name);
    order.push_back({cost + 0.0, u});
  }
  std::sort(order.begin(), order.end(), [](const candidate& x, const candidate& y) {
    return x.cost < y.cost || (x.cost == y.cost && x.unit < y.unit);
  });
  // Which followers each unit leads, and how many leaders each follower still waits for.
  std::vector<std::vector<std::size_t>> led(units.units.size());
  std::vector<std::size_t> waiting(units.followers.size());
  for (std::size_t f = 0; f < units.followers.size(); ++f) {
    for (const std::size_t leader : units.followers[f].leaders) led[leader].push_back(f);
    waiting[f] = units.followers[f].leaders.size();
  }
  const index_t budget = prune_count(sparsity, total);
  unit_selection result;
  result.rows.resize(row_costs.size());
  result.cols.resize(row_costs.size());
  // Weights the lines of `u` remove given what is taken so far (rows and columns of a matrix meet).
  std::vector<index_t> rows_taken(rows.size(), 0);
  std::vector<index_t> cols_taken(cols.size(), 0);
  const auto added_by = [&](const coupled_unit& u, std::vector<index_t>& r_taken,
                            std::vector<index_t>& c_taken) {
    index_t added = 0;
    for (const unit_lines& l : u.lines) {
      if (l.kind == line_kind::row) {
        added += l.count * (cols[l.matrix] - c_taken[l.matrix]);
        r_taken[l.matrix] += l.count;
      } else {
        added += l.count * (rows[l.matrix] - r_taken[l.matrix]);
        c_taken[l.matrix] += l.count;
      }
    }
    return added;
  };
  const auto take_lines = [&](const coupled_unit& u) {
    for (const unit_lines& l : u.lines) {
      auto& lines = (l.kind == line_kind::row ? result.rows : result.cols)[l.matrix];
      for (index_t i = l.first; i < l.first + l.count; ++i) lines.push_back(i);
    }
  };
  for (const candidate& c : order) {
    // What taking this unit would add: its lines and the followers it completes.
    std::vector<index_t> r_try = rows_taken;
    std::vector<index_t> c_try = cols_taken;
    index_t added = added_by(units.units[c.unit], r_try, c_try);
    std::vector<std::size_t> completed;
    for (const std::size_t f : led[c.unit]) {
      if (waiting[f] == 1) {
        completed.push_back(f);
        added += added_by(units.followers[f].unit, r_try, c_try);
      }
    }
    if (result.removed + added > budget) break;
    result.removed += added;
    result.threshold = c.cost;
    rows_taken = std::move(r_try);
    cols_taken = std::move(c_try);
    result.taken.push_back(c.unit);
    take_lines(units.units[c.unit]);
    for (const std::size_t f : led[c.unit]) --waiting[f];
    for (const std::size_t f : completed) {
      result.followers_taken.push_back(f);
      take_lines(units.followers[f].unit);
    }
  }
  std::sort(result.taken.begin(), result.taken.end());
  std::sort(result.followers_taken.begin(), result.followers_taken.end());
  for (std::size_t m = 0; m < row_costs.size(); ++m) {
    std::sort(result.rows[m].begin(), result.rows[m].end());
    std::sort(result.cols[m].begin(), result.cols[m].end());
    mask layer_mask(rows[m], cols[m]);
    for (const index_t i : result.rows[m]) layer_mask.prune_row(i);
    for (const index_t j : result.cols[m]) layer_mask.prune_column(j);
    result.masks.push_back(std::move(layer_mask));
  }
  return result;
}

}  // namespace surgeon
