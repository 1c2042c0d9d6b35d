/// @file load.hpp
/// @brief Loads a Llama-family model (weights + tokenizer) from a llama2.c checkpoint or a GGUF file.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/gguf.hpp>
#include <surgeon/io/llama2c.hpp>

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

inline std::vector<float> gguf_matrix(const io::gguf_reader& file, const std::string& name, index_t rows,
                                      index_t cols) {
  if (!file.contains(name)) SURGEON_THROW(io_error, "GGUF model has no tensor '{}'", name);
  std::vector<float> values = file.dequantize(name);
  if (static_cast<index_t>(values.size()) != rows * cols) {
    SURGEON_THROW(io_error, "GGUF tensor '{}' has {} values, expected [{}, {}]", name, values.size(), rows,
                  cols);
  }
  return values;
}

}  // namespace detail

/// @brief The in-memory model of a GGUF file with architecture "llama" (weights dequantised to fp32).
/// @throws io_error if a key or tensor is missing, has the wrong shape, or the architecture differs.
inline model from_gguf(const io::gguf_reader& file) {
  const std::string arch = file.get_string("general.architecture");
  if (arch != "llama")
    SURGEON_THROW(io_error, "GGUF architecture '{}' is not supported (need 'llama')", arch);
  model m;
  m.cfg.dim = static_cast<index_t>(file.get_uint("llama.embedding_length"));
  m.cfg.hidden_dim = static_cast<index_t>(file.get_uint("llama.feed_forward_length"));
  m.cfg.n_layers = static_cast<index_t>(file.get_uint("llama.block_count"));
  m.cfg.n_heads = static_cast<index_t>(file.get_uint("llama.attention.head_count"));
  m.cfg.n_kv_heads = file.find("llama.attention.head_count_kv") != nullptr
                         ? static_cast<index_t>(file.get_uint("llama.attention.head_count_kv"))
                         : m.cfg.n_heads;
  m.cfg.max_seq_len = static_cast<index_t>(file.get_uint("llama.context_length"));
  if (file.find("llama.rope.freq_base") != nullptr) {
    m.cfg.rope_theta = static_cast<float>(file.get_float("llama.rope.freq_base"));
  }
  if (file.find("llama.attention.layer_norm_rms_epsilon") != nullptr) {
    m.cfg.norm_eps = static_cast<float>(file.get_float("llama.attention.layer_norm_rms_epsilon"));
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
      b.*t.weights = detail::gguf_matrix(file, gguf_tensor_name(l, t), extent_of(t.rows, m.cfg),
                                         extent_of(t.cols, m.cfg));
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
