// Parity of surgeon's Llama runtime with an independent PyTorch implementation
// (tests/llama/llama_reference.py, float64) on stories260K: logits, loss, and every linear
// layer's input and output gradient, to 1e-4 relative.
#include <surgeon/io/llama2c.hpp>
#include <surgeon/io/safetensors.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "llama/llama2c_model.hpp"
#include "llama/runtime.hpp"
#include "support/catch.hpp"
#include "support/skip.hpp"

namespace {

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// max |a − b| / max |b| over a tensor.
double relative_difference(const float* a, const std::vector<double>& b) {
  double difference = 0.0;
  double scale = 0.0;
  for (std::size_t k = 0; k < b.size(); ++k) {
    difference = std::max(difference, std::abs(static_cast<double>(a[k]) - b[k]));
    scale = std::max(scale, std::abs(b[k]));
  }
  return scale == 0.0 ? difference : difference / scale;
}

}  // namespace

TEST_CASE("the runtime matches PyTorch on stories260K: logits, loss, layer inputs and gradients",
          "[llama][model]") {
  const std::string reference_path = env_or_empty("SURGEON_LLAMA_REFERENCE");
  const std::string shared = env_or_empty("SURGEON_SHARED_DIR");
  if (reference_path.empty() || shared.empty() || !std::filesystem::exists(reference_path)) {
    SURGEON_SKIP("no PyTorch reference (SURGEON_LLAMA_REFERENCE) or no stories260K (SURGEON_SHARED_DIR)");
  }
  const auto ref = surgeon::io::safetensors_reader::open(reference_path);
  const auto checkpoint =
      surgeon::io::read_llama2c_checkpoint(shared + "/models/stories260K/stories260K.bin");
  const surgeon::llama::model model = surgeon::llama::from_llama2c(checkpoint);
  surgeon::llama::runtime runtime(model);

  const std::vector<std::int32_t> tokens = ref.read<std::int32_t>("tokens");
  const surgeon::index_t seq = 24;
  const auto batch = static_cast<surgeon::index_t>(tokens.size()) / seq;
  REQUIRE(batch * seq == static_cast<surgeon::index_t>(tokens.size()));

  SECTION("logits and loss") {
    const auto logits = runtime.logits(tokens, batch, seq);
    CHECK(relative_difference(logits.data(), ref.read<double>("logits")) < 1e-4);
    const double loss = runtime.loss(tokens, batch, seq);
    CHECK(loss == Approx(ref.read<double>("loss")[0]).epsilon(1e-5));
  }

  SECTION("every linear layer's input and output gradient, and the loss of the backward pass") {
    std::map<std::string, std::vector<float>> inputs;
    std::map<std::string, std::vector<float>> grads;
    surgeon::llama::hooks hooks;
    hooks.input = [&](const std::string& key, surgeon::host_matrix_view<const float> x) {
      inputs[key].assign(x.data(), x.data() + x.size());
    };
    hooks.output_grad = [&](const std::string& layer, surgeon::host_matrix_view<const float> gy) {
      grads[layer].assign(gy.data(), gy.data() + gy.size());
    };
    surgeon::llama::backward_options options;
    options.per_token_gradients = false;  // PyTorch differentiates the mean loss
    const double loss = runtime.backward(tokens, batch, seq, hooks, options);
    CHECK(loss == Approx(ref.read<double>("loss")[0]).epsilon(1e-5));
    REQUIRE(grads.size() == static_cast<std::size_t>(7 * model.cfg.n_layers));
    REQUIRE(inputs.size() == static_cast<std::size_t>(4 * model.cfg.n_layers));
    for (surgeon::index_t l = 0; l < model.cfg.n_layers; ++l) {
      for (const auto kind : surgeon::llama::all_linear_kinds) {
        const std::string name = surgeon::llama::linear_name(l, kind);
        const std::string key = surgeon::llama::input_key(l, kind);
        CAPTURE(name);
        const std::vector<double> expected_grad = ref.read<double>(name + ".output_grad");
        const std::vector<double> expected_input = ref.read<double>(name + ".input");
        REQUIRE(grads[name].size() == expected_grad.size());
        REQUIRE(inputs[key].size() == expected_input.size());
        CHECK(relative_difference(grads[name].data(), expected_grad) < 1e-4);
        CHECK(relative_difference(inputs[key].data(), expected_input) < 1e-4);
      }
    }
  }

  SECTION("per-token gradients are the mean-loss gradients times the prediction count") {
    std::map<std::string, std::vector<float>> mean_grads;
    std::map<std::string, std::vector<float>> sum_grads;
    surgeon::llama::hooks mean_hooks;
    mean_hooks.output_grad = [&](const std::string& layer, surgeon::host_matrix_view<const float> gy) {
      mean_grads[layer].assign(gy.data(), gy.data() + gy.size());
    };
    surgeon::llama::hooks sum_hooks;
    sum_hooks.output_grad = [&](const std::string& layer, surgeon::host_matrix_view<const float> gy) {
      sum_grads[layer].assign(gy.data(), gy.data() + gy.size());
    };
    surgeon::llama::backward_options mean_options;
    mean_options.per_token_gradients = false;
    runtime.backward(tokens, batch, seq, mean_hooks, mean_options);
    runtime.backward(tokens, batch, seq, sum_hooks);
    const double count = static_cast<double>(batch * (seq - 1));
    const auto& a = sum_grads["blk.2.ffn_up"];
    const auto& b = mean_grads["blk.2.ffn_up"];
    REQUIRE(a.size() == b.size());
    std::vector<double> scaled(b.size());
    for (std::size_t k = 0; k < b.size(); ++k) scaled[k] = static_cast<double>(b[k]) * count;
    CHECK(relative_difference(a.data(), scaled) < 1e-5);
  }

  SECTION("weight gradients equal gyᵀ x of the mean loss") {
    std::vector<float> dw;
    std::vector<float> x;
    std::vector<float> gy;
    surgeon::llama::hooks hooks;
    hooks.input = [&](const std::string& key, surgeon::host_matrix_view<const float> v) {
      if (key == "blk.1.ffn_down_in") x.assign(v.data(), v.data() + v.size());
    };
    hooks.weight_grad = [&](const std::string& layer, surgeon::host_matrix_view<const float> v) {
      if (layer == "blk.1.ffn_down") dw.assign(v.data(), v.data() + v.size());
    };
    runtime.backward(tokens, batch, seq, hooks);
    const std::vector<double> expected_grad = ref.read<double>("blk.1.ffn_down.output_grad");
    const surgeon::index_t out = model.cfg.dim;
    const surgeon::index_t in = model.cfg.hidden_dim;
    REQUIRE(dw.size() == static_cast<std::size_t>(out * in));
    std::vector<double> expected(dw.size(), 0.0);
    for (surgeon::index_t n = 0; n < batch * seq; ++n) {
      for (surgeon::index_t i = 0; i < out; ++i) {
        for (surgeon::index_t j = 0; j < in; ++j) {
          expected[static_cast<std::size_t>(i * in + j)] +=
              expected_grad[static_cast<std::size_t>(n * out + i)] * x[static_cast<std::size_t>(n * in + j)];
        }
      }
    }
    CHECK(relative_difference(dw.data(), expected) < 1e-4);
  }
}
