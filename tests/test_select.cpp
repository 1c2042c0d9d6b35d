#include <surgeon/select.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "support/catch.hpp"

using surgeon::host_matrix;
using surgeon::host_matrix_view;
using surgeon::index_t;
using surgeon::mask;
using surgeon::nm_pattern;

namespace {

using views = std::vector<host_matrix_view<const double>>;

// Costs drawn uniformly from [0, 1), or from {0, 1, 2, 3} (many ties) when `levels` > 0.
host_matrix<double> random_costs(index_t rows, index_t cols, unsigned seed, int levels = 0) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::uniform_int_distribution<int> level(0, std::max(levels - 1, 0));
  host_matrix<double> m(rows, cols);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j)
      m(i, j) = levels > 0 ? static_cast<double>(level(engine)) : uniform(engine);
  }
  return m;
}

views view_all(const std::vector<host_matrix<double>>& layers) {
  views result;
  for (const auto& layer : layers) result.push_back(layer.view());
  return result;
}

std::vector<host_matrix<double>> three_layers(unsigned seed, int levels = 0) {
  return {random_costs(5, 7, seed, levels), random_costs(12, 9, seed + 1u, levels),
          random_costs(3, 16, seed + 2u, levels)};
}

// Reference: the k smallest (cost, layer, flat) triples, as masks.
std::vector<mask> brute_force_unstructured(const std::vector<host_matrix<double>>& layers, index_t k) {
  std::vector<std::tuple<double, std::size_t, index_t>> all;
  for (std::size_t m = 0; m < layers.size(); ++m) {
    for (index_t p = 0; p < layers[m].size(); ++p)
      all.emplace_back(layers[m].values()[static_cast<std::size_t>(p)], m, p);
  }
  std::sort(all.begin(), all.end());
  std::vector<mask> masks;
  for (const auto& layer : layers) masks.emplace_back(layer.rows(), layer.cols());
  for (index_t t = 0; t < k; ++t) {
    const auto& [cost, m, p] = all[static_cast<std::size_t>(t)];
    masks[m].prune(p / layers[m].cols(), p % layers[m].cols());
  }
  return masks;
}

}  // namespace

TEST_CASE("prune_count is the floor of s·P, tolerant of rounding", "[select]") {
  CHECK(surgeon::prune_count(0.0, 100) == 0);
  CHECK(surgeon::prune_count(0.5, 7) == 3);
  CHECK(surgeon::prune_count(0.29, 100) == 29);  // 0.29·100 = 28.999999999999996 in double
  CHECK(surgeon::prune_count(0.7, 10) == 7);
  CHECK(surgeon::prune_count(0.999, 1000) == 999);
  CHECK(surgeon::prune_count(0.5, 0) == 0);
  CHECK_THROWS_AS(surgeon::prune_count(1.0, 10), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::prune_count(-0.1, 10), surgeon::logic_error);
}

TEST_CASE("one global threshold removes exactly floor(s·P) elements across layers", "[select]") {
  for (const int levels : {0, 4}) {
    CAPTURE(levels);
    const auto layers = three_layers(17u, levels);
    const index_t total = 5 * 7 + 12 * 9 + 3 * 16;
    for (const double s : {0.0, 0.1, 0.25, 0.5, 0.77, 0.99}) {
      CAPTURE(s);
      const surgeon::selection result = surgeon::select_unstructured(view_all(layers), s);
      const index_t k = surgeon::prune_count(s, total);
      REQUIRE(result.masks.size() == 3);
      CHECK(result.removed == k);
      index_t counted = 0;
      for (const auto& m : result.masks) counted += m.count();
      CHECK(counted == k);
      // The masks are the k smallest (cost, layer, flat index).
      const auto expected = brute_force_unstructured(layers, k);
      for (std::size_t m = 0; m < 3; ++m) CHECK(result.masks[m] == expected[m]);
      // Every pruned cost <= tau <= every kept cost.
      if (k == 0) CHECK(result.threshold == -std::numeric_limits<double>::infinity());
      for (std::size_t m = 0; m < 3; ++m) {
        for (index_t i = 0; i < layers[m].rows(); ++i) {
          for (index_t j = 0; j < layers[m].cols(); ++j) {
            if (result.masks[m].pruned(i, j)) {
              CHECK(layers[m](i, j) <= result.threshold);
            } else {
              CHECK(layers[m](i, j) >= result.threshold);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("global threshold handles negative zero, negative and infinite costs and strided views",
          "[select]") {
  std::vector<double> padded = {-0.0, 3.0, 99.0, 0.0, -1.0, 99.0, std::numeric_limits<double>::infinity(),
                                2.0,  99.0};
  const host_matrix_view<const double> view(padded.data(), 3, 2, 3);
  const auto result = surgeon::select_unstructured({view}, 0.5);
  CHECK(result.removed == 3);
  CHECK(result.masks[0].pruned(1, 1));  // -1
  CHECK(result.masks[0].pruned(0, 0));  // -0, equal to +0, first in flat order
  CHECK(result.masks[0].pruned(1, 0));  // +0
  CHECK(result.threshold == 0.0);
  const auto most = surgeon::select_unstructured({view}, 0.9);
  CHECK(most.removed == 5);
  CHECK_FALSE(most.masks[0].pruned(2, 0));  // +inf is the largest
  CHECK(most.threshold == 3.0);
}

TEST_CASE("uniform selection prunes floor(s·R·C) smallest in every layer", "[select]") {
  const auto layers = three_layers(23u, 3);
  for (const double s : {0.0, 0.3, 0.5, 0.9}) {
    CAPTURE(s);
    const auto result = surgeon::select_uniform(view_all(layers), s);
    index_t total = 0;
    for (std::size_t m = 0; m < 3; ++m) {
      const index_t k = surgeon::prune_count(s, layers[m].size());
      CHECK(result.masks[m].count() == k);
      total += k;
      const auto expected = brute_force_unstructured({layers[m]}, k);
      CHECK(result.masks[m] == expected[0]);
    }
    CHECK(result.removed == total);
  }
}

TEST_CASE("per-row selection prunes floor(s·C) smallest in every row", "[select]") {
  const auto layers = three_layers(29u, 3);
  for (const double s : {0.0, 0.3, 0.5, 0.75}) {
    CAPTURE(s);
    const auto result = surgeon::select_per_row(view_all(layers), s);
    index_t total = 0;
    for (std::size_t m = 0; m < 3; ++m) {
      const index_t k = surgeon::prune_count(s, layers[m].cols());
      for (index_t i = 0; i < layers[m].rows(); ++i) {
        CHECK(result.masks[m].count_in_row(i) == k);
        // The k smallest (cost, column) of the row.
        std::vector<std::pair<double, index_t>> row;
        for (index_t j = 0; j < layers[m].cols(); ++j) row.emplace_back(layers[m](i, j), j);
        std::sort(row.begin(), row.end());
        for (index_t t = 0; t < layers[m].cols(); ++t) {
          CHECK(result.masks[m].pruned(i, row[static_cast<std::size_t>(t)].second) == (t < k));
        }
      }
      total += k * layers[m].rows();
    }
    CHECK(result.removed == total);
  }
}

TEST_CASE("global N:M selection prunes whole blocks of exactly N lowest-cost elements", "[select]") {
  for (const nm_pattern p : {nm_pattern{2, 4}, nm_pattern{4, 8}, nm_pattern{1, 4}}) {
    CAPTURE(p.n, p.m);
    // Widths 8, 16, 24: multiples of 4 and 8.
    for (const int levels : {0, 3}) {
      CAPTURE(levels);
      const std::vector<host_matrix<double>> layers = {
          random_costs(5, 8, 3u, levels), random_costs(12, 16, 4u, levels), random_costs(3, 24, 5u, levels)};
      index_t blocks = 0;
      for (const auto& layer : layers) blocks += layer.size() / p.m;
      const double full = static_cast<double>(p.n) / static_cast<double>(p.m);
      for (const double s : {0.0, 0.5 * full, 0.8 * full, full}) {
        CAPTURE(s);
        const auto result = surgeon::select_nm(view_all(layers), p, s);
        const auto expected_blocks = static_cast<index_t>(
            std::floor(s * static_cast<double>(p.m * blocks) / static_cast<double>(p.n) + 1e-9));
        CHECK(result.removed == expected_blocks * p.n);
        index_t pruned_blocks = 0;
        for (std::size_t m = 0; m < layers.size(); ++m) {
          const host_matrix<double> block_cost = surgeon::block_costs(layers[m].view(), p);
          for (index_t i = 0; i < layers[m].rows(); ++i) {
            for (index_t b = 0; b < layers[m].cols() / p.m; ++b) {
              index_t count = 0;
              for (index_t j = b * p.m; j < (b + 1) * p.m; ++j) count += result.masks[m].pruned(i, j) ? 1 : 0;
              CHECK((count == 0 || count == p.n));
              if (count == 0) {
                CHECK(block_cost(i, b) >= result.threshold);
                continue;
              }
              ++pruned_blocks;
              CHECK(block_cost(i, b) <= result.threshold);
              // The pruned ones are the N smallest of the block (ties by column).
              std::vector<std::pair<double, index_t>> block;
              for (index_t j = b * p.m; j < (b + 1) * p.m; ++j) block.emplace_back(layers[m](i, j), j);
              std::sort(block.begin(), block.end());
              for (index_t t = 0; t < p.m; ++t) {
                CHECK(result.masks[m].pruned(i, block[static_cast<std::size_t>(t)].second) == (t < p.n));
              }
            }
          }
        }
        CHECK(pruned_blocks == expected_blocks);
        if (s == full) CHECK(pruned_blocks == blocks);
      }
    }
  }
}

TEST_CASE("rows and columns: removed = r·C + c·R − r·c within the budget, stopping at the first overflow",
          "[select]") {
  std::mt19937_64 engine(31u);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const std::vector<std::pair<index_t, index_t>> shapes = {{5, 7}, {12, 9}, {3, 16}};
  std::vector<std::vector<double>> row_costs, col_costs;
  for (const auto& [r, c] : shapes) {
    std::vector<double> rows(static_cast<std::size_t>(r)), cols(static_cast<std::size_t>(c));
    for (double& x : rows) x = uniform(engine);
    for (double& x : cols) x = uniform(engine);
    row_costs.push_back(rows);
    col_costs.push_back(cols);
  }
  SECTION("random costs") {}
  SECTION("dead structure (cost 0) is taken first") {
    row_costs[1][4] = 0.0;
    col_costs[2][11] = 0.0;
  }
  index_t total = 0;
  for (const auto& [r, c] : shapes) total += r * c;
  // Every candidate in the documented order: (cost, layer, row before column, index).
  std::vector<std::tuple<double, std::size_t, int, index_t>> order;
  for (std::size_t m = 0; m < shapes.size(); ++m) {
    for (std::size_t i = 0; i < row_costs[m].size(); ++i) order.emplace_back(row_costs[m][i], m, 0, i);
    for (std::size_t j = 0; j < col_costs[m].size(); ++j) order.emplace_back(col_costs[m][j], m, 1, j);
  }
  std::sort(order.begin(), order.end());
  for (const double s : {0.0, 0.05, 0.2, 0.4, 0.6, 0.9}) {
    CAPTURE(s);
    const surgeon::structured_selection result = surgeon::select_rows_columns(row_costs, col_costs, s);
    const index_t budget = surgeon::prune_count(s, total);
    index_t removed = 0;
    std::vector<index_t> r_taken(3, 0), c_taken(3, 0);
    for (std::size_t m = 0; m < shapes.size(); ++m) {
      const auto [r, c] = shapes[m];
      const auto nr = static_cast<index_t>(result.rows[m].size());
      const auto nc = static_cast<index_t>(result.cols[m].size());
      CHECK(std::is_sorted(result.rows[m].begin(), result.rows[m].end()));
      CHECK(std::is_sorted(result.cols[m].begin(), result.cols[m].end()));
      CHECK(result.masks[m].count() == nr * c + nc * r - nr * nc);
      removed += nr * c + nc * r - nr * nc;
      for (const index_t i : result.rows[m]) CHECK(result.masks[m].count_in_row(i) == c);
      for (const index_t j : result.cols[m]) {
        for (index_t i = 0; i < r; ++i) CHECK(result.masks[m].pruned(i, j));
      }
    }
    CHECK(result.removed == removed);
    CHECK(removed <= budget);
    // The taken candidates are a prefix of the order, and the next one would exceed the budget.
    std::size_t t = 0;
    for (; t < order.size(); ++t) {
      const auto& [cost, m, kind, index] = order[t];
      const auto& taken = kind == 0 ? result.rows[m] : result.cols[m];
      if (!std::binary_search(taken.begin(), taken.end(), index)) break;
      (kind == 0 ? r_taken : c_taken)[m] += 1;
      CHECK(cost <= result.threshold);
    }
    index_t taken_count = 0;
    for (std::size_t m = 0; m < 3; ++m)
      taken_count += static_cast<index_t>(result.rows[m].size() + result.cols[m].size());
    CHECK(static_cast<index_t>(t) == taken_count);
    if (t < order.size()) {
      const auto& [cost, m, kind, index] = order[t];
      const auto [r, c] = shapes[m];
      const index_t added = kind == 0 ? c - c_taken[m] : r - r_taken[m];
      CHECK(removed + added > budget);
    }
    if (s >= 0.2 && row_costs[1][4] == 0.0) {
      CHECK(result.rows[1].size() >= 1);
      CHECK(std::binary_search(result.rows[1].begin(), result.rows[1].end(), 4));
      CHECK(std::binary_search(result.cols[2].begin(), result.cols[2].end(), 11));
    }
    if (s == 0.0) {
      CHECK(removed == 0);
      CHECK(result.threshold == -std::numeric_limits<double>::infinity());
    }
  }
}

TEST_CASE("selection rejects bad input", "[select]") {
  const auto layers = three_layers(37u);
  const views costs = view_all(layers);
  const std::vector<std::vector<double>> rows = {{1.0, 2.0}, {3.0}};
  const std::vector<std::vector<double>> cols = {{1.0}, {2.0, 3.0}};
  SECTION("sparsity outside [0, 1)") {
    for (const double s : {-0.1, 1.0, std::numeric_limits<double>::quiet_NaN()}) {
      CAPTURE(s);
      CHECK_THROWS_AS(surgeon::select_unstructured(costs, s), surgeon::logic_error);
      CHECK_THROWS_AS(surgeon::select_uniform(costs, s), surgeon::logic_error);
      CHECK_THROWS_AS(surgeon::select_per_row(costs, s), surgeon::logic_error);
      CHECK_THROWS_AS(surgeon::select_nm({layers[2].view()}, nm_pattern{2, 4}, s), surgeon::logic_error);
      CHECK_THROWS_AS(surgeon::select_rows_columns(rows, cols, s), surgeon::logic_error);
    }
  }
  SECTION("an empty layer list") {
    CHECK_THROWS_AS(surgeon::select_unstructured({}, 0.5), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::select_uniform({}, 0.5), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::select_per_row({}, 0.5), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::select_nm({}, nm_pattern{2, 4}, 0.5), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::select_rows_columns({}, {}, 0.5), surgeon::logic_error);
  }
  SECTION("a NaN cost") {
    auto bad = layers;
    bad[1](3, 4) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(surgeon::select_unstructured(view_all(bad), 0.5), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::select_uniform(view_all(bad), 0.5), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::select_per_row(view_all(bad), 0.5), surgeon::logic_error);
    bad[2](1, 5) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(surgeon::select_nm({bad[2].view()}, nm_pattern{2, 4}, 0.5), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::block_costs(bad[2].view(), nm_pattern{2, 4}), surgeon::logic_error);
    auto bad_rows = rows;
    bad_rows[1][0] = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(surgeon::select_rows_columns(bad_rows, cols, 0.5), surgeon::logic_error);
  }
  SECTION("bad N:M patterns and sparsity above N/M") {
    CHECK_THROWS_AS(surgeon::select_nm({layers[2].view()}, nm_pattern{5, 4}, 0.1), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::select_nm({layers[2].view()}, nm_pattern{0, 4}, 0.1), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::select_nm({layers[2].view()}, nm_pattern{2, 4}, 0.51), surgeon::logic_error);
    CHECK_THROWS_AS(surgeon::select_nm({layers[2].view()}, nm_pattern{1, 4}, 0.3), surgeon::logic_error);
    CHECK_NOTHROW(surgeon::select_nm({layers[2].view()}, nm_pattern{2, 4}, 0.5));
  }
  SECTION("mismatched shapes") {
    // Width 7 and 9 are not multiples of M = 4.
    CHECK_THROWS_AS(surgeon::select_nm(costs, nm_pattern{2, 4}, 0.25), surgeon::logic_error);
    const std::vector<std::vector<double>> one_layer = {{1.0}};
    CHECK_THROWS_AS(surgeon::select_rows_columns(rows, one_layer, 0.5), surgeon::logic_error);
  }
}
