/// @file compact.hpp
/// @brief Physical compaction of a structurally pruned model: the FFN neurons and attention heads
/// whose weights pruning set to zero are removed from the arrays, leaving a smaller model whose
/// blocks each have their own shape (GGUF architecture "deci", `write_deci_gguf`) and which
/// computes the same function, up to the order of float summation.
///
/// What contributes nothing, and is removed:
/// - FFN neuron i of a block when row i of gate, row i of up or column i of down is all zero: its
///   term silu(g_i)·u_i·down[:, i] of the block's output is then exactly 0.
/// - Query head h when its head_dim columns of attn_output are all zero, or when the value rows of
///   its KV head are all zero (the head's output is then 0 before attn_output reads it).
/// - A KV head none of whose query heads remain.
///
/// What is kept although it is zero (padding), so that llama.cpp runs the result exactly:
/// - llama.cpp maps query head h to KV head h / (n_head / n_head_kv), so every kept KV head must
///   serve as many query heads as the others: a group that keeps fewer is padded with zero query
///   heads (q rows and attn_output columns zero) after its own, whose zero attn_output columns add
///   nothing.
/// - Each block's FFN width is rounded up to a multiple of `ffn_multiple` with zero neurons (gate
///   and up rows and the down column zero), never above the original width: quantised types
///   (Q8_0, Q4_0) store rows as whole blocks of 32, and the rows of ffn_down have the FFN width.
/// - llama.cpp's "deci" graph skips the whole residual update of a block with FFN width 0 (its
///   `continue` drops the attention output too), so a block that keeps attention but no neuron
///   keeps min(ffn_multiple, original width) zero neurons.
/// - llama.cpp derives the head size from block 0 (`n_head()` reads layer 0) and finds 0 when block
///   0 has no heads, so block 0 keeps one zero query head with one zero KV head rather than none.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "llama/layers.hpp"
#include "llama/model.hpp"

namespace surgeon::llama {

/// @brief What `compact` kept of one block. Kept counts include the zero padding.
struct compacted_block {
  block_shape before;             ///< the block's shape before compaction
  block_shape after;              ///< its shape after (heads, kv heads and FFN width kept)
  index_t padding_heads = 0;      ///< of `after.n_heads`, zero query heads kept for the layout
  index_t padding_kv_heads = 0;   ///< of `after.n_kv_heads`, zero KV heads (block 0 only)
  index_t padding_hidden = 0;     ///< of `after.hidden_dim`, zero neurons kept for the layout
  index_t parameters_before = 0;  ///< values in the block's arrays before (norms included)
  index_t parameters_after = 0;   ///< and after
};

/// @brief What `compact` did, block by block, and the parameters of the whole model.
struct compact_summary {
  std::vector<compacted_block> blocks;  ///< one per block, in order
  index_t parameters_before = 0;        ///< every value of the model (embeddings, head included)
  index_t parameters_after = 0;
};

namespace detail {

// Whether every value of rows [first, first + count) of the row-major `[.., cols]` matrix `w` is 0.
inline bool rows_all_zero(const std::vector<float>& w, index_t cols, index_t first, index_t count) {
  const auto begin = w.begin() + first * cols;
  return std::all_of(begin, begin + count * cols, [](float v) { return v == 0.0f; });
}

// Whether every value of columns [first, first + count) of the row-major `[rows, cols]` matrix `w`
// is 0.
inline bool columns_all_zero(const std::vector<float>& w, index_t rows, index_t cols, index_t first,
                             index_t count) {
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = first; c < first + count; ++c) {
      if (w[static_cast<std::size_t>(r * cols + c)] != 0.0f) return false;
    }
  }
  return true;
}

// The blocks of `block_rows` rows of the row-major `[.., cols]` matrix `w` listed in `blocks` (block
// i is rows [i·block_rows, (i + 1)·block_rows); -1 is a block of zeros), stacked in that order.
inline std::vector<float> gather_rows(const std::vector<float>& w, index_t cols,
                                      const std::vector<index_t>& blocks, index_t block_rows) {
  std::vector<float> result(static_cast<std::size_t>(static_cast<index_t>(blocks.size()) * block_rows * cols),
                            0.0f);
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i] < 0) continue;
    std::copy_n(w.begin() + blocks[i] * block_rows * cols, block_rows * cols,
                result.begin() + static_cast<index_t>(i) * block_rows * cols);
  }
  return result;
}

// The blocks of `block_cols` columns of the row-major `[rows, cols]` matrix `w` listed in `blocks`
// (as `gather_rows`), side by side in that order.
inline std::vector<float> gather_columns(const std::vector<float>& w, index_t rows, index_t cols,
                                         const std::vector<index_t>& blocks, index_t block_cols) {
  const index_t new_cols = static_cast<index_t>(blocks.size()) * block_cols;
  std::vector<float> result(static_cast<std::size_t>(rows * new_cols), 0.0f);
  for (index_t r = 0; r < rows; ++r) {
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      if (blocks[i] < 0) continue;
      std::copy_n(w.begin() + r * cols + blocks[i] * block_cols, block_cols,
                  result.begin() + r * new_cols + static_cast<index_t>(i) * block_cols);
    }
  }
  return result;
}

inline index_t block_parameters(const block_weights& b) {
  index_t n = 0;
  for (const block_tensor& t : block_tensors) n += static_cast<index_t>((b.*t.weights).size());
  return n;
}

inline index_t model_parameters(const model& m) {
  index_t n = static_cast<index_t>(m.token_embedding.size() + m.final_norm.size() + m.output.size());
  for (const block_weights& b : m.blocks) n += block_parameters(b);
  return n;
}

}  // namespace detail

/// @brief Removes, in place, every FFN neuron, query head and KV head of `m` that contributes
/// nothing to its output (see the file's description for the rules and the zero padding kept for
/// llama.cpp), giving each block its own shape in `m.cfg.blocks` and fixing the head size in
/// `m.cfg.head_size`. When nothing can be removed the model is left as it was (uniform).
/// The compacted model computes the same logits up to float summation order: only exact zeros
/// are dropped. Within a KV group the kept heads keep their order; neurons keep theirs.
/// Cost: one read of every block weight and one copy of what is kept, O(parameters).
/// @param ffn_multiple each block's kept FFN width is rounded up to a multiple of this (>= 1),
///        never above the original width.
/// @throws logic_error if `m` is inconsistent or `ffn_multiple` < 1.
inline compact_summary compact(model& m, index_t ffn_multiple = 32) {
  SURGEON_EXPECTS(ffn_multiple >= 1, "compact: ffn_multiple must be >= 1, got {}", ffn_multiple);
  m.validate();
  config& cfg = m.cfg;
  const index_t d = cfg.dim;
  const index_t hd = cfg.head_dim();
  compact_summary summary;
  summary.parameters_before = detail::model_parameters(m);
  std::vector<block_shape> shapes;
  for (index_t l = 0; l < cfg.n_layers; ++l) {
    block_weights& b = m.blocks[static_cast<std::size_t>(l)];
    compacted_block report;
    report.before = cfg.block(l);
    report.parameters_before = detail::block_parameters(b);
    const index_t heads = report.before.n_heads;
    const index_t kv_heads = report.before.n_kv_heads;
    const index_t hidden = report.before.hidden_dim;
    const index_t q_width = heads * hd;

    // Attention: per KV group, the query heads that still contribute, in order.
    std::vector<std::vector<index_t>> groups;  // kept query heads of each kept KV head
    std::vector<index_t> kept_kv;              // the kept KV heads
    if (heads > 0) {
      const index_t group = heads / kv_heads;
      for (index_t g = 0; g < kv_heads; ++g) {
        const bool values_zero = detail::rows_all_zero(b.wv, d, g * hd, hd);
        std::vector<index_t> live;
        for (index_t h = g * group; h < (g + 1) * group && !values_zero; ++h) {
          if (!detail::columns_all_zero(b.wo, d, q_width, h * hd, hd)) live.push_back(h);
        }
        if (live.empty()) continue;
        groups.push_back(live);
        kept_kv.push_back(g);
      }
    }
    index_t new_group = 0;
    for (const auto& live : groups) new_group = std::max(new_group, static_cast<index_t>(live.size()));
    // Query heads in the new order (-1: a zero padding head) and KV heads (-1: a zero one).
    std::vector<index_t> query_order;
    for (const auto& live : groups) {
      query_order.insert(query_order.end(), live.begin(), live.end());
      for (auto k = static_cast<index_t>(live.size()); k < new_group; ++k) {
        query_order.push_back(-1);
        ++report.padding_heads;
      }
    }
    if (l == 0 && kept_kv.empty()) {  // llama.cpp reads the head size from block 0's head count
      query_order = {-1};
      kept_kv = {-1};
      report.padding_heads = 1;
      report.padding_kv_heads = 1;
    }

    // FFN: the neurons that still contribute, in order.
    std::vector<index_t> neurons;
    for (index_t i = 0; i < hidden; ++i) {
      const bool dead = detail::rows_all_zero(b.w_gate, d, i, 1) || detail::rows_all_zero(b.w_up, d, i, 1) ||
                        detail::columns_all_zero(b.w_down, d, hidden, i, 1);
      if (!dead) neurons.push_back(i);
    }
    const auto live_neurons = static_cast<index_t>(neurons.size());
    index_t width = (live_neurons + ffn_multiple - 1) / ffn_multiple * ffn_multiple;
    // llama.cpp drops the attention output of a block with FFN width 0 (see the file's notes).
    if (live_neurons == 0 && !query_order.empty()) width = ffn_multiple;
    width = std::min(width, hidden);
    neurons.resize(static_cast<std::size_t>(width), -1);
    report.padding_hidden = width - live_neurons;

    report.after =
        block_shape{static_cast<index_t>(query_order.size()), static_cast<index_t>(kept_kv.size()), width};
    if (report.after != report.before) {
      if (report.after.n_heads == 0) {
        b.attn_norm.clear();
        b.wq.clear();
        b.wk.clear();
        b.wv.clear();
        b.wo.clear();
      } else {
        // Block 0 padded from no heads at all: any norm gain will do, its q, k and v are zero.
        if (b.attn_norm.empty()) b.attn_norm.assign(static_cast<std::size_t>(d), 1.0f);
        b.wq = detail::gather_rows(b.wq, d, query_order, hd);
        b.wk = detail::gather_rows(b.wk, d, kept_kv, hd);
        b.wv = detail::gather_rows(b.wv, d, kept_kv, hd);
        b.wo = detail::gather_columns(b.wo, d, q_width, query_order, hd);
      }
      if (width == 0) {
        b.ffn_norm.clear();
        b.w_gate.clear();
        b.w_up.clear();
        b.w_down.clear();
      } else {
        b.w_gate = detail::gather_rows(b.w_gate, d, neurons, 1);
        b.w_up = detail::gather_rows(b.w_up, d, neurons, 1);
        b.w_down = detail::gather_columns(b.w_down, d, hidden, neurons, 1);
      }
    }
    report.parameters_after = detail::block_parameters(b);
    shapes.push_back(report.after);
    summary.blocks.push_back(report);
  }
  const bool changed = std::any_of(summary.blocks.begin(), summary.blocks.end(),
                                   [](const compacted_block& r) { return r.after != r.before; });
  if (changed) {
    cfg.head_size = hd;
    cfg.n_heads = cfg.n_kv_heads = cfg.hidden_dim = 0;  // the widest block, for information
    for (const block_shape& s : shapes) {
      cfg.n_heads = std::max(cfg.n_heads, s.n_heads);
      cfg.n_kv_heads = std::max(cfg.n_kv_heads, s.n_kv_heads);
      cfg.hidden_dim = std::max(cfg.hidden_dim, s.hidden_dim);
    }
    cfg.blocks = std::move(shapes);
    m.validate();
  }
  summary.parameters_after = detail::model_parameters(m);
  return summary;
}

}  // namespace surgeon::llama
