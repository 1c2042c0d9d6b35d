// 01_prune_one_layer: prune one linear layer whose inputs are strongly correlated, to 50 %
// unstructured and to 2:4, with magnitude, Wanda, SparseGPT, K-OBD and LLM Surgeon, and print the
// relative reconstruction error ‖(W − Ŵ)X‖_F / ‖WX‖_F of each. Exits 1 unless LLM Surgeon and
// SparseGPT beat magnitude and Wanda in both structures.
#include <surgeon/surgeon.hpp>

#include <fmt/format.h>

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr surgeon::index_t rows = 96;   // out_features
constexpr surgeon::index_t cols = 128;  // in_features
constexpr surgeon::index_t tokens = 4096;
constexpr int latent = 12;

// ‖(W − Ŵ)X‖_F / ‖WX‖_F over the calibration tokens X [tokens, cols].
double reconstruction_error(const std::vector<float>& w, const std::vector<float>& pruned,
                            const std::vector<float>& x) {
  double error = 0.0;
  double reference = 0.0;
  for (surgeon::index_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * cols;
    for (surgeon::index_t i = 0; i < rows; ++i) {
      double y = 0.0;
      double delta = 0.0;
      for (surgeon::index_t j = 0; j < cols; ++j) {
        const auto k = static_cast<std::size_t>(i * cols + j);
        y += static_cast<double>(w[k]) * xt[j];
        delta += static_cast<double>(w[k] - pruned[k]) * xt[j];
      }
      reference += y * y;
      error += delta * delta;
    }
  }
  return std::sqrt(error / reference);
}

}  // namespace

int main() {
  std::mt19937 engine(2024);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  // Inputs: a few latent factors mixed into every feature, plus small noise, with a per-feature
  // scale spread over two orders of magnitude (as in real activations).
  std::vector<float> mixing(static_cast<std::size_t>(latent * cols));
  for (float& m : mixing) m = normal(engine);
  std::vector<float> scale(cols);
  for (surgeon::index_t j = 0; j < cols; ++j)
    scale[static_cast<std::size_t>(j)] = std::exp(0.6f * normal(engine));
  std::vector<float> x(static_cast<std::size_t>(tokens * cols));
  for (surgeon::index_t t = 0; t < tokens; ++t) {
    float z[latent];
    for (float& v : z) v = normal(engine);
    for (surgeon::index_t j = 0; j < cols; ++j) {
      float value = 0.2f * normal(engine);
      for (int k = 0; k < latent; ++k) value += z[k] * mixing[static_cast<std::size_t>(k * cols + j)];
      x[static_cast<std::size_t>(t * cols + j)] = scale[static_cast<std::size_t>(j)] * value;
    }
  }
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  for (float& v : w) v = normal(engine) / std::sqrt(static_cast<float>(cols));

  // K-FAC factors: A from the inputs; G from unit-variance output gradients, so that the
  // curvature is the layer-wise reconstruction objective (G ≈ I) that SparseGPT also minimises.
  surgeon::cpu::context cpu;
  surgeon::factor_accumulator<double> a(cols);
  surgeon::factor_accumulator<double> g(rows);
  a.add(cpu, surgeon::make_host_matrix_view(x, tokens, cols));
  std::vector<float> gy(static_cast<std::size_t>(tokens * rows));
  for (float& v : gy) v = normal(engine);
  g.add(cpu, surgeon::make_host_matrix_view(gy, tokens, rows));
  const surgeon::host_matrix<double> a_mean = a.mean();

  const surgeon::host_matrix_view<const float> w_view(w.data(), rows, cols);
  const auto curvature = surgeon::cpu::factorize(cpu, g, a, surgeon::damping{0.01, 0.01}, w_view);

  const double sparsity = 0.5;
  const surgeon::nm_pattern two_four{2, 4};
  std::map<std::string, double> errors;

  auto run = [&](surgeon::method method, bool nm) {
    std::vector<float> pruned = w;
    const surgeon::host_matrix_view<float> p(pruned.data(), rows, cols);
    if (method == surgeon::method::sparsegpt) {
      if (nm) {
        surgeon::cpu::sparsegpt_prune(cpu, a_mean.view(), p, two_four);
      } else {
        surgeon::cpu::sparsegpt_prune(cpu, a_mean.view(), p, sparsity);
      }
    } else {
      const surgeon::host_matrix<double> costs = surgeon::cpu::element_costs(cpu, method, curvature, w_view);
      const std::vector<surgeon::host_matrix_view<const double>> layers{costs.view()};
      surgeon::mask mask;
      if (nm) {
        mask = surgeon::select_nm(layers, two_four, sparsity).masks.front();
      } else if (method == surgeon::method::wanda) {
        mask = surgeon::select_per_row(layers, sparsity).masks.front();
      } else {
        mask = surgeon::select_uniform(layers, sparsity).masks.front();
      }
      if (method == surgeon::method::llm_surgeon) {
        surgeon::cpu::obs_update(cpu, curvature, p, mask, surgeon::cpu::correlate{2000});
      } else {
        mask.apply(p);
      }
    }
    const double error = reconstruction_error(w, pruned, x);
    const std::string structure = nm ? "2:4" : "unstructured";
    fmt::print("method={} structure={} recon_error={:.6f}\n", surgeon::to_string(method), structure, error);
    errors[std::string(surgeon::to_string(method)) + "/" + structure] = error;
  };

  for (const bool nm : {false, true}) {
    for (const auto method : {surgeon::method::magnitude, surgeon::method::wanda, surgeon::method::sparsegpt,
                              surgeon::method::kobd, surgeon::method::llm_surgeon}) {
      run(method, nm);
    }
  }

  bool ordered = true;
  for (const std::string structure : {"unstructured", "2:4"}) {
    for (const std::string good : {"llm-surgeon", "sparsegpt"}) {
      for (const std::string baseline : {"magnitude", "wanda"}) {
        if (!(errors[good + "/" + structure] < errors[baseline + "/" + structure])) {
          fmt::print("FAIL: {} does not beat {} ({})\n", good, baseline, structure);
          ordered = false;
        }
      }
    }
  }
  fmt::print(ordered ? "ordering: llm-surgeon and sparsegpt beat magnitude and wanda\n"
                     : "ordering: violated\n");
  return ordered ? 0 : 1;
}
