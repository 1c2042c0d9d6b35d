// llama-factors: one LLM Surgeon calibration pass of a Llama-family model, written out layer by
// layer, so that pruning a real layer can be timed and compared on byte-identical inputs (by
// `layer-prune` here, or by any other implementation that reads safetensors).
//
//   llama-factors --model PATH --text FILE --out FILE.safetensors --layers blk.5.ffn_up,blk.5.attn_q
//                 [--nsamples N] (32) [--seqlen T] (256) [--seed S] (0)
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

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "llama/load.hpp"
#include "llama/prune_adapter.hpp"
#include "llama/runtime.hpp"

namespace {

[[noreturn]] void usage(const std::string& problem) {
  fmt::print(stderr,
             "llama-factors: {}\nusage: llama-factors --model PATH --text FILE --out FILE.safetensors "
             "--layers NAME[,NAME...] [--nsamples N] [--seqlen T] [--seed S]\n",
             problem);
  std::exit(2);
}

long parse_long(const std::string& flag, const std::string& text, long least) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < least)
    usage(fmt::format("{} needs an integer >= {}, got '{}'", flag, least, text));
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, text_path, out_path, layer_list;
  long nsamples = 32, seqlen = 256, seed = 0;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[i + 1];
    if (flag == "--model")
      model_path = value;
    else if (flag == "--text")
      text_path = value;
    else if (flag == "--out")
      out_path = value;
    else if (flag == "--layers")
      layer_list = value;
    else if (flag == "--nsamples")
      nsamples = parse_long(flag, value, 1);
    else if (flag == "--seqlen")
      seqlen = parse_long(flag, value, 2);
    else if (flag == "--seed")
      seed = parse_long(flag, value, 0);
    else
      usage("unknown option " + flag);
  }
  if (model_path.empty() || text_path.empty() || out_path.empty() || layer_list.empty())
    usage("--model, --text, --out and --layers are required");
  try {
    std::set<std::string> wanted;
    std::stringstream list(layer_list);
    for (std::string name; std::getline(list, name, ',');) wanted.insert(name);

    surgeon::llama::loaded_model loaded = surgeon::llama::load_model(model_path);
    surgeon::llama::model& m = loaded.weights;
    std::ifstream in(text_path, std::ios::binary);
    if (!in) usage("cannot read " + text_path);
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
      if (layers.count(name) == 0) usage("no linear layer named '" + name + "' (e.g. blk.0.ffn_up)");
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
    for (long first = 0; first < nsamples; first += defaults.batch) {
      const long count = std::min<long>(defaults.batch, nsamples - first);
      batch.clear();
      for (long k = first; k < first + count; ++k) {
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
  } catch (const surgeon::error& e) {
    fmt::print(stderr, "llama-factors: {}\n", e.what());
    return 1;
  }
  return 0;
}
