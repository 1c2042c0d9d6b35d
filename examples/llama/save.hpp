/// @file save.hpp
/// @brief Writing a (pruned) in-memory model back in the format it was loaded from, beside the
/// original: GGUF keeps the input's metadata and tensor order, llama2.c its header and RoPE tables.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/gguf.hpp>
#include <surgeon/io/llama2c.hpp>

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

/// @brief GGUF → GGUF: all metadata copied, every tensor (in the input's order) written as `type` from
/// the pruned model or, for tensors the model does not hold, dequantised from the input. Vectors
/// (norms) stay F32 with `--out-type f16`, as llama.cpp's own F16 files have them.
/// @throws io_error if `input` cannot be read or `output` written (atomically); logic_error if an
/// array of `m` no longer matches its tensor in `input`.
inline void write_gguf(const std::string& input, const std::string& output, const model& m,
                       io::ggml_type type) {
  using io::ggml_type;
  const io::gguf_reader reader = io::gguf_reader::open(input);
  io::gguf_writer writer;
  writer.copy_metadata_from(reader);
  if (reader.find("general.file_type") != nullptr)
    writer.set_uint32("general.file_type", type == ggml_type::f16 ? 1u : 0u);
  const auto arrays = gguf_arrays(m);
  for (const io::gguf_tensor_info& info : reader.tensors()) {
    const ggml_type t = info.ne.size() >= 2 ? type : ggml_type::f32;
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
}

/// @brief Writes `m` to `output` in `format`, taking what the model does not hold (metadata, the
/// llama2.c RoPE tables, GGUF tensors it does not read) from the file it was loaded from, `input`.
/// `type` is the GGUF matrices' element type (llama2.c is always f32).
/// @throws io_error if `input` cannot be read or `output` written.
inline void save_model(model_format format, const std::string& input, const std::string& output,
                       const model& m, io::ggml_type type) {
  if (format == model_format::gguf) {
    write_gguf(input, output, m, type);
  } else {
    io::llama2c_checkpoint original = io::read_llama2c_checkpoint(input);
    io::write_llama2c_checkpoint(output, to_llama2c(m, std::move(original)));
  }
}

}  // namespace surgeon::llama
