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

/// @brief The attention and feed-forward widths of one decoder block. Pruned and compacted models
/// (GGUF architecture "deci") have blocks of different shapes; 0 heads is an attention-free block,
/// 0 hidden an FFN-free one.
struct block_shape {
  index_t n_heads = 0;     ///< query heads
  index_t n_kv_heads = 0;  ///< key/value heads: 0 exactly when n_heads is 0, else divides n_heads
  index_t hidden_dim = 0;  ///< feed-forward width

  /// @brief True when every field is equal. O(1).
  friend bool operator==(const block_shape& a, const block_shape& b) {
    return a.n_heads == b.n_heads && a.n_kv_heads == b.n_kv_heads && a.hidden_dim == b.hidden_dim;
  }
  /// @brief Negation of `==`. O(1).
  friend bool operator!=(const block_shape& a, const block_shape& b) { return !(a == b); }
};

/// @brief Architecture of a Llama-family decoder (llama2.c, GGUF "llama" and "deci").
///
/// A uniform model (every llama2.c and "llama" file) describes all its blocks with `n_heads`,
/// `n_kv_heads` and `hidden_dim` and leaves `blocks` empty; a model whose blocks differ lists one
/// `block_shape` per block, and the uniform fields then only describe the widest block.
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
  /// Width of one attention head; 0 means dim / n_heads (the Llama convention). Set explicitly
  /// when the heads no longer tile the residual width (a model with pruned heads).
  index_t head_size = 0;
  /// One shape per block (n_layers entries), or empty when every block has the uniform shape.
  std::vector<block_shape> blocks;

  /// @brief Width of one attention head: `head_size`, else dim / n_heads. O(1).
  index_t head_dim() const { return head_size > 0 ? head_size : dim / n_heads; }
  /// @brief Width of the keys (and values) of a uniform block: head_dim · n_kv_heads. O(1).
  index_t kv_dim() const { return head_dim() * n_kv_heads; }

  /// @brief The shape of block `layer` (the uniform fields when `blocks` is empty). O(1).
  /// @throws logic_error when `layer` is not a block.
  block_shape block(index_t layer) const {
    SURGEON_EXPECTS(layer >= 0 && layer < n_layers, "llama::config: block {} outside the model's {}", layer,
                    n_layers);
    if (blocks.empty()) return block_shape{n_heads, n_kv_heads, hidden_dim};
    return blocks[static_cast<std::size_t>(layer)];
  }
  /// @brief Width of the queries of block `layer` (and of its attention output's input). O(1).
  index_t q_dim(index_t layer) const { return block(layer).n_heads * head_dim(); }
  /// @brief Width of the keys and values of block `layer`. O(1).
  index_t kv_dim(index_t layer) const { return block(layer).n_kv_heads * head_dim(); }

  /// @brief True when every block has the same shape (always for an empty `blocks`). O(layers).
  bool uniform() const {
    for (const block_shape& b : blocks) {
      if (b != blocks.front()) return false;
    }
    return true;
  }

  /// @throws logic_error when the shape is inconsistent (heads not dividing, odd head_dim, a
  ///         block with key/value heads but no query heads, ...). O(layers).
  void validate() const {
    if (blocks.empty()) {
      SURGEON_EXPECTS(
          dim > 0 && hidden_dim > 0 && n_layers > 0 && n_heads > 0 && n_kv_heads > 0 && vocab_size > 0,
          "llama::config: non-positive dimension");
      SURGEON_EXPECTS(head_size > 0 || dim % n_heads == 0, "llama::config: {} heads do not divide width {}",
                      n_heads, dim);
      SURGEON_EXPECTS(n_heads % n_kv_heads == 0, "llama::config: {} kv heads do not divide {} heads",
                      n_kv_heads, n_heads);
    } else {
      SURGEON_EXPECTS(dim > 0 && n_layers > 0 && vocab_size > 0, "llama::config: non-positive dimension");
      SURGEON_EXPECTS(static_cast<index_t>(blocks.size()) == n_layers,
                      "llama::config: {} block shapes for {} blocks", blocks.size(), n_layers);
      SURGEON_EXPECTS(head_size > 0 || (n_heads > 0 && dim % n_heads == 0),
                      "llama::config: no head size and {} heads do not divide width {}", n_heads, dim);
      for (std::size_t l = 0; l < blocks.size(); ++l) {
        const block_shape& b = blocks[l];
        SURGEON_EXPECTS(b.n_heads >= 0 && b.n_kv_heads >= 0 && b.hidden_dim >= 0,
                        "llama::config: block {} has a negative width", l);
        SURGEON_EXPECTS((b.n_heads == 0) == (b.n_kv_heads == 0),
                        "llama::config: block {} has {} heads but {} kv heads (0 only together)", l,
                        b.n_heads, b.n_kv_heads);
        SURGEON_EXPECTS(b.n_kv_heads == 0 || b.n_heads % b.n_kv_heads == 0,
                        "llama::config: block {}: {} kv heads do not divide {} heads", l, b.n_kv_heads,
                        b.n_heads);
      }
    }
    SURGEON_EXPECTS(head_dim() > 0 && head_dim() % 2 == 0,
                    "llama::config: head dimension {} is not positive and even (RoPE pairs)", head_dim());
  }
};

/// @brief Weights of one decoder block; matrices row-major `[out, in]` (PyTorch nn.Linear layout).
/// An attention-free block (0 heads) has every attention array empty, attn_norm included; an
/// FFN-free block (hidden 0) every FFN array, ffn_norm included.
struct block_weights {
  std::vector<float> attn_norm;  ///< [dim]
  std::vector<float> wq;         ///< [n_heads·head_dim, dim]
  std::vector<float> wk;         ///< [kv_dim, dim]
  std::vector<float> wv;         ///< [kv_dim, dim]
  std::vector<float> wo;         ///< [dim, n_heads·head_dim]
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
/// every model and every block; `extent_of` resolves it against a `config` and a block.
enum class extent {
  one_if_attention,  ///< 1, or 0 in an attention-free block (the rows of attn_norm)
  one_if_ffn,        ///< 1, or 0 in an FFN-free block (the rows of ffn_norm)
  dim,               ///< the residual width
  q_dim,             ///< n_heads · head_dim of the block
  kv_dim,            ///< n_kv_heads · head_dim of the block
  hidden,            ///< the block's feed-forward width
};

/// @brief The size of `e` in block `layer` of the model `cfg` describes. O(1).
/// @throws logic_error when `layer` is not a block.
inline index_t extent_of(extent e, const config& cfg, index_t layer) {
  const block_shape shape = cfg.block(layer);
  switch (e) {
    case extent::one_if_attention:
      return shape.n_heads > 0 ? 1 : 0;
    case extent::one_if_ffn:
      return shape.hidden_dim > 0 ? 1 : 0;
    case extent::dim:
      return cfg.dim;
    case extent::q_dim:
      return shape.n_heads * cfg.head_dim();
    case extent::kv_dim:
      return shape.n_kv_heads * cfg.head_dim();
    case extent::hidden:
      return shape.hidden_dim;
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
  extent cols;                                          ///< norms are `[1, dim]` (`[0, dim]` when absent)
  std::optional<linear_kind> kind;                      ///< the linear layer it is; nullopt for a norm
  input_group input;                                    ///< what a linear layer reads (unused for a norm)
};

/// @brief The arrays of a decoder block, in the order of a GGUF file: the one table of the
/// block's layout that loading, writing, the runtime's hooks and pruning all read.
inline constexpr block_tensor block_tensors[] = {
    {"attn_norm", &block_weights::attn_norm, &io::llama2c_checkpoint::rms_att, extent::one_if_attention,
     extent::dim, std::nullopt, input_group::attn_in},
    {"attn_q", &block_weights::wq, &io::llama2c_checkpoint::wq, extent::q_dim, extent::dim,
     linear_kind::attn_q, input_group::attn_in},
    {"attn_k", &block_weights::wk, &io::llama2c_checkpoint::wk, extent::kv_dim, extent::dim,
     linear_kind::attn_k, input_group::attn_in},
    {"attn_v", &block_weights::wv, &io::llama2c_checkpoint::wv, extent::kv_dim, extent::dim,
     linear_kind::attn_v, input_group::attn_in},
    {"attn_output", &block_weights::wo, &io::llama2c_checkpoint::wo, extent::dim, extent::q_dim,
     linear_kind::attn_output, input_group::attn_output_in},
    {"ffn_norm", &block_weights::ffn_norm, &io::llama2c_checkpoint::rms_ffn, extent::one_if_ffn, extent::dim,
     std::nullopt, input_group::ffn_in},
    {"ffn_gate", &block_weights::w_gate, &io::llama2c_checkpoint::w1, extent::hidden, extent::dim,
     linear_kind::ffn_gate, input_group::ffn_in},
    {"ffn_up", &block_weights::w_up, &io::llama2c_checkpoint::w3, extent::hidden, extent::dim,
     linear_kind::ffn_up, input_group::ffn_in},
    {"ffn_down", &block_weights::w_down, &io::llama2c_checkpoint::w2, extent::dim, extent::hidden,
     linear_kind::ffn_down, input_group::ffn_down_in},
};

/// @brief Number of values of array `t` in block `layer` (0 for a part the block does not have).
/// O(1). @throws logic_error when `layer` is not a block.
inline index_t tensor_size(const block_tensor& t, const config& cfg, index_t layer) {
  return extent_of(t.rows, cfg, layer) * extent_of(t.cols, cfg, layer);
}

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
