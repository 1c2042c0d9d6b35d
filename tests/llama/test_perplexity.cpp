// Perplexity per METHOD.md §8 on stories260K: windowing, the remainder, --max-windows, and
// agreement with the per-window losses of the runtime.
#include <surgeon/io/llama2c.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "llama/load.hpp"
#include "llama/perplexity.hpp"
#include "support/catch.hpp"
#include "support/skip.hpp"

TEST_CASE("perplexity is exp of the mean window loss over floor(n/T) windows", "[llama][model]") {
  const char* shared = std::getenv("SURGEON_SHARED_DIR");
  const std::string dir = shared ? shared : "";
  const std::string model_path = dir + "/models/stories260K/stories260K.bin";
  const std::string text_path = dir + "/data/wikitext-2/valid.txt";
  if (!std::filesystem::exists(model_path) || !std::filesystem::exists(text_path)) {
    SURGEON_SKIP("stories260K or wikitext-2 is absent under SURGEON_SHARED_DIR");
  }
  const auto loaded = surgeon::llama::load_model(model_path);
  std::ifstream in(text_path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A prefix whose token count is not a multiple of the window.
  std::vector<std::int32_t> ids = loaded.vocab->encode(text.substr(0, 4000));
  REQUIRE(ids.front() == 1);  // llama2.c models always start with BOS
  const surgeon::index_t seqlen = 64;
  ids.resize(static_cast<std::size_t>(5 * seqlen + 17));
  surgeon::llama::runtime runtime(loaded.weights);

  const auto all = surgeon::llama::perplexity(runtime, ids, seqlen, 0, 2);
  CHECK(all.windows == 5);
  // Oracle: each window on its own (batch 1), mean of the losses, exp.
  double sum = 0.0;
  for (surgeon::index_t w = 0; w < 5; ++w) {
    const std::vector<std::int32_t> window(ids.begin() + w * seqlen, ids.begin() + (w + 1) * seqlen);
    sum += runtime.sequence_losses(window, 1, seqlen).front();
  }
  CHECK(all.mean_loss == Approx(sum / 5.0).epsilon(1e-6));
  CHECK(all.ppl == Approx(std::exp(sum / 5.0)).epsilon(1e-6));
  // The batch size does not change the result; --max-windows keeps the first K.
  CHECK(surgeon::llama::perplexity(runtime, ids, seqlen, 0, 5).ppl == Approx(all.ppl).epsilon(1e-6));
  const auto first_two = surgeon::llama::perplexity(runtime, ids, seqlen, 2, 4);
  CHECK(first_two.windows == 2);
  const std::vector<std::int32_t> two(ids.begin(), ids.begin() + 2 * seqlen);
  const auto losses = runtime.sequence_losses(two, 2, seqlen);
  CHECK(first_two.ppl == Approx(std::exp((losses[0] + losses[1]) / 2.0)).epsilon(1e-6));
  // A text shorter than one window is an error, as is a window of one token.
  const std::vector<std::int32_t> short_text(ids.begin(), ids.begin() + seqlen - 1);
  CHECK_THROWS_AS(surgeon::llama::perplexity(runtime, short_text, seqlen), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::llama::perplexity(runtime, ids, 1), surgeon::logic_error);
}
