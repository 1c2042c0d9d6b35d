// surgeon-ppl: perplexity of a Llama-family model on a text file (METHOD.md §8).
//
//   surgeon-ppl --model PATH (.gguf | llama2.c .bin) --text FILE --seqlen T [--max-windows K]
//               [--batch B] [--tokenizer PATH]
//
// The last line of the output is `ppl=<value>` at full precision. Exit status: 0 done; 2 bad flags,
// an unreadable input, --seqlen beyond the model's context or a text shorter than one window; 1 an
// error while running (out of memory included), with a one-line message on stderr.
#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "llama/load.hpp"
#include "llama/perplexity.hpp"
#include "llama/progress.hpp"
#include "llama/runtime.hpp"
#include "llama/tool_checks.hpp"

namespace {

[[noreturn]] void usage(const std::string& problem) {
  fmt::print(stderr,
             "surgeon-ppl: {}\nusage: surgeon-ppl --model PATH --text FILE --seqlen T [--max-windows K] "
             "[--batch B] [--tokenizer PATH]\n",
             problem);
  std::exit(2);
}

long long parse_positive(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || value <= 0)
    usage(flag + " needs a positive integer, got '" + text + "'");
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, text_path, tokenizer_path;
  long long seqlen = 0, max_windows = 0, batch = 4;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage("perplexity of a model on a text");
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--model")
      model_path = value;
    else if (flag == "--text")
      text_path = value;
    else if (flag == "--tokenizer")
      tokenizer_path = value;
    else if (flag == "--seqlen")
      seqlen = parse_positive(flag, value);
    else if (flag == "--max-windows")
      max_windows = parse_positive(flag, value);
    else if (flag == "--batch")
      batch = parse_positive(flag, value);
    else
      usage("unknown option " + flag);
  }
  if (model_path.empty() || text_path.empty() || seqlen == 0)
    usage("--model, --text and --seqlen are required");
  namespace tool = surgeon::llama::tool;
  return tool::run_guarded("surgeon-ppl", [&] {
    const auto start = std::chrono::steady_clock::now();
    tool::check_readable("--model", model_path);
    tool::check_readable("--text", text_path);
    if (!tokenizer_path.empty()) tool::check_readable("--tokenizer", tokenizer_path);
    const surgeon::llama::loaded_model loaded = surgeon::llama::load_model(model_path, tokenizer_path);
    const auto& cfg = loaded.weights.cfg;
    tool::check_context(static_cast<surgeon::index_t>(seqlen), cfg);
    std::ifstream in(text_path, std::ios::binary);
    if (!in) throw tool::bad_input("--text " + text_path + ": cannot read");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::vector<std::int32_t> ids = loaded.vocab->encode(text);
    tool::check_text_length("--text", text_path, ids.size(), static_cast<surgeon::index_t>(seqlen));
    fmt::print("model={} layers={} dim={} vocab={} text={} bytes={} tokens={}\n", model_path, cfg.n_layers,
               cfg.dim, cfg.vocab_size, text_path, text.size(), ids.size());
    surgeon::llama::runtime runtime(loaded.weights);
    surgeon::index_t windows = static_cast<surgeon::index_t>(ids.size()) / seqlen;
    if (max_windows > 0) windows = std::min<surgeon::index_t>(windows, max_windows);
    surgeon::llama::progress_bar bar("perplexity", windows);
    const auto result =
        surgeon::llama::perplexity(runtime, ids, seqlen, max_windows, batch,
                                   [&](surgeon::index_t done, surgeon::index_t, double running) {
                                     bar.update(done, fmt::format("ppl {:.4f}", running));
                                   });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("windows={} seqlen={} mean_loss={:.6f} seconds={:.2f}\n", result.windows, seqlen,
               result.mean_loss, seconds);
    fmt::print("ppl={:.17g}\n", result.ppl);
    return 0;
  });
}
