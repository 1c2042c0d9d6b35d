/// @file perplexity.hpp
/// @brief Perplexity exactly as METHOD.md §8 defines it.
#pragma once

#include <surgeon/error.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llama/runtime.hpp"

namespace surgeon::llama {

/// @brief Result of `perplexity`.
struct perplexity_result {
  double ppl = 0.0;          ///< exp(mean of the window losses)
  double mean_loss = 0.0;    ///< mean of the window losses (nats)
  index_t windows = 0;       ///< windows evaluated
  index_t tokens_total = 0;  ///< tokens of the whole text
};

/// @brief Perplexity of a tokenised text (METHOD.md §8): ⌊n/T⌋ windows of T consecutive tokens (the
/// remainder dropped; `max_windows > 0` keeps the first K), each window's loss the mean
/// cross-entropy of its T−1 next-token predictions from an empty context, perplexity =
/// exp(mean window loss). Windows are evaluated `batch` at a time.
/// @throws logic_error if T < 2 or the text is shorter than one window.
inline perplexity_result perplexity(runtime& model, const std::vector<std::int32_t>& ids, index_t seqlen,
                                    index_t max_windows = 0, index_t batch = 4,
                                    const std::function<void(index_t, index_t, double)>& on_progress = {}) {
  SURGEON_EXPECTS(seqlen >= 2, "perplexity: seqlen must be at least 2, got {}", seqlen);
  SURGEON_EXPECTS(batch >= 1, "perplexity: batch must be at least 1, got {}", batch);
  index_t windows = static_cast<index_t>(ids.size()) / seqlen;
  if (max_windows > 0) windows = std::min(windows, max_windows);
  SURGEON_EXPECTS(windows >= 1, "perplexity: {} tokens do not fill one window of {}", ids.size(), seqlen);
  double sum = 0.0;
  for (index_t w0 = 0; w0 < windows; w0 += batch) {
    const index_t count = std::min(batch, windows - w0);
    const std::vector<std::int32_t> chunk(ids.begin() + w0 * seqlen, ids.begin() + (w0 + count) * seqlen);
    for (const double loss : model.sequence_losses(chunk, count, seqlen)) sum += loss;
    if (on_progress) on_progress(w0 + count, windows, std::exp(sum / static_cast<double>(w0 + count)));
  }
  perplexity_result result;
  result.windows = windows;
  result.mean_loss = sum / static_cast<double>(windows);
  result.ppl = std::exp(result.mean_loss);
  result.tokens_total = static_cast<index_t>(ids.size());
  return result;
}

}  // namespace surgeon::llama
