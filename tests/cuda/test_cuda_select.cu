// The CUDA mask selection (cuda/select.hpp) against the host functions of select.hpp on the same
// seeded costs: every mask bit, the threshold (bit for bit) and the removed count must be identical,
// for continuous costs, for heavily tied costs (a few integer values, many exact zeros, -0 among
// them), for layers of awkward shapes (widths not multiples of 64, one row, empty layers), for
// s = 0, and for ties cut deep inside large layers (the position pass over several bytes). The
// device views are padded (ld > cols) with NaNs, which must never be read. The host functions are
// header-only and Eigen-free, so this nvcc translation unit calls them directly.
// cuda_test_main.cpp skips the whole binary (exit 77) when no device is visible.
#include "support/catch.hpp"

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/mask.hpp>
#include <surgeon/cuda/select.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/select.hpp>
#include <surgeon/view.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

using surgeon::index_t;
using surgeon::nm_pattern;
using surgeon::selection;
using surgeon::cuda::context;
using surgeon::cuda::device_buffer;

/// A packed row-major `[rows, cols]` cost matrix on the host.
struct layer_costs {
  index_t rows = 0;
  index_t cols = 0;
  std::vector<double> values;
};

struct shape {
  index_t rows;
  index_t cols;
};

/// Continuous costs: |normal| scaled per layer, with a few exact zeros of either sign.
std::vector<layer_costs> continuous_costs(const std::vector<shape>& shapes, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_int_distribution<int> percent(0, 99);
  std::vector<layer_costs> layers;
  for (std::size_t m = 0; m < shapes.size(); ++m) {
    layer_costs layer{shapes[m].rows, shapes[m].cols, {}};
    layer.values.resize(static_cast<std::size_t>(layer.rows * layer.cols));
    const double scale = 1.0 + static_cast<double>(m);
    for (double& v : layer.values) {
      const int p = percent(engine);
      v = p < 3 ? 0.0 : p < 5 ? -0.0 : scale * std::abs(normal(engine));
    }
    layers.push_back(std::move(layer));
  }
  return layers;
}

/// Heavily tied costs: values from {0, 1, 2, 3} (about half exact zeros, a third of those -0.0).
std::vector<layer_costs> tied_costs(const std::vector<shape>& shapes, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::uniform_int_distribution<int> pick(0, 11);
  std::vector<layer_costs> layers;
  for (const shape& s : shapes) {
    layer_costs layer{s.rows, s.cols, {}};
    layer.values.resize(static_cast<std::size_t>(s.rows * s.cols));
    for (double& v : layer.values) {
      const int p = pick(engine);
      v = p < 4 ? 0.0 : p < 6 ? -0.0 : static_cast<double>(1 + (p - 6) / 2);
    }
    layers.push_back(std::move(layer));
  }
  return layers;
}

/// The layers in device memory, each with `pad` NaN columns after its `cols` (ld = cols + pad).
struct device_layers {
  std::vector<device_buffer<double>> buffers;
  std::vector<surgeon::device_matrix_view<const double>> views;
};

device_layers upload(context& ctx, const std::vector<layer_costs>& layers, index_t pad = 3) {
  device_layers result;
  for (const layer_costs& layer : layers) {
    const index_t ld = layer.cols + pad;
    std::vector<double> padded(static_cast<std::size_t>(layer.rows * ld),
                               std::numeric_limits<double>::quiet_NaN());
    for (index_t i = 0; i < layer.rows; ++i) {
      for (index_t j = 0; j < layer.cols; ++j) {
        padded[static_cast<std::size_t>(i * ld + j)] =
            layer.values[static_cast<std::size_t>(i * layer.cols + j)];
      }
    }
    result.buffers.emplace_back(ctx, padded);
    const device_buffer<double>& buffer = result.buffers.back();
    result.views.push_back(buffer.view(layer.rows, layer.cols, ld));
  }
  return result;
}

std::vector<surgeon::host_matrix_view<const double>> host_views(const std::vector<layer_costs>& layers) {
  std::vector<surgeon::host_matrix_view<const double>> views;
  for (const layer_costs& layer : layers) {
    views.push_back(surgeon::make_host_matrix_view(layer.values.data(), layer.rows, layer.cols));
  }
  return views;
}

std::uint64_t bits_of(double x) {
  std::uint64_t bits = 0;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

void require_identical(const selection& device, const selection& host) {
  REQUIRE(device.masks.size() == host.masks.size());
  for (std::size_t m = 0; m < host.masks.size(); ++m) {
    INFO("layer " << m << ": device prunes " << device.masks[m].count() << ", host "
                  << host.masks[m].count());
    CHECK(device.masks[m] == host.masks[m]);
  }
  INFO("threshold: device " << device.threshold << ", host " << host.threshold);
  CHECK(bits_of(device.threshold) == bits_of(host.threshold));
  CHECK(device.removed == host.removed);
}

/// The device masks of an `_on_device` result, copied one by one with `device_mask::to_host`.
void require_identical_on_device(const surgeon::cuda::device_selection& device, const selection& host) {
  REQUIRE(device.masks.size() == host.masks.size());
  for (std::size_t m = 0; m < host.masks.size(); ++m) CHECK(device.masks[m].to_host() == host.masks[m]);
  CHECK(bits_of(device.threshold) == bits_of(host.threshold));
  CHECK(device.removed == host.removed);
}

const std::vector<shape> element_shapes = {{7, 100}, {1, 130}, {33, 64}, {0, 5}, {5, 1}, {16, 200}, {4, 0}};
const std::vector<shape> nm_shapes = {{7, 96}, {1, 8}, {12, 136}, {0, 16}, {3, 64}, {5, 200}};
const std::vector<double> sparsities = {0.0, 0.1, 0.29, 0.5, 0.77, 0.95};

std::vector<layer_costs> costs_for(bool tied, const std::vector<shape>& shapes, std::uint64_t seed) {
  return tied ? tied_costs(shapes, seed) : continuous_costs(shapes, seed);
}

}  // namespace

TEST_CASE("cuda select_unstructured matches the host selection", "[cuda][select]") {
  context ctx;
  for (const bool tied : {false, true}) {
    const std::vector<layer_costs> layers = costs_for(tied, element_shapes, tied ? 11 : 12);
    const device_layers device = upload(ctx, layers);
    const auto host = host_views(layers);
    for (const double s : sparsities) {
      INFO((tied ? "tied" : "continuous") << " costs, sparsity " << s);
      const selection expected = surgeon::select_unstructured(host, s);
      require_identical(surgeon::cuda::select_unstructured(ctx, device.views, s), expected);
      require_identical_on_device(surgeon::cuda::select_unstructured_on_device(ctx, device.views, s),
                                  expected);
    }
  }
}

TEST_CASE("cuda select_unstructured cuts ties deep inside large layers", "[cuda][select]") {
  context ctx;
  // 300 000 + 19 789 candidates: the tie position needs a three-byte radix select.
  const std::vector<layer_costs> layers = tied_costs({{300, 1000}, {257, 77}}, 21);
  const device_layers device = upload(ctx, layers, 5);
  const auto host = host_views(layers);
  for (const double s : {0.2, 0.45, 0.5, 0.6, 0.999}) {
    INFO("sparsity " << s);
    require_identical(surgeon::cuda::select_unstructured(ctx, device.views, s),
                      surgeon::select_unstructured(host, s));
    require_identical(surgeon::cuda::select_uniform(ctx, device.views, s), surgeon::select_uniform(host, s));
    require_identical(surgeon::cuda::select_per_row(ctx, device.views, s), surgeon::select_per_row(host, s));
  }
}

TEST_CASE("cuda select_uniform matches the host selection", "[cuda][select]") {
  context ctx;
  for (const bool tied : {false, true}) {
    const std::vector<layer_costs> layers = costs_for(tied, element_shapes, tied ? 31 : 32);
    const device_layers device = upload(ctx, layers);
    const auto host = host_views(layers);
    for (const double s : sparsities) {
      INFO((tied ? "tied" : "continuous") << " costs, sparsity " << s);
      const selection expected = surgeon::select_uniform(host, s);
      require_identical(surgeon::cuda::select_uniform(ctx, device.views, s), expected);
      require_identical_on_device(surgeon::cuda::select_uniform_on_device(ctx, device.views, s), expected);
    }
  }
}

TEST_CASE("cuda select_per_row matches the host selection", "[cuda][select]") {
  context ctx;
  // Rows wider than one block's chunk of 256 columns, so ties are numbered across chunks.
  std::vector<shape> shapes = element_shapes;
  shapes.push_back({9, 1000});
  shapes.push_back({2, 513});
  for (const bool tied : {false, true}) {
    const std::vector<layer_costs> layers = costs_for(tied, shapes, tied ? 41 : 42);
    const device_layers device = upload(ctx, layers);
    const auto host = host_views(layers);
    for (const double s : sparsities) {
      INFO((tied ? "tied" : "continuous") << " costs, sparsity " << s);
      const selection expected = surgeon::select_per_row(host, s);
      require_identical(surgeon::cuda::select_per_row(ctx, device.views, s), expected);
      require_identical_on_device(surgeon::cuda::select_per_row_on_device(ctx, device.views, s), expected);
    }
  }
}

TEST_CASE("cuda block_costs are bit-identical to the host's", "[cuda][select]") {
  context ctx;
  for (const bool tied : {false, true}) {
    const std::vector<layer_costs> layers = costs_for(tied, nm_shapes, tied ? 51 : 52);
    const device_layers device = upload(ctx, layers);
    for (const nm_pattern p : {nm_pattern{2, 4}, nm_pattern{4, 8}, nm_pattern{3, 8}, nm_pattern{1, 1}}) {
      for (std::size_t m = 0; m < layers.size(); ++m) {
        INFO((tied ? "tied" : "continuous") << " costs, " << p.n << ":" << p.m << ", layer " << m);
        const layer_costs& layer = layers[m];
        const surgeon::host_matrix<double> expected = surgeon::block_costs(
            surgeon::make_host_matrix_view(layer.values.data(), layer.rows, layer.cols), p);
        const index_t blocks = layer.cols / p.m;
        const index_t ld = blocks + 2;
        device_buffer<double> out(ctx, layer.rows * ld);
        surgeon::cuda::block_costs(ctx, device.views[m], p, out.view(layer.rows, blocks, ld));
        const std::vector<double> got = out.to_host();
        bool identical = true;
        for (index_t i = 0; i < layer.rows; ++i) {
          for (index_t b = 0; b < blocks; ++b) {
            identical =
                identical && bits_of(got[static_cast<std::size_t>(i * ld + b)]) == bits_of(expected(i, b));
          }
        }
        CHECK(identical);
      }
    }
  }
}

TEST_CASE("cuda select_nm matches the host selection", "[cuda][select]") {
  context ctx;
  for (const bool tied : {false, true}) {
    const std::vector<layer_costs> layers = costs_for(tied, nm_shapes, tied ? 61 : 62);
    const device_layers device = upload(ctx, layers);
    const auto host = host_views(layers);
    for (const nm_pattern p : {nm_pattern{2, 4}, nm_pattern{4, 8}, nm_pattern{3, 8}}) {
      const double full = static_cast<double>(p.n) / static_cast<double>(p.m);
      for (const double s : {0.0, 0.1, 0.25, 0.37, full}) {
        if (s > full) continue;
        INFO((tied ? "tied" : "continuous") << " costs, " << p.n << ":" << p.m << ", sparsity " << s);
        const selection expected = surgeon::select_nm(host, p, s);
        require_identical(surgeon::cuda::select_nm(ctx, device.views, p, s), expected);
        require_identical_on_device(surgeon::cuda::select_nm_on_device(ctx, device.views, p, s), expected);
      }
    }
  }
  SECTION("a large tied layer (the block-position pass over several bytes)") {
    const std::vector<layer_costs> big = tied_costs({{400, 1024}, {3, 8}}, 63);
    const device_layers device = upload(ctx, big, 1);
    const auto host = host_views(big);
    const nm_pattern p{2, 4};
    for (const double s : {0.1, 0.3, 0.5}) {
      INFO("sparsity " << s);
      require_identical(surgeon::cuda::select_nm(ctx, device.views, p, s), surgeon::select_nm(host, p, s));
    }
  }
}

TEST_CASE("cuda select rejects bad inputs with logic_error", "[cuda][select]") {
  context ctx;
  std::vector<layer_costs> layers = continuous_costs({{4, 16}, {6, 24}}, 71);
  const nm_pattern two_four{2, 4};
  SECTION("a NaN cost") {
    layers[1].values[2 * 24 + 3] = std::numeric_limits<double>::quiet_NaN();
    const device_layers device = upload(ctx, layers);
    REQUIRE_THROWS_AS(surgeon::cuda::select_unstructured(ctx, device.views, 0.5), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::select_uniform(ctx, device.views, 0.5), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::select_per_row(ctx, device.views, 0.5), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::select_nm(ctx, device.views, two_four, 0.5), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::select_unstructured(ctx, device.views, 0.0), surgeon::logic_error);
    device_buffer<double> out(ctx, 6 * 6);
    REQUIRE_THROWS_AS(surgeon::cuda::block_costs(ctx, device.views[1], two_four, out.view(6, 6)),
                      surgeon::logic_error);
    // The context is still usable after the rejection.
    const device_layers clean = upload(ctx, continuous_costs({{4, 16}}, 72));
    CHECK(surgeon::cuda::select_unstructured(ctx, clean.views, 0.5).removed == 32);
  }
  SECTION("sparsity outside [0, 1)") {
    const device_layers device = upload(ctx, layers);
    for (const double s : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN(),
                           std::numeric_limits<double>::infinity()}) {
      INFO("sparsity " << s);
      REQUIRE_THROWS_AS(surgeon::cuda::select_unstructured(ctx, device.views, s), surgeon::logic_error);
      REQUIRE_THROWS_AS(surgeon::cuda::select_uniform(ctx, device.views, s), surgeon::logic_error);
      REQUIRE_THROWS_AS(surgeon::cuda::select_per_row(ctx, device.views, s), surgeon::logic_error);
      REQUIRE_THROWS_AS(surgeon::cuda::select_nm(ctx, device.views, two_four, s), surgeon::logic_error);
    }
  }
  SECTION("an empty layer list") {
    const std::vector<surgeon::device_matrix_view<const double>> none;
    REQUIRE_THROWS_AS(surgeon::cuda::select_unstructured(ctx, none, 0.5), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::select_uniform(ctx, none, 0.5), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::select_per_row(ctx, none, 0.5), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::select_nm(ctx, none, two_four, 0.5), surgeon::logic_error);
  }
  SECTION("N:M: a width not divisible by M, a bad pattern, sparsity above N/M, a bad output shape") {
    const device_layers device = upload(ctx, continuous_costs({{4, 16}, {3, 30}}, 73));
    REQUIRE_THROWS_AS(surgeon::cuda::select_nm(ctx, device.views, two_four, 0.25), surgeon::logic_error);
    device_buffer<double> out(ctx, 64);
    REQUIRE_THROWS_AS(surgeon::cuda::block_costs(ctx, device.views[1], two_four, out.view(3, 7)),
                      surgeon::logic_error);
    const std::vector<surgeon::device_matrix_view<const double>> first = {device.views[0]};
    const nm_pattern inverted{3, 2};
    const nm_pattern empty{0, 4};
    REQUIRE_THROWS_AS(surgeon::cuda::select_nm(ctx, first, inverted, 0.25), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::select_nm(ctx, first, empty, 0.25), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::select_nm(ctx, first, two_four, 0.6), surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::block_costs(ctx, device.views[0], two_four, out.view(4, 5)),
                      surgeon::logic_error);
    REQUIRE_THROWS_AS(surgeon::cuda::block_costs(ctx, device.views[0], two_four, out.view(3, 4)),
                      surgeon::logic_error);
    CHECK_NOTHROW(surgeon::cuda::block_costs(ctx, device.views[0], two_four, out.view(4, 4)));
  }
}
