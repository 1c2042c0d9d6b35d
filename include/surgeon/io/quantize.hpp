/// @file quantize.hpp
/// @brief Conversion of floats to the ggml types surgeon writes — F32, F16, BF16 and Q8_0 — as
/// ggml's reference `quantize_row_*_ref` do, so that a file surgeon writes holds the bytes
/// llama.cpp's own converter would write for the same floats.
///
/// **Q8_0** (32-element blocks): `d = max|x| / 127` stored as F16, and `q_j = round(x_j / d)`
/// (ties away from zero) as int8, computed as `x_j · (1/d)`; a block of zeros has `d = 0` and
/// quants 0. Every weight that is exactly 0 stays exactly 0 (`d · 0`), so a pruned matrix keeps
/// its mask through Q8_0, unlike the K-quants, whose block minimums shift zeros.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/detail/bytes.hpp>
#include <surgeon/io/ggml_types.hpp>
#include <surgeon/io/half.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace surgeon::io {

/// @brief True for the types `quantize_row` (and `gguf_writer::add_tensor`) write from floats:
/// F32, F16, BF16 and Q8_0. Cost: O(1).
inline constexpr bool can_quantize(ggml_type type) noexcept {
  return type == ggml_type::f32 || type == ggml_type::f16 || type == ggml_type::bf16 ||
         type == ggml_type::q8_0;
}

namespace detail {

/// One Q8_0 block of 32 floats to its 34 bytes (`d`, then 32 int8 quants), as
/// `quantize_row_q8_0_ref`.
inline void quantize_block_q8_0(const float* x, std::uint8_t* block) noexcept {
  float amax = 0.0f;
  for (std::size_t j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store<std::uint16_t>(block, float_to_f16(d));
  for (std::size_t j = 0; j < 32; ++j) {
    block[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(std::round(x[j] * id)));
  }
}

}  // namespace detail

/// @brief Encodes `elements` floats at `x` (host) as `type` into `out` (host,
/// `elements / ggml_block_size(type) * ggml_block_bytes(type)` bytes). F32 is copied, F16 and
/// BF16 round to nearest even, Q8_0 as in the file comment. NaN and infinite inputs are encoded
/// as the format can (Q8_0's quants of them are unspecified, as in ggml): check before.
/// @throws logic_error if `type` is not one `can_quantize` accepts, `elements` is not a multiple
///         of its block size, or a pointer is null while `elements > 0`.
/// Cost: O(elements); allocates nothing.
inline void quantize_row(ggml_type type, const float* x, std::size_t elements, std::uint8_t* out) {
  SURGEON_EXPECTS(can_quantize(type), "quantize_row: surgeon cannot write type {}", ggml_type_name(type));
  const auto block_size = static_cast<std::size_t>(ggml_block_size(type));
  SURGEON_EXPECTS(elements % block_size == 0, "quantize_row: {} elements of {} are not whole blocks of {}",
                  elements, ggml_type_name(type), block_size);
  SURGEON_EXPECTS(elements == 0 || (x != nullptr && out != nullptr), "quantize_row: null pointer");
  if (elements == 0) return;
  switch (type) {
    case ggml_type::f32:
      std::memcpy(out, x, elements * sizeof(float));
      return;
    case ggml_type::f16:
      for (std::size_t i = 0; i < elements; ++i)
        detail::store<std::uint16_t>(out + 2 * i, float_to_f16(x[i]));
      return;
    case ggml_type::bf16:
      for (std::size_t i = 0; i < elements; ++i)
        detail::store<std::uint16_t>(out + 2 * i, float_to_bf16(x[i]));
      return;
    default:  // q8_0: the others are excluded by can_quantize above
      for (std::size_t b = 0; b < elements / 32; ++b) detail::quantize_block_q8_0(x + 32 * b, out + 34 * b);
      return;
  }
}

}  // namespace surgeon::io
