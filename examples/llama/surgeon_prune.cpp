// surgeon-prune: prunes a Llama-family model with the multi-shot driver (METHOD.md §5), reports the
// perplexity before and after (METHOD.md §8), and writes the pruned model and a JSON report.
//
//   surgeon-prune --model PATH (.gguf | llama2.c .bin) --calib TEXT --eval TEXT [--eval TEXT ...] --out PATH
//                 [--method M] [--structure S] [--density D] [--shots auto|T] [--nsamples N]
//                 [--seqlen L] [--seed S] [--damp-g X] [--damp-a X] [--max-correlate K]
//                 [--update whole-mask|chunked|none] [--pcg-tol X] [--eval-windows K] [--group-size K]
//                 [--out-type f32|f16]
//                 [--report FILE.json] [--tokenizer PATH] [--eval-every-shot] [--reseed-per-shot]
//                 [--device cpu|cuda|cuda:N] [--costs-on-host] [--memory-budget auto|0|GB]
//                 [--update-threads auto|K] [--sequential | --one-pass]
//
// With --device cuda the pruning (curvature, costs, selection, updates) runs on the CUDA backend;
// the model's forward/backward passes (calibration) and the perplexity stay on the CPU runtime.
// The CUDA part is cuda_prune.cu, built when CMake finds the CUDA toolkit.
//
// Exit status: 0 done; 2 bad flags, an output path that would overwrite the input or cannot be
// written, an input that cannot be read, --seqlen beyond the model's context or a text shorter
// than one window (all checked before the work starts); 1 any error during the run (a
// surgeon::error, out of memory), with a one-line message on stderr.
// GCC 12 reports a false -Wstringop-overflow inside std::copy when gguf_writer::write's emit() is
// inlined here through save.hpp (the tensor bytes are a std::vector sized before the copy); silenced
// for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
#include <fmt/format.h>

#include <surgeon/adapter.hpp>
#include <surgeon/error.hpp>
#include <surgeon/io/gguf.hpp>
#include <surgeon/io/llama2c.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/prune.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#if defined(SURGEON_PRUNE_WITH_CUDA)
#include "llama/cuda_prune.hpp"
#endif
#include "llama/llama2c_model.hpp"
#include "llama/load.hpp"
#include "llama/perplexity.hpp"
#include "llama/progress.hpp"
#include "llama/prune_report.hpp"
#include "llama/prune_adapter.hpp"
#include "llama/runtime.hpp"
#include "llama/save.hpp"
#include "llama/tool_checks.hpp"

namespace {

using surgeon::index_t;
namespace fs = std::filesystem;
namespace llama = surgeon::llama;

constexpr const char* usage_text =
    "usage: surgeon-prune --model PATH (.gguf | llama2.c .bin) --calib TEXT --eval TEXT --out PATH\n"
    "         [--eval TEXT ...]  more evaluation texts (each scored before and after; the first is the\n"
    "                       driver's evaluation)\n"
    "         [--method magnitude|wanda|sparsegpt|lobd|kobd|llm-surgeon]   (llm-surgeon)\n"
    "         [--structure unstructured|2:4|4:8|N:M|rows-cols]             (unstructured)\n"
    "         [--density D]        fraction of the pruned matrices' weights kept (0.5)\n"
    "         [--shots auto|T] (auto: 1, rows-cols 8)  [--nsamples N] (128)  [--seqlen L] (min(2048, "
    "context))\n"
    "         [--seed S] (0)  [--damp-g X] [--damp-a X]  (llm-surgeon: 1 and 0.1; others 0.1 and 0.01;\n"
    "                       sparsegpt uses --damp-a alone)\n"
    "         [--update whole-mask|chunked|none] (whole-mask)  llm-surgeon's update of element masks: the\n"
    "                       exact OBS solve of each matrix's whole mask, the paper's chunks, or none (an\n"
    "                       ablation; --whole-mask and --no-update are aliases)\n"
    "         [--max-correlate K] (2000)  chunked: removed weights per chunk\n"
    "         [--pcg-tol X] (0.03)  [--pcg-iterations K] (200)  [--pcg-form sweep|kronecker] (sweep)\n"
    "         [--pcg-float 0|1] (1)  whole-mask: the conjugate gradients' stopping rule, form and precision\n"
    "         [--eval-windows K] (32)\n"
    "         [--group-size K] (0 = all at once, or the largest groups the memory budget allows)\n"
    "         [--memory-budget auto|0|GB]  working memory of the pruning (auto: 80 % of the available host\n"
    "                       memory, or of the free device memory with --device cuda; 0: no limit)\n"
    "         [--update-threads auto|K]  cpu: matrices updated at once by llm-surgeon, each with\n"
    "                       single-threaded BLAS (auto: the hardware threads; 1: one at a time)\n"
    "         [--out-type f32|f16] (f32, GGUF only)  [--report FILE.json]  [--tokenizer PATH]\n"
    "         [--eval-every-shot]  [--same-windows]  (the same calibration windows every shot, instead of\n"
    "                       fresh ones: shot t reads the windows of seed + t - 1)\n"
    "         [--sequential | --one-pass]  sparsegpt, wanda: calibrate and prune layer by layer, each on\n"
    "                       the inputs of the pruned earlier layers (their tools' protocol), or every layer\n"
    "                       from one pass of the dense model; llm-surgeon (unstructured, N:M): costs and\n"
    "                       mask from one pass, then each group updated with its input's A re-measured on\n"
    "                       the model with the earlier groups pruned. Default: sequential for sparsegpt,\n"
    "                       wanda and llm-surgeon's element masks unless --group-size is given\n"
    "         [--device cpu|cuda|cuda:N]  where the pruning runs (cpu; cuda = cuda:0)\n"
    "         [--costs-on-host]  cuda: element costs in host memory, threshold on the host\n";

[[noreturn]] void usage(const std::string& problem) {
  fmt::print(stderr, "surgeon-prune: {}\n{}", problem, usage_text);
  std::exit(2);
}

long long parse_integer(const std::string& flag, const std::string& text, long long least) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || value < least)
    usage(fmt::format("{} needs an integer >= {}, got '{}'", flag, least, text));
  return value;
}

double parse_real(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(value))
    usage(fmt::format("{} needs a number, got '{}'", flag, text));
  return value;
}

surgeon::method parse_method(const std::string& text) {
  using surgeon::method;
  for (const method m : {method::magnitude, method::wanda, method::sparsegpt, method::lobd, method::kobd,
                         method::llm_surgeon}) {
    if (text == surgeon::to_string(m)) return m;
  }
  usage("unknown --method '" + text + "'");
}

struct structure_choice {
  surgeon::structure what = surgeon::structure::unstructured;
  surgeon::nm_pattern pattern{2, 4};
  std::string name = "unstructured";
};

structure_choice parse_structure(const std::string& text) {
  structure_choice s;
  s.name = text;
  if (text == "unstructured") return s;
  if (text == "rows-cols") {
    s.what = surgeon::structure::rows_columns;
    return s;
  }
  const auto colon = text.find(':');
  if (colon != std::string::npos) {
    const long long n = parse_integer("--structure N", text.substr(0, colon), 1);
    const long long m = parse_integer("--structure M", text.substr(colon + 1), 1);
    if (n > m) usage("--structure N:M needs N <= M, got '" + text + "'");
    s.what = surgeon::structure::n_m;
    s.pattern = surgeon::nm_pattern{static_cast<index_t>(n), static_cast<index_t>(m)};
    return s;
  }
  usage("unknown --structure '" + text + "'");
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

struct options {
  std::string model_path, calib_path, out_path, report_path, tokenizer_path;
  std::vector<std::string> eval_paths;  ///< --eval, in order (at least one)
  surgeon::method how = surgeon::method::llm_surgeon;
  structure_choice shape;
  double density = 0.5;
  long long shots = 0, nsamples = 128, seqlen = 0, eval_windows = 32, max_correlate = 2000, group_size = 0;
  unsigned long long seed = 0;
  std::optional<double> damp_g_flag, damp_a_flag;  ///< --damp-g, --damp-a as given
  double damp_g = 0.0, damp_a = 0.0;               ///< resolved: the flags, else surgeon::default_damping
  surgeon::pcg_options pcg{};
  surgeon::update_kind update = surgeon::update_kind::whole_mask;
  std::string update_name = "whole-mask";
  bool update_set = false;  ///< --update (or an alias) was given
  bool eval_every_shot = false, reseed_per_shot = true;
  int sequential_flag = -1;  ///< -1: not given; 0: --one-pass; 1: --sequential
  bool sequential = false;   ///< resolved: --sequential, or surgeon::recommended_sequential
  bool costs_on_host = false;
  double memory_budget_gb = -1.0;  ///< -1: auto; 0: no limit
  long long update_threads = 0;    ///< 0: auto (the hardware threads)
  bool update_threads_set = false;
  surgeon::io::ggml_type out_type = surgeon::io::ggml_type::f32;
  std::string out_type_name = "f32";
  int cuda_device = -1;  ///< -1: the CPU backend
  std::string device_name = "cpu";
};

/// "cpu" → -1, "cuda" → 0, "cuda:N" → N.
int parse_device(const std::string& text) {
  if (text == "cpu") return -1;
  if (text == "cuda") return 0;
  if (text.rfind("cuda:", 0) == 0)
    return static_cast<int>(parse_integer("--device cuda:N", text.substr(5), 0));
  usage("--device must be cpu, cuda or cuda:N, got '" + text + "'");
}

/// --update whole-mask | chunked | none (and its aliases); a second, different choice is an error.
void set_update(options& o, const std::string& value) {
  surgeon::update_kind kind = surgeon::update_kind::whole_mask;
  if (value == "chunked")
    kind = surgeon::update_kind::chunked;
  else if (value == "none")
    kind = surgeon::update_kind::none;
  else if (value != "whole-mask")
    usage("--update must be whole-mask, chunked or none, got '" + value + "'");
  if (o.update_set && o.update != kind)
    usage("--update given twice with different values (or with an alias)");
  o.update = kind;
  o.update_name = value;
  o.update_set = true;
}

options parse_flags(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage("prunes a Llama-family model");
    if (flag == "--whole-mask" || flag == "--no-update") {  // aliases of --update whole-mask | none
      set_update(o, flag == "--whole-mask" ? "whole-mask" : "none");
      continue;
    }
    if (flag == "--sequential" || flag == "--one-pass") {
      const int choice = flag == "--sequential" ? 1 : 0;
      if (o.sequential_flag >= 0 && o.sequential_flag != choice)
        usage("--sequential and --one-pass exclude each other");
      o.sequential_flag = choice;
      continue;
    }
    if (flag == "--eval-every-shot") {
      o.eval_every_shot = true;
      continue;
    }
    if (flag == "--reseed-per-shot" || flag == "--same-windows") {
      o.reseed_per_shot = flag == "--reseed-per-shot";
      continue;
    }
    if (flag == "--costs-on-host") {
      o.costs_on_host = true;
      continue;
    }
    if (flag.rfind("--", 0) != 0) usage("unexpected argument '" + flag + "'");
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--model")
      o.model_path = value;
    else if (flag == "--calib")
      o.calib_path = value;
    else if (flag == "--eval")
      o.eval_paths.push_back(value);
    else if (flag == "--out")
      o.out_path = value;
    else if (flag == "--report")
      o.report_path = value;
    else if (flag == "--tokenizer")
      o.tokenizer_path = value;
    else if (flag == "--method")
      o.how = parse_method(value);
    else if (flag == "--structure")
      o.shape = parse_structure(value);
    else if (flag == "--density")
      o.density = parse_real(flag, value);
    else if (flag == "--shots")
      o.shots = value == "auto" ? 0 : parse_integer(flag, value, 1);
    else if (flag == "--update")
      set_update(o, value);
    else if (flag == "--nsamples")
      o.nsamples = parse_integer(flag, value, 1);
    else if (flag == "--seqlen")
      o.seqlen = parse_integer(flag, value, 2);
    else if (flag == "--seed")
      o.seed = static_cast<unsigned long long>(parse_integer(flag, value, 0));
    else if (flag == "--damp-g")
      o.damp_g_flag = parse_real(flag, value);
    else if (flag == "--damp-a")
      o.damp_a_flag = parse_real(flag, value);
    else if (flag == "--max-correlate")
      o.max_correlate = parse_integer(flag, value, 1);
    else if (flag == "--pcg-tol")
      o.pcg.tolerance = parse_real(flag, value);
    else if (flag == "--pcg-iterations")
      o.pcg.max_iterations = static_cast<int>(parse_integer(flag, value, 0));
    else if (flag == "--pcg-form") {
      if (value == "kronecker")
        o.pcg.form = surgeon::pcg_form::kept_kronecker;
      else if (value == "sweep")
        o.pcg.form = surgeon::pcg_form::removed_sweep;
      else
        usage("--pcg-form must be kronecker or sweep");
    } else if (flag == "--pcg-float")
      o.pcg.float_products = parse_integer(flag, value, 0) != 0;
    else if (flag == "--eval-windows")
      o.eval_windows = parse_integer(flag, value, 1);
    else if (flag == "--group-size")
      o.group_size = parse_integer(flag, value, 0);
    else if (flag == "--update-threads") {
      o.update_threads = value == "auto" ? 0 : parse_integer(flag, value, 1);
      o.update_threads_set = true;
    } else if (flag == "--memory-budget") {
      if (value == "auto") {
        o.memory_budget_gb = -1.0;
      } else {
        o.memory_budget_gb = parse_real(flag, value);
        if (o.memory_budget_gb < 0.0) usage("--memory-budget must be auto, 0 or a positive number of GB");
      }
    } else if (flag == "--device") {
      o.cuda_device = parse_device(value);
      o.device_name = value == "cuda" ? "cuda:0" : value;
    } else if (flag == "--out-type") {
      if (value == "f32")
        o.out_type = surgeon::io::ggml_type::f32;
      else if (value == "f16")
        o.out_type = surgeon::io::ggml_type::f16;
      else
        usage("--out-type must be f32 or f16, got '" + value + "'");
      o.out_type_name = value;
    } else
      usage("unknown option " + flag);
  }
  if (o.model_path.empty() || o.calib_path.empty() || o.eval_paths.empty() || o.out_path.empty())
    usage("--model, --calib, --eval and --out are required");
  if (!(o.density > 0.0 && o.density <= 1.0))
    usage(fmt::format("--density must be in (0, 1], got {}", o.density));
  o.damp_g = o.damp_g_flag.value_or(surgeon::default_damping(o.how).g);
  o.damp_a = o.damp_a_flag.value_or(surgeon::default_damping(o.how).a);
  if (!(o.damp_g > 0.0) || !(o.damp_a > 0.0)) usage("--damp-g and --damp-a must be positive");
  if (o.shots > 10000) usage("--shots is too large");
  if (o.costs_on_host && o.cuda_device < 0) usage("--costs-on-host needs --device cuda");
  const bool layer_local = o.how == surgeon::method::sparsegpt || o.how == surgeon::method::wanda;
  if (o.sequential_flag == 1 && !layer_local &&
      !(o.how == surgeon::method::llm_surgeon && o.shape.what != surgeon::structure::rows_columns))
    usage(
        "--sequential needs --method sparsegpt, wanda, or llm-surgeon with element masks (unstructured, "
        "N:M); the others take one global threshold from one pass");
  if (o.sequential_flag == 1 && o.group_size != 0)
    usage("--sequential makes its own groups; drop --group-size");
  o.sequential =
      o.sequential_flag == 1 ||
      (o.sequential_flag < 0 && o.group_size == 0 && surgeon::recommended_sequential(o.how, o.shape.what) &&
       !(o.how == surgeon::method::llm_surgeon && o.update == surgeon::update_kind::none));
  if (o.update_threads_set && o.cuda_device >= 0) usage("--update-threads applies to --device cpu");
#if !defined(SURGEON_PRUNE_WITH_CUDA)
  if (o.cuda_device >= 0)
    usage("--device " + o.device_name +
          ": this surgeon-prune was built without the CUDA backend (configure with the CUDA toolkit, "
          "-DSURGEON_WITH_CUDA=ON)");
#endif
  const bool gguf_in = fs::path(o.model_path).extension() == ".gguf";
  const bool gguf_out = fs::path(o.out_path).extension() == ".gguf";
  if (gguf_in != gguf_out)
    usage(gguf_in ? "a GGUF model is written as GGUF: --out must end in .gguf"
                  : "a llama2.c model is written as llama2.c: --out must not end in .gguf");
  if (same_file(o.model_path, o.out_path)) {
    fmt::print(stderr, "surgeon-prune: refusing to overwrite the input model {} (--out {})\n", o.model_path,
               o.out_path);
    std::exit(2);
  }
  if (!o.report_path.empty() &&
      (same_file(o.model_path, o.report_path) || same_file(o.out_path, o.report_path)))
    usage("--report must differ from --model and --out");
  return o;
}

/// The report's JSON (prune_report.hpp): keys in the order they are set.
using json = llama::report_json;

// "phases calibration=… curvature=… …" in seconds, for one shot or summed over shots.
std::string phases_line(const surgeon::shot_timings& t) {
  return fmt::format(
      "phases calibration={:.2f} curvature={:.2f} costs={:.2f} selection={:.2f} update={:.2f} "
      "evaluation={:.2f}",
      t.calibration, t.curvature, t.costs, t.selection, t.update, t.evaluation);
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse_flags(argc, argv);
  return llama::tool::run_guarded("surgeon-prune", [&] {
    const auto start = std::chrono::steady_clock::now();
    // Everything that can be checked before the work starts: a bad path or length costs seconds,
    // not a whole pruning run.
    llama::tool::check_readable("--model", o.model_path);
    if (!o.tokenizer_path.empty()) llama::tool::check_readable("--tokenizer", o.tokenizer_path);
    llama::tool::check_readable("--calib", o.calib_path);
    for (const std::string& path : o.eval_paths) llama::tool::check_readable("--eval", path);
    llama::tool::check_writable("--out", o.out_path);
    if (!o.report_path.empty()) llama::tool::check_writable("--report", o.report_path);
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

    // Dense perplexity of every evaluation text.
    std::vector<llama::perplexity_result> dense_results;
    for (std::size_t k = 0; k < evals.size(); ++k) {
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
    const llama::perplexity_result& dense = dense_results.front();
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
    // The working-memory budget: auto is 80 % of what is free where the pruning runs.
    std::size_t free_bytes = 0;
    if (o.memory_budget_gb < 0.0) {
#if defined(SURGEON_PRUNE_WITH_CUDA)
      free_bytes = o.cuda_device >= 0 ? llama::cuda_free_bytes(o.cuda_device) : available_host_bytes();
#else
      free_bytes = available_host_bytes();
#endif
      po.memory_budget = free_bytes / 10 * 8;
    } else {
      po.memory_budget = static_cast<std::size_t>(o.memory_budget_gb * 1e9);
    }

    llama::calibration_options co;
    co.nsamples = static_cast<index_t>(o.nsamples);
    co.seqlen = seqlen;
    co.seed = o.seed;
    co.reseed_per_shot = o.reseed_per_shot;
    llama::evaluation_options eo;
    eo.seqlen = seqlen;
    eo.max_windows = static_cast<index_t>(o.eval_windows);
    eo.when = o.eval_every_shot ? llama::evaluate_when::every_shot : llama::evaluate_when::last_shot;
    eo.last_shot = *po.shots;
    std::vector<const std::vector<std::int32_t>*> eval_texts;
    for (const std::vector<std::int32_t>& text : evals) eval_texts.push_back(&text);
    llama::prune_adapter adapter(m, runtime, calib, eval_texts, co, eo);

    {
      const std::vector<surgeon::prunable_matrix> matrices = adapter.matrices();
      const int groups = surgeon::choose_group_size(matrices, po);  // throws when nothing fits
      fmt::print("memory_budget={:.1f} MB{} group_size={}{} working_memory_estimate={:.1f} MB\n",
                 static_cast<double>(po.memory_budget) / 1e6, o.memory_budget_gb < 0.0 ? " (auto)" : "",
                 groups, po.sequential ? " (sequential)" : "",
                 static_cast<double>(surgeon::estimate_working_bytes(matrices, po, groups)) / 1e6);
      std::fflush(stdout);
    }
    const int update_threads = o.update_threads > 0
                                   ? static_cast<int>(o.update_threads)
                                   : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (o.cuda_device < 0) fmt::print("update_threads={}\n", update_threads);
    llama::progress_bar bar("prune", *po.shots);
    bar.update(0, fmt::format("{} {} density {}", surgeon::to_string(o.how), o.shape.name, o.density));
    const auto on_shot = [&](const surgeon::shot_report& r) {
      const std::string line = fmt::format(
          "shot {}/{} target_sparsity={:.4f} achieved_sparsity={:.4f} seconds={:.2f} lambda_g={:.3g} "
          "lambda_a={:.3g} escalations={} update_iterations={} max_update_residual={:.3g}{}\n  {}",
          r.shot, *po.shots, r.target_sparsity, r.achieved_sparsity, r.seconds, r.max_lambda_g,
          r.max_lambda_a, r.escalations, r.update_iterations, r.max_update_residual,
          r.evaluation && std::isfinite(*r.evaluation) ? fmt::format(" ppl={:.6f}", *r.evaluation) : "",
          phases_line(r.timings));
      if (tty)
        bar.update(r.shot, fmt::format("sparsity {:.4f} ({:.1f} s)", r.achieved_sparsity, r.seconds));
      else
        fmt::print(stderr, "{}\n", line);
    };
    std::vector<surgeon::shot_report> reports;
    if (o.cuda_device < 0) {
      surgeon::cpu::prune_backend_options bo;
      bo.update_threads = update_threads;
      reports = surgeon::prune(adapter, po, surgeon::cpu::prune_backend(bo), on_shot);
    } else {
#if defined(SURGEON_PRUNE_WITH_CUDA)
      // The pruning runs in cuda_prune.cu (nvcc, no Eigen); the adapter crosses as any_adapter.
      surgeon::any_adapter erased(adapter);
      reports = llama::prune_on_cuda(o.cuda_device, erased, po, o.costs_on_host, on_shot);
#endif
    }
    const std::vector<llama::perplexity_result> pruned_results = adapter.last_perplexities();
    const double ppl_pruned = adapter.last_perplexity().ppl;
    const counts c = count_parameters(m);
    const double achieved_density = 1.0 - static_cast<double>(c.zeros) / static_cast<double>(c.prunable);

    // The pruned model.
    llama::save_model(loaded.format, o.model_path, o.out_path, m, o.out_type);
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
      j["out_type"] = gguf ? o.out_type_name : "f32";
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
      const llama::calibration_counts& work = adapter.calibration_work();
      j["calibration"] = {{"passes", work.passes},
                          {"forward_batches", work.forward_batches},
                          {"backward_batches", work.backward_batches},
                          {"blocks", work.blocks},
                          {"resumed_batches", work.resumed_batches}};
      j["seconds"] = seconds;
      j["peak_rss_mb"] = peak_rss_mb();
      j["per_shot"] = json::array();
      for (const surgeon::shot_report& r : reports) j["per_shot"].push_back(llama::shot_json(r));
      llama::write_report(o.report_path, j);
    }
    fmt::print(
        "method={} structure={} target_density={} shots={} nsamples={} seqlen={} seed={} device={} "
        "seconds={:.2f} peak_rss_mb={:.1f}\n",
        surgeon::to_string(o.how), o.shape.name, o.density, *po.shots, o.nsamples, seqlen, o.seed,
        o.device_name, seconds, peak_rss_mb());
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
      all.evaluation += r.timings.evaluation;
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
}
