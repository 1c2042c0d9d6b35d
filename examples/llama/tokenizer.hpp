/// @file tokenizer.hpp
/// @brief The two tokenizers the llama examples need: llama2.c's SentencePiece-style BPE
/// (`sentencepiece_bpe`) and GPT-2-style byte-level BPE as stored in GGUF metadata
/// (`byte_level_bpe`).
///
/// Both are exact re-implementations of a reference (llama2.c `run.c` `encode`/`decode`, and
/// Hugging Face `tokenizers` BPE with its ByteLevel/Digits pre-tokenizers, which llama.cpp
/// mirrors), but with a priority queue over a linked list of symbols, so encoding is
/// O(n log n) in the text length instead of the references' O(n²). Pre-tokenization is hand
/// written (no `std::regex`) over the Unicode range tables of `unicode_tables.hpp`.
///
/// Depends only on `surgeon/error.hpp` and the standard library. Every `const` member function is
/// safe to call concurrently.
#pragma once

#include <surgeon/error.hpp>

#include "unicode_tables.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace surgeon::llama {

namespace detail {

/// One UTF-8 unit of a byte string: a well-formed code point, or a single invalid byte (`cp` is
/// then `invalid`).
struct utf8_unit {
  static constexpr char32_t invalid = 0xFFFFFFFFU;
  char32_t cp;
  std::size_t length;
};

/// Decodes the UTF-8 unit at `s[i]` (`i < s.size()`); overlong forms, surrogates, values above
/// U+10FFFF and truncated sequences are invalid and consume one byte.
inline utf8_unit decode_utf8(std::string_view s, std::size_t i) noexcept {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  std::size_t length = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if ((b0 & 0xE0U) == 0xC0U) {
    length = 2, cp = b0 & 0x1FU, min = 0x80;
  } else if ((b0 & 0xF0U) == 0xE0U) {
    length = 3, cp = b0 & 0x0FU, min = 0x800;
  } else if ((b0 & 0xF8U) == 0xF0U) {
    length = 4, cp = b0 & 0x07U, min = 0x10000;
  } else {
    return {utf8_unit::invalid, 1};
  }
  if (s.size() - i < length) return {utf8_unit::invalid, 1};
  for (std::size_t k = 1; k < length; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0U) != 0x80U) return {utf8_unit::invalid, 1};
    cp = (cp << 6) | (b & 0x3FU);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {utf8_unit::invalid, 1};
  return {cp, length};
}

/// Appends the UTF-8 encoding of a valid code point.
inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0U | (cp >> 6));
    out += static_cast<char>(0x80U | (cp & 0x3FU));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0U | (cp >> 12));
    out += static_cast<char>(0x80U | ((cp >> 6) & 0x3FU));
    out += static_cast<char>(0x80U | (cp & 0x3FU));
  } else {
    out += static_cast<char>(0xF0U | (cp >> 18));
    out += static_cast<char>(0x80U | ((cp >> 12) & 0x3FU));
    out += static_cast<char>(0x80U | ((cp >> 6) & 0x3FU));
    out += static_cast<char>(0x80U | (cp & 0x3FU));
  }
}

/// The classes the GPT-2 pre-tokenizer regex distinguishes.
enum class char_class : unsigned char { letter, number, space, other };

template <std::size_t N>
bool in_ranges(const unicode::code_point_range (&table)[N], char32_t cp) noexcept {
  const auto* it = std::upper_bound(std::begin(table), std::end(table), cp,
                                    [](char32_t c, const unicode::code_point_range& r) { return c < r.lo; });
  return it != std::begin(table) && cp <= std::prev(it)->hi;
}

/// \p{L}, \p{N}, \s (White_Space) or anything else; an invalid byte is `other`.
inline char_class classify(char32_t cp) noexcept {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return char_class::letter;
    if (cp >= '0' && cp <= '9') return char_class::number;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return char_class::space;
    return char_class::other;
  }
  if (cp == utf8_unit::invalid) return char_class::other;
  if (in_ranges(unicode::letter_ranges, cp)) return char_class::letter;
  if (in_ranges(unicode::number_ranges, cp)) return char_class::number;
  if (in_ranges(unicode::space_ranges, cp)) return char_class::space;
  return char_class::other;
}

/// A symbol of a BPE merge sequence: a token id in a doubly linked list.
struct bpe_symbol {
  std::int32_t id;
  std::size_t prev;  // npos at the start
  std::size_t next;  // npos at the end
};

inline constexpr std::size_t npos = static_cast<std::size_t>(-1);

}  // namespace detail

/// @brief llama2.c's tokenizer (`run.c` `encode` / `decode`): SentencePiece-style BPE that greedily
/// merges the adjacent pair whose concatenation is a token with the highest score.
///
/// `encode` follows `run.c` exactly: optional BOS; a dummy-prefix space token when the text is not
/// empty; each UTF-8 unit (a byte followed by at most three continuation bytes, as run.c groups
/// them) looked up as a token, else byte fallback (the token `<0xNN>`, which is id `NN + 3` in
/// llama2.c vocabularies); then, repeatedly, the adjacent pair (BOS included, as in run.c) whose
/// concatenated string is a token with the highest score above -1e10 is merged, the leftmost pair
/// among equal scores; optional EOS. Where several tokens share a string the lowest id is used.
/// Unlike run.c the text may contain NUL bytes (they are encoded like any other byte).
class sentencepiece_bpe {
 public:
  /// @brief Builds the tokenizer from token strings and scores, indexed by id.
  /// @param bos_id, eos_id the BOS and EOS ids (1 and 2 in llama2.c); -1 for none.
  /// @throws logic_error if the sizes differ, the vocabulary is empty or larger than int32, a
  ///         score is not finite, or bos/eos are not valid ids (or -1).
  /// Cost: O(total token bytes).
  sentencepiece_bpe(std::vector<std::string> tokens, std::vector<float> scores, std::int32_t bos_id = 1,
                    std::int32_t eos_id = 2)
      : tokens_(std::move(tokens)), scores_(std::move(scores)), bos_id_(bos_id), eos_id_(eos_id) {
    SURGEON_EXPECTS(!tokens_.empty(), "sentencepiece_bpe: empty vocabulary");
    SURGEON_EXPECTS(tokens_.size() == scores_.size(), "sentencepiece_bpe: {} tokens but {} scores",
                    tokens_.size(), scores_.size());
    SURGEON_EXPECTS(tokens_.size() <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
                    "sentencepiece_bpe: {} tokens exceed int32", tokens_.size());
    const auto n = static_cast<std::int32_t>(tokens_.size());
    SURGEON_EXPECTS(bos_id_ >= -1 && bos_id_ < n, "sentencepiece_bpe: bos id {} is not a token id", bos_id_);
    SURGEON_EXPECTS(eos_id_ >= -1 && eos_id_ < n, "sentencepiece_bpe: eos id {} is not a token id", eos_id_);
    lookup_.reserve(tokens_.size());
    pieces_.resize(tokens_.size());
    for (std::int32_t id = 0; id < n; ++id) {
      const std::string& t = tokens_[static_cast<std::size_t>(id)];
      SURGEON_EXPECTS(std::isfinite(scores_[static_cast<std::size_t>(id)]),
                      "sentencepiece_bpe: token {} has a non-finite score", id);
      lookup_.emplace(t, id);  // first (lowest) id wins
      max_length_ = std::max(max_length_, t.size());
      const int byte = byte_token_value(t);
      pieces_[static_cast<std::size_t>(id)] = byte >= 0 ? std::string(1, static_cast<char>(byte)) : t;
    }
    std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
    for (int b = 0; b < 256; ++b) {
      const auto it = lookup_.find(fmt::format("<0x{:02X}>", b));
      if (it != lookup_.end()) {
        byte_ids_[b] = it->second;
      } else if (b + 3 < n) {
        byte_ids_[b] = b + 3;  // run.c's convention
      }
    }
  }

  /// @brief Builds the tokenizer from anything with `tokens` and `scores` members (e.g.
  /// `surgeon::io::llama2c_vocab`), with llama2.c's BOS 1 and EOS 2.
  template <typename Vocab, typename = decltype(std::declval<const Vocab&>().tokens),
            typename = decltype(std::declval<const Vocab&>().scores)>
  explicit sentencepiece_bpe(const Vocab& vocab) : sentencepiece_bpe(vocab.tokens, vocab.scores) {}

  /// @brief Number of tokens. Cost: O(1).
  std::int32_t vocab_size() const noexcept { return static_cast<std::int32_t>(tokens_.size()); }
  /// @brief BOS id, or -1. Cost: O(1).
  std::int32_t bos_id() const noexcept { return bos_id_; }
  /// @brief EOS id, or -1. Cost: O(1).
  std::int32_t eos_id() const noexcept { return eos_id_; }
  /// @brief The string of token `id` (raw, e.g. `"<0x41>"` for a byte token).
  /// @throws logic_error for an id out of range. Cost: O(1).
  const std::string& token(std::int32_t id) const {
    check_id(id);
    return tokens_[static_cast<std::size_t>(id)];
  }
  /// @brief The score of token `id`. @throws logic_error for an id out of range. Cost: O(1).
  float score(std::int32_t id) const {
    check_id(id);
    return scores_[static_cast<std::size_t>(id)];
  }
  /// @brief The lowest id whose string is `piece`, or -1. Cost: O(|piece|).
  std::int32_t find(std::string_view piece) const {
    const auto it = lookup_.find(std::string(piece));
    return it == lookup_.end() ? -1 : it->second;
  }

  /// @brief Encodes `text` (bytes, normally UTF-8) as llama2.c does; see the class comment.
  /// @throws logic_error if `bos`/`eos` is asked for but the id is -1, or a byte needs a fallback
  ///         token the vocabulary lacks. Cost: O(n log n) for n bytes.
  std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos) const {
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 2 + 4);
    if (bos) {
      SURGEON_EXPECTS(bos_id_ >= 0, "sentencepiece_bpe::encode: the vocabulary has no BOS token");
      ids.push_back(bos_id_);
    }
    if (!text.empty()) push_unit(ids, " ");
    for (std::size_t i = 0; i < text.size();) {
      std::size_t length = 1;
      while (i + length < text.size() && length < 4 &&
             (static_cast<unsigned char>(text[i + length]) & 0xC0U) == 0x80U) {
        ++length;
      }
      push_unit(ids, text.substr(i, length));
      i += length;
    }
    merge(ids);
    if (eos) {
      SURGEON_EXPECTS(eos_id_ >= 0, "sentencepiece_bpe::encode: the vocabulary has no EOS token");
      ids.push_back(eos_id_);
    }
    return ids;
  }

  /// @brief Decodes ids to bytes: BOS and EOS are skipped, byte tokens `<0xNN>` become the byte
  /// NN, and one leading space (the dummy prefix) is stripped at the start and after each BOS.
  /// `decode(encode(t, ...)) == t` for every `t` whose merges never build a byte-token string.
  /// @throws logic_error for an id out of range. Cost: O(output size).
  std::string decode(const std::vector<std::int32_t>& ids) const {
    std::string out;
    bool strip = true;
    for (const std::int32_t id : ids) {
      check_id(id);
      if (id == bos_id_) {
        strip = true;
        continue;
      }
      if (id == eos_id_) continue;
      std::string_view piece = pieces_[static_cast<std::size_t>(id)];
      if (piece.empty()) continue;
      if (strip && piece.front() == ' ') piece.remove_prefix(1);
      strip = false;
      out.append(piece.data(), piece.size());
    }
    return out;
  }

 private:
  /// NN for a token spelled exactly "<0xNN>" (hex digits, either case), else -1.
  static int byte_token_value(std::string_view t) noexcept {
    if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return -1;
    const auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = hex(t[3]);
    const int lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }

  void check_id(std::int32_t id) const {
    SURGEON_EXPECTS(id >= 0 && id < vocab_size(), "sentencepiece_bpe: token id {} is not in [0, {})", id,
                    vocab_size());
  }

  void push_unit(std::vector<std::int32_t>& ids, std::string_view unit) const {
    const auto it = lookup_.find(std::string(unit));
    if (it != lookup_.end()) {
      ids.push_back(it->second);
      return;
    }
    for (const char c : unit) {
      const auto b = static_cast<unsigned char>(c);
      SURGEON_EXPECTS(byte_ids_[b] >= 0,
                      "sentencepiece_bpe::encode: no byte-fallback token for byte 0x{:02X}", b);
      ids.push_back(byte_ids_[b]);
    }
  }

  struct candidate {
    float score;
    std::size_t left, right;
    std::int32_t left_id, right_id, merged;
  };
  struct lower_priority {
    bool operator()(const candidate& a, const candidate& b) const noexcept {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  /// The merged token of symbols (a, b), pushed when it beats run.c's -1e10 floor.
  void push_candidate(std::priority_queue<candidate, std::vector<candidate>, lower_priority>& queue,
                      const std::vector<detail::bpe_symbol>& symbols, std::size_t a, std::size_t b,
                      std::string& buffer) const {
    const std::string& left = tokens_[static_cast<std::size_t>(symbols[a].id)];
    const std::string& right = tokens_[static_cast<std::size_t>(symbols[b].id)];
    if (left.size() + right.size() > max_length_) return;
    buffer.assign(left);
    buffer.append(right);
    const auto it = lookup_.find(buffer);
    if (it == lookup_.end()) return;
    const float s = scores_[static_cast<std::size_t>(it->second)];
    if (!(s > -1e10f)) return;
    queue.push(candidate{s, a, b, symbols[a].id, symbols[b].id, it->second});
  }

  void merge(std::vector<std::int32_t>& ids) const {
    if (ids.size() < 2) return;
    std::vector<detail::bpe_symbol> symbols(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      symbols[i] = {ids[i], i == 0 ? detail::npos : i - 1, i + 1 == ids.size() ? detail::npos : i + 1};
    }
    std::vector<candidate> storage;
    storage.reserve(ids.size());
    std::priority_queue<candidate, std::vector<candidate>, lower_priority> queue(lower_priority{},
                                                                                 std::move(storage));
    std::string buffer;
    for (std::size_t i = 0; i + 1 < ids.size(); ++i) push_candidate(queue, symbols, i, i + 1, buffer);
    std::vector<bool> dead(ids.size(), false);
    while (!queue.empty()) {
      const candidate c = queue.top();
      queue.pop();
      if (dead[c.left] || dead[c.right] || symbols[c.left].next != c.right ||
          symbols[c.left].id != c.left_id || symbols[c.right].id != c.right_id) {
        continue;  // stale: one side has been merged since
      }
      symbols[c.left].id = c.merged;
      const std::size_t after = symbols[c.right].next;
      symbols[c.left].next = after;
      if (after != detail::npos) symbols[after].prev = c.left;
      dead[c.right] = true;
      if (symbols[c.left].prev != detail::npos)
        push_candidate(queue, symbols, symbols[c.left].prev, c.left, buffer);
      if (after != detail::npos) push_candidate(queue, symbols, c.left, after, buffer);
    }
    std::size_t out = 0;
    for (std::size_t i = 0; i != detail::npos; i = symbols[i].next) ids[out++] = symbols[i].id;
    ids.resize(out);
  }

  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<std::string> pieces_;  // decoded bytes of each token
  std::unordered_map<std::string, std::int32_t> lookup_;
  std::int32_t byte_ids_[256] = {};  // -1: no fallback token
  std::size_t max_length_ = 0;
  std::int32_t bos_id_;
  std::int32_t eos_id_;
};

/// @brief GPT-2-style byte-level BPE, as stored in GGUF metadata (`tokenizer.ggml.model` =
/// "gpt2"): `tokenizer.ggml.tokens`, `tokenizer.ggml.merges` ("left right", rank = index),
/// `tokenizer.ggml.token_type`, `tokenizer.ggml.pre`, the BOS/EOS ids and `add_bos_token`.
///
/// **Pre-tokenizers** (`pre`): "gpt2" — the GPT-2 regex
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`; "smollm" and
/// "starcoder" — every \p{N} code point isolated first (HF `Digits(individual_digits=true)`,
/// llama.cpp's `\p{N}` split), then the GPT-2 regex on what lies between. Both without a prefix
/// space. Invalid UTF-8 bytes are kept (byte-level BPE encodes any bytes) and count as "other".
///
/// **Encoding.** Each piece is mapped byte by byte to GPT-2's printable code points
/// (`bytes_to_unicode`), then the pair of adjacent symbols with the lowest merge rank is merged
/// (leftmost first among equal ranks) until none is left, as in HF `tokenizers`.
///
/// **Special tokens.** User-defined tokens (type 4) are always matched literally in the input, as
/// llama.cpp does. Control tokens (type 3, e.g. `<|im_start|>`) are matched only when `encode` is
/// called with `parse_special = true` (llama.cpp's default for plain text is not to parse them,
/// and neither do we): by default a literal "<|im_start|>" in a text is encoded as ordinary bytes.
/// Overlapping candidates: the longest token starting at the leftmost position wins.
class byte_level_bpe {
 public:
  /// @brief GGUF token types (`tokenizer.ggml.token_type`).
  enum token_type : std::int32_t {
    normal = 1,
    unknown = 2,
    control = 3,
    user_defined = 4,
    unused = 5,
    byte = 6
  };

  /// @brief Builds the tokenizer.
  /// @param tokens token strings by id (byte-mapped for normal tokens, raw for added ones).
  /// @param merges "left right" strings, highest priority first.
  /// @param token_types one GGUF type per token, or empty (all normal).
  /// @param pre the pre-tokenizer name (`tokenizer.ggml.pre`): "gpt2", "smollm" or "starcoder".
  /// @param bos_id, eos_id BOS/EOS ids, or -1; @param add_bos `tokenizer.ggml.add_bos_token`.
  /// @throws logic_error naming the problem for an unknown or unsupported `pre`, an empty or
  ///         too large vocabulary, a type list of the wrong size, bos/eos out of range, or a merge
  ///         that has no space or whose left, right or concatenated string is not a token.
  /// Cost: O(total bytes of tokens and merges).
  byte_level_bpe(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                 std::vector<std::int32_t> token_types, std::string_view pre, std::int32_t bos_id = -1,
                 std::int32_t eos_id = -1, bool add_bos = false)
      : tokens_(std::move(tokens)),
        types_(std::move(token_types)),
        pre_name_(pre),
        bos_id_(bos_id),
        eos_id_(eos_id),
        add_bos_(add_bos) {
    if (pre == "gpt2") {
      isolate_digits_ = false;
    } else if (pre == "smollm" || pre == "starcoder") {
      isolate_digits_ = true;
    } else {
      SURGEON_THROW(logic_error,
                    "byte_level_bpe: unsupported pre-tokenizer '{}' (supported: gpt2, smollm, starcoder)",
                    pre);
    }
    SURGEON_EXPECTS(!tokens_.empty(), "byte_level_bpe: empty vocabulary");
    SURGEON_EXPECTS(tokens_.size() <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
                    "byte_level_bpe: {} tokens exceed int32", tokens_.size());
    if (types_.empty()) types_.assign(tokens_.size(), normal);
    SURGEON_EXPECTS(types_.size() == tokens_.size(), "byte_level_bpe: {} token types for {} tokens",
                    types_.size(), tokens_.size());
    const auto n = static_cast<std::int32_t>(tokens_.size());
    SURGEON_EXPECTS(bos_id_ >= -1 && bos_id_ < n, "byte_level_bpe: bos id {} is not a token id", bos_id_);
    SURGEON_EXPECTS(eos_id_ >= -1 && eos_id_ < n, "byte_level_bpe: eos id {} is not a token id", eos_id_);

    // GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to 256 + k.
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_to_cp_[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    cp_to_byte_.assign(static_cast<std::size_t>(next), -1);
    for (int b = 0; b < 256; ++b) cp_to_byte_[byte_to_cp_[b]] = b;

    lookup_.reserve(tokens_.size());
    for (std::int32_t id = 0; id < n; ++id) {
      lookup_.emplace(tokens_[static_cast<std::size_t>(id)], id);  // first id wins
      const std::int32_t type = types_[static_cast<std::size_t>(id)];
      if ((type == control || type == user_defined) && !tokens_[static_cast<std::size_t>(id)].empty()) {
        specials_.push_back(id);
        special_first_[static_cast<unsigned char>(tokens_[static_cast<std::size_t>(id)][0])] = true;
      }
    }
    std::sort(specials_.begin(), specials_.end(), [&](std::int32_t a, std::int32_t b) {
      const std::string& ta = tokens_[static_cast<std::size_t>(a)];
      const std::string& tb = tokens_[static_cast<std::size_t>(b)];
      return ta.size() != tb.size() ? ta.size() > tb.size() : a < b;
    });
    for (int b = 0; b < 256; ++b) {
      std::string s;
      detail::append_utf8(s, byte_to_cp_[b]);
      const auto it = lookup_.find(s);
      byte_ids_[b] = it == lookup_.end() ? -1 : it->second;
    }
    ranks_.reserve(merges.size());
    std::string joined;
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const std::string& m = merges[rank];
      const std::size_t space = m.find(' ');
      SURGEON_EXPECTS(space != std::string::npos, "byte_level_bpe: merge {} '{}' has no space", rank, m);
      const std::string left = m.substr(0, space);
      const std::string right = m.substr(space + 1);
      joined = left + right;
      const auto l = lookup_.find(left);
      const auto r = lookup_.find(right);
      const auto j = lookup_.find(joined);
      SURGEON_EXPECTS(l != lookup_.end() && r != lookup_.end() && j != lookup_.end(),
                      "byte_level_bpe: merge {} '{}': '{}' is not a token", rank, m,
                      l == lookup_.end() ? left : (r == lookup_.end() ? right : joined));
      const std::uint64_t key = pair_key(l->second, r->second);
      ranks_.emplace(
          key, merge_entry{static_cast<std::int32_t>(std::min<std::size_t>(rank, 0x7FFFFFFF)), j->second});
    }
  }

  /// @brief Number of tokens. Cost: O(1).
  std::int32_t vocab_size() const noexcept { return static_cast<std::int32_t>(tokens_.size()); }
  /// @brief BOS id, or -1. Cost: O(1).
  std::int32_t bos_id() const noexcept { return bos_id_; }
  /// @brief EOS id, or -1. Cost: O(1).
  std::int32_t eos_id() const noexcept { return eos_id_; }
  /// @brief Whether the model expects a BOS at the start of a text (`add_bos_token`). Cost: O(1).
  bool add_bos() const noexcept { return add_bos_; }
  /// @brief The pre-tokenizer name given at construction. Cost: O(1).
  const std::string& pre() const noexcept { return pre_name_; }
  /// @brief The string of token `id` as stored (byte-mapped). @throws logic_error out of range.
  const std::string& token(std::int32_t id) const {
    check_id(id);
    return tokens_[static_cast<std::size_t>(id)];
  }
  /// @brief The GGUF type of token `id`. @throws logic_error out of range. Cost: O(1).
  std::int32_t type(std::int32_t id) const {
    check_id(id);
    return types_[static_cast<std::size_t>(id)];
  }
  /// @brief The lowest id whose stored string is `token`, or -1. Cost: O(|token|).
  std::int32_t find(std::string_view token) const {
    const auto it = lookup_.find(std::string(token));
    return it == lookup_.end() ? -1 : it->second;
  }

  /// @brief Splits `text` into pre-tokenizer pieces (raw bytes; their concatenation is `text`).
  /// Special tokens are not considered. Cost: O(n log(table size)).
  std::vector<std::string_view> pre_tokenize(std::string_view text) const {
    std::vector<std::string_view> pieces;
    split(text, [&](std::string_view piece) { pieces.push_back(piece); });
    return pieces;
  }

  /// @brief Encodes `text`; see the class comment for special tokens.
  /// @param bos, eos prepend BOS / append EOS (pass `add_bos()` to follow the model).
  /// @throws logic_error if BOS/EOS is asked for but the id is -1, or a byte has no token.
  /// Cost: O(n log n) for n bytes (a per-call cache makes repeated words O(1)).
  std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos,
                                   bool parse_special = false) const {
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    if (bos) {
      SURGEON_EXPECTS(bos_id_ >= 0, "byte_level_bpe::encode: the vocabulary has no BOS token");
      ids.push_back(bos_id_);
    }
    encode_state state;
    std::size_t begin = 0;
    std::size_t i = 0;
    while (i < text.size()) {
      const std::int32_t special = match_special(text, i, parse_special);
      if (special < 0) {
        ++i;
        continue;
      }
      encode_plain(text.substr(begin, i - begin), ids, state);
      ids.push_back(special);
      i += tokens_[static_cast<std::size_t>(special)].size();
      begin = i;
    }
    encode_plain(text.substr(begin), ids, state);
    if (eos) {
      SURGEON_EXPECTS(eos_id_ >= 0, "byte_level_bpe::encode: the vocabulary has no EOS token");
      ids.push_back(eos_id_);
    }
    return ids;
  }

  /// @brief Decodes ids to bytes through the inverse GPT-2 byte map. Control tokens (and the
  /// BOS/EOS ids) are skipped when `skip_special`, else written as their raw text; user-defined
  /// tokens are written raw. `decode(encode(t, ...)) == t` for every byte string `t`.
  /// @throws logic_error for an id out of range. Cost: O(output size).
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special = true) const {
    std::string out;
    for (const std::int32_t id : ids) {
      check_id(id);
      const std::string& t = tokens_[static_cast<std::size_t>(id)];
      const std::int32_t type = types_[static_cast<std::size_t>(id)];
      if (type == control || id == bos_id_ || id == eos_id_) {
        if (!skip_special) out += t;
        continue;
      }
      if (type == user_defined) {
        out += t;
        continue;
      }
      for (std::size_t k = 0; k < t.size();) {
        const detail::utf8_unit u = detail::decode_utf8(t, k);
        if (u.cp < cp_to_byte_.size() && cp_to_byte_[u.cp] >= 0) {
          out += static_cast<char>(cp_to_byte_[u.cp]);
        } else {
          out.append(t, k, u.length);  // not a byte-mapped code point: keep its bytes
        }
        k += u.length;
      }
    }
    return out;
  }

 private:
  struct merge_entry {
    std::int32_t rank;
    std::int32_t merged;
  };
  struct candidate {
    std::int32_t rank;
    std::size_t left, right;
    std::int32_t left_id, right_id, merged;
  };
  struct lower_priority {
    bool operator()(const candidate& a, const candidate& b) const noexcept {
      return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
  };
  /// Scratch and cache of one `encode` call.
  struct encode_state {
    std::unordered_map<std::string, std::vector<std::int32_t>> cache;
    std::vector<detail::bpe_symbol> symbols;
    std::vector<candidate> heap;
    std::vector<std::int32_t> piece_ids;
  };
  static constexpr std::size_t max_cached_piece = 64;
  static constexpr std::size_t max_cache_entries = std::size_t{1} << 18;

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  void check_id(std::int32_t id) const {
    SURGEON_EXPECTS(id >= 0 && id < vocab_size(), "byte_level_bpe: token id {} is not in [0, {})", id,
                    vocab_size());
  }

  /// The special token matched at `text[i]`, or -1.
  std::int32_t match_special(std::string_view text, std::size_t i, bool parse_special) const {
    if (!special_first_[static_cast<unsigned char>(text[i])]) return -1;
    for (const std::int32_t id : specials_) {
      if (!parse_special && types_[static_cast<std::size_t>(id)] == control) continue;
      const std::string& t = tokens_[static_cast<std::size_t>(id)];
      if (text.size() - i >= t.size() && text.compare(i, t.size(), t) == 0) return id;
    }
    return -1;
  }

  /// Calls `emit(piece)` for each pre-tokenizer piece of `text`, in order.
  template <typename Emit>
  void split(std::string_view text, Emit&& emit) const {
    // Decode once into code points with their byte offsets and classes.
    std::vector<std::size_t> offsets;
    std::vector<char32_t> cps;
    std::vector<detail::char_class> classes;
    offsets.reserve(text.size() + 1);
    for (std::size_t i = 0; i < text.size();) {
      const detail::utf8_unit u = detail::decode_utf8(text, i);
      offsets.push_back(i);
      cps.push_back(u.cp);
      classes.push_back(detail::classify(u.cp));
      i += u.length;
    }
    offsets.push_back(text.size());
    const std::size_t n = cps.size();
    std::size_t run_begin = 0;
    for (std::size_t k = 0; k <= n; ++k) {
      if (isolate_digits_ && k < n && classes[k] == detail::char_class::number) {
        gpt2_split(text, offsets, cps, classes, run_begin, k, emit);
        emit(text.substr(offsets[k], offsets[k + 1] - offsets[k]));
        run_begin = k + 1;
      } else if (k == n) {
        gpt2_split(text, offsets, cps, classes, run_begin, n, emit);
      }
    }
  }

  /// The GPT-2 regex over code points [begin, end) (end acts as the end of the text).
  template <typename Emit>
  static void gpt2_split(std::string_view text, const std::vector<std::size_t>& offsets,
                         const std::vector<char32_t>& cps, const std::vector<detail::char_class>& classes,
                         std::size_t begin, std::size_t end, Emit& emit) {
    using cc = detail::char_class;
    const auto is = [&](std::size_t k, cc c) { return k < end && classes[k] == c; };
    std::size_t i = begin;
    while (i < end) {
      std::size_t j = i;
      // 's|'t|'re|'ve|'m|'ll|'d
      if (cps[i] == '\'' && i + 1 < end) {
        const char32_t a = cps[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') {
          j = i + 2;
        } else if (i + 2 < end && ((a == 'r' && cps[i + 2] == 'e') || (a == 'v' && cps[i + 2] == 'e') ||
                                   (a == 'l' && cps[i + 2] == 'l'))) {
          j = i + 3;
        }
      }
      if (j == i) {
        //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
        for (const cc c : {cc::letter, cc::number, cc::other}) {
          std::size_t k = i;
          if (cps[k] == ' ' && is(k + 1, c)) ++k;
          if (!is(k, c)) continue;
          while (is(k, c)) ++k;
          j = k;
          break;
        }
      }
      if (j == i) {
        // \s+(?!\S) | \s+
        std::size_t k = i;
        while (is(k, cc::space)) ++k;
        j = (k == end || k - i < 2) ? k : k - 1;
      }
      emit(text.substr(offsets[i], offsets[j] - offsets[i]));
      i = j;
    }
  }

  void encode_plain(std::string_view text, std::vector<std::int32_t>& ids, encode_state& state) const {
    if (text.empty()) return;
    split(text, [&](std::string_view piece) { encode_piece(piece, ids, state); });
  }

  void encode_piece(std::string_view piece, std::vector<std::int32_t>& ids, encode_state& state) const {
    const bool cacheable = piece.size() <= max_cached_piece;
    std::string key;
    if (cacheable) {
      key.assign(piece.data(), piece.size());
      const auto it = state.cache.find(key);
      if (it != state.cache.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    bpe(piece, state);
    ids.insert(ids.end(), state.piece_ids.begin(), state.piece_ids.end());
    if (cacheable && state.cache.size() < max_cache_entries)
      state.cache.emplace(std::move(key), state.piece_ids);
  }

  void push_candidate(encode_state& state, std::size_t a, std::size_t b) const {
    const auto it = ranks_.find(pair_key(state.symbols[a].id, state.symbols[b].id));
    if (it == ranks_.end()) return;
    state.heap.push_back(
        candidate{it->second.rank, a, b, state.symbols[a].id, state.symbols[b].id, it->second.merged});
    std::push_heap(state.heap.begin(), state.heap.end(), lower_priority{});
  }

  /// Byte-level BPE of one piece into `state.piece_ids`.
  void bpe(std::string_view piece, encode_state& state) const {
    auto& symbols = state.symbols;
    symbols.resize(piece.size());
    for (std::size_t i = 0; i < piece.size(); ++i) {
      const auto b = static_cast<unsigned char>(piece[i]);
      SURGEON_EXPECTS(byte_ids_[b] >= 0,
                      "byte_level_bpe::encode: the vocabulary has no token for byte 0x{:02X}", b);
      symbols[i] = {byte_ids_[b], i == 0 ? detail::npos : i - 1,
                    i + 1 == piece.size() ? detail::npos : i + 1};
    }
    state.heap.clear();
    for (std::size_t i = 0; i + 1 < piece.size(); ++i) push_candidate(state, i, i + 1);
    while (!state.heap.empty()) {
      std::pop_heap(state.heap.begin(), state.heap.end(), lower_priority{});
      const candidate c = state.heap.back();
      state.heap.pop_back();
      // A merged-away symbol is unlinked (its predecessor no longer points at it), and a merged
      // symbol changes id, so these checks reject every stale candidate.
      if (symbols[c.left].id != c.left_id || symbols[c.left].next != c.right ||
          symbols[c.right].id != c.right_id || symbols[c.right].prev != c.left) {
        continue;
      }
      symbols[c.left].id = c.merged;
      const std::size_t after = symbols[c.right].next;
      symbols[c.left].next = after;
      symbols[c.right].prev = detail::npos;
      symbols[c.right].next = detail::npos;
      symbols[c.right].id = -1;
      if (after != detail::npos) symbols[after].prev = c.left;
      if (symbols[c.left].prev != detail::npos) push_candidate(state, symbols[c.left].prev, c.left);
      if (after != detail::npos) push_candidate(state, c.left, after);
    }
    state.piece_ids.clear();
    if (piece.empty()) return;
    for (std::size_t i = 0; i != detail::npos; i = symbols[i].next) state.piece_ids.push_back(symbols[i].id);
  }

  std::vector<std::string> tokens_;
  std::vector<std::int32_t> types_;
  std::string pre_name_;
  std::unordered_map<std::string, std::int32_t> lookup_;
  std::unordered_map<std::uint64_t, merge_entry> ranks_;
  std::vector<std::int32_t> specials_;  // control and user-defined ids, longest first
  bool special_first_[256] = {};        // first bytes of the specials
  char32_t byte_to_cp_[256] = {};
  std::vector<int> cp_to_byte_;
  std::int32_t byte_ids_[256] = {};
  std::int32_t bos_id_;
  std::int32_t eos_id_;
  bool add_bos_;
  bool isolate_digits_ = false;
};

}  // namespace surgeon::llama
