// Tests of the llama2.c checkpoint/tokenizer readers and writer (surgeon/io/llama2c.hpp) and of the
// tokenizers of the llama examples (examples/llama/tokenizer.hpp).
//
// Model and data files are read from $SURGEON_SHARED_DIR (default ../shared):
//   models/stories260K/{stories260K.bin,tok512.bin}, data/wikitext-2/test.txt.
// The SmolLM2 parity test reads the two files written by tests/llama/tokenizer_reference.py from
// $SURGEON_TOKENIZER_REF_DIR (default /tmp). A test whose file is absent WARNs and returns.
#include <surgeon/io/llama2c.hpp>

#include "llama/tokenizer.hpp"
#include "support/catch.hpp"
#include "support/skip.hpp"
#include "support/temp_dir.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using surgeon::io::llama2c_checkpoint;
using surgeon::io::llama2c_config;
using surgeon::llama::byte_level_bpe;
using surgeon::llama::sentencepiece_bpe;
using bytes_t = std::vector<std::uint8_t>;

std::string shared_dir() {
  const char* env = std::getenv("SURGEON_SHARED_DIR");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string("../shared");
}
std::string stories_bin() {
  return shared_dir() + "/models/stories260K/stories260K.bin";
}
std::string stories_tok() {
  return shared_dir() + "/models/stories260K/tok512.bin";
}
std::string wikitext_test() {
  return shared_dir() + "/data/wikitext-2/test.txt";
}
std::string reference_dir() {
  const char* env = std::getenv("SURGEON_TOKENIZER_REF_DIR");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string("/tmp");
}

/// True when `path` exists; otherwise WARNs and records the skip (the binary then exits 77).
bool have_file(const std::string& path) {
  if (fs::exists(path)) return true;
  WARN("skipped: " << path << " is absent");
  surgeon::test::skipped() = true;
  return false;
}

bytes_t read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return bytes_t(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
void write_bytes(const std::string& path, const bytes_t& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

using temp_dir = surgeon::test::temp_dir;

/// A small random checkpoint (dim 8, 2 layers, 4 heads, 2 kv heads, vocab 11, seq_len 6).
llama2c_checkpoint tiny_checkpoint(bool shared) {
  llama2c_checkpoint ck;
  ck.config = llama2c_config{8, 12, 2, 4, 2, 11, 6, shared};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  const auto fill = [&](std::vector<float>& v, std::size_t n) {
    v.resize(n);
    for (float& x : v) x = normal(rng);
  };
  const std::size_t d = 8, h = 12, l = 2, kv = 4, v = 11, half = 1, s = 6;
  fill(ck.tok_embeddings, v * d);
  fill(ck.rms_att, l * d);
  fill(ck.wq, l * d * d);
  fill(ck.wk, l * kv * d);
  fill(ck.wv, l * kv * d);
  fill(ck.wo, l * d * d);
  fill(ck.rms_ffn, l * d);
  fill(ck.w1, l * h * d);
  fill(ck.w2, l * d * h);
  fill(ck.w3, l * h * d);
  fill(ck.rms_final, d);
  fill(ck.freq_cis_real, s * half);
  fill(ck.freq_cis_imag, s * half);
  if (!shared) fill(ck.wcls, v * d);
  return ck;
}

void set_header(bytes_t& bytes, int field, std::int32_t value) {
  std::memcpy(bytes.data() + 4 * field, &value, sizeof value);
}

void require_same(const llama2c_checkpoint& a, const llama2c_checkpoint& b) {
  CHECK(a.config.dim == b.config.dim);
  CHECK(a.config.vocab_size == b.config.vocab_size);
  CHECK(a.config.shared_classifier == b.config.shared_classifier);
  CHECK(a.tok_embeddings == b.tok_embeddings);
  CHECK(a.wq == b.wq);
  CHECK(a.w2 == b.w2);
  CHECK(a.freq_cis_imag == b.freq_cis_imag);
  CHECK(a.wcls == b.wcls);
}

// ---------------------------------------------------------------------------------------------
// llama2.c checkpoints

TEST_CASE("llama2c checkpoint: stories260K header and arrays", "[llama][io]") {
  if (!have_file(stories_bin())) return;
  const llama2c_checkpoint ck = surgeon::io::read_llama2c_checkpoint(stories_bin());
  const llama2c_config& c = ck.config;
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.vocab_size == 512);
  CHECK(c.seq_len == 512);
  CHECK(c.shared_classifier);
  CHECK(c.head_dim() == 8);
  CHECK(c.kv_dim() == 32);
  CHECK(ck.tok_embeddings.size() == 512u * 64u);
  CHECK(ck.wk.size() == 5u * 32u * 64u);
  CHECK(ck.w2.size() == 5u * 64u * 172u);
  CHECK(ck.freq_cis_real.size() == 512u * 4u);
  CHECK(ck.wcls.empty());
  // The legacy RoPE table: row 0 is cos(0) = 1; row p column i is cos(p * 10000^(-2i/head_dim)).
  CHECK(ck.freq_cis_real[0] == Approx(1.0f));
  CHECK(ck.freq_cis_real[4 * 3 + 1] == Approx(std::cos(3.0 * std::pow(10000.0, -2.0 / 8.0))).margin(1e-5));
  for (const float x : ck.rms_final) CHECK(std::isfinite(x));
}

TEST_CASE("llama2c checkpoint: write/read round trip is byte-identical", "[llama][io]") {
  temp_dir dir;
  SECTION("synthetic, tied and untied classifier") {
    for (const bool shared : {true, false}) {
      const llama2c_checkpoint ck = tiny_checkpoint(shared);
      const std::string path = dir.file(shared ? "tied.bin" : "untied.bin");
      surgeon::io::write_llama2c_checkpoint(path, ck);
      const bytes_t bytes = read_bytes(path);
      CHECK(bytes == surgeon::io::serialize_llama2c_checkpoint(ck));
      std::int32_t stored_vocab = 0;
      std::memcpy(&stored_vocab, bytes.data() + 20, 4);
      CHECK(stored_vocab == (shared ? 11 : -11));
      require_same(surgeon::io::read_llama2c_checkpoint(path), ck);
      require_same(surgeon::io::parse_llama2c_checkpoint(bytes.data(), bytes.size()), ck);
    }
    CHECK(dir.entries() == 2);  // no temporary file left behind
  }
  SECTION("stories260K.bin") {
    if (!have_file(stories_bin())) return;
    const bytes_t original = read_bytes(stories_bin());
    REQUIRE(original.size() == 1056540u);
    const std::string path = dir.file("copy.bin");
    surgeon::io::write_llama2c_checkpoint(path, surgeon::io::read_llama2c_checkpoint(stories_bin()));
    CHECK(read_bytes(path) == original);
    CHECK(surgeon::io::serialize_llama2c_checkpoint(
              surgeon::io::parse_llama2c_checkpoint(original.data(), original.size())) == original);
  }
  SECTION("an inconsistent checkpoint is a logic_error and leaves no file") {
    llama2c_checkpoint ck = tiny_checkpoint(true);
    ck.wq.pop_back();
    CHECK_THROWS_WITH(surgeon::io::write_llama2c_checkpoint(dir.file("bad.bin"), ck), Contains("wq"));
    ck = tiny_checkpoint(true);
    ck.wcls.assign(88, 0.0f);  // tied, but a classifier given
    CHECK_THROWS_AS(surgeon::io::write_llama2c_checkpoint(dir.file("bad.bin"), ck), surgeon::logic_error);
    ck = tiny_checkpoint(true);
    ck.config.n_heads = 3;
    CHECK_THROWS_AS(surgeon::io::serialize_llama2c_checkpoint(ck), surgeon::logic_error);
    CHECK(dir.entries() == 0);
  }
}

TEST_CASE("llama2c checkpoint: truncated or padded files are io_errors", "[llama][io]") {
  SECTION("synthetic: every cut point and one extra byte") {
    for (const bool shared : {true, false}) {
      bytes_t bytes = surgeon::io::serialize_llama2c_checkpoint(tiny_checkpoint(shared));
      for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
        CHECK_THROWS_AS(surgeon::io::parse_llama2c_checkpoint(bytes.data(), cut), surgeon::io_error);
      }
      bytes.push_back(0);
      CHECK_THROWS_WITH(surgeon::io::parse_llama2c_checkpoint(bytes.data(), bytes.size()),
                        Contains("trailing"));
    }
  }
  SECTION("stories260K.bin cut at many points, through the file reader") {
    if (!have_file(stories_bin())) return;
    const bytes_t original = read_bytes(stories_bin());
    temp_dir dir;
    const std::string path = dir.file("cut.bin");
    std::vector<std::size_t> cuts = {0, 1, 4, 27, 28, 29, 32, original.size() - 4, original.size() - 1};
    std::mt19937 rng(3);
    std::uniform_int_distribution<std::size_t> any(0, original.size() - 1);
    for (int i = 0; i < 40; ++i) cuts.push_back(any(rng));
    for (const std::size_t cut : cuts) {
      write_bytes(path, bytes_t(original.begin(), original.begin() + static_cast<std::ptrdiff_t>(cut)));
      CHECK_THROWS_AS(surgeon::io::read_llama2c_checkpoint(path), surgeon::io_error);
    }
    CHECK_THROWS_WITH(surgeon::io::read_llama2c_checkpoint(dir.file("cut.bin")), Contains("truncated"));
  }
  SECTION("missing file and directory") {
    temp_dir dir;
    CHECK_THROWS_AS(surgeon::io::read_llama2c_checkpoint(dir.file("absent.bin")), surgeon::io_error);
    CHECK_THROWS_WITH(surgeon::io::read_llama2c_checkpoint(fs::temp_directory_path().string()),
                      Contains("not a regular file"));
  }
}

TEST_CASE("llama2c checkpoint: hostile headers are io_errors", "[llama][io]") {
  const bytes_t valid = surgeon::io::serialize_llama2c_checkpoint(tiny_checkpoint(true));
  const auto parse = [](const bytes_t& b) {
    return surgeon::io::parse_llama2c_checkpoint(b.data(), b.size(), "hostile");
  };
  REQUIRE_NOTHROW(parse(valid));
  struct edit {
    int field;
    std::int32_t value;
    const char* reason;
  };
  const std::int32_t big = std::numeric_limits<std::int32_t>::max();
  const edit edits[] = {
      {0, -64, "dim = -64 must be positive"},
      {0, 0, "dim = 0 must be positive"},
      {0, 1 << 30, "dim = 1073741824 exceeds"},
      {0, 10, "n_heads = 4 does not divide dim = 10"},
      {1, -1, "hidden_dim"},
      {1, big, "hidden_dim"},
      {2, 0, "n_layers"},
      {2, big, "n_layers"},
      {3, 3, "does not divide dim"},
      {3, 8, "head_dim = dim / n_heads = 1 is odd"},
      {3, 9, "n_heads = 9 exceeds"},
      {4, 3, "n_kv_heads = 3 does not divide n_heads = 4"},
      {4, 0, "n_kv_heads = 0"},
      {4, 5, "n_kv_heads = 5 exceeds"},
      {5, std::numeric_limits<std::int32_t>::min(), "vocab_size"},
      {5, 0, "vocab_size = 0"},
      {5, big, "vocab_size"},
      {6, -6, "seq_len"},
      {6, big, "seq_len"},
  };
  SECTION("one bad field at a time") {
    for (const edit& e : edits) {
      bytes_t b = valid;
      set_header(b, e.field, e.value);
      INFO("field " << e.field << " = " << e.value);
      CHECK_THROWS_AS(parse(b), surgeon::io_error);
      CHECK_THROWS_WITH(parse(b), Contains(e.reason));
    }
  }
  SECTION("n_kv_heads must divide n_heads") {
    bytes_t b = valid;
    set_header(b, 4, 1);  // a valid header, but the kv arrays would be half as large
    CHECK_THROWS_WITH(parse(b), Contains("needs exactly 4172"));
    set_header(b, 4, 3);
    CHECK_THROWS_WITH(parse(b), Contains("n_kv_heads = 3 does not divide n_heads = 4"));
  }
  SECTION("plausible but huge model: rejected by the size check, nothing allocated") {
    bytes_t b = valid;
    set_header(b, 0, 65536);
    set_header(b, 1, 1 << 20);
    set_header(b, 2, 1024);
    set_header(b, 3, 512);
    set_header(b, 4, 512);
    set_header(b, 5, -(1 << 24));
    set_header(b, 6, 1 << 24);
    CHECK_THROWS_WITH(parse(b), Contains("truncated"));
  }
  SECTION("classifier presence must match the sign of vocab_size") {
    bytes_t tied = valid;
    set_header(tied, 5, -11);  // announces wcls, which is absent
    CHECK_THROWS_WITH(parse(tied), Contains("lacks the untied classifier"));
    bytes_t untied = surgeon::io::serialize_llama2c_checkpoint(tiny_checkpoint(false));
    set_header(untied, 5, 11);  // says tied, but a classifier follows
    CHECK_THROWS_WITH(parse(untied), Contains("room for an untied classifier"));
  }
}

// ---------------------------------------------------------------------------------------------
// llama2.c tokenizer files

/// A llama2.c tokenizer file from tokens and scores.
bytes_t tokenizer_file(std::int32_t max_len, const std::vector<std::string>& tokens,
                       const std::vector<float>& scores) {
  bytes_t out(4);
  std::memcpy(out.data(), &max_len, 4);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const auto len = static_cast<std::int32_t>(tokens[i].size());
    const std::size_t at = out.size();
    out.resize(at + 8 + tokens[i].size());
    std::memcpy(out.data() + at, &scores[i], 4);
    std::memcpy(out.data() + at + 4, &len, 4);
    std::memcpy(out.data() + at + 8, tokens[i].data(), tokens[i].size());
  }
  return out;
}

TEST_CASE("llama2c tokenizer: tok512.bin", "[llama][io]") {
  if (!have_file(stories_tok())) return;
  const auto vocab = surgeon::io::read_llama2c_tokenizer(stories_tok(), 512);
  CHECK(vocab.max_token_length == 7);
  REQUIRE(vocab.tokens.size() == 512);
  REQUIRE(vocab.scores.size() == 512);
  CHECK(vocab.tokens[0] == "<unk>");
  CHECK(vocab.tokens[1] == "\n<s>\n");
  CHECK(vocab.tokens[2] == "\n</s>\n");
  CHECK(vocab.tokens[3 + 0x41] == "<0x41>");
  CHECK(vocab.tokens[3] == "<0x00>");
  CHECK(vocab.tokens[258] == "<0xFF>");
  for (const std::string& t : vocab.tokens)
    CHECK(static_cast<std::int32_t>(t.size()) <= vocab.max_token_length);
  CHECK_THROWS_WITH(surgeon::io::read_llama2c_tokenizer(stories_tok(), 511),
                    Contains("after its 511 tokens"));
  CHECK_THROWS_WITH(surgeon::io::read_llama2c_tokenizer(stories_tok(), 513),
                    Contains("ends after 512 of 513"));
  const bytes_t bytes = read_bytes(stories_tok());
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    CHECK_THROWS_AS(surgeon::io::parse_llama2c_tokenizer(bytes.data(), cut, 512), surgeon::io_error);
  }
}

TEST_CASE("llama2c tokenizer: hostile files are io_errors", "[llama][io]") {
  const std::vector<std::string> tokens = {"a", "bc", "", "def"};
  const std::vector<float> scores = {0.0f, -1.0f, -2.0f, -3.0f};
  const bytes_t good = tokenizer_file(3, tokens, scores);
  const auto parse = [](const bytes_t& b, std::int32_t n) {
    return surgeon::io::parse_llama2c_tokenizer(b.data(), b.size(), n, "hostile");
  };
  const auto vocab = parse(good, 4);
  CHECK(vocab.tokens == tokens);
  CHECK(vocab.scores == scores);
  CHECK_THROWS_WITH(parse(tokenizer_file(2, tokens, scores), 4),
                    Contains("not in [0, max_token_length = 2]"));
  CHECK_THROWS_WITH(parse(tokenizer_file(0, tokens, scores), 4), Contains("max_token_length = 0"));
  CHECK_THROWS_WITH(parse(tokenizer_file(-5, tokens, scores), 4), Contains("max_token_length = -5"));
  CHECK_THROWS_WITH(parse(tokenizer_file(1 << 30, tokens, scores), 4), Contains("max_token_length"));
  std::vector<float> bad_scores = scores;
  bad_scores[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(parse(tokenizer_file(3, tokens, bad_scores), 4), Contains("non-finite"));
  bad_scores[1] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(parse(tokenizer_file(3, tokens, bad_scores), 4), Contains("non-finite"));
  bytes_t negative = good;
  const std::int32_t minus_one = -1;
  std::memcpy(negative.data() + 4 + 4, &minus_one, 4);
  CHECK_THROWS_WITH(parse(negative, 4), Contains("length -1"));
  bytes_t overlong = good;
  const std::int32_t three = 3;
  std::memcpy(overlong.data() + good.size() - 3 - 4, &three, 4);  // fine: "def" is 3
  CHECK_NOTHROW(parse(overlong, 4));
  overlong.resize(overlong.size() - 1);
  CHECK_THROWS_WITH(parse(overlong, 4), Contains("runs past the end"));
  // A huge vocab_size against a tiny file: no huge reservation, just an error.
  CHECK_THROWS_WITH(parse(good, 1 << 24), Contains("ends after 4 of"));
  CHECK_THROWS_AS(parse(good, 0), surgeon::logic_error);
  CHECK_THROWS_AS(parse(good, -1), surgeon::logic_error);
}

// ---------------------------------------------------------------------------------------------
// sentencepiece_bpe against the llama2.c reference

/// llama2.c run.c `encode`, transcribed: the same unit grouping, byte fallback (byte + 3) and
/// greedy "best score, leftmost" merges over the whole sequence, in O(n²) (the pair scores are
/// cached per position, the arg-max is a full scan every step, exactly as run.c decides).
std::vector<std::int32_t> reference_encode(const std::vector<std::string>& vocab,
                                           const std::vector<float>& scores, const std::string& text,
                                           bool bos, bool eos) {
  std::map<std::string, std::int32_t> lookup;
  for (std::size_t i = 0; i < vocab.size(); ++i) lookup.emplace(vocab[i], static_cast<std::int32_t>(i));
  const auto find = [&](const std::string& s) {
    const auto it = lookup.find(s);
    return it == lookup.end() ? -1 : it->second;
  };
  std::vector<std::int32_t> tokens;
  if (bos) tokens.push_back(1);
  if (!text.empty()) tokens.push_back(find(" ") >= 0 ? find(" ") : ' ' + 3);
  std::string buffer;
  for (std::size_t c = 0; c < text.size(); ++c) {
    buffer += text[c];
    if (c + 1 < text.size() && (static_cast<unsigned char>(text[c + 1]) & 0xC0) == 0x80 && buffer.size() < 4)
      continue;
    const std::int32_t id = find(buffer);
    if (id != -1) {
      tokens.push_back(id);
    } else {
      for (const char b : buffer) tokens.push_back(static_cast<unsigned char>(b) + 3);
    }
    buffer.clear();
  }
  const auto pair_score = [&](std::size_t i, std::int32_t& id) {
    id = find(vocab[static_cast<std::size_t>(tokens[i])] + vocab[static_cast<std::size_t>(tokens[i + 1])]);
    return id == -1 ? -std::numeric_limits<float>::infinity() : scores[static_cast<std::size_t>(id)];
  };
  std::vector<float> best(tokens.size() > 0 ? tokens.size() - 1 : 0);
  std::vector<std::int32_t> merged(best.size());
  for (std::size_t i = 0; i < best.size(); ++i) best[i] = pair_score(i, merged[i]);
  while (true) {
    float best_score = -1e10f;
    std::ptrdiff_t best_idx = -1;
    for (std::size_t i = 0; i < best.size(); ++i) {
      if (merged[i] != -1 && best[i] > best_score) {
        best_score = best[i];
        best_idx = static_cast<std::ptrdiff_t>(i);
      }
    }
    if (best_idx == -1) break;
    const auto at = static_cast<std::size_t>(best_idx);
    tokens[at] = merged[at];
    tokens.erase(tokens.begin() + best_idx + 1);
    best.erase(best.begin() + best_idx);
    merged.erase(merged.begin() + best_idx);
    if (at < best.size()) best[at] = pair_score(at, merged[at]);
    if (at > 0) best[at - 1] = pair_score(at - 1, merged[at - 1]);
  }
  if (eos) tokens.push_back(2);
  return tokens;
}

/// Random strings: ASCII words and spaces, newlines, multi-byte UTF-8, stray continuation bytes.
std::string random_text(std::mt19937& rng, std::size_t length) {
  static const char* const pieces[] = {"a",    "b",      "e",    "t",        "h",    " ",     " ",  "  ",
                                       "\n",   "the",    "Tim",  ".",        ",",    "!",     "\"", "é",
                                       "日本", "😀",      "\x80", "\xC3",     "0",    "42",    "'s", "Once",
                                       "\t",   " upon ", "ß",    "\xF0\x9F", "\xFF", "<0x41>"};
  std::uniform_int_distribution<std::size_t> pick(0, std::size(pieces) - 1);
  std::string s;
  while (s.size() < length) s += pieces[pick(rng)];
  return s;
}

/// A small synthetic llama2.c vocabulary: unk, BOS, EOS, 256 byte tokens, then letters and merges
/// with scores that include ties.
sentencepiece_bpe tiny_sentencepiece(std::vector<std::string>& tokens, std::vector<float>& scores) {
  tokens = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (int b = 0; b < 256; ++b) tokens.push_back(fmt::format("<0x{:02X}>", b));
  for (const char* t :
       {" ",   "a",    "b",  "e",  "t",  "h",  "T",   "i",  "m",  ".",  "é",  " t",  "th", "he", " th",
        "the", " the", "aa", "ab", "ba", "bb", "aaa", " a", " b", "Ti", "im", "Tim", "  ", "é."}) {
    tokens.push_back(t);
  }
  scores.assign(tokens.size(), 0.0f);
  for (std::size_t i = 259; i < tokens.size(); ++i)
    scores[i] = -static_cast<float>((i - 259) % 7);  // many ties
  return sentencepiece_bpe(tokens, scores);
}

TEST_CASE("sentencepiece_bpe: matches the llama2.c reference on a synthetic vocabulary",
          "[llama][tokenizer]") {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  const sentencepiece_bpe tok = tiny_sentencepiece(tokens, scores);
  CHECK(tok.encode("", false, false).empty());
  CHECK(tok.encode("", true, true) == std::vector<std::int32_t>{1, 2});
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const std::string text = random_text(rng, static_cast<std::size_t>(trial % 60));
    const bool bos = trial % 2 == 0;
    const auto ids = tok.encode(text, bos, trial % 3 == 0);
    INFO("text: " << text);
    CHECK(ids == reference_encode(tokens, scores, text, bos, trial % 3 == 0));
    if (text.find("<0x41>") == std::string::npos) CHECK(tok.decode(ids) == text);
  }
  CHECK_THROWS_AS(tok.decode({-1}), surgeon::logic_error);
  CHECK_THROWS_AS(tok.decode({tok.vocab_size()}), surgeon::logic_error);
  CHECK_THROWS_AS(sentencepiece_bpe({"a"}, {std::nanf("")}), surgeon::logic_error);
  CHECK_THROWS_AS(sentencepiece_bpe({"a", "b"}, {0.0f}), surgeon::logic_error);
}

TEST_CASE("sentencepiece_bpe: stories260K tokenizer against the llama2.c reference", "[llama][tokenizer]") {
  if (!have_file(stories_tok())) return;
  const auto vocab = surgeon::io::read_llama2c_tokenizer(stories_tok(), 512);
  const sentencepiece_bpe tok(vocab);
  CHECK(tok.vocab_size() == 512);
  CHECK(tok.find("<0x41>") == 3 + 0x41);

  SECTION("Once upon a time") {
    const auto ids = tok.encode("Once upon a time", true, false);
    CHECK(ids == reference_encode(vocab.tokens, vocab.scores, "Once upon a time", true, false));
    CHECK(ids.front() == 1);
    CHECK(tok.decode(ids) == "Once upon a time");
    std::string joined;
    for (std::size_t i = 1; i < ids.size(); ++i) joined += tok.token(ids[i]);
    CHECK(joined == " Once upon a time");
  }
  SECTION("random strings") {
    std::mt19937 rng(5);
    for (int trial = 0; trial < 300; ++trial) {
      const std::string text = random_text(rng, static_cast<std::size_t>(trial % 80));
      INFO("text: " << text);
      const auto ids = tok.encode(text, true, trial % 2 == 0);
      CHECK(ids == reference_encode(vocab.tokens, vocab.scores, text, true, trial % 2 == 0));
      CHECK(tok.decode(ids) == text);
    }
  }
  SECTION("first 20 KB of wikitext-2 test") {
    if (!have_file(wikitext_test())) return;
    const std::string text = read_text(wikitext_test()).substr(0, 20 * 1024);
    const auto ids = tok.encode(text, true, false);
    CHECK(ids == reference_encode(vocab.tokens, vocab.scores, text, true, false));
  }
}

TEST_CASE("sentencepiece_bpe: whole wikitext-2 test round trip", "[llama][tokenizer]") {
  if (!have_file(stories_tok()) || !have_file(wikitext_test())) return;
  const sentencepiece_bpe tok(surgeon::io::read_llama2c_tokenizer(stories_tok(), 512));
  const std::string text = read_text(wikitext_test());
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text, true, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "sentencepiece_bpe (stories260K): wikitext-2 test, %zu bytes -> %zu tokens in %.3f s (%.0f tokens/s)\n",
      text.size(), ids.size(), seconds, static_cast<double>(ids.size()) / seconds);
  CHECK(ids.front() == 1);
  CHECK(tok.decode(ids) == text);
}

// ---------------------------------------------------------------------------------------------
// byte_level_bpe

/// GPT-2's byte-to-unicode mapping of one byte, as UTF-8.
std::string mapped(unsigned char b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
  int cp = b;
  if (!printable) {
    int k = 0;
    for (int x = 0; x < b; ++x) {
      const bool p = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE);
      if (!p) ++k;
    }
    cp = 256 + k;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}
std::string mapped(const std::string& raw) {
  std::string s;
  for (const char c : raw) s += mapped(static_cast<unsigned char>(c));
  return s;
}

/// 256 byte tokens, two control tokens, one user-defined token, then merged tokens. Merges are
/// given raw as "left|right" (a merge without '|' is passed on as it is).
byte_level_bpe tiny_byte_level(const std::vector<std::string>& merges_raw, std::string_view pre = "gpt2") {
  std::vector<std::string> tokens = {"<|end|>", "<|start|>"};
  std::vector<std::int32_t> types = {3, 3};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(mapped(static_cast<unsigned char>(b)));
    types.push_back(1);
  }
  tokens.push_back("<user>");
  types.push_back(4);
  std::vector<std::string> merges;
  for (const std::string& m : merges_raw) {
    const std::size_t space = m.find('|');
    if (space == std::string::npos) {
      merges.push_back(m);
      continue;
    }
    const std::string left = mapped(m.substr(0, space));
    const std::string right = mapped(m.substr(space + 1));
    merges.push_back(left + " " + right);
    if (std::find(tokens.begin(), tokens.end(), left + right) == tokens.end()) {
      tokens.push_back(left + right);
      types.push_back(1);
    }
  }
  return byte_level_bpe(tokens, merges, types, pre, 1, 0, true);
}

std::vector<std::string> pieces_of(const byte_level_bpe& tok, std::string_view text) {
  std::vector<std::string> out;
  for (const std::string_view p : tok.pre_tokenize(text)) out.emplace_back(p);
  return out;
}
using strings = std::vector<std::string>;

TEST_CASE("byte_level_bpe: GPT-2 pre-tokenizer", "[llama][tokenizer]") {
  const byte_level_bpe gpt2 = tiny_byte_level({});
  CHECK(pieces_of(gpt2, "Hello world") == strings{"Hello", " world"});
  CHECK(pieces_of(gpt2, "I'm you're it'll 'sa") ==
        strings{"I", "'m", " you", "'re", " it", "'ll", " '", "sa"});
  CHECK(pieces_of(gpt2, "I'M") == strings{"I", "'", "M"});
  CHECK(pieces_of(gpt2, "a  b") == strings{"a", " ", " b"});
  CHECK(pieces_of(gpt2, "a   ") == strings{"a", "   "});
  CHECK(pieces_of(gpt2, "x\n\ny") == strings{"x", "\n", "\n", "y"});
  CHECK(pieces_of(gpt2, "abc 123 4.5!!") == strings{"abc", " 123", " 4", ".", "5", "!!"});
  CHECK(pieces_of(gpt2, " ?! x") == strings{" ?!", " x"});
  CHECK(pieces_of(gpt2, "café 日本語 x²") == strings{"café", " 日本語", " x", "²"});
  CHECK(pieces_of(gpt2, "a\u00a0b") == strings{"a", "\u00a0", "b"});
  CHECK(pieces_of(gpt2, "\xff\xfe z") == strings{"\xff\xfe", " z"});
  CHECK(pieces_of(gpt2, "").empty());
}

TEST_CASE("byte_level_bpe: smollm pre-tokenizer isolates digits", "[llama][tokenizer]") {
  const byte_level_bpe smollm = tiny_byte_level({}, "smollm");
  CHECK(pieces_of(smollm, "abc123") == strings{"abc", "1", "2", "3"});
  CHECK(pieces_of(smollm, "a 12 b") == strings{"a", " ", "1", "2", " b"});
  CHECK(pieces_of(smollm, "x١٢") == strings{"x", "١", "٢"});
  CHECK(pieces_of(smollm, "3.14") == strings{"3", ".", "1", "4"});
  CHECK_THROWS_WITH(tiny_byte_level({}, "llama3"), Contains("unsupported pre-tokenizer 'llama3'"));
  CHECK_THROWS_AS(tiny_byte_level({}, ""), surgeon::logic_error);
}

TEST_CASE("byte_level_bpe: merges by rank, leftmost first", "[llama][tokenizer]") {
  SECTION("rank decides") {
    const byte_level_bpe ab_first = tiny_byte_level({"a|b", "b|c"});
    CHECK(ab_first.encode("abc", false, false) ==
          std::vector<std::int32_t>{ab_first.find(mapped("ab")), ab_first.find("c")});
    const byte_level_bpe bc_first = tiny_byte_level({"b|c", "a|b"});
    CHECK(bc_first.encode("abc", false, false) ==
          std::vector<std::int32_t>{bc_first.find("a"), bc_first.find(mapped("bc"))});
  }
  SECTION("equal ranks: leftmost") {
    const byte_level_bpe tok = tiny_byte_level({"a|a"});
    const std::int32_t aa = tok.find("aa");
    const std::int32_t a = tok.find("a");
    CHECK(tok.encode("aaa", false, false) == std::vector<std::int32_t>{aa, a});
    CHECK(tok.encode("aaaa", false, false) == std::vector<std::int32_t>{aa, aa});
  }
  SECTION("words with a leading space") {
    const byte_level_bpe tok =
        tiny_byte_level({"h|e", "l|l", "he|ll", "hell|o", " |w", " w|o", " wo|r", " wor|l", " worl|d"});
    const std::int32_t hello = tok.find(mapped("hello"));
    const std::int32_t world = tok.find(mapped(" world"));
    REQUIRE(hello >= 0);
    REQUIRE(world >= 0);
    CHECK(tok.encode("hello world", false, false) == std::vector<std::int32_t>{hello, world});
    CHECK(tok.encode("hello world", tok.add_bos(), true) == std::vector<std::int32_t>{1, hello, world, 0});
    CHECK(tok.decode({1, hello, world, 0}) == "hello world");
    CHECK(tok.decode({1, hello, world, 0}, false) == "<|start|>hello world<|end|>");
  }
  SECTION("bad merges") {
    CHECK_THROWS_WITH(tiny_byte_level({"ab"}), Contains("has no space"));
    CHECK_THROWS_AS(byte_level_bpe({"a", "b"}, {"a c"}, {}, "gpt2"), surgeon::logic_error);
    CHECK_THROWS_AS(byte_level_bpe({"a", "b"}, {"a b"}, {}, "gpt2"), surgeon::logic_error);  // "ab" absent
    CHECK_THROWS_AS(byte_level_bpe({"a", "b"}, {}, {1}, "gpt2"), surgeon::logic_error);
  }
}

TEST_CASE("byte_level_bpe: special tokens and byte round trips", "[llama][tokenizer]") {
  const byte_level_bpe tok = tiny_byte_level({"a|b"});
  const std::int32_t user = tok.find("<user>");
  SECTION("control tokens only with parse_special; user-defined always") {
    const auto plain = tok.encode("x<|end|>y", false, false);
    CHECK(plain.size() == 9);
    CHECK(std::find(plain.begin(), plain.end(), 0) == plain.end());
    CHECK(tok.decode(plain) == "x<|end|>y");
    const auto special = tok.encode("x<|end|>y", false, false, true);
    CHECK(special == std::vector<std::int32_t>{tok.find("x"), 0, tok.find("y")});
    CHECK(tok.decode(special, false) == "x<|end|>y");
    const auto with_user = tok.encode("ab<user>ab", false, false);
    CHECK(with_user == std::vector<std::int32_t>{tok.find("ab"), user, tok.find("ab")});
    CHECK(tok.decode(with_user) == "ab<user>ab");
  }
  SECTION("every byte string round trips") {
    std::mt19937 rng(9);
    std::uniform_int_distribution<int> byte(0, 255);
    for (int trial = 0; trial < 200; ++trial) {
      std::string s;
      for (int i = 0; i < trial; ++i) s += static_cast<char>(byte(rng));
      if (s.find("<user>") != std::string::npos) continue;
      CHECK(tok.decode(tok.encode(s, false, false)) == s);
    }
  }
  SECTION("bos without an id") {
    const byte_level_bpe no_bos({"a"}, {}, {}, "gpt2");
    CHECK_THROWS_AS(no_bos.encode("a", true, false), surgeon::logic_error);
    CHECK_THROWS_AS(no_bos.encode("b", false, false), surgeon::logic_error);  // no token for 'b'
  }
}

/// Undoes the escaping of tokenizer_reference.py: "\\\\" and "\\xNN".
std::string unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == '\\') {
      out += '\\';
      ++i;
    } else if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] == 'x') {
      out += static_cast<char>(std::stoi(s.substr(i + 2, 2), nullptr, 16));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

TEST_CASE("byte_level_bpe: SmolLM2 parity with Hugging Face tokenizers", "[llama][tokenizer][smollm2]") {
  const std::string vocab_path = reference_dir() + "/surgeon_smollm2_vocab.txt";
  const std::string cases_path = reference_dir() + "/surgeon_smollm2_cases.txt";
  if (!have_file(vocab_path) || !have_file(cases_path)) return;
  std::ifstream in(vocab_path, std::ios::binary);
  std::string line, pre;
  std::int32_t bos = -1, eos = -1;
  bool add_bos = false;
  std::vector<std::string> tokens, merges;
  std::vector<std::int32_t> types;
  while (std::getline(in, line)) {
    std::istringstream head(line);
    std::string key;
    head >> key;
    if (key == "pre") {
      head >> pre;
    } else if (key == "bos") {
      head >> bos;
    } else if (key == "eos") {
      head >> eos;
    } else if (key == "add_bos") {
      int v = 0;
      head >> v;
      add_bos = v != 0;
    } else if (key == "tokens") {
      std::size_t n = 0;
      head >> n;
      for (std::size_t i = 0; i < n && std::getline(in, line); ++i) {
        const std::size_t space = line.find(' ');
        types.push_back(std::stoi(line.substr(0, space)));
        tokens.push_back(unescape(line.substr(space + 1)));
      }
    } else if (key == "merges") {
      std::size_t n = 0;
      head >> n;
      for (std::size_t i = 0; i < n && std::getline(in, line); ++i) merges.push_back(unescape(line));
    }
  }
  REQUIRE(tokens.size() == 49152);
  const byte_level_bpe tok(tokens, merges, types, pre, bos, eos, add_bos);
  CHECK(tok.pre() == "smollm");
  CHECK_FALSE(tok.add_bos());

  std::ifstream cases(cases_path, std::ios::binary);
  std::string text_line, ids_line;
  int n_cases = 0;
  std::size_t n_ids = 0;
  double seconds = 0;
  while (std::getline(cases, text_line) && std::getline(cases, ids_line)) {
    REQUIRE(text_line.rfind("case ", 0) == 0);
    const std::string text = unescape(text_line.substr(5));
    std::istringstream ids_in(ids_line.substr(3));
    std::vector<std::int32_t> expected;
    for (std::int32_t id = 0; ids_in >> id;) expected.push_back(id);
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text, false, false);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO("case " << n_cases << ": " << text.substr(0, 200));
    CHECK(ids == expected);
    CHECK(tok.decode(ids) == text);
    ++n_cases;
    n_ids += ids.size();
  }
  CHECK(n_cases >= 20);
  std::printf("byte_level_bpe (SmolLM2): %d cases, %zu tokens identical to HF tokenizers (%.0f tokens/s)\n",
              n_cases, n_ids, static_cast<double>(n_ids) / seconds);

  if (!have_file(wikitext_test())) return;
  const std::string text = read_text(wikitext_test());
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text, tok.add_bos(), false);
  const double whole = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "byte_level_bpe (SmolLM2): wikitext-2 test, %zu bytes -> %zu tokens in %.3f s (%.0f tokens/s)\n",
      text.size(), ids.size(), whole, static_cast<double>(ids.size()) / whole);
  CHECK(tok.decode(ids) == text);
}

}  // namespace
