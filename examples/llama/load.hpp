/// @file load.hpp
/// @brief Loads a Llama-family model (weights + tokenizer) from a llama2.c checkpoint or a GGUF file.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/gguf.hpp>
#include <surgeon/io/llama2c.hpp>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "llama/llama2c_model.hpp"
#include "llama/model.hpp"
#include "llama/tokenizer.hpp"

namespace surgeon::llama {

/// @brief The file format a model came from.
enum class model_format { llama2c, gguf };

/// @brief Either tokenizer of the supported models.
class tokenizer {
 public:
  explicit tokenizer(sentencepiece_bpe t, bool add_bos) : impl_(std::move(t)), add_bos_(add_bos) {}
  explicit tokenizer(byte_level_bpe t, bool add_bos) : impl_(std::move(t)), add_bos_(add_bos) {}

  /// @brief Token ids of `text`, with one BOS at the start when the model's tokenizer adds one
  /// (llama2.c models always; GGUF models per `tokenizer.ggml.add_bos_token`) — METHOD.md §8.
  std::vector<std::int32_t> encode(std::string_view text) const {
    return std::visit([&](const auto& t) { return t.encode(text, add_bos_, false); }, impl_);
  }
  /// @brief The text of `ids` (BOS/EOS dropped).
  std::string decode(const std::vector<std::int32_t>& ids) const {
    return std::visit([&](const auto& t) { return t.decode(ids); }, impl_);
  }
  bool adds_bos() const { return add_bos_; }

 private:
  std::variant<sentencepiece_bpe, byte_level_bpe> impl_;
  bool add_bos_ = true;
};

/// @brief A loaded model with its tokenizer and where it came from.
struct loaded_model {
  model weights;
  std::unique_ptr<tokenizer> vocab;
  model_format format = model_format::llama2c;
  std::string path;
};

namespace detail {

// The tensor `name`, which must be a `[rows, cols]` matrix (GGUF ne = {cols, rows}; a vector of
// `cols` for rows == 1), dequantised to fp32.
inline std::vector<float> gguf_matrix(const io::gguf_reader& file, const std::string& name, index_t rows,
                                      index_t cols) {
  if (!file.contains(name)) SURGEON_THROW(io_error, "GGUF model has no tensor '{}'", name);
  const io::gguf_tensor_info& info = file.info(name);
  std::vector<std::int64_t> ne = info.ne;
  while (ne.size() > 1 && ne.back() == 1) ne.pop_back();  // trailing unit dimensions carry no shape
  const bool shaped =
      rows == 1 ? ne.size() == 1 && ne[0] == cols : ne.size() == 2 && ne[0] == cols && ne[1] == rows;
  if (!shaped) {
    std::string dims;
    for (const std::int64_t n : info.ne) dims += (dims.empty() ? "" : ", ") + std::to_string(n);
    const std::string expected =
        rows == 1 ? std::to_string(cols) : std::to_string(cols) + ", " + std::to_string(rows);
    SURGEON_THROW(io_error, "GGUF tensor '{}' has ne [{}], expected ne [{}] (GGUF lists columns first)", name,
                  dims, expected);
  }
  std::vector<float> values = file.dequantize(info);
  if (static_cast<index_t>(values.size()) != rows * cols) {
    SURGEON_THROW(io_error, "GGUF tensor '{}' has {} values, expected [{}, {}]", name, values.size(), rows,
                  cols);
  }
  return values;
}

// Key `key` of a file with `blocks` blocks: a scalar (the same for every block) or an integer
// array of one entry per block, as llama.cpp's get_key_or_arr reads it.
inline std::vector<index_t> gguf_per_block(const io::gguf_reader& file, const std::string& key,
                                           index_t blocks) {
  const io::gguf_value& value = file.get(key);
  if (!value.is_array())
    return std::vector<index_t>(static_cast<std::size_t>(blocks), static_cast<index_t>(file.get_uint(key)));
  const std::vector<std::int64_t> entries = file.get_int_array(key);
  if (static_cast<index_t>(entries.size()) != blocks)
    SURGEON_THROW(io_error, "GGUF key '{}' has {} entries for {} blocks", key, entries.size(), blocks);
  std::vector<index_t> result;
  for (const std::int64_t n : entries) {
    if (n < 0) SURGEON_THROW(io_error, "GGUF key '{}' has a negative entry {}", key, n);
    result.push_back(static_cast<index_t>(n));
  }
  return result;
}

}  // namespace detail

/// @brief The in-memory model of a GGUF file with architecture "llama" or "deci" (weights
/// dequantised to fp32). "deci" (as llama.cpp builds it: layer by layer) may give
/// feed_forward_length, attention.head_count and attention.head_count_kv one entry per block; a
/// block with 0 heads then has no attention tensors (attn_norm included) and one with FFN width 0
/// no FFN tensors (ffn_norm included). `attention.key_length`, when present, is the head size
/// (else dim / the heads of block 0, as llama.cpp derives it). Cost: reads and dequantises every
/// tensor, O(parameters).
/// @throws io_error if a key or tensor is missing or has the wrong shape, a per-block array has
///         the wrong length, heads are inconsistent (kv heads not dividing the heads, kv heads
///         without heads), or the architecture is neither.
inline model from_gguf(const io::gguf_reader& file) {
  const std::string arch = file.get_string("general.architecture");
  if (arch != "llama" && arch != "deci")
    SURGEON_THROW(io_error, "GGUF architecture '{}' is not supported (need 'llama' or 'deci')", arch);
  const std::string prefix = arch + ".";
  auto has = [&](const std::string& key) { return file.find(prefix + key) != nullptr; };
  model m;
  m.cfg.dim = static_cast<index_t>(file.get_uint(prefix + "embedding_length"));
  m.cfg.n_layers = static_cast<index_t>(file.get_uint(prefix + "block_count"));
  const std::vector<index_t> hidden =
      detail::gguf_per_block(file, prefix + "feed_forward_length", m.cfg.n_layers);
  const std::vector<index_t> heads =
      detail::gguf_per_block(file, prefix + "attention.head_count", m.cfg.n_layers);
  // Without head_count_kv every head has its own key/value head (llama.cpp's default).
  const std::vector<index_t> kv_heads =
      has("attention.head_count_kv")
          ? detail::gguf_per_block(file, prefix + "attention.head_count_kv", m.cfg.n_layers)
          : heads;
  std::vector<block_shape> shapes;
  for (std::size_t l = 0; l < heads.size(); ++l)
    shapes.push_back(block_shape{heads[l], kv_heads[l], hidden[l]});
  const bool uniform =
      std::all_of(shapes.begin(), shapes.end(), [&](const block_shape& b) { return b == shapes.front(); });
  if (has("attention.key_length")) {
    m.cfg.head_size = static_cast<index_t>(file.get_uint(prefix + "attention.key_length"));
    if (has("attention.value_length") &&
        static_cast<index_t>(file.get_uint(prefix + "attention.value_length")) != m.cfg.head_size)
      SURGEON_THROW(io_error, "GGUF model has keys of {} and values of {} per head; surgeon needs them equal",
                    m.cfg.head_size, file.get_uint(prefix + "attention.value_length"));
  } else if (!uniform && !shapes.empty()) {
    // llama.cpp derives the head size from block 0 (hparams.n_head() reads layer 0).
    if (shapes.front().n_heads == 0)
      SURGEON_THROW(io_error, "GGUF model has no {}attention.key_length and block 0 has no heads", prefix);
    m.cfg.head_size = m.cfg.dim / shapes.front().n_heads;
  }
  if (uniform && !shapes.empty()) {
    m.cfg.n_heads = shapes.front().n_heads;
    m.cfg.n_kv_heads = shapes.front().n_kv_heads;
    m.cfg.hidden_dim = shapes.front().hidden_dim;
  } else {
    for (const block_shape& b : shapes) {
      m.cfg.n_heads = std::max(m.cfg.n_heads, b.n_heads);
      m.cfg.n_kv_heads = std::max(m.cfg.n_kv_heads, b.n_kv_heads);
      m.cfg.hidden_dim = std::max(m.cfg.hidden_dim, b.hidden_dim);
    }
    m.cfg.blocks = shapes;
  }
  m.cfg.max_seq_len = static_cast<index_t>(file.get_uint(prefix + "context_length"));
  if (has("rope.freq_base")) m.cfg.rope_theta = static_cast<float>(file.get_float(prefix + "rope.freq_base"));
  if (has("attention.layer_norm_rms_epsilon")) {
    m.cfg.norm_eps = static_cast<float>(file.get_float(prefix + "attention.layer_norm_rms_epsilon"));
  }
  const auto& embedding = file.info("token_embd.weight");
  if (embedding.ne.size() != 2) SURGEON_THROW(io_error, "GGUF token_embd.weight is not a matrix");
  m.cfg.vocab_size = static_cast<index_t>(embedding.ne[1]);
  m.cfg.tied_embeddings = !file.contains("output.weight");
  try {
    m.cfg.validate();
  } catch (const logic_error& e) {
    SURGEON_THROW(io_error, "GGUF model has an inconsistent shape: {}", e.what());
  }
  const index_t d = m.cfg.dim;
  m.token_embedding = detail::gguf_matrix(file, "token_embd.weight", m.cfg.vocab_size, d);
  m.final_norm = detail::gguf_matrix(file, "output_norm.weight", 1, d);
  if (!m.cfg.tied_embeddings) m.output = detail::gguf_matrix(file, "output.weight", m.cfg.vocab_size, d);
  for (index_t l = 0; l < m.cfg.n_layers; ++l) {
    block_weights b;
    for (const block_tensor& t : block_tensors) {
      if (tensor_size(t, m.cfg, l) == 0) continue;  // a part this block does not have: no tensor in the file
      b.*t.weights = detail::gguf_matrix(file, gguf_tensor_name(l, t), extent_of(t.rows, m.cfg, l),
                                         extent_of(t.cols, m.cfg, l));
    }
    m.blocks.push_back(std::move(b));
  }
  m.validate();
  return m;
}

/// @brief The byte-level BPE tokenizer stored in a GGUF file's metadata.
inline tokenizer gguf_tokenizer(const io::gguf_reader& file) {
  const std::string model_name = file.get_string("tokenizer.ggml.model");
  if (model_name != "gpt2")
    SURGEON_THROW(io_error, "GGUF tokenizer model '{}' is not supported (need 'gpt2')", model_name);
  const std::vector<std::string> tokens = file.get_string_array("tokenizer.ggml.tokens");
  const std::vector<std::string> merges = file.get_string_array("tokenizer.ggml.merges");
  std::vector<std::int32_t> types;
  if (file.find("tokenizer.ggml.token_type") != nullptr) {
    for (const auto t : file.get_int_array("tokenizer.ggml.token_type"))
      types.push_back(static_cast<std::int32_t>(t));
  }
  const std::string pre =
      file.find("tokenizer.ggml.pre") != nullptr ? file.get_string("tokenizer.ggml.pre") : "gpt2";
  const auto bos = static_cast<std::int32_t>(file.get_uint("tokenizer.ggml.bos_token_id"));
  const bool add_bos =
      file.find("tokenizer.ggml.add_bos_token") != nullptr && file.get_bool("tokenizer.ggml.add_bos_token");
  return tokenizer(byte_level_bpe(tokens, merges, types, pre, bos, -1, add_bos), add_bos);
}

/// @brief Loads weights and tokenizer from `path`: a `.gguf` file (its own tokenizer, or the
/// llama2.c tokenizer `tokenizer_path` when given, for a GGUF converted from a llama2.c checkpoint),
/// or a llama2.c `.bin` checkpoint whose tokenizer is `tokenizer_path` (default: `tok<vocab>.bin`
/// beside the checkpoint).
/// @throws io_error on any problem with the files.
inline loaded_model load_model(const std::string& path, std::string tokenizer_path = "") {
  loaded_model result;
  result.path = path;
  const std::filesystem::path file(path);
  if (file.extension() == ".gguf") {
    const io::gguf_reader reader = io::gguf_reader::open(path);
    result.format = model_format::gguf;
    result.weights = from_gguf(reader);
    if (tokenizer_path.empty()) {
      result.vocab = std::make_unique<tokenizer>(gguf_tokenizer(reader));
    } else {  // a GGUF made from a llama2.c checkpoint carries no tokenizer: its llama2.c one
      const io::llama2c_vocab vocab = io::read_llama2c_tokenizer(
          tokenizer_path, static_cast<std::int32_t>(result.weights.cfg.vocab_size));
      result.vocab = std::make_unique<tokenizer>(sentencepiece_bpe(vocab), true);
    }
    return result;
  }
  const io::llama2c_checkpoint ck = io::read_llama2c_checkpoint(path);
  result.format = model_format::llama2c;
  result.weights = from_llama2c(ck);
  if (tokenizer_path.empty()) {
    tokenizer_path = (file.parent_path() / ("tok" + std::to_string(ck.config.vocab_size) + ".bin")).string();
  }
  const io::llama2c_vocab vocab = io::read_llama2c_tokenizer(tokenizer_path, ck.config.vocab_size);
  result.vocab = std::make_unique<tokenizer>(sentencepiece_bpe(vocab), true);
  return result;
}

}  // namespace surgeon::llama
