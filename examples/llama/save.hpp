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

/// @brief Writes `m` to `output` in `format`, taking what the model does not hold (metadata, the
/// llama2.c RoPE tables, GGUF tensors it does not read) from the file it was loaded from, `input`.
/// `type` is the GGUF matrices' element type (llama2.c is always f32).
/// @throws io_error if `input` cannot be read or `output` written.
inline save_summary save_model(model_format format, const std::string& input, const std::string& output,
                               const model& m, io::ggml_type type) {
  if (format == model_format::gguf) return write_gguf(input, output, m, type);
  io::llama2c_checkpoint original = io::read_llama2c_checkpoint(input);
  io::write_llama2c_checkpoint(output, to_llama2c(m, std::move(original)));
  save_summary summary;
  summary.bytes = std::filesystem::file_size(output);
  return summary;
}

}  // namespace surgeon::llama
