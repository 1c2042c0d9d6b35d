/// @file llama2c.hpp
/// @brief Bounds-checked reader and writer of llama2.c "legacy" checkpoints, and a reader of
/// llama2.c tokenizer files.
///
/// **Checkpoint format** (Karpathy's llama2.c, `run.c`): seven little-endian int32 header fields
/// `dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len`, then fp32 arrays, each
/// row-major in PyTorch `nn.Linear` layout `[out, in]` and stacked over layers:
/// `tok_embeddings[vocab, dim]`, `rms_att[L, dim]`, `wq[L, dim, dim]`, `wk[L, kv_dim, dim]`,
/// `wv[L, kv_dim, dim]`, `wo[L, dim, dim]`, `rms_ffn[L, dim]`, `w1[L, hidden, dim]`,
/// `w2[L, dim, hidden]`, `w3[L, hidden, dim]`, `rms_final[dim]`,
/// `freq_cis_real[seq_len, head_dim/2]`, `freq_cis_imag[seq_len, head_dim/2]` and, only when the
/// header's vocab_size is negative (an untied classifier), `wcls[vocab, dim]`.
/// `kv_dim = dim * n_kv_heads / n_heads`, `head_dim = dim / n_heads`.
///
/// **Tokenizer format** (llama2.c `tokenizer.bin`): int32 `max_token_length`, then per token an
/// fp32 score, an int32 byte length and that many bytes (no terminator). The number of tokens is
/// not stored: it is the model's vocab_size.
///
/// **Trust.** Files are untrusted. The checkpoint reader validates every header field against
/// plausible caps (below), computes the expected file size with overflow checks and requires the
/// file to have exactly that size before it allocates anything, so a truncated, padded or hostile
/// file is an `io_error` naming the file and the reason, never a crash or a huge allocation. The
/// tokenizer reader checks every length against `max_token_length` and the remaining bytes and
/// never reserves more than the bytes present could describe.
///
/// **Writing.** `write_llama2c_checkpoint` is the exact inverse of the reader (a read-write round
/// trip is byte-identical). It writes `path + ".tmp.<pid>"` and renames it into place.
///
/// The host must be little-endian (every platform surgeon targets is).
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/detail/bytes.hpp>
#include <surgeon/io/detail/file.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "surgeon/io/llama2c.hpp supports little-endian hosts only");
#endif

namespace surgeon::io {

/// @brief The header of a llama2.c checkpoint.
struct llama2c_config {
  /// Model width (embedding size).
  std::int32_t dim = 0;
  /// FFN width.
  std::int32_t hidden_dim = 0;
  /// Number of transformer blocks.
  std::int32_t n_layers = 0;
  /// Number of query heads; divides `dim`, `dim / n_heads` is even.
  std::int32_t n_heads = 0;
  /// Number of key/value heads (grouped-query attention); divides `n_heads`.
  std::int32_t n_kv_heads = 0;
  /// Vocabulary size, always positive here (the file stores it negated when the classifier is
  /// untied).
  std::int32_t vocab_size = 0;
  /// Maximum sequence length (rows of the RoPE tables).
  std::int32_t seq_len = 0;
  /// True when the output classifier is the token embedding (no `wcls` array in the file).
  bool shared_classifier = true;

  /// @brief `dim / n_heads`. Cost: O(1).
  std::int32_t head_dim() const noexcept { return n_heads > 0 ? dim / n_heads : 0; }
  /// @brief `dim * n_kv_heads / n_heads`. Cost: O(1).
  std::int32_t kv_dim() const noexcept { return n_heads > 0 ? head_dim() * n_kv_heads : 0; }
};

/// @brief A complete llama2.c checkpoint in host memory, arrays exactly as in the file (see the
/// file comment for shapes); `wcls` is empty when `config.shared_classifier`.
struct llama2c_checkpoint {
  /// The header fields (the sign of the stored vocab_size decoded into `shared_classifier`).
  llama2c_config config;
  std::vector<float> tok_embeddings, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real,
      freq_cis_imag, wcls;
  /// @var llama2c_checkpoint::tok_embeddings
  /// Token embeddings `[vocab, dim]`, row-major.
  /// @var llama2c_checkpoint::rms_att
  /// RMSNorm weights before attention, `[L, dim]` (L = n_layers).
  /// @var llama2c_checkpoint::wq
  /// Query projections `[L, dim, dim]`, each `[out, in]` row-major.
  /// @var llama2c_checkpoint::wk
  /// Key projections `[L, kv_dim, dim]`, each `[out, in]` row-major.
  /// @var llama2c_checkpoint::wv
  /// Value projections `[L, kv_dim, dim]`, each `[out, in]` row-major.
  /// @var llama2c_checkpoint::wo
  /// Attention output projections `[L, dim, dim]`, each `[out, in]` row-major.
  /// @var llama2c_checkpoint::rms_ffn
  /// RMSNorm weights before the feed-forward block, `[L, dim]`.
  /// @var llama2c_checkpoint::w1
  /// Feed-forward gate projections `[L, hidden, dim]`, each `[out, in]` row-major.
  /// @var llama2c_checkpoint::w2
  /// Feed-forward down projections `[L, dim, hidden]`, each `[out, in]` row-major.
  /// @var llama2c_checkpoint::w3
  /// Feed-forward up projections `[L, hidden, dim]`, each `[out, in]` row-major.
  /// @var llama2c_checkpoint::rms_final
  /// Final RMSNorm weights `[dim]`.
  /// @var llama2c_checkpoint::freq_cis_real
  /// Real parts of the rotary-embedding frequencies `[seq_len, head_dim/2]`.
  /// @var llama2c_checkpoint::freq_cis_imag
  /// Imaginary parts of the rotary-embedding frequencies `[seq_len, head_dim/2]`.
  /// @var llama2c_checkpoint::wcls
  /// Untied classifier `[vocab, dim]`; empty when `config.shared_classifier`.
};

/// @brief The vocabulary of a llama2.c tokenizer file.
struct llama2c_vocab {
  /// The longest token in bytes, as stored in the file (every token is at most this long).
  std::int32_t max_token_length = 0;
  /// Token strings (raw bytes, not necessarily valid UTF-8), indexed by id.
  std::vector<std::string> tokens;
  /// Merge scores, indexed by id; all finite.
  std::vector<float> scores;
};

/// @brief Plausibility caps of `read_llama2c_checkpoint`; a header beyond them is rejected.
struct llama2c_limits {
  /// Largest accepted `dim`.
  static constexpr std::int32_t max_dim = 65536;
  /// Largest accepted `hidden_dim`.
  static constexpr std::int32_t max_hidden_dim = 1 << 20;
  /// Largest accepted `n_layers`.
  static constexpr std::int32_t max_layers = 1024;
  /// Largest accepted `vocab_size` (also the bound on the tokenizer readers' `vocab_size`).
  static constexpr std::int32_t max_vocab = 1 << 24;
  /// Largest accepted `seq_len`.
  static constexpr std::int32_t max_seq_len = 1 << 24;
  /// Largest `max_token_length` of a tokenizer file.
  static constexpr std::int32_t max_token_length = 1 << 16;
};

namespace detail {

/// Size of the checkpoint header in bytes.
inline constexpr std::size_t llama2c_header_bytes = 7 * sizeof(std::int32_t);

/// Element counts of the 14 arrays, in file order (wcls last, 0 when shared).
struct llama2c_layout {
  std::uint64_t counts[14] = {};
  std::uint64_t total_floats = 0;  // with wcls when untied
  std::uint64_t wcls_floats = 0;   // vocab * dim, whether present or not
};

/// Why `config` is not a plausible llama2.c model, or an empty string when it is.
inline std::string llama2c_config_problem(const llama2c_config& c) {
  using limits = llama2c_limits;
  const auto field = [](const char* name, std::int32_t value, std::int32_t max) -> std::string {
    if (value <= 0) return fmt::format("{} = {} must be positive", name, value);
    if (value > max) return fmt::format("{} = {} exceeds the plausible maximum {}", name, value, max);
    return {};
  };
  for (const std::string& p :
       {field("dim", c.dim, limits::max_dim), field("hidden_dim", c.hidden_dim, limits::max_hidden_dim),
        field("n_layers", c.n_layers, limits::max_layers), field("n_heads", c.n_heads, c.dim > 0 ? c.dim : 1),
        field("n_kv_heads", c.n_kv_heads, c.n_heads > 0 ? c.n_heads : 1),
        field("vocab_size", c.vocab_size, limits::max_vocab),
        field("seq_len", c.seq_len, limits::max_seq_len)}) {
    if (!p.empty()) return p;
  }
  if (c.dim % c.n_heads != 0) return fmt::format("n_heads = {} does not divide dim = {}", c.n_heads, c.dim);
  if (c.n_heads % c.n_kv_heads != 0)
    return fmt::format("n_kv_heads = {} does not divide n_heads = {}", c.n_kv_heads, c.n_heads);
  if (c.head_dim() % 2 != 0)
    return fmt::format("head_dim = dim / n_heads = {} is odd (RoPE needs pairs)", c.head_dim());
  return {};
}

/// The layout of a valid config (every product fits uint64 under the caps, checked anyway).
inline bool llama2c_layout_of(const llama2c_config& c, llama2c_layout& out) noexcept {
  const auto d = static_cast<std::uint64_t>(c.dim);
  const auto h = static_cast<std::uint64_t>(c.hidden_dim);
  const auto l = static_cast<std::uint64_t>(c.n_layers);
  const auto v = static_cast<std::uint64_t>(c.vocab_size);
  const auto kv = static_cast<std::uint64_t>(c.kv_dim());
  const auto half = static_cast<std::uint64_t>(c.head_dim() / 2);
  const auto s = static_cast<std::uint64_t>(c.seq_len);
  bool ok = true;
  // a * b, with `ok` cleared on overflow.
  const auto mul = [&ok](std::uint64_t a, std::uint64_t b) {
    const auto product = checked_mul(a, b);
    ok = ok && product.has_value();
    return product.value_or(0);
  };
  const std::uint64_t dd = mul(d, d), kvd = mul(kv, d), hd = mul(h, d), sh = mul(s, half), vd = mul(v, d);
  std::uint64_t* n = out.counts;
  n[0] = vd;
  n[1] = mul(l, d);
  n[2] = mul(l, dd);
  n[3] = mul(l, kvd);
  n[4] = mul(l, kvd);
  n[5] = mul(l, dd);
  n[6] = mul(l, d);
  n[7] = mul(l, hd);
  n[8] = mul(l, hd);
  n[9] = mul(l, hd);
  n[10] = d;
  n[11] = sh;
  n[12] = sh;
  n[13] = c.shared_classifier ? 0 : vd;
  out.wcls_floats = vd;
  std::uint64_t total = 0;
  for (const std::uint64_t count : out.counts) {
    const auto sum = checked_add(total, count);
    ok = ok && sum.has_value();
    total = sum.value_or(0);
  }
  if (!ok) return false;
  out.total_floats = total;
  return total <= std::numeric_limits<std::uint64_t>::max() / sizeof(float) - llama2c_header_bytes;
}

/// The 14 arrays in file order, as pointers to members (usable on const and non-const objects).
using llama2c_array_member = std::vector<float> llama2c_checkpoint::*;
inline constexpr llama2c_array_member llama2c_members[14] = {&llama2c_checkpoint::tok_embeddings,
                                                             &llama2c_checkpoint::rms_att,
                                                             &llama2c_checkpoint::wq,
                                                             &llama2c_checkpoint::wk,
                                                             &llama2c_checkpoint::wv,
                                                             &llama2c_checkpoint::wo,
                                                             &llama2c_checkpoint::rms_ffn,
                                                             &llama2c_checkpoint::w1,
                                                             &llama2c_checkpoint::w2,
                                                             &llama2c_checkpoint::w3,
                                                             &llama2c_checkpoint::rms_final,
                                                             &llama2c_checkpoint::freq_cis_real,
                                                             &llama2c_checkpoint::freq_cis_imag,
                                                             &llama2c_checkpoint::wcls};

inline constexpr const char* llama2c_array_names[14] = {
    "tok_embeddings", "rms_att",       "wq",  "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final",
    "freq_cis_real",  "freq_cis_imag", "wcls"};

/// Parses and validates the 28-byte header of a checkpoint whose total size is `file_bytes`.
/// @throws io_error naming `source` for an implausible header or a size mismatch.
inline llama2c_config parse_llama2c_header(const std::uint8_t* header, std::uint64_t file_bytes,
                                           std::string_view source, llama2c_layout& layout) {
  llama2c_config c;
  c.dim = load<std::int32_t>(header + 0);
  c.hidden_dim = load<std::int32_t>(header + 4);
  c.n_layers = load<std::int32_t>(header + 8);
  c.n_heads = load<std::int32_t>(header + 12);
  c.n_kv_heads = load<std::int32_t>(header + 16);
  const std::int32_t stored_vocab = load<std::int32_t>(header + 20);
  c.seq_len = load<std::int32_t>(header + 24);
  if (stored_vocab == std::numeric_limits<std::int32_t>::min()) {
    SURGEON_THROW(io_error, "{}: llama2.c header: vocab_size = {} is implausible", source, stored_vocab);
  }
  c.shared_classifier = stored_vocab > 0;
  c.vocab_size = stored_vocab < 0 ? -stored_vocab : stored_vocab;
  const std::string problem = llama2c_config_problem(c);
  if (!problem.empty()) SURGEON_THROW(io_error, "{}: llama2.c header: {}", source, problem);
  if (!llama2c_layout_of(c, layout))
    SURGEON_THROW(io_error, "{}: llama2.c header: array sizes overflow", source);
  const std::uint64_t expected = llama2c_header_bytes + layout.total_floats * sizeof(float);
  if (file_bytes != expected) {
    const std::uint64_t wcls_bytes = layout.wcls_floats * sizeof(float);
    std::string hint;
    if (c.shared_classifier && file_bytes == expected + wcls_bytes) {
      hint = " (it has room for an untied classifier, but vocab_size is positive, i.e. tied)";
    } else if (!c.shared_classifier && file_bytes + wcls_bytes == expected) {
      hint = " (it lacks the untied classifier that a negative vocab_size announces)";
    } else if (file_bytes < expected) {
      hint = " (truncated)";
    } else {
      hint = " (trailing bytes)";
    }
    SURGEON_THROW(
        io_error,
        "{}: llama2.c checkpoint is {} bytes, but its header ({}x{} ffn {}, {} layers, {} heads, {} kv "
        "heads, vocab {}{}, seq_len {}) needs exactly {}{}",
        source, file_bytes, c.dim, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
        c.shared_classifier ? " tied" : " untied", c.seq_len, expected, hint);
  }
  if (layout.total_floats > std::numeric_limits<std::size_t>::max() / sizeof(float)) {
    SURGEON_THROW(io_error, "{}: llama2.c checkpoint of {} bytes is too large for this platform", source,
                  file_bytes);
  }
  return c;
}

/// Checks that `ck` is consistent (valid config, every array of the right size).
/// @throws logic_error naming the first problem.
inline void check_llama2c_checkpoint(const llama2c_checkpoint& ck, llama2c_layout& layout) {
  const std::string problem = llama2c_config_problem(ck.config);
  SURGEON_EXPECTS(problem.empty(), "llama2.c checkpoint: invalid config: {}", problem);
  SURGEON_EXPECTS(llama2c_layout_of(ck.config, layout), "llama2.c checkpoint: array sizes overflow");
  for (std::size_t i = 0; i < 14; ++i) {
    const std::vector<float>& a = ck.*llama2c_members[i];
    SURGEON_EXPECTS(static_cast<std::uint64_t>(a.size()) == layout.counts[i],
                    "llama2.c checkpoint: array {} has {} elements, the config needs {}",
                    llama2c_array_names[i], a.size(), layout.counts[i]);
  }
}

}  // namespace detail

/// @brief Parses a llama2.c checkpoint held in memory (`size` bytes at `data`, host memory).
/// @param source names the bytes in error messages.
/// @param data the bytes of a whole checkpoint file, host memory.
/// @param size number of bytes at `data`.
/// @throws io_error naming `source` if there are fewer than 28 bytes; a header field is not
///         positive or beyond `llama2c_limits` (dim ≤ 65536, hidden_dim ≤ 2^20, n_layers ≤ 1024,
///         vocab ≤ 2^24, seq_len ≤ 2^24); n_heads does not divide dim, n_kv_heads does not divide
///         n_heads, or head_dim is odd; or `size` is not exactly the size the header implies.
/// Cost: O(size) copy; nothing is allocated before the size check.
inline llama2c_checkpoint parse_llama2c_checkpoint(const std::uint8_t* data, std::size_t size,
                                                   std::string_view source = "<memory>") {
  if (size < detail::llama2c_header_bytes || data == nullptr) {
    SURGEON_THROW(io_error, "{}: {} bytes, too short for the 28-byte llama2.c header", source, size);
  }
  llama2c_checkpoint ck;
  detail::llama2c_layout layout;
  ck.config = detail::parse_llama2c_header(data, size, source, layout);
  const std::uint8_t* p = data + detail::llama2c_header_bytes;
  for (std::size_t i = 0; i < 14; ++i) {
    std::vector<float>& a = ck.*detail::llama2c_members[i];
    a.resize(static_cast<std::size_t>(layout.counts[i]));
    if (!a.empty()) std::memcpy(a.data(), p, a.size() * sizeof(float));
    p += a.size() * sizeof(float);
  }
  return ck;
}

/// @brief Reads and validates the llama2.c checkpoint at `path`.
/// @throws io_error naming `path` if it cannot be opened or read, is not a regular file, or is
///         malformed (see `parse_llama2c_checkpoint`).
/// Cost: one read of the file; memory: the file's size (the arrays), no second copy.
inline llama2c_checkpoint read_llama2c_checkpoint(const std::string& path) {
  const std::uintmax_t size = detail::regular_file_size(path);
  if (size < detail::llama2c_header_bytes) {
    SURGEON_THROW(io_error, "{}: {} bytes, too short for the 28-byte llama2.c header", path, size);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) SURGEON_THROW(io_error, "{}: cannot open for reading", path);
  std::uint8_t header[detail::llama2c_header_bytes];
  in.read(reinterpret_cast<char*>(header), static_cast<std::streamsize>(sizeof header));
  if (static_cast<std::size_t>(in.gcount()) != sizeof header) {
    SURGEON_THROW(io_error, "{}: cannot read the llama2.c header (file truncated while reading?)", path);
  }
  llama2c_checkpoint ck;
  detail::llama2c_layout layout;
  ck.config = detail::parse_llama2c_header(header, static_cast<std::uint64_t>(size), path, layout);
  for (std::size_t i = 0; i < 14; ++i) {
    std::vector<float>& a = ck.*detail::llama2c_members[i];
    a.resize(static_cast<std::size_t>(layout.counts[i]));
    const auto bytes = static_cast<std::streamsize>(a.size() * sizeof(float));
    if (bytes == 0) continue;
    in.read(reinterpret_cast<char*>(a.data()), bytes);
    if (in.gcount() != bytes) {
      SURGEON_THROW(io_error, "{}: reading array {} failed (file truncated while reading?)", path,
                    detail::llama2c_array_names[i]);
    }
  }
  return ck;
}

/// @brief The checkpoint as the bytes of a llama2.c file (the inverse of
/// `parse_llama2c_checkpoint`).
/// @throws logic_error if the config is invalid or an array has the wrong size.
/// Cost: O(model size) copy.
inline std::vector<std::uint8_t> serialize_llama2c_checkpoint(const llama2c_checkpoint& ck) {
  detail::llama2c_layout layout;
  detail::check_llama2c_checkpoint(ck, layout);
  std::vector<std::uint8_t> out(detail::llama2c_header_bytes +
                                static_cast<std::size_t>(layout.total_floats) * 4);
  const llama2c_config& c = ck.config;
  const std::int32_t header[7] = {c.dim,     c.hidden_dim, c.n_layers,
                                  c.n_heads, c.n_kv_heads, c.shared_classifier ? c.vocab_size : -c.vocab_size,
                                  c.seq_len};
  std::memcpy(out.data(), header, sizeof header);
  std::size_t offset = sizeof header;
  for (std::size_t i = 0; i < 14; ++i) {
    const std::vector<float>& a = ck.*detail::llama2c_members[i];
    if (!a.empty()) std::memcpy(out.data() + offset, a.data(), a.size() * sizeof(float));
    offset += a.size() * sizeof(float);
  }
  return out;
}

/// @brief Writes `ck` as a llama2.c checkpoint to `path` via `path + ".tmp.<pid>"` and a rename,
/// so `path` is either left as it was or replaced by the complete file. Byte-identical to the
/// file `ck` was read from.
/// @throws logic_error if the config is invalid or an array has the wrong size; io_error naming
///         `path` if the temporary file cannot be written or the rename fails (the temporary
///         file is removed). Cost: O(model size) I/O, no extra copy.
inline void write_llama2c_checkpoint(const std::string& path, const llama2c_checkpoint& ck) {
  detail::llama2c_layout layout;
  detail::check_llama2c_checkpoint(ck, layout);
  const llama2c_config& c = ck.config;
  const std::int32_t header[7] = {c.dim,     c.hidden_dim, c.n_layers,
                                  c.n_heads, c.n_kv_heads, c.shared_classifier ? c.vocab_size : -c.vocab_size,
                                  c.seq_len};
  detail::write_file_atomically(path, [&](const auto& write) {
    write(reinterpret_cast<const std::uint8_t*>(header), sizeof header);
    for (std::size_t i = 0; i < 14; ++i) {
      const std::vector<float>& a = ck.*detail::llama2c_members[i];
      write(reinterpret_cast<const std::uint8_t*>(a.data()), a.size() * sizeof(float));
    }
  });
}

/// @brief Parses a llama2.c tokenizer held in memory with exactly `vocab_size` tokens.
/// @param data the bytes of a whole tokenizer file, host memory.
/// @param size number of bytes at `data`.
/// @param vocab_size number of tokens to read (the model's vocab_size).
/// @param source names the bytes in error messages.
/// @throws logic_error if `vocab_size` is not in `[1, llama2c_limits::max_vocab]`;
///         io_error naming `source` if the bytes end early, `max_token_length` is not in
///         `[1, llama2c_limits::max_token_length]`, a token length is negative, above
///         `max_token_length` or beyond the remaining bytes, a score is not finite, or bytes
///         remain after the last token.
/// Cost: O(size); memory bounded by the size of the input.
inline llama2c_vocab parse_llama2c_tokenizer(const std::uint8_t* data, std::size_t size,
                                             std::int32_t vocab_size, std::string_view source = "<memory>") {
  SURGEON_EXPECTS(vocab_size > 0 && vocab_size <= llama2c_limits::max_vocab,
                  "parse_llama2c_tokenizer: vocab_size = {} is not in [1, {}]", vocab_size,
                  llama2c_limits::max_vocab);
  if (data == nullptr || size < 4) {
    SURGEON_THROW(io_error, "{}: {} bytes, too short for the llama2.c tokenizer header", source, size);
  }
  llama2c_vocab vocab;
  vocab.max_token_length = detail::load<std::int32_t>(data);
  if (vocab.max_token_length <= 0 || vocab.max_token_length > llama2c_limits::max_token_length) {
    SURGEON_THROW(io_error, "{}: llama2.c tokenizer: max_token_length = {} is not in [1, {}]", source,
                  vocab.max_token_length, llama2c_limits::max_token_length);
  }
  // Every token takes at least 8 bytes, so the input bounds what we may reserve.
  const std::size_t fit = (size - 4) / 8;
  const auto n = static_cast<std::size_t>(vocab_size);
  vocab.tokens.reserve(n < fit ? n : fit);
  vocab.scores.reserve(n < fit ? n : fit);
  std::size_t offset = 4;
  for (std::size_t i = 0; i < n; ++i) {
    if (size - offset < 8) {
      SURGEON_THROW(io_error,
                    "{}: llama2.c tokenizer ends after {} of {} tokens (truncated, or vocab_size wrong)",
                    source, i, vocab_size);
    }
    const float score = detail::load<float>(data + offset);
    const std::int32_t length = detail::load<std::int32_t>(data + offset + 4);
    offset += 8;
    if (!std::isfinite(score))
      SURGEON_THROW(io_error, "{}: llama2.c tokenizer: token {} has a non-finite score", source, i);
    if (length < 0 || length > vocab.max_token_length) {
      SURGEON_THROW(io_error,
                    "{}: llama2.c tokenizer: token {} has length {}, not in [0, max_token_length = {}]",
                    source, i, length, vocab.max_token_length);
    }
    if (static_cast<std::size_t>(length) > size - offset) {
      SURGEON_THROW(io_error, "{}: llama2.c tokenizer: token {} of {} bytes runs past the end (truncated)",
                    source, i, length);
    }
    vocab.tokens.emplace_back(reinterpret_cast<const char*>(data + offset), static_cast<std::size_t>(length));
    vocab.scores.push_back(score);
    offset += static_cast<std::size_t>(length);
  }
  if (offset != size) {
    SURGEON_THROW(io_error, "{}: llama2.c tokenizer has {} bytes after its {} tokens (vocab_size wrong?)",
                  source, size - offset, vocab_size);
  }
  return vocab;
}

/// @brief Reads the llama2.c tokenizer at `path`, which must hold exactly `vocab_size` tokens
/// (the model's `llama2c_config::vocab_size`).
/// @throws logic_error for a `vocab_size` out of range; io_error naming `path` if the file cannot
///         be read, exceeds 1 GiB or is malformed (see `parse_llama2c_tokenizer`).
/// Cost: one read of the file.
inline llama2c_vocab read_llama2c_tokenizer(const std::string& path, std::int32_t vocab_size) {
  SURGEON_EXPECTS(vocab_size > 0 && vocab_size <= llama2c_limits::max_vocab,
                  "read_llama2c_tokenizer: vocab_size = {} is not in [1, {}]", vocab_size,
                  llama2c_limits::max_vocab);
  const std::vector<std::uint8_t> bytes = detail::read_whole_file(path, 0, "", std::uintmax_t{1} << 30);
  return parse_llama2c_tokenizer(bytes.data(), bytes.size(), vocab_size, path);
}

}  // namespace surgeon::io
