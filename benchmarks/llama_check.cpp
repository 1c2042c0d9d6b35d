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
#include <surgeon/io/safetensors.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "llama/load.hpp"
#include "llama/runtime.hpp"

namespace {

[[noreturn]] void usage(const std::string& problem) {
  fmt::print(stderr,
             "llama-check: {}\nusage: llama-check --model PATH --text FILE --batch B --seq T [--out FILE] "
             "[--repeat K] [--layers 0,15,29]\n",
             problem);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, text_path, out_path, layer_list = "0";
  long batch = 1, seq = 128, repeat = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--model")
      model_path = value;
    else if (flag == "--text")
      text_path = value;
    else if (flag == "--out")
      out_path = value;
    else if (flag == "--layers")
      layer_list = value;
    else if (flag == "--batch")
      batch = std::stol(value);
    else if (flag == "--seq")
      seq = std::stol(value);
    else if (flag == "--repeat")
      repeat = std::stol(value);
    else
      usage("unknown option " + flag);
  }
  if (model_path.empty() || text_path.empty() || batch < 1 || seq < 2)
    usage("--model and --text are required");
  try {
    const surgeon::llama::loaded_model loaded = surgeon::llama::load_model(model_path);
    std::ifstream in(text_path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::int32_t> ids =
        loaded.vocab->encode(text.substr(0, std::min<std::size_t>(text.size(), 1u << 20)));
    if (static_cast<long>(ids.size()) < batch * seq) usage("text too short");
    ids.resize(static_cast<std::size_t>(batch * seq));
    surgeon::llama::runtime runtime(loaded.weights);

    if (!out_path.empty()) {
      std::set<long> layers;
      std::stringstream list(layer_list);
      for (std::string item; std::getline(list, item, ',');) layers.insert(std::stol(item));
      surgeon::io::safetensors_writer writer;
      std::map<std::string, std::vector<float>> tensors;
      surgeon::llama::hooks hooks;
      auto wanted = [&](const std::string& name) {
        const long layer = std::stol(name.substr(4, name.find('.', 4) - 4));
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
      for (long r = 0; r < repeat; ++r) {
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
  } catch (const surgeon::error& e) {
    fmt::print(stderr, "llama-check: {}\n", e.what());
    return 1;
  }
  return 0;
}
