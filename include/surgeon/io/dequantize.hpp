/// @file dequantize.hpp
/// @brief Conversion of ggml-encoded tensor data to float, as ggml's `dequantize_row_*` do
/// (same operations in the same order, so the floats are the same bit for bit), for the types
/// llama.cpp writes for common models: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the
/// K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. The other ggml types (the IQ and ternary types, Q8_K,
/// MXFP4 ...) are known (`ggml_types.hpp`) and bounds-checked by `gguf_reader`, but refused here
/// with their name.
///
/// **32-element blocks.** An F16 scale `d` (and, for the `_1` types, an F16 minimum `m`), then
/// the quants. Q8_0 is `d * q` with 32 int8 quants; Q4_0 is `d * (q - 8)` and Q4_1 `d * q + m`
/// with 16 bytes of 4-bit quants, where the low nibble of byte j is element j and the high
/// nibble element j + 16. Q5_0 (`d * (q - 16)`) and Q5_1 (`d * q + m`) add a fifth bit per
/// element from 32 bits `qh` stored before the nibbles (bit j for element j).
///
/// **K-quants** (256-element super-blocks of 16 or 8 sub-blocks, `ggml-common.h`):
/// - Q2_K: 16 bytes of 4-bit scale/min pairs, 64 bytes of 2-bit quants, F16 `d`, `dmin`; element
///   = `d·sc · q − dmin·m` per 16-element sub-block.
/// - Q3_K: 32 bytes of high bits, 64 bytes of 2-bit quants, 12 bytes of 6-bit scales, F16 `d`;
///   element = `d·(sc − 32) · (q − 4·(1 − high bit))`.
/// - Q4_K: F16 `d`, `dmin`, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles; element =
///   `d·sc · q − dmin·m` per 32-element sub-block.
/// - Q5_K: as Q4_K with 32 bytes of fifth bits before the nibbles.
/// - Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, F16 `d`; element =
///   `d·sc · (q − 32)` per 16-element sub-block.
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
/// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K. Cost: O(1).
inline constexpr bool can_dequantize(ggml_type type) noexcept {
  switch (type) {
    case ggml_type::f32:
    case ggml_type::f16:
    case ggml_type::bf16:
    case ggml_type::q8_0:
    case ggml_type::q4_0:
    case ggml_type::q4_1:
    case ggml_type::q5_0:
    case ggml_type::q5_1:
    case ggml_type::q2_k:
    case ggml_type::q3_k:
    case ggml_type::q4_k:
    case ggml_type::q5_k:
    case ggml_type::q6_k:
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

/// The 32 elements of a Q5 block from its 32 high bits `qh` and 16 quant bytes `qs`: element j
/// is the low nibble of byte j with bit j of `qh` as fifth bit, element j + 16 the high nibble
/// with bit j + 16.
template <typename Value>
void dequantize_five_bits(const std::uint8_t* qh_bytes, const std::uint8_t* qs, float* out,
                          Value value) noexcept {
  const auto qh = load<std::uint32_t>(qh_bytes);
  for (std::size_t j = 0; j < 16; ++j) {
    const int high0 = static_cast<int>(((qh >> j) << 4) & 0x10);
    const int high1 = static_cast<int>((qh >> (j + 12)) & 0x10);
    out[j] = value((qs[j] & 0x0F) | high0);
    out[j + 16] = value((qs[j] >> 4) | high1);
  }
}

/// One Q5_0 block (`d`, `qh`, 16 bytes of nibbles) to 32 floats: `d * (q - 16)`.
inline void dequantize_block_q5_0(const std::uint8_t* block, float* out) noexcept {
  const float d = f16_to_float(load<std::uint16_t>(block));
  dequantize_five_bits(block + 2, block + 6, out, [d](int q) { return static_cast<float>(q - 16) * d; });
}

/// One Q5_1 block (`d`, `m`, `qh`, 16 bytes of nibbles) to 32 floats: `d * q + m`.
inline void dequantize_block_q5_1(const std::uint8_t* block, float* out) noexcept {
  const float d = f16_to_float(load<std::uint16_t>(block));
  const float m = f16_to_float(load<std::uint16_t>(block + 2));
  dequantize_five_bits(block + 4, block + 8, out, [d, m](int q) { return static_cast<float>(q) * d + m; });
}

/// Elements per K-quant super-block (ggml's `QK_K`).
inline constexpr std::size_t qk_k = 256;

/// One Q2_K super-block to 256 floats.
inline void dequantize_block_q2_k(const std::uint8_t* block, float* out) noexcept {
  const std::uint8_t* scales = block;
  const std::uint8_t* q = block + 16;
  const float d = f16_to_float(load<std::uint16_t>(block + 80));
  const float dmin = f16_to_float(load<std::uint16_t>(block + 82));
  std::size_t is = 0;
  for (std::size_t n = 0; n < qk_k; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (std::size_t half = 0; half < 2; ++half) {
        const std::uint8_t sc = scales[is++];
        const float dl = d * static_cast<float>(sc & 0x0F);
        const float ml = dmin * static_cast<float>(sc >> 4);
        for (std::size_t l = 0; l < 16; ++l)
          *out++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
      }
    }
    q += 32;
  }
}

/// One Q3_K super-block to 256 floats.
inline void dequantize_block_q3_k(const std::uint8_t* block, float* out) noexcept {
  const std::uint8_t* hmask = block;
  const std::uint8_t* q = block + 32;
  const float d_all = f16_to_float(load<std::uint16_t>(block + 108));
  // The sixteen 6-bit scales: low 4 bits in bytes 0-7 (two per byte), high 2 bits in bytes 8-11.
  std::int8_t scales[16];
  for (std::size_t k = 0; k < 16; ++k) {
    const std::uint8_t low = (block[96 + k % 8] >> (4 * (k / 8))) & 0x0F;
    const std::uint8_t high = (block[96 + 8 + k % 4] >> (2 * (k / 4))) & 0x03;
    scales[k] = static_cast<std::int8_t>(low | (high << 4));
  }
  std::size_t is = 0;
  std::uint8_t m = 1;
  for (std::size_t n = 0; n < qk_k; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (std::size_t half = 0; half < 2; ++half) {
        const float dl = d_all * static_cast<float>(scales[is++] - 32);
        for (std::size_t l = 0; l < 16; ++l) {
          const std::size_t k = l + 16 * half;
          const int value = ((q[k] >> shift) & 3) - ((hmask[k] & m) != 0 ? 0 : 4);
          *out++ = dl * static_cast<float>(value);
        }
      }
      m = static_cast<std::uint8_t>(m << 1);
    }
    q += 32;
  }
}

/// Scale and minimum j (0-7) of a Q4_K/Q5_K super-block from its 12 packed bytes (ggml's
/// `get_scale_min_k4`).
inline void scale_min_k4(std::size_t j, const std::uint8_t* q, std::uint8_t& scale,
                         std::uint8_t& min) noexcept {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = static_cast<std::uint8_t>((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    min = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

/// One Q4_K (`high_bits` null) or Q5_K super-block to 256 floats: 4-bit quants `ql` and, for
/// Q5_K, a fifth bit per element from `high_bits`.
inline void dequantize_k4_k5(const std::uint8_t* block, const std::uint8_t* high_bits, const std::uint8_t* ql,
                             float* out) noexcept {
  const float d = f16_to_float(load<std::uint16_t>(block));
  const float dmin = f16_to_float(load<std::uint16_t>(block + 2));
  const std::uint8_t* packed = block + 4;
  unsigned bit = 1;
  for (std::size_t j = 0, is = 0; j < qk_k; j += 64, is += 2) {
    std::uint8_t sc = 0;
    std::uint8_t mn = 0;
    scale_min_k4(is, packed, sc, mn);
    const float d1 = d * static_cast<float>(sc);
    const float m1 = dmin * static_cast<float>(mn);
    scale_min_k4(is + 1, packed, sc, mn);
    const float d2 = d * static_cast<float>(sc);
    const float m2 = dmin * static_cast<float>(mn);
    for (std::size_t l = 0; l < 32; ++l) {
      const int high = high_bits != nullptr && (high_bits[l] & bit) != 0 ? 16 : 0;
      *out++ = d1 * static_cast<float>((ql[l] & 0x0F) + high) - m1;
    }
    for (std::size_t l = 0; l < 32; ++l) {
      const int high = high_bits != nullptr && (high_bits[l] & (bit << 1)) != 0 ? 16 : 0;
      *out++ = d2 * static_cast<float>((ql[l] >> 4) + high) - m2;
    }
    ql += 32;
    bit <<= 2;
  }
}

/// One Q4_K super-block to 256 floats.
inline void dequantize_block_q4_k(const std::uint8_t* block, float* out) noexcept {
  dequantize_k4_k5(block, nullptr, block + 16, out);
}

/// One Q5_K super-block to 256 floats.
inline void dequantize_block_q5_k(const std::uint8_t* block, float* out) noexcept {
  dequantize_k4_k5(block, block + 16, block + 48, out);
}

/// One Q6_K super-block to 256 floats.
inline void dequantize_block_q6_k(const std::uint8_t* block, float* out) noexcept {
  const std::uint8_t* ql = block;
  const std::uint8_t* qh = block + 128;
  const std::int8_t* sc = reinterpret_cast<const std::int8_t*>(block + 192);
  const float d = f16_to_float(load<std::uint16_t>(block + 208));
  for (std::size_t n = 0; n < qk_k; n += 128) {
    for (std::size_t l = 0; l < 32; ++l) {
      const std::size_t is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      out[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      out[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      out[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      out[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    out += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

}  // namespace detail

/// @brief Converts `elements` values of `type`, encoded as ggml stores them at `data` (host
/// memory, `elements / ggml_block_size(type) * ggml_block_bytes(type)` bytes, any alignment),
/// to float at `out` (host memory, `elements` floats). F32 is copied, F16 and BF16 convert
/// exactly, the quantised types as in the file comment.
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
    case ggml_type::q4_1:
      block = detail::dequantize_block_q4_1;
      break;
    case ggml_type::q5_0:
      block = detail::dequantize_block_q5_0;
      break;
    case ggml_type::q5_1:
      block = detail::dequantize_block_q5_1;
      break;
    case ggml_type::q2_k:
      block = detail::dequantize_block_q2_k;
      break;
    case ggml_type::q3_k:
      block = detail::dequantize_block_q3_k;
      break;
    case ggml_type::q4_k:
      block = detail::dequantize_block_q4_k;
      break;
    case ggml_type::q5_k:
      block = detail::dequantize_block_q5_k;
      break;
    default:  // q6_k: the others are excluded by can_dequantize above
      block = detail::dequantize_block_q6_k;
      break;
  }
  for (std::size_t b = 0; b < elements / block_size; ++b) block(data + b * block_bytes, out + b * block_size);
}

}  // namespace surgeon::io
