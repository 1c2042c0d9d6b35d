/// @file perplexity.hpp
/// @brief Perplexity exactly as METHOD.md §8 defines it, and a terminal progress bar.
#pragma once

#include <surgeon/error.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <unistd.h>

#include "llama/runtime.hpp"

namespace surgeon::llama {

/// @brief A one-line progress bar on stderr when it is a terminal; silent otherwise.
class progress_bar {
 public:
  progress_bar(std::string label, index_t total)
      : label_(std::move(label)), total_(total), enabled_(isatty(fileno(stderr)) != 0) {}
  ~progress_bar() {
    if (enabled_ && shown_) std::fputc('\n', stderr);
  }
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;

  /// @brief Shows `done` of `total`, with an optional note (e.g. the running value).
  void update(index_t done, const std::string& note = "") {
    if (!enabled_ || total_ <= 0) return;
    constexpr int width = 30;
    const auto filled = static_cast<int>(static_cast<double>(width) * static_cast<double>(done) /
                                         static_cast<double>(total_));
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld %s", label_.c_str(), bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), note.c_str());
    std::fflush(stderr);
    shown_ = true;
  }

 private:
  std::string label_;
  index_t total_;
  bool enabled_;
  bool shown_ = false;
};

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
