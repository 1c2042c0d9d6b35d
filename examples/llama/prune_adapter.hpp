/// @file prune_adapter.hpp
/// @brief The adapter of `surgeon::prune` (prune.hpp) for a Llama-family model: every linear layer
/// of every block is prunable, calibration runs the CPU runtime's backward pass over seeded random
/// windows of a calibration token stream (METHOD.md §8), evaluation is perplexity.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/prune.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "llama/layers.hpp"
#include "llama/model.hpp"
#include "llama/perplexity.hpp"
#include "llama/runtime.hpp"

namespace surgeon::llama {

/// @brief How the adapter samples its calibration data.
struct calibration_options {
  index_t nsamples = 128;        ///< N sequences per calibration pass
  index_t seqlen = 2048;         ///< T tokens per sequence
  index_t batch = 4;             ///< sequences per backward pass
  std::uint64_t seed = 0;        ///< seed of the window offsets
  bool reseed_per_shot = false;  ///< false: every shot sees the same N windows; true: seed + shot − 1
  backward_options backward{};   ///< labels of the gradients (empirical by default)
  /// Forward-only passes that want no early block resume from the residual stream the previous
  /// such pass left at its first wanted block, when that is at or before this pass's first wanted
  /// block, the windows are the same and no weight of the blocks before it changed (checked by a
  /// checksum of those blocks): sequential pruning (`prune_options::sequential`) then runs each
  /// block about once per group instead of every block up to it. Holds nsamples · seqlen · dim
  /// floats; bit-identical inputs to a pass from the embeddings.
  bool resume_forward = true;
  /// Sequences per fine-tuning pass of the first-order correction (`prune_adapter::fine_tune`):
  /// the calibration windows of `seed`, taken in turn (never the evaluation text).
  index_t fine_tune_batch = 4;
};

/// @brief When `prune_adapter::evaluate` computes a perplexity.
enum class evaluate_when {
  every_shot,  ///< after every shot
  last_shot,   ///< only after shot `last_shot` (earlier calls return NaN)
  never,       ///< never (every call returns NaN)
};

/// @brief How the adapter evaluates (METHOD.md §8 perplexity).
struct evaluation_options {
  index_t seqlen = 2048;     ///< window length T
  index_t max_windows = 32;  ///< first K windows (0 = all)
  index_t batch = 4;         ///< windows per forward pass
  evaluate_when when = evaluate_when::last_shot;
  int last_shot = 1;  ///< the shot count T of the schedule, for `evaluate_when::last_shot`
  /// Called with (windows done, windows, running perplexity) during an evaluation.
  std::function<void(index_t, index_t, double)> on_progress;
};

/// @brief The token windows of one calibration pass: `count` offsets drawn uniformly from
/// `[0, tokens − seqlen]` by a SplitMix64 stream seeded with `seed` (the same on every platform).
/// @throws logic_error if the stream is shorter than one window or count < 1.
inline std::vector<index_t> calibration_offsets(index_t tokens, index_t seqlen, index_t count,
                                                std::uint64_t seed) {
  SURGEON_EXPECTS(seqlen >= 2, "calibration: seqlen must be at least 2, got {}", seqlen);
  SURGEON_EXPECTS(count >= 1, "calibration: need at least one sample, got {}", count);
  SURGEON_EXPECTS(tokens >= seqlen, "calibration: {} tokens do not fill one window of {}", tokens, seqlen);
  const auto span = static_cast<std::uint64_t>(tokens - seqlen + 1);
  std::uint64_t state = seed;
  auto next = [&state]() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  std::vector<index_t> offsets;
  offsets.reserve(static_cast<std::size_t>(count));
  for (index_t k = 0; k < count; ++k) offsets.push_back(static_cast<index_t>(next() % span));
  return offsets;
}

/// @brief What the calibration passes of a `prune_adapter` have run so far.
struct calibration_counts {
  index_t passes = 0;            ///< calls of `calibrate` that ran anything
  index_t forward_batches = 0;   ///< batches through `runtime::forward` (no gradient wanted)
  index_t backward_batches = 0;  ///< batches through `runtime::backward`
  index_t blocks = 0;            ///< transformer blocks started over all batches (backward: every block; a
                       ///< forward-only pass stops inside its last block after the last wanted input)
  index_t resumed_batches = 0;    ///< forward batches that started from a cached residual stream
  index_t fine_tune_batches = 0;  ///< batches of the first-order correction (`fine_tune`)
};

/// @brief `surgeon::prune` adapter over a `model` (pruned in place) and a `runtime` on it.
///
/// References the model, the runtime and the token streams it is given; they must outlive it.
class prune_adapter {
 public:
  /// @param m the model whose linear layers are pruned in place
  /// @param rt a runtime over `m`
  /// @param calibration_tokens the tokenised calibration text (raw windows of it are sampled)
  /// @param evaluation_tokens the tokenised evaluation text (may be empty with `evaluate_when::never`)
  /// @throws logic_error if the runtime is not over `m`, or a stream is too short for its windows.
  prune_adapter(model& m, runtime& rt, const std::vector<std::int32_t>& calibration_tokens,
                const std::vector<std::int32_t>& evaluation_tokens, calibration_options calibration,
                evaluation_options evaluation)
      : prune_adapter(m, rt, calibration_tokens,
                      std::vector<const std::vector<std::int32_t>*>{&evaluation_tokens},
                      std::move(calibration), std::move(evaluation)) {}

  /// @brief The same over several evaluation texts: `evaluate` scores each of them (METHOD.md §8
  /// asks for the calibration domain and at least one other) and returns the first one's
  /// perplexity; `last_perplexities` holds them all.
  /// @param evaluation_texts the tokenised evaluation texts, in order (at least one unless
  ///        `evaluate_when::never`); the streams must outlive the adapter
  /// @throws logic_error if the runtime is not over `m`, or a stream is too short for its windows.
  prune_adapter(model& m, runtime& rt, const std::vector<std::int32_t>& calibration_tokens,
                std::vector<const std::vector<std::int32_t>*> evaluation_texts,
                calibration_options calibration, evaluation_options evaluation)
      : model_(m),
        runtime_(rt),
        calibration_tokens_(calibration_tokens),
        evaluation_texts_(std::move(evaluation_texts)),
        calibration_(std::move(calibration)),
        evaluation_(std::move(evaluation)) {
    SURGEON_EXPECTS(&rt.weights() == &m, "prune_adapter: the runtime does not run this model");
    SURGEON_EXPECTS(calibration_.batch >= 1, "prune_adapter: calibration batch must be >= 1");
    SURGEON_EXPECTS(calibration_.fine_tune_batch >= 1, "prune_adapter: fine-tuning batch must be >= 1");
    SURGEON_EXPECTS(static_cast<index_t>(calibration_tokens_.size()) >= calibration_.seqlen,
                    "prune_adapter: {} calibration tokens do not fill one sequence of {}",
                    calibration_tokens_.size(), calibration_.seqlen);
    if (evaluation_.when != evaluate_when::never) {
      SURGEON_EXPECTS(!evaluation_texts_.empty(), "prune_adapter: no evaluation text");
      for (std::size_t k = 0; k < evaluation_texts_.size(); ++k) {
        SURGEON_EXPECTS(evaluation_texts_[k] != nullptr &&
                            static_cast<index_t>(evaluation_texts_[k]->size()) >= evaluation_.seqlen,
                        "prune_adapter: evaluation text {} has {} tokens, less than one window of {}", k,
                        evaluation_texts_[k] == nullptr ? 0 : evaluation_texts_[k]->size(),
                        evaluation_.seqlen);
      }
    }
  }

  /// @brief Every linear layer (q, k, v, o, gate, up, down of every block), named "blk.L.attn_q";
  /// those of a part a block does not have (0 heads, FFN width 0) are empty and not listed.
  std::vector<prunable_matrix> matrices() {
    std::vector<prunable_matrix> result;
    for (const model::linear_ref& ref : model_.linear_layers()) {
      if (ref.rows == 0 || ref.cols == 0) continue;  // a part the block does not have (0 heads or FFN width)
      result.push_back(prunable_matrix{ref.name, ref.input_key, ref.view()});
    }
    return result;
  }

  /// @brief The coupled units of every block (`structure::coupled`, surgeon-prune's
  /// `--structure neurons-heads`), as indices into `matrices()`: FFN neuron i of block L
  /// ("blk.L.ffn.i") is row i of gate and up and column i of down; query head h ("blk.L.head.h")
  /// is its head_dim rows of q and head_dim columns of o; key/value head g ("blk.L.kv.g") is its
  /// head_dim rows of k and v, a follower of the query heads that read it (h / (n_heads/n_kv_heads)
  /// = g, llama.cpp's grouping), removed once they all are. The rows of gate, up, q, k and v only
  /// feed their unit (`unit_lines::feeds_unit`): LLM Surgeon costs a neuron by its column of down
  /// and a head by its columns of o, and compensates through those matrices' updates.
  /// O(Σ blocks' heads + FFN widths).
  coupled_units units() {
    const std::vector<prunable_matrix> listed = matrices();
    std::map<std::string, std::size_t> index;
    for (std::size_t k = 0; k < listed.size(); ++k) index.emplace(listed[k].name, k);
    const auto find = [&index](index_t layer, linear_kind kind) {
      const auto it = index.find(linear_name(layer, kind));
      return it == index.end() ? std::optional<std::size_t>() : std::optional<std::size_t>(it->second);
    };
    coupled_units result;
    const index_t head_dim = model_.cfg.head_dim();
    for (index_t l = 0; l < model_.cfg.n_layers; ++l) {
      const block_shape shape = model_.cfg.block(l);
      const std::string prefix = block_prefix(l);
      const auto gate = find(l, linear_kind::ffn_gate);
      const auto up = find(l, linear_kind::ffn_up);
      const auto down = find(l, linear_kind::ffn_down);
      if (gate && up && down) {
        for (index_t i = 0; i < shape.hidden_dim; ++i) {
          result.units.push_back(coupled_unit{prefix + "ffn." + std::to_string(i),
                                              {{*gate, line_kind::row, i, 1, true},
                                               {*up, line_kind::row, i, 1, true},
                                               {*down, line_kind::column, i, 1}}});
        }
      }
      const auto q = find(l, linear_kind::attn_q);
      const auto k = find(l, linear_kind::attn_k);
      const auto v = find(l, linear_kind::attn_v);
      const auto o = find(l, linear_kind::attn_output);
      if (!(q && k && v && o)) continue;
      const std::size_t first_head = result.units.size();
      for (index_t h = 0; h < shape.n_heads; ++h) {
        result.units.push_back(coupled_unit{prefix + "head." + std::to_string(h),
                                            {{*q, line_kind::row, h * head_dim, head_dim, true},
                                             {*o, line_kind::column, h * head_dim, head_dim}}});
      }
      const index_t group = shape.n_heads / shape.n_kv_heads;
      for (index_t g = 0; g < shape.n_kv_heads; ++g) {
        follower_unit kv{coupled_unit{prefix + "kv." + std::to_string(g),
                                      {{*k, line_kind::row, g * head_dim, head_dim, true},
                                       {*v, line_kind::row, g * head_dim, head_dim, true}}},
                         {}};
        for (index_t h = g * group; h < (g + 1) * group; ++h)
          kv.leaders.push_back(first_head + static_cast<std::size_t>(h));
        result.followers.push_back(std::move(kv));
      }
    }
    return result;
  }

  /// @brief One calibration pass: N windows of T tokens at seeded random offsets, `batch` at a
  /// time through `runtime::backward`, every layer input and output gradient forwarded to `sink`.
  /// When the sink wants no output gradient (Wanda, L-OBD, SparseGPT) the pass is
  /// `runtime::forward` instead — the same inputs for a third of the work — and it stops right
  /// after the last input the sink wants (a group of early matrices needs only early blocks, and
  /// the rest of the last block and the output head are skipped).
  /// The windows depend on the seed only (and on the shot after the first when `reseed_per_shot`).
  void calibrate(calibration_sink& sink, int shot) {
    // The first shot always reads the windows of `seed`, so a one-shot run does not depend on
    // reseed_per_shot; later shots read those of seed + 1, seed + 2, ... when reseeding.
    const std::uint64_t seed =
        calibration_.seed +
        (calibration_.reseed_per_shot && shot > 1 ? static_cast<std::uint64_t>(shot - 1) : 0u);
    const index_t seqlen = calibration_.seqlen;
    const std::vector<index_t> offsets = calibration_offsets(static_cast<index_t>(calibration_tokens_.size()),
                                                             seqlen, calibration_.nsamples, seed);
    hooks h;
    h.input = [&sink](const std::string& key, host_matrix_view<const float> x) { sink.input(key, x); };
    h.output_grad = [&sink](const std::string& name, host_matrix_view<const float> gy) {
      sink.output_grad(name, gy);
    };
    const bool forward_only = !sink.wants_output_gradients();
    index_t first_layer = model_.cfg.n_layers;  // the first and last blocks whose input the sink wants
    index_t last_layer = -1;                    // and the last wanted input of the last (forward_only)
    linear_kind last_input = linear_kind::attn_q;
    if (forward_only) {
      for (const model::linear_ref& ref : model_.linear_layers()) {  // block order, then kind order
        if (!sink.wants_input(ref.input_key)) continue;
        first_layer = std::min(first_layer, ref.layer);
        last_layer = ref.layer;
        last_input = ref.kind;
      }
      if (last_layer < 0) return;  // nothing of this pass is wanted
      h.output_grad = nullptr;
    }
    ++counts_.passes;
    // A forward-only pass that wants no early block starts from (and then keeps) the residual
    // stream entering its first wanted block.
    const bool cached_start = forward_only && calibration_.resume_forward && first_layer > 0;
    bool resume = false;
    checksum_state weights_before;  // of blocks [0, first_layer), read once
    if (cached_start) {
      const bool candidate = resume_.block > 0 && resume_.block <= first_layer && resume_.offsets == offsets;
      if (candidate) {
        weights_before.extend(model_, 0, resume_.block);
        resume = weights_before.value() == resume_.checksum;
        weights_before.extend(model_, resume_.block, first_layer);
      } else {
        weights_before.extend(model_, 0, first_layer);
      }
    }
    std::vector<runtime::matrix> streams;  // the new cache: inputs of block first_layer
    std::vector<std::int32_t> batch_tokens;
    // Over several processes each runs its share of the batches (the batches are formed the same
    // way whatever the share, so a batch's contribution does not depend on the process count).
    const data_share share = sink.share();
    index_t batch_index = 0;
    for (index_t first = 0; first < calibration_.nsamples; first += calibration_.batch, ++batch_index) {
      if (!share.owns(batch_index)) {
        if (cached_start) streams.emplace_back();  // keeps the cache indexed by batch
        continue;
      }
      const index_t count = std::min(calibration_.batch, calibration_.nsamples - first);
      batch_tokens.clear();
      for (index_t k = first; k < first + count; ++k) {
        const auto begin = calibration_tokens_.begin() + offsets[static_cast<std::size_t>(k)];
        batch_tokens.insert(batch_tokens.end(), begin, begin + seqlen);
      }
      if (cached_start) {
        const index_t start = resume ? resume_.block : 0;
        runtime::matrix x = resume ? std::move(resume_.streams[static_cast<std::size_t>(batch_index)])
                                   : runtime_.embeddings(batch_tokens, count, seqlen);
        runtime_.forward_blocks(x, count, seqlen, start, first_layer - 1, hooks{});
        streams.push_back(x);
        runtime_.forward_blocks(x, count, seqlen, first_layer, last_layer, h, last_input);
        ++counts_.forward_batches;
        counts_.resumed_batches += resume ? 1 : 0;
        counts_.blocks += last_layer + 1 - start;
        continue;
      }
      if (forward_only) {
        runtime_.forward(batch_tokens, count, seqlen, h, last_layer, last_input);
        ++counts_.forward_batches;
        counts_.blocks += last_layer + 1;
        continue;
      }
      backward_options options = calibration_.backward;
      options.seed = calibration_.backward.seed + static_cast<std::uint64_t>(first);
      last_calibration_loss_ = runtime_.backward(batch_tokens, count, seqlen, h, options);
      ++counts_.backward_batches;
      counts_.blocks += model_.cfg.n_layers;
    }
    if (cached_start) {
      resume_.block = first_layer;
      resume_.offsets = offsets;
      resume_.streams = std::move(streams);
      resume_.checksum = weights_before.value();
    }
  }

  /// @brief One fine-tuning pass of the first-order correction (`prune_options::first_order`):
  /// the next `calibration_options::fine_tune_batch` of the calibration windows of `seed` (the
  /// first shot's windows, taken in turn and starting over after the last), through
  /// `runtime::backward` against the true next tokens, with the gradients of the mean loss (as
  /// PyTorch's `loss.mean().backward()` gives them); every layer input and output gradient goes to
  /// `sink`. Returns the batch's mean loss. The shot and step do not change the windows: the
  /// adapter's own counter does. Cost: one backward pass of `fine_tune_batch` windows.
  double fine_tune(calibration_sink& sink, int /*shot*/, int /*step*/) {
    const index_t seqlen = calibration_.seqlen;
    const std::vector<index_t> offsets = calibration_offsets(
        static_cast<index_t>(calibration_tokens_.size()), seqlen, calibration_.nsamples, calibration_.seed);
    const index_t count = std::min(calibration_.fine_tune_batch, calibration_.nsamples);
    std::vector<std::int32_t> batch_tokens;
    for (index_t k = 0; k < count; ++k) {
      const index_t window = (next_fine_tune_window_ + k) % calibration_.nsamples;
      const auto begin = calibration_tokens_.begin() + offsets[static_cast<std::size_t>(window)];
      batch_tokens.insert(batch_tokens.end(), begin, begin + seqlen);
    }
    next_fine_tune_window_ = (next_fine_tune_window_ + count) % calibration_.nsamples;
    hooks h;
    h.input = [&sink](const std::string& key, host_matrix_view<const float> x) { sink.input(key, x); };
    h.output_grad = [&sink](const std::string& name, host_matrix_view<const float> gy) {
      sink.output_grad(name, gy);
    };
    backward_options options;
    options.labels = label_mode::empirical;
    options.per_token_gradients = false;
    const double loss = runtime_.backward(batch_tokens, count, seqlen, h, options);
    ++counts_.fine_tune_batches;
    return loss;
  }

  /// @brief Perplexity on the (first) evaluation text (METHOD.md §8) after shot `shot` (1-based,
  /// as the driver passes it), or NaN for the shots `evaluation_options::when` skips; every
  /// evaluation text is scored (`last_perplexities`).
  double evaluate(int shot) {
    const bool wanted = evaluation_.when == evaluate_when::every_shot ||
                        (evaluation_.when == evaluate_when::last_shot && shot == evaluation_.last_shot);
    if (!wanted || evaluation_texts_.empty()) return std::numeric_limits<double>::quiet_NaN();
    last_perplexities_.clear();
    for (const std::vector<std::int32_t>* text : evaluation_texts_) {
      last_perplexities_.push_back(perplexity(runtime_, *text, evaluation_.seqlen, evaluation_.max_windows,
                                              evaluation_.batch, evaluation_.on_progress));
    }
    return last_perplexities_.front().ppl;
  }

  /// @brief The last perplexity `evaluate` computed on the first text (zeros before the first).
  perplexity_result last_perplexity() const {
    return last_perplexities_.empty() ? perplexity_result{} : last_perplexities_.front();
  }
  /// @brief The last perplexities `evaluate` computed, one per evaluation text (empty before the first).
  const std::vector<perplexity_result>& last_perplexities() const { return last_perplexities_; }
  /// @brief The mean loss of the last backward calibration batch (0 before the first; forward-only
  /// passes stop after their last wanted input, compute no loss and leave it as it was).
  double last_calibration_loss() const { return last_calibration_loss_; }
  /// @brief What the calibration passes have run so far (forward-only or backward batches).
  const calibration_counts& calibration_work() const { return counts_; }

 private:
  model& model_;
  runtime& runtime_;
  const std::vector<std::int32_t>& calibration_tokens_;
  std::vector<const std::vector<std::int32_t>*> evaluation_texts_;
  calibration_options calibration_;
  evaluation_options evaluation_;
  std::vector<perplexity_result> last_perplexities_;
  double last_calibration_loss_ = 0.0;
  calibration_counts counts_{};
  index_t next_fine_tune_window_ = 0;  // the first window of the next `fine_tune` pass

  // Order-sensitive checksum of every weight (norms included) of a run of blocks, extended block
  // by block, to tell whether a cached residual stream is still what the blocks before it compute.
  // Eight independent Fletcher-style lanes (weight k goes to lane k mod 8 of its array), so that
  // the compiler keeps them in vector registers: a read of those weights at memory speed rather
  // than one dependent add per weight.
  struct checksum_state {
    static constexpr std::size_t lanes = 8;
    std::uint64_t low[lanes] = {};
    std::uint64_t high[lanes] = {};
    void extend(const model& m, index_t first, index_t end) {
      for (index_t l = first; l < end; ++l) {
        const block_weights& b = m.blocks[static_cast<std::size_t>(l)];
        for (const block_tensor& t : block_tensors) add((b.*t.weights).data(), (b.*t.weights).size());
      }
    }
    void add(const float* values, std::size_t count) {
      std::size_t k = 0;
      std::uint32_t bits[lanes];
      for (; k + lanes <= count; k += lanes) {
        std::memcpy(bits, values + k, sizeof bits);
        for (std::size_t lane = 0; lane < lanes; ++lane) {
          low[lane] += bits[lane];  // the sum of running sums is order-sensitive
          high[lane] += low[lane];
        }
      }
      for (std::size_t lane = 0; k < count; ++k, ++lane) {
        std::uint32_t tail = 0;
        std::memcpy(&tail, values + k, sizeof tail);
        low[lane] += tail;
        high[lane] += low[lane];
      }
    }
    std::uint64_t value() const {
      std::uint64_t result = 0;
      for (std::size_t lane = 0; lane < lanes; ++lane) {
        result = (result ^ low[lane] ^ (high[lane] * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;
      }
      return result;
    }
  };

  // The residual streams entering block `block` of every calibration batch of the windows at
  // `offsets`, and the checksum of blocks [0, block) they were computed with (0 block: none).
  struct resume_cache {
    index_t block = 0;
    std::vector<index_t> offsets;
    std::uint64_t checksum = 0;
    std::vector<runtime::matrix> streams;
  };
  resume_cache resume_;
};

}  // namespace surgeon::llama
