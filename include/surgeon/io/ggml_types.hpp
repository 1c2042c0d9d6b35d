/// @file ggml_types.hpp
/// @brief The tensor element types of ggml (as stored in GGUF files): their numbers, names and
/// block geometry, as in ggml's `ggml.h` and `ggml-common.h`.
///
/// **Types.** Every ggml type's block geometry is known, so every tensor of a valid GGUF file
/// can be bounds-checked; only some types can be dequantised to float (see `dequantize.hpp`).
/// A quantised type stores its elements in blocks of `ggml_block_size` elements taking
/// `ggml_block_bytes` bytes each; plain types (F32, F16, BF16, I8 ...) are blocks of one.
/// The F16 and BF16 conversions live in `half.hpp`, which this header includes.
#pragma once

#include <surgeon/io/half.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace surgeon::io {

/// @brief Tensor element types of ggml, numbered as in `ggml.h` and stored in GGUF files.
/// Numbers 4, 5, 31-33 and 36-38 belong to removed types and are not valid in GGUF files.
enum class ggml_type : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  iq2_xxs = 16,
  iq2_xs = 17,
  iq3_xxs = 18,
  iq1_s = 19,
  iq4_nl = 20,
  iq3_s = 21,
  iq2_s = 22,
  iq4_xs = 23,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  iq1_m = 29,
  bf16 = 30,
  tq1_0 = 34,
  tq2_0 = 35,
  mxfp4 = 39,
  nvfp4 = 40,
  q1_0 = 41,
  q2_0 = 42,
};

namespace detail {

/// Name and block geometry of one ggml type (`ggml-common.h`); block_size 0 marks an unknown
/// or removed type number.
struct ggml_traits {
  std::string_view name;
  std::uint32_t block_size;   // elements per block
  std::uint32_t block_bytes;  // bytes per block
};

inline constexpr ggml_traits ggml_traits_of(std::uint32_t type) noexcept {
  constexpr std::uint32_t qk_k = 256;
  switch (type) {
    case 0:
      return {"F32", 1, 4};
    case 1:
      return {"F16", 1, 2};
    case 2:
      return {"Q4_0", 32, 2 + 16};
    case 3:
      return {"Q4_1", 32, 2 + 2 + 16};
    case 6:
      return {"Q5_0", 32, 2 + 4 + 16};
    case 7:
      return {"Q5_1", 32, 2 + 2 + 4 + 16};
    case 8:
      return {"Q8_0", 32, 2 + 32};
    case 9:
      return {"Q8_1", 32, 2 + 2 + 32};
    case 10:
      return {"Q2_K", qk_k, 2 * 2 + qk_k / 16 + qk_k / 4};
    case 11:
      return {"Q3_K", qk_k, 2 + qk_k / 4 + qk_k / 8 + 12};
    case 12:
      return {"Q4_K", qk_k, 2 * 2 + 12 + qk_k / 2};
    case 13:
      return {"Q5_K", qk_k, 2 * 2 + 12 + qk_k / 2 + qk_k / 8};
    case 14:
      return {"Q6_K", qk_k, 2 + qk_k / 16 + 3 * qk_k / 4};
    case 15:
      return {"Q8_K", qk_k, 4 + qk_k + qk_k / 16 * 2};
    case 16:
      return {"IQ2_XXS", qk_k, 2 + qk_k / 8 * 2};
    case 17:
      return {"IQ2_XS", qk_k, 2 + qk_k / 8 * 2 + qk_k / 32};
    case 18:
      return {"IQ3_XXS", qk_k, 2 + 3 * (qk_k / 8)};
    case 19:
      return {"IQ1_S", qk_k, 2 + qk_k / 8 + qk_k / 16};
    case 20:
      return {"IQ4_NL", 32, 2 + 16};
    case 21:
      return {"IQ3_S", qk_k, 2 + 13 * (qk_k / 32) + qk_k / 64};
    case 22:
      return {"IQ2_S", qk_k, 2 + qk_k / 4 + qk_k / 16};
    case 23:
      return {"IQ4_XS", qk_k, 2 + 2 + qk_k / 64 + qk_k / 2};
    case 24:
      return {"I8", 1, 1};
    case 25:
      return {"I16", 1, 2};
    case 26:
      return {"I32", 1, 4};
    case 27:
      return {"I64", 1, 8};
    case 28:
      return {"F64", 1, 8};
    case 29:
      return {"IQ1_M", qk_k, qk_k / 8 + qk_k / 16 + qk_k / 32};
    case 30:
      return {"BF16", 1, 2};
    case 34:
      return {"TQ1_0", qk_k, 2 + qk_k / 64 + (qk_k - 4 * qk_k / 64) / 5};
    case 35:
      return {"TQ2_0", qk_k, 2 + qk_k / 4};
    case 39:
      return {"MXFP4", 32, 1 + 16};
    case 40:
      return {"NVFP4", 64, 4 + 32};
    case 41:
      return {"Q1_0", 128, 2 + 128 / 8};
    case 42:
      return {"Q2_0", 64, 2 + 64 / 4};
    default:
      return {"unknown", 0, 0};
  }
}

}  // namespace detail

/// @brief The ggml spelling of a type ("F32", "Q4_1", "Q6_K", "BF16", ...), or "unknown" for
/// a number that is not a ggml type. Cost: O(1).
inline constexpr std::string_view ggml_type_name(ggml_type type) noexcept {
  return detail::ggml_traits_of(static_cast<std::uint32_t>(type)).name;
}

/// @brief True when `type` is the number of a current ggml type (not removed, not unknown).
/// Cost: O(1).
inline constexpr bool is_known_ggml_type(std::uint32_t type) noexcept {
  return detail::ggml_traits_of(type).block_size != 0;
}

/// @brief Elements per block of `type` (1 for plain types, 32 for Q4_0/Q4_1/Q8_0, 256 for the
/// K-quants); 0 for an unknown type. Cost: O(1).
inline constexpr std::int64_t ggml_block_size(ggml_type type) noexcept {
  return detail::ggml_traits_of(static_cast<std::uint32_t>(type)).block_size;
}

/// @brief Bytes per block of `type` (4 for F32, 18 for Q4_0, 20 for Q4_1, 34 for Q8_0, ...); 0
/// for an unknown type. Cost: O(1).
inline constexpr std::size_t ggml_block_bytes(ggml_type type) noexcept {
  return detail::ggml_traits_of(static_cast<std::uint32_t>(type)).block_bytes;
}

}  // namespace surgeon::io
