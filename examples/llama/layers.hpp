/// @file layers.hpp
/// @brief The layout of a Llama-family decoder, written once: its configuration, the arrays of a
/// block, and the table of those arrays (`block_tensors`: GGUF and llama2.c names, shapes in terms
/// of the configuration, and the input each linear layer reads). The loaders, the writers, the
/// runtime's hooks and the pruning adapter read the layout from here instead of spelling it out.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/io/llama2c.hpp>

#include <optional>
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

/// @brief The prunable linear layers of a block, in a fixed order (the order of `block_tensors`).
enum class linear_kind { attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down };

/// @brief Every `linear_kind`, in order.
inline constexpr linear_kind all_linear_kinds[] = {
    linear_kind::attn_q,   linear_kind::attn_k, linear_kind::attn_v,  linear_kind::attn_output,
    linear_kind::ffn_gate, linear_kind::ffn_up, linear_kind::ffn_down};

/// @brief A dimension of a block's arrays, named rather than stored so that one table serves
/// every model; `extent_of` resolves it against a `config`.
enum class extent { one, dim, kv_dim, hidden };

/// @brief The size of `e` in the model `cfg` describes. O(1).
inline index_t extent_of(extent e, const config& cfg) {
  switch (e) {
    case extent::one:
      return 1;
    case extent::dim:
      return cfg.dim;
    case extent::kv_dim:
      return cfg.kv_dim();
    case extent::hidden:
      return cfg.hidden_dim;
  }
  return 0;
}

/// @brief The activations a linear layer reads, in the order a block computes them. Layers of one
/// group read the same matrix and so share one K-FAC input factor A: the attention norm's output
/// feeds q, k and v; the attention's output feeds o; the FFN norm's output feeds gate and up; the
/// product silu(gate)·up feeds down.
enum class input_group { attn_in, attn_output_in, ffn_in, ffn_down_in };

/// @brief The key suffix of each `input_group` ("blk.L.<suffix>", see `input_key`).
inline constexpr const char* input_group_names[] = {"attn_in", "attn_output_in", "ffn_in", "ffn_down_in"};

/// @brief One array of a decoder block: where it lives in memory and in each file format, its
/// shape, and for a linear layer which input it reads.
struct block_tensor {
  const char* name;                            ///< GGUF name within the block ("blk.L.<name>.weight")
  std::vector<float> block_weights::*weights;  ///< its array in `block_weights`
  std::vector<float> io::llama2c_checkpoint::*llama2c;  ///< llama2.c's array stacking it over the blocks
  extent rows;                                          ///< `[rows, cols]` row-major (`[out, in]`);
  extent cols;                                          ///< norms are `[1, dim]`
  std::optional<linear_kind> kind;                      ///< the linear layer it is; nullopt for a norm
  input_group input;                                    ///< what a linear layer reads (unused for a norm)
};

/// @brief The arrays of a decoder block, in the order of a GGUF file: the one table of the
/// block's layout that loading, writing, the runtime's hooks and pruning all read.
inline constexpr block_tensor block_tensors[] = {
    {"attn_norm", &block_weights::attn_norm, &io::llama2c_checkpoint::rms_att, extent::one, extent::dim,
     std::nullopt, input_group::attn_in},
    {"attn_q", &block_weights::wq, &io::llama2c_checkpoint::wq, extent::dim, extent::dim, linear_kind::attn_q,
     input_group::attn_in},
    {"attn_k", &block_weights::wk, &io::llama2c_checkpoint::wk, extent::kv_dim, extent::dim,
     linear_kind::attn_k, input_group::attn_in},
    {"attn_v", &block_weights::wv, &io::llama2c_checkpoint::wv, extent::kv_dim, extent::dim,
     linear_kind::attn_v, input_group::attn_in},
    {"attn_output", &block_weights::wo, &io::llama2c_checkpoint::wo, extent::dim, extent::dim,
     linear_kind::attn_output, input_group::attn_output_in},
    {"ffn_norm", &block_weights::ffn_norm, &io::llama2c_checkpoint::rms_ffn, extent::one, extent::dim,
     std::nullopt, input_group::ffn_in},
    {"ffn_gate", &block_weights::w_gate, &io::llama2c_checkpoint::w1, extent::hidden, extent::dim,
     linear_kind::ffn_gate, input_group::ffn_in},
    {"ffn_up", &block_weights::w_up, &io::llama2c_checkpoint::w3, extent::hidden, extent::dim,
     linear_kind::ffn_up, input_group::ffn_in},
    {"ffn_down", &block_weights::w_down, &io::llama2c_checkpoint::w2, extent::dim, extent::hidden,
     linear_kind::ffn_down, input_group::ffn_down_in},
};

/// @brief The `block_tensors` entry of the linear layer `kind`. O(1).
inline const block_tensor& linear_tensor(linear_kind kind) {
  for (const block_tensor& t : block_tensors) {
    if (t.kind == kind) return t;
  }
  SURGEON_THROW(logic_error, "llama: no linear layer of kind {}", static_cast<int>(kind));
}

/// @brief "blk.<layer>.", the prefix of every name of block `layer`.
inline std::string block_prefix(index_t layer) {
  return "blk." + std::to_string(layer) + ".";
}

/// @brief GGUF tensor name of array `t` of block `layer`: "blk.<layer>.<name>.weight".
inline std::string gguf_tensor_name(index_t layer, const block_tensor& t) {
  return block_prefix(layer) + t.name + ".weight";
}

/// @brief GGUF-style name of a linear layer: "blk.<layer>.attn_q", ..., "blk.<layer>.ffn_down".
inline std::string linear_name(index_t layer, linear_kind kind) {
  return block_prefix(layer) + linear_tensor(kind).name;
}

/// @brief Key of the input a linear layer reads: q/k/v share "blk.L.attn_in", gate/up share
/// "blk.L.ffn_in"; attn_output reads "blk.L.attn_output_in", ffn_down "blk.L.ffn_down_in".
inline std::string input_key(index_t layer, linear_kind kind) {
  return block_prefix(layer) + input_group_names[static_cast<int>(linear_tensor(kind).input)];
}

}  // namespace surgeon::llama
