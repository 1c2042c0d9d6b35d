/// @file gguf.hpp
/// @brief GGUF, the model format of ggml and llama.cpp: everything surgeon reads and writes of
/// it, in one include. The pieces are cut as llama.cpp cuts its gguf/ggml code, one concept a
/// header, each usable on its own:
///
/// - `ggml_types.hpp`: the ggml tensor types (`ggml_type`), their names and block geometry;
/// - `half.hpp`: F16 and BF16 to and from float;
/// - `dequantize.hpp`: ggml-encoded data to float (`dequantize_row`, `can_dequantize`);
/// - `gguf_value.hpp`: the metadata value model (`gguf_value`, `gguf_value_type`);
/// - `gguf_reader.hpp`: the file format and its bounds-checked reader (`gguf_reader`);
/// - `gguf_writer.hpp`: the GGUF v3 writer (`gguf_writer`).
#pragma once

#include <surgeon/io/dequantize.hpp>
#include <surgeon/io/ggml_types.hpp>
#include <surgeon/io/gguf_reader.hpp>
#include <surgeon/io/gguf_value.hpp>
#include <surgeon/io/gguf_writer.hpp>
#include <surgeon/io/half.hpp>
#include <surgeon/io/quantize.hpp>
