// 02_prune_model: a whole model pruned by the driver through an adapter of its own. The model is a
// small classifier, logits = W2 · tanh(W1 · x), on correlated inputs; the adapter tells the driver
// which matrices to prune, feeds it each layer's inputs and output gradients from its own forward
// and backward pass, and scores the model after each shot. Each method prunes half of the weights
// of both layers under one global threshold; the score is the mean KL divergence of the pruned
// model's predictions from the dense model's on held-out inputs (0 = unchanged). Exits 1 unless
// LLM Surgeon beats magnitude and Wanda.
#include <surgeon/prune.hpp>

#include <fmt/format.h>

#include <Eigen/Dense>

#include <cmath>
#include <random>
#include <vector>

namespace {

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using surgeon::index_t;

constexpr index_t inputs = 48, hidden = 96, classes = 10, tokens = 2048, latent = 12;

// Row-wise softmax of logits [tokens, classes].
matrix softmax(const matrix& logits) {
  matrix p = (logits.colwise() - logits.rowwise().maxCoeff()).array().exp().matrix();
  p.array().colwise() /= p.rowwise().sum().array();
  return p;
}

// The model: its two weight matrices, row-major [out, in], which the driver prunes in place.
struct classifier {
  matrix w1{hidden, inputs};
  matrix w2{classes, hidden};
  matrix probabilities(const matrix& x) const {
    return softmax((x * w1.transpose()).array().tanh().matrix() * w2.transpose());
  }
};

// What the driver needs from a model: its prunable matrices, a calibration pass, and a score.
class classifier_adapter {
 public:
  classifier_adapter(classifier& model, const matrix& calibration, const matrix& held_out)
      : model_(model),
        calibration_(calibration),
        held_out_(held_out),
        reference_(model.probabilities(held_out)) {}

  // fc1 reads the model's input x, fc2 the hidden activations h: different input keys, so each has
  // its own A factor (layers that read one input would share a key, as q, k and v do).
  std::vector<surgeon::prunable_matrix> matrices() {
    return {{"fc1", "x", surgeon::host_matrix_view<float>(model_.w1.data(), hidden, inputs)},
            {"fc2", "h", surgeon::host_matrix_view<float>(model_.w2.data(), classes, hidden)}};
  }

  // One pass over the calibration inputs: the layer inputs, and (when the method uses G) the
  // gradients of the cross-entropy at each layer's output, with labels drawn from the model's own
  // predictions (the Fisher's expectation, sampled; seeded by the shot, so runs repeat).
  void calibrate(surgeon::calibration_sink& sink, int shot) {
    const matrix& x = calibration_;
    const matrix h = (x * model_.w1.transpose()).array().tanh().matrix();
    sink.input("x", surgeon::host_matrix_view<const float>(x.data(), tokens, inputs));
    sink.input("h", surgeon::host_matrix_view<const float>(h.data(), tokens, hidden));
    if (!sink.wants_output_gradients()) return;  // Wanda, L-OBD, SparseGPT: a forward pass is all
    matrix g_logits = softmax(h * model_.w2.transpose());
    std::mt19937 rng(static_cast<unsigned>(1000 + shot));
    for (index_t t = 0; t < tokens; ++t) {
      std::discrete_distribution<int> label(g_logits.row(t).data(), g_logits.row(t).data() + classes);
      g_logits(t, label(rng)) -= 1.0f;  // ∂(−log p_label)/∂logits = p − onehot(label)
    }
    const matrix g_hidden = ((g_logits * model_.w2).array() * (1.0f - h.array().square())).matrix();
    sink.output_grad("fc2", surgeon::host_matrix_view<const float>(g_logits.data(), tokens, classes));
    sink.output_grad("fc1", surgeon::host_matrix_view<const float>(g_hidden.data(), tokens, hidden));
  }

  // Mean KL(dense ‖ pruned) over the held-out inputs after shot `shot`: lower is better, as the
  // driver expects. (The score is the same for every shot; an adapter may skip early shots.)
  double evaluate(int /*shot*/) {
    const matrix p = model_.probabilities(held_out_);
    return (reference_.array() * (reference_.array().log() - p.array().log())).sum() / tokens;
  }

 private:
  classifier& model_;
  const matrix& calibration_;
  const matrix& held_out_;
  matrix reference_;
};

// Inputs that live near a `latent`-dimensional subspace, as a language model's activations do.
matrix correlated_inputs(const matrix& mixing, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  matrix z(tokens, latent), noise(tokens, inputs);
  for (index_t k = 0; k < z.size(); ++k) z.data()[k] = normal(rng);
  for (index_t k = 0; k < noise.size(); ++k) noise.data()[k] = 0.1f * normal(rng);
  return z * mixing + noise;
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  classifier dense;
  for (index_t k = 0; k < dense.w1.size(); ++k) dense.w1.data()[k] = normal(rng) / std::sqrt(float(latent));
  for (index_t k = 0; k < dense.w2.size(); ++k)
    dense.w2.data()[k] = 2.0f * normal(rng) / std::sqrt(float(hidden));
  matrix mixing(latent, inputs);
  for (index_t k = 0; k < mixing.size(); ++k) mixing.data()[k] = normal(rng);
  const matrix calibration = correlated_inputs(mixing, rng);
  const matrix held_out = correlated_inputs(mixing, rng);

  surgeon::cpu::context cpu;  // a surgeon::cuda::context runs the same call on a GPU
  std::vector<double> scores;
  for (const surgeon::method how : {surgeon::method::magnitude, surgeon::method::wanda, surgeon::method::kobd,
                                    surgeon::method::sparsegpt, surgeon::method::llm_surgeon}) {
    classifier model = dense;
    classifier_adapter adapter(model, calibration, held_out);
    surgeon::prune_options options;  // LLM Surgeon's defaults: whole-mask update, its damping
    options.how = how;
    options.what = surgeon::structure::unstructured;
    options.sparsity = 0.5;
    options.shots = 2;
    const std::vector<surgeon::shot_report> shots = prune(cpu, adapter, options);
    scores.push_back(shots.back().evaluation.value_or(0.0));
    fmt::print("{:<12} shots {}  density {:.3f}  KL(dense || pruned) {:.5f}\n", surgeon::to_string(how),
               shots.size(), 1.0 - shots.back().achieved_sparsity, scores.back());
  }
  if (!(scores[4] < scores[0] && scores[4] < scores[1])) {
    fmt::print("ordering: llm-surgeon does not beat magnitude and wanda\n");
    return 1;
  }
  fmt::print("ordering: llm-surgeon beats magnitude and wanda\n");
  return 0;
}
