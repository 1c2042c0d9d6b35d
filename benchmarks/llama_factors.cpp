// llama-factors: one LLM Surgeon calibration pass of a Llama-family model, written out layer by
// layer, so that pruning a real layer can be timed and compared on byte-identical inputs (by
// `layer-prune` here, or by any other implementation that reads safetensors).
//
//   llama-factors --model PATH --text FILE --out FILE.safetensors --layers blk.5.ffn_up,blk.5.attn_q
//                 [--nsamples N] (32) [--seqlen T] (256) [--seed S] (0)
//
// Exit status: 0 done; 2 a bad flag, an unreadable input, an unwritable --out or an unknown layer;
// 1 any other error, with a one-line message on stderr.
//
// The windows are those of `surgeon-prune --nsamples N --seqlen T --seed S` (the same offsets,
// the same empirical-Fisher backward pass). For every listed matrix NAME the file holds
//   NAME.weight  f32 [R, C]  the dense weights
//   NAME.a       f64 [C, C]  A = mean of x xᵀ over the calibration tokens (its input's factor)
//   NAME.g       f64 [R, R]  G = mean of g gᵀ (the output gradients of the summed token losses)
// and the metadata model, text, nsamples, seqlen, seed and tokens.
#include <surgeon/cpu/kfac.hpp>
#include <surgeon/io/safetensors.hpp>
#include <surgeon/kfac.hpp>

#include <fmt/format.h>

#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "llama/cli.hpp"
#include "llama/load.hpp"
#include "llama/prune_adapter.hpp"
#include "llama/runtime.hpp"
#include "llama/tool_checks.hpp"

int main(int argc, char** argv) {
  namespace cli = surgeon::llama::cli;
  namespace tool = surgeon::llama::tool;
  std::string model_path, text_path, out_path, layer_list;
  long long nsamples = 32, seqlen = 256, seed = 0;
  CLI::App app(
      "One LLM Surgeon calibration pass of a Llama-family model, written out layer by layer "
      "(W, A and G of each listed matrix) for layer-prune.",
      "llama-factors");
  cli::set_conventions(app);
  app.add_option("--model", model_path, "the model: .gguf, or a llama2.c .bin")
      ->required()
      ->type_name("PATH");
  app.add_option("--text", text_path, "calibration text")->required()->type_name("FILE");
  app.add_option("--out", out_path, "the factors")->required()->type_name("FILE.safetensors");
  app.add_option("--layers", layer_list, "comma-separated matrices, e.g. blk.5.ffn_up,blk.5.attn_q")
      ->required()
      ->type_name("NAME[,NAME...]");
  app.add_option("--nsamples", nsamples, "calibration windows")->transform(cli::integer_at_least(1));
  app.add_option("--seqlen", seqlen, "tokens per window")->transform(cli::integer_at_least(2));
  app.add_option("--seed", seed, "seed of the windows")->transform(cli::integer_at_least(0));
  if (const std::optional<int> status = cli::parse(app, argc, argv)) return *status;
  return tool::run_guarded("llama-factors", [&] {
    tool::check_readable("--model", model_path);
    tool::check_readable("--text", text_path);
    tool::check_writable("--out", out_path);
    std::set<std::string> wanted;
    std::stringstream list(layer_list);
    for (std::string name; std::getline(list, name, ',');) wanted.insert(name);

    surgeon::llama::loaded_model loaded = surgeon::llama::load_model(model_path);
    surgeon::llama::model& m = loaded.weights;
    std::ifstream in(text_path, std::ios::binary);
    if (!in) throw tool::bad_input("--text " + text_path + ": cannot read");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::vector<std::int32_t> tokens = loaded.vocab->encode(text);

    surgeon::cpu::context cpu;
    surgeon::factor_bank<double> bank;
    std::map<std::string, surgeon::llama::model::linear_ref> layers;
    for (const surgeon::llama::model::linear_ref& ref : m.linear_layers()) {
      if (wanted.count(ref.name) == 0) continue;
      layers.emplace(ref.name, ref);
      bank.define("a:" + ref.input_key, ref.cols);
      bank.define("g:" + ref.name, ref.rows);
    }
    for (const std::string& name : wanted) {
      if (layers.count(name) == 0)
        throw tool::bad_input("--layers: no linear layer named '" + name + "' (e.g. blk.0.ffn_up)");
    }

    // The windows and backward passes of surgeon-prune's calibration (prune_adapter::calibrate).
    const auto offsets = surgeon::llama::calibration_offsets(
        static_cast<surgeon::index_t>(tokens.size()), seqlen, nsamples, static_cast<std::uint64_t>(seed));
    surgeon::llama::runtime runtime(m);
    surgeon::llama::hooks h;
    h.input = [&](const std::string& key, surgeon::host_matrix_view<const float> x) {
      if (bank.contains("a:" + key)) bank.add(cpu, "a:" + key, x);
    };
    h.output_grad = [&](const std::string& name, surgeon::host_matrix_view<const float> gy) {
      if (bank.contains("g:" + name)) bank.add(cpu, "g:" + name, gy);
    };
    const surgeon::llama::calibration_options defaults;
    std::vector<std::int32_t> batch;
    for (long long first = 0; first < nsamples; first += defaults.batch) {
      const long long count = std::min<long long>(defaults.batch, nsamples - first);
      batch.clear();
      for (long long k = first; k < first + count; ++k) {
        const auto begin = tokens.begin() + offsets[static_cast<std::size_t>(k)];
        batch.insert(batch.end(), begin, begin + seqlen);
      }
      surgeon::llama::backward_options options = defaults.backward;
      options.seed = defaults.backward.seed + static_cast<std::uint64_t>(first);
      runtime.backward(batch, count, seqlen, h, options);
    }

    surgeon::io::safetensors_writer writer;
    writer.set_metadata("model", model_path);
    writer.set_metadata("text", text_path);
    writer.set_metadata("nsamples", std::to_string(nsamples));
    writer.set_metadata("seqlen", std::to_string(seqlen));
    writer.set_metadata("seed", std::to_string(seed));
    writer.set_metadata("tokens", std::to_string(nsamples * seqlen));
    for (const auto& [name, ref] : layers) {
      writer.add<float>(name + ".weight", {ref.rows, ref.cols}, ref.weight->data());
      const surgeon::host_matrix<double> a = bank.at("a:" + ref.input_key).mean();
      const surgeon::host_matrix<double> g = bank.at("g:" + name).mean();
      writer.add<double>(name + ".a", {ref.cols, ref.cols}, a.data());
      writer.add<double>(name + ".g", {ref.rows, ref.rows}, g.data());
    }
    writer.write(out_path);
    fmt::print("wrote {} layers of {} ({} tokens) to {}\n", layers.size(), model_path, nsamples * seqlen,
               out_path);
    return 0;
  });
}
