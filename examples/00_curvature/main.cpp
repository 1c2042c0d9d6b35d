// 00_curvature: accumulate the K-FAC factors of one layer from (synthetic) hooks, save and reload
// them, and factorise the curvature: damping, inverses, eigenvalues and dead structure.
//
// Usage: 00_curvature [factors.safetensors]
#include <surgeon/surgeon.hpp>

#include <fmt/format.h>

#include <random>
#include <vector>

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "00_curvature.safetensors";
  constexpr surgeon::index_t in_features = 64;
  constexpr surgeon::index_t out_features = 32;
  constexpr surgeon::index_t tokens_per_batch = 512;

  surgeon::cpu::context cpu;
  surgeon::factor_bank<double> bank;
  bank.define("layer.in", in_features);
  bank.define("layer.out_grad", out_features);
  bank.bind("layer", "layer.in");

  // Inputs with strongly correlated features (a low-rank mixture plus noise), as a real layer's
  // activations are; one input feature is never active, so its column is dead.
  std::mt19937 engine(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> mixing(8 * in_features);
  for (float& m : mixing) m = normal(engine);
  std::vector<float> x(tokens_per_batch * in_features);
  std::vector<float> gy(tokens_per_batch * out_features);
  for (int batch = 0; batch < 4; ++batch) {
    for (surgeon::index_t t = 0; t < tokens_per_batch; ++t) {
      float latent[8];
      for (float& l : latent) l = normal(engine);
      for (surgeon::index_t j = 0; j < in_features; ++j) {
        float value = 0.1f * normal(engine);
        for (int k = 0; k < 8; ++k)
          value += latent[k] * mixing[static_cast<std::size_t>(k * in_features + j)];
        x[static_cast<std::size_t>(t * in_features + j)] = j == 7 ? 0.0f : value;
      }
      for (surgeon::index_t i = 0; i < out_features; ++i)
        gy[static_cast<std::size_t>(t * out_features + i)] = normal(engine);
    }
    bank.add(cpu, "layer.in", surgeon::make_host_matrix_view(x, tokens_per_batch, in_features));
    bank.add(cpu, "layer.out_grad", surgeon::make_host_matrix_view(gy, tokens_per_batch, out_features));
  }

  bank.save(path);
  const auto reloaded = surgeon::factor_bank<double>::load(path);
  const bool identical = reloaded.at("layer.in").sum().values() == bank.at("layer.in").sum().values() &&
                         reloaded.at("layer.out_grad").count() == bank.at("layer.out_grad").count();
  fmt::print("saved {} factors ({} tokens) to {}; reloaded: {}\n", bank.size(),
             bank.for_layer("layer").count(), path, identical ? "identical" : "DIFFERENT");

  const auto curvature = surgeon::cpu::factorize(cpu, reloaded.at("layer.out_grad"),
                                                 reloaded.for_layer("layer"), surgeon::damping{});
  const auto& a_eigen = curvature.a.eigen();
  fmt::print(
      "kernels={} dead_rows={} dead_cols={} A: order={} shift={:.3g} lambda={} eig[min]={:.3g} "
      "eig[max]={:.3g}\n",
      surgeon::cpu::context::kernels(), curvature.dead.dead_rows.size(), curvature.dead.dead_cols.size(),
      curvature.a.order(), curvature.a.report().shift, curvature.a.report().lambda_used, a_eigen.values(0),
      a_eigen.values(a_eigen.values.size() - 1));
  fmt::print("G: order={} shift={:.3g} lambda={}\n", curvature.g.order(), curvature.g.report().shift,
             curvature.g.report().lambda_used);
  return identical ? 0 : 1;
}
