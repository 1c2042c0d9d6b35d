// The Llama runtime's forward pass with input hooks, and the pruning adapter's choice of it for
// calibrations that need no gradient, on stories260K: the forward pass hands over exactly the
// layer inputs of the backward pass, stops early when asked, and pruning through the adapter is
// bit-identical to pruning through a reference adapter that always runs the backward pass.
#include <surgeon/adapter.hpp>
#include <surgeon/io/llama2c.hpp>
#include <surgeon/prune.hpp>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "llama/llama2c_model.hpp"
#include "llama/prune_adapter.hpp"
#include "llama/runtime.hpp"
#include "support/catch.hpp"
#include "support/skip.hpp"

namespace {

using surgeon::index_t;

// The stories260K checkpoint under SURGEON_SHARED_DIR, or "" when it is absent.
std::string stories_path() {
  const char* shared = std::getenv("SURGEON_SHARED_DIR");
  const std::string path =
      shared ? std::string(shared) + "/models/stories260K/stories260K.bin" : std::string();
  return !path.empty() && std::filesystem::exists(path) ? path : std::string();
}

surgeon::llama::model load(const std::string& path) {
  return surgeon::llama::from_llama2c(surgeon::io::read_llama2c_checkpoint(path));
}

std::vector<std::int32_t> random_tokens(std::size_t count, index_t vocab, unsigned seed) {
  std::mt19937 engine(seed);
  std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(vocab - 1));
  std::vector<std::int32_t> tokens(count);
  for (auto& t : tokens) t = pick(engine);
  return tokens;
}

using capture = std::map<std::string, std::vector<std::vector<float>>>;

surgeon::llama::hooks capturing_inputs(capture& inputs) {
  surgeon::llama::hooks h;
  h.input = [&inputs](const std::string& key, surgeon::host_matrix_view<const float> x) {
    inputs[key].emplace_back(x.data(), x.data() + x.size());
  };
  return h;
}

// The adapter's calibration as it was before the forward-only path: always the backward pass,
// over the same windows, with the same batches.
struct backward_only_calibration {
  surgeon::llama::runtime* runtime;
  const std::vector<std::int32_t>* tokens;
  surgeon::llama::calibration_options options;
  int passes = 0;

  void operator()(surgeon::calibration_sink& sink, int shot) {
    ++passes;
    // Shot t reads the windows of seed + t − 1 when reseeding (the first shot those of seed).
    const std::uint64_t seed =
        options.seed + (options.reseed_per_shot && shot > 1 ? static_cast<std::uint64_t>(shot - 1) : 0u);
    const std::vector<index_t> offsets = surgeon::llama::calibration_offsets(
        static_cast<index_t>(tokens->size()), options.seqlen, options.nsamples, seed);
    surgeon::llama::hooks h;
    h.input = [&sink](const std::string& key, surgeon::host_matrix_view<const float> x) {
      sink.input(key, x);
    };
    h.output_grad = [&sink](const std::string& name, surgeon::host_matrix_view<const float> gy) {
      sink.output_grad(name, gy);
    };
    std::vector<std::int32_t> batch;
    for (index_t first = 0; first < options.nsamples; first += options.batch) {
      const index_t count = std::min(options.batch, options.nsamples - first);
      batch.clear();
      for (index_t k = first; k < first + count; ++k) {
        const auto begin = tokens->begin() + offsets[static_cast<std::size_t>(k)];
        batch.insert(batch.end(), begin, begin + options.seqlen);
      }
      surgeon::llama::backward_options b = options.backward;
      b.seed = options.backward.seed + static_cast<std::uint64_t>(first);
      runtime->backward(batch, count, options.seqlen, h, b);
    }
  }
};

// Whether every linear layer of `a` equals that of `b` (the norms are never pruned).
bool same_linear_weights(const surgeon::llama::model& a, const surgeon::llama::model& b) {
  for (std::size_t l = 0; l < a.blocks.size(); ++l) {
    for (const surgeon::llama::block_tensor& t : surgeon::llama::block_tensors) {
      if (t.kind && a.blocks[l].*t.weights != b.blocks[l].*t.weights) return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("runtime::forward hands every layer input over exactly as runtime::backward does",
          "[llama][model]") {
  const std::string path = stories_path();
  if (path.empty()) SURGEON_SKIP("no stories260K (SURGEON_SHARED_DIR)");
  const surgeon::llama::model model = load(path);
  surgeon::llama::runtime runtime(model);
  const index_t batch = 3;
  const index_t seq = 32;
  const std::vector<std::int32_t> tokens =
      random_tokens(static_cast<std::size_t>(batch * seq), model.cfg.vocab_size, 5);
  const index_t layers = model.cfg.n_layers;

  capture from_forward;
  const double loss = runtime.forward(tokens, batch, seq, capturing_inputs(from_forward));
  capture from_backward;
  runtime.backward(tokens, batch, seq, capturing_inputs(from_backward));

  REQUIRE(from_forward.size() == static_cast<std::size_t>(4 * layers));
  REQUIRE(from_backward.size() == from_forward.size());
  for (const auto& [key, batches] : from_forward) {
    CAPTURE(key);
    REQUIRE(batches.size() == 1);  // once per key and block, even for keys that q/k/v share
    REQUIRE(from_backward.count(key) == 1);
    CHECK(batches == from_backward.at(key));  // bit for bit
  }
  CHECK(loss == Approx(runtime.loss(tokens, batch, seq)).epsilon(1e-12));

  SECTION("last_layer stops after that block") {
    capture early;
    const double none = runtime.forward(tokens, batch, seq, capturing_inputs(early), 1);
    CHECK(none == 0.0);
    CHECK(early.size() == 8);  // blocks 0 and 1, four input keys each
    for (const auto& [key, batches] : early) {
      CAPTURE(key);
      CHECK((key.rfind("blk.0.", 0) == 0 || key.rfind("blk.1.", 0) == 0));
      CHECK(batches == from_forward.at(key));
    }
  }

  SECTION("stop_after stops inside the last block right after that input") {
    using surgeon::llama::linear_kind;
    // The input keys of a block in delivery order, and how many of them each kind's stop delivers.
    const std::vector<std::string> suffixes = {"attn_in", "attn_output_in", "ffn_in", "ffn_down_in"};
    const std::vector<std::pair<linear_kind, std::size_t>> stops = {
        {linear_kind::attn_q, 1},      {linear_kind::attn_k, 1},   {linear_kind::attn_v, 1},
        {linear_kind::attn_output, 2}, {linear_kind::ffn_gate, 3}, {linear_kind::ffn_up, 3},
        {linear_kind::ffn_down, 4}};
    const auto expect_prefix_of_block = [&](const capture& got, index_t block, std::size_t delivered) {
      const std::size_t expected_keys = 4 * static_cast<std::size_t>(block) + delivered;
      CHECK(got.size() == expected_keys);
      for (index_t l = 0; l <= block; ++l) {
        for (std::size_t k = 0; k < suffixes.size(); ++k) {
          const std::string key = "blk." + std::to_string(l) + "." + suffixes[k];
          CAPTURE(key);
          const bool wanted = l < block || k < delivered;
          REQUIRE(got.count(key) == (wanted ? 1u : 0u));
          if (wanted) CHECK(got.at(key) == from_forward.at(key));  // bit for bit
        }
      }
    };
    for (const auto& [kind, delivered] : stops) {
      CAPTURE(static_cast<int>(kind));
      capture early;
      CHECK(runtime.forward(tokens, batch, seq, capturing_inputs(early), 1, kind) == 0.0);
      expect_prefix_of_block(early, 1, delivered);
      // Without last_layer the stop is in the last block, and the head is skipped (no loss).
      capture last;
      CHECK(runtime.forward(tokens, batch, seq, capturing_inputs(last), -1, kind) == 0.0);
      expect_prefix_of_block(last, layers - 1, delivered);
      // forward_blocks from the embeddings: blocks 0..1, stopping in block 1.
      capture resumed;
      surgeon::llama::runtime::matrix x = runtime.embeddings(tokens, batch, seq);
      runtime.forward_blocks(x, batch, seq, 0, 1, capturing_inputs(resumed), kind);
      expect_prefix_of_block(resumed, 1, delivered);
    }
  }

  SECTION("gradient hooks and bad blocks are refused") {
    surgeon::llama::hooks with_grad = capturing_inputs(from_forward);
    with_grad.output_grad = [](const std::string&, surgeon::host_matrix_view<const float>) {};
    CHECK_THROWS_AS(runtime.forward(tokens, batch, seq, with_grad), surgeon::logic_error);
    surgeon::llama::hooks with_weight_grad;
    with_weight_grad.weight_grad = [](const std::string&, surgeon::host_matrix_view<const float>) {};
    CHECK_THROWS_AS(runtime.forward(tokens, batch, seq, with_weight_grad), surgeon::logic_error);
    CHECK_THROWS_AS(runtime.forward(tokens, batch, seq, {}, layers), surgeon::logic_error);
    CHECK_THROWS_AS(runtime.forward(tokens, batch, seq, {}, -2), surgeon::logic_error);
  }
}

TEST_CASE("prune_adapter calibrates without a backward pass exactly when no gradient is wanted",
          "[llama][model]") {
  const std::string path = stories_path();
  if (path.empty()) SURGEON_SKIP("no stories260K (SURGEON_SHARED_DIR)");
  const surgeon::llama::model original = load(path);
  const std::vector<std::int32_t> tokens = random_tokens(3000, original.cfg.vocab_size, 9);
  surgeon::llama::calibration_options calibration;
  calibration.nsamples = 6;
  calibration.seqlen = 48;
  calibration.batch = 4;  // two batches, the second partial
  calibration.seed = 3;
  surgeon::llama::evaluation_options evaluation;
  evaluation.when = surgeon::llama::evaluate_when::never;

  // Prunes a copy of the model through the adapter, or through the backward-only reference.
  const std::vector<std::int32_t> no_evaluation;
  surgeon::llama::calibration_counts work;
  const auto prune_with = [&](bool reference, surgeon::prune_options options) {
    surgeon::llama::model m = original;
    surgeon::llama::runtime runtime(m);
    surgeon::llama::prune_adapter adapter(m, runtime, tokens, no_evaluation, calibration, evaluation);
    if (!reference) {
      surgeon::prune(adapter, options);
      work = adapter.calibration_work();
    } else {
      backward_only_calibration calibrate{&runtime, &tokens, calibration};
      surgeon::any_adapter erased(
          [&adapter] { return adapter.matrices(); },
          [&calibrate](surgeon::calibration_sink& sink, int shot) { calibrate(sink, shot); });
      surgeon::prune(erased, options);
    }
    return m;
  };

  surgeon::prune_options options;
  options.shots = 2;
  options.sparsity = 0.5;
  for (const surgeon::method how :
       {surgeon::method::wanda, surgeon::method::lobd, surgeon::method::sparsegpt, surgeon::method::kobd}) {
    CAPTURE(surgeon::to_string(how));
    options.how = how;
    options.group_size = 0;
    const bool gradients = how == surgeon::method::kobd;
    const index_t layers = original.cfg.n_layers;
    const surgeon::llama::model expected = prune_with(true, options);
    const surgeon::llama::model pruned = prune_with(false, options);
    CHECK(same_linear_weights(pruned, expected));
    CHECK(!same_linear_weights(pruned, original));
    // One pass per shot, two batches each: forward alone unless gradients are wanted.
    CHECK(work.passes == 2);
    CHECK(work.forward_batches == (gradients ? 0 : 4));
    CHECK(work.backward_batches == (gradients ? 4 : 0));
    CHECK(work.blocks == 4 * layers);
    // Groups of 5 of the 7 matrices per block: the forward-only passes of a group stop after its
    // last block, and still feed every matrix of the group (the driver refuses a pass that misses
    // one). Masks come from costs of the unchanged model, so the weights equal the reference's.
    options.group_size = 5;
    CHECK(same_linear_weights(prune_with(false, options), prune_with(true, options)));
    const auto groups = static_cast<index_t>((7 * layers + 4) / 5);
    const index_t passes = 2 * groups;  // SparseGPT too: one pass per group and shot
    CHECK(work.passes == passes);
    if (!gradients) {
      // Group g (0-based) runs from block ⌊5g / 7⌋ to ⌊(5g + 4) / 7⌋. A group that wants no block
      // 0 starts from the residual stream the previous such pass kept at its first block when
      // that is at or before its own (the weights before it are unchanged within a shot), else
      // from the embeddings; per batch (2) over both shots:
      index_t blocks = 0;
      index_t from_embeddings = 0;
      index_t cached = 0;  // the block of the kept stream (0: none)
      for (int shot = 0; shot < 2; ++shot) {
        for (index_t g = 0; g < groups; ++g) {
          const index_t first = 5 * g / 7;
          const index_t last = std::min(layers - 1, (5 * g + 4) / 7);
          from_embeddings += last + 1;
          if (first == 0) {
            blocks += last + 1;
            continue;
          }
          blocks += last + 1 - (cached > 0 && cached <= first ? cached : 0);
          cached = first;
        }
      }
      CHECK(work.blocks == 2 * blocks);
      CHECK(work.blocks < 2 * from_embeddings);
      CHECK(work.resumed_batches > 0);
      // Without resuming, every pass starts from the embeddings.
      calibration.resume_forward = false;
      CHECK(same_linear_weights(prune_with(false, options), prune_with(true, options)));
      CHECK(work.blocks == 2 * from_embeddings);
      CHECK(work.resumed_batches == 0);
      calibration.resume_forward = true;
    }
  }
}

TEST_CASE("prune_adapter: fresh windows per shot from the second shot on; one shot never depends on it",
          "[llama][model]") {
  const std::string path = stories_path();
  if (path.empty()) SURGEON_SKIP("no stories260K (SURGEON_SHARED_DIR)");
  const surgeon::llama::model original = load(path);
  const std::vector<std::int32_t> tokens = random_tokens(3000, original.cfg.vocab_size, 9);
  surgeon::llama::evaluation_options evaluation;
  evaluation.when = surgeon::llama::evaluate_when::never;
  const std::vector<std::int32_t> no_evaluation;
  const auto prune_with = [&](bool reference, bool reseed, int shots) {
    surgeon::llama::calibration_options calibration;
    calibration.nsamples = 4;
    calibration.seqlen = 48;
    calibration.seed = 3;
    calibration.reseed_per_shot = reseed;
    surgeon::prune_options options;
    options.how = surgeon::method::kobd;
    options.sparsity = 0.5;
    options.shots = shots;
    surgeon::llama::model m = original;
    surgeon::llama::runtime runtime(m);
    surgeon::llama::prune_adapter adapter(m, runtime, tokens, no_evaluation, calibration, evaluation);
    if (!reference) {
      surgeon::prune(adapter, options);
    } else {
      backward_only_calibration calibrate{&runtime, &tokens, calibration};
      surgeon::any_adapter erased(
          [&adapter] { return adapter.matrices(); },
          [&calibrate](surgeon::calibration_sink& sink, int shot) { calibrate(sink, shot); });
      surgeon::prune(erased, options);
    }
    return m.blocks[0].w_up;
  };
  CHECK(prune_with(false, true, 1) == prune_with(false, false, 1));
  CHECK(prune_with(false, true, 2) == prune_with(true, true, 2));
  CHECK(prune_with(false, false, 2) == prune_with(true, false, 2));
  CHECK(prune_with(false, true, 2) != prune_with(false, false, 2));
}

TEST_CASE("prune_adapter: sequential pruning resumes each pass from the kept residual stream, bit for bit",
          "[llama][model][sequential]") {
  const std::string path = stories_path();
  if (path.empty()) SURGEON_SKIP("no stories260K (SURGEON_SHARED_DIR)");
  const surgeon::llama::model original = load(path);
  const std::vector<std::int32_t> tokens = random_tokens(3000, original.cfg.vocab_size, 4);
  surgeon::llama::calibration_options calibration;
  calibration.nsamples = 6;
  calibration.seqlen = 48;
  calibration.batch = 4;
  calibration.seed = 5;
  surgeon::llama::evaluation_options evaluation;
  evaluation.when = surgeon::llama::evaluate_when::never;
  const std::vector<std::int32_t> no_evaluation;
  const index_t layers = original.cfg.n_layers;

  // `disturb`: before the given calibration pass (1-based), change a norm weight of block 0, which
  // the kept stream was computed with: the adapter must notice and start from the embeddings.
  const auto prune_with = [&](bool reference, const surgeon::prune_options& options, int disturb,
                              surgeon::llama::calibration_counts* work) {
    surgeon::llama::model m = original;
    surgeon::llama::runtime runtime(m);
    surgeon::llama::prune_adapter adapter(m, runtime, tokens, no_evaluation, calibration, evaluation);
    backward_only_calibration slow{&runtime, &tokens, calibration};
    int passes = 0;
    surgeon::any_adapter erased([&adapter] { return adapter.matrices(); },
                                [&](surgeon::calibration_sink& sink, int shot) {
                                  if (++passes == disturb) m.blocks[0].ffn_norm[3] *= 0.5f;
                                  if (reference) {
                                    slow(sink, shot);
                                  } else {
                                    adapter.calibrate(sink, shot);
                                  }
                                });
    surgeon::prune(erased, options);
    if (work) *work = adapter.calibration_work();
    return m;
  };

  for (const surgeon::method how : {surgeon::method::sparsegpt, surgeon::method::wanda}) {
    CAPTURE(surgeon::to_string(how));
    surgeon::prune_options options;
    options.how = how;
    options.sparsity = 0.5;
    options.shots = 2;
    options.sequential = true;
    surgeon::llama::calibration_counts work;
    const surgeon::llama::model pruned = prune_with(false, options, 0, &work);
    CHECK(same_linear_weights(pruned, prune_with(true, options, 0, nullptr)));
    // Four groups per block (q,k,v | o | gate,up | down), one pass each per shot. Block 0's run
    // from the embeddings (1 block each); the first group of block l > 0 resumes at block l − 1
    // (2 blocks), the other three at block l (1 block): per batch and shot 4 + 5·(layers − 1).
    CHECK(work.passes == 2 * 4 * layers);
    CHECK(work.forward_batches == 2 * 2 * 4 * layers);
    CHECK(work.blocks == 2 * 2 * (4 + 5 * (layers - 1)));
    CHECK(work.resumed_batches == 2 * 2 * (4 * (layers - 1) - 1));  // block 1's first group: none kept yet
    // A norm weight of block 0 changed behind the adapter's back before pass 9 (block 2's first group,
    // which would resume at block 1): the stream is recomputed, and the result still matches.
    const surgeon::llama::model disturbed = prune_with(false, options, 9, nullptr);
    CHECK(same_linear_weights(disturbed, prune_with(true, options, 9, nullptr)));
    CHECK(!same_linear_weights(disturbed, pruned));
  }
}

namespace {

// Whether `count` consecutive rows (or columns) from `first` of the [rows, cols] array are all 0.
bool lines_zero(const std::vector<float>& w, index_t rows, index_t cols, index_t first, index_t count,
                bool columns) {
  for (index_t line = first; line < first + count; ++line) {
    for (index_t t = 0; t < (columns ? rows : cols); ++t) {
      const index_t k = columns ? t * cols + line : line * cols + t;
      if (w[static_cast<std::size_t>(k)] != 0.0f) return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("prune_adapter: neurons and heads are removed whole, key/value heads with their query heads",
          "[llama][model][units]") {
  const std::string path = stories_path();
  if (path.empty()) SURGEON_SKIP("no stories260K (SURGEON_SHARED_DIR)");
  surgeon::llama::model m = load(path);
  const surgeon::llama::config cfg = m.cfg;  // 5 blocks, 8 heads, 4 kv heads, FFN 172
  const std::vector<std::int32_t> tokens = random_tokens(3000, cfg.vocab_size, 4);
  surgeon::llama::runtime runtime(m);
  surgeon::llama::calibration_options calibration;
  calibration.nsamples = 4;
  calibration.seqlen = 48;
  surgeon::llama::evaluation_options evaluation;
  evaluation.when = surgeon::llama::evaluate_when::never;
  const std::vector<std::int32_t> no_evaluation;
  surgeon::llama::prune_adapter adapter(m, runtime, tokens, no_evaluation, calibration, evaluation);

  const surgeon::coupled_units units = adapter.units();
  REQUIRE(units.units.size() == static_cast<std::size_t>(cfg.n_layers * (cfg.hidden_dim + cfg.n_heads)));
  REQUIRE(units.followers.size() == static_cast<std::size_t>(cfg.n_layers * cfg.n_kv_heads));
  CHECK(units.units.front().name == "blk.0.ffn.0");
  CHECK(units.followers.front().unit.name == "blk.0.kv.0");
  // KV head g of a block follows query heads 2g and 2g + 1 (8 heads over 4 kv heads).
  const std::vector<surgeon::prunable_matrix> matrices = adapter.matrices();
  for (const surgeon::follower_unit& f : units.followers) {
    REQUIRE(f.leaders.size() == 2);
    CHECK(f.leaders[1] == f.leaders[0] + 1);
    const std::string& leader = units.units[f.leaders[0]].name;
    CHECK(leader.find(".head.") != std::string::npos);
  }

  surgeon::prune_options options;
  options.how = surgeon::method::llm_surgeon;
  options.what = surgeon::structure::coupled;
  options.sparsity = 0.3;
  options.shots = 2;
  const auto reports = surgeon::prune(adapter, options);
  CHECK(reports.back().achieved_sparsity <= 0.3 + 1e-12);
  CHECK(reports.back().achieved_sparsity > 0.25);
  const index_t d = cfg.dim;
  const index_t hd = cfg.head_dim();
  index_t neurons = 0;
  index_t heads = 0;
  for (index_t l = 0; l < cfg.n_layers; ++l) {
    const surgeon::llama::block_weights& b = m.blocks[static_cast<std::size_t>(l)];
    const index_t f = cfg.hidden_dim;
    for (index_t i = 0; i < f; ++i) {
      const bool gate = lines_zero(b.w_gate, f, d, i, 1, false);
      CHECK(gate == lines_zero(b.w_up, f, d, i, 1, false));
      CHECK(gate == lines_zero(b.w_down, d, f, i, 1, true));
      neurons += gate ? 1 : 0;
    }
    std::vector<bool> head_gone;
    for (index_t h = 0; h < cfg.n_heads; ++h) {
      const bool q = lines_zero(b.wq, cfg.n_heads * hd, d, h * hd, hd, false);
      CHECK(q == lines_zero(b.wo, d, cfg.n_heads * hd, h * hd, hd, true));
      head_gone.push_back(q);
      heads += q ? 1 : 0;
    }
    for (index_t g = 0; g < cfg.n_kv_heads; ++g) {
      const bool kv = lines_zero(b.wk, cfg.n_kv_heads * hd, d, g * hd, hd, false);
      CHECK(kv == lines_zero(b.wv, cfg.n_kv_heads * hd, d, g * hd, hd, false));
      CHECK(kv ==
            (head_gone[static_cast<std::size_t>(2 * g)] && head_gone[static_cast<std::size_t>(2 * g + 1)]));
    }
  }
  CHECK(neurons > 0);  // heads may all stay: LLM Surgeon costs a head by its head_dim columns of o
}
