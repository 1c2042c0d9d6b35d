// libFuzzer target for the llama2.c readers (surgeon/io/llama2c.hpp) and the llama2.c tokenizer
// (examples/llama/tokenizer.hpp). Built by scripts/fuzz.sh:
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -I include -DFMT_HEADER_ONLY ...
// The first input byte picks the target:
//   even: the bytes are a checkpoint; a parse that succeeds must re-serialise to the same bytes.
//   odd:  the rest is a tokenizer file (vocab size 1 + the next two bytes, little-endian, mod 1024); a
//   vocabulary that parses
//         is used to encode and decode a short text derived from the input.
#include <surgeon/io/llama2c.hpp>

#include "../examples/llama/tokenizer.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t selector = data[0];
  ++data;
  --size;
  if ((selector & 1U) == 0) {
    try {
      const surgeon::io::llama2c_checkpoint ck = surgeon::io::parse_llama2c_checkpoint(data, size, "fuzz");
      const std::vector<std::uint8_t> again = surgeon::io::serialize_llama2c_checkpoint(ck);
      if (again.size() != size || (size > 0 && std::memcmp(again.data(), data, size) != 0)) std::abort();
    } catch (const surgeon::io_error&) {
    }
    return 0;
  }
  if (size < 2) return 0;
  const std::int32_t vocab_size = 1 + ((data[0] | (data[1] << 8)) & 1023);
  data += 2;
  size -= 2;
  surgeon::io::llama2c_vocab vocab;
  try {
    vocab = surgeon::io::parse_llama2c_tokenizer(data, size, vocab_size, "fuzz");
  } catch (const surgeon::io_error&) {
    return 0;
  }
  if (vocab.tokens.size() != static_cast<std::size_t>(vocab_size)) std::abort();
  // Encode a text made of the first bytes of the input (any bytes, not necessarily UTF-8).
  const std::string text(reinterpret_cast<const char*>(data), size < 64 ? size : 64);
  const surgeon::llama::sentencepiece_bpe tok(vocab.tokens, vocab.scores, vocab_size > 1 ? 1 : -1,
                                              vocab_size > 2 ? 2 : -1);
  try {
    const std::vector<std::int32_t> ids = tok.encode(text, tok.bos_id() >= 0, false);
    for (const std::int32_t id : ids) {
      if (id < 0 || id >= vocab_size) std::abort();
    }
    (void)tok.decode(ids);
  } catch (const surgeon::logic_error&) {
    // a byte without a fallback token in a small vocabulary
  }
  return 0;
}
