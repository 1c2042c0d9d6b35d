/// @file io/detail/bytes.hpp
/// @brief Byte-level plumbing shared by every reader and writer of io/ (GGUF, safetensors,
/// llama2.c): overflow-checked arithmetic on untrusted counts, little-endian loads and stores,
/// the checks that tensor data lies inside a section and that no two tensors overlap, and the
/// shortening of untrusted names quoted in error messages. One home, so the three formats
/// cannot drift apart in how they guard against hostile files.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace surgeon::io::detail {

// ---- checked arithmetic --------------------------------------------------------------------

/// `a * b`, or nothing on uint64 overflow.
inline std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) noexcept {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

/// `a + b`, or nothing on uint64 overflow.
inline std::optional<std::uint64_t> checked_add(std::uint64_t a, std::uint64_t b) noexcept {
  if (b > std::numeric_limits<std::uint64_t>::max() - a) return std::nullopt;
  return a + b;
}

/// The element count of `shape`, or nothing when a dimension is negative or the product of the
/// non-zero dimensions overflows `index_t` (so strides computed from the shape never overflow).
inline std::optional<index_t> checked_elements(const std::vector<index_t>& shape) noexcept {
  index_t product = 1;
  bool has_zero = false;
  for (const index_t dim : shape) {
    if (dim < 0) return std::nullopt;
    if (dim == 0) {
      has_zero = true;
      continue;
    }
    if (product > std::numeric_limits<index_t>::max() / dim) return std::nullopt;
    product *= dim;
  }
  return has_zero ? 0 : product;
}

// ---- little-endian bytes -------------------------------------------------------------------

inline bool host_is_little_endian() noexcept {
  const std::uint32_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

/// A `T` from the (possibly unaligned) bytes at `p`, in host order (little-endian).
template <typename T>
T load(const std::uint8_t* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

/// Stores `v` at the (possibly unaligned) bytes at `p`, in host order (little-endian).
template <typename T>
void store(std::uint8_t* p, T v) noexcept {
  std::memcpy(p, &v, sizeof(T));
}

/// The little-endian unsigned integer of `bytes` (1 to 8) bytes at `p`.
inline std::uint64_t get_le(const std::uint8_t* p, std::size_t bytes) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = bytes; i > 0; --i) value = (value << 8) | p[i - 1];
  return value;
}

/// Appends the low `bytes` (1 to 8) bytes of `value` to `out`, little-endian.
inline void put_le(std::vector<std::uint8_t>& out, std::uint64_t value, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i)
    out.push_back(static_cast<std::uint8_t>((value >> (8 * i)) & 0xFFU));
}

inline float bits_to_float(std::uint32_t bits) noexcept {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// ---- ranges and tensors ----------------------------------------------------------------------

/// True when `[offset, offset + bytes)` lies inside a section of `size` bytes (no overflow).
inline constexpr bool fits_in(std::uint64_t offset, std::uint64_t bytes, std::uint64_t size) noexcept {
  return offset <= size && bytes <= size - offset;
}

/// At most ~100 bytes of an untrusted string, cut at a UTF-8 boundary, for error messages.
inline std::string shorten(std::string_view s) {
  constexpr std::size_t max_chars = 100;
  if (s.size() <= max_chars) return std::string(s);
  std::size_t cut = max_chars;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0U) == 0x80U) --cut;
  return fmt::format("{}... ({} bytes)", s.substr(0, cut), s.size());
}

/// Throws io_error naming `source` and two of `tensors` when they share a byte. `Tensor` has
/// `name`, `offset` and `bytes`, each tensor already checked to lie inside its section (so no
/// end overflows). Zero-byte tensors occupy nothing and overlap nothing; gaps are allowed.
/// Cost: O(t log t).
template <typename Tensor>
void check_no_overlap(std::string_view source, const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> order;
  order.reserve(tensors.size());
  for (const Tensor& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const Tensor* a, const Tensor* b) {
    if (a->offset != b->offset) return a->offset < b->offset;
    return a->bytes < b->bytes;
  });
  // Every tensor must start at or after the end of all earlier ones.
  const Tensor* furthest = nullptr;
  for (const Tensor* t : order) {
    if (t->bytes == 0) continue;
    if (furthest != nullptr && t->offset < furthest->offset + furthest->bytes) {
      SURGEON_THROW(io_error, "{}: tensors '{}' (bytes [{}, {})) and '{}' (bytes [{}, {})) overlap", source,
                    shorten(furthest->name), furthest->offset, furthest->offset + furthest->bytes,
                    shorten(t->name), t->offset, t->offset + t->bytes);
    }
    if (furthest == nullptr || t->offset + t->bytes > furthest->offset + furthest->bytes) furthest = t;
  }
}

}  // namespace surgeon::io::detail
