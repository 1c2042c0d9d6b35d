/// @file runtime.hpp
/// @brief Forward and backward passes of a Llama-family model on the CPU (Eigen, fp32), with hooks
/// that hand every linear layer's inputs and output gradients to K-FAC accumulators.
///
/// Batches are `[batch, seq]` token ids; row `n = b·seq + t` of every activation matrix is token t
/// of sequence b. The loss is the mean next-token cross-entropy over the `batch·(seq − 1)`
/// predictions. Memory stays bounded: the backward pass keeps only each block's input (the
/// residual stream) from the forward pass and recomputes one block at a time, and the output head
/// runs over chunks of tokens, so SmolLM2 with 8 × 512 tokens needs well under 4 GB.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/view.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "llama/model.hpp"

namespace surgeon::llama {

/// @brief Receivers for what the backward pass computes. Every member is optional.
struct hooks {
  /// Input X `[tokens, in]` of the layers that read key `input_key` (called once per key and
  /// block: q/k/v share "blk.L.attn_in", gate/up share "blk.L.ffn_in").
  std::function<void(const std::string& input_key, host_matrix_view<const float> x)> input;
  /// Gradient at the output of linear layer `layer` ("blk.L.attn_q", ...), `[tokens, out]`.
  std::function<void(const std::string& layer, host_matrix_view<const float> gy)> output_grad;
  /// Weight gradient of linear layer `layer`, `[out, in]` (costs one more GEMM per layer).
  std::function<void(const std::string& layer, host_matrix_view<const float> dw)> weight_grad;
};

/// @brief Which labels the backward pass differentiates against.
enum class label_mode {
  empirical,  ///< the true next tokens (empirical Fisher)
  sampled,    ///< tokens sampled from the model's own softmax (Monte Carlo true Fisher)
};

/// @brief Options of `runtime::backward`.
struct backward_options {
  label_mode labels = label_mode::empirical;
  std::uint64_t seed = 0;  ///< for sampled labels
  /// true: hooks receive gradients of the summed loss over the batch (each token's gradient at the
  /// scale of one token's loss, the usual K-FAC convention); false: gradients of the mean loss
  /// (what PyTorch's autograd gives for `loss.mean()`). Costs are ratios, so only numerics differ.
  bool per_token_gradients = true;
};

/// @brief Evaluates and differentiates one model, which it references (not copies): weights pruned
/// in place are seen by the next pass. Holds RoPE tables; not thread-safe.
class runtime {
 public:
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// @throws logic_error if the model is inconsistent.
  explicit runtime(const model& m) : model_(&m) { m.validate(); }

  const model& weights() const { return *model_; }

  /// @brief Per-sequence mean cross-entropy of the `seq − 1` next-token predictions.
  /// Cost: one forward pass, about 2·params·batch·seq flops plus attention.
  /// @throws logic_error on bad shapes or token ids.
  std::vector<double> sequence_losses(const std::vector<std::int32_t>& tokens, index_t batch, index_t seq) {
    check_batch(tokens, batch, seq);
    matrix x = embed(tokens);
    for (index_t l = 0; l < model_->cfg.n_layers; ++l) block_forward(l, x, batch, seq, nullptr);
    std::vector<double> losses(static_cast<std::size_t>(batch), 0.0);
    head(x, tokens, batch, seq, nullptr, &losses, backward_options{});
    for (double& loss : losses) loss /= static_cast<double>(seq - 1);
    return losses;
  }

  /// @brief Mean next-token cross-entropy of a batch. @throws as `sequence_losses`.
  double loss(const std::vector<std::int32_t>& tokens, index_t batch, index_t seq) {
    const std::vector<double> losses = sequence_losses(tokens, batch, seq);
    double sum = 0.0;
    for (const double l : losses) sum += l;
    return sum / static_cast<double>(batch);
  }

  /// @brief Logits `[batch·seq, vocab]` of a batch (tests and small models only: O(tokens·vocab)).
  matrix logits(const std::vector<std::int32_t>& tokens, index_t batch, index_t seq) {
    check_batch(tokens, batch, seq);
    matrix x = embed(tokens);
    for (index_t l = 0; l < model_->cfg.n_layers; ++l) block_forward(l, x, batch, seq, nullptr);
    const matrix hf = rms_norm(x, model_->final_norm, nullptr);
    return hf * classifier().transpose();
  }

  /// @brief Forward pass alone that hands every linear layer's input to `h.input` (once per input
  /// key and block, in block order), for calibrations that need no gradient (the A factors of
  /// Wanda, L-OBD and SparseGPT). The inputs are bit-identical to those `backward` hands over.
  /// `last_layer` stops the pass after that block (-1: every block; the loss is then not computed
  /// and 0 returned); `stop_after` stops it inside that block (the last one when `last_layer` is
  /// -1) right after the input of that kind is handed to `h` (q/k/v share one input, gate/up
  /// another), so a calibration that wants no later input skips the rest of the block and the
  /// head; the loss is then not computed and 0 returned. Returns the mean next-token loss.
  /// Cost: one forward pass (about a third of `backward`); memory: one block's activations.
  /// @throws logic_error on bad shapes or token ids, when `h` has `output_grad` or `weight_grad`
  ///         (they need `backward`), or when `last_layer` is not a block or -1.
  double forward(const std::vector<std::int32_t>& tokens, index_t batch, index_t seq, const hooks& h,
                 index_t last_layer = -1, std::optional<linear_kind> stop_after = std::nullopt) {
    check_batch(tokens, batch, seq);
    SURGEON_EXPECTS(!h.output_grad && !h.weight_grad,
                    "runtime::forward: output and weight gradients need runtime::backward");
    const index_t layers = model_->cfg.n_layers;
    SURGEON_EXPECTS(last_layer >= -1 && last_layer < layers,
                    "runtime::forward: last_layer {} is not a block of the {} (or -1)", last_layer, layers);
    const index_t stop = last_layer < 0 ? layers : last_layer + 1;
    matrix x = embed(tokens);
    for (index_t l = 0; l < stop; ++l) {
      block_forward(l, x, batch, seq, nullptr, &h, l == stop - 1 ? stop_after : std::nullopt);
    }
    if (stop < layers || stop_after) return 0.0;
    const double loss_sum = head(x, tokens, batch, seq, nullptr, nullptr, backward_options{});
    return loss_sum / static_cast<double>(batch * (seq - 1));
  }

  /// @brief The residual stream entering block 0: the batch's token embeddings `[batch·seq, dim]`.
  /// @throws logic_error on bad shapes or token ids.
  matrix embeddings(const std::vector<std::int32_t>& tokens, index_t batch, index_t seq) const {
    check_batch(tokens, batch, seq);
    return embed(tokens);
  }

  /// @brief Runs blocks `first` … `last` forward on the residual stream `x` `[batch·seq, dim]`
  /// (the input of block `first`), in place, handing every linear layer's input to `h.input` as
  /// `forward` does; `x` ends as the input of block `last + 1`. With `last = first − 1` nothing
  /// runs. Lets a caller resume a forward pass from a cached residual stream. With `stop_after`,
  /// block `last` stops right after handing the input of that kind to `h` (as in `forward`) and
  /// `x` is left unspecified: for a caller that wants nothing after that input.
  /// Cost: those blocks of a forward pass. @throws logic_error on a bad block range or shape, or
  /// when `h` has gradient hooks.
  void forward_blocks(matrix& x, index_t batch, index_t seq, index_t first, index_t last, const hooks& h,
                      std::optional<linear_kind> stop_after = std::nullopt) {
    const index_t layers = model_->cfg.n_layers;
    SURGEON_EXPECTS(!h.output_grad && !h.weight_grad,
                    "runtime::forward_blocks: output and weight gradients need runtime::backward");
    SURGEON_EXPECTS(first >= 0 && first <= layers && last >= first - 1 && last < layers,
                    "runtime::forward_blocks: blocks {}..{} outside the model's {}", first, last, layers);
    SURGEON_EXPECTS(batch >= 1 && seq >= 2 && x.rows() == batch * seq && x.cols() == model_->cfg.dim,
                    "runtime::forward_blocks: residual stream [{}, {}] for a [{}, {}] batch of width {}",
                    x.rows(), x.cols(), batch, seq, model_->cfg.dim);
    SURGEON_EXPECTS(seq <= model_->cfg.max_seq_len, "runtime::forward_blocks: seq {} exceeds the context {}",
                    seq, model_->cfg.max_seq_len);
    for (index_t l = first; l <= last; ++l)
      block_forward(l, x, batch, seq, nullptr, &h, l == last ? stop_after : std::nullopt);
  }

  /// @brief Forward and backward of the mean next-token loss; every linear layer's input, output
  /// gradient and (optionally) weight gradient go to `h`. Returns the mean loss (against the
  /// labels used). Cost: about three forward passes (one forward, then per block a recompute and
  /// the backward); memory: the residual stream of every block plus one block's activations.
  /// @throws logic_error on bad shapes or token ids.
  double backward(const std::vector<std::int32_t>& tokens, index_t batch, index_t seq, const hooks& h,
                  const backward_options& options = {}) {
    check_batch(tokens, batch, seq);
    const index_t layers = model_->cfg.n_layers;
    std::vector<matrix> block_inputs(static_cast<std::size_t>(layers));
    matrix x = embed(tokens);
    for (index_t l = 0; l < layers; ++l) {
      block_inputs[static_cast<std::size_t>(l)] = x;
      block_forward(l, x, batch, seq, nullptr);
    }
    matrix dx;
    const double loss_sum = head(x, tokens, batch, seq, &dx, nullptr, options);
    const double count = static_cast<double>(batch * (seq - 1));
    // head() returns gradients of the summed loss; scale to the mean unless per-token gradients
    // are asked for (the weight gradients always follow the mean loss, as PyTorch's .grad).
    grad_scale_ = options.per_token_gradients ? 1.0f : static_cast<float>(1.0 / count);
    weight_grad_scale_ = static_cast<float>(1.0 / count);
    for (index_t l = layers - 1; l >= 0; --l) {
      block_cache cache;
      matrix xin = block_inputs[static_cast<std::size_t>(l)];
      block_forward(l, xin, batch, seq, &cache);
      block_inputs[static_cast<std::size_t>(l)] = matrix();  // free as we go
      block_backward(l, cache, dx, batch, seq, h);
    }
    return loss_sum / count;
  }

 private:
  using const_map = Eigen::Map<const matrix>;

  struct block_cache {
    matrix x, h1, q, k, v, o, x2, h2, gate, up, s;
    std::vector<float> r1, r2;  // 1 / rms per token
    std::vector<matrix> probs;  // [batch·heads] softmax matrices [seq, seq]
  };

  void check_batch(const std::vector<std::int32_t>& tokens, index_t batch, index_t seq) const {
    SURGEON_EXPECTS(batch >= 1 && seq >= 2, "llama::runtime: need batch >= 1 and seq >= 2, got [{}, {}]",
                    batch, seq);
    SURGEON_EXPECTS(static_cast<index_t>(tokens.size()) == batch * seq,
                    "llama::runtime: {} tokens for a [{}, {}] batch", tokens.size(), batch, seq);
    SURGEON_EXPECTS(model_->cfg.max_seq_len <= 0 || seq <= model_->cfg.max_seq_len,
                    "llama::runtime: sequences of {} tokens exceed the model's context of {}", seq,
                    model_->cfg.max_seq_len);
    for (const std::int32_t t : tokens) {
      SURGEON_EXPECTS(t >= 0 && t < model_->cfg.vocab_size,
                      "llama::runtime: token id {} outside the vocabulary of {}", t, model_->cfg.vocab_size);
    }
  }

  const_map weight(const std::vector<float>& w, index_t rows, index_t cols) const {
    return const_map(w.data(), rows, cols);
  }
  const_map classifier() const {
    return const_map(model_->classifier().data(), model_->cfg.vocab_size, model_->cfg.dim);
  }

  matrix embed(const std::vector<std::int32_t>& tokens) const {
    const index_t d = model_->cfg.dim;
    matrix x(static_cast<index_t>(tokens.size()), d);
    for (std::size_t n = 0; n < tokens.size(); ++n) {
      const float* row = model_->token_embedding.data() + static_cast<index_t>(tokens[n]) * d;
      std::copy(row, row + d, x.row(static_cast<index_t>(n)).data());
    }
    return x;
  }

  matrix rms_norm(const matrix& x, const std::vector<float>& gain, std::vector<float>* inverse_rms) const {
    const index_t d = x.cols();
    matrix y(x.rows(), d);
    if (inverse_rms) inverse_rms->resize(static_cast<std::size_t>(x.rows()));
    for (index_t n = 0; n < x.rows(); ++n) {
      double sum = 0.0;
      for (index_t j = 0; j < d; ++j) sum += static_cast<double>(x(n, j)) * x(n, j);
      const float r =
          static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(d) + model_->cfg.norm_eps));
      if (inverse_rms) (*inverse_rms)[static_cast<std::size_t>(n)] = r;
      for (index_t j = 0; j < d; ++j) y(n, j) = x(n, j) * r * gain[static_cast<std::size_t>(j)];
    }
    return y;
  }

  // dx += d(rms_norm)/dx applied to dy.
  void rms_norm_backward(const matrix& x, const std::vector<float>& gain,
                         const std::vector<float>& inverse_rms, const matrix& dy, matrix& dx) const {
    const index_t d = x.cols();
    for (index_t n = 0; n < x.rows(); ++n) {
      const float r = inverse_rms[static_cast<std::size_t>(n)];
      double dot = 0.0;
      for (index_t j = 0; j < d; ++j)
        dot += static_cast<double>(dy(n, j)) * gain[static_cast<std::size_t>(j)] * x(n, j) * r;
      const float mean = static_cast<float>(dot / static_cast<double>(d));
      for (index_t j = 0; j < d; ++j) {
        const float u = dy(n, j) * gain[static_cast<std::size_t>(j)];
        dx(n, j) += r * (u - x(n, j) * r * mean);
      }
    }
  }

  // Rotates adjacent pairs (2i, 2i+1) of every head by position·θ^(−2i/head_dim); `sign` −1
  // applies the inverse rotation (the backward of the forward rotation).
  void rope(matrix& m, index_t seq, float sign) const {
    const index_t hd = model_->cfg.head_dim();
    const index_t half = hd / 2;
    if (static_cast<index_t>(cos_.size()) < seq * half) build_rope_tables(seq);
    for (index_t n = 0; n < m.rows(); ++n) {
      const index_t pos = n % seq;
      const float* c = cos_.data() + pos * half;
      const float* s = sin_.data() + pos * half;
      float* row = m.row(n).data();
      for (index_t base = 0; base < m.cols(); base += hd) {
        for (index_t i = 0; i < half; ++i) {
          const float v0 = row[base + 2 * i];
          const float v1 = row[base + 2 * i + 1];
          const float si = sign * s[i];
          row[base + 2 * i] = v0 * c[i] - v1 * si;
          row[base + 2 * i + 1] = v0 * si + v1 * c[i];
        }
      }
    }
  }

  void build_rope_tables(index_t seq) const {
    const index_t hd = model_->cfg.head_dim();
    const index_t half = hd / 2;
    cos_.resize(static_cast<std::size_t>(seq * half));
    sin_.resize(static_cast<std::size_t>(seq * half));
    for (index_t pos = 0; pos < seq; ++pos) {
      for (index_t i = 0; i < half; ++i) {
        const double freq = std::pow(static_cast<double>(model_->cfg.rope_theta),
                                     -static_cast<double>(2 * i) / static_cast<double>(hd));
        const double angle = static_cast<double>(pos) * freq;
        cos_[static_cast<std::size_t>(pos * half + i)] = static_cast<float>(std::cos(angle));
        sin_[static_cast<std::size_t>(pos * half + i)] = static_cast<float>(std::sin(angle));
      }
    }
  }

  static float silu(float z) { return z / (1.0f + std::exp(-z)); }

  // Hands one layer input to `h->input` (the forward pass's hooks; none in the backward pass,
  // which delivers the inputs from its recomputed cache).
  static void deliver_input(const hooks* h, index_t layer, linear_kind kind, const matrix& input) {
    if (h && h->input)
      h->input(input_key(layer, kind),
               host_matrix_view<const float>(input.data(), input.rows(), input.cols()));
  }

  // The position of the input of `kind` among a block's four input deliveries: input groups are
  // numbered in the order a block computes them (q/k/v share the first, gate/up the third).
  static int delivery_index(linear_kind kind) { return static_cast<int>(linear_tensor(kind).input); }

  // One block, in place on x, with the block's own shape: an attention-free block (0 heads) adds
  // nothing for attention, an FFN-free one nothing for the FFN, and neither hands those inputs to
  // the hooks (there are no such layers to calibrate). With a cache, keeps what the backward pass
  // needs; with hooks, hands the layer inputs to them as they are computed. With `stop_after`,
  // returns right after that input is handed over (or where it would have been, in a block without
  // that part), leaving x as it was (the caller discards it).
  void block_forward(index_t layer, matrix& x, index_t batch, index_t seq, block_cache* cache,
                     const hooks* h = nullptr, std::optional<linear_kind> stop_after = std::nullopt) {
    const config& cfg = model_->cfg;
    const block_shape shape = cfg.block(layer);
    const block_weights& b = model_->blocks[static_cast<std::size_t>(layer)];
    const index_t d = cfg.dim;
    const index_t hd = cfg.head_dim();
    const index_t qd = shape.n_heads * hd;
    const index_t kv = shape.n_kv_heads * hd;
    const index_t hidden = shape.hidden_dim;
    const int stop = stop_after ? delivery_index(*stop_after) : -1;  // -1: run the whole block

    std::vector<float> r1;
    matrix h1, q, k, v, o;
    matrix x2;
    if (shape.n_heads > 0) {
      const index_t group = shape.n_heads / shape.n_kv_heads;
      const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
      h1 = rms_norm(x, b.attn_norm, &r1);
      deliver_input(h, layer, linear_kind::attn_q, h1);
      if (stop == 0) return;
      q = h1 * weight(b.wq, qd, d).transpose();
      k = h1 * weight(b.wk, kv, d).transpose();
      v = h1 * weight(b.wv, kv, d).transpose();
      rope(q, seq, 1.0f);
      rope(k, seq, 1.0f);
      o.resize(x.rows(), qd);
      if (cache) cache->probs.resize(static_cast<std::size_t>(batch * shape.n_heads));
      matrix scores(seq, seq);
      for (index_t s = 0; s < batch; ++s) {
        for (index_t head = 0; head < shape.n_heads; ++head) {
          const index_t kv_head = head / group;
          scores.noalias() =
              q.block(s * seq, head * hd, seq, hd) * k.block(s * seq, kv_head * hd, seq, hd).transpose();
          for (index_t i = 0; i < seq; ++i) {
            float* row = scores.row(i).data();
            float top = -std::numeric_limits<float>::infinity();
            for (index_t j = 0; j <= i; ++j) top = std::max(top, row[j] *= scale);
            float sum = 0.0f;
            for (index_t j = 0; j <= i; ++j) sum += row[j] = std::exp(row[j] - top);
            const float inverse = 1.0f / sum;
            for (index_t j = 0; j <= i; ++j) row[j] *= inverse;
            for (index_t j = i + 1; j < seq; ++j) row[j] = 0.0f;
          }
          o.block(s * seq, head * hd, seq, hd).noalias() = scores * v.block(s * seq, kv_head * hd, seq, hd);
          if (cache) cache->probs[static_cast<std::size_t>(s * shape.n_heads + head)] = scores;
        }
      }
      deliver_input(h, layer, linear_kind::attn_output, o);
      if (stop == 1) return;
      x2 = x + o * weight(b.wo, d, qd).transpose();
    } else {
      if (stop == 0 || stop == 1) return;
      x2 = x;
    }
    std::vector<float> r2;
    matrix h2, gate, up, act;
    matrix x3 = x2;
    if (hidden > 0) {
      h2 = rms_norm(x2, b.ffn_norm, &r2);
      deliver_input(h, layer, linear_kind::ffn_gate, h2);
      if (stop == 2) return;
      gate = h2 * weight(b.w_gate, hidden, d).transpose();
      up = h2 * weight(b.w_up, hidden, d).transpose();
      act.resize(gate.rows(), gate.cols());
      for (index_t n = 0; n < gate.rows(); ++n) {
        for (index_t j = 0; j < gate.cols(); ++j) act(n, j) = silu(gate(n, j)) * up(n, j);
      }
      deliver_input(h, layer, linear_kind::ffn_down, act);
      if (stop == 3) return;
      x3.noalias() += act * weight(b.w_down, d, hidden).transpose();
    } else if (stop == 2 || stop == 3) {
      return;
    }
    if (cache) {
      cache->x = std::move(x);
      cache->h1 = std::move(h1);
      cache->q = std::move(q);
      cache->k = std::move(k);
      cache->v = std::move(v);
      cache->o = std::move(o);
      cache->x2 = std::move(x2);
      cache->h2 = std::move(h2);
      cache->gate = std::move(gate);
      cache->up = std::move(up);
      cache->s = std::move(act);
      cache->r1 = std::move(r1);
      cache->r2 = std::move(r2);
    }
    x = std::move(x3);
  }

  // Output head over chunks of tokens: the summed loss, optionally the gradient of the summed
  // loss w.r.t. the last block's output (dx) and the per-sequence loss sums.
  double head(const matrix& x, const std::vector<std::int32_t>& tokens, index_t batch, index_t seq,
              matrix* dx, std::vector<double>* sequence_sums, const backward_options& options) {
    const index_t d = model_->cfg.dim;
    const index_t vocab = model_->cfg.vocab_size;
    std::vector<float> rf;
    const matrix hf = rms_norm(x, model_->final_norm, &rf);
    matrix dhf;
    if (dx) dhf = matrix::Zero(x.rows(), d);
    const index_t chunk = std::max<index_t>(1, std::min<index_t>(x.rows(), (index_t{1} << 22) / vocab));
    std::mt19937_64 engine(options.seed);
    double total = 0.0;
    matrix logits;
    for (index_t n0 = 0; n0 < x.rows(); n0 += chunk) {
      const index_t rows = std::min(chunk, x.rows() - n0);
      logits.noalias() = hf.middleRows(n0, rows) * classifier().transpose();
      for (index_t r = 0; r < rows; ++r) {
        const index_t n = n0 + r;
        float* row = logits.row(r).data();
        if (n % seq == seq - 1) {  // the last token of a sequence predicts nothing
          if (dx) std::fill(row, row + vocab, 0.0f);
          continue;
        }
        float top = -std::numeric_limits<float>::infinity();
        for (index_t j = 0; j < vocab; ++j) top = std::max(top, row[j]);
        double sum = 0.0;
        for (index_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(row[j] - top));
        const double log_sum = static_cast<double>(top) + std::log(sum);
        index_t target = tokens[static_cast<std::size_t>(n + 1)];
        if (dx && options.labels == label_mode::sampled) {
          double u = std::uniform_real_distribution<double>(0.0, sum)(engine);
          target = vocab - 1;
          for (index_t j = 0; j < vocab; ++j) {
            u -= std::exp(static_cast<double>(row[j] - top));
            if (u <= 0.0) {
              target = j;
              break;
            }
          }
        }
        const double token_loss = log_sum - static_cast<double>(row[target]);
        total += token_loss;
        if (sequence_sums) (*sequence_sums)[static_cast<std::size_t>(n / seq)] += token_loss;
        if (dx) {
          for (index_t j = 0; j < vocab; ++j)
            row[j] = static_cast<float>(std::exp(static_cast<double>(row[j]) - log_sum));
          row[target] -= 1.0f;
        }
      }
      if (dx) dhf.middleRows(n0, rows).noalias() = logits.topRows(rows) * classifier();
    }
    if (dx) {
      *dx = matrix::Zero(x.rows(), d);
      rms_norm_backward(x, model_->final_norm, rf, dhf, *dx);
    }
    (void)batch;
    return total;
  }

  // Hands one linear layer's input / output gradient / weight gradient to the hooks.
  void deliver(const hooks& h, index_t layer, linear_kind kind, const matrix& input, const matrix& grad,
               bool first_reader) {
    if (h.input && first_reader) {
      h.input(input_key(layer, kind),
              host_matrix_view<const float>(input.data(), input.rows(), input.cols()));
    }
    if (h.output_grad) {
      if (grad_scale_ == 1.0f) {
        h.output_grad(linear_name(layer, kind),
                      host_matrix_view<const float>(grad.data(), grad.rows(), grad.cols()));
      } else {
        const matrix scaled = grad * grad_scale_;
        h.output_grad(linear_name(layer, kind),
                      host_matrix_view<const float>(scaled.data(), scaled.rows(), scaled.cols()));
      }
    }
    if (h.weight_grad) {
      const matrix dw = (grad.transpose() * input) * weight_grad_scale_;
      h.weight_grad(linear_name(layer, kind), host_matrix_view<const float>(dw.data(), dw.rows(), dw.cols()));
    }
  }

  // dx: gradient of the summed loss at the block output on entry, at its input on return. A part
  // the block does not have (0 heads, FFN width 0) passes the gradient through unchanged.
  void block_backward(index_t layer, block_cache& c, matrix& dx, index_t batch, index_t seq, const hooks& h) {
    const config& cfg = model_->cfg;
    const block_shape shape = cfg.block(layer);
    const block_weights& b = model_->blocks[static_cast<std::size_t>(layer)];
    const index_t d = cfg.dim;
    const index_t hd = cfg.head_dim();
    const index_t qd = shape.n_heads * hd;
    const index_t kv = shape.n_kv_heads * hd;
    const index_t hidden = shape.hidden_dim;

    // MLP: x3 = x2 + down(silu(gate) * up).
    matrix dx2 = dx;
    if (hidden > 0) {
      const matrix& df = dx;
      deliver(h, layer, linear_kind::ffn_down, c.s, df, true);
      const matrix ds = df * weight(b.w_down, d, hidden);
      matrix dgate(ds.rows(), hidden);
      matrix dup(ds.rows(), hidden);
      for (index_t n = 0; n < ds.rows(); ++n) {
        for (index_t j = 0; j < hidden; ++j) {
          const float z = c.gate(n, j);
          const float sigma = 1.0f / (1.0f + std::exp(-z));
          dup(n, j) = ds(n, j) * z * sigma;
          dgate(n, j) = ds(n, j) * c.up(n, j) * sigma * (1.0f + z * (1.0f - sigma));
        }
      }
      deliver(h, layer, linear_kind::ffn_gate, c.h2, dgate, true);
      deliver(h, layer, linear_kind::ffn_up, c.h2, dup, false);
      matrix dh2 = dgate * weight(b.w_gate, hidden, d);
      dh2.noalias() += dup * weight(b.w_up, hidden, d);
      rms_norm_backward(c.x2, b.ffn_norm, c.r2, dh2, dx2);
    }
    if (shape.n_heads == 0) {
      dx = std::move(dx2);
      return;
    }

    // Attention: x2 = x + wo(attention(rope(q), rope(k), v)).
    const index_t group = shape.n_heads / shape.n_kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    deliver(h, layer, linear_kind::attn_output, c.o, dx2, true);
    const matrix dout = dx2 * weight(b.wo, d, qd);
    matrix dq = matrix::Zero(c.q.rows(), qd);
    matrix dk = matrix::Zero(c.k.rows(), kv);
    matrix dv = matrix::Zero(c.v.rows(), kv);
    matrix dp(seq, seq);
    for (index_t s = 0; s < batch; ++s) {
      for (index_t head = 0; head < shape.n_heads; ++head) {
        const index_t kv_head = head / group;
        const matrix& p = c.probs[static_cast<std::size_t>(s * shape.n_heads + head)];
        const auto dout_h = dout.block(s * seq, head * hd, seq, hd);
        dp.noalias() = dout_h * c.v.block(s * seq, kv_head * hd, seq, hd).transpose();
        dv.block(s * seq, kv_head * hd, seq, hd).noalias() += p.transpose() * dout_h;
        for (index_t i = 0; i < seq; ++i) {
          float dot = 0.0f;
          for (index_t j = 0; j <= i; ++j) dot += dp(i, j) * p(i, j);
          for (index_t j = 0; j <= i; ++j) dp(i, j) = p(i, j) * (dp(i, j) - dot) * scale;
          for (index_t j = i + 1; j < seq; ++j) dp(i, j) = 0.0f;
        }
        dq.block(s * seq, head * hd, seq, hd).noalias() = dp * c.k.block(s * seq, kv_head * hd, seq, hd);
        dk.block(s * seq, kv_head * hd, seq, hd).noalias() +=
            dp.transpose() * c.q.block(s * seq, head * hd, seq, hd);
      }
    }
    rope(dq, seq, -1.0f);
    rope(dk, seq, -1.0f);
    deliver(h, layer, linear_kind::attn_q, c.h1, dq, true);
    deliver(h, layer, linear_kind::attn_k, c.h1, dk, false);
    deliver(h, layer, linear_kind::attn_v, c.h1, dv, false);
    matrix dh1 = dq * weight(b.wq, qd, d);
    dh1.noalias() += dk * weight(b.wk, kv, d);
    dh1.noalias() += dv * weight(b.wv, kv, d);
    rms_norm_backward(c.x, b.attn_norm, c.r1, dh1, dx2);
    dx = std::move(dx2);
  }

  const model* model_;  // not owned: pruning changes the weights in place
  mutable std::vector<float> cos_;
  mutable std::vector<float> sin_;
  float grad_scale_ = 1.0f;
  float weight_grad_scale_ = 1.0f;
};

}  // namespace surgeon::llama
