/// @file safetensors.hpp
/// @brief A bounds-checked reader and writer for the safetensors format.
///
/// **Format.** A safetensors file is: an unsigned 64-bit little-endian header length `n`; `n`
/// bytes of UTF-8 JSON (the header); the data section. The header is an object mapping each
/// tensor name to `{"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}`
/// (offsets in bytes, relative to the start of the data section, data row-major and
/// little-endian), plus an optional `"__metadata__"` object of string to string.
///
/// **Trust.** Files are untrusted. `safetensors_reader` checks every length, offset, shape and
/// dtype before it hands out a pointer, and reports a malformed, truncated or hostile file as an
/// `io_error` that names the file and the reason, never as a crash or a huge allocation: the
/// header is capped at `safetensors_reader::max_header_bytes`; it is parsed by nlohmann-json
/// under caps on nesting (`safetensors_reader::max_header_depth`) and value count
/// (`safetensors_reader::max_header_values`), with duplicate keys refused (see
/// `io/detail/json.hpp`); and no buffer is larger than the file's own data (times 4 for a
/// widening `read<double>` of F16/BF16). Gaps between tensors are allowed;
/// overlapping tensors are not. Unknown keys inside a tensor entry are ignored, as the reference
/// implementation does.
///
/// **Writing.** `safetensors_writer` pads the header with spaces so the data section starts at
/// an 8-byte boundary, and lays out the data by decreasing element size so every tensor is
/// aligned to its own element size. `write()` writes a temporary file beside the target and
/// renames it into place, so a failed write never leaves a half-written file under the target
/// name.
///
/// The host must be little-endian (every platform surgeon targets is).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/io/detail/bytes.hpp>
#include <surgeon/io/detail/file.hpp>
#include <surgeon/io/detail/json.hpp>
#include <surgeon/io/half.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "surgeon/io/safetensors.hpp supports little-endian hosts only");
#endif

namespace surgeon::io {

/// @brief Element types of safetensors tensors that surgeon understands.
enum class dtype { f64, f32, f16, bf16, i64, i32, i16, i8, u8, boolean };

/// @brief The safetensors spelling of a dtype: "F64", "F32", "F16", "BF16", "I64", "I32",
/// "I16", "I8", "U8", "BOOL". Cost: O(1).
inline constexpr std::string_view dtype_name(dtype type) noexcept {
  switch (type) {
    case dtype::f64:
      return "F64";
    case dtype::f32:
      return "F32";
    case dtype::f16:
      return "F16";
    case dtype::bf16:
      return "BF16";
    case dtype::i64:
      return "I64";
    case dtype::i32:
      return "I32";
    case dtype::i16:
      return "I16";
    case dtype::i8:
      return "I8";
    case dtype::u8:
      return "U8";
    case dtype::boolean:
      return "BOOL";
  }
  return "?";
}

/// @brief Bytes per element of a dtype (BOOL is one byte). Cost: O(1).
inline constexpr std::size_t dtype_size(dtype type) noexcept {
  switch (type) {
    case dtype::f64:
    case dtype::i64:
      return 8;
    case dtype::f32:
    case dtype::i32:
      return 4;
    case dtype::f16:
    case dtype::bf16:
    case dtype::i16:
      return 2;
    case dtype::i8:
    case dtype::u8:
    case dtype::boolean:
      return 1;
  }
  return 0;
}

namespace detail {

inline constexpr dtype all_dtypes[] = {dtype::f64, dtype::f32, dtype::f16, dtype::bf16, dtype::i64,
                                       dtype::i32, dtype::i16, dtype::i8,  dtype::u8,   dtype::boolean};

/// The dtype spelled `name`, or nothing. Exact, case-sensitive match.
inline std::optional<dtype> find_dtype(std::string_view name) noexcept {
  for (const dtype type : all_dtypes) {
    if (dtype_name(type) == name) return type;
  }
  return std::nullopt;
}

/// double -> float with IEEE round-to-nearest semantics, also for finite values beyond the
/// float range (which become +-inf or +-FLT_MAX instead of undefined behaviour).
inline float narrow_to_float(double d) noexcept {
  constexpr double max = static_cast<double>(std::numeric_limits<float>::max());
  if (std::isfinite(d) && std::fabs(d) > max) {
    // Values below FLT_MAX + half an ulp (2^103) round down to FLT_MAX; the tie rounds to even,
    // which is infinity because FLT_MAX has an odd significand.
    const float magnitude = std::fabs(d) < max + std::ldexp(1.0, 103)
                                ? std::numeric_limits<float>::max()
                                : std::numeric_limits<float>::infinity();
    return d < 0 ? -magnitude : magnitude;
  }
  return static_cast<float>(d);
}

}  // namespace detail

/// @brief The dtype that stores `T` exactly: float F32, double F64, std::int32_t I32,
/// std::int64_t I64, std::uint8_t U8 (a compile error for any other `T`). Cost: O(1).
template <typename T>
constexpr dtype dtype_of() noexcept {
  if constexpr (std::is_same_v<T, float>) {
    return dtype::f32;
  } else if constexpr (std::is_same_v<T, double>) {
    return dtype::f64;
  } else if constexpr (std::is_same_v<T, std::int32_t>) {
    return dtype::i32;
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    return dtype::i64;
  } else {
    static_assert(std::is_same_v<T, std::uint8_t>,
                  "safetensors: T must be float, double, std::int32_t, std::int64_t or std::uint8_t");
    return dtype::u8;
  }
}

/// @brief The dtype spelled `name` ("F32", "BF16", ...; case-sensitive, as in the format).
/// @throws io_error naming `name` when it is not one of the dtypes above. Cost: O(1).
inline dtype parse_dtype(std::string_view name) {
  if (const auto type = detail::find_dtype(name)) return *type;
  SURGEON_THROW(io_error, "unknown safetensors dtype '{}'", detail::shorten(name));
}

/// @brief Where one tensor lives in a safetensors file, and what it is.
struct tensor_info {
  /// The tensor's name (the header key).
  std::string name;
  /// Element type.
  io::dtype type = io::dtype::f32;
  /// Dimensions, outermost first (row-major); empty for a scalar.
  std::vector<index_t> shape;
  /// Byte offset of the first element, relative to the start of the data section.
  std::uint64_t offset = 0;
  /// Size in bytes: `elements() * dtype_size(type)`.
  std::uint64_t bytes = 0;

  /// @brief Number of elements: the product of `shape` (1 for a scalar). Never overflows for
  /// an info handed out by `safetensors_reader`. Cost: O(shape.size()).
  index_t elements() const noexcept {
    index_t n = 1;
    for (const index_t dim : shape) n *= dim;
    return n;
  }
};

/// @brief A validated, in-memory safetensors file.
///
/// The whole file is read into memory once (`open`) or taken over (`from_bytes`) and validated
/// completely before the reader is returned; afterwards every accessor is bounds-safe. Data is
/// row-major and little-endian; `data()` pointers may be unaligned. Copyable and movable;
/// `const` member functions are safe to call concurrently.
class safetensors_reader {
 public:
  /// @brief Largest header accepted, in bytes (100 MB, as in the reference implementation).
  static constexpr std::uint64_t max_header_bytes = 100'000'000;
  /// @brief Deepest nesting of JSON arrays and objects accepted in the header (the header
  /// object itself is depth 1, a tensor entry depth 2, its `"shape"` depth 3).
  static constexpr int max_header_depth = 64;
  /// @brief Most JSON values (containers included) accepted in the header: about 1M, room for
  /// ~150k tensors of 7 values each.
  static constexpr std::size_t max_header_values = std::size_t{1} << 20;

  /// @brief Reads and validates the safetensors file at `path`.
  /// @throws io_error naming `path` if the file cannot be opened or read, is not a regular file,
  ///         or is malformed (see `from_bytes`).
  /// Cost: one read of the file; memory: the file's size plus the parsed header.
  static safetensors_reader open(const std::string& path) {
    std::vector<std::uint8_t> bytes =
        detail::read_whole_file(path, 8, "the 8-byte safetensors header length");
    return safetensors_reader(path, std::move(bytes));
  }

  /// @brief Validates a safetensors file held in memory and takes ownership of it.
  /// @param bytes the whole safetensors file; moved into the reader, which keeps it for its lifetime.
  /// @param source names the bytes in error messages.
  /// @throws io_error naming `source` if: there are fewer than 8 bytes; the header length is
  ///         above `max_header_bytes` or beyond the end; the header is not valid JSON (a NUL
  ///         byte included), nests deeper than `max_header_depth`, holds more than
  ///         `max_header_values` values, repeats a key within an object, or is not an object;
  ///         `"__metadata__"` is not an object of strings; a tensor entry lacks a known
  ///         `"dtype"`, a `"shape"` of non-negative integers whose product fits `index_t`, or
  ///         `"data_offsets"` `[begin, end]` with `begin <= end <= data size` and
  ///         `end - begin == elements * dtype_size`; or two tensors overlap.
  /// Cost: O(file header size + t log t) for t tensors; the data is not touched.
  static safetensors_reader from_bytes(std::vector<std::uint8_t> bytes, std::string source = "<memory>") {
    return safetensors_reader(std::move(source), std::move(bytes));
  }

  /// @brief The path (or the `source` label) this reader was made from. Cost: O(1).
  const std::string& source() const noexcept { return source_; }
  /// @brief The `"__metadata__"` entries (empty when the file has none). Cost: O(1).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  /// @brief Every tensor, sorted by data offset (ties by name). Cost: O(1).
  const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }
  /// @brief Size of the data section in bytes. Cost: O(1).
  std::uint64_t data_size() const noexcept { return static_cast<std::uint64_t>(bytes_.size() - data_begin_); }

  /// @brief True when the file has a tensor called `name`. Cost: O(log t).
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }

  /// @brief The tensor called `name`.
  /// @throws io_error naming the file and `name` when there is none. Cost: O(log t).
  const tensor_info& info(std::string_view name) const {
    const auto it = index_.find(name);
    if (it == index_.end())
      SURGEON_THROW(io_error, "{}: no tensor named '{}'", source_, detail::shorten(name));
    return tensors_[it->second];
  }

  /// @brief Pointer to the first byte of `tensor`'s data (host memory, owned by this reader,
  /// possibly unaligned, little-endian, `tensor.bytes` long).
  /// @throws logic_error if `tensor` does not fit this file's data section (an info from a
  ///         different file). Cost: O(1).
  const std::uint8_t* data(const tensor_info& tensor) const {
    const std::uint64_t size = data_size();
    SURGEON_EXPECTS(
        detail::fits_in(tensor.offset, tensor.bytes, size),
        "safetensors_reader::data: tensor '{}' [{}, +{}) lies outside the {}-byte data section of {}",
        detail::shorten(tensor.name), tensor.offset, tensor.bytes, size, source_);
    return bytes_.data() + data_begin_ + static_cast<std::size_t>(tensor.offset);
  }

  /// @brief Copies the tensor called `name` into a vector of `T` (row-major).
  /// @tparam T float, double, std::int32_t, std::int64_t or std::uint8_t. The stored dtype must
  ///         be `dtype_of<T>()`, except that float and double accept F16, BF16, F32 and F64
  ///         (converted; F64 -> float rounds to nearest, beyond-range values become ±inf).
  /// @throws io_error if there is no such tensor, or naming both dtypes when the stored dtype
  ///         cannot be read as `T`.
  /// Cost: O(elements); allocates `elements * sizeof(T)` bytes.
  template <typename T>
  std::vector<T> read(std::string_view name) const {
    constexpr dtype wanted = dtype_of<T>();
    const tensor_info& tensor = info(name);
    const std::uint8_t* p = data(tensor);
    const auto n = static_cast<std::size_t>(tensor.elements());
    std::vector<T> out(n);
    if constexpr (std::is_floating_point_v<T>) {
      switch (tensor.type) {
        case dtype::f16:
          for (std::size_t i = 0; i < n; ++i)
            out[i] = static_cast<T>(f16_to_float(detail::load<std::uint16_t>(p + 2 * i)));
          return out;
        case dtype::bf16:
          for (std::size_t i = 0; i < n; ++i)
            out[i] = static_cast<T>(bf16_to_float(detail::load<std::uint16_t>(p + 2 * i)));
          return out;
        case dtype::f32:
          for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(detail::load<float>(p + 4 * i));
          return out;
        case dtype::f64:
          for (std::size_t i = 0; i < n; ++i) {
            const double d = detail::load<double>(p + 8 * i);
            if constexpr (std::is_same_v<T, float>) {
              out[i] = detail::narrow_to_float(d);
            } else {
              out[i] = d;
            }
          }
          return out;
        default:
          break;
      }
    } else {
      if (tensor.type == wanted) {
        if (n > 0) std::memcpy(out.data(), p, n * sizeof(T));
        return out;
      }
    }
    SURGEON_THROW(io_error, "{}: tensor '{}' is stored as {} and cannot be read as {}", source_,
                  detail::shorten(tensor.name), dtype_name(tensor.type), dtype_name(wanted));
  }

 private:
  safetensors_reader(std::string source, std::vector<std::uint8_t> bytes)
      : source_(std::move(source)), bytes_(std::move(bytes)) {
    validate();
  }

  [[noreturn]] void fail_tensor(const std::string& name, std::string_view reason) const {
    SURGEON_THROW(io_error, "{}: tensor '{}': {}", source_, detail::shorten(name), reason);
  }

  void validate() {
    if (!detail::host_is_little_endian()) {
      SURGEON_THROW(io_error, "{}: safetensors files can only be read on little-endian hosts", source_);
    }
    const std::size_t size = bytes_.size();
    if (size < 8) {
      SURGEON_THROW(io_error, "{}: file is {} bytes, too short for the 8-byte safetensors header length",
                    source_, size);
    }
    const std::uint64_t header_length = detail::get_le(bytes_.data(), 8);
    if (header_length > max_header_bytes) {
      SURGEON_THROW(io_error, "{}: header length {} exceeds the limit of {} bytes", source_, header_length,
                    max_header_bytes);
    }
    if (header_length > size - 8) {
      SURGEON_THROW(io_error,
                    "{}: header length {} exceeds the {} bytes that follow the length field (truncated?)",
                    source_, header_length, size - 8);
    }
    data_begin_ = 8 + static_cast<std::size_t>(header_length);
    const std::uint64_t data_bytes = data_size();

    const std::string_view text(reinterpret_cast<const char*>(bytes_.data() + 8),
                                static_cast<std::size_t>(header_length));
    detail::json_limits limits;
    limits.max_depth = max_header_depth;
    limits.max_values = max_header_values;
    const nlohmann::json root =
        detail::parse_json(text, fmt::format("{}: safetensors header", source_), limits);
    if (!root.is_object()) {
      SURGEON_THROW(io_error, "{}: safetensors header is a JSON {}, not an object", source_,
                    root.type_name());
    }

    tensors_.reserve(root.size());
    for (auto it = root.begin(); it != root.end(); ++it) {
      if (it.key() == "__metadata__") {
        read_metadata(it.value());
        continue;
      }
      tensors_.push_back(read_entry(it.key(), it.value(), data_bytes));
    }

    std::sort(tensors_.begin(), tensors_.end(), [](const tensor_info& a, const tensor_info& b) {
      if (a.offset != b.offset) return a.offset < b.offset;
      if (a.bytes != b.bytes) return a.bytes < b.bytes;
      return a.name < b.name;
    });
    detail::check_no_overlap(source_, tensors_);
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  }

  void read_metadata(const nlohmann::json& entry) {
    if (!entry.is_object()) {
      SURGEON_THROW(io_error, "{}: \"__metadata__\" is a JSON {}, not an object", source_, entry.type_name());
    }
    for (auto it = entry.begin(); it != entry.end(); ++it) {
      if (!it.value().is_string()) {
        SURGEON_THROW(io_error, "{}: \"__metadata__\" entry '{}' is a JSON {}, not a string", source_,
                      detail::shorten(it.key()), it.value().type_name());
      }
      metadata_.emplace(it.key(), it.value().get<std::string>());
    }
  }

  /// The value of a JSON integer >= 0 ("-0" included), or nothing for anything else.
  static std::optional<std::uint64_t> non_negative_integer(const nlohmann::json& v) {
    if (v.is_number_unsigned()) return v.get<std::uint64_t>();
    if (v.is_number_integer() && v.get<std::int64_t>() >= 0)
      return static_cast<std::uint64_t>(v.get<std::int64_t>());
    return std::nullopt;
  }

  tensor_info read_entry(const std::string& name, const nlohmann::json& entry,
                         std::uint64_t data_bytes) const {
    if (!entry.is_object())
      fail_tensor(name, fmt::format("entry is a JSON {}, not an object", entry.type_name()));
    tensor_info t;
    t.name = name;

    const auto type = entry.find("dtype");
    if (type == entry.end()) fail_tensor(name, "missing \"dtype\"");
    if (!type->is_string())
      fail_tensor(name, fmt::format("\"dtype\" is a JSON {}, not a string", type->type_name()));
    const std::string& type_name = type->get_ref<const std::string&>();
    const auto found = detail::find_dtype(type_name);
    if (!found) fail_tensor(name, fmt::format("unknown dtype '{}'", detail::shorten(type_name)));
    t.type = *found;

    const auto shape = entry.find("shape");
    if (shape == entry.end()) fail_tensor(name, "missing \"shape\"");
    if (!shape->is_array())
      fail_tensor(name, fmt::format("\"shape\" is a JSON {}, not an array", shape->type_name()));
    t.shape.reserve(shape->size());
    for (const nlohmann::json& dim : *shape) {
      const auto value = non_negative_integer(dim);
      if (!value || *value > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()))
        fail_tensor(name, "\"shape\" must hold non-negative integers that fit a 64-bit index");
      t.shape.push_back(static_cast<index_t>(*value));
    }
    const auto elements = detail::checked_elements(t.shape);
    if (!elements) fail_tensor(name, "the product of \"shape\" overflows a 64-bit index");
    const auto bytes = detail::checked_mul(static_cast<std::uint64_t>(*elements), dtype_size(t.type));
    if (!bytes) fail_tensor(name, "the byte size of \"shape\" overflows 64 bits");

    const auto offsets = entry.find("data_offsets");
    if (offsets == entry.end()) fail_tensor(name, "missing \"data_offsets\"");
    if (!offsets->is_array() || offsets->size() != 2)
      fail_tensor(name, "\"data_offsets\" must be [begin, end]");
    const auto first = non_negative_integer((*offsets)[0]);
    const auto last = non_negative_integer((*offsets)[1]);
    if (!first || !last) fail_tensor(name, "\"data_offsets\" must hold non-negative integers");
    const std::uint64_t begin = *first;
    const std::uint64_t end = *last;
    if (begin > end)
      fail_tensor(name, fmt::format("\"data_offsets\" [{}, {}] end before they begin", begin, end));
    if (end > data_bytes) {
      fail_tensor(
          name, fmt::format("\"data_offsets\" [{}, {}] run past the {}-byte data section (truncated?)", begin,
                            end, data_bytes));
    }
    if (end - begin != *bytes) {
      fail_tensor(name, fmt::format("\"data_offsets\" [{}, {}] span {} bytes, but {} elements of {} need {}",
                                    begin, end, end - begin, *elements, dtype_name(t.type), *bytes));
    }
    t.offset = begin;
    t.bytes = *bytes;
    return t;
  }

  std::string source_;
  std::vector<std::uint8_t> bytes_;
  std::size_t data_begin_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<tensor_info> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

/// @brief Builds a safetensors file in memory and writes it atomically.
///
/// Tensors and metadata are copied in by `add` / `set_metadata`; `to_bytes` and `write` may be
/// called any number of times. Not thread-safe for concurrent mutation.
class safetensors_writer {
 public:
  /// @brief Sets the `"__metadata__"` entry `key` to `value` (replacing an earlier value).
  /// @throws logic_error if `key` or `value` is not valid UTF-8. Cost: O(log m + sizes).
  void set_metadata(std::string key, std::string value) {
    SURGEON_EXPECTS(detail::is_valid_utf8(key), "safetensors_writer::set_metadata: key is not valid UTF-8");
    SURGEON_EXPECTS(detail::is_valid_utf8(value),
                    "safetensors_writer::set_metadata: value of '{}' is not valid UTF-8",
                    detail::shorten(key));
    metadata_[std::move(key)] = std::move(value);
  }

  /// @brief Adds a tensor, copying `bytes` bytes of little-endian, row-major data from `data`.
  /// @throws logic_error if `name` is already used, is `"__metadata__"` or is not valid UTF-8;
  ///         if a dimension is negative or the element count overflows; if `bytes` is not
  ///         `elements * dtype_size(type)`; or if `data` is null while `bytes > 0`.
  /// Cost: O(bytes) copy, O(log t) name check.
  void add(std::string name, dtype type, std::vector<index_t> shape, const void* data, std::size_t bytes) {
    SURGEON_EXPECTS(name != "__metadata__",
                    "safetensors_writer::add: '__metadata__' is reserved, not a tensor name");
    SURGEON_EXPECTS(detail::is_valid_utf8(name), "safetensors_writer::add: tensor name is not valid UTF-8");
    SURGEON_EXPECTS(names_.find(name) == names_.end(), "safetensors_writer::add: duplicate tensor name '{}'",
                    detail::shorten(name));
    const auto elements = detail::checked_elements(shape);
    SURGEON_EXPECTS(elements.has_value(),
                    "safetensors_writer::add: tensor '{}' has a negative or overflowing shape",
                    detail::shorten(name));
    const auto expected = detail::checked_mul(static_cast<std::uint64_t>(*elements), dtype_size(type));
    SURGEON_EXPECTS(expected.has_value() && *expected == bytes,
                    "safetensors_writer::add: tensor '{}' of {} {} elements needs {} bytes, got {}",
                    detail::shorten(name), *elements, dtype_name(type), expected.value_or(0), bytes);
    SURGEON_EXPECTS(data != nullptr || bytes == 0, "safetensors_writer::add: null data for tensor '{}'",
                    detail::shorten(name));
    entry e;
    e.name = std::move(name);
    e.type = type;
    e.shape = std::move(shape);
    if (bytes > 0) {
      const auto* p = static_cast<const std::uint8_t*>(data);
      e.data.assign(p, p + bytes);
    }
    names_.insert(e.name);
    entries_.push_back(std::move(e));
  }

  /// @brief Adds a tensor of `T` (float F32, double F64, std::int32_t I32, std::int64_t I64,
  /// std::uint8_t U8), copying `elements(shape)` values from `data`.
  /// @throws logic_error as the untyped `add`. Cost: O(elements) copy.
  template <typename T>
  void add(std::string name, std::vector<index_t> shape, const T* data) {
    constexpr dtype type = dtype_of<T>();
    const auto elements = detail::checked_elements(shape);
    SURGEON_EXPECTS(elements.has_value() && static_cast<std::uint64_t>(*elements) <=
                                                std::numeric_limits<std::size_t>::max() / sizeof(T),
                    "safetensors_writer::add: tensor '{}' has a negative or overflowing shape",
                    detail::shorten(name));
    add(std::move(name), type, std::move(shape), data, static_cast<std::size_t>(*elements) * sizeof(T));
  }

  /// @brief Number of tensors added so far. Cost: O(1).
  std::size_t size() const noexcept { return entries_.size(); }

  /// @brief The complete file: length, space-padded header, data. Cost: O(file size).
  std::vector<std::uint8_t> to_bytes() const {
    const std::vector<std::size_t> order = layout_order();
    const std::string header = header_json(order);
    std::size_t total = 8 + header.size();
    for (const entry& e : entries_) total += e.data.size();
    std::vector<std::uint8_t> out;
    out.reserve(total);
    detail::put_le(out, header.size(), 8);
    out.insert(out.end(), header.begin(), header.end());
    for (const std::size_t i : order) out.insert(out.end(), entries_[i].data.begin(), entries_[i].data.end());
    return out;
  }

  /// @brief Writes the file to `path` via `path + ".tmp.<pid>"` and a rename, so `path` is
  /// either left as it was or replaced by the complete file; the temporary file is removed on
  /// failure.
  /// @throws io_error naming `path` if the temporary file cannot be created or written, or the
  ///         rename fails. Cost: O(file size) I/O.
  void write(const std::string& path) const {
    if (!detail::host_is_little_endian()) {
      SURGEON_THROW(io_error, "{}: safetensors files can only be written on little-endian hosts", path);
    }
    const std::vector<std::size_t> order = layout_order();
    const std::string header = header_json(order);
    detail::write_file_atomically(path, [&](const auto& write) {
      std::vector<std::uint8_t> length;
      detail::put_le(length, header.size(), 8);
      write(length.data(), length.size());
      write(reinterpret_cast<const std::uint8_t*>(header.data()), header.size());
      for (const std::size_t k : order) write(entries_[k].data.data(), entries_[k].data.size());
    });
  }

 private:
  struct entry {
    std::string name;
    dtype type = dtype::f32;
    std::vector<index_t> shape;
    std::vector<std::uint8_t> data;
  };

  /// Data order: decreasing element size, then insertion order, so that with an 8-aligned data
  /// section every tensor starts at a multiple of its element size.
  std::vector<std::size_t> layout_order() const {
    std::vector<std::size_t> order(entries_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return dtype_size(entries_[a].type) > dtype_size(entries_[b].type);
    });
    return order;
  }

  /// The header JSON (compact, members in data order after `"__metadata__"`), padded with
  /// spaces so that 8 + its size is a multiple of 8.
  std::string header_json(const std::vector<std::size_t>& order) const {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const std::size_t i : order) {
      const entry& e = entries_[i];
      nlohmann::ordered_json& t = header[e.name];
      t["dtype"] = dtype_name(e.type);
      t["shape"] = e.shape;
      t["data_offsets"] = {offset, offset + e.data.size()};
      offset += e.data.size();
    }
    std::string h = header.dump();
    h.resize((8 + h.size() + 7) / 8 * 8 - 8, ' ');
    return h;
  }

  std::map<std::string, std::string> metadata_;
  std::vector<entry> entries_;
  std::set<std::string, std::less<>> names_;
};

}  // namespace surgeon::io
