/// @file llama2c_model.hpp
/// @brief Conversion between llama2.c checkpoints and the in-memory `llama::model`.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/llama2c.hpp>

#include <vector>

#include "llama/model.hpp"

namespace surgeon::llama {

/// @brief The in-memory model of a llama2.c checkpoint (a copy of its arrays, split by block).
inline model from_llama2c(const io::llama2c_checkpoint& ck) {
  model m;
  const io::llama2c_config& c = ck.config;
  m.cfg.dim = c.dim;
  m.cfg.hidden_dim = c.hidden_dim;
  m.cfg.n_layers = c.n_layers;
  m.cfg.n_heads = c.n_heads;
  m.cfg.n_kv_heads = c.n_kv_heads;
  m.cfg.vocab_size = c.vocab_size;
  m.cfg.max_seq_len = c.seq_len;
  m.cfg.tied_embeddings = c.shared_classifier;
  m.cfg.validate();
  auto slice = [](const std::vector<float>& all, index_t layer, index_t size) {
    const auto begin = all.begin() + layer * size;
    return std::vector<float>(begin, begin + size);
  };
  m.token_embedding = ck.tok_embeddings;
  m.final_norm = ck.rms_final;
  if (!c.shared_classifier) m.output = ck.wcls;
  for (index_t l = 0; l < m.cfg.n_layers; ++l) {
    block_weights b;
    for (const block_tensor& t : block_tensors)
      b.*t.weights = slice(ck.*t.llama2c, l, tensor_size(t, m.cfg, l));
    m.blocks.push_back(std::move(b));
  }
  m.validate();
  return m;
}

/// @brief Writes `m` back into a llama2.c checkpoint with the same layout as `original` (whose
/// RoPE tables are kept). llama2.c's header has one shape for every block, so a model whose blocks
/// were compacted to other shapes cannot be written: it goes to a .gguf file (architecture "deci").
/// @throws logic_error if the shapes differ from `original`'s, naming the .gguf way out.
inline io::llama2c_checkpoint to_llama2c(const model& m, io::llama2c_checkpoint original) {
  SURGEON_EXPECTS(original.config.dim == m.cfg.dim && original.config.n_layers == m.cfg.n_layers,
                  "to_llama2c: the model does not match the original checkpoint");
  const block_shape header{original.config.n_heads, original.config.n_kv_heads, original.config.hidden_dim};
  for (index_t l = 0; l < m.cfg.n_layers; ++l) {
    const block_shape shape = m.cfg.block(l);
    SURGEON_EXPECTS(shape == header && m.cfg.head_dim() == original.config.dim / original.config.n_heads,
                    "to_llama2c: block {} has {} heads, {} kv heads and FFN width {} where the llama2.c "
                    "header says {}, {} and {} for every block; llama2.c cannot hold blocks of different "
                    "shapes, write a .gguf output instead (architecture \"deci\")",
                    l, shape.n_heads, shape.n_kv_heads, shape.hidden_dim, header.n_heads, header.n_kv_heads,
                    header.hidden_dim);
  }
  original.tok_embeddings = m.token_embedding;
  for (const block_tensor& t : block_tensors) {
    std::vector<float>& all = original.*t.llama2c;
    all.clear();
    for (const block_weights& b : m.blocks)
      all.insert(all.end(), (b.*t.weights).begin(), (b.*t.weights).end());
  }
  original.rms_final = m.final_norm;
  if (!m.cfg.tied_embeddings) original.wcls = m.output;
  return original;
}

}  // namespace surgeon::llama
