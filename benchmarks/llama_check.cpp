// llama-check: what benchmarks/smollm2.sh compares with PyTorch.
//
//   llama-check --model PATH --text FILE --batch B --seq T [--out FILE.safetensors] [--repeat K]
//               [--layers 0,15,29]
//
// Tokenizes the start of FILE, cuts B sequences of T tokens, runs forward + backward (mean loss)
// and, with --out, writes tokens, logits, the loss and, for the listed blocks, every linear layer's
// input and output gradient. With --repeat K, times K forward + backward passes and K forward-only
// passes with input hooks (alternating) and prints the best tokens/s of each ("fwd_bwd_tokens_per_s=",
// "fwd_tokens_per_s=") and their ratio ("fwd_bwd_over_fwd=").
//
// Exit status: 0 done; 2 a bad flag, an unreadable input or a text shorter than --batch × --seq
// tokens; 1 any other error, with a one-line message on stderr.
#include <surgeon/io/safetensors.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>

#include "llama/cli.hpp"
#include "llama/load.hpp"
#include "llama/runtime.hpp"
#include "llama/tool_checks.hpp"

int main(int argc, char** argv) {
  namespace cli = surgeon::llama::cli;
  namespace tool = surgeon::llama::tool;
  std::string model_path, text_path, out_path, layer_list = "0";
  long long batch = 1, seq = 128, repeat = 0;
  CLI::App app(
      "What benchmarks/smollm2.sh compares with PyTorch: forward + backward on the start of a "
      "text, written out (--out) and timed (--repeat).",
      "llama-check");
  cli::set_conventions(app);
  app.add_option("--model", model_path, "the model: .gguf, or a llama2.c .bin")
      ->required()
      ->type_name("PATH");
  app.add_option("--text", text_path, "the text")->required()->type_name("FILE");
  app.add_option("--batch", batch, "sequences")->transform(cli::integer_at_least(1));
  app.add_option("--seq", seq, "tokens per sequence")->transform(cli::integer_at_least(2));
  app.add_option("--out", out_path, "tokens, logits, loss and the listed blocks' inputs and output gradients")
      ->type_name("FILE.safetensors");
  app.add_option("--layers", layer_list, "comma-separated blocks whose tensors --out holds")
      ->type_name("L[,L...]")
      ->check(CLI::Validator(
          [](std::string& text) {
            std::stringstream list(text);
            for (std::string item; std::getline(list, item, ',');) {
              const std::optional<long long> layer = cli::read_integer(item);
              if (!layer || *layer < 0) return "needs block numbers >= 0, got '" + item + "'";
            }
            return std::string();
          },
          ""));
  app.add_option("--repeat", repeat, "timed passes (0: none)")->transform(cli::integer_at_least(0));
  if (const std::optional<int> status = cli::parse(app, argc, argv)) return *status;
  return tool::run_guarded("llama-check", [&] {
    tool::check_readable("--model", model_path);
    tool::check_readable("--text", text_path);
    if (!out_path.empty()) tool::check_writable("--out", out_path);
    const surgeon::llama::loaded_model loaded = surgeon::llama::load_model(model_path);
    std::ifstream in(text_path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::int32_t> ids =
        loaded.vocab->encode(text.substr(0, std::min<std::size_t>(text.size(), 1u << 20)));
    if (static_cast<long long>(ids.size()) < batch * seq)
      throw tool::bad_input(fmt::format("--text {}: {} tokens do not fill --batch {} of --seq {}", text_path,
                                        ids.size(), batch, seq));
    ids.resize(static_cast<std::size_t>(batch * seq));
    surgeon::llama::runtime runtime(loaded.weights);

    if (!out_path.empty()) {
      std::set<long long> layers;
      std::stringstream list(layer_list);
      for (std::string item; std::getline(list, item, ',');) layers.insert(*cli::read_integer(item));
      surgeon::io::safetensors_writer writer;
      std::map<std::string, std::vector<float>> tensors;
      surgeon::llama::hooks hooks;
      auto wanted = [&](const std::string& name) {
        const long long layer = std::stoll(name.substr(4, name.find('.', 4) - 4));
        return layers.count(layer) != 0;
      };
      hooks.input = [&](const std::string& key, surgeon::host_matrix_view<const float> x) {
        if (wanted(key)) tensors[key + ".input"].assign(x.data(), x.data() + x.size());
      };
      hooks.output_grad = [&](const std::string& layer, surgeon::host_matrix_view<const float> g) {
        if (wanted(layer)) tensors[layer + ".output_grad"].assign(g.data(), g.data() + g.size());
      };
      surgeon::llama::backward_options options;
      options.per_token_gradients = false;
      const double loss = runtime.backward(ids, batch, seq, hooks, options);
      const auto logits = runtime.logits(ids, batch, seq);
      writer.add<std::int32_t>("tokens", {batch * seq}, ids.data());
      writer.add<float>("logits", {logits.rows(), logits.cols()}, logits.data());
      const double loss_value[1] = {loss};
      writer.add<double>("loss", {1}, loss_value);
      for (const auto& [name, values] : tensors) {
        writer.add<float>(name, {batch * seq, static_cast<surgeon::index_t>(values.size()) / (batch * seq)},
                          values.data());
      }
      writer.write(out_path);
      fmt::print("loss={:.9f} tensors={} out={}\n", loss, tensors.size() + 3, out_path);
    }
    if (repeat > 0) {
      // A calibration pass with gradients (forward + backward, every input and output gradient
      // handed to a hook) against one without (runtime::forward, the inputs alone), alternating so
      // that both see the same machine load.
      surgeon::llama::hooks with_gradients;
      with_gradients.input = [](const std::string&, surgeon::host_matrix_view<const float>) {};
      with_gradients.output_grad = [](const std::string&, surgeon::host_matrix_view<const float>) {};
      surgeon::llama::hooks inputs_only;
      inputs_only.input = with_gradients.input;
      double best = 1e300;
      double best_forward = 1e300;
      const auto seconds_of = [](auto&& pass) {
        const auto start = std::chrono::steady_clock::now();
        pass();
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      };
      for (long long r = 0; r < repeat; ++r) {
        best = std::min(best, seconds_of([&] { runtime.backward(ids, batch, seq, with_gradients); }));
        best_forward =
            std::min(best_forward, seconds_of([&] { runtime.forward(ids, batch, seq, inputs_only); }));
      }
      fmt::print("batch={} seq={} best_seconds={:.3f} fwd_bwd_tokens_per_s={:.1f}\n", batch, seq, best,
                 static_cast<double>(batch * seq) / best);
      fmt::print(
          "batch={} seq={} best_forward_seconds={:.3f} fwd_tokens_per_s={:.1f} fwd_bwd_over_fwd={:.2f}\n",
          batch, seq, best_forward, static_cast<double>(batch * seq) / best_forward, best / best_forward);
    }
    return 0;
  });
}
