/// @file model.hpp
/// @brief A Llama-family model in memory: configuration, fp32 weights, and the list of its
/// prunable linear layers with their K-FAC factor keys (the block's layout is layers.hpp's table).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/view.hpp>

#include <string>
#include <vector>

#include "llama/layers.hpp"

namespace surgeon::llama {

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

  /// @brief The weight vector and shape `[out, in]` of one linear layer, for the block's own shape
  /// (0 rows for the attention of an attention-free block, the FFN of an FFN-free one). O(1).
  /// @throws logic_error when `layer` is not a block.
  linear_ref linear(index_t layer, linear_kind kind) {
    SURGEON_EXPECTS(layer >= 0 && layer < cfg.n_layers, "llama::model: layer {} out of range", layer);
    block_weights& b = blocks[static_cast<std::size_t>(layer)];
    const block_tensor& t = linear_tensor(kind);
    return linear_ref{
        linear_name(layer, kind),      input_key(layer, kind),       layer, kind, &(b.*t.weights),
        extent_of(t.rows, cfg, layer), extent_of(t.cols, cfg, layer)};
  }

  /// @brief Every linear layer, block by block in `all_linear_kinds` order, empty ones (of an
  /// attention-free or FFN-free block) included. O(layers).
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
    for (std::size_t l = 0; l < blocks.size(); ++l) {
      for (const block_tensor& t : block_tensors) {
        expect(blocks[l].*t.weights, tensor_size(t, cfg, static_cast<index_t>(l)),
               gguf_tensor_name(static_cast<index_t>(l), t).c_str());
      }
    }
  }
};

}  // namespace surgeon::llama
