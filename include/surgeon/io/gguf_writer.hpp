/// @file gguf_writer.hpp
/// @brief A writer of GGUF v3 files (format: `gguf_reader.hpp`).
///
/// **Writing.** `gguf_writer` writes GGUF v3 through a temporary file and a rename, as
/// `safetensors_writer` does, so a failed write never leaves a half-written file under the
/// target name. Tensors are laid out as ggml lays them out: each at a multiple of the alignment
/// and padded to it.
///
/// The host must be little-endian (every platform surgeon targets is).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/io/detail/bytes.hpp>
#include <surgeon/io/detail/file.hpp>
#include <surgeon/io/ggml_types.hpp>
#include <surgeon/io/gguf_reader.hpp>
#include <surgeon/io/gguf_value.hpp>
#include <surgeon/io/half.hpp>
#include <surgeon/io/quantize.hpp>

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
  /// `ne = {in, out}`) converted from `elements(ne)` floats at `data` to `type` by `quantize_row`:
  /// F32 (exact), F16 or BF16 (round to nearest even) or Q8_0 (ggml's reference quantisation;
  /// `ne[0]` must be a multiple of 32).
  /// @throws logic_error if `type` is not one `can_quantize` accepts; if `name` is empty, longer
  ///         than `max_name_bytes` or already used; if `ne` has 0 or more than 4 entries, a
  ///         negative entry or an overflowing product, or `ne[0]` is not a multiple of the type's
  ///         block size; or if `data` is null while there are elements.
  /// Cost: O(elements) conversion and copy.
  void add_tensor(std::string name, std::vector<std::int64_t> ne, ggml_type type, const float* data) {
    SURGEON_EXPECTS(can_quantize(type),
                    "gguf_writer::add_tensor: tensor '{}' has type {}; only F32, F16, BF16 and Q8_0 are "
                    "written from floats",
                    detail::shorten(name), ggml_type_name(type));
    const std::size_t n = check_tensor(name, ne, type);
    SURGEON_EXPECTS(data != nullptr || n == 0, "gguf_writer::add_tensor: null data for tensor '{}'",
                    detail::shorten(name));
    SURGEON_EXPECTS(ne.empty() || ne[0] % ggml_block_size(type) == 0,
                    "gguf_writer::add_tensor: tensor '{}' has rows of {} elements, not whole {} blocks of {}",
                    detail::shorten(name), ne.empty() ? 0 : ne[0], ggml_type_name(type),
                    ggml_block_size(type));
    std::vector<std::uint8_t> encoded(n / static_cast<std::size_t>(ggml_block_size(type)) *
                                      ggml_block_bytes(type));
    quantize_row(type, data, n, encoded.data());
    add_entry(std::move(name), std::move(ne), type, std::move(encoded));
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
    const auto* p = static_cast<const std::uint8_t*>(data);
    add_entry(std::move(name), std::move(ne), type,
              bytes > 0 ? std::vector<std::uint8_t>(p, p + bytes) : std::vector<std::uint8_t>());
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

  void add_entry(std::string name, std::vector<std::int64_t> ne, ggml_type type,
                 std::vector<std::uint8_t> data) {
    tensor_index_.emplace(name, entries_.size());
    entries_.push_back(entry{std::move(name), std::move(ne), type, std::move(data)});
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
