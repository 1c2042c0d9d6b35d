// surgeon-ppl: perplexity of a Llama-family model on a text file (METHOD.md §8).
//
//   surgeon-ppl --model PATH (.gguf | llama2.c .bin) --text FILE --seqlen T [--max-windows K] (all)
//               [--batch B] (4) [--tokenizer PATH]   (--help lists them with their defaults)
//
// The last line of the output is `ppl=<value>` at full precision. Exit status: 0 done (or --help); 2 bad
// flags, an unreadable input, --seqlen beyond the model's context or a text shorter than one window; 1 an
// error while running (out of memory included), with a one-line message on stderr.
#include <surgeon/io/detail/bytes.hpp>
#include <surgeon/io/detail/file.hpp>

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include "llama/cli.hpp"
#include "llama/load.hpp"
#include "llama/perplexity.hpp"
#include "llama/progress.hpp"
#include "llama/runtime.hpp"
#include "llama/tool_checks.hpp"

int main(int argc, char** argv) {
  namespace cli = surgeon::llama::cli;
  std::string model_path, text_path, tokenizer_path;
  long long seqlen = 0, max_windows = 0, batch = 4;
  CLI::App app("Perplexity of a Llama-family model on a text file (METHOD.md §8).", "surgeon-ppl");
  cli::set_conventions(app);
  app.add_option("--model", model_path, "the model: .gguf, or a llama2.c .bin")
      ->required()
      ->type_name("PATH");
  app.add_option("--text", text_path, "the text to score")->required()->type_name("FILE");
  app.add_option("--seqlen", seqlen, "tokens per window")
      ->required()
      ->transform(cli::integer_at_least(1))
      ->default_str("");
  app.add_option("--max-windows", max_windows, "at most this many windows")
      ->transform(cli::integer_at_least(1))
      ->default_str("all");
  app.add_option("--batch", batch, "windows per forward pass")->transform(cli::integer_at_least(1));
  app.add_option("--tokenizer", tokenizer_path,
                 "llama2.c tokenizer (of a llama2.c model, or of a GGUF that has none)")
      ->type_name("PATH")
      ->default_str("tok<vocab>.bin beside --model");
  std::string tokens_path;
  app.add_option("--dump-tokens", tokens_path,
                 "also write the text's token ids (int32, little-endian) to FILE, so that another "
                 "implementation can score the same windows (tests/llama/llama_cpp_ppl.cpp)")
      ->type_name("FILE");
  if (const std::optional<int> status = cli::parse(app, argc, argv)) return *status;
  namespace tool = surgeon::llama::tool;
  return tool::run_guarded("surgeon-ppl", [&] {
    const auto start = std::chrono::steady_clock::now();
    tool::check_readable("--model", model_path);
    tool::check_readable("--text", text_path);
    if (!tokenizer_path.empty()) tool::check_readable("--tokenizer", tokenizer_path);
    if (!tokens_path.empty()) tool::check_writable("--dump-tokens", tokens_path);
    const surgeon::llama::loaded_model loaded = surgeon::llama::load_model(model_path, tokenizer_path);
    const auto& cfg = loaded.weights.cfg;
    tool::check_context(static_cast<surgeon::index_t>(seqlen), cfg);
    std::ifstream in(text_path, std::ios::binary);
    if (!in) throw tool::bad_input("--text " + text_path + ": cannot read");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::vector<std::int32_t> ids = loaded.vocab->encode(text);
    tool::check_text_length("--text", text_path, ids.size(), static_cast<surgeon::index_t>(seqlen));
    if (!tokens_path.empty()) {
      surgeon::io::detail::write_file_atomically(tokens_path, [&](const auto& write) {
        for (const std::int32_t id : ids) {
          std::uint8_t le[4];
          surgeon::io::detail::store<std::int32_t>(le, id);  // the host is little-endian (bytes.hpp)
          write(le, 4);
        }
      });
    }
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
