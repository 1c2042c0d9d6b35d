// surgeon-prune: prunes a Llama-family model with the multi-shot driver (METHOD.md §5), reports the
// perplexity before and after (METHOD.md §8), and writes the pruned model and a JSON report.
//
//   surgeon-prune --model PATH (.gguf | llama2.c .bin) --calib TEXT --eval TEXT [--eval TEXT ...] --out PATH
//                 [options]   (surgeon-prune --help lists every flag with its default)
//
// With --device cuda the pruning (curvature, costs, selection, updates) runs on the CUDA backend;
// the model's forward/backward passes (calibration) and the perplexity stay on the CPU runtime.
// The CUDA part is cuda_prune.cu, built when CMake finds the CUDA toolkit.
//
// Exit status: 0 done (or --help); 2 bad flags (one line, pointing to --help), an output path that would
// overwrite the input or cannot be written, an input that cannot be read, --seqlen beyond the model's context
// or a text shorter than one window (all checked before the work starts); 1 any error during the run (a
// surgeon::error, out of memory), with a one-line message on stderr.
// GCC 12 reports a false -Wstringop-overflow inside std::copy when gguf_writer::write's emit() is
// inlined here through save.hpp (the tensor bytes are a std::vector sized before the copy); silenced
// for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <surgeon/adapter.hpp>
#include <surgeon/error.hpp>
#include <surgeon/io/gguf.hpp>
#include <surgeon/io/llama2c.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/prune.hpp>
#if defined(SURGEON_PRUNE_WITH_MPI)
#include <surgeon/mpi/communicator.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <csignal>
#include <cstdlib>
#include <cstring>

#include <sys/resource.h>
#include <unistd.h>

#if defined(SURGEON_PRUNE_WITH_CUDA)
#include "llama/cuda_prune.hpp"
#endif
#include "llama/cli.hpp"
#include "llama/compact.hpp"
#include "llama/layers.hpp"
#include "llama/llama2c_model.hpp"
#include "llama/load.hpp"
#include "llama/perplexity.hpp"
#include "llama/progress.hpp"
#include "llama/prune_adapter.hpp"
#include "llama/prune_report.hpp"
#include "llama/runtime.hpp"
#include "llama/save.hpp"
#include "llama/tool_checks.hpp"

namespace {

using surgeon::index_t;
namespace fs = std::filesystem;
namespace llama = surgeon::llama;

/// Every pruning method, in the order --help lists them.
constexpr surgeon::method all_methods[] = {surgeon::method::magnitude, surgeon::method::wanda,
                                           surgeon::method::sparsegpt, surgeon::method::lobd,
                                           surgeon::method::kobd,      surgeon::method::llm_surgeon};

struct structure_choice {
  surgeon::structure what = surgeon::structure::unstructured;
  surgeon::nm_pattern pattern{2, 4};
  std::string name = "unstructured";
};

/// The --structure `text` (unstructured, rows-cols, neurons-heads or N:M with 1 <= N <= M); nullopt, with the
/// reason in `why`, for anything else.
std::optional<structure_choice> read_structure(const std::string& text, std::string& why) {
  structure_choice s;
  s.name = text;
  if (text == "unstructured") return s;
  if (text == "rows-cols") {
    s.what = surgeon::structure::rows_columns;
    return s;
  }
  if (text == "neurons-heads") {
    s.what = surgeon::structure::coupled;
    return s;
  }
  const auto colon = text.find(':');
  if (colon == std::string::npos) {
    why = "needs unstructured, N:M, rows-cols or neurons-heads, got '" + text + "'";
    return std::nullopt;
  }
  const std::optional<long long> n = llama::cli::read_integer(text.substr(0, colon));
  const std::optional<long long> m = llama::cli::read_integer(text.substr(colon + 1));
  if (!n || !m || *n < 1 || *m < 1) {
    why = "N:M needs integers >= 1, got '" + text + "'";
    return std::nullopt;
  }
  if (*n > *m) {
    why = "N:M needs N <= M, got '" + text + "'";
    return std::nullopt;
  }
  s.what = surgeon::structure::n_m;
  s.pattern = surgeon::nm_pattern{static_cast<index_t>(*n), static_cast<index_t>(*m)};
  return s;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) SURGEON_THROW(io_error, "{}: cannot read", path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

/// MemAvailable of /proc/meminfo in bytes (0 when it cannot be read).
std::size_t available_host_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::size_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

/// Whether writing `out` would replace `in` (the same file, or the same path once resolved).
bool same_file(const fs::path& in, const fs::path& out) {
  std::error_code ec;
  if (fs::exists(out, ec) && fs::equivalent(in, out, ec) && !ec) return true;
  const fs::path a = fs::weakly_canonical(in, ec);
  if (ec) return false;
  const fs::path b = fs::weakly_canonical(out, ec);
  return !ec && a == b;
}

// ---- counting --------------------------------------------------------------------------------

struct counts {
  index_t prunable = 0;  ///< parameters of the prunable matrices
  index_t zeros = 0;     ///< exact zeros among them
  index_t unpruned = 0;  ///< embeddings, norms, head
  index_t shrunk = 0;    ///< Σ R_live·C_live + unpruned
};

counts count_parameters(llama::model& m) {
  counts c;
  for (const llama::model::linear_ref& ref : m.linear_layers()) {
    const surgeon::host_matrix_view<float> w = ref.view();
    std::vector<char> live_col(static_cast<std::size_t>(w.cols()), 0);
    index_t live_rows = 0;
    for (index_t i = 0; i < w.rows(); ++i) {
      bool live = false;
      for (index_t j = 0; j < w.cols(); ++j) {
        if (w(i, j) == 0.0f) {
          ++c.zeros;
        } else {
          live = true;
          live_col[static_cast<std::size_t>(j)] = 1;
        }
      }
      live_rows += live ? 1 : 0;
    }
    index_t live_cols = 0;
    for (const char v : live_col) live_cols += v;
    c.prunable += w.size();
    c.shrunk += live_rows * live_cols;
  }
  auto size = [](const std::vector<float>& v) { return static_cast<index_t>(v.size()); };
  c.unpruned = size(m.token_embedding) + size(m.final_norm) + size(m.output);
  for (const llama::block_weights& b : m.blocks) c.unpruned += size(b.attn_norm) + size(b.ffn_norm);
  c.shrunk += c.unpruned;
  return c;
}

/// The tool's settings, as read from the command line and resolved.
struct options {
  std::string model_path, calib_path, out_path, report_path, tokenizer_path;
  std::vector<std::string> eval_paths;  ///< --eval, in order (at least one)
  surgeon::method how = surgeon::method::llm_surgeon;
  structure_choice shape;
  double density = 0.5;
  long long shots = 0, nsamples = 128, seqlen = 0, eval_windows = 32, max_correlate = 2000, group_size = 0;
  unsigned long long seed = 0;
  double damp_g = 0.0, damp_a = 0.0;  ///< resolved: the flags, else surgeon::default_damping
  surgeon::pcg_options pcg{};
  surgeon::update_kind update = surgeon::update_kind::whole_mask;
  std::string update_name = "whole-mask";
  bool eval_every_shot = false, reseed_per_shot = true;
  bool sequential = false;  ///< resolved: --sequential, or surgeon::recommended_sequential
  bool costs_on_host = false;
  double memory_budget_gb = -1.0;  ///< -1: auto; 0: no limit
  long long update_threads = 0;    ///< 0: auto (the hardware threads)
  long long ffn_multiple = 32;     ///< neurons-heads: kept FFN widths rounded up to a multiple of this
  surgeon::io::ggml_type out_type = surgeon::io::ggml_type::f16;
  std::string out_type_name = "f16";
  int cuda_device = -1;  ///< -1: the CPU backend
  std::string device_name = "cpu";
  /// The first-order correction: off unless --first-order or one of its flags is given (then the
  /// documented defaults, surgeon_prune's `first_order_defaults`).
  bool first_order = false;
  surgeon::first_order_options first_order_options{};
  long long first_order_batch = 4;  ///< sequences per fine-tuning step
};

/// --first-order's defaults (docs/RESULTS.md, "First-order correction"): the paper's rank 8, Adam
/// at learning rate 2e-3 rather than the paper's 1e-4 (which in a few steps moves the weights too
/// little: on SmolLM2 at 50 %, SparseGPT, it removed 8.5 % and 2.6 % of the perplexity increase on
/// the two texts where 2e-3 removed 96 % and 21 %), two steps of 4 calibration sequences after
/// every shot and six more after the last.
surgeon::first_order_options first_order_defaults() {
  surgeon::first_order_options f;
  f.steps = 2;
  f.final_steps = 6;
  f.rank = 8;
  f.learning_rate = 2e-3;
  return f;
}

/// "cpu" → -1, "cuda" → 0, "cuda:N" → N; nullopt for anything else.
std::optional<int> read_device(const std::string& text) {
  if (text == "cpu") return -1;
  if (text == "cuda") return 0;
  if (text.rfind("cuda:", 0) != 0) return std::nullopt;
  const std::optional<long long> n = llama::cli::read_integer(text.substr(5));
  if (!n || *n < 0 || *n > std::numeric_limits<int>::max()) return std::nullopt;
  return static_cast<int>(*n);
}

/// Reads the command line into `o`; nullopt to go on, else the exit status (see cli::parse).
std::optional<int> parse_flags(int argc, char** argv, options& o) {
  namespace cli = llama::cli;
  CLI::App app(
      "Prunes a Llama-family model (GGUF or llama2.c) with the multi-shot driver, reports the perplexity "
      "of every --eval text before and after, and writes the pruned model (and a JSON report).",
      "surgeon-prune");
  cli::set_conventions(app);
  std::string method = "llm-surgeon", structure = "unstructured", shots = "auto", memory_budget = "auto",
              update_threads = "auto", device = "cpu",
              pcg_form = o.pcg.form == surgeon::pcg_form::kept_kronecker ? "kronecker" : "sweep";
  std::vector<std::string> updates;
  long long seed = 0, pcg_float = o.pcg.float_products ? 1 : 0;
  double damp_g = 0.0, damp_a = 0.0;
  bool whole_mask = false, no_update = false, sequential = false, one_pass = false;
  app.add_option("--model", o.model_path, "the model: .gguf, or a llama2.c .bin")
      ->required()
      ->type_name("PATH");
  app.add_option("--calib", o.calib_path, "calibration text")->required()->type_name("FILE");
  app.add_option("--eval", o.eval_paths,
                 "evaluation text, scored before and after; repeat for more (the first is the driver's "
                 "evaluation)")
      ->required()
      ->type_name("FILE")
      ->default_str("")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--out", o.out_path, "the pruned model (.gguf for a GGUF model)")
      ->required()
      ->type_name("PATH");
  app.add_option("--report", o.report_path, "a JSON report of the run")->type_name("FILE.json");
  app.add_option("--tokenizer", o.tokenizer_path,
                 "llama2.c tokenizer (of a llama2.c model, or of a GGUF that has none)")
      ->type_name("PATH")
      ->default_str("tok<vocab>.bin beside --model");
  std::vector<std::string> methods;
  for (const surgeon::method m : all_methods) methods.emplace_back(surgeon::to_string(m));
  app.add_option("--method", method, "how the weights to remove are chosen and the rest updated")
      ->check(CLI::IsMember(methods));
  app.add_option(
         "--structure", structure,
         "unstructured, N:M (2:4, 4:8, ...), rows-cols (independent rows and columns, zeroed in place) "
         "or neurons-heads (FFN neurons and attention heads, cut out of the written GGUF)")
      ->check(CLI::Validator(
          [](std::string& text) {
            std::string why;
            return read_structure(text, why) ? std::string() : why;
          },
          ""))
      ->type_name("STRUCTURE");
  app.add_option("--density", o.density, "fraction of the pruned matrices' weights kept, in (0, 1]")
      ->transform(cli::real_number());
  app.add_option("--shots", shots, "pruning shots (auto: 1, rows-cols and neurons-heads 8)")
      ->type_name("auto|INT")
      ->check(cli::keyword_or("auto", cli::integer_at_least(1)));
  app.add_option("--nsamples", o.nsamples, "calibration windows per shot")
      ->transform(cli::integer_at_least(1));
  app.add_option("--seqlen", o.seqlen, "tokens per window")
      ->transform(cli::integer_at_least(2))
      ->default_str("min(2048, context)");
  app.add_option("--seed", seed, "seed of the calibration windows")->transform(cli::integer_at_least(0));
  CLI::Option* damp_g_flag =
      app.add_option("--damp-g", damp_g, "damping of G (sparsegpt uses --damp-a alone)")
          ->transform(cli::real_number())
          ->default_str("llm-surgeon 1, others 0.1");
  CLI::Option* damp_a_flag = app.add_option("--damp-a", damp_a, "damping of A")
                                 ->transform(cli::real_number())
                                 ->default_str("llm-surgeon 0.1, others 0.01");
  app.add_option(
         "--update", updates,
         "llm-surgeon's update of element masks: the exact OBS solve of each matrix's whole mask, the "
         "paper's chunks, or none (an ablation)")
      ->check(CLI::IsMember({"whole-mask", "chunked", "none"}))
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->default_str("whole-mask");
  app.add_flag("--whole-mask", whole_mask, "alias of --update whole-mask");
  app.add_flag("--no-update", no_update, "alias of --update none");
  app.add_option("--max-correlate", o.max_correlate, "chunked: removed weights per chunk")
      ->transform(cli::integer_at_least(1));
  app.add_option("--pcg-tol", o.pcg.tolerance, "whole-mask: the conjugate gradients' stopping rule")
      ->transform(cli::real_number());
  app.add_option("--pcg-iterations", o.pcg.max_iterations, "whole-mask: at most this many iterations")
      ->transform(cli::integer_at_least(0));
  app.add_option("--pcg-form", pcg_form, "whole-mask: the system the conjugate gradients solve")
      ->check(CLI::IsMember({"sweep", "kronecker"}));
  app.add_option("--pcg-float", pcg_float, "whole-mask: products in float (0: double)")
      ->transform(cli::integer_at_least(0));
  app.add_option("--eval-windows", o.eval_windows, "at most this many windows of each --eval text")
      ->transform(cli::integer_at_least(1));
  app.add_option("--group-size", o.group_size,
                 "matrices pruned at once (0: all, or the largest groups the memory budget allows)")
      ->transform(cli::integer_at_least(0));
  app.add_option("--memory-budget", memory_budget,
                 "working memory of the pruning in GB (auto: 80 % of the available host memory, or of the "
                 "free device memory with --device cuda; 0: no limit)")
      ->check(cli::keyword_or("auto", cli::real_at_least(0.0)))
      ->type_name("auto|GB");
  CLI::Option* update_threads_flag =
      app.add_option(
             "--update-threads", update_threads,
             "cpu: matrices updated at once by llm-surgeon, each with single-threaded BLAS (auto: the "
             "hardware threads, shared by the processes of a run on this machine; 1: one at a time)")
          ->check(cli::keyword_or("auto", cli::integer_at_least(1)))
          ->type_name("auto|INT");
  app.add_option("--out-type", o.out_type_name,
                 "element type of the written matrices (GGUF only; norms stay f32; q8_0 keeps every pruned "
                 "weight exactly zero, rows that are not whole blocks of 32 are written f16)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  app.add_option("--ffn-multiple", o.ffn_multiple,
                 "neurons-heads: each block's kept FFN width is rounded up to a multiple of this with zero "
                 "neurons (exact; quantised types store rows in blocks of 32; 1: no rounding)")
      ->transform(cli::integer_at_least(1));
  app.add_option("--device", device, "where the pruning runs (cuda = cuda:0)")
      ->check(CLI::Validator(
          [](std::string& text) {
            return read_device(text) ? std::string() : "needs cpu, cuda or cuda:N, got '" + text + "'";
          },
          ""))
      ->type_name("cpu|cuda|cuda:N");
  app.add_flag("--costs-on-host", o.costs_on_host,
               "cuda: element costs in host memory, threshold on the host");
  app.add_flag("--eval-every-shot", o.eval_every_shot, "the perplexity after every shot, not only the last");
  CLI::Option* reseed_flag =
      app.add_flag("--reseed-per-shot",
                   "fresh calibration windows every shot: shot t reads those of seed + t - 1 (the default)");
  CLI::Option* same_windows_flag =
      app.add_flag("--same-windows", "the same calibration windows every shot (the last of the two wins)");
  CLI::Option* sequential_flag = app.add_flag(
      "--sequential", sequential,
      "sparsegpt, wanda: calibrate and prune layer by layer, each on the inputs of the pruned earlier layers "
      "(their tools' protocol); llm-surgeon (unstructured, N:M): costs and mask from one pass, then each "
      "group updated with its input's A re-measured on the model with the earlier groups pruned. Default for "
      "sparsegpt, wanda and llm-surgeon's element masks unless --group-size is given");
  CLI::Option* one_pass_flag =
      app.add_flag("--one-pass", one_pass, "every layer from one pass of the dense model");
  o.first_order_options = first_order_defaults();
  bool first_order = false;
  std::vector<CLI::Option*> first_order_flags{
      app.add_flag("--first-order", first_order,
                   "first-order correction after every shot: masked rank-r adapters trained with Adam on the "
                   "calibration text, absorbed into the weights (pruned weights stay zero)"),
      app.add_option("--first-order-steps", o.first_order_options.steps,
                     "first-order: Adam steps after every shot (implies --first-order)")
          ->transform(cli::integer_at_least(0))
          ->capture_default_str(),
      app.add_option("--first-order-final-steps", o.first_order_options.final_steps,
                     "first-order: further steps after the last shot (implies --first-order)")
          ->transform(cli::integer_at_least(0))
          ->capture_default_str(),
      app.add_option("--first-order-rank", o.first_order_options.rank,
                     "first-order: the adapters' rank (implies --first-order)")
          ->transform(cli::integer_at_least(1))
          ->capture_default_str(),
      app.add_option("--first-order-lr", o.first_order_options.learning_rate,
                     "first-order: Adam's learning rate (implies --first-order)")
          ->capture_default_str(),
      app.add_option("--first-order-batch", o.first_order_batch,
                     "first-order: calibration sequences per step (implies --first-order)")
          ->transform(cli::integer_at_least(1))
          ->capture_default_str()};
  sequential_flag->excludes(one_pass_flag);

  return cli::parse(app, argc, argv, [&] {
    const std::vector<CLI::Option*> order = app.parse_order();
    for (const CLI::Option* flag : first_order_flags) o.first_order = o.first_order || flag->count() > 0;
    if (!(std::isfinite(o.first_order_options.learning_rate) && o.first_order_options.learning_rate > 0.0))
      cli::refuse("--first-order-lr must be positive");
    if (o.first_order && !o.first_order_options.enabled())
      cli::refuse(
          "--first-order with no steps: give --first-order-steps or --first-order-final-steps above 0");
    for (const surgeon::method m : all_methods) {
      if (method == surgeon::to_string(m)) o.how = m;
    }
    std::string why;
    o.shape = *read_structure(structure, why);
    o.shots = shots == "auto" ? 0 : *cli::read_integer(shots);
    o.seed = static_cast<unsigned long long>(seed);
    o.pcg.form =
        pcg_form == "kronecker" ? surgeon::pcg_form::kept_kronecker : surgeon::pcg_form::removed_sweep;
    o.pcg.float_products = pcg_float != 0;
    o.memory_budget_gb = memory_budget == "auto" ? -1.0 : *cli::read_real(memory_budget);
    o.update_threads = update_threads == "auto" ? 0 : *cli::read_integer(update_threads);
    o.out_type = o.out_type_name == "f32"    ? surgeon::io::ggml_type::f32
                 : o.out_type_name == "bf16" ? surgeon::io::ggml_type::bf16
                 : o.out_type_name == "q8_0" ? surgeon::io::ggml_type::q8_0
                                             : surgeon::io::ggml_type::f16;
    o.cuda_device = *read_device(device);
    o.device_name = device == "cuda" ? "cuda:0" : device;
    // The last of --reseed-per-shot and --same-windows on the command line wins.
    for (const CLI::Option* flag : order) {
      if (flag == reseed_flag || flag == same_windows_flag) o.reseed_per_shot = flag == reseed_flag;
    }
    // --update and its aliases may repeat one choice, never name two.
    if (whole_mask) updates.emplace_back("whole-mask");
    if (no_update) updates.emplace_back("none");
    for (const std::string& u : updates) {
      if (u != updates.front()) cli::refuse("--update given twice with different values (or with an alias)");
    }
    if (!updates.empty()) o.update_name = updates.front();
    o.update = o.update_name == "chunked" ? surgeon::update_kind::chunked
               : o.update_name == "none"  ? surgeon::update_kind::none
                                          : surgeon::update_kind::whole_mask;

    if (!(o.density > 0.0 && o.density <= 1.0))
      cli::refuse(fmt::format("--density must be in (0, 1], got {}", o.density));
    o.damp_g = damp_g_flag->count() > 0 ? damp_g : surgeon::default_damping(o.how).g;
    o.damp_a = damp_a_flag->count() > 0 ? damp_a : surgeon::default_damping(o.how).a;
    if (!(o.damp_g > 0.0) || !(o.damp_a > 0.0)) cli::refuse("--damp-g and --damp-a must be positive");
    if (o.shots > 10000) cli::refuse("--shots is too large");
    if (o.costs_on_host && o.cuda_device < 0) cli::refuse("--costs-on-host needs --device cuda");
    const bool layer_local = o.how == surgeon::method::sparsegpt || o.how == surgeon::method::wanda;
    if (sequential && !layer_local &&
        !(o.how == surgeon::method::llm_surgeon && !surgeon::removes_lines(o.shape.what)))
      cli::refuse(
          "--sequential needs --method sparsegpt, wanda, or llm-surgeon with element masks (unstructured, "
          "N:M); the others take one global threshold from one pass");
    if (sequential && o.group_size != 0) cli::refuse("--sequential makes its own groups; drop --group-size");
    o.sequential = sequential ||
                   (!one_pass && o.group_size == 0 && surgeon::recommended_sequential(o.how, o.shape.what) &&
                    !(o.how == surgeon::method::llm_surgeon && o.update == surgeon::update_kind::none));
    if (update_threads_flag->count() > 0 && o.cuda_device >= 0)
      cli::refuse("--update-threads applies to --device cpu");
#if !defined(SURGEON_PRUNE_WITH_CUDA)
    if (o.cuda_device >= 0)
      cli::refuse("--device " + o.device_name +
                  ": this surgeon-prune was built without the CUDA backend (configure with the CUDA toolkit, "
                  "-DSURGEON_WITH_CUDA=ON)");
#endif
    const bool gguf_in = fs::path(o.model_path).extension() == ".gguf";
    const bool gguf_out = fs::path(o.out_path).extension() == ".gguf";
    if (gguf_in != gguf_out)
      cli::refuse(gguf_in ? "a GGUF model is written as GGUF: --out must end in .gguf"
                          : "a llama2.c model is written as llama2.c: --out must not end in .gguf");
    if (!gguf_in && o.shape.what == surgeon::structure::coupled)
      cli::refuse(
          "--structure neurons-heads writes a model whose blocks have different widths, which a llama2.c "
          "checkpoint cannot hold: convert the model to GGUF first");
    if (o.shape.what == surgeon::structure::coupled &&
        !(o.how == surgeon::method::llm_surgeon || o.how == surgeon::method::kobd ||
          o.how == surgeon::method::lobd || o.how == surgeon::method::magnitude))
      cli::refuse(
          "--structure neurons-heads needs --method llm-surgeon, kobd, lobd or magnitude (a row and "
          "column score)");
  });
}

/// The report's JSON (prune_report.hpp): keys in the order they are set.
using json = llama::report_json;

// "phases calibration=… curvature=… …" in seconds, for one shot or summed over shots.
std::string phases_line(const surgeon::shot_timings& t) {
  return fmt::format(
      "phases calibration={:.2f} curvature={:.2f} costs={:.2f} selection={:.2f} update={:.2f} "
      "correction={:.2f} evaluation={:.2f} communication={:.2f}",
      t.calibration, t.curvature, t.costs, t.selection, t.update, t.correction, t.evaluation,
      t.communication);
}

// The processes of this run: MPI's world under mpirun when built with MPI, else this process.
// Without MPI, a start as one of several processes is refused (each would write the same file).
#if defined(SURGEON_PRUNE_WITH_MPI)
using process_group = surgeon::mpi::communicator;
#else
struct process_group : surgeon::communicator {
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(double*, std::size_t) override {}
  void all_reduce_sum(std::int64_t*, std::size_t) override {}
  void all_reduce_max(double*, std::size_t) override {}
  void reduce_sum(double*, std::size_t, int) override {}
  void broadcast(void*, std::size_t, int) override {}
  std::vector<std::int64_t> all_gather(std::int64_t value) override { return {value}; }
  [[noreturn]] void abort(int code) override { std::exit(code); }
};
#endif

#if !defined(SURGEON_PRUNE_WITH_MPI)
// The number of processes a launcher (mpirun, srun) started this one among, from its environment.
int launched_processes() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"}) {
    if (const char* value = std::getenv(name)) return std::max(1, std::atoi(value));
  }
  return 1;
}
#endif

// The processes of the run on this machine, which share its memory (the launcher's count; all of
// them when it gives none).
int local_processes(int processes) {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}) {
    if (const char* value = std::getenv(name)) return std::clamp(std::atoi(value), 1, std::max(1, processes));
  }
  return std::max(1, processes);
}

// What a process of a run over several processes says when the launcher stops it (another process
// failed or was killed): one line, the output file's temporary removed, exit status 1.
char stop_message[160];
char stop_temporary[4096];
extern "C" void on_stop(int) {
  const ssize_t written = write(STDERR_FILENO, stop_message, std::strlen(stop_message));
  (void)written;
  if (stop_temporary[0] != '\0') unlink(stop_temporary);
  _exit(1);
}
void stop_cleanly(int rank, int size, const std::string& temporary) {
  std::snprintf(stop_message, sizeof stop_message,
                "surgeon-prune: process %d of %d stopped: another process of the run failed or was killed\n",
                rank, size);
  std::snprintf(stop_temporary, sizeof stop_temporary, "%s", temporary.c_str());
  std::signal(SIGTERM, on_stop);
  std::signal(SIGINT, on_stop);
}

}  // namespace

int main(int argc, char** argv) {
#if defined(SURGEON_PRUNE_WITH_MPI)
  const surgeon::mpi::environment mpi(argc, argv);
#else
  if (launched_processes() > 1) {
    fmt::print(stderr,
               "surgeon-prune: started as one of {} processes, but built without MPI (configure with "
               "-DSURGEON_WITH_MPI=ON and install libopenmpi-dev)\n",
               launched_processes());
    return 2;
  }
#endif
  process_group group;
  const bool leader = group.rank() == 0;
  // Only the first process prints, reads the evaluation texts, writes and reports.
  if (!leader && std::freopen("/dev/null", "w", stdout) == nullptr) return 1;
  options o;
  if (const std::optional<int> status = parse_flags(argc, argv, o)) return *status;
  if (group.size() > 1)
    stop_cleanly(group.rank(), group.size(), leader ? o.out_path + ".tmp." + std::to_string(getpid()) : "");
  const int status = llama::tool::run_guarded("surgeon-prune", [&] {
    const auto start = std::chrono::steady_clock::now();
    if (group.size() > 1 && o.cuda_device >= 0)
      throw llama::tool::bad_input(
          "--device cuda runs in one process; under mpirun the processes prune on the CPU");
    if (same_file(o.model_path, o.out_path))
      throw llama::tool::bad_input(
          fmt::format("refusing to overwrite the input model {} (--out {})", o.model_path, o.out_path));
    if (!o.report_path.empty() &&
        (same_file(o.model_path, o.report_path) || same_file(o.out_path, o.report_path)))
      throw llama::tool::bad_input("--report must differ from --model and --out");
    // Everything that can be checked before the work starts: a bad path or length costs seconds,
    // not a whole pruning run.
    llama::tool::check_readable("--model", o.model_path);
    if (!o.tokenizer_path.empty()) llama::tool::check_readable("--tokenizer", o.tokenizer_path);
    llama::tool::check_readable("--calib", o.calib_path);
    for (const std::string& path : o.eval_paths) llama::tool::check_readable("--eval", path);
    if (leader) {
      llama::tool::check_writable("--out", o.out_path);
      if (!o.report_path.empty()) llama::tool::check_writable("--report", o.report_path);
    }
#if defined(SURGEON_PRUNE_WITH_CUDA)
    // Fail before the model is loaded and evaluated when the device is missing.
    if (o.cuda_device >= 0)
      fmt::print("device={} ({})\n", o.device_name, llama::cuda_device_description(o.cuda_device));
#endif
    llama::loaded_model loaded = llama::load_model(o.model_path, o.tokenizer_path);
    llama::model& m = loaded.weights;
    const index_t seqlen = o.seqlen > 0 ? static_cast<index_t>(o.seqlen)
                                        : std::min<index_t>(2048, std::max<index_t>(2, m.cfg.max_seq_len));
    llama::tool::check_context(seqlen, m.cfg);
    const std::vector<std::int32_t> calib = loaded.vocab->encode(read_text(o.calib_path));
    llama::tool::check_text_length("--calib", o.calib_path, calib.size(), seqlen);
    std::vector<std::vector<std::int32_t>> evals;
    std::string eval_tokens;
    for (const std::string& path : o.eval_paths) {
      evals.push_back(loaded.vocab->encode(read_text(path)));
      llama::tool::check_text_length("--eval", path, evals.back().size(), seqlen);
      eval_tokens += (eval_tokens.empty() ? "" : ",") + std::to_string(evals.back().size());
    }
    fmt::print("model={} layers={} dim={} hidden={} vocab={} calib_tokens={} eval_tokens={}\n", o.model_path,
               m.cfg.n_layers, m.cfg.dim, m.cfg.hidden_dim, m.cfg.vocab_size, calib.size(), eval_tokens);
    llama::runtime runtime(m);
    const bool tty = isatty(fileno(stderr)) != 0;

    // Dense perplexity of every evaluation text (by the first process only).
    std::vector<llama::perplexity_result> dense_results;
    for (std::size_t k = 0; k < evals.size() && leader; ++k) {
      index_t windows = static_cast<index_t>(evals[k].size()) / seqlen;
      windows = std::min<index_t>(windows, static_cast<index_t>(o.eval_windows));
      llama::progress_bar bar("dense perplexity", windows);
      dense_results.push_back(llama::perplexity(runtime, evals[k], seqlen,
                                                static_cast<index_t>(o.eval_windows), 4,
                                                [&](index_t done, index_t, double running) {
                                                  bar.update(done, fmt::format("ppl {:.4f}", running));
                                                }));
      fmt::print("ppl_dense={:.6f} (text={} windows={} seqlen={})\n", dense_results.back().ppl,
                 o.eval_paths[k], dense_results.back().windows, seqlen);
    }
    std::fflush(stdout);

    // Pruning.
    surgeon::prune_options po;
    po.how = o.how;
    po.what = o.shape.what;
    po.pattern = o.shape.pattern;
    po.sparsity = 1.0 - o.density;
    if (po.sparsity < 1e-15) po.sparsity = 0.0;
    po.shots = o.shots > 0 ? static_cast<int>(o.shots) : surgeon::default_shots(o.shape.what);
    po.damp = surgeon::default_damping(po.how);
    po.damp->g = o.damp_g;
    po.damp->a = o.damp_a;
    po.budget.max = static_cast<index_t>(o.max_correlate);
    po.pcg = o.pcg;
    po.update = o.update;
    po.group_size = static_cast<int>(o.group_size);
    po.sequential = o.sequential;
    if (o.first_order) po.first_order = o.first_order_options;
    po.first_order.seed = o.seed;
    // The working-memory budget: auto is 80 % of what is free where the pruning runs, shared by the
    // processes of the run on this machine (--memory-budget is each process's).
    std::size_t free_bytes = 0;
    if (o.memory_budget_gb < 0.0) {
#if defined(SURGEON_PRUNE_WITH_CUDA)
      free_bytes = o.cuda_device >= 0 ? llama::cuda_free_bytes(o.cuda_device) : available_host_bytes();
#else
      free_bytes = available_host_bytes();
#endif
      po.memory_budget = free_bytes / 10 * 8 / static_cast<std::size_t>(local_processes(group.size()));
    } else {
      po.memory_budget = static_cast<std::size_t>(o.memory_budget_gb * 1e9);
    }

    llama::calibration_options co;
    co.nsamples = static_cast<index_t>(o.nsamples);
    co.seqlen = seqlen;
    co.seed = o.seed;
    co.reseed_per_shot = o.reseed_per_shot;
    co.fine_tune_batch = static_cast<index_t>(o.first_order_batch);
    llama::evaluation_options eo;
    eo.seqlen = seqlen;
    eo.max_windows = static_cast<index_t>(o.eval_windows);
    eo.when = o.eval_every_shot ? llama::evaluate_when::every_shot : llama::evaluate_when::last_shot;
    eo.last_shot = *po.shots;
    if (!leader) eo.when = llama::evaluate_when::never;
    std::vector<const std::vector<std::int32_t>*> eval_texts;
    for (const std::vector<std::int32_t>& text : evals) {
      if (leader) eval_texts.push_back(&text);
    }
    llama::prune_adapter adapter(m, runtime, calib, eval_texts, co, eo);

    {
      const std::vector<surgeon::prunable_matrix> matrices = adapter.matrices();
      // Throws when nothing fits; over several processes, per process.
      const int groups = surgeon::choose_group_size(matrices, po, group.size());
      fmt::print(
          "memory_budget={:.1f} MB{} group_size={}{} working_memory_estimate={:.1f} MB{}\n",
          static_cast<double>(po.memory_budget) / 1e6, o.memory_budget_gb < 0.0 ? " (auto)" : "", groups,
          po.sequential ? " (sequential)" : "",
          static_cast<double>(surgeon::estimate_largest_process_bytes(matrices, po, groups, group.size())) /
              1e6,
          group.size() > 1 ? " (per process)" : "");
      std::fflush(stdout);
    }
    const int update_threads = o.update_threads > 0
                                   ? static_cast<int>(o.update_threads)
                                   : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) /
                                                     local_processes(group.size()));
    if (o.cuda_device < 0) fmt::print("update_threads={} processes={}\n", update_threads, group.size());
    llama::progress_bar bar("prune", *po.shots);
    bar.update(0, fmt::format("{} {} density {}", surgeon::to_string(o.how), o.shape.name, o.density));
    const auto on_shot = [&](const surgeon::shot_report& r) {
      const std::string line = fmt::format(
          "shot {}/{} target_sparsity={:.4f} achieved_sparsity={:.4f} seconds={:.2f} lambda_g={:.3g} "
          "lambda_a={:.3g} escalations={} update_iterations={} max_update_residual={:.3g}{}{}\n  {}",
          r.shot, *po.shots, r.target_sparsity, r.achieved_sparsity, r.seconds, r.max_lambda_g,
          r.max_lambda_a, r.escalations, r.update_iterations, r.max_update_residual,
          r.correction_steps > 0
              ? fmt::format(" correction_steps={} loss {:.4f} -> {:.4f}", r.correction_steps,
                            r.correction_first_loss, r.correction_last_loss)
              : "",
          r.evaluation && std::isfinite(*r.evaluation) ? fmt::format(" ppl={:.6f}", *r.evaluation) : "",
          phases_line(r.timings));
      if (!leader) return;
      if (tty)
        bar.update(r.shot, fmt::format("sparsity {:.4f} ({:.1f} s)", r.achieved_sparsity, r.seconds));
      else
        fmt::print(stderr, "{}\n", line);
    };
    std::vector<surgeon::shot_report> reports;
    if (o.cuda_device < 0) {
      surgeon::cpu::prune_backend_options bo;
      bo.update_threads = update_threads;
      reports = surgeon::prune(adapter, po, surgeon::cpu::prune_backend(bo), group, on_shot);
    } else {
#if defined(SURGEON_PRUNE_WITH_CUDA)
      // The pruning runs in cuda_prune.cu (nvcc, no Eigen); the adapter crosses as any_adapter.
      surgeon::any_adapter erased(adapter);
      reports = llama::prune_on_cuda(o.cuda_device, erased, po, o.costs_on_host, on_shot);
#endif
    }
    // Every process ends with the same weights; the first one finishes the run.
    const std::vector<std::int64_t> peak_kib =
        group.all_gather(static_cast<std::int64_t>(peak_rss_mb() * 1024.0));
    if (!leader) return 0;
    std::vector<double> peak_mb_per_process;
    for (const std::int64_t kib : peak_kib) peak_mb_per_process.push_back(static_cast<double>(kib) / 1024.0);
    if (group.size() > 1) fmt::print("peak_rss_mb_per_process={:.1f}\n", fmt::join(peak_mb_per_process, ","));
    const llama::perplexity_result& dense = dense_results.front();
    const std::vector<llama::perplexity_result> pruned_results = adapter.last_perplexities();
    const double ppl_pruned = adapter.last_perplexity().ppl;
    const counts c = count_parameters(m);
    const double achieved_density = 1.0 - static_cast<double>(c.zeros) / static_cast<double>(c.prunable);

    // Coupled units are cut out of the model: a smaller one that computes the same function.
    std::optional<llama::compact_summary> compacted;
    std::optional<llama::perplexity_result> compacted_result;
    if (o.shape.what == surgeon::structure::coupled) {
      compacted = llama::compact(m, static_cast<index_t>(o.ffn_multiple));
      // The check that nothing but zeros went: the first text's perplexity on the cut model.
      llama::runtime cut_runtime(m);
      llama::progress_bar cut_bar("compacted perplexity", pruned_results.front().windows);
      compacted_result =
          llama::perplexity(cut_runtime, evals.front(), seqlen, static_cast<index_t>(o.eval_windows), 4,
                            [&](index_t done, index_t, double running) {
                              cut_bar.update(done, fmt::format("ppl {:.4f}", running));
                            });
      index_t padding_heads = 0, padding_hidden = 0;
      std::string shapes;
      for (const llama::compacted_block& b : compacted->blocks) {
        padding_heads += b.padding_heads;
        padding_hidden += b.padding_hidden;
        shapes += fmt::format("{}{}/{}/{}", shapes.empty() ? "" : " ", b.after.n_heads, b.after.n_kv_heads,
                              b.after.hidden_dim);
      }
      fmt::print(
          "compacted parameters={} of {} ({:.4f}) zero_padding_heads={} zero_padding_neurons={} "
          "ffn_multiple={} ppl_compacted={:.6f} (ppl_pruned {:.6f})\nblocks heads/kv_heads/ffn: {}\n",
          compacted->parameters_after, compacted->parameters_before,
          static_cast<double>(compacted->parameters_after) /
              static_cast<double>(compacted->parameters_before),
          padding_heads, padding_hidden, o.ffn_multiple, compacted_result->ppl, pruned_results.front().ppl,
          shapes);
    }

    // The pruned model.
    const llama::save_summary saved =
        llama::save_model(loaded.format, o.model_path, o.out_path, m, o.out_type);
    const std::string written_type = loaded.format == llama::model_format::gguf ? o.out_type_name : "f32";
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    if (!o.report_path.empty()) {
      std::string command;
      for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
      const bool gguf = loaded.format == llama::model_format::gguf;
      json j;
      j["command"] = command;
      j["model"] = o.model_path;
      j["format"] = gguf ? "gguf" : "llama2c";
      j["out"] = o.out_path;
      j["out_type"] = written_type;
      j["out_bytes"] = saved.bytes;
      j["out_f16_fallback"] = saved.f16_fallback;
      j["model_bytes"] = fs::file_size(o.model_path);
      j["calib"] = o.calib_path;
      j["eval"] = o.eval_paths.front();
      j["method"] = std::string(surgeon::to_string(o.how));
      j["structure"] = o.shape.name;
      j["target_density"] = o.density;
      j["achieved_density"] = achieved_density;
      j["shots"] = *po.shots;
      j["nsamples"] = o.nsamples;
      j["seqlen"] = seqlen;
      j["seed"] = static_cast<long long>(o.seed);
      j["damp_g"] = o.damp_g;
      j["damp_a"] = o.damp_a;
      j["max_correlate"] = o.max_correlate;
      j["update"] = o.update_name;
      j["reseed_per_shot"] = o.reseed_per_shot;
      j["pcg_tolerance"] = o.pcg.tolerance;
      j["pcg_iterations"] = o.pcg.max_iterations;
      j["pcg_float_products"] = o.pcg.float_products;
      j["sequential"] = o.sequential;
      if (o.first_order) {
        j["first_order"] = {{"steps", o.first_order_options.steps},
                            {"final_steps", o.first_order_options.final_steps},
                            {"rank", o.first_order_options.rank},
                            {"learning_rate", o.first_order_options.learning_rate},
                            {"batch", o.first_order_batch}};
      } else {
        j["first_order"] = nullptr;
      }
      j["group_size"] = reports.empty() ? o.group_size : reports.front().group_size;
      j["update_threads"] = o.cuda_device < 0 ? update_threads : 1;
      j["memory_budget_gb"] = static_cast<double>(po.memory_budget) / 1e9;
      j["device"] = o.device_name;
      j["costs_on_host"] = o.costs_on_host;
      j["eval_windows"] = dense.windows;
      j["ppl_dense"] = dense.ppl;
      j["ppl_pruned"] = ppl_pruned;
      j["evaluations"] = llama::evaluations_json(o.eval_paths, dense_results, pruned_results);
      j["prunable_parameters"] = c.prunable;
      j["pruned_weights"] = c.zeros;
      j["unpruned_parameters"] = c.unpruned;
      j["parameters"] = c.prunable + c.unpruned;
      if (o.shape.what == surgeon::structure::rows_columns) j["shrunk_parameters"] = c.shrunk;
      if (compacted) {
        json blocks = json::array();
        for (const llama::compacted_block& b : compacted->blocks) {
          blocks.push_back({{"heads", b.after.n_heads},
                            {"kv_heads", b.after.n_kv_heads},
                            {"ffn", b.after.hidden_dim},
                            {"padding_heads", b.padding_heads},
                            {"padding_kv_heads", b.padding_kv_heads},
                            {"padding_ffn", b.padding_hidden}});
        }
        j["compacted"] = {{"parameters_before", compacted->parameters_before},
                          {"parameters_after", compacted->parameters_after},
                          {"ffn_multiple", o.ffn_multiple},
                          {"ppl_compacted", compacted_result->ppl},
                          {"blocks", blocks}};
      }
      const llama::calibration_counts& work = adapter.calibration_work();
      j["calibration"] = {{"passes", work.passes},
                          {"forward_batches", work.forward_batches},
                          {"backward_batches", work.backward_batches},
                          {"blocks", work.blocks},
                          {"resumed_batches", work.resumed_batches},
                          {"fine_tune_batches", work.fine_tune_batches}};
      j["seconds"] = seconds;
      j["peak_rss_mb"] = peak_rss_mb();
      j["processes"] = group.size();
      j["peak_rss_mb_per_process"] = peak_mb_per_process;
      j["per_shot"] = json::array();
      for (const surgeon::shot_report& r : reports) j["per_shot"].push_back(llama::shot_json(r));
      llama::write_report(o.report_path, j);
    }
    fmt::print(
        "method={} structure={} target_density={} shots={} nsamples={} seqlen={} seed={} device={} "
        "seconds={:.2f} peak_rss_mb={:.1f}\n",
        surgeon::to_string(o.how), o.shape.name, o.density, *po.shots, o.nsamples, seqlen, o.seed,
        o.device_name, seconds, peak_rss_mb());
    fmt::print("wrote {} ({:.1f} MB, matrices {}; the input model {:.1f} MB)\n", o.out_path,
               static_cast<double>(saved.bytes) / 1e6, written_type,
               static_cast<double>(fs::file_size(o.model_path)) / 1e6);
    if (!saved.f16_fallback.empty()) {
      fmt::print("written as f16, their rows not whole q8_0 blocks: {}\n",
                 fmt::join(saved.f16_fallback, " "));
    }
    const llama::calibration_counts& work = adapter.calibration_work();
    fmt::print("calibration passes={} forward_batches={} backward_batches={} blocks={} resumed_batches={}\n",
               work.passes, work.forward_batches, work.backward_batches, work.blocks, work.resumed_batches);
    surgeon::shot_timings all;  // every shot's phases, summed
    for (const surgeon::shot_report& r : reports) {
      all.calibration += r.timings.calibration;
      all.curvature += r.timings.curvature;
      all.costs += r.timings.costs;
      all.selection += r.timings.selection;
      all.update += r.timings.update;
      all.correction += r.timings.correction;
      all.evaluation += r.timings.evaluation;
      all.communication += r.timings.communication;
    }
    fmt::print("{} (seconds, all shots)\n", phases_line(all));
    // One perplexity column per evaluation text, headed by its file name.
    std::string header = "| model  | method       | structure    | density |";
    std::string rule = "|--------|--------------|--------------|---------|";
    std::string dense_row = fmt::format("| dense  | -            | -            | {:7.4f} |", 1.0);
    std::string pruned_row = fmt::format("| pruned | {:<12} | {:<12} | {:7.4f} |", surgeon::to_string(o.how),
                                         o.shape.name, achieved_density);
    for (std::size_t k = 0; k < evals.size(); ++k) {
      const std::string name = fs::path(o.eval_paths[k]).filename().string();
      const std::size_t width = std::max<std::size_t>(10, name.size());
      header += fmt::format(" {:>{}} |", name, width);
      rule += std::string(width + 2, '-') + "|";
      dense_row += fmt::format(" {:>{}.4f} |", dense_results[k].ppl, width);
      const double value = k < pruned_results.size() ? pruned_results[k].ppl : std::nan("");
      pruned_row += fmt::format(" {:>{}.4f} |", value, width);
    }
    fmt::print("\n{}\n{}\n{}\n{}\n\n", header, rule, dense_row, pruned_row);
    fmt::print("ppl_dense={:.17g} ppl_pruned={:.17g} achieved_density={:.17g}\n", dense.ppl, ppl_pruned,
               achieved_density);
    for (std::size_t k = 1; k < evals.size() && k < pruned_results.size(); ++k) {
      fmt::print("text={} ppl_dense={:.17g} ppl_pruned={:.17g}\n", o.eval_paths[k], dense_results[k].ppl,
                 pruned_results[k].ppl);
    }
    return 0;
  });
  if (status != 0 && group.size() > 1) {
    fmt::print(stderr, "surgeon-prune: process {} of {} failed: ending every process of the run\n",
               group.rank(), group.size());
    group.abort(status);
  }
  return status;
}
