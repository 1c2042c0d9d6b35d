// Parity of surgeon's Llama runtime with an independent PyTorch implementation
// (tests/llama/llama_reference.py, float64) on stories260K: logits, loss, and every linear
// layer's input and output gradient, to 1e-4 relative; and the first-order correction's masked
// low-rank adapters on every layer: their gradients against PyTorch's autograd and against central
// finite differences of the runtime's loss.
#include <surgeon/cpu/first_order.hpp>
#include <surgeon/io/llama2c.hpp>
#include <surgeon/io/safetensors.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
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

TEST_CASE("the first-order adapters' gradients match PyTorch and finite differences on stories260K",
          "[llama][model][first_order]") {
  const std::string reference_path = env_or_empty("SURGEON_LLAMA_REFERENCE");
  const std::string shared = env_or_empty("SURGEON_SHARED_DIR");
  if (reference_path.empty() || shared.empty() || !std::filesystem::exists(reference_path)) {
    SURGEON_SKIP("no PyTorch reference (SURGEON_LLAMA_REFERENCE) or no stories260K (SURGEON_SHARED_DIR)");
  }
  using surgeon::index_t;
  using adapter_type = surgeon::cpu::low_rank_adapter;
  const auto ref = surgeon::io::safetensors_reader::open(reference_path);
  const auto checkpoint =
      surgeon::io::read_llama2c_checkpoint(shared + "/models/stories260K/stories260K.bin");
  surgeon::llama::model model = surgeon::llama::from_llama2c(checkpoint);
  surgeon::llama::runtime runtime(model);
  const std::vector<std::int32_t> tokens = ref.read<std::int32_t>("tokens");
  const index_t seq = 24;
  const auto batch = static_cast<index_t>(tokens.size()) / seq;

  // Every layer: the reference's mask applied, its B and A absorbed (W ⊙ M + M ⊙ B·A).
  std::map<std::string, adapter_type> adapters;
  std::map<std::string, std::string> keys;
  std::map<std::string, std::vector<float>> masked;  // W ⊙ M, to rebuild a layer
  for (const surgeon::llama::model::linear_ref& layer : model.linear_layers()) {
    const std::string prefix = "lora." + layer.name;
    const std::vector<float> keep = ref.read<float>(prefix + ".mask");
    const std::vector<float> b = ref.read<float>(prefix + ".b");
    const std::vector<float> a = ref.read<float>(prefix + ".a");
    const surgeon::host_matrix_view<float> w = layer.view();
    REQUIRE(keep.size() == static_cast<std::size_t>(w.size()));
    surgeon::mask pruned(w.rows(), w.cols());
    for (index_t i = 0; i < w.rows(); ++i) {
      for (index_t j = 0; j < w.cols(); ++j) {
        if (keep[static_cast<std::size_t>(i * w.cols() + j)] == 0.0f) pruned.prune(i, j);
      }
    }
    pruned.apply(w);
    masked[layer.name].assign(w.data(), w.data() + w.size());
    const index_t rank = static_cast<index_t>(b.size()) / w.rows();
    adapter_type adapter(pruned, Eigen::Map<const adapter_type::matrix>(b.data(), w.rows(), rank),
                         Eigen::Map<const adapter_type::matrix>(a.data(), rank, w.cols()));
    adapter.absorb(w);
    adapters.emplace(layer.name, std::move(adapter));
    keys.emplace(layer.name, layer.input_key);
  }
  std::map<std::string, std::vector<float>> latest;  // input key → its input
  std::map<std::string, index_t> widths;
  surgeon::llama::hooks hooks;
  hooks.input = [&](const std::string& key, surgeon::host_matrix_view<const float> x) {
    latest[key].assign(x.data(), x.data() + x.size());
    widths[key] = x.cols();
  };
  hooks.output_grad = [&](const std::string& name, surgeon::host_matrix_view<const float> gy) {
    const std::string& key = keys.at(name);
    const std::vector<float>& x = latest.at(key);
    adapters.at(name).accumulate(surgeon::host_matrix_view<const float>(x.data(), gy.rows(), widths.at(key)),
                                 gy);
  };
  surgeon::llama::backward_options options;
  options.per_token_gradients = false;  // PyTorch differentiates the mean loss
  const double loss = runtime.backward(tokens, batch, seq, hooks, options);
  CHECK(loss == Approx(ref.read<double>("lora.loss")[0]).epsilon(1e-5));
  REQUIRE(adapters.size() == static_cast<std::size_t>(7 * model.cfg.n_layers));
  for (const auto& [name, adapter] : adapters) {
    CAPTURE(name);
    CHECK(relative_difference(adapter.gradient_b().data(), ref.read<double>("lora." + name + ".grad_b")) <
          1e-3);
    CHECK(relative_difference(adapter.gradient_a().data(), ref.read<double>("lora." + name + ".grad_a")) <
          1e-3);
  }

  // Central differences of the runtime's mean loss along the largest entry of ∂L/∂B of two layers.
  for (const std::string name : {"blk.0.attn_q", "blk.4.ffn_down"}) {
    CAPTURE(name);
    const adapter_type& adapter = adapters.at(name);
    index_t row = 0, col = 0;
    adapter.gradient_b().cwiseAbs().maxCoeff(&row, &col);
    const double gradient = adapter.gradient_b()(row, col);
    const double h = std::min(0.1, 1e-3 / std::abs(gradient));  // a loss change of about 1e-3
    std::optional<surgeon::host_matrix_view<float>> found;
    for (const surgeon::llama::model::linear_ref& layer : model.linear_layers()) {
      if (layer.name == name) found = layer.view();
    }
    REQUIRE(found);
    const surgeon::host_matrix_view<float> w = *found;
    const auto loss_with = [&](double shift) {
      adapter_type::matrix b = adapter.b();
      b(row, col) += static_cast<float>(shift);
      adapter_type moved(adapter.pruned(), b, adapter.a());
      std::copy(masked[name].begin(), masked[name].end(), w.data());
      moved.absorb(w);
      return runtime.loss(tokens, batch, seq);
    };
    const double fd = (loss_with(h) - loss_with(-h)) / (2.0 * h);
    loss_with(0.0);
    CAPTURE(gradient, fd, h);
    CHECK(fd == Approx(gradient).epsilon(0.005));
    CHECK(fd == Approx(ref.read<double>("lora." + name +
                                        ".grad_b")[static_cast<std::size_t>(row * adapter.rank() + col)])
                    .epsilon(0.005));
  }
}
