/// @file gguf_reader.hpp
/// @brief A bounds-checked reader for GGUF, the model format of ggml and llama.cpp.
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
/// **Types.** Every ggml type's block geometry is known (`ggml_types.hpp`), so every tensor of a
/// valid file is bounds-checked; only F32, F16, BF16, Q8_0, Q4_0 and Q4_1 can be dequantised to
/// float (`dequantize.hpp`).
///
/// **Trust.** Files are untrusted. `gguf_reader` checks every count, length, offset and size
/// before use and reports a malformed, truncated or hostile file as an `io_error` naming the file
/// and the reason, never as a crash or an allocation larger than a small multiple of the file
/// size: string and array lengths must fit in the bytes that remain, arrays nest at most
/// `gguf_reader::max_array_depth` deep and hold at most `gguf_reader::max_array_elements`
/// elements in all, tensors have at most 4 dimensions with overflow-checked products, the
/// alignment is a power of two, tensor data is aligned, inside the file and non-overlapping.
///
/// The host must be little-endian (every platform surgeon targets is).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/io/dequantize.hpp>
#include <surgeon/io/detail/bytes.hpp>
#include <surgeon/io/detail/file.hpp>
#include <surgeon/io/ggml_types.hpp>
#include <surgeon/io/gguf_value.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace surgeon::io {

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
    SURGEON_EXPECTS(detail::fits_in(tensor.offset, tensor.bytes, size),
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
    const auto block_size = static_cast<std::size_t>(ggml_block_size(tensor.type));
    SURGEON_EXPECTS(tensor.bytes == n / block_size * ggml_block_bytes(tensor.type) && n % block_size == 0,
                    "gguf_reader::dequantize: tensor '{}' has {} bytes for {} elements of {}",
                    detail::shorten(tensor.name), tensor.bytes, n, ggml_type_name(tensor.type));
    std::vector<float> out(n);
    dequantize_row(tensor.type, p, n, out.data());
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
      if (!detail::fits_in(t.offset, t.bytes, data_bytes)) {
        SURGEON_THROW(io_error,
                      "{}: tensor '{}' needs bytes [{}, +{}) of the data section, which has {} (truncated?)",
                      source_, detail::shorten(t.name), t.offset, t.bytes, data_bytes);
      }
      if (!tensor_index_.emplace(t.name, i).second) {
        SURGEON_THROW(io_error, "{}: duplicate tensor name '{}'", source_, detail::shorten(t.name));
      }
    }
    detail::check_no_overlap(source_, tensors_);
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

}  // namespace surgeon::io
