/// @file toy_model.hpp
/// @brief A small seeded model adapter for the driver tests of both backends (Eigen-free, so that
/// the nvcc test and the host-compiler reference share it): three matrices, two reading the same
/// input "in", one its own; calibration feeds seeded correlated inputs and random gradients, the
/// same every shot.
#pragma once

#include <surgeon/driver.hpp>

#include <random>
#include <vector>

namespace surgeon_test {

struct toy_model {
  std::vector<float> w_a, w_b, w_c;

  toy_model() {
    std::mt19937 engine(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto* w : {&w_a, &w_b}) {
      w->resize(24 * 32);
      for (float& v : *w) v = normal(engine);
    }
    w_c.resize(16 * 24);
    for (float& v : w_c) v = normal(engine);
  }

  std::vector<surgeon::prunable_matrix> matrices() {
    return {{"a", "in", surgeon::host_matrix_view<float>(w_a.data(), 24, 32)},
            {"b", "in", surgeon::host_matrix_view<float>(w_b.data(), 24, 32)},
            {"c", "mid", surgeon::host_matrix_view<float>(w_c.data(), 16, 24)}};
  }

  void calibrate(surgeon::calibration_sink& sink, int /*shot*/) {
    std::mt19937 engine(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto fill = [&](surgeon::index_t rows, surgeon::index_t cols, bool correlated) {
      std::vector<float> x(static_cast<std::size_t>(rows * cols));
      for (surgeon::index_t t = 0; t < rows; ++t) {
        const float shared = normal(engine);
        for (surgeon::index_t j = 0; j < cols; ++j)
          x[static_cast<std::size_t>(t * cols + j)] = normal(engine) + (correlated ? 2.0f * shared : 0.0f);
      }
      return x;
    };
    const surgeon::index_t tokens = 96;
    const auto x_in = fill(tokens, 32, true);
    const auto x_mid = fill(tokens, 24, true);
    sink.input("in", surgeon::host_matrix_view<const float>(x_in.data(), tokens, 32));
    sink.input("mid", surgeon::host_matrix_view<const float>(x_mid.data(), tokens, 24));
    for (const char* name : {"a", "b"}) {
      const auto g = fill(tokens, 24, false);
      sink.output_grad(name, surgeon::host_matrix_view<const float>(g.data(), tokens, 24));
    }
    const auto g = fill(tokens, 16, false);
    sink.output_grad("c", surgeon::host_matrix_view<const float>(g.data(), tokens, 16));
  }

  /// Every weight, a then b then c.
  std::vector<double> weights() const {
    std::vector<double> all;
    for (const auto* w : {&w_a, &w_b, &w_c}) all.insert(all.end(), w->begin(), w->end());
    return all;
  }
};

}  // namespace surgeon_test
