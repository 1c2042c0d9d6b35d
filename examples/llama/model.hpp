/// @file model.hpp
/// @brief A Llama-family model in memory: configuration, fp32 weights, and the list of its
/// prunable linear layers with their K-FAC factor keys.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/view.hpp>

#include <string>
#include <vector>

namespace surgeon::llama {

/// @brief Architecture of a Llama-family decoder (llama2.c and GGUF "llama").
struct config {
  index_t dim = 0;         ///< residual width (embedding length)
  index_t hidden_dim = 0;  ///< feed-forward width
  index_t n_layers = 0;    ///< decoder blocks
  index_t n_heads = 0;     ///< query heads
  index_t n_kv_heads = 0;  ///< key/value heads (grouped-query attention when < n_heads)
  index_t vocab_size = 0;
  index_t max_seq_len = 0;  ///< context length the model was trained for
  float norm_eps = 1e-5f;   ///< RMSNorm epsilon
  float rope_theta = 10000.0f;
  bool tied_embeddings = true;  ///< output head shares the token embedding

  index_t head_dim() const { return dim / n_heads; }
  index_t kv_dim() const { return head_dim() * n_kv_heads; }

  /// @throws logic_error when the shape is inconsistent (heads not dividing, odd head_dim, ...).
  void validate() const {
    SURGEON_EXPECTS(
        dim > 0 && hidden_dim > 0 && n_layers > 0 && n_heads > 0 && n_kv_heads > 0 && vocab_size > 0,
        "llama::config: non-positive dimension");
    SURGEON_EXPECTS(dim % n_heads == 0, "llama::config: {} heads do not divide width {}", n_heads, dim);
    SURGEON_EXPECTS(n_heads % n_kv_heads == 0, "llama::config: {} kv heads do not divide {} heads",
                    n_kv_heads, n_heads);
    SURGEON_EXPECTS(head_dim() % 2 == 0, "llama::config: head dimension {} is odd (RoPE pairs)", head_dim());
  }
};

/// @brief Weights of one decoder block; matrices row-major `[out, in]` (PyTorch nn.Linear layout).
struct block_weights {
  std::vector<float> attn_norm;  ///< [dim]
  std::vector<float> wq;         ///< [dim, dim]
  std::vector<float> wk;         ///< [kv_dim, dim]
  std::vector<float> wv;         ///< [kv_dim, dim]
  std::vector<float> wo;         ///< [dim, dim]
  std::vector<float> ffn_norm;   ///< [dim]
  std::vector<float> w_gate;     ///< [hidden, dim]  (llama2.c w1)
  std::vector<float> w_up;       ///< [hidden, dim]  (llama2.c w3)
  std::vector<float> w_down;     ///< [dim, hidden]  (llama2.c w2)
};

/// @brief The prunable linear layers of a block, in a fixed order.
enum class linear_kind { attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down };
inline constexpr linear_kind all_linear_kinds[] = {
    linear_kind::attn_q,   linear_kind::attn_k, linear_kind::attn_v,  linear_kind::attn_output,
    linear_kind::ffn_gate, linear_kind::ffn_up, linear_kind::ffn_down};

/// @brief GGUF-style name of a linear layer: "blk.<layer>.attn_q", ..., "blk.<layer>.ffn_down".
inline std::string linear_name(index_t layer, linear_kind kind) {
  static const char* const names[] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                      "ffn_gate", "ffn_up", "ffn_down"};
  return "blk." + std::to_string(layer) + "." + names[static_cast<int>(kind)];
}

/// @brief Key of the input a linear layer reads: q/k/v share "blk.L.attn_in", gate/up share
/// "blk.L.ffn_in"; attn_output reads "blk.L.attn_output_in", ffn_down "blk.L.ffn_down_in".
inline std::string input_key(index_t layer, linear_kind kind) {
  const std::string prefix = "blk." + std::to_string(layer) + ".";
  switch (kind) {
    case linear_kind::attn_q:
    case linear_kind::attn_k:
    case linear_kind::attn_v:
      return prefix + "attn_in";
    case linear_kind::attn_output:
      return prefix + "attn_output_in";
    case linear_kind::ffn_gate:
    case linear_kind::ffn_up:
      return prefix + "ffn_in";
    case linear_kind::ffn_down:
      return prefix + "ffn_down_in";
  }
  return prefix + "unknown";
}

/// @brief A whole model: embeddings, blocks, final norm and (untied) output head.
struct model {
  config cfg;
  std::vector<float> token_embedding;  ///< [vocab, dim]
  std::vector<block_weights> blocks;   ///< n_layers
  std::vector<float> final_norm;       ///< [dim]
  std::vector<float> output;           ///< [vocab, dim]; empty when the embeddings are tied

  /// @brief The output classifier `[vocab, dim]` (the embedding when tied).
  const std::vector<float>& classifier() const { return cfg.tied_embeddings ? token_embedding : output; }

  /// @brief One linear layer's weights and shape.
  struct linear_ref {
    std::string name;       ///< "blk.L.attn_q", ...
    std::string input_key;  ///< the factor key of its input (shared by q/k/v and by gate/up)
    index_t layer = 0;
    linear_kind kind = linear_kind::attn_q;
    std::vector<float>* weight = nullptr;
    index_t rows = 0;  ///< out_features
    index_t cols = 0;  ///< in_features
    host_matrix_view<float> view() const { return host_matrix_view<float>(weight->data(), rows, cols); }
  };

  /// @brief The weight vector and shape `[out, in]` of one linear layer.
  linear_ref linear(index_t layer, linear_kind kind) {
    SURGEON_EXPECTS(layer >= 0 && layer < cfg.n_layers, "llama::model: layer {} out of range", layer);
    block_weights& b = blocks[static_cast<std::size_t>(layer)];
    linear_ref ref{linear_name(layer, kind), input_key(layer, kind), layer, kind, nullptr, 0, 0};
    switch (kind) {
      case linear_kind::attn_q:
        ref.weight = &b.wq, ref.rows = cfg.dim, ref.cols = cfg.dim;
        break;
      case linear_kind::attn_k:
        ref.weight = &b.wk, ref.rows = cfg.kv_dim(), ref.cols = cfg.dim;
        break;
      case linear_kind::attn_v:
        ref.weight = &b.wv, ref.rows = cfg.kv_dim(), ref.cols = cfg.dim;
        break;
      case linear_kind::attn_output:
        ref.weight = &b.wo, ref.rows = cfg.dim, ref.cols = cfg.dim;
        break;
      case linear_kind::ffn_gate:
        ref.weight = &b.w_gate, ref.rows = cfg.hidden_dim, ref.cols = cfg.dim;
        break;
      case linear_kind::ffn_up:
        ref.weight = &b.w_up, ref.rows = cfg.hidden_dim, ref.cols = cfg.dim;
        break;
      case linear_kind::ffn_down:
        ref.weight = &b.w_down, ref.rows = cfg.dim, ref.cols = cfg.hidden_dim;
        break;
    }
    return ref;
  }

  /// @brief Every prunable linear layer, block by block in `all_linear_kinds` order.
  std::vector<linear_ref> linear_layers() {
    std::vector<linear_ref> result;
    for (index_t l = 0; l < cfg.n_layers; ++l) {
      for (const linear_kind kind : all_linear_kinds) result.push_back(linear(l, kind));
    }
    return result;
  }

  /// @brief Checks every array against the configuration.
  /// @throws logic_error naming the first array of the wrong size.
  void validate() const {
    cfg.validate();
    auto expect = [](const std::vector<float>& v, index_t n, const char* what) {
      SURGEON_EXPECTS(static_cast<index_t>(v.size()) == n, "llama::model: {} has {} values, expected {}",
                      what, v.size(), n);
    };
    const index_t d = cfg.dim;
    expect(token_embedding, cfg.vocab_size * d, "token_embedding");
    expect(final_norm, d, "final_norm");
    if (!cfg.tied_embeddings) expect(output, cfg.vocab_size * d, "output");
    SURGEON_EXPECTS(static_cast<index_t>(blocks.size()) == cfg.n_layers,
                    "llama::model: {} blocks, expected {}", blocks.size(), cfg.n_layers);
    for (const block_weights& b : blocks) {
      expect(b.attn_norm, d, "attn_norm");
      expect(b.ffn_norm, d, "ffn_norm");
      expect(b.wq, d * d, "wq");
      expect(b.wk, cfg.kv_dim() * d, "wk");
      expect(b.wv, cfg.kv_dim() * d, "wv");
      expect(b.wo, d * d, "wo");
      expect(b.w_gate, cfg.hidden_dim * d, "w_gate");
      expect(b.w_up, cfg.hidden_dim * d, "w_up");
      expect(b.w_down, d * cfg.hidden_dim, "w_down");
    }
  }
};

}  // namespace surgeon::llama
