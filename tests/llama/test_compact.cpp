// Models whose blocks have different shapes (examples/llama/layers.hpp `block_shape`), their GGUF
// form (architecture "deci": load.hpp `from_gguf`, save.hpp `write_deci_gguf`) and the compaction
// of a structurally pruned model into one (compact.hpp), on stories260K (dim 64, 5 blocks, 8 heads,
// 4 KV heads, FFN 172) from $SURGEON_SHARED_DIR (default ../shared); skipped when it is absent.
#include <surgeon/io/gguf.hpp>
#include <surgeon/io/llama2c.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "llama/compact.hpp"
#include "llama/llama2c_model.hpp"
#include "llama/load.hpp"
#include "llama/runtime.hpp"
#include "llama/save.hpp"
#include "support/catch.hpp"
#include "support/skip.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
namespace llama = surgeon::llama;
using Catch::Matchers::Contains;
using surgeon::index_t;
using surgeon::io::gguf_reader;
using surgeon::io::gguf_value;
using surgeon::io::gguf_writer;

std::string stories_bin() {
  const char* env = std::getenv("SURGEON_SHARED_DIR");
  const std::string shared = env != nullptr && *env != '\0' ? env : "../shared";
  return shared + "/models/stories260K/stories260K.bin";
}

// stories260K (each test case skips first when it is absent).
llama::model load_stories() {
  return llama::from_llama2c(surgeon::io::read_llama2c_checkpoint(stories_bin()));
}

// A GGUF "llama" file of the uniform model `m` (F32, no tokenizer: from_gguf needs none), as
// llama2c_to_gguf.py writes one.
void write_llama_gguf(const llama::model& m, const std::string& path) {
  gguf_writer w;
  w.set_string("general.architecture", "llama");
  w.set_uint32("llama.context_length", static_cast<std::uint32_t>(m.cfg.max_seq_len));
  w.set_uint32("llama.embedding_length", static_cast<std::uint32_t>(m.cfg.dim));
  w.set_uint32("llama.block_count", static_cast<std::uint32_t>(m.cfg.n_layers));
  w.set_uint32("llama.feed_forward_length", static_cast<std::uint32_t>(m.cfg.hidden_dim));
  w.set_uint32("llama.attention.head_count", static_cast<std::uint32_t>(m.cfg.n_heads));
  w.set_uint32("llama.attention.head_count_kv", static_cast<std::uint32_t>(m.cfg.n_kv_heads));
  w.set_uint32("llama.rope.dimension_count", static_cast<std::uint32_t>(m.cfg.head_dim()));
  w.set_float32("llama.attention.layer_norm_rms_epsilon", m.cfg.norm_eps);
  w.set_float32("llama.rope.freq_base", m.cfg.rope_theta);
  const auto dim = static_cast<std::int64_t>(m.cfg.dim);
  const auto vocab = static_cast<std::int64_t>(m.cfg.vocab_size);
  using f32 = surgeon::io::ggml_type;
  w.add_tensor("token_embd.weight", {dim, vocab}, f32::f32, m.token_embedding.data());
  w.add_tensor("output_norm.weight", {dim}, f32::f32, m.final_norm.data());
  if (!m.cfg.tied_embeddings) w.add_tensor("output.weight", {dim, vocab}, f32::f32, m.output.data());
  for (index_t l = 0; l < m.cfg.n_layers; ++l) {
    for (const llama::block_tensor& t : llama::block_tensors) {
      const auto rows = static_cast<std::int64_t>(llama::extent_of(t.rows, m.cfg, l));
      const auto cols = static_cast<std::int64_t>(llama::extent_of(t.cols, m.cfg, l));
      const std::vector<std::int64_t> ne =
          t.kind ? std::vector<std::int64_t>{cols, rows} : std::vector<std::int64_t>{cols};
      w.add_tensor(llama::gguf_tensor_name(l, t), ne, f32::f32,
                   (m.blocks[static_cast<std::size_t>(l)].*t.weights).data());
    }
  }
  w.write(path);
}

// Windows of stories260K-sized token ids, deterministic.
std::vector<std::int32_t> some_tokens(index_t count, index_t vocab) {
  std::vector<std::int32_t> tokens;
  for (index_t n = 0; n < count; ++n) tokens.push_back(static_cast<std::int32_t>((n * 37 + 11) % vocab));
  return tokens;
}

// max |a − b| / max |b|.
double relative_difference(const llama::runtime::matrix& a, const llama::runtime::matrix& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return static_cast<double>((a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff());
}

llama::runtime::matrix logits_of(const llama::model& m) {
  llama::runtime rt(m);
  return rt.logits(some_tokens(2 * 32, m.cfg.vocab_size), 2, 32);
}

// Zeroes columns [first, first + count) of the row-major `[rows, cols]` matrix `w`.
void zero_columns(std::vector<float>& w, index_t rows, index_t cols, index_t first, index_t count) {
  for (index_t r = 0; r < rows; ++r) std::fill_n(w.begin() + r * cols + first, count, 0.0f);
}
// Zeroes rows [first, first + count) of the row-major `[.., cols]` matrix `w`.
void zero_rows(std::vector<float>& w, index_t cols, index_t first, index_t count) {
  std::fill_n(w.begin() + first * cols, count * cols, 0.0f);
}

// The pruning the compaction tests undo, on stories260K (head_dim 8, groups of 2 query heads):
// block 0: all attention (attn_output zero) and FFN neurons 0-9 (gate rows), 10-19 (up rows),
//          20-29 (down columns): 142 neurons live, kept 160 (18 padding); one zero head and one
//          zero KV head kept (llama.cpp reads the head size from block 0);
// block 1: the whole FFN (gate zero): attention kept, so 32 zero neurons kept;
// block 2: the whole attention (values zero) and neurons 22-171 (down columns): 0 heads, 32
//          neurons (10 padding);
// block 3: query heads 2 and 3 (all of KV group 1, attn_output columns), head 4 (KV group 2 keeps
//          head 5) and KV group 3's values (heads 6 and 7): heads 0, 1, 5 + 1 padding, 2 KV heads;
// block 4: untouched.
void prune_by_hand(llama::model& m) {
  const index_t d = m.cfg.dim, hd = m.cfg.head_dim(), hidden = m.cfg.hidden_dim, q = m.cfg.n_heads * hd;
  llama::block_weights& b0 = m.blocks[0];
  std::fill(b0.wo.begin(), b0.wo.end(), 0.0f);
  zero_rows(b0.w_gate, d, 0, 10);
  zero_rows(b0.w_up, d, 10, 10);
  zero_columns(b0.w_down, d, hidden, 20, 10);
  std::fill(m.blocks[1].w_gate.begin(), m.blocks[1].w_gate.end(), 0.0f);
  std::fill(m.blocks[2].wv.begin(), m.blocks[2].wv.end(), 0.0f);
  zero_columns(m.blocks[2].w_down, d, hidden, 22, hidden - 22);
  llama::block_weights& b3 = m.blocks[3];
  zero_columns(b3.wo, d, q, 2 * hd, 2 * hd);
  zero_columns(b3.wo, d, q, 4 * hd, hd);
  zero_rows(b3.wv, d, 3 * hd, hd);
}

index_t block_parameters(const llama::block_weights& b) {
  index_t n = 0;
  for (const llama::block_tensor& t : llama::block_tensors) n += static_cast<index_t>((b.*t.weights).size());
  return n;
}

// Writes `input` to `output` again with `edit` applied to the metadata and `keep(name)` deciding
// which tensors stay (their bytes copied as they are); `reshape` may give a tensor other dims.
void rewrite_gguf(
    const std::string& input, const std::string& output, const std::function<void(gguf_writer&)>& edit,
    const std::function<bool(const std::string&)>& keep,
    const std::function<std::vector<std::int64_t>(const surgeon::io::gguf_tensor_info&)>& reshape = {}) {
  const gguf_reader r = gguf_reader::open(input);
  gguf_writer w;
  w.copy_metadata_from(r);
  edit(w);
  for (const auto& info : r.tensors()) {
    if (!keep(info.name)) continue;
    const std::vector<float> values = r.dequantize(info);
    const std::vector<std::int64_t> ne = reshape ? reshape(info) : info.ne;
    w.add_tensor(info.name, ne, surgeon::io::ggml_type::f32, values.data());
  }
  w.write(output);
}

}  // namespace

TEST_CASE("block shapes: per-block extents, validation and an uneven model's forward pass",
          "[llama][compact]") {
  llama::config cfg;
  cfg.dim = 16;
  cfg.n_layers = 3;
  cfg.vocab_size = 5;
  cfg.head_size = 4;
  cfg.blocks = {{4, 2, 12}, {0, 0, 8}, {2, 2, 0}};
  REQUIRE_NOTHROW(cfg.validate());
  CHECK_FALSE(cfg.uniform());
  CHECK(llama::extent_of(llama::extent::q_dim, cfg, 0) == 16);
  CHECK(llama::extent_of(llama::extent::kv_dim, cfg, 0) == 8);
  CHECK(llama::extent_of(llama::extent::q_dim, cfg, 1) == 0);
  CHECK(llama::extent_of(llama::extent::one_if_attention, cfg, 1) == 0);
  CHECK(llama::extent_of(llama::extent::one_if_ffn, cfg, 1) == 1);
  CHECK(llama::extent_of(llama::extent::hidden, cfg, 2) == 0);
  CHECK(llama::extent_of(llama::extent::one_if_ffn, cfg, 2) == 0);

  SECTION("kv heads must divide heads, and be 0 exactly when heads are") {
    cfg.blocks[0] = {4, 3, 12};
    CHECK_THROWS_WITH(cfg.validate(), Contains("3 kv heads do not divide 4 heads"));
    cfg.blocks[0] = {4, 0, 12};
    CHECK_THROWS_WITH(cfg.validate(), Contains("0 only together"));
    cfg.blocks[0] = {0, 2, 12};
    CHECK_THROWS_WITH(cfg.validate(), Contains("0 only together"));
  }
  SECTION("one shape per block") {
    cfg.blocks.pop_back();
    CHECK_THROWS_WITH(cfg.validate(), Contains("2 block shapes for 3 blocks"));
  }
  SECTION("the head size defaults to dim / n_heads") {
    llama::config uniform;
    uniform.dim = 64;
    uniform.n_heads = 8;
    CHECK(uniform.head_dim() == 8);
    uniform.head_size = 16;
    CHECK(uniform.head_dim() == 16);
  }
}

TEST_CASE("compact: removes exactly the zero neurons and heads, and the logits stay", "[llama][compact]") {
  if (!fs::exists(stories_bin())) SURGEON_SKIP("no " + stories_bin());
  llama::model m = load_stories();
  prune_by_hand(m);
  const llama::model pruned = m;
  const auto before = logits_of(pruned);

  const llama::compact_summary s = llama::compact(m);
  REQUIRE(s.blocks.size() == 5);
  const index_t d = 64, hd = 8;
  // {heads, kv heads, FFN width} kept, and the zero padding among them.
  CHECK(s.blocks[0].after == llama::block_shape{1, 1, 160});
  CHECK(s.blocks[0].padding_heads == 1);
  CHECK(s.blocks[0].padding_kv_heads == 1);
  CHECK(s.blocks[0].padding_hidden == 18);
  CHECK(s.blocks[1].after == llama::block_shape{8, 4, 32});
  CHECK(s.blocks[1].padding_hidden == 32);
  CHECK(s.blocks[2].after == llama::block_shape{0, 0, 32});
  CHECK(s.blocks[2].padding_hidden == 10);
  CHECK(s.blocks[3].after == llama::block_shape{4, 2, 172});
  CHECK(s.blocks[3].padding_heads == 1);
  CHECK(s.blocks[3].padding_hidden == 0);
  CHECK(s.blocks[4].after == llama::block_shape{8, 4, 172});
  for (const auto& b : s.blocks) CHECK(b.before == llama::block_shape{8, 4, 172});

  // The arrays shrank by exactly the removed rows and columns.
  auto attention = [&](index_t heads, index_t kv) {
    return heads > 0 ? d + 2 * heads * hd * d + 2 * kv * hd * d : 0;
  };
  auto ffn = [&](index_t hidden) { return hidden > 0 ? d + 3 * hidden * d : 0; };
  const index_t full = attention(8, 4) + ffn(172);
  for (std::size_t l = 0; l < 5; ++l) {
    const llama::block_shape a = s.blocks[l].after;
    CHECK(s.blocks[l].parameters_before == full);
    CHECK(s.blocks[l].parameters_after == attention(a.n_heads, a.n_kv_heads) + ffn(a.hidden_dim));
    CHECK(block_parameters(m.blocks[l]) == s.blocks[l].parameters_after);
  }
  CHECK(m.blocks[2].attn_norm.empty());
  CHECK(m.blocks[2].wq.empty());
  CHECK(s.parameters_before - s.parameters_after ==
        5 * full -
            (s.blocks[0].parameters_after + s.blocks[1].parameters_after + s.blocks[2].parameters_after +
             s.blocks[3].parameters_after + s.blocks[4].parameters_after));
  CHECK(m.cfg.head_dim() == hd);
  CHECK(m.cfg.blocks.size() == 5);

  // The same function.
  CHECK(relative_difference(logits_of(m), before) < 1e-5);

  SECTION("heads keep their order within a group; padding heads and neurons are zero") {
    const llama::block_weights& b3 = m.blocks[3];
    const llama::block_weights& p3 = pruned.blocks[3];
    // Query heads 0, 1 | 5, padding; KV heads 0, 2.
    const std::vector<index_t> order = {0, 1, 5, -1};
    for (std::size_t k = 0; k < order.size(); ++k) {
      for (index_t r = 0; r < hd * d; ++r) {
        const float expected = order[k] < 0 ? 0.0f : p3.wq[static_cast<std::size_t>(order[k] * hd * d + r)];
        REQUIRE(b3.wq[k * static_cast<std::size_t>(hd * d) + static_cast<std::size_t>(r)] == expected);
      }
    }
    CHECK(std::equal(b3.wk.begin(), b3.wk.begin() + hd * d, p3.wk.begin()));
    CHECK(std::equal(b3.wk.begin() + hd * d, b3.wk.end(), p3.wk.begin() + 2 * hd * d));
    for (index_t r = 0; r < d; ++r) {  // attn_output's padding head columns are zero
      for (index_t c = 3 * hd; c < 4 * hd; ++c)
        REQUIRE(b3.wo[static_cast<std::size_t>(r * 4 * hd + c)] == 0.0f);
    }
    // Block 0's FFN: the 142 live neurons in order, then 18 zero ones.
    const llama::block_weights& b0 = m.blocks[0];
    CHECK(std::equal(b0.w_up.begin(), b0.w_up.begin() + d, pruned.blocks[0].w_up.begin() + 30 * d));
    CHECK(std::all_of(b0.w_gate.begin() + 142 * d, b0.w_gate.end(), [](float v) { return v == 0.0f; }));
    CHECK(std::all_of(b0.wq.begin(), b0.wq.end(), [](float v) { return v == 0.0f; }));
    CHECK(std::all_of(b0.wv.begin(), b0.wv.end(), [](float v) { return v == 0.0f; }));
  }
  SECTION("ffn_multiple 1 keeps exactly the live neurons, but one for a block with attention only") {
    llama::model again = pruned;
    const llama::compact_summary s1 = llama::compact(again, 1);
    CHECK(s1.blocks[0].after.hidden_dim == 142);
    CHECK(s1.blocks[1].after.hidden_dim == 1);
    CHECK(s1.blocks[2].after.hidden_dim == 22);
    CHECK(s1.blocks[0].padding_hidden == 0);
    CHECK(relative_difference(logits_of(again), before) < 1e-5);
  }
  SECTION("an attention-free block with no live neuron disappears entirely") {
    llama::model again = pruned;
    std::fill(again.blocks[2].w_up.begin(), again.blocks[2].w_up.end(), 0.0f);
    const auto reference = logits_of(again);
    const llama::compact_summary s2 = llama::compact(again);
    CHECK(s2.blocks[2].after == llama::block_shape{0, 0, 0});
    CHECK(again.blocks[2].ffn_norm.empty());
    CHECK(s2.blocks[2].parameters_after == 0);
    CHECK(relative_difference(logits_of(again), reference) < 1e-5);
  }
  SECTION("compaction is idempotent, and a model with nothing to remove stays uniform") {
    llama::model again = m;
    const llama::compact_summary s3 = llama::compact(again);
    for (std::size_t l = 0; l < 5; ++l) CHECK(s3.blocks[l].after == s.blocks[l].after);
    llama::model intact = load_stories();
    const llama::compact_summary s4 = llama::compact(intact);
    CHECK(intact.cfg.blocks.empty());
    CHECK(s4.parameters_after == s4.parameters_before);
  }
  SECTION("the backward pass and its hooks follow each block's shape") {
    llama::runtime rt(m);
    llama::runtime rt_pruned(pruned);
    std::set<std::string> seen;
    llama::hooks h;
    h.output_grad = [&](const std::string& name, surgeon::host_matrix_view<const float> gy) {
      seen.insert(name);
      CHECK(gy.cols() > 0);
    };
    h.input = [&](const std::string& key, surgeon::host_matrix_view<const float> x) {
      seen.insert(key);
      CHECK(x.cols() > 0);
    };
    const auto tokens = some_tokens(2 * 32, m.cfg.vocab_size);
    const double loss = rt.backward(tokens, 2, 32, h);
    CHECK(std::abs(loss - rt_pruned.loss(tokens, 2, 32)) < 1e-5 * loss);
    CHECK(seen.count("blk.2.attn_q") == 0);
    CHECK(seen.count("blk.2.attn_in") == 0);
    CHECK(seen.count("blk.2.ffn_down") == 1);
    CHECK(seen.count("blk.3.attn_output_in") == 1);
    // The linear layers of parts a block no longer has are empty.
    CHECK(m.linear(2, llama::linear_kind::attn_q).rows == 0);
    CHECK(m.linear(3, llama::linear_kind::attn_output).cols == 4 * hd);
    // forward() with a stop inside an attention-free block stops there.
    llama::hooks inputs;
    std::vector<std::string> keys;
    inputs.input = [&](const std::string& key, surgeon::host_matrix_view<const float>) {
      keys.push_back(key);
    };
    rt.forward(tokens, 2, 32, inputs, 2, llama::linear_kind::attn_output);
    CHECK(keys.back() == "blk.1.ffn_down_in");
  }
}

TEST_CASE("deci GGUF: a compacted model written and read back has the same shapes, weights and logits",
          "[llama][compact][io]") {
  if (!fs::exists(stories_bin())) SURGEON_SKIP("no " + stories_bin());
  llama::model m = load_stories();
  surgeon::test::temp_dir dir;
  const std::string llama_file = dir.file("stories260K.gguf");
  write_llama_gguf(m, llama_file);
  prune_by_hand(m);
  llama::compact(m);
  const std::string deci_file = dir.file("compact.gguf");
  llama::save_model(llama::model_format::gguf, llama_file, deci_file, m, surgeon::io::ggml_type::f32);

  const gguf_reader r = gguf_reader::open(deci_file);
  CHECK(r.get_string("general.architecture") == "deci");
  for (const auto& [key, value] : r.metadata()) CHECK(key.rfind("llama.", 0) == std::string::npos);
  const gguf_value& heads = r.get("deci.attention.head_count");
  CHECK(heads.is_array());
  CHECK(heads.array_type() == surgeon::io::gguf_value_type::int32);
  CHECK(r.get_int_array("deci.attention.head_count") == std::vector<std::int64_t>{1, 8, 0, 4, 8});
  CHECK(r.get_int_array("deci.attention.head_count_kv") == std::vector<std::int64_t>{1, 4, 0, 2, 4});
  CHECK(r.get_int_array("deci.feed_forward_length") == std::vector<std::int64_t>{160, 32, 32, 172, 172});
  CHECK(r.get_uint("deci.attention.key_length") == 8);
  CHECK(r.get_uint("deci.attention.value_length") == 8);
  CHECK(r.get_uint("deci.rope.dimension_count") == 8);
  CHECK(r.get_uint("deci.embedding_length") == 64);
  CHECK_FALSE(r.contains("blk.2.attn_norm.weight"));
  CHECK_FALSE(r.contains("blk.2.attn_q.weight"));
  CHECK_FALSE(r.contains("blk.2.attn_output.weight"));
  CHECK(r.contains("blk.2.ffn_norm.weight"));
  CHECK(r.info("blk.3.attn_output.weight").ne == std::vector<std::int64_t>{32, 64});
  CHECK(r.info("blk.3.attn_k.weight").ne == std::vector<std::int64_t>{64, 16});
  CHECK(r.info("blk.0.ffn_down.weight").ne == std::vector<std::int64_t>{160, 64});
  CHECK(r.tensors().size() == 2 + 4 * 9 + 4);  // token_embd, output_norm; block 2 lacks 5

  const llama::model back = llama::from_gguf(r);
  CHECK(back.cfg.blocks.size() == 5);
  for (index_t l = 0; l < 5; ++l) CHECK(back.cfg.block(l) == m.cfg.block(l));
  CHECK(back.cfg.head_dim() == 8);
  for (std::size_t l = 0; l < 5; ++l) {
    for (const llama::block_tensor& t : llama::block_tensors)
      CHECK(back.blocks[l].*t.weights == m.blocks[l].*t.weights);
  }
  CHECK(back.token_embedding == m.token_embedding);
  CHECK((logits_of(back) - logits_of(m)).cwiseAbs().maxCoeff() == 0.0f);

  SECTION("a deci file written again keeps its shapes") {
    const std::string again = dir.file("again.gguf");
    llama::save_model(llama::model_format::gguf, deci_file, again, back, surgeon::io::ggml_type::f32);
    const llama::model third = llama::from_gguf(gguf_reader::open(again));
    for (index_t l = 0; l < 5; ++l) CHECK(third.cfg.block(l) == m.cfg.block(l));
    CHECK(third.blocks[3].wo == m.blocks[3].wo);
  }
  SECTION("Q8_0 output: rows that are not whole blocks of 32 fall back to F16") {
    const std::string q8 = dir.file("q8.gguf");
    const llama::save_summary summary =
        llama::save_model(llama::model_format::gguf, llama_file, q8, m, surgeon::io::ggml_type::q8_0);
    CHECK(std::find(summary.f16_fallback.begin(), summary.f16_fallback.end(), "blk.0.attn_output.weight") !=
          summary.f16_fallback.end());  // one head of 8: 8 columns
    const gguf_reader q = gguf_reader::open(q8);
    CHECK(q.info("blk.0.ffn_down.weight").type == surgeon::io::ggml_type::q8_0);  // 160 = 5 blocks
    CHECK(llama::from_gguf(q).cfg.block(3) == m.cfg.block(3));
  }
  SECTION("a uniform model read from per-block arrays is uniform") {
    llama::model intact = load_stories();
    const std::string arrays = dir.file("arrays.gguf");
    rewrite_gguf(
        llama_file, arrays,
        [](gguf_writer& w) {
          w.set("llama.feed_forward_length", gguf_value::array(std::vector<std::int32_t>(5, 172)));
          w.set("llama.attention.head_count", gguf_value::array(std::vector<std::uint32_t>(5, 8)));
        },
        [](const std::string&) { return true; });
    const llama::model read = llama::from_gguf(gguf_reader::open(arrays));
    CHECK(read.cfg.blocks.empty());
    CHECK(read.cfg.hidden_dim == 172);
    CHECK(read.cfg.n_heads == 8);
    CHECK(read.blocks[4].w_down == intact.blocks[4].w_down);
  }
}

TEST_CASE("deci GGUF: inconsistent files and llama2.c output of uneven blocks are refused",
          "[llama][compact][io]") {
  if (!fs::exists(stories_bin())) SURGEON_SKIP("no " + stories_bin());
  llama::model m = load_stories();
  surgeon::test::temp_dir dir;
  const std::string llama_file = dir.file("stories260K.gguf");
  write_llama_gguf(m, llama_file);
  prune_by_hand(m);
  llama::compact(m);
  const std::string deci_file = dir.file("compact.gguf");
  llama::save_model(llama::model_format::gguf, llama_file, deci_file, m, surgeon::io::ggml_type::f32);
  const std::string bad = dir.file("bad.gguf");
  auto all = [](const std::string&) { return true; };
  auto read_bad = [&] { return llama::from_gguf(gguf_reader::open(bad)); };

  SECTION("an array of the wrong length") {
    rewrite_gguf(
        deci_file, bad,
        [](gguf_writer& w) {
          w.set("deci.feed_forward_length", gguf_value::array(std::vector<std::int32_t>{160, 32}));
        },
        all);
    CHECK_THROWS_AS(read_bad(), surgeon::io_error);
    CHECK_THROWS_WITH(read_bad(), Contains("'deci.feed_forward_length' has 2 entries for 5 blocks"));
  }
  SECTION("kv heads that do not divide the heads") {
    rewrite_gguf(
        deci_file, bad,
        [](gguf_writer& w) {
          w.set("deci.attention.head_count_kv", gguf_value::array(std::vector<std::int32_t>{1, 3, 0, 2, 4}));
        },
        all);
    CHECK_THROWS_AS(read_bad(), surgeon::io_error);
    CHECK_THROWS_WITH(read_bad(), Contains("3 kv heads do not divide 8 heads"));
  }
  SECTION("kv heads without heads") {
    rewrite_gguf(
        deci_file, bad,
        [](gguf_writer& w) {
          w.set("deci.attention.head_count_kv", gguf_value::array(std::vector<std::int32_t>{1, 4, 2, 2, 4}));
        },
        all);
    CHECK_THROWS_WITH(read_bad(), Contains("0 only together"));
  }
  SECTION("a tensor missing") {
    rewrite_gguf(
        deci_file, bad, [](gguf_writer&) {},
        [](const std::string& name) { return name != "blk.3.attn_v.weight"; });
    CHECK_THROWS_AS(read_bad(), surgeon::io_error);
    CHECK_THROWS_WITH(read_bad(), Contains("no tensor 'blk.3.attn_v.weight'"));
  }
  SECTION("a tensor of the wrong shape (same number of values)") {
    rewrite_gguf(
        deci_file, bad, [](gguf_writer&) {}, all,
        [](const surgeon::io::gguf_tensor_info& info) {
          if (info.name == "blk.3.attn_output.weight") return std::vector<std::int64_t>{64, 32};
          return info.ne;
        });
    CHECK_THROWS_AS(read_bad(), surgeon::io_error);
    CHECK_THROWS_WITH(read_bad(),
                      Contains("'blk.3.attn_output.weight' has ne [64, 32], expected ne [32, 64]"));
  }
  SECTION("another architecture") {
    rewrite_gguf(
        deci_file, bad, [](gguf_writer& w) { w.set_string("general.architecture", "qwen2"); }, all);
    CHECK_THROWS_WITH(read_bad(), Contains("need 'llama' or 'deci'"));
  }
  SECTION("llama2.c output of a model whose blocks are not all alike") {
    const auto checkpoint = surgeon::io::read_llama2c_checkpoint(stories_bin());
    CHECK_THROWS_AS(llama::to_llama2c(m, checkpoint), surgeon::logic_error);
    CHECK_THROWS_WITH(llama::to_llama2c(m, checkpoint), Contains("write a .gguf output instead"));
    CHECK_THROWS_WITH(llama::save_model(llama::model_format::llama2c, stories_bin(), dir.file("out.bin"), m,
                                        surgeon::io::ggml_type::f32),
                      Contains("write a .gguf output instead"));
    CHECK_FALSE(fs::exists(dir.file("out.bin")));
  }
}
