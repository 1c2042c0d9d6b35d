/// @file dequantize.hpp
/// @brief Conversion of ggml-encoded tensor data to float, as ggml's `dequantize_row_*` do, for
/// the types surgeon supports: F32, F16, BF16, Q8_0, Q4_0 and Q4_1. The other ggml types are
/// known (`ggml_types.hpp`) and bounds-checked by `gguf_reader`, but not converted.
///
/// **Blocks.** Q8_0, Q4_0 and Q4_1 store 32 elements per block: an F16 scale `d` (and, for
/// Q4_1, an F16 minimum `m`) followed by the quants. Q8_0 is `d * q` with 32 int8 quants;
/// Q4_0 is `d * (q - 8)` and Q4_1 `d * q + m` with 16 bytes of 4-bit quants, where the low
/// nibble of byte j is element j and the high nibble element j + 16.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/detail/bytes.hpp>
#include <surgeon/io/ggml_types.hpp>
#include <surgeon/io/half.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace surgeon::io {

/// @brief True for the types `dequantize_row` and `gguf_reader::dequantize` convert to float:
/// F32, F16, BF16, Q8_0, Q4_0 and Q4_1. Cost: O(1).
inline constexpr bool can_dequantize(ggml_type type) noexcept {
  switch (type) {
    case ggml_type::f32:
    case ggml_type::f16:
    case ggml_type::bf16:
    case ggml_type::q8_0:
    case ggml_type::q4_0:
    case ggml_type::q4_1:
      return true;
    default:
      return false;
  }
}

namespace detail {

/// The 32 elements of a Q4 block from its 16 quant bytes `qs`: `value(q)` of the low nibble of
/// byte j is element j, of the high nibble element j + 16.
template <typename Value>
void dequantize_nibbles(const std::uint8_t* qs, float* out, Value value) noexcept {
  for (std::size_t j = 0; j < 16; ++j) {
    out[j] = value(qs[j] & 0x0F);
    out[j + 16] = value(qs[j] >> 4);
  }
}

/// One Q8_0 block (`d`, 32 int8 quants) to 32 floats.
inline void dequantize_block_q8_0(const std::uint8_t* block, float* out) noexcept {
  const float d = f16_to_float(load<std::uint16_t>(block));
  for (std::size_t j = 0; j < 32; ++j)
    out[j] = static_cast<float>(static_cast<std::int8_t>(block[2 + j])) * d;
}

/// One Q4_0 block (`d`, 16 bytes of nibbles) to 32 floats: `d * (q - 8)`.
inline void dequantize_block_q4_0(const std::uint8_t* block, float* out) noexcept {
  const float d = f16_to_float(load<std::uint16_t>(block));
  dequantize_nibbles(block + 2, out, [d](int q) { return static_cast<float>(q - 8) * d; });
}

/// One Q4_1 block (`d`, `m`, 16 bytes of nibbles) to 32 floats: `d * q + m`.
inline void dequantize_block_q4_1(const std::uint8_t* block, float* out) noexcept {
  const float d = f16_to_float(load<std::uint16_t>(block));
  const float m = f16_to_float(load<std::uint16_t>(block + 2));
  dequantize_nibbles(block + 4, out, [d, m](int q) { return static_cast<float>(q) * d + m; });
}

}  // namespace detail

/// @brief Converts `elements` values of `type`, encoded as ggml stores them at `data` (host
/// memory, `elements / ggml_block_size(type) * ggml_block_bytes(type)` bytes, any alignment),
/// to float at `out` (host memory, `elements` floats). F32 is copied, F16 and BF16 convert
/// exactly, Q8_0, Q4_0 and Q4_1 as in the file comment.
/// @throws logic_error if `type` is not one `can_dequantize` accepts, `elements` is not a
///         multiple of its block size, or a pointer is null while `elements > 0`.
/// Cost: O(elements); allocates nothing.
inline void dequantize_row(ggml_type type, const std::uint8_t* data, std::size_t elements, float* out) {
  SURGEON_EXPECTS(can_dequantize(type), "dequantize_row: surgeon cannot dequantise type {}",
                  ggml_type_name(type));
  const auto block_size = static_cast<std::size_t>(ggml_block_size(type));
  const std::size_t block_bytes = ggml_block_bytes(type);
  SURGEON_EXPECTS(elements % block_size == 0, "dequantize_row: {} elements of {} are not whole blocks of {}",
                  elements, ggml_type_name(type), block_size);
  SURGEON_EXPECTS(elements == 0 || (data != nullptr && out != nullptr), "dequantize_row: null pointer");
  if (elements == 0) return;
  using block_fn = void (*)(const std::uint8_t*, float*) noexcept;
  block_fn block = nullptr;
  switch (type) {
    case ggml_type::f32:
      std::memcpy(out, data, elements * sizeof(float));
      return;
    case ggml_type::f16:
      for (std::size_t i = 0; i < elements; ++i)
        out[i] = f16_to_float(detail::load<std::uint16_t>(data + 2 * i));
      return;
    case ggml_type::bf16:
      for (std::size_t i = 0; i < elements; ++i)
        out[i] = bf16_to_float(detail::load<std::uint16_t>(data + 2 * i));
      return;
    case ggml_type::q8_0:
      block = detail::dequantize_block_q8_0;
      break;
    case ggml_type::q4_0:
      block = detail::dequantize_block_q4_0;
      break;
    default:  // q4_1: the others are excluded by can_dequantize above
      block = detail::dequantize_block_q4_1;
      break;
  }
  for (std::size_t b = 0; b < elements / block_size; ++b) block(data + b * block_bytes, out + b * block_size);
}

}  // namespace surgeon::io
