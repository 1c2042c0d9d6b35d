/// @file half.hpp
/// @brief Conversions between float and the 16-bit float formats that model files store:
/// IEEE 754 binary16 (F16, ggml's and safetensors' "F16") and bfloat16 (BF16). Shared by the
/// GGUF and safetensors readers and the GGUF writer; exact where the format allows, bit-level
/// (no dependency on a compiler's `_Float16` or `__bf16`).
#pragma once

#include <surgeon/io/detail/bytes.hpp>

#include <cstdint>
#include <cstring>

namespace surgeon::io {

/// @brief Converts IEEE 754 binary16 (F16) bits to float, exactly: normals, subnormals, ±0 and
/// ±inf map to the same value; NaNs stay NaN (quiet, sign and payload kept). Cost: O(1).
inline float f16_to_float(std::uint16_t bits) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000U) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1FU;
  std::uint32_t mantissa = bits & 0x3FFU;
  if (exponent == 0) {
    if (mantissa == 0) return detail::bits_to_float(sign);  // ±0
    // Subnormal: value = mantissa * 2^-24. Normalise so the leading 1 reaches bit 10.
    std::uint32_t float_exponent = 127 - 15 + 1;
    while ((mantissa & 0x400U) == 0) {
      mantissa <<= 1;
      --float_exponent;
    }
    mantissa &= 0x3FFU;
    return detail::bits_to_float(sign | (float_exponent << 23) | (mantissa << 13));
  }
  if (exponent == 0x1F) {
    if (mantissa == 0) return detail::bits_to_float(sign | 0x7F800000U);  // ±inf
    return detail::bits_to_float(sign | 0x7FC00000U | (mantissa << 13));  // NaN (quiet)
  }
  return detail::bits_to_float(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

/// @brief Converts bfloat16 (BF16) bits to float: BF16 is the upper half of a float, so this is
/// exact for every pattern (subnormals, ±inf and NaN included). Cost: O(1).
inline float bf16_to_float(std::uint16_t bits) noexcept {
  return detail::bits_to_float(static_cast<std::uint32_t>(bits) << 16);
}

/// @brief Converts a float to IEEE 754 binary16 (F16) bits, rounding to nearest, ties to even:
/// values from 65520 up become ±inf, values below the smallest normal become subnormals (or ±0
/// at or below 2^-25), ±inf stays ±inf and NaN stays a quiet NaN with its sign and the top of its
/// payload. `f16_to_float(float_to_f16(x)) == x` for every x that F16 represents. Cost: O(1).
inline std::uint16_t float_to_f16(float value) noexcept {
  std::uint32_t x;
  std::memcpy(&x, &value, sizeof x);
  const auto sign = static_cast<std::uint32_t>((x >> 16) & 0x8000U);
  const std::uint32_t magnitude = x & 0x7FFFFFFFU;
  if (magnitude > 0x7F800000U) {  // NaN: keep it quiet and non-zero
    return static_cast<std::uint16_t>(sign | 0x7E00U | ((magnitude >> 13) & 0x3FFU));
  }
  if (magnitude >= 0x38800000U) {  // at least 2^-14: a normal half, or overflow to inf
    const std::uint32_t exponent = (magnitude >> 23) - 127 + 15;
    if (exponent >= 31) return static_cast<std::uint16_t>(sign | 0x7C00U);
    std::uint32_t half = (exponent << 10) | ((magnitude >> 13) & 0x3FFU);
    const std::uint32_t rest = magnitude & 0x1FFFU;
    if (rest > 0x1000U || (rest == 0x1000U && (half & 1U) != 0)) ++half;  // a carry may reach inf
    return static_cast<std::uint16_t>(sign | half);
  }
  if (magnitude <= 0x33000000U) return static_cast<std::uint16_t>(sign);  // <= 2^-25 rounds to 0
  // Subnormal half: value / 2^-24, rounded to nearest even.
  const std::uint32_t exponent = magnitude >> 23;  // 102 .. 112
  const std::uint32_t mantissa = (magnitude & 0x7FFFFFU) | 0x800000U;
  const std::uint32_t shift = 126 - exponent;  // 14 .. 24
  std::uint32_t half = mantissa >> shift;
  const std::uint32_t rest = mantissa & ((1U << shift) - 1U);
  const std::uint32_t halfway = 1U << (shift - 1U);
  if (rest > halfway || (rest == halfway && (half & 1U) != 0)) ++half;  // may become the min normal
  return static_cast<std::uint16_t>(sign | half);
}

/// @brief Converts a float to bfloat16 (BF16) bits as ggml does (`GGML_FP32_TO_BF16`): round to
/// nearest, ties to even, on the upper half of the float; NaN stays a quiet NaN with its sign.
/// `bf16_to_float(float_to_bf16(x)) == x` for every x that BF16 represents. Cost: O(1).
inline std::uint16_t float_to_bf16(float value) noexcept {
  std::uint32_t x;
  std::memcpy(&x, &value, sizeof x);
  if ((x & 0x7FFFFFFFU) > 0x7F800000U) return static_cast<std::uint16_t>((x >> 16) | 64U);  // quiet NaN
  return static_cast<std::uint16_t>((x + (0x7FFFU + ((x >> 16) & 1U))) >> 16);
}

}  // namespace surgeon::io
