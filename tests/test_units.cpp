// Coupled units (units.hpp): the selection's invariants, unit costs and the per-matrix updates
// against brute-force OBS on a small Llama-like block, and bad input.
#include <surgeon/cpu/cost.hpp>
#include <surgeon/cpu/update.hpp>
#include <surgeon/units.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "support/catch.hpp"
#include "support/obs_oracle.hpp"
#include "support/random.hpp"

using surgeon::coupled_unit;
using surgeon::coupled_units;
using surgeon::host_matrix;
using surgeon::index_t;
using surgeon::line_kind;
using surgeon::test::dense;
using surgeon::test::dense_vector;

namespace {

// A Llama-like block in small: q [H·hd, d], o [d, H·hd] (heads), gate and up [F, d], down [d, F]
// (neurons), each with its own random SPD factors G and A and random weights.
struct small_block {
  static constexpr index_t d = 5;
  static constexpr index_t heads = 3;
  static constexpr index_t head_dim = 2;
  static constexpr index_t ffn = 4;
  struct matrix {
    host_matrix<double> g, a, w;
    surgeon::cpu::kronecker_curvature curvature;
  };
  std::vector<matrix> matrices;  // q, o, gate, up, down
  coupled_units units;           // neurons 0..F-1, then heads 0..H-1

  explicit small_block(unsigned seed) {
    const std::vector<std::pair<index_t, index_t>> shapes = {
        {heads * head_dim, d}, {d, heads * head_dim}, {ffn, d}, {ffn, d}, {d, ffn}};
    surgeon::cpu::context cpu;
    unsigned s = seed;
    for (const auto& [rows, cols] : shapes) {
      matrix m{surgeon::test::random_spd(rows, s),
               surgeon::test::random_spd(cols, s + 100u),
               host_matrix<double>(rows, cols),
               {}};
      const std::vector<double> values = surgeon::test::random_rows<double>(rows, cols, cols, s + 200u);
      std::copy(values.begin(), values.end(), m.w.data());
      m.curvature = surgeon::cpu::factorize(cpu, std::as_const(m.g).view(), std::as_const(m.a).view(),
                                            surgeon::damping{0.1, 0.01}, std::as_const(m.w).view());
      matrices.push_back(std::move(m));
      s += 7u;
    }
    for (index_t i = 0; i < ffn; ++i) {
      units.units.push_back(
          coupled_unit{"ffn." + std::to_string(i),
                       {{2, line_kind::row, i, 1}, {3, line_kind::row, i, 1}, {4, line_kind::column, i, 1}}});
    }
    for (index_t h = 0; h < heads; ++h) {
      units.units.push_back(coupled_unit{
          "head." + std::to_string(h),
          {{0, line_kind::row, h * head_dim, head_dim}, {1, line_kind::column, h * head_dim, head_dim}}});
    }
  }

  std::vector<std::vector<double>> row_costs() const {
    surgeon::cpu::context cpu;
    std::vector<std::vector<double>> costs;
    for (const matrix& m : matrices)
      costs.push_back(surgeon::cpu::row_costs(cpu, surgeon::method::llm_surgeon, m.curvature, m.w.view()));
    return costs;
  }
  std::vector<std::vector<double>> column_costs() const {
    surgeon::cpu::context cpu;
    std::vector<std::vector<double>> costs;
    for (const matrix& m : matrices)
      costs.push_back(surgeon::cpu::column_costs(cpu, surgeon::method::llm_surgeon, m.curvature, m.w.view()));
    return costs;
  }

  // The Fisher of the whole block: block-diagonal over the matrices, each block Ĝ ⊗ Â (damped),
  // and the block's weights flattened matrix after matrix (row-major inside each).
  dense fisher() const {
    index_t n = 0;
    for (const matrix& m : matrices) n += m.w.size();
    dense f = dense::Zero(n, n);
    index_t offset = 0;
    for (const matrix& m : matrices) {
      f.block(offset, offset, m.w.size(), m.w.size()) =
          surgeon::test::kronecker(m.curvature.g.damped(), m.curvature.a.damped());
      offset += m.w.size();
    }
    return f;
  }
  dense_vector theta() const {
    std::vector<double> values;
    for (const matrix& m : matrices) values.insert(values.end(), m.w.values().begin(), m.w.values().end());
    return Eigen::Map<const dense_vector>(values.data(), static_cast<index_t>(values.size()));
  }
  // Flat indices (in `theta()`) of the weights a unit's lines cover.
  std::vector<index_t> indices(const coupled_unit& u) const {
    std::vector<index_t> offsets{0};
    for (const matrix& m : matrices) offsets.push_back(offsets.back() + m.w.size());
    std::vector<index_t> k;
    for (const surgeon::unit_lines& l : u.lines) {
      const host_matrix<double>& w = matrices[l.matrix].w;
      for (index_t line = l.first; line < l.first + l.count; ++line) {
        const index_t other = l.kind == line_kind::row ? w.cols() : w.rows();
        for (index_t t = 0; t < other; ++t) {
          const index_t i = l.kind == line_kind::row ? line : t;
          const index_t j = l.kind == line_kind::row ? t : line;
          k.push_back(offsets[l.matrix] + i * w.cols() + j);
        }
      }
    }
    std::sort(k.begin(), k.end());
    return k;
  }
};

bool close(double x, double y, double tol) {
  return std::abs(x - y) <= tol * std::max(std::abs(y), 1e-300);
}

// Random units over random shapes for the selection's invariants: disjoint single-line and
// multi-line units over rows and columns of several matrices, some followers.
struct random_problem {
  std::vector<std::vector<double>> rows, cols;
  coupled_units units;
  explicit random_problem(unsigned seed) {
    std::mt19937 engine(seed);
    std::uniform_int_distribution<index_t> extent(2, 9);
    std::uniform_real_distribution<double> cost(0.0, 1.0);
    const index_t matrices = 4;
    for (index_t m = 0; m < matrices; ++m) {
      rows.emplace_back(static_cast<std::size_t>(extent(engine)));
      cols.emplace_back(static_cast<std::size_t>(extent(engine)));
      for (double& c : rows.back()) c = cost(engine);
      for (double& c : cols.back()) c = cost(engine);
      // A tie, so that the tie rule is exercised.
      rows.back()[0] = 0.25;
    }
    // Units: for each matrix, its rows in runs of 1 or 2, paired with a column of the next matrix
    // when there is one left (so units span two matrices, and rows meet columns inside a matrix).
    std::vector<index_t> next_col(matrices, 0);
    for (index_t m = 0; m < matrices; ++m) {
      const auto r = static_cast<index_t>(rows[static_cast<std::size_t>(m)].size());
      for (index_t i = 0; i < r;) {
        const index_t count = std::min<index_t>(r - i, 1 + (engine() % 2));
        coupled_unit u{"u" + std::to_string(units.units.size()),
                       {{static_cast<std::size_t>(m), line_kind::row, i, count}}};
        const index_t other = (m + 1) % matrices;
        if (next_col[static_cast<std::size_t>(other)] <
            static_cast<index_t>(cols[static_cast<std::size_t>(other)].size())) {
          u.lines.push_back({static_cast<std::size_t>(other), line_kind::column,
                             next_col[static_cast<std::size_t>(other)]++, 1});
        }
        // The last row of matrix 0 is left to a follower.
        if (m == 0 && i + count == r) break;
        units.units.push_back(std::move(u));
        i += count;
      }
    }
    const auto r0 = static_cast<index_t>(rows[0].size());
    units.followers.push_back({coupled_unit{"follower", {{0, line_kind::row, r0 - 1, 1}}}, {0, 1}});
  }
};

}  // namespace

TEST_CASE("select_units takes the cheapest units that fit, counting each weight once", "[units]") {
  const unsigned seed = GENERATE(1u, 2u, 3u, 4u, 5u, 6u);
  const double sparsity = GENERATE(0.0, 0.2, 0.45, 0.8);
  CAPTURE(seed, sparsity);
  const random_problem p(seed);
  const surgeon::unit_selection chosen = surgeon::select_units(p.rows, p.cols, p.units, sparsity);
  index_t total = 0;
  index_t masked = 0;
  for (std::size_t m = 0; m < p.rows.size(); ++m) {
    total += static_cast<index_t>(p.rows[m].size() * p.cols[m].size());
    masked += chosen.masks[m].count();
  }
  const index_t budget = surgeon::prune_count(sparsity, total);
  // The count is the masks' count, within the budget.
  CHECK(chosen.removed == masked);
  CHECK(chosen.removed <= budget);
  // The taken units are the cheapest ones (ties by index), and the next would not have fitted.
  std::vector<std::pair<double, std::size_t>> order;
  for (std::size_t u = 0; u < p.units.units.size(); ++u)
    order.emplace_back(surgeon::unit_cost(p.units.units[u], p.rows, p.cols), u);
  std::sort(order.begin(), order.end());
  std::vector<std::size_t> prefix;
  for (std::size_t t = 0; t < chosen.taken.size(); ++t) prefix.push_back(order[t].second);
  std::sort(prefix.begin(), prefix.end());
  CHECK(prefix == chosen.taken);
  if (chosen.taken.size() < order.size()) {
    // Taking the next unit too: recount the mask that would give.
    std::vector<surgeon::mask> masks;
    for (std::size_t m = 0; m < p.rows.size(); ++m) masks.push_back(chosen.masks[m]);
    std::set<std::size_t> with_next(chosen.taken.begin(), chosen.taken.end());
    with_next.insert(order[chosen.taken.size()].second);
    const auto mark = [&](const coupled_unit& u) {
      for (const surgeon::unit_lines& l : u.lines) {
        for (index_t i = l.first; i < l.first + l.count; ++i) {
          if (l.kind == line_kind::row) {
            masks[l.matrix].prune_row(i);
          } else {
            masks[l.matrix].prune_column(i);
          }
        }
      }
    };
    mark(p.units.units[order[chosen.taken.size()].second]);
    const auto& f = p.units.followers[0];
    if (std::all_of(f.leaders.begin(), f.leaders.end(),
                    [&](std::size_t l) { return with_next.count(l) != 0; }))
      mark(f.unit);
    index_t would_remove = 0;
    for (const surgeon::mask& m : masks) would_remove += m.count();
    CHECK(would_remove > budget);
  }
  // The follower is removed exactly when both its leaders are.
  const bool leaders_taken = std::count(chosen.taken.begin(), chosen.taken.end(), 0u) == 1 &&
                             std::count(chosen.taken.begin(), chosen.taken.end(), 1u) == 1;
  CHECK(leaders_taken == (chosen.followers_taken.size() == 1));
  const index_t last_row = static_cast<index_t>(p.rows[0].size()) - 1;
  CHECK(leaders_taken == std::binary_search(chosen.rows[0].begin(), chosen.rows[0].end(), last_row));
  // Rows and columns of each matrix are the union of the taken units' lines, sorted.
  for (std::size_t m = 0; m < p.rows.size(); ++m) {
    CHECK(std::is_sorted(chosen.rows[m].begin(), chosen.rows[m].end()));
    CHECK(std::is_sorted(chosen.cols[m].begin(), chosen.cols[m].end()));
  }
}

TEST_CASE("a neuron's cost is the brute-force OBS cost of its lines under the block's Fisher", "[units]") {
  // The Fisher is block-diagonal over matrices, so removing one line in each of gate, up and down
  // costs the sum of the three lines' OBS costs: the unit cost is exact for a neuron.
  const small_block block(3u);
  const dense f = block.fisher();
  const dense_vector theta = block.theta();
  const auto rows = block.row_costs();
  const auto cols = block.column_costs();
  for (index_t i = 0; i < small_block::ffn; ++i) {
    CAPTURE(i);
    const coupled_unit& neuron = block.units.units[static_cast<std::size_t>(i)];
    CHECK(close(surgeon::unit_cost(neuron, rows, cols),
                surgeon::test::obs_cost(f, theta, block.indices(neuron)), 1e-9));
  }
  // A head's lines are costed one by one (the sum of its rows' and columns' costs), which is the
  // definition the selection uses; the joint cost of its lines is checked not to be below zero
  // and the definition to hold.
  for (index_t h = 0; h < small_block::heads; ++h) {
    const coupled_unit& head = block.units.units[static_cast<std::size_t>(small_block::ffn + h)];
    double sum = 0.0;
    for (index_t r = 0; r < small_block::head_dim; ++r)
      sum += rows[0][static_cast<std::size_t>(h * small_block::head_dim + r)];
    for (index_t r = 0; r < small_block::head_dim; ++r)
      sum += cols[1][static_cast<std::size_t>(h * small_block::head_dim + r)];
    CHECK(surgeon::unit_cost(head, rows, cols) == sum);
    CHECK(surgeon::test::obs_cost(f, theta, block.indices(head)) > 0.0);
  }
}

TEST_CASE("selected units with each matrix's row/column update equal the joint brute-force OBS", "[units]") {
  // The joint OBS solution for removing every taken unit at once, under the block-diagonal
  // Fisher, is each matrix's own OBS solution for its removed rows or columns.
  const double sparsity = GENERATE(0.2, 0.4, 0.6);
  CAPTURE(sparsity);
  small_block block(11u);
  const dense f = block.fisher();
  const dense_vector theta = block.theta();
  const surgeon::unit_selection chosen =
      surgeon::select_units(block.row_costs(), block.column_costs(), block.units, sparsity);
  REQUIRE(!chosen.taken.empty());
  std::vector<index_t> removed;
  for (const std::size_t u : chosen.taken) {
    const auto k = block.indices(block.units.units[u]);
    removed.insert(removed.end(), k.begin(), k.end());
  }
  std::sort(removed.begin(), removed.end());
  const dense_vector expected = surgeon::test::obs_updated(f, theta, removed);
  surgeon::cpu::context cpu;
  for (std::size_t m = 0; m < block.matrices.size(); ++m) {
    auto& matrix = block.matrices[m];
    surgeon::cpu::update_rows_columns(cpu, matrix.curvature, matrix.w.view(), chosen.rows[m], chosen.cols[m]);
    chosen.masks[m].apply(matrix.w.view());
  }
  const dense_vector got = block.theta();
  CHECK((got - expected).cwiseAbs().maxCoeff() < 1e-8 * std::max(1.0, expected.cwiseAbs().maxCoeff()));
  for (const index_t k : removed) CHECK(got(k) == 0.0);
}

TEST_CASE("bad units are refused with the unit's name", "[units]") {
  const std::vector<std::vector<double>> rows = {{1, 2, 3}, {1, 2}};
  const std::vector<std::vector<double>> cols = {{1, 2}, {1, 2, 3}};
  const auto refuses = [&](const coupled_units& units) {
    CHECK_THROWS_AS(surgeon::select_units(rows, cols, units, 0.3), surgeon::logic_error);
  };
  refuses(coupled_units{{coupled_unit{"empty", {}}}, {}});
  refuses(coupled_units{{coupled_unit{"no such matrix", {{2, line_kind::row, 0, 1}}}}, {}});
  refuses(coupled_units{{coupled_unit{"past the end", {{0, line_kind::row, 2, 2}}}}, {}});
  refuses(coupled_units{{coupled_unit{"negative", {{0, line_kind::column, -1, 1}}}}, {}});
  refuses(coupled_units{{coupled_unit{"zero lines", {{0, line_kind::row, 0, 0}}}}, {}});
  refuses(coupled_units{
      {coupled_unit{"a", {{1, line_kind::column, 0, 2}}}, coupled_unit{"b", {{1, line_kind::column, 1, 1}}}},
      {}});
  refuses(coupled_units{{coupled_unit{"a", {{0, line_kind::row, 0, 1}}}},
                        {{coupled_unit{"follower", {{0, line_kind::row, 1, 1}}}, {}}}});
  refuses(coupled_units{{coupled_unit{"a", {{0, line_kind::row, 0, 1}}}},
                        {{coupled_unit{"follower", {{0, line_kind::row, 1, 1}}}, {3}}}});
  refuses(coupled_units{{coupled_unit{"a", {{0, line_kind::row, 0, 1}}}},
                        {{coupled_unit{"follower", {{0, line_kind::row, 0, 1}}}, {0}}}});
  // NaN costs, bad sparsity, mismatched lists.
  const coupled_units fine{{coupled_unit{"a", {{0, line_kind::row, 0, 1}}}}, {}};
  auto nan_rows = rows;
  nan_rows[0][0] = std::nan("");
  CHECK_THROWS_AS(surgeon::select_units(nan_rows, cols, fine, 0.3), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::select_units(rows, cols, fine, 1.0), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::select_units(rows, {{1, 2}}, fine, 0.3), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::select_units({}, {}, fine, 0.3), surgeon::logic_error);
  // Which unit is at fault is named.
  try {
    surgeon::select_units(rows, cols,
                          coupled_units{{coupled_unit{"blk.1.ffn.7", {{0, line_kind::row, 5, 1}}}}, {}}, 0.3);
    FAIL("no exception");
  } catch (const surgeon::logic_error& e) {
    CHECK(std::string(e.what()).find("blk.1.ffn.7") != std::string::npos);
  }
}
