/// @file gguf_value.hpp
/// @brief The GGUF metadata value model: value types, numbered as in the GGUF specification
/// (ggml `docs/gguf.md`), and `gguf_value`, one value of any of them.
///
/// **Encoding** (little-endian). A metadata value is a scalar (8- to 64-bit integer, float32,
/// float64, bool as one byte 0 or 1), a string (a `uint64` byte length and that many bytes, no
/// terminator), or an array (a `uint32` element type, a `uint64` element count and the
/// elements; arrays may nest). `gguf_reader` decodes values, `gguf_writer` encodes them.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/detail/bytes.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace surgeon::io {

class gguf_reader;
class gguf_writer;

/// @brief Types of GGUF metadata values, numbered as in the GGUF specification (kept as its
/// table, hence unformatted).
// clang-format off
enum class gguf_value_type : std::uint32_t {
  uint8 = 0,   int8 = 1,   uint16 = 2, int16 = 3,   uint32 = 4, int32 = 5,    float32 = 6,
  boolean = 7, string = 8, array = 9,  uint64 = 10, int64 = 11, float64 = 12
};
// clang-format on

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

}  // namespace surgeon::io
