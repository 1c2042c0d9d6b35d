/// @file save.hpp
/// @brief Writing a (pruned) in-memory model back in the format it was loaded from, beside the
/// original: GGUF keeps the input's metadata and tensor order, llama2.c its header and RoPE tables.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/gguf.hpp>
#include <surgeon/io/llama2c.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "llama/layers.hpp"
#include "llama/llama2c_model.hpp"
#include "llama/load.hpp"
#include "llama/model.hpp"

namespace surgeon::llama {

/// @brief The model's arrays by GGUF tensor name (pointers into `m`). O(layers).
inline std::map<std::string, const std::vector<float>*> gguf_arrays(const model& m) {
  std::map<std::string, const std::vector<float>*> arrays;
  arrays["token_embd.weight"] = &m.token_embedding;
  arrays["output_norm.weight"] = &m.final_norm;
  if (!m.cfg.tied_embeddings) arrays["output.weight"] = &m.output;
  for (std::size_t l = 0; l < m.blocks.size(); ++l) {
    for (const block_tensor& t : block_tensors)
      arrays[gguf_tensor_name(static_cast<index_t>(l), t)] = &(m.blocks[l].*t.weights);
  }
  return arrays;
}

/// @brief What a save wrote.
struct save_summary {
  std::uintmax_t bytes = 0;               ///< the file's size
  std::vector<std::string> f16_fallback;  ///< matrices written as F16 because Q8_0 cannot hold their rows
};

/// @brief llama.cpp's `general.file_type` (`llama_ftype`) of a file whose matrices are `type`:
/// ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32. O(1).
inline std::uint32_t llama_file_type(io::ggml_type type) {
  switch (type) {
    case io::ggml_type::f16:
      return 1;
    case io::ggml_type::q8_0:
      return 7;
    case io::ggml_type::bf16:
      return 32;
    default:
      return 0;
  }
}

/// @brief GGUF → GGUF: all metadata copied, every tensor (in the input's order) written from the
/// pruned model or, for tensors the model does not hold, dequantised from the input. Matrices are
/// written as `type` (F32, F16, BF16 or Q8_0); vectors (norms) stay F32, as llama.cpp's own
/// converters write them; a matrix whose rows are not whole Q8_0 blocks of 32 is written as F16
/// (llama-quantize falls back likewise) and named in the summary. Every weight that is exactly 0
/// stays exactly 0 in each of these types.
/// @throws io_error if `input` cannot be read or `output` written (atomically); logic_error if an
/// array of `m` no longer matches its tensor in `input`, or `type` is not one of the four.
inline save_summary write_gguf(const std::string& input, const std::string& output, const model& m,
                               io::ggml_type type) {
  using io::ggml_type;
  SURGEON_EXPECTS(io::can_quantize(type), "write_gguf: surgeon cannot write {} matrices",
                  io::ggml_type_name(type));
  const io::gguf_reader reader = io::gguf_reader::open(input);
  io::gguf_writer writer;
  writer.copy_metadata_from(reader);
  writer.set_uint32("general.file_type", llama_file_type(type));
  const auto arrays = gguf_arrays(m);
  save_summary summary;
  for (const io::gguf_tensor_info& info : reader.tensors()) {
    ggml_type t = info.ne.size() >= 2 ? type : ggml_type::f32;
    if (info.ne[0] % io::ggml_block_size(t) != 0) {
      t = ggml_type::f16;
      summary.f16_fallback.push_back(info.name);
    }
    const auto it = arrays.find(info.name);
    if (it != arrays.end()) {
      SURGEON_EXPECTS(static_cast<index_t>(it->second->size()) == info.elements(),
                      "write_gguf: tensor '{}' changed size", info.name);
      writer.add_tensor(info.name, info.ne, t, it->second->data());
    } else {
      const std::vector<float> values = reader.dequantize(info);
      writer.add_tensor(info.name, info.ne, t, values.data());
    }
  }
  writer.write(output);
  summary.bytes = std::filesystem::file_size(output);
  return summary;
}

/// @brief True when `m`'s blocks have the shapes (and head size) of the model in `reader`, so that
/// every tensor keeps its shape and the file's metadata still describes the model. O(layers).
/// @throws io_error if `reader` is not a model surgeon reads (as `from_gguf`'s keys).
inline bool same_block_shapes(const io::gguf_reader& reader, const model& m) {
  const std::string arch = reader.get_string("general.architecture");
  const std::string prefix = arch + ".";
  const auto layers = static_cast<index_t>(reader.get_uint(prefix + "block_count"));
  if (layers != m.cfg.n_layers) return false;
  const std::vector<index_t> hidden = detail::gguf_per_block(reader, prefix + "feed_forward_length", layers);
  const std::vector<index_t> heads = detail::gguf_per_block(reader, prefix + "attention.head_count", layers);
  const std::vector<index_t> kv_heads =
      reader.find(prefix + "attention.head_count_kv") != nullptr
          ? detail::gguf_per_block(reader, prefix + "attention.head_count_kv", layers)
          : heads;
  for (index_t l = 0; l < layers; ++l) {
    const auto i = static_cast<std::size_t>(l);
    if (m.cfg.block(l) != block_shape{heads[i], kv_heads[i], hidden[i]}) return false;
  }
  const index_t file_head_size = reader.find(prefix + "attention.key_length") != nullptr
                                     ? static_cast<index_t>(reader.get_uint(prefix + "attention.key_length"))
                                     : (heads.front() > 0 ? m.cfg.dim / heads.front() : 0);
  return file_head_size == m.cfg.head_dim();
}

/// @brief GGUF → GGUF "deci" (llama.cpp's architecture whose blocks each have their own shape), for
/// a model whose blocks no longer have the input's shapes (`compact`). Metadata is copied with
/// every "<arch>." key renamed "deci."; deci.feed_forward_length, deci.attention.head_count and
/// deci.attention.head_count_kv become INT32 arrays of one entry per block (as gguf-py writes
/// them), and deci.attention.key_length, deci.attention.value_length and deci.rope.dimension_count
/// the head size. Tensors keep the input's order with the model's shapes (ne = [cols, rows]); the
/// tensors of parts a block no longer has are not written (llama.cpp refuses tensors it does not
/// create), attn_norm included for a block with 0 heads and ffn_norm for a block with FFN width 0.
/// Element types as `write_gguf`. Cost: O(parameters) conversion; the file is built in memory.
/// @throws io_error if `input` cannot be read or `output` written (atomically); logic_error if
///         `type` is not one `write_gguf` accepts.
inline save_summary write_deci_gguf(const std::string& input, const std::string& output, const model& m,
                                    io::ggml_type type) {
  using io::ggml_type;
  SURGEON_EXPECTS(io::can_quantize(type), "write_deci_gguf: surgeon cannot write {} matrices",
                  io::ggml_type_name(type));
  m.validate();
  const io::gguf_reader reader = io::gguf_reader::open(input);
  const std::string old_prefix = reader.get_string("general.architecture") + ".";
  io::gguf_writer writer;
  for (const auto& [key, value] : reader.metadata()) {
    if (key.compare(0, old_prefix.size(), old_prefix) == 0) {
      writer.set("deci." + key.substr(old_prefix.size()), value);
    } else {
      writer.set(key, value);
    }
  }
  writer.set_string("general.architecture", "deci");
  writer.set_uint32("general.file_type", llama_file_type(type));
  std::vector<std::int32_t> hidden, heads, kv_heads;
  for (index_t l = 0; l < m.cfg.n_layers; ++l) {
    const block_shape b = m.cfg.block(l);
    hidden.push_back(static_cast<std::int32_t>(b.hidden_dim));
    heads.push_back(static_cast<std::int32_t>(b.n_heads));
    kv_heads.push_back(static_cast<std::int32_t>(b.n_kv_heads));
  }
  writer.set("deci.feed_forward_length", io::gguf_value::array(hidden));
  writer.set("deci.attention.head_count", io::gguf_value::array(heads));
  writer.set("deci.attention.head_count_kv", io::gguf_value::array(kv_heads));
  const auto head_size = static_cast<std::uint32_t>(m.cfg.head_dim());
  writer.set_uint32("deci.attention.key_length", head_size);
  writer.set_uint32("deci.attention.value_length", head_size);
  writer.set_uint32("deci.rope.dimension_count", head_size);

  // The model's arrays with their GGUF shapes (fastest dimension first); an empty array is a part
  // the block no longer has and is left out.
  struct array_entry {
    const std::vector<float>* values;
    std::vector<std::int64_t> ne;
    bool written = false;
  };
  std::map<std::string, array_entry> arrays;
  std::vector<std::string> order;  // the model's arrays in block order, for any the input lacks
  const auto vocab = static_cast<std::int64_t>(m.cfg.vocab_size);
  const auto dim = static_cast<std::int64_t>(m.cfg.dim);
  auto add_array = [&](const std::string& name, const std::vector<float>& values,
                       std::vector<std::int64_t> ne) {
    arrays[name] = array_entry{&values, std::move(ne)};
    order.push_back(name);
  };
  add_array("token_embd.weight", m.token_embedding, {dim, vocab});
  add_array("output_norm.weight", m.final_norm, {dim});
  if (!m.cfg.tied_embeddings) add_array("output.weight", m.output, {dim, vocab});
  for (index_t l = 0; l < m.cfg.n_layers; ++l) {
    for (const block_tensor& t : block_tensors) {
      const auto rows = static_cast<std::int64_t>(extent_of(t.rows, m.cfg, l));
      const auto cols = static_cast<std::int64_t>(extent_of(t.cols, m.cfg, l));
      std::vector<std::int64_t> ne =
          t.kind ? std::vector<std::int64_t>{cols, rows} : std::vector<std::int64_t>{cols};
      add_array(gguf_tensor_name(l, t), m.blocks[static_cast<std::size_t>(l)].*t.weights, std::move(ne));
      if (rows * cols == 0) arrays[gguf_tensor_name(l, t)].written = true;  // absent: never written
    }
  }
  save_summary summary;
  auto add = [&](const std::string& name, const std::vector<std::int64_t>& ne, const float* data) {
    ggml_type t = ne.size() >= 2 ? type : ggml_type::f32;
    if (ne[0] % io::ggml_block_size(t) != 0) {
      t = ggml_type::f16;
      summary.f16_fallback.push_back(name);
    }
    writer.add_tensor(name, ne, t, data);
  };
  for (const io::gguf_tensor_info& info : reader.tensors()) {
    const auto it = arrays.find(info.name);
    if (it == arrays.end()) {  // a tensor the model does not hold (rope_freqs, ...): as it was
      const std::vector<float> values = reader.dequantize(info);
      add(info.name, info.ne, values.data());
      continue;
    }
    if (it->second.written) continue;
    add(info.name, it->second.ne, it->second.values->data());
    it->second.written = true;
  }
  for (const std::string& name : order) {
    array_entry& entry = arrays[name];
    if (!entry.written) add(name, entry.ne, entry.values->data());
    entry.written = true;
  }
  writer.write(output);
  summary.bytes = std::filesystem::file_size(output);
  return summary;
}

/// @brief Writes `m` to `output` in `format`, taking what the model does not hold (metadata, the
/// llama2.c RoPE tables, GGUF tensors it does not read) from the file it was loaded from, `input`.
/// `type` is the GGUF matrices' element type (llama2.c is always f32). A GGUF model whose blocks
/// no longer have the input's shapes (`compact`) is written as architecture "deci"
/// (`write_deci_gguf`), otherwise as the input was (`write_gguf`).
/// @throws io_error if `input` cannot be read or `output` written; logic_error for llama2.c output
///         of a model whose blocks have other shapes than the checkpoint's (it needs a .gguf).
inline save_summary save_model(model_format format, const std::string& input, const std::string& output,
                               const model& m, io::ggml_type type) {
  if (format == model_format::gguf) {
    if (!same_block_shapes(io::gguf_reader::open(input), m)) return write_deci_gguf(input, output, m, type);
    return write_gguf(input, output, m, type);
  }
  io::llama2c_checkpoint original = io::read_llama2c_checkpoint(input);
  io::write_llama2c_checkpoint(output, to_llama2c(m, std::move(original)));
  save_summary summary;
  summary.bytes = std::filesystem::file_size(output);
  return summary;
}

}  // namespace surgeon::llama
