// compact_check: the model files of llama_cpp_check.py's compaction case. Loads a GGUF "llama"
// model, zeroes a fixed set of FFN neurons and attention heads (what structured pruning leaves),
// writes that model as it is (same shapes, "llama") and its compaction (examples/llama/compact.hpp)
// as GGUF "deci"; the two must compute the same function, in surgeon and in llama.cpp.
//
//   compact_check IN.gguf ZEROED.gguf COMPACT.gguf
//
// Block l is pruned by l mod 5, so every kind of removal occurs in a model of 5 blocks or more:
//   0: the whole attention (attn_output zero; block 0 then keeps one zero head for llama.cpp) and
//      FFN neurons i with i mod 3 = 0 (gate rows) or i mod 5 = 1 (up rows);
//   1: the whole FFN (gate zero): attention only, so zero neurons are kept for llama.cpp;
//   2: the whole attention (value rows zero);
//   3: every query head of KV group 0 and the first of group 1 (attn_output columns);
//   4: the values of the last KV group and the even FFN neurons (down columns).
// Prints the compaction per block. Exit status 1 with a message on any error.
#include <cstdio>
#include <exception>
#include <string>

#include "llama/compact.hpp"
#include "llama/load.hpp"
#include "llama/save.hpp"

namespace {

namespace llama = surgeon::llama;
using surgeon::index_t;

// Zeroes columns [first, first + count) of the row-major `[rows, cols]` matrix `w`.
void zero_columns(std::vector<float>& w, index_t rows, index_t cols, index_t first, index_t count) {
  for (index_t r = 0; r < rows; ++r) std::fill_n(w.begin() + r * cols + first, count, 0.0f);
}

// Zeroes rows [first, first + count) of the row-major `[.., cols]` matrix `w`.
void zero_rows(std::vector<float>& w, index_t cols, index_t first, index_t count) {
  std::fill_n(w.begin() + first * cols, count * cols, 0.0f);
}

void prune_structurally(llama::model& m) {
  const index_t d = m.cfg.dim, hd = m.cfg.head_dim();
  for (index_t l = 0; l < m.cfg.n_layers; ++l) {
    llama::block_weights& b = m.blocks[static_cast<std::size_t>(l)];
    const llama::block_shape shape = m.cfg.block(l);
    const index_t group = shape.n_heads / shape.n_kv_heads;
    const index_t q_width = shape.n_heads * hd;
    switch (l % 5) {
      case 0:
        std::fill(b.wo.begin(), b.wo.end(), 0.0f);
        for (index_t i = 0; i < shape.hidden_dim; ++i) {
          if (i % 3 == 0) zero_rows(b.w_gate, d, i, 1);
          if (i % 5 == 1) zero_rows(b.w_up, d, i, 1);
        }
        break;
      case 1:
        std::fill(b.w_gate.begin(), b.w_gate.end(), 0.0f);
        break;
      case 2:
        std::fill(b.wv.begin(), b.wv.end(), 0.0f);
        break;
      case 3:
        zero_columns(b.wo, d, q_width, 0, (group + 1) * hd);
        break;
      default:
        zero_rows(b.wv, d, (shape.n_kv_heads - 1) * hd, hd);
        for (index_t i = 0; i < shape.hidden_dim; i += 2) zero_columns(b.w_down, d, shape.hidden_dim, i, 1);
        break;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: compact_check IN.gguf ZEROED.gguf COMPACT.gguf\n");
    return 1;
  }
  try {
    const std::string input = argv[1];
    llama::model m = llama::from_gguf(surgeon::io::gguf_reader::open(input));
    prune_structurally(m);
    llama::write_gguf(input, argv[2], m, surgeon::io::ggml_type::f32);
    const llama::compact_summary s = llama::compact(m);
    llama::save_model(llama::model_format::gguf, input, argv[3], m, surgeon::io::ggml_type::f32);
    for (std::size_t l = 0; l < s.blocks.size(); ++l) {
      const llama::compacted_block& b = s.blocks[l];
      std::printf(
          "block %zu: heads %lld -> %lld (%lld padding), kv heads %lld -> %lld (%lld padding), ffn %lld -> "
          "%lld (%lld padding), parameters %lld -> %lld\n",
          l, static_cast<long long>(b.before.n_heads), static_cast<long long>(b.after.n_heads),
          static_cast<long long>(b.padding_heads), static_cast<long long>(b.before.n_kv_heads),
          static_cast<long long>(b.after.n_kv_heads), static_cast<long long>(b.padding_kv_heads),
          static_cast<long long>(b.before.hidden_dim), static_cast<long long>(b.after.hidden_dim),
          static_cast<long long>(b.padding_hidden), static_cast<long long>(b.parameters_before),
          static_cast<long long>(b.parameters_after));
    }
    std::printf("parameters %lld -> %lld\n", static_cast<long long>(s.parameters_before),
                static_cast<long long>(s.parameters_after));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compact_check: %s\n", e.what());
    return 1;
  }
}
