// layer-prune: prunes one real layer, read from a safetensors file (`llama-factors` writes one: W,
// A and G of each matrix), with every update the library has, and reports each one's time and the
// loss it leaves. Inputs are byte-identical for every method and every run, so other
// implementations can be timed on the same file.
//
//   layer-prune --factors FILE.safetensors --layer blk.5.ffn_up [--density 0.5] [--structure S]
//               [--damp-g 1] [--damp-a 0.1] [--sparsegpt-damp 0.01] [--methods LIST] [--repeat 3]
//               [--pcg-tol 0.03] [--heldout FILE]   (--help lists every flag with its default)
//
// S: unstructured or N:M (2:4). LIST, comma-separated, of:
//   sparsegpt    SparseGPT on H = A (its own per-layer mask, λ = --sparsegpt-damp), float weights
//   mask-only    LLM Surgeon's mask (costs at the given damping, this layer's threshold), no update
//   chunked      LLM Surgeon's mask, the chunked update (max-correlate 2000; the paper's)
//   whole-mask   LLM Surgeon's mask, the whole-mask PCG update; the library's defaults
//                (surgeon::pcg_options{}) unless --pcg-tol, --pcg-iterations, --pcg-form
//                kronecker|sweep or --pcg-float 0|1 say otherwise
// Every line reports the best wall time of --repeat runs of the update alone (update_s) and of the
// whole layer (layer_s: factorisation, costs, selection and update; SparseGPT's own Cholesky
// included), and the loss of the change Δ = W' − W:
//   loss_damped = ½ tr(Δᵀ Ĝ Δ Â) at the given damping (what the LLM Surgeon updates minimise),
//   loss_kfac   = ½ tr(Δᵀ G Δ A), the undamped K-FAC estimate of the loss increase,
//   loss_a      = ½ tr(Δ A Δᵀ), SparseGPT's objective (the layer's output error, G = I).
// With --heldout FILE (factors of the same layer from other text or other windows, written by
// `llama-factors`; may be repeated), also the losses the change leaves on data the update never
// saw, for the k-th file (from 1):
//   heldout<k>_kfac = ½ tr(Δᵀ G' Δ A'), heldout<k>_a = ½ tr(Δ A' Δᵀ)  (A', G' from that file),
// the layer-level proxy of the perplexity on unseen text that damping is chosen for.
#include <surgeon/surgeon.hpp>

// The tools' command-line conventions; by path, as this benchmark does not link the Llama runtime.
#include "llama/cli.hpp"

#include <fmt/format.h>
#include <Eigen/Dense>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

using surgeon::index_t;
using matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// An input that cannot work (a missing tensor, a wrong shape): one line, exit 2 as for a bad flag.
[[noreturn]] void bad_input(const std::string& problem) {
  fmt::print(stderr, "layer-prune: {}\n", problem);
  std::exit(surgeon::llama::cli::bad_usage_status);
}

// The --structure text: nullopt for unstructured, else the N:M pattern (1 <= N <= M); throws
// CLI::ValidationError otherwise.
std::optional<surgeon::nm_pattern> read_structure(const std::string& text) {
  if (text == "unstructured") return std::nullopt;
  const auto colon = text.find(':');
  const std::optional<long long> n =
      colon == std::string::npos ? std::nullopt : surgeon::llama::cli::read_integer(text.substr(0, colon));
  const std::optional<long long> m =
      colon == std::string::npos ? std::nullopt : surgeon::llama::cli::read_integer(text.substr(colon + 1));
  if (!n || !m || *n < 1 || *n > *m)
    throw CLI::ValidationError("needs unstructured or N:M (1 <= N <= M), got '" + text + "'");
  return surgeon::nm_pattern{static_cast<index_t>(*n), static_cast<index_t>(*m)};
}

// A tensor of the file as a row-major double matrix, checked against the expected shape.
matrix read_matrix(const surgeon::io::safetensors_reader& file, const std::string& name, index_t rows,
                   index_t cols) {
  const std::vector<double> values = file.read<double>(name);
  if (static_cast<index_t>(values.size()) != rows * cols)
    bad_input(fmt::format("tensor '{}' has {} values, expected [{}, {}]", name, values.size(), rows, cols));
  return Eigen::Map<const matrix>(values.data(), rows, cols);
}

struct layer {
  index_t rows = 0;
  index_t cols = 0;
  std::vector<float> w;
  matrix a, g;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = surgeon::llama::cli;
  std::string factors_path, name, structure = "unstructured",
                                  methods = "sparsegpt,mask-only,chunked,whole-mask";
  // The driver's defaults: LLM Surgeon's damping and SparseGPT's own.
  double density = 0.5, damp_g = surgeon::default_damping(surgeon::method::llm_surgeon).g,
         damp_a = surgeon::default_damping(surgeon::method::llm_surgeon).a,
         sparsegpt_damp = surgeon::default_damping(surgeon::method::sparsegpt).a;
  std::vector<std::string> heldout_paths;
  surgeon::pcg_options pcg;  // the library's defaults
  std::string pcg_form = pcg.form == surgeon::pcg_form::removed_sweep ? "sweep" : "kronecker";
  long long pcg_float = pcg.float_products ? 1 : 0;
  long long repeat = 3;
  const std::vector<std::string> known_methods = {"sparsegpt", "mask-only", "chunked", "whole-mask"};

  CLI::App app(
      "Prunes one real layer (W, A and G from llama-factors) with every update the library has, "
      "and reports each one's time and the loss it leaves.",
      "layer-prune");
  cli::set_conventions(app);
  app.add_option("--factors", factors_path, "the layer's factors (llama-factors)")
      ->required()
      ->type_name("FILE.safetensors");
  app.add_option("--layer", name, "the matrix, e.g. blk.5.ffn_up")->required();
  app.add_option("--density", density, "fraction of the weights kept, in (0, 1)")
      ->transform(cli::real_number());
  app.add_option("--structure", structure, "unstructured or N:M (2:4)")
      ->check(CLI::Validator(
          [](std::string& text) {
            read_structure(text);
            return std::string();
          },
          ""));
  app.add_option("--damp-g", damp_g, "damping of G")->transform(cli::real_number());
  app.add_option("--damp-a", damp_a, "damping of A")->transform(cli::real_number());
  app.add_option("--sparsegpt-damp", sparsegpt_damp, "SparseGPT's damping")->transform(cli::real_number());
  app.add_option("--methods", methods, "comma-separated: sparsegpt, mask-only, chunked, whole-mask")
      ->check(CLI::Validator(
          [&known_methods](std::string& text) {
            std::stringstream list(text);
            for (std::string method; std::getline(list, method, ',');) {
              if (std::find(known_methods.begin(), known_methods.end(), method) == known_methods.end())
                return "unknown method '" + method + "'";
            }
            return std::string();
          },
          ""));
  app.add_option("--repeat", repeat, "runs of each method; the best time is reported")
      ->transform(cli::integer_at_least(1));
  app.add_option("--pcg-tol", pcg.tolerance, "whole-mask: the conjugate gradients' stopping rule")
      ->transform(cli::real_number());
  app.add_option("--pcg-iterations", pcg.max_iterations, "whole-mask: at most this many iterations")
      ->transform(cli::integer_at_least(0));
  app.add_option("--pcg-form", pcg_form, "whole-mask: the system the conjugate gradients solve")
      ->check(CLI::IsMember({"sweep", "kronecker"}));
  app.add_option("--pcg-float", pcg_float, "whole-mask: products in float (0: double)")
      ->transform(cli::integer_at_least(0));
  app.add_option("--heldout", heldout_paths, "factors of the same layer from other data; may be repeated")
      ->type_name("FILE")
      ->default_str("")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  std::optional<surgeon::nm_pattern> n_m_pattern;
  if (const std::optional<int> status = cli::parse(app, argc, argv, [&] {
        if (!(density > 0.0 && density < 1.0))
          cli::refuse(fmt::format("--density must be in (0, 1), got {}", density));
        n_m_pattern = read_structure(structure);
      }))
    return *status;
  pcg.form = pcg_form == "sweep" ? surgeon::pcg_form::removed_sweep : surgeon::pcg_form::kept_kronecker;
  pcg.float_products = pcg_float != 0;
  const bool n_m = n_m_pattern.has_value();
  const surgeon::nm_pattern pattern = n_m_pattern.value_or(surgeon::nm_pattern{2, 4});
  try {
    const auto file = surgeon::io::safetensors_reader::open(factors_path);
    layer l;
    if (!file.contains(name + ".weight")) bad_input("no tensor '" + name + ".weight' in " + factors_path);
    const surgeon::io::tensor_info& info = file.info(name + ".weight");
    if (info.shape.size() != 2) bad_input("'" + name + ".weight' is not a matrix");
    l.rows = info.shape[0];
    l.cols = info.shape[1];
    l.w = file.read<float>(name + ".weight");
    l.a = read_matrix(file, name + ".a", l.cols, l.cols);
    l.g = read_matrix(file, name + ".g", l.rows, l.rows);
    std::vector<std::pair<matrix, matrix>> heldout;  // (A', G') per --heldout file
    for (const std::string& path : heldout_paths) {
      const auto file_heldout = surgeon::io::safetensors_reader::open(path);
      heldout.emplace_back(read_matrix(file_heldout, name + ".a", l.cols, l.cols),
                           read_matrix(file_heldout, name + ".g", l.rows, l.rows));
    }
    const surgeon::host_matrix_view<const double> a_view(l.a.data(), l.cols, l.cols);
    const surgeon::host_matrix_view<const double> g_view(l.g.data(), l.rows, l.rows);
    const surgeon::host_matrix_view<const float> w_view(l.w.data(), l.rows, l.cols);
    const surgeon::damping damp{damp_g, damp_a};
    surgeon::cpu::context cpu;

    // The reference curvature (for the LLM Surgeon mask and the damped loss).
    const surgeon::cpu::kronecker_curvature reference =
        surgeon::cpu::factorize(cpu, g_view, a_view, damp, w_view);
    const bool all_live = reference.dead.dead_rows.empty() && reference.dead.dead_cols.empty();
    if (!all_live) bad_input("the layer has dead rows or columns; pick another");
    const matrix g_hat = Eigen::Map<const Eigen::MatrixXd>(reference.g.damped().data(), l.rows, l.rows);
    const matrix a_hat = Eigen::Map<const Eigen::MatrixXd>(reference.a.damped().data(), l.cols, l.cols);
    const auto losses = [&](const std::vector<float>& updated) {
      matrix delta(l.rows, l.cols);
      for (index_t k = 0; k < l.rows * l.cols; ++k)
        delta.data()[k] = static_cast<double>(updated[static_cast<std::size_t>(k)]) -
                          static_cast<double>(l.w[static_cast<std::size_t>(k)]);
      const matrix da = delta * a_hat;
      const matrix da_raw = delta * l.a;
      std::vector<double> result{0.5 * (g_hat * delta).cwiseProduct(da).sum(),
                                 0.5 * (l.g * delta).cwiseProduct(da_raw).sum(),
                                 0.5 * delta.cwiseProduct(da_raw).sum()};
      for (const auto& [a_heldout, g_heldout] : heldout) {
        const matrix da_heldout = delta * a_heldout;
        result.push_back(0.5 * (g_heldout * delta).cwiseProduct(da_heldout).sum());
        result.push_back(0.5 * delta.cwiseProduct(da_heldout).sum());
      }
      return result;
    };
    const auto llm_surgeon_mask = [&](const surgeon::cpu::kronecker_curvature& curvature) {
      const auto costs = surgeon::cpu::element_costs(cpu, surgeon::method::llm_surgeon, curvature, w_view);
      return n_m ? surgeon::select_nm({costs.view()}, pattern, 1.0 - density).masks.front()
                 : surgeon::select_unstructured({costs.view()}, 1.0 - density).masks.front();
    };
    fmt::print(
        "layer={} shape=[{}, {}] density={} structure={} damp_g={} damp_a={} sparsegpt_damp={} file={}\n",
        name, l.rows, l.cols, density, structure, damp_g, damp_a, sparsegpt_damp, factors_path);

    std::stringstream list(methods);
    for (std::string method; std::getline(list, method, ',');) {
      double best_update = std::numeric_limits<double>::infinity();
      double best_layer = std::numeric_limits<double>::infinity();
      std::vector<float> result;
      surgeon::update_report report;
      for (long long run = 0; run < repeat; ++run) {
        std::vector<float> w = l.w;
        const surgeon::host_matrix_view<float> view(w.data(), l.rows, l.cols);
        const auto layer_start = std::chrono::steady_clock::now();
        double update_seconds = 0.0;
        if (method == "sparsegpt") {
          const surgeon::cpu::sparsegpt_options options{128, sparsegpt_damp};
          if (n_m) {
            surgeon::cpu::sparsegpt_prune(cpu, a_view, view, pattern, options);
          } else {
            surgeon::cpu::sparsegpt_prune(cpu, a_view, view, 1.0 - density, options);
          }
          update_seconds = seconds_since(layer_start);
        } else {
          const surgeon::cpu::kronecker_curvature curvature =
              surgeon::cpu::factorize(cpu, g_view, a_view, damp, w_view);
          const surgeon::mask pruned = llm_surgeon_mask(curvature);
          const auto update_start = std::chrono::steady_clock::now();
          if (method == "mask-only") {
            pruned.apply(view);
          } else if (method == "chunked") {
            report = surgeon::cpu::obs_update(cpu, curvature, view, pruned, surgeon::correlate{2000});
          } else if (method == "whole-mask") {
            report = surgeon::cpu::obs_update_full(cpu, curvature, view, pruned, pcg);
          }
          update_seconds = seconds_since(update_start);
        }
        best_layer = std::min(best_layer, seconds_since(layer_start));
        best_update = std::min(best_update, update_seconds);
        result = std::move(w);
      }
      const std::vector<double> loss = losses(result);
      std::string heldout_losses;
      for (std::size_t k = 0; k < heldout.size(); ++k)
        heldout_losses += fmt::format(" heldout{}_kfac={:.6e} heldout{}_a={:.6e}", k + 1, loss[3 + 2 * k],
                                      k + 1, loss[4 + 2 * k]);
      index_t zeros = 0;
      for (const float v : result) zeros += v == 0.0f ? 1 : 0;
      fmt::print(
          "method={:<12} update_s={:.4f} layer_s={:.4f} loss_damped={:.6e} loss_kfac={:.6e} loss_a={:.6e} "
          "density={:.4f} iterations={} chunks={} solver_loss={:.6e} residual={:.2e}{}\n",
          method, best_update, best_layer, loss[0], loss[1], loss[2],
          1.0 - static_cast<double>(zeros) / static_cast<double>(result.size()), report.iterations,
          report.chunks, report.loss, report.relative_residual, heldout_losses);
    }
  } catch (const surgeon::error& e) {
    fmt::print(stderr, "layer-prune: {}\n", e.what());
    return 1;
  }
  return 0;
}
