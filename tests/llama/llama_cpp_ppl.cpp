// llama_cpp_ppl: the perplexity of METHOD.md §8 computed by llama.cpp's own library (libllama), on
// token ids that surgeon-ppl wrote (`--dump-tokens`), so that both score the very same windows.
//
//   llama_cpp_ppl MODEL.gguf TOKENS.bin SEQLEN MAX_WINDOWS
//
// ⌊n/T⌋ windows of T consecutive tokens (the first MAX_WINDOWS), each decoded from an empty
// context in one batch; a window's loss is the mean cross-entropy of its T − 1 next-token
// predictions (log-softmax in double); the perplexity is exp(mean window loss). Prints
// `ppl=<value>`. Built by tests/llama/llama_cpp_check.py against scripts/fetch-llama-cpp.sh's build
// (it is not part of surgeon's CMake build: llama.cpp is an outside reference, fetched on demand).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "llama.h"

namespace {

int fail(const std::string& message) {
  std::fprintf(stderr, "llama_cpp_ppl: %s\n", message.c_str());
  return 1;
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) return fail("usage: llama_cpp_ppl MODEL.gguf TOKENS.bin SEQLEN MAX_WINDOWS");
  const std::string model_path = argv[1];
  const int seqlen = std::atoi(argv[3]);
  const int max_windows = std::atoi(argv[4]);
  if (seqlen < 2 || max_windows < 1) return fail("SEQLEN must be >= 2 and MAX_WINDOWS >= 1");
  std::ifstream in(argv[2], std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.eof() && in.fail()) return fail(std::string("cannot read ") + argv[2]);
  std::vector<llama_token> tokens(bytes.size() / sizeof(std::int32_t));
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    std::int32_t id = 0;
    for (int b = 3; b >= 0; --b)
      id = (id << 8) | static_cast<unsigned char>(bytes[4 * i + static_cast<std::size_t>(b)]);
    tokens[i] = id;
  }
  int windows = static_cast<int>(tokens.size()) / seqlen;
  if (windows > max_windows) windows = max_windows;
  if (windows < 1) return fail("the tokens do not fill one window");

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  llama_model_params model_params = llama_model_default_params();
  llama_model* model = llama_model_load_from_file(model_path.c_str(), model_params);
  if (model == nullptr) return fail("llama.cpp could not load " + model_path);
  llama_context_params context_params = llama_context_default_params();
  context_params.n_ctx = static_cast<std::uint32_t>(seqlen);
  context_params.n_batch = static_cast<std::uint32_t>(seqlen);
  context_params.n_ubatch = static_cast<std::uint32_t>(seqlen);
  llama_context* context = llama_init_from_model(model, context_params);
  if (context == nullptr) return fail("llama.cpp could not make a context");
  const int vocab_size = llama_vocab_n_tokens(llama_model_get_vocab(model));

  double sum = 0.0;
  llama_batch batch = llama_batch_init(seqlen, 0, 1);
  for (int w = 0; w < windows; ++w) {
    llama_memory_clear(llama_get_memory(context), true);
    batch.n_tokens = seqlen;
    for (int t = 0; t < seqlen; ++t) {
      const llama_token token = tokens[static_cast<std::size_t>(w * seqlen + t)];
      if (token < 0 || token >= vocab_size) return fail("token id outside the model's vocabulary");
      batch.token[t] = token;
      batch.pos[t] = t;
      batch.n_seq_id[t] = 1;
      batch.seq_id[t][0] = 0;
      batch.logits[t] = 1;
    }
    if (llama_decode(context, batch) != 0) return fail("llama_decode failed");
    double window = 0.0;
    for (int t = 0; t + 1 < seqlen; ++t) {
      const float* logits = llama_get_logits_ith(context, t);
      double max = logits[0];
      for (int v = 1; v < vocab_size; ++v) max = std::fmax(max, static_cast<double>(logits[v]));
      double z = 0.0;
      for (int v = 0; v < vocab_size; ++v) z += std::exp(static_cast<double>(logits[v]) - max);
      const llama_token next = tokens[static_cast<std::size_t>(w * seqlen + t + 1)];
      window += -(static_cast<double>(logits[next]) - max - std::log(z));
    }
    sum += window / (seqlen - 1);
  }
  llama_batch_free(batch);
  llama_free(context);
  llama_model_free(model);
  llama_backend_free();
  std::printf("windows=%d seqlen=%d\nppl=%.17g\n", windows, seqlen, std::exp(sum / windows));
  return 0;
}
