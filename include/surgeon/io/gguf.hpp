/// @file gguf.hpp
/// @brief A bounds-checked reader and writer for GGUF, the model format of ggml and llama.cpp.
///
/// **Format** (ggml `docs/gguf.md`, versions 2 and 3; little-endian). A file is: the magic
/// `"GGUF"`; a `uint32` version; a `uint64` tensor count; a `uint64` metadata count; the metadata
/// key-value pairs (key string, `uint32` value type, value); one info per tensor (name string,
/// `uint32` n_dims, `n_dims` x `uint64` dimensions `ne`, `uint32` ggml type, `uint64` offset);
/// zero padding up to the alignment (`general.alignment`, default 32); the data section. A string
/// is a `uint64` byte length and that many bytes (no terminator); an array is a `uint32` element
/// type, a `uint64` element count and the elements (arrays may nest). Tensor offsets are relative
/// to the data section and multiples of the alignment.
///
/// **Dimensions.** GGUF lists dimensions fastest first: `ne[0]` is the length of a row in memory.
/// A weight with `ne = [in, out]` is therefore a row-major `[out, in]` matrix in surgeon's
/// convention (see `view.hpp`), which is what `gguf_reader::dequantize` returns and
/// `gguf_reader::tensor_shape_rows_cols` reports.
///
/// **Types.** Every ggml type's block geometry is known, so every tensor of a valid file is
/// bounds-checked; only F32, F16, BF16, Q8_0, Q4_0 and Q4_1 can be dequantised to float.
///
/// **Trust.** Files are untrusted. `gguf_reader` checks every count, length, offset and size
/// before use and reports a malformed, truncated or hostile file as an `io_error` naming the file
/// and the reason, never as a crash or an allocation larger than a small multiple of the file
/// size: string and array lengths must fit in the bytes that remain, arrays nest at most
/// `gguf_reader::max_array_depth` deep and hold at most `gguf_reader::max_array_elements`
/// elements in all, tensors have at most 4 dimensions with overflow-checked products, the
/// alignment is a power of two, tensor data is aligned, inside the file and non-overlapping.
///
/// **Writing.** `gguf_writer` writes GGUF v3 through a temporary file and a rename, as
/// `safetensors_writer` does.
///
/// The host must be little-endian (every platform surgeon targets is).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/io/detail/file.hpp>
#include <surgeon/io/safetensors.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

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

/// `a * b`, or nothing on overflow.
inline std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) noexcept {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

inline void put_le(std::vector<std::uint8_t>& out, std::uint64_t value, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i)
    out.push_back(static_cast<std::uint8_t>((value >> (8 * i)) & 0xFFU));
}

inline std::uint64_t get_le(const std::uint8_t* p, std::size_t bytes) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = bytes; i > 0; --i) value = (value << 8) | p[i - 1];
  return value;
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

/// @brief True for the types `gguf_reader::dequantize` converts to float: F32, F16, BF16, Q8_0,
/// Q4_0 and Q4_1. Cost: O(1).
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

/// @brief Types of GGUF metadata values, numbered as in the GGUF specification.
enum class gguf_value_type : std::uint32_t {
  uint8 = 0,
  int8 = 1,
  uint16 = 2,
  int16 = 3,
  uint32 = 4,
  int32 = 5,
  float32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  uint64 = 10,
  int64 = 11,
  float64 = 12,
};

/// @brief The spelling of a metadata value type ("uint32", "float32", "bool", "string",
/// "array", ...), or "unknown" for a number outside the specification. Cost: O(1).
inline constexpr std::string_view gguf_value_type_name(gguf_value_type type) noexcept {
  switch (type) {
    case gguf_value_type::uint8:
      return "uint8";
    case gguf_value_type::int8:
      return "int8";
    case gguf_value_type::uint16:
      return "uint16";
    case gguf_value_type::int16:
      return "int16";
    case gguf_value_type::uint32:
      return "uint32";
    case gguf_value_type::int32:
      return "int32";
    case gguf_value_type::float32:
      return "float32";
    case gguf_value_type::boolean:
      return "bool";
    case gguf_value_type::string:
      return "string";
    case gguf_value_type::array:
      return "array";
    case gguf_value_type::uint64:
      return "uint64";
    case gguf_value_type::int64:
      return "int64";
    case gguf_value_type::float64:
      return "float64";
  }
  return "unknown";
}

/// @brief Encoded size in bytes of one scalar of `type`: 1, 2, 4 or 8 for numbers and bool, 0
/// for string and array (variable) and for an unknown type. Cost: O(1).
inline constexpr std::size_t gguf_value_size(gguf_value_type type) noexcept {
  switch (type) {
    case gguf_value_type::uint8:
    case gguf_value_type::int8:
    case gguf_value_type::boolean:
      return 1;
    case gguf_value_type::uint16:
    case gguf_value_type::int16:
      return 2;
    case gguf_value_type::uint32:
    case gguf_value_type::int32:
    case gguf_value_type::float32:
      return 4;
    case gguf_value_type::uint64:
    case gguf_value_type::int64:
    case gguf_value_type::float64:
      return 8;
    case gguf_value_type::string:
    case gguf_value_type::array:
      return 0;
  }
  return 0;
}

namespace detail {

inline constexpr bool is_gguf_value_type(std::uint32_t type) noexcept {
  return type <= 12;
}

inline constexpr bool is_integer_type(gguf_value_type type) noexcept {
  switch (type) {
    case gguf_value_type::uint8:
    case gguf_value_type::int8:
    case gguf_value_type::uint16:
    case gguf_value_type::int16:
    case gguf_value_type::uint32:
    case gguf_value_type::int32:
    case gguf_value_type::uint64:
    case gguf_value_type::int64:
      return true;
    default:
      return false;
  }
}

/// The metadata type that stores T; a compile error for other T.
template <typename T>
constexpr gguf_value_type gguf_type_of() noexcept {
  if constexpr (std::is_same_v<T, bool>) {
    return gguf_value_type::boolean;
  } else if constexpr (std::is_same_v<T, std::uint8_t>) {
    return gguf_value_type::uint8;
  } else if constexpr (std::is_same_v<T, std::int8_t>) {
    return gguf_value_type::int8;
  } else if constexpr (std::is_same_v<T, std::uint16_t>) {
    return gguf_value_type::uint16;
  } else if constexpr (std::is_same_v<T, std::int16_t>) {
    return gguf_value_type::int16;
  } else if constexpr (std::is_same_v<T, std::uint32_t>) {
    return gguf_value_type::uint32;
  } else if constexpr (std::is_same_v<T, std::int32_t>) {
    return gguf_value_type::int32;
  } else if constexpr (std::is_same_v<T, std::uint64_t>) {
    return gguf_value_type::uint64;
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    return gguf_value_type::int64;
  } else if constexpr (std::is_same_v<T, float>) {
    return gguf_value_type::float32;
  } else {
    static_assert(std::is_same_v<T, double>,
                  "gguf_value: T must be bool, a fixed-width integer of 8 to 64 bits, float or double");
    return gguf_value_type::float64;
  }
}

/// Splits an integer scalar of `type` stored as zero-extended little-endian `bits` into
/// (negative, value as two's complement uint64); nothing for a non-integer type.
inline std::optional<std::pair<bool, std::uint64_t>> integer_parts(gguf_value_type type,
                                                                   std::uint64_t bits) noexcept {
  const std::size_t size = gguf_value_size(type);
  if (!is_integer_type(type)) return std::nullopt;
  const bool is_signed = type == gguf_value_type::int8 || type == gguf_value_type::int16 ||
                         type == gguf_value_type::int32 || type == gguf_value_type::int64;
  if (!is_signed) return std::make_pair(false, bits);
  const std::uint64_t sign_bit = std::uint64_t{1} << (8 * size - 1);
  if ((bits & sign_bit) == 0) return std::make_pair(false, bits);
  const std::uint64_t extension = size == 8 ? 0 : ~((sign_bit << 1) - 1);
  return std::make_pair(true, bits | extension);
}

}  // namespace detail

/// @brief One GGUF metadata value: a scalar (8- to 64-bit integer, float32, float64, bool), a
/// string, or an array of any of these, arrays of arrays included.
///
/// Values read from a file keep their exact type and bits, so writing them back reproduces them.
/// Numeric arrays are stored packed (their little-endian bytes), string arrays as strings and
/// arrays of arrays as values. The `try_*` accessors return nothing (or null) when the value is
/// of another kind; `gguf_reader`'s `get_*` turn that into an `io_error` naming the key.
/// Copyable and movable; comparisons are exact (floats compare by their bits).
class gguf_value {
 public:
  /// @brief The uint8 value 0.
  gguf_value() = default;

  /// @brief A scalar of the metadata type that stores `T` (bool, std::uint8_t ... std::int64_t,
  /// float, double; a compile error for other types, so a string literal never becomes a bool).
  /// Cost: O(1).
  template <typename T>
  static gguf_value scalar(T value) noexcept {
    static_assert(std::is_same_v<T, bool> || std::is_arithmetic_v<T>);
    constexpr gguf_value_type type = detail::gguf_type_of<T>();
    gguf_value v;
    v.type_ = type;
    if constexpr (std::is_same_v<T, bool>) {
      v.bits_ = value ? 1U : 0U;
    } else {
      std::memcpy(&v.bits_, &value, sizeof(T));  // little-endian: the low bytes
    }
    return v;
  }

  /// @brief A string value (any bytes; GGUF strings are meant to be UTF-8). Cost: O(1).
  static gguf_value string(std::string text) {
    gguf_value v;
    v.type_ = gguf_value_type::string;
    v.string_ = std::move(text);
    return v;
  }

  /// @brief An array of numbers or bools of the metadata type that stores `T`.
  /// Cost: O(values.size()).
  template <typename T>
  static gguf_value array(const std::vector<T>& values) {
    constexpr gguf_value_type type = detail::gguf_type_of<T>();
    gguf_value v;
    v.type_ = gguf_value_type::array;
    v.array_type_ = type;
    v.size_ = values.size();
    v.raw_.reserve(values.size() * sizeof(T));
    for (const T value : values) {
      const gguf_value element = scalar<T>(value);
      detail::put_le(v.raw_, element.bits_, gguf_value_size(type));
    }
    return v;
  }

  /// @brief An array of strings (as tokenizers store their vocabularies). Cost: O(1).
  static gguf_value string_array(std::vector<std::string> values) {
    gguf_value v;
    v.type_ = gguf_value_type::array;
    v.array_type_ = gguf_value_type::string;
    v.size_ = values.size();
    v.strings_ = std::move(values);
    return v;
  }

  /// @brief An array whose elements are arrays (each may have its own element type).
  /// @throws logic_error if an element is not an array. Cost: O(arrays.size()).
  static gguf_value array_of_arrays(std::vector<gguf_value> arrays) {
    for (const gguf_value& a : arrays) {
      SURGEON_EXPECTS(a.is_array(), "gguf_value::array_of_arrays: an element is a {}, not an array",
                      gguf_value_type_name(a.type()));
    }
    gguf_value v;
    v.type_ = gguf_value_type::array;
    v.array_type_ = gguf_value_type::array;
    v.size_ = arrays.size();
    v.arrays_ = std::move(arrays);
    return v;
  }

  /// @brief The value's type. Cost: O(1).
  gguf_value_type type() const noexcept { return type_; }
  /// @brief True for arrays. Cost: O(1).
  bool is_array() const noexcept { return type_ == gguf_value_type::array; }
  /// @brief The element type of an array (meaningless for scalars and strings). Cost: O(1).
  gguf_value_type array_type() const noexcept { return array_type_; }
  /// @brief The number of elements of an array; 0 for scalars and strings. Cost: O(1).
  std::size_t size() const noexcept { return is_array() ? size_ : 0; }

  /// @brief The value of an integer scalar of any width and signedness that is >= 0; nothing
  /// for negative integers and other kinds. Cost: O(1).
  std::optional<std::uint64_t> try_uint() const noexcept {
    const auto parts = detail::integer_parts(type_, bits_);
    if (!parts || parts->first) return std::nullopt;
    return parts->second;
  }

  /// @brief The value of an integer scalar of any width and signedness that fits `int64_t`;
  /// nothing for a uint64 above INT64_MAX and for other kinds. Cost: O(1).
  std::optional<std::int64_t> try_int() const noexcept {
    const auto parts = detail::integer_parts(type_, bits_);
    if (!parts) return std::nullopt;
    if (!parts->first && parts->second > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return std::nullopt;
    std::int64_t value;
    std::memcpy(&value, &parts->second, sizeof value);
    return value;
  }

  /// @brief The value of a float32 or float64 scalar (float32 widened exactly); nothing for other
  /// kinds, integers included. Cost: O(1).
  std::optional<double> try_float() const noexcept {
    if (type_ == gguf_value_type::float32) {
      return static_cast<double>(detail::bits_to_float(static_cast<std::uint32_t>(bits_)));
    }
    if (type_ == gguf_value_type::float64) {
      double d;
      std::memcpy(&d, &bits_, sizeof d);
      return d;
    }
    return std::nullopt;
  }

  /// @brief The value of a bool scalar; nothing for other kinds. Cost: O(1).
  std::optional<bool> try_bool() const noexcept {
    if (type_ != gguf_value_type::boolean) return std::nullopt;
    return bits_ != 0;
  }

  /// @brief The string of a string value; null for other kinds. Cost: O(1).
  const std::string* try_string() const noexcept {
    return type_ == gguf_value_type::string ? &string_ : nullptr;
  }

  /// @brief The elements of an array of strings; null for other kinds. Cost: O(1).
  const std::vector<std::string>* try_strings() const noexcept {
    return is_array() && array_type_ == gguf_value_type::string ? &strings_ : nullptr;
  }

  /// @brief The elements of an array of arrays; null for other kinds. Cost: O(1).
  const std::vector<gguf_value>* try_arrays() const noexcept {
    return is_array() && array_type_ == gguf_value_type::array ? &arrays_ : nullptr;
  }

  /// @brief The elements of a float32 or float64 array, as double (exact); nothing for other
  /// kinds. Cost: O(size()); allocates size() doubles.
  std::optional<std::vector<double>> try_float_array() const {
    if (!is_array() || (array_type_ != gguf_value_type::float32 && array_type_ != gguf_value_type::float64))
      return std::nullopt;
    std::vector<double> out(size_);
    for (std::size_t i = 0; i < size_; ++i) out[i] = *numeric_element(i).try_float();
    return out;
  }

  /// @brief The elements of an integer array of any width and signedness, as int64; nothing for
  /// other kinds or when an element (a uint64 above INT64_MAX) does not fit.
  /// Cost: O(size()); allocates size() integers.
  std::optional<std::vector<std::int64_t>> try_int_array() const {
    if (!is_array() || !detail::is_integer_type(array_type_)) return std::nullopt;
    std::vector<std::int64_t> out(size_);
    for (std::size_t i = 0; i < size_; ++i) {
      const auto value = numeric_element(i).try_int();
      if (!value) return std::nullopt;
      out[i] = *value;
    }
    return out;
  }

  /// @brief Element `i` of an array, as a value of the array's element type.
  /// @throws logic_error if this is not an array or `i >= size()`. Cost: O(1), plus a copy of
  /// the element for strings and arrays.
  gguf_value element(std::size_t i) const {
    SURGEON_EXPECTS(is_array(), "gguf_value::element: a {} is not an array", gguf_value_type_name(type_));
    SURGEON_EXPECTS(i < size_, "gguf_value::element: index {} outside an array of {}", i, size_);
    if (array_type_ == gguf_value_type::string) return string(strings_[i]);
    if (array_type_ == gguf_value_type::array) return arrays_[i];
    return numeric_element(i);
  }

  /// @brief Exact equality: same type, element type and bits, strings and elements.
  /// Cost: O(size of the values).
  friend bool operator==(const gguf_value& a, const gguf_value& b) {
    if (a.type_ != b.type_) return false;
    if (a.type_ == gguf_value_type::string) return a.string_ == b.string_;
    if (a.type_ != gguf_value_type::array) return a.bits_ == b.bits_;
    return a.array_type_ == b.array_type_ && a.size_ == b.size_ && a.raw_ == b.raw_ &&
           a.strings_ == b.strings_ && a.arrays_ == b.arrays_;
  }
  /// @brief Negation of `==`. Cost: as `==`.
  friend bool operator!=(const gguf_value& a, const gguf_value& b) { return !(a == b); }

 private:
  friend class gguf_reader;
  friend class gguf_writer;

  gguf_value numeric_element(std::size_t i) const noexcept {
    const std::size_t width = gguf_value_size(array_type_);
    gguf_value v;
    v.type_ = array_type_;
    v.bits_ = detail::get_le(raw_.data() + i * width, width);
    return v;
  }

  gguf_value_type type_ = gguf_value_type::uint8;
  std::uint64_t bits_ = 0;  // scalars: the little-endian bytes, zero-extended
  std::string string_;
  gguf_value_type array_type_ = gguf_value_type::uint8;
  std::size_t size_ = 0;
  std::vector<std::uint8_t> raw_;     // numeric and bool arrays: elements as stored in the file
  std::vector<std::string> strings_;  // string arrays
  std::vector<gguf_value> arrays_;    // arrays of arrays
};

/// @brief Where one tensor lives in a GGUF file, and what it is.
struct gguf_tensor_info {
  /// The tensor's name.
  std::string name;
  /// Element type.
  ggml_type type = ggml_type::f32;
  /// Dimensions as stored in GGUF, fastest first: `ne[0]` is the row length (at most 4 entries).
  std::vector<std::int64_t> ne;
  /// Byte offset of the data, relative to the start of the data section (a multiple of the
  /// alignment).
  std::uint64_t offset = 0;
  /// Size in bytes: `elements() / ggml_block_size(type) * ggml_block_bytes(type)`.
  std::uint64_t bytes = 0;

  /// @brief Number of elements: the product of `ne` (1 for no dimensions). Never overflows for
  /// an info handed out by `gguf_reader`. Cost: O(ne.size()).
  index_t elements() const noexcept {
    index_t n = 1;
    for (const std::int64_t d : ne) n *= d;
    return n;
  }
};

/// @brief A validated, in-memory GGUF file (version 2 or 3, little-endian).
///
/// The whole file is read into memory once (`open`) or taken over (`from_bytes`) and validated
/// completely before the reader is returned; afterwards every accessor is bounds-safe. Copyable
/// and movable; `const` member functions are safe to call concurrently.
class gguf_reader {
 public:
  /// @brief Deepest nesting of arrays accepted (an array of arrays of scalars has depth 2).
  static constexpr int max_array_depth = 8;
  /// @brief Most array elements accepted in all of a file's metadata together.
  static constexpr std::uint64_t max_array_elements = std::uint64_t{1} << 28;
  /// @brief Most dimensions of a tensor (ggml's GGML_MAX_DIMS).
  static constexpr std::uint32_t max_dims = 4;
  /// @brief Alignment used when the file has no `general.alignment`.
  static constexpr std::uint64_t default_alignment = 32;

  /// @brief Reads and validates the GGUF file at `path`.
  /// @throws io_error naming `path` if the file cannot be opened or read, is not a regular file,
  ///         or is malformed (see `from_bytes`).
  /// Cost: one read of the file; memory: the file's size plus the parsed metadata.
  static gguf_reader open(const std::string& path) {
    std::vector<std::uint8_t> bytes =
        detail::read_whole_file(path, header_bytes, fmt::format("the {}-byte GGUF header", header_bytes));
    return gguf_reader(path, std::move(bytes));
  }

  /// @brief Validates a GGUF file held in memory and takes ownership of it.
  /// @param bytes the whole GGUF file; moved into the reader, which keeps it for its lifetime.
  /// @param source names the bytes in error messages.
  /// @throws io_error naming `source` if: the magic is not "GGUF"; the version is not 2 or 3
  ///         (version 1 and big-endian files are named as such); any count, string or array
  ///         runs past the end; a value type is unknown or a bool is not 0 or 1; arrays nest
  ///         deeper than `max_array_depth` or hold more than `max_array_elements` elements; a
  ///         key or tensor name repeats; `general.alignment` is not a power-of-two integer; a
  ///         tensor has more than `max_dims` dimensions, a dimension above INT64_MAX, an element
  ///         count or byte size that overflows, an unknown or removed ggml type, a row length
  ///         `ne[0]` that is not a multiple of its type's block size, an offset that is not a
  ///         multiple of the alignment, or data outside the file; or two tensors overlap.
  /// Cost: O(metadata size + t log t) for t tensors; the tensor data is not touched.
  static gguf_reader from_bytes(std::vector<std::uint8_t> bytes, std::string source = "<memory>") {
    return gguf_reader(std::move(source), std::move(bytes));
  }

  /// @brief The path (or the `source` label) this reader was made from. Cost: O(1).
  const std::string& source() const noexcept { return source_; }
  /// @brief The file's GGUF version: 2 or 3. Cost: O(1).
  std::uint32_t version() const noexcept { return version_; }
  /// @brief The alignment of the data section and of tensor offsets. Cost: O(1).
  std::uint64_t alignment() const noexcept { return alignment_; }
  /// @brief Every metadata key and value, in file order. Cost: O(1).
  const std::vector<std::pair<std::string, gguf_value>>& metadata() const noexcept { return metadata_; }
  /// @brief Every tensor, in file order. Cost: O(1).
  const std::vector<gguf_tensor_info>& tensors() const noexcept { return tensors_; }
  /// @brief Byte offset of the data section from the start of the file. Cost: O(1).
  std::uint64_t data_offset() const noexcept { return data_begin_; }
  /// @brief Size of the data section in bytes (up to the end of the file). Cost: O(1).
  std::uint64_t data_size() const noexcept { return static_cast<std::uint64_t>(bytes_.size() - data_begin_); }

  /// @brief The value of metadata key `key`, or null when there is none. Cost: O(log m).
  const gguf_value* find(std::string_view key) const {
    const auto it = key_index_.find(key);
    return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
  }

  /// @brief The value of metadata key `key`.
  /// @throws io_error naming the file and `key` when there is none. Cost: O(log m).
  const gguf_value& get(std::string_view key) const {
    const gguf_value* v = find(key);
    if (v == nullptr) SURGEON_THROW(io_error, "{}: no metadata key '{}'", source_, detail::shorten(key));
    return *v;
  }

  /// @brief The string value of `key`.
  /// @throws io_error naming the key when it is missing or not a string. Cost: O(log m).
  const std::string& get_string(std::string_view key) const {
    const gguf_value& v = get(key);
    if (const std::string* s = v.try_string()) return *s;
    wrong_type(key, v, "a string");
  }

  /// @brief The value of integer key `key`, of any width and signedness, that is >= 0.
  /// @throws io_error naming the key when it is missing, not an integer, or negative.
  /// Cost: O(log m).
  std::uint64_t get_uint(std::string_view key) const {
    const gguf_value& v = get(key);
    if (const auto u = v.try_uint()) return *u;
    wrong_type(key, v, "a non-negative integer");
  }

  /// @brief The value of integer key `key`, of any width and signedness, that fits `int64_t`.
  /// @throws io_error naming the key when it is missing, not an integer, or too large.
  /// Cost: O(log m).
  std::int64_t get_int(std::string_view key) const {
    const gguf_value& v = get(key);
    if (const auto i = v.try_int()) return *i;
    wrong_type(key, v, "an integer that fits int64");
  }

  /// @brief The value of float32 or float64 key `key` (float32 widened exactly).
  /// @throws io_error naming the key when it is missing or not a float. Cost: O(log m).
  double get_float(std::string_view key) const {
    const gguf_value& v = get(key);
    if (const auto f = v.try_float()) return *f;
    wrong_type(key, v, "a float32 or float64");
  }

  /// @brief The value of bool key `key`.
  /// @throws io_error naming the key when it is missing or not a bool. Cost: O(log m).
  bool get_bool(std::string_view key) const {
    const gguf_value& v = get(key);
    if (const auto b = v.try_bool()) return *b;
    wrong_type(key, v, "a bool");
  }

  /// @brief The elements of string-array key `key`.
  /// @throws io_error naming the key when it is missing or not an array of strings.
  /// Cost: O(log m).
  const std::vector<std::string>& get_string_array(std::string_view key) const {
    const gguf_value& v = get(key);
    if (const auto* s = v.try_strings()) return *s;
    wrong_type(key, v, "an array of strings");
  }

  /// @brief The elements of float32- or float64-array key `key`, as double.
  /// @throws io_error naming the key when it is missing or not an array of floats.
  /// Cost: O(log m + n); allocates n doubles.
  std::vector<double> get_float_array(std::string_view key) const {
    const gguf_value& v = get(key);
    if (auto f = v.try_float_array()) return std::move(*f);
    wrong_type(key, v, "an array of float32 or float64");
  }

  /// @brief The elements of integer-array key `key` (any width and signedness), as int64.
  /// @throws io_error naming the key when it is missing, not an integer array, or holds a uint64
  ///         above INT64_MAX. Cost: O(log m + n); allocates n integers.
  std::vector<std::int64_t> get_int_array(std::string_view key) const {
    const gguf_value& v = get(key);
    if (auto i = v.try_int_array()) return std::move(*i);
    wrong_type(key, v, "an array of integers that fit int64");
  }

  /// @brief True when the file has a tensor called `name`. Cost: O(log t).
  bool contains(std::string_view name) const { return tensor_index_.find(name) != tensor_index_.end(); }

  /// @brief The tensor called `name`.
  /// @throws io_error naming the file and `name` when there is none. Cost: O(log t).
  const gguf_tensor_info& info(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    if (it == tensor_index_.end())
      SURGEON_THROW(io_error, "{}: no tensor named '{}'", source_, detail::shorten(name));
    return tensors_[it->second];
  }

  /// @brief Pointer to the first byte of `tensor`'s data (host memory owned by this reader,
  /// `tensor.bytes` long, aligned only as the file is aligned within the buffer: treat it as
  /// unaligned).
  /// @throws logic_error if `tensor` does not fit this file's data section (an info from a
  ///         different file). Cost: O(1).
  const std::uint8_t* raw(const gguf_tensor_info& tensor) const {
    const std::uint64_t size = data_size();
    SURGEON_EXPECTS(tensor.offset <= size && tensor.bytes <= size - tensor.offset,
                    "gguf_reader::raw: tensor '{}' [{}, +{}) lies outside the {}-byte data section of {}",
                    detail::shorten(tensor.name), tensor.offset, tensor.bytes, size, source_);
    return bytes_.data() + data_begin_ + static_cast<std::size_t>(tensor.offset);
  }

  /// @brief Rows and columns of the tensor called `name` as a row-major matrix: columns =
  /// `ne[0]`, rows = the product of the other dimensions (1 for a vector; a tensor with no
  /// dimensions is `[1, 1]`). A weight with `ne = [in, out]` is `{out, in}`.
  /// @throws io_error when there is no such tensor. Cost: O(log t).
  std::pair<index_t, index_t> tensor_shape_rows_cols(std::string_view name) const {
    const gguf_tensor_info& t = info(name);
    if (t.ne.empty()) return {1, 1};
    index_t rows = 1;
    for (std::size_t d = 1; d < t.ne.size(); ++d) rows *= t.ne[d];
    return {rows, t.ne[0]};
  }

  /// @brief The tensor called `name` converted to float, row-major with `ne[0]` fastest (a
  /// tensor with `ne = [in, out]` becomes a row-major `[out, in]` matrix). F32 is copied, F16
  /// and BF16 convert exactly, Q8_0 is `d * q`, Q4_0 `d * (q - 8)` and Q4_1 `d * q + m` per
  /// 32-element block (`d`, `m` F16; in each block byte j, the low nibble is element j and the
  /// high nibble element j + 16), as in ggml's `dequantize_row_*`.
  /// @throws io_error if there is no such tensor, or naming the tensor and its type when the
  ///         type is not one of the six above.
  /// Cost: O(elements); allocates `elements * 4` bytes.
  std::vector<float> dequantize(std::string_view name) const { return dequantize(info(name)); }

  /// @brief `dequantize` of a tensor of this file given by its info.
  /// @throws io_error for a type that cannot be dequantised; logic_error for an info that does
  ///         not belong to this file. Cost: O(elements).
  std::vector<float> dequantize(const gguf_tensor_info& tensor) const {
    if (!can_dequantize(tensor.type)) {
      SURGEON_THROW(io_error, "{}: tensor '{}' has type {}, which surgeon cannot dequantise", source_,
                    detail::shorten(tensor.name), ggml_type_name(tensor.type));
    }
    const std::uint8_t* p = raw(tensor);
    const auto n = static_cast<std::size_t>(tensor.elements());
    const std::size_t block_size = static_cast<std::size_t>(ggml_block_size(tensor.type));
    const std::size_t block_bytes = ggml_block_bytes(tensor.type);
    SURGEON_EXPECTS(tensor.bytes == n / block_size * block_bytes && n % block_size == 0,
                    "gguf_reader::dequantize: tensor '{}' has {} bytes for {} elements of {}",
                    detail::shorten(tensor.name), tensor.bytes, n, ggml_type_name(tensor.type));
    std::vector<float> out(n);
    switch (tensor.type) {
      case ggml_type::f32:
        if (n > 0) std::memcpy(out.data(), p, n * sizeof(float));
        break;
      case ggml_type::f16:
        for (std::size_t i = 0; i < n; ++i) out[i] = f16_to_float(detail::load<std::uint16_t>(p + 2 * i));
        break;
      case ggml_type::bf16:
        for (std::size_t i = 0; i < n; ++i) out[i] = bf16_to_float(detail::load<std::uint16_t>(p + 2 * i));
        break;
      case ggml_type::q8_0:
        for (std::size_t b = 0; b < n / 32; ++b) {
          const std::uint8_t* block = p + b * block_bytes;
          const float d = f16_to_float(detail::load<std::uint16_t>(block));
          for (std::size_t j = 0; j < 32; ++j) {
            const auto q = static_cast<std::int8_t>(block[2 + j]);
            out[b * 32 + j] = static_cast<float>(q) * d;
          }
        }
        break;
      case ggml_type::q4_0:
        for (std::size_t b = 0; b < n / 32; ++b) {
          const std::uint8_t* block = p + b * block_bytes;
          const float d = f16_to_float(detail::load<std::uint16_t>(block));
          for (std::size_t j = 0; j < 16; ++j) {
            const int lo = (block[2 + j] & 0x0F) - 8;
            const int hi = (block[2 + j] >> 4) - 8;
            out[b * 32 + j] = static_cast<float>(lo) * d;
            out[b * 32 + j + 16] = static_cast<float>(hi) * d;
          }
        }
        break;
      case ggml_type::q4_1:
        for (std::size_t b = 0; b < n / 32; ++b) {
          const std::uint8_t* block = p + b * block_bytes;
          const float d = f16_to_float(detail::load<std::uint16_t>(block));
          const float m = f16_to_float(detail::load<std::uint16_t>(block + 2));
          for (std::size_t j = 0; j < 16; ++j) {
            const int lo = block[4 + j] & 0x0F;
            const int hi = block[4 + j] >> 4;
            out[b * 32 + j] = static_cast<float>(lo) * d + m;
            out[b * 32 + j + 16] = static_cast<float>(hi) * d + m;
          }
        }
        break;
      default:
        break;  // excluded by can_dequantize above
    }
    return out;
  }

 private:
  static constexpr std::size_t header_bytes = 4 + 4 + 8 + 8;

  gguf_reader(std::string source, std::vector<std::uint8_t> bytes)
      : source_(std::move(source)), bytes_(std::move(bytes)) {
    parse();
  }

  [[noreturn]] void wrong_type(std::string_view key, const gguf_value& v, std::string_view wanted) const {
    if (v.is_array()) {
      SURGEON_THROW(io_error, "{}: metadata key '{}' is an array of {}, not {}", source_,
                    detail::shorten(key), gguf_value_type_name(v.array_type()), wanted);
    }
    if (v.try_int()) {
      SURGEON_THROW(io_error, "{}: metadata key '{}' is {} {}, not {}", source_, detail::shorten(key),
                    gguf_value_type_name(v.type()), *v.try_int(), wanted);
    }
    SURGEON_THROW(io_error, "{}: metadata key '{}' is a {}, not {}", source_, detail::shorten(key),
                  gguf_value_type_name(v.type()), wanted);
  }

  // ---- bounds-checked reading ----------------------------------------------------------------

  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }

  void need(std::uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      SURGEON_THROW(io_error, "{}: truncated: {} at byte {} needs {} bytes, {} remain", source_, what, pos_,
                    n, remaining());
    }
  }

  std::uint64_t read_le(std::size_t n, std::string_view what) {
    need(n, what);
    const std::uint64_t value = detail::get_le(bytes_.data() + pos_, n);
    pos_ += n;
    return value;
  }
  std::uint32_t read_u32(std::string_view what) { return static_cast<std::uint32_t>(read_le(4, what)); }
  std::uint64_t read_u64(std::string_view what) { return read_le(8, what); }

  std::string read_string(std::string_view what) {
    const std::uint64_t length = read_u64(what);
    if (length > remaining()) {
      SURGEON_THROW(io_error, "{}: {} at byte {} has length {}, but only {} bytes remain (truncated?)",
                    source_, what, pos_ - 8, length, remaining());
    }
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<std::size_t>(length));
    pos_ += static_cast<std::size_t>(length);
    return s;
  }

  gguf_value_type read_value_type(std::string_view key, std::string_view what) {
    const std::size_t at = pos_;
    const std::uint32_t type = read_u32(what);
    if (!detail::is_gguf_value_type(type)) {
      SURGEON_THROW(io_error, "{}: metadata key '{}': unknown {} {} at byte {}", source_,
                    detail::shorten(key), what, type, at);
    }
    return static_cast<gguf_value_type>(type);
  }

  gguf_value read_value(gguf_value_type type, const std::string& key, int depth) {
    gguf_value v;
    v.type_ = type;
    switch (type) {
      case gguf_value_type::string:
        v.string_ = read_string("a string value");
        return v;
      case gguf_value_type::array:
        read_array(v, key, depth + 1);
        return v;
      case gguf_value_type::boolean: {
        const std::size_t at = pos_;
        v.bits_ = read_le(1, "a bool value");
        if (v.bits_ > 1) {
          SURGEON_THROW(io_error, "{}: metadata key '{}': bool at byte {} is {}, not 0 or 1", source_,
                        detail::shorten(key), at, v.bits_);
        }
        return v;
      }
      default:
        v.bits_ = read_le(gguf_value_size(type), "a number value");
        return v;
    }
  }

  void read_array(gguf_value& v, const std::string& key, int depth) {
    if (depth > max_array_depth) {
      SURGEON_THROW(io_error, "{}: metadata key '{}': arrays nest deeper than {} at byte {}", source_,
                    detail::shorten(key), max_array_depth, pos_);
    }
    v.array_type_ = read_value_type(key, "array element type");
    const std::uint64_t count = read_u64("an array length");
    // Every element takes at least this many bytes: its fixed size, a string's length field, or
    // a nested array's type and length fields. So no array can claim more elements than the
    // remaining bytes could hold, and nothing larger is ever allocated.
    const std::size_t width = gguf_value_size(v.array_type_);
    const std::size_t min_bytes = width != 0 ? width : (v.array_type_ == gguf_value_type::string ? 8 : 12);
    if (count > remaining() / min_bytes) {
      SURGEON_THROW(io_error,
                    "{}: metadata key '{}': array of {} {} elements at byte {} needs at least {} bytes per "
                    "element, but only {} bytes remain (truncated or corrupt)",
                    source_, detail::shorten(key), count, gguf_value_type_name(v.array_type_), pos_ - 8,
                    min_bytes, remaining());
    }
    array_elements_ += count;
    if (array_elements_ > max_array_elements) {
      SURGEON_THROW(io_error, "{}: metadata key '{}': more than {} array elements in all", source_,
                    detail::shorten(key), max_array_elements);
    }
    const auto n = static_cast<std::size_t>(count);
    v.size_ = n;
    if (width != 0) {
      v.raw_.assign(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                    bytes_.begin() + static_cast<std::ptrdiff_t>(pos_ + n * width));
      if (v.array_type_ == gguf_value_type::boolean) {
        for (std::size_t i = 0; i < n; ++i) {
          if (v.raw_[i] > 1) {
            SURGEON_THROW(io_error, "{}: metadata key '{}': bool element {} at byte {} is {}, not 0 or 1",
                          source_, detail::shorten(key), i, pos_ + i, v.raw_[i]);
          }
        }
      }
      pos_ += n * width;
    } else if (v.array_type_ == gguf_value_type::string) {
      v.strings_.reserve(n);
      for (std::size_t i = 0; i < n; ++i) v.strings_.push_back(read_string("a string array element"));
    } else {
      v.arrays_.reserve(n);
      for (std::size_t i = 0; i < n; ++i) v.arrays_.push_back(read_value(gguf_value_type::array, key, depth));
    }
  }

  // ---- the file ------------------------------------------------------------------------------

  void parse() {
    if (!detail::host_is_little_endian()) {
      SURGEON_THROW(io_error, "{}: GGUF files can only be read on little-endian hosts", source_);
    }
    if (bytes_.size() < 4 || std::memcmp(bytes_.data(), "GGUF", 4) != 0) {
      SURGEON_THROW(io_error, "{}: not a GGUF file (the first 4 bytes are not \"GGUF\")", source_);
    }
    pos_ = 4;
    version_ = read_u32("the version");
    if (version_ == 1) {
      SURGEON_THROW(io_error, "{}: GGUF version 1 is not supported (only versions 2 and 3)", source_);
    }
    if (version_ != 2 && version_ != 3) {
      if ((version_ & 0xFFFFU) == 0 && (version_ >> 16) != 0) {
        SURGEON_THROW(io_error,
                      "{}: GGUF version field {:#x} looks big-endian; only little-endian files are "
                      "supported",
                      source_, version_);
      }
      SURGEON_THROW(io_error, "{}: unsupported GGUF version {} (only versions 2 and 3)", source_, version_);
    }
    const std::uint64_t tensor_count = read_u64("the tensor count");
    const std::uint64_t kv_count = read_u64("the metadata count");

    // A key-value pair takes at least 8 (key length) + 4 (type) + 1 (smallest value) bytes.
    if (kv_count > remaining() / 13) {
      SURGEON_THROW(io_error, "{}: metadata count {} cannot fit in the {} bytes that remain (corrupt?)",
                    source_, kv_count, remaining());
    }
    metadata_.reserve(static_cast<std::size_t>(kv_count));
    for (std::uint64_t k = 0; k < kv_count; ++k) {
      std::string key = read_string("a metadata key");
      const gguf_value_type type = read_value_type(key, "value type");
      gguf_value value = read_value(type, key, 0);
      if (key_index_.find(key) != key_index_.end()) {
        SURGEON_THROW(io_error, "{}: duplicate metadata key '{}'", source_, detail::shorten(key));
      }
      key_index_.emplace(key, metadata_.size());
      metadata_.emplace_back(std::move(key), std::move(value));
    }

    alignment_ = default_alignment;
    if (const gguf_value* a = find("general.alignment")) {
      const auto value = a->try_uint();
      if (!value || *value == 0 || (*value & (*value - 1)) != 0 || *value > (std::uint64_t{1} << 30)) {
        SURGEON_THROW(io_error, "{}: general.alignment must be a power-of-two integer up to 2^30", source_);
      }
      alignment_ = *value;
    }

    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    if (tensor_count > remaining() / 24) {
      SURGEON_THROW(io_error, "{}: tensor count {} cannot fit in the {} bytes that remain (corrupt?)",
                    source_, tensor_count, remaining());
    }
    tensors_.reserve(static_cast<std::size_t>(tensor_count));
    for (std::uint64_t i = 0; i < tensor_count; ++i) tensors_.push_back(read_tensor_info());

    // The data section starts at the next multiple of the alignment; a file may end there.
    const std::uint64_t aligned = (pos_ + alignment_ - 1) / alignment_ * alignment_;
    data_begin_ = static_cast<std::size_t>(std::min<std::uint64_t>(aligned, bytes_.size()));
    const std::uint64_t data_bytes = data_size();

    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const gguf_tensor_info& t = tensors_[i];
      if (t.offset > data_bytes || t.bytes > data_bytes - t.offset) {
        SURGEON_THROW(io_error,
                      "{}: tensor '{}' needs bytes [{}, +{}) of the data section, which has {} (truncated?)",
                      source_, detail::shorten(t.name), t.offset, t.bytes, data_bytes);
      }
      if (!tensor_index_.emplace(t.name, i).second) {
        SURGEON_THROW(io_error, "{}: duplicate tensor name '{}'", source_, detail::shorten(t.name));
      }
    }
    check_overlaps();
  }

  gguf_tensor_info read_tensor_info() {
    gguf_tensor_info t;
    t.name = read_string("a tensor name");
    const std::string name = detail::shorten(t.name);
    const std::uint32_t n_dims = read_u32("a tensor's dimension count");
    if (n_dims > max_dims) {
      SURGEON_THROW(io_error, "{}: tensor '{}' has {} dimensions; at most {} are supported", source_, name,
                    n_dims, max_dims);
    }
    std::uint64_t elements = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const std::uint64_t dim = read_u64("a tensor dimension");
      if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        SURGEON_THROW(io_error, "{}: tensor '{}' has dimension {} = {}, which is negative as int64", source_,
                      name, d, dim);
      }
      t.ne.push_back(static_cast<std::int64_t>(dim));
    }
    // Products of non-zero dimensions must fit int64 (so strides computed from them do too).
    bool has_zero = false;
    for (const std::int64_t dim : t.ne) {
      if (dim == 0) {
        has_zero = true;
        continue;
      }
      const auto product = detail::checked_mul(elements, static_cast<std::uint64_t>(dim));
      if (!product || *product > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        SURGEON_THROW(io_error, "{}: tensor '{}': the product of its dimensions overflows int64", source_,
                      name);
      }
      elements = *product;
    }
    if (has_zero) elements = 0;

    const std::size_t type_at = pos_;
    const std::uint32_t type = read_u32("a tensor type");
    const detail::ggml_traits traits = detail::ggml_traits_of(type);
    if (traits.block_size == 0) {
      SURGEON_THROW(io_error, "{}: tensor '{}' at byte {} has unknown or removed ggml type {}", source_, name,
                    type_at, type);
    }
    t.type = static_cast<ggml_type>(type);
    const std::uint64_t row = t.ne.empty() ? 1 : static_cast<std::uint64_t>(t.ne[0]);
    if (row % traits.block_size != 0) {
      SURGEON_THROW(io_error,
                    "{}: tensor '{}' of type {} has rows of {} elements, not a multiple of its block "
                    "size {}",
                    source_, name, traits.name, row, traits.block_size);
    }
    const auto bytes = detail::checked_mul(elements / traits.block_size, traits.block_bytes);
    if (!bytes || *bytes > std::numeric_limits<std::size_t>::max()) {
      SURGEON_THROW(io_error, "{}: tensor '{}': its byte size overflows", source_, name);
    }
    t.bytes = *bytes;
    t.offset = read_u64("a tensor offset");
    if (t.offset % alignment_ != 0) {
      SURGEON_THROW(io_error, "{}: tensor '{}' has offset {}, not a multiple of the alignment {}", source_,
                    name, t.offset, alignment_);
    }
    return t;
  }

  void check_overlaps() const {
    std::vector<std::size_t> order(tensors_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      if (tensors_[a].offset != tensors_[b].offset) return tensors_[a].offset < tensors_[b].offset;
      return tensors_[a].bytes < tensors_[b].bytes;
    });
    // Zero-byte tensors occupy nothing; every other tensor must start at or after the end of all
    // earlier ones.
    const gguf_tensor_info* furthest = nullptr;
    for (const std::size_t i : order) {
      const gguf_tensor_info& t = tensors_[i];
      if (t.bytes == 0) continue;
      if (furthest != nullptr && t.offset < furthest->offset + furthest->bytes) {
        SURGEON_THROW(io_error, "{}: tensors '{}' (bytes [{}, {})) and '{}' (bytes [{}, {})) overlap",
                      source_, detail::shorten(furthest->name), furthest->offset,
                      furthest->offset + furthest->bytes, detail::shorten(t.name), t.offset,
                      t.offset + t.bytes);
      }
      if (furthest == nullptr || t.offset + t.bytes > furthest->offset + furthest->bytes) furthest = &t;
    }
  }

  std::string source_;
  std::vector<std::uint8_t> bytes_;
  std::size_t pos_ = 0;
  std::uint64_t array_elements_ = 0;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = default_alignment;
  std::size_t data_begin_ = 0;
  std::vector<std::pair<std::string, gguf_value>> metadata_;
  std::map<std::string, std::size_t, std::less<>> key_index_;
  std::vector<gguf_tensor_info> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
};

/// @brief Builds a GGUF v3 file and writes it atomically.
///
/// Metadata keeps insertion order (setting an existing key replaces its value in place).
/// Tensors are laid out in the order added, each at a multiple of the alignment (32, or
/// `general.alignment` when set, which must then be a uint32 power of two) and padded to it, as
/// ggml does. Data is copied in; `to_bytes` and `write` may be called any number of times. Not
/// thread-safe for concurrent mutation.
class gguf_writer {
 public:
  /// @brief Longest tensor name ggml accepts, in bytes (GGML_MAX_NAME - 1).
  static constexpr std::size_t max_name_bytes = 63;

  /// @brief Sets metadata key `key` to `value`, replacing an earlier value in place.
  /// @throws logic_error if `key` is empty or longer than 65535 bytes. Cost: O(log m).
  void set(std::string key, gguf_value value) {
    SURGEON_EXPECTS(!key.empty() && key.size() <= 65535,
                    "gguf_writer::set: a key must have 1 to 65535 bytes, got {}", key.size());
    const auto it = key_index_.find(key);
    if (it != key_index_.end()) {
      metadata_[it->second].second = std::move(value);
      return;
    }
    key_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  /// @brief Sets a string key. @throws logic_error as `set`. Cost: O(log m).
  void set_string(std::string key, std::string value) {
    set(std::move(key), gguf_value::string(std::move(value)));
  }
  /// @brief Sets a uint32 key. @throws logic_error as `set`. Cost: O(log m).
  void set_uint32(std::string key, std::uint32_t value) { set(std::move(key), gguf_value::scalar(value)); }
  /// @brief Sets a uint64 key. @throws logic_error as `set`. Cost: O(log m).
  void set_uint64(std::string key, std::uint64_t value) { set(std::move(key), gguf_value::scalar(value)); }
  /// @brief Sets an int32 key. @throws logic_error as `set`. Cost: O(log m).
  void set_int32(std::string key, std::int32_t value) { set(std::move(key), gguf_value::scalar(value)); }
  /// @brief Sets a float32 key. @throws logic_error as `set`. Cost: O(log m).
  void set_float32(std::string key, float value) { set(std::move(key), gguf_value::scalar(value)); }
  /// @brief Sets a bool key. @throws logic_error as `set`. Cost: O(log m).
  void set_bool(std::string key, bool value) { set(std::move(key), gguf_value::scalar(value)); }
  /// @brief Sets a string-array key (e.g. `tokenizer.ggml.tokens`). @throws logic_error as `set`.
  /// Cost: O(log m).
  void set_string_array(std::string key, std::vector<std::string> values) {
    set(std::move(key), gguf_value::string_array(std::move(values)));
  }

  /// @brief Copies every metadata key of `reader`, in its order and with its exact types and
  /// values, replacing keys already set here (`general.alignment` included).
  /// Cost: O(metadata size).
  void copy_metadata_from(const gguf_reader& reader) {
    for (const auto& [key, value] : reader.metadata()) set(key, value);
  }

  /// @brief The value of metadata key `key` set so far, or null. Cost: O(log m).
  const gguf_value* find(std::string_view key) const {
    const auto it = key_index_.find(key);
    return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
  }

  /// @brief Removes metadata key `key`; returns whether it was there. Cost: O(m).
  bool erase(std::string_view key) {
    const auto it = key_index_.find(key);
    if (it == key_index_.end()) return false;
    metadata_.erase(metadata_.begin() + static_cast<std::ptrdiff_t>(it->second));
    key_index_.clear();
    for (std::size_t i = 0; i < metadata_.size(); ++i) key_index_.emplace(metadata_[i].first, i);
    return true;
  }

  /// @brief Adds a tensor of `ne` (GGUF order, fastest first: a row-major `[out, in]` matrix is
  /// `ne = {in, out}`) converted from `elements(ne)` floats at `data` to `type`: F32 (exact) or
  /// F16 (`float_to_f16`, round to nearest even).
  /// @throws logic_error if `type` is not F32 or F16; if `name` is empty, longer than
  ///         `max_name_bytes` or already used; if `ne` has 0 or more than 4 entries, a negative
  ///         entry or an overflowing product; or if `data` is null while there are elements.
  /// Cost: O(elements) conversion and copy.
  void add_tensor(std::string name, std::vector<std::int64_t> ne, ggml_type type, const float* data) {
    SURGEON_EXPECTS(
        type == ggml_type::f32 || type == ggml_type::f16,
        "gguf_writer::add_tensor: tensor '{}' has type {}; only F32 and F16 are written from floats",
        detail::shorten(name), ggml_type_name(type));
    const std::size_t n = check_tensor(name, ne, type);
    SURGEON_EXPECTS(data != nullptr || n == 0, "gguf_writer::add_tensor: null data for tensor '{}'",
                    detail::shorten(name));
    entry e;
    e.name = std::move(name);
    e.ne = std::move(ne);
    e.type = type;
    if (type == ggml_type::f32) {
      e.data.resize(n * 4);
      if (n > 0) std::memcpy(e.data.data(), data, n * 4);
    } else {
      e.data.reserve(n * 2);
      for (std::size_t i = 0; i < n; ++i) detail::put_le(e.data, float_to_f16(data[i]), 2);
    }
    add_entry(std::move(e));
  }

  /// @brief Adds a tensor of any known ggml type from its encoded bytes (copied as they are),
  /// e.g. to pass a quantised tensor of a `gguf_reader` through unchanged.
  /// @throws logic_error as `add_tensor` for the name and `ne`; if `type` is unknown; if `ne[0]`
  ///         is not a multiple of the type's block size; if `bytes` is not the tensor's size; or
  ///         if `data` is null while `bytes > 0`. Cost: O(bytes) copy.
  void add_raw_tensor(std::string name, std::vector<std::int64_t> ne, ggml_type type, const void* data,
                      std::size_t bytes) {
    SURGEON_EXPECTS(is_known_ggml_type(static_cast<std::uint32_t>(type)),
                    "gguf_writer::add_raw_tensor: tensor '{}' has unknown ggml type {}",
                    detail::shorten(name), static_cast<std::uint32_t>(type));
    const std::size_t n = check_tensor(name, ne, type);
    const auto block = static_cast<std::size_t>(ggml_block_size(type));
    SURGEON_EXPECTS(
        static_cast<std::size_t>(ne[0]) % block == 0,
        "gguf_writer::add_raw_tensor: tensor '{}' of type {} has rows of {}, not a multiple of {}",
        detail::shorten(name), ggml_type_name(type), ne[0], block);
    const std::size_t expected = n / block * ggml_block_bytes(type);
    SURGEON_EXPECTS(bytes == expected,
                    "gguf_writer::add_raw_tensor: tensor '{}' of {} {} elements needs {} bytes, got {}",
                    detail::shorten(name), n, ggml_type_name(type), expected, bytes);
    SURGEON_EXPECTS(data != nullptr || bytes == 0, "gguf_writer::add_raw_tensor: null data for tensor '{}'",
                    detail::shorten(name));
    entry e;
    e.name = std::move(name);
    e.ne = std::move(ne);
    e.type = type;
    if (bytes > 0) {
      const auto* p = static_cast<const std::uint8_t*>(data);
      e.data.assign(p, p + bytes);
    }
    add_entry(std::move(e));
  }

  /// @brief Number of tensors added so far. Cost: O(1).
  std::size_t size() const noexcept { return entries_.size(); }

  /// @brief The alignment the file will use: `general.alignment` if set, else 32.
  /// @throws logic_error if `general.alignment` is set but is not a uint32 power of two.
  /// Cost: O(log m).
  std::uint64_t alignment() const {
    const gguf_value* a = find("general.alignment");
    if (a == nullptr) return gguf_reader::default_alignment;
    const auto value = a->try_uint();
    SURGEON_EXPECTS(a->type() == gguf_value_type::uint32 && value && *value != 0 &&
                        (*value & (*value - 1)) == 0 && *value <= (std::uint64_t{1} << 30),
                    "gguf_writer: general.alignment must be a uint32 power of two up to 2^30");
    return *value;
  }

  /// @brief The complete file. @throws logic_error as `alignment`. Cost: O(file size).
  std::vector<std::uint8_t> to_bytes() const {
    std::vector<std::uint8_t> out;
    emit([&](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); });
    return out;
  }

  /// @brief Writes the file to `path` via `path + ".tmp.<pid>"` and a rename, so `path` is
  /// either left as it was or replaced by the complete file; the temporary file is removed on
  /// failure. Callers must not pass the path of a file they are still reading.
  /// @throws io_error naming `path` if the temporary file cannot be created or written, or the
  ///         rename fails; logic_error as `alignment`. Cost: O(file size) I/O.
  void write(const std::string& path) const {
    if (!detail::host_is_little_endian()) {
      SURGEON_THROW(io_error, "{}: GGUF files can only be written on little-endian hosts", path);
    }
    (void)alignment();  // report a bad alignment before touching the disk
    detail::write_file_atomically(path, [&](const auto& write) { emit(write); });
  }

 private:
  struct entry {
    std::string name;
    std::vector<std::int64_t> ne;
    ggml_type type = ggml_type::f32;
    std::vector<std::uint8_t> data;
  };

  /// Checks name and shape; returns the element count.
  std::size_t check_tensor(const std::string& name, const std::vector<std::int64_t>& ne,
                           ggml_type type) const {
    SURGEON_EXPECTS(!name.empty() && name.size() <= max_name_bytes,
                    "gguf_writer: tensor name '{}' must have 1 to {} bytes", detail::shorten(name),
                    max_name_bytes);
    SURGEON_EXPECTS(tensor_index_.find(name) == tensor_index_.end(),
                    "gguf_writer: duplicate tensor name '{}'", detail::shorten(name));
    SURGEON_EXPECTS(!ne.empty() && ne.size() <= gguf_reader::max_dims,
                    "gguf_writer: tensor '{}' has {} dimensions; 1 to {} are supported",
                    detail::shorten(name), ne.size(), gguf_reader::max_dims);
    const auto elements = detail::checked_elements(std::vector<index_t>(ne.begin(), ne.end()));
    SURGEON_EXPECTS(elements.has_value(), "gguf_writer: tensor '{}' has a negative or overflowing shape",
                    detail::shorten(name));
    const auto bytes = detail::checked_mul(static_cast<std::uint64_t>(*elements), ggml_block_bytes(type));
    SURGEON_EXPECTS(bytes.has_value() && *bytes <= std::numeric_limits<std::size_t>::max() / 2,
                    "gguf_writer: tensor '{}' is too large", detail::shorten(name));
    return static_cast<std::size_t>(*elements);
  }

  void add_entry(entry e) {
    tensor_index_.emplace(e.name, entries_.size());
    entries_.push_back(std::move(e));
  }

  static void put_string(std::vector<std::uint8_t>& out, const std::string& s) {
    detail::put_le(out, s.size(), 8);
    out.insert(out.end(), s.begin(), s.end());
  }

  static void put_value(std::vector<std::uint8_t>& out, const gguf_value& v) {
    switch (v.type_) {
      case gguf_value_type::string:
        put_string(out, v.string_);
        return;
      case gguf_value_type::array:
        detail::put_le(out, static_cast<std::uint32_t>(v.array_type_), 4);
        detail::put_le(out, v.size_, 8);
        if (v.array_type_ == gguf_value_type::string) {
          for (const std::string& s : v.strings_) put_string(out, s);
        } else if (v.array_type_ == gguf_value_type::array) {
          for (const gguf_value& a : v.arrays_) put_value(out, a);
        } else {
          out.insert(out.end(), v.raw_.begin(), v.raw_.end());
        }
        return;
      default:
        detail::put_le(out, v.bits_, gguf_value_size(v.type_));
        return;
    }
  }

  /// Streams the file to `sink(const std::uint8_t*, std::size_t)`.
  template <typename Sink>
  void emit(Sink&& sink) const {
    const std::uint64_t align = alignment();
    std::vector<std::uint8_t> head;
    head.insert(head.end(), {'G', 'G', 'U', 'F'});
    detail::put_le(head, 3, 4);
    detail::put_le(head, entries_.size(), 8);
    detail::put_le(head, metadata_.size(), 8);
    for (const auto& [key, value] : metadata_) {
      put_string(head, key);
      detail::put_le(head, static_cast<std::uint32_t>(value.type_), 4);
      put_value(head, value);
    }
    std::uint64_t offset = 0;
    for (const entry& e : entries_) {
      put_string(head, e.name);
      detail::put_le(head, e.ne.size(), 4);
      for (const std::int64_t d : e.ne) detail::put_le(head, static_cast<std::uint64_t>(d), 8);
      detail::put_le(head, static_cast<std::uint32_t>(e.type), 4);
      detail::put_le(head, offset, 8);
      offset += (e.data.size() + align - 1) / align * align;
    }
    head.resize(static_cast<std::size_t>((head.size() + align - 1) / align * align), 0);
    sink(head.data(), head.size());
    const std::vector<std::uint8_t> zeros(static_cast<std::size_t>(align), 0);
    for (const entry& e : entries_) {
      if (!e.data.empty()) sink(e.data.data(), e.data.size());
      const std::size_t pad = static_cast<std::size_t>((align - e.data.size() % align) % align);
      if (pad > 0) sink(zeros.data(), pad);
    }
  }

  std::vector<std::pair<std::string, gguf_value>> metadata_;
  std::map<std::string, std::size_t, std::less<>> key_index_;
  std::vector<entry> entries_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
};

}  // namespace surgeon::io
