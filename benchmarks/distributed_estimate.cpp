// What a run over several processes needs per process (METHOD.md §10, docs/BENCHMARKS.md), on paper,
// from the driver's own estimate functions (driver/memory.hpp) and owner plan
// (driver/distribution.hpp): Llama-2-7B and Llama-2-70B shapes, LLM Surgeon, unstructured, at 1,
// 8 and 64 processes. Per process: the working memory (the largest over the processes), the bytes
// its factor sums send per shot (the lower triangle of every accumulator of the pass, double), and
// the weight bytes it receives from the owners per shot (float). No model is read.
//
//   distributed-estimate [--group-size G]
#include <surgeon/driver.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

using surgeon::index_t;

namespace {

struct llama_shape {
  const char* name;
  index_t layers, dim, hidden, kv_dim;
};

// The prunable matrices of a Llama of this shape (their views point at one float: only the
// shapes are read).
std::vector<surgeon::prunable_matrix> matrices_of(const llama_shape& s, float* nowhere) {
  std::vector<surgeon::prunable_matrix> result;
  const auto add = [&](const std::string& name, const std::string& input, index_t rows, index_t cols) {
    result.push_back({name, input, surgeon::host_matrix_view<float>(nowhere, rows, cols)});
  };
  for (index_t l = 0; l < s.layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_q", b + "attn_in", s.dim, s.dim);
    add(b + "attn_k", b + "attn_in", s.kv_dim, s.dim);
    add(b + "attn_v", b + "attn_in", s.kv_dim, s.dim);
    add(b + "attn_output", b + "attn_out_in", s.dim, s.dim);
    add(b + "ffn_gate", b + "ffn_in", s.hidden, s.dim);
    add(b + "ffn_up", b + "ffn_in", s.hidden, s.dim);
    add(b + "ffn_down", b + "ffn_down_in", s.dim, s.hidden);
  }
  return result;
}

double gb(double bytes) {
  return bytes / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int group_size = 0;
  if (argc == 3 && std::string(argv[1]) == "--group-size") group_size = std::atoi(argv[2]);
  float nowhere = 0.0f;
  const std::vector<llama_shape> shapes{{"Llama-2-7B", 32, 4096, 11008, 4096},
                                        {"Llama-2-70B", 80, 8192, 28672, 1024}};
  surgeon::prune_options options;
  options.how = surgeon::method::llm_surgeon;
  options.what = surgeon::structure::unstructured;
  fmt::print("LLM Surgeon, unstructured, one shot, group size {} ({})\n\n", group_size,
             group_size == 0 ? "every matrix in one pass" : "matrices per calibration pass");
  fmt::print(
      "| model | processes | working memory per process | of which accumulators | factor sums sent per "
      "process per shot | weights received per process per shot |\n");
  fmt::print("|---|---|---|---|---|---|\n");
  for (const llama_shape& s : shapes) {
    const std::vector<surgeon::prunable_matrix> matrices = matrices_of(s, &nowhere);
    double weights = 0.0;
    for (const auto& m : matrices) weights += static_cast<double>(m.weight.size());
    // The lower triangles of every accumulator of one pass (each process sends its partial sums).
    double sums = 0.0;
    std::set<std::string> inputs;
    for (const auto& m : matrices) {
      const auto lower = [](index_t n) { return static_cast<double>(n) * static_cast<double>(n + 1) / 2.0; };
      if (inputs.insert(m.input_key).second) sums += lower(m.weight.cols());
      sums += lower(m.weight.rows());
    }
    const double accumulators =
        static_cast<double>(surgeon::estimate_accumulator_bytes(matrices, options, group_size));
    for (const int processes : {1, 8, 64}) {
      const std::vector<int> owners = surgeon::plan_owners(matrices, processes);
      double largest = 0.0;
      for (int r = 0; r < processes; ++r) {
        largest = std::max(largest, static_cast<double>(surgeon::estimate_process_bytes(
                                        matrices, options, group_size, owners, r)));
      }
      const double sent = processes == 1 ? 0.0 : sums * 8.0;
      const double received = processes == 1 ? 0.0 : weights * 4.0 * (processes - 1) / processes;
      fmt::print("| {} | {} | {:.1f} GB | {:.1f} GB | {:.1f} GB | {:.1f} GB |\n", s.name, processes,
                 gb(largest), gb(accumulators), gb(sent), gb(received));
    }
  }
  return 0;
}
