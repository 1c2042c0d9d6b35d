// The pruning driver over several MPI processes (METHOD.md §10), run by ctest under
// `mpirun -np K` for K = 1, 2, 3: on every process the distributed session and a single-process
// session prune two copies of one synthetic model, and their masks (zero positions), weights and
// losses must agree for every method × structure; the group's weights must be the same on every
// process; the selections across processes must give the single-process masks, ties included; the
// factor sums of a split calibration must equal the whole pass's to 1e-12.
#define CATCH_CONFIG_RUNNER
#include <surgeon/driver/distribution.hpp>
#include <surgeon/kfac.hpp>
#include <surgeon/mpi/communicator.hpp>
#include <surgeon/prune.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "support/catch.hpp"

using surgeon::index_t;

namespace {

surgeon::mpi::communicator* world = nullptr;

// Row-major products of the synthetic model: c[T, n] = a[T, k] · bᵀ with b [n, k].
std::vector<float> times_transpose(const std::vector<float>& a, const std::vector<float>& b, index_t rows,
                                   index_t k, index_t n) {
  std::vector<float> c(static_cast<std::size_t>(rows * n), 0.0f);
  for (index_t t = 0; t < rows; ++t) {
    for (index_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (index_t i = 0; i < k; ++i)
        sum += static_cast<double>(a[static_cast<std::size_t>(t * k + i)]) *
               b[static_cast<std::size_t>(j * k + i)];
      c[static_cast<std::size_t>(t * n + j)] = static_cast<float>(sum);
    }
  }
  return c;
}
// c[T, k] = a[T, n] · b with b [n, k].
std::vector<float> times(const std::vector<float>& a, const std::vector<float>& b, index_t rows, index_t n,
                         index_t k) {
  std::vector<float> c(static_cast<std::size_t>(rows * k), 0.0f);
  for (index_t t = 0; t < rows; ++t) {
    for (index_t j = 0; j < k; ++j) {
      double sum = 0.0;
      for (index_t i = 0; i < n; ++i)
        sum += static_cast<double>(a[static_cast<std::size_t>(t * n + i)]) *
               b[static_cast<std::size_t>(i * k + j)];
      c[static_cast<std::size_t>(t * k + j)] = static_cast<float>(sum);
    }
  }
  return c;
}

std::vector<float> normal_values(std::size_t count, unsigned seed, float scale = 1.0f) {
  std::mt19937 engine(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(count);
  for (float& x : v) x = normal(engine);
  return v;
}

// A linear network x → h = x (W_up + W_gate)ᵀ → y = h W_downᵀ → z = y W_headᵀ, trained to map
// x to x Dᵀ: the loss ½‖z − x Dᵀ‖²/T per sequence. Calibration feeds each of its 7 sequences
// (10 tokens) with real gradients, its share only over several processes; up and gate read one
// input, and neuron i is row i of up and gate and column i of down (structure::coupled).
struct mlp_adapter {
  static constexpr index_t in = 16, mid = 24, out = 16, head = 8, tokens = 10, sequences = 7;
  std::vector<float> up, gate, down, proj, target_map;
  int fine_tunes = 0;

  mlp_adapter()
      : up(normal_values(mid * in, 1, 0.3f)),
        gate(normal_values(mid * in, 2, 0.3f)),
        down(normal_values(out * mid, 3, 0.3f)),
        proj(normal_values(head * out, 4, 0.3f)),
        target_map(normal_values(head * in, 5, 0.5f)) {}

  std::vector<surgeon::prunable_matrix> matrices() {
    return {{"up", "x", surgeon::host_matrix_view<float>(up.data(), mid, in)},
            {"gate", "x", surgeon::host_matrix_view<float>(gate.data(), mid, in)},
            {"down", "h", surgeon::host_matrix_view<float>(down.data(), out, mid)},
            {"proj", "y", surgeon::host_matrix_view<float>(proj.data(), head, out)}};
  }
  surgeon::coupled_units units() const {
    surgeon::coupled_units result;
    for (index_t i = 0; i < mid; ++i) {
      result.units.push_back({"neuron." + std::to_string(i),
                              {{0, surgeon::line_kind::row, i, 1, true},
                               {1, surgeon::line_kind::row, i, 1, true},
                               {2, surgeon::line_kind::column, i, 1}}});
    }
    return result;
  }

  // One sequence's forward and backward pass into `sink`; returns its loss.
  double pass(surgeon::calibration_sink& sink, index_t s) const {
    std::vector<float> x = normal_values(tokens * in, 100 + static_cast<unsigned>(s));
    for (index_t t = 0; t < tokens; ++t) {
      for (index_t j = 1; j < in; ++j)
        x[static_cast<std::size_t>(t * in + j)] += 0.5f * x[static_cast<std::size_t>(t * in)];
    }
    std::vector<float> both(up.size());
    for (std::size_t k = 0; k < both.size(); ++k) both[k] = up[k] + gate[k];
    const std::vector<float> h = times_transpose(x, both, tokens, in, mid);
    const std::vector<float> y = times_transpose(h, down, tokens, mid, out);
    const std::vector<float> z = times_transpose(y, proj, tokens, out, head);
    const std::vector<float> target = times_transpose(x, target_map, tokens, in, head);
    std::vector<float> gz(z.size());
    double loss = 0.0;
    for (std::size_t k = 0; k < z.size(); ++k) {
      const float r = z[k] - target[k];
      loss += 0.5 * static_cast<double>(r) * r / tokens;
      gz[k] = r / static_cast<float>(tokens);
    }
    const std::vector<float> gy = times(gz, proj, tokens, head, out);
    const std::vector<float> gh = times(gy, down, tokens, out, mid);
    const auto view = [](const std::vector<float>& v, index_t cols) {
      return surgeon::host_matrix_view<const float>(v.data(), static_cast<index_t>(v.size()) / cols, cols);
    };
    sink.input("x", view(x, in));
    sink.input("h", view(h, mid));
    sink.input("y", view(y, out));
    sink.output_grad("proj", view(gz, head));
    sink.output_grad("down", view(gy, out));
    sink.output_grad("up", view(gh, mid));
    sink.output_grad("gate", view(gh, mid));
    return loss;
  }
  void calibrate(surgeon::calibration_sink& sink, int /*shot*/) {
    const surgeon::data_share share = sink.share();
    for (index_t s = 0; s < sequences; ++s) {
      if (share.owns(s)) pass(sink, s);
    }
  }
  double fine_tune(surgeon::calibration_sink& sink, int /*shot*/, int step) {
    ++fine_tunes;
    return pass(sink, step % sequences);
  }
  double evaluate(int /*shot*/) const {
    // The loss over every sequence.
    double total = 0.0;
    for (index_t s = 0; s < sequences; ++s) total += loss_of(s);
    return total;
  }
  double loss_of(index_t s) const;
  std::vector<std::vector<float>*> weights() { return {&up, &gate, &down, &proj}; }
};

// A sink that accumulates nothing: evaluate's passes.
struct null_store final : surgeon::detail::factor_sink {
  bool contains(const surgeon::factor_key&) const override { return false; }
  void add(const surgeon::factor_key&, surgeon::host_matrix_view<const float>) override {}
};

}  // namespace

namespace surgeon {
// A friend of calibration_sink makes sinks outside the driver (as the driver itself does).
template <>
class basic_pruning_session<mlp_adapter, void> {
 public:
  static calibration_sink sink(detail::factor_sink& store, bool a, bool g, data_share share = {}) {
    return calibration_sink(store, a, g, share);
  }
};
}  // namespace surgeon

namespace {

using sink_maker = surgeon::basic_pruning_session<mlp_adapter, void>;

double mlp_adapter::loss_of(index_t s) const {
  null_store store;
  surgeon::calibration_sink sink = sink_maker::sink(store, false, false);
  return pass(sink, s);
}

struct config {
  surgeon::method how;
  surgeon::structure what;
  bool sequential = false;
  int group_size = 0;
  int first_order_steps = 0;
  surgeon::update_kind update = surgeon::update_kind::whole_mask;
};

std::string name_of(const config& c) {
  return std::string(surgeon::to_string(c.how)) + "/" + std::to_string(static_cast<int>(c.what)) +
         (c.sequential ? "/sequential" : "") + (c.group_size > 0 ? "/groups" : "") +
         (c.first_order_steps > 0 ? "/first-order" : "") +
         (c.update == surgeon::update_kind::chunked ? "/chunked" : "");
}

surgeon::prune_options options_of(const config& c) {
  surgeon::prune_options o;
  o.how = c.how;
  o.what = c.what;
  o.sparsity =
      c.what == surgeon::structure::n_m ? 0.5 : (c.what == surgeon::structure::unstructured ? 0.6 : 0.3);
  o.shots = 2;
  o.sequential = c.sequential;
  o.group_size = c.group_size;
  o.update = c.update;
  if (c.first_order_steps > 0) {
    o.first_order.steps = c.first_order_steps;
    o.first_order.final_steps = c.first_order_steps;
    o.first_order.rank = 2;
    o.first_order.learning_rate = 1e-2;
  }
  return o;
}

// A checksum of every weight's bits, to compare the processes' copies.
std::int64_t bits_of(mlp_adapter& m) {
  std::uint64_t h = 1469598103934665603ull;
  for (const std::vector<float>* w : m.weights()) {
    for (const float v : *w) {
      std::uint32_t b = 0;
      std::memcpy(&b, &v, sizeof b);
      h = (h ^ b) * 1099511628211ull;
    }
  }
  return static_cast<std::int64_t>(h >> 1);
}

}  // namespace

TEST_CASE("plan_owners: every process owns matrices, the largest first, the same on every process", "[mpi]") {
  mlp_adapter m;
  const std::vector<surgeon::prunable_matrix> matrices = m.matrices();
  for (int ranks = 1; ranks <= 5; ++ranks) {
    const std::vector<int> owner = surgeon::plan_owners(matrices, ranks);
    REQUIRE(owner.size() == matrices.size());
    for (const int r : owner) CHECK((r >= 0 && r < ranks));
    if (ranks <= static_cast<int>(matrices.size())) {
      for (int r = 0; r < ranks; ++r) CHECK(std::count(owner.begin(), owner.end(), r) >= 1);
    }
  }
  CHECK_THROWS_AS(surgeon::plan_owners(matrices, 0), surgeon::logic_error);
  // With groups, a group's matrices go to distinct processes while there are enough of them, and
  // the loads carry over: here up and gate (one input) on two processes, down and proj after them.
  const std::vector<std::vector<std::size_t>> groups = surgeon::sequential_groups(matrices);
  REQUIRE(groups.size() == 3);
  const std::vector<int> owner = surgeon::plan_owners(matrices, 2, groups);
  CHECK(owner[0] != owner[1]);
  CHECK(owner[2] != owner[3]);
  CHECK(surgeon::plan_owners(matrices, 2, groups) == owner);
  CHECK_THROWS_AS(surgeon::plan_owners(matrices, 2, {{0, 7}}), surgeon::logic_error);
}

TEST_CASE("memory over several processes: each process needs less, the group size is chosen per process",
          "[mpi]") {
  mlp_adapter m;
  const std::vector<surgeon::prunable_matrix> matrices = m.matrices();
  surgeon::prune_options options;
  options.how = surgeon::method::llm_surgeon;
  const std::size_t one = surgeon::estimate_working_bytes(matrices, options, 0);
  CHECK(surgeon::estimate_largest_process_bytes(matrices, options, 0, 1) == one);
  const std::size_t two = surgeon::estimate_largest_process_bytes(matrices, options, 0, 2);
  CHECK(two < one);
  // Every process holds a pass's accumulators: never below them.
  CHECK(two >= surgeon::estimate_accumulator_bytes(matrices, options, 0));
  // A budget that the whole shot at once fits per process over two processes but not in one.
  options.memory_budget = (one + two) / 2;
  CHECK(surgeon::choose_group_size(matrices, options, 2) == 0);
  CHECK(surgeon::choose_group_size(matrices, options, 1) > 0);
  const std::vector<int> owners = surgeon::plan_owners(matrices, 2);
  CHECK_THROWS_AS(surgeon::estimate_process_bytes(matrices, options, 0, {0}, 0), surgeon::logic_error);
  CHECK(surgeon::estimate_process_bytes(matrices, options, 0, owners, 0) <= two);
}

TEST_CASE("factor sums of a split calibration equal the whole pass's to 1e-12", "[mpi]") {
  surgeon::mpi::communicator& comm = *world;
  mlp_adapter m;
  // The whole pass on this process, and this process's share summed over the group.
  struct bank_store final : surgeon::detail::factor_sink {
    surgeon::cpu::context ctx;
    surgeon::factor_bank<double> bank;
    bool contains(const surgeon::factor_key& key) const override { return bank.contains(key.str()); }
    void add(const surgeon::factor_key& key, surgeon::host_matrix_view<const float> x) override {
      bank.add(ctx, key.str(), x);
    }
  };
  bank_store whole;
  bank_store split;
  for (bank_store* s : {&whole, &split}) {
    s->bank.define("a:x", 16);
    s->bank.define("a:h", 24);
    s->bank.define("g:up", 24);
  }
  surgeon::calibration_sink whole_sink = sink_maker::sink(whole, true, true);
  m.calibrate(whole_sink, 1);
  surgeon::calibration_sink split_sink = sink_maker::sink(split, true, true, comm.share());
  m.calibrate(split_sink, 1);
  for (const std::string key : {"a:x", "a:h", "g:up"}) {
    for (const bool everywhere : {true, false}) {
      surgeon::factor_accumulator<double> reduced = split.bank.at(key);
      reduced.combine_state([&](double* state, index_t n, std::int64_t& count) {
        surgeon::detail::reduce_factor_state(comm, state, n, true, count,
                                             everywhere ? std::nullopt : std::optional<int>(0));
      });
      CHECK(reduced.count() == whole.bank.at(key).count());
      if (!everywhere && comm.rank() != 0) continue;
      const surgeon::host_matrix<double> expected = whole.bank.at(key).sum();
      const surgeon::host_matrix<double> got = reduced.sum();
      double largest = 0.0;
      double error = 0.0;
      for (index_t i = 0; i < expected.rows(); ++i) {
        for (index_t j = 0; j < expected.cols(); ++j) {
          largest = std::max(largest, std::abs(expected(i, j)));
          error = std::max(error, std::abs(expected(i, j) - got(i, j)));
        }
      }
      INFO(key << " over " << comm.size() << " processes");
      CHECK(error <= 1e-12 * largest);
    }
  }
}

TEST_CASE("selections across processes give the single-process masks, ties included", "[mpi]") {
  surgeon::mpi::communicator& comm = *world;
  // Five layers of costs with many ties (a few distinct values), the same on every process.
  std::vector<surgeon::host_matrix<double>> costs;
  std::mt19937 engine(7);
  std::uniform_int_distribution<int> level(0, 5);
  const std::vector<std::pair<index_t, index_t>> shapes{{6, 8}, {4, 12}, {10, 4}, {3, 16}, {7, 8}};
  for (const auto& [rows, cols] : shapes) {
    costs.emplace_back(rows, cols);
    for (index_t i = 0; i < rows; ++i) {
      for (index_t j = 0; j < cols; ++j) costs.back()(i, j) = 0.25 * level(engine);
    }
  }
  std::vector<surgeon::host_matrix_view<const double>> all;
  for (const auto& c : costs) all.push_back(c.view());
  surgeon::distributed_layers layers;
  std::vector<surgeon::host_matrix_view<const double>> mine;
  for (std::size_t l = 0; l < costs.size(); ++l) {
    layers.rows.push_back(costs[l].rows());
    layers.cols.push_back(costs[l].cols());
    layers.owned.push_back(static_cast<int>(l) % comm.size() == comm.rank());
    mine.push_back(layers.owned.back() ? all[l] : surgeon::host_matrix_view<const double>());
  }
  const auto same = [&](const surgeon::selection& expected, const surgeon::selection& got) {
    CHECK(got.removed == expected.removed);
    CHECK(got.threshold == expected.threshold);
    for (std::size_t l = 0; l < costs.size(); ++l) {
      if (!layers.owned[l]) {
        CHECK(got.masks[l].count() == 0);
        continue;
      }
      for (index_t i = 0; i < costs[l].rows(); ++i) {
        for (index_t j = 0; j < costs[l].cols(); ++j)
          CHECK(got.masks[l].pruned(i, j) == expected.masks[l].pruned(i, j));
      }
    }
  };
  for (const double s : {0.0, 0.1, 0.37, 0.5, 0.81}) {
    INFO("sparsity " << s << " over " << comm.size() << " processes");
    same(surgeon::select_unstructured(all, s), surgeon::select_unstructured_across(comm, mine, layers, s));
    same(surgeon::select_per_row(all, s), surgeon::select_per_row_across(comm, mine, layers, s));
    const double nm = std::min(s, 0.5);
    same(surgeon::select_nm(all, {2, 4}, nm), surgeon::select_nm_across(comm, mine, layers, {2, 4}, nm));
  }
}

TEST_CASE("every method and structure: the same masks and losses on 1, 2 and 3 processes", "[mpi][prune]") {
  surgeon::mpi::communicator& comm = *world;
  using surgeon::method;
  using surgeon::structure;
  std::vector<config> configs;
  for (const method how : {method::magnitude, method::wanda, method::lobd, method::kobd, method::sparsegpt,
                           method::llm_surgeon}) {
    for (const structure what :
         {structure::unstructured, structure::n_m, structure::rows_columns, structure::coupled}) {
      configs.push_back({how, what});
    }
  }
  configs.push_back(
      {method::llm_surgeon, structure::unstructured, false, 0, 0, surgeon::update_kind::chunked});
  configs.push_back({method::llm_surgeon, structure::unstructured, true});
  configs.push_back({method::llm_surgeon, structure::n_m, true});
  configs.push_back({method::sparsegpt, structure::unstructured, true});
  configs.push_back({method::wanda, structure::unstructured, true});
  configs.push_back({method::llm_surgeon, structure::unstructured, false, 2});
  configs.push_back({method::llm_surgeon, structure::rows_columns, false, 3});
  configs.push_back({method::kobd, structure::unstructured, false, 1});
  configs.push_back({method::llm_surgeon, structure::n_m, false, 0, 2});
  configs.push_back({method::sparsegpt, structure::unstructured, false, 0, 2});
  configs.push_back({method::llm_surgeon, structure::coupled, false, 0, 2});
  int compared = 0;
  for (const config& c : configs) {
    INFO(name_of(c) << " over " << comm.size() << " processes");
    const surgeon::prune_options options = options_of(c);
    mlp_adapter alone;
    std::vector<surgeon::shot_report> expected;
    try {
      expected = surgeon::prune(alone, options);
    } catch (const surgeon::logic_error&) {
      // A combination the driver refuses alone is refused over several processes too.
      mlp_adapter spread;
      CHECK_THROWS_AS(surgeon::prune(spread, options, surgeon::cpu::prune_backend(), comm),
                      surgeon::logic_error);
      continue;
    }
    mlp_adapter spread;
    const std::vector<surgeon::shot_report> got =
        surgeon::prune(spread, options, surgeon::cpu::prune_backend(), comm);
    ++compared;
    REQUIRE(got.size() == expected.size());
    for (std::size_t t = 0; t < got.size(); ++t) {
      CHECK(got[t].removed == expected[t].removed);
      CHECK(got[t].achieved_sparsity == expected[t].achieved_sparsity);
      CHECK(got[t].correction_steps == expected[t].correction_steps);
      CHECK(got[t].escalations == expected[t].escalations);
      if (comm.size() > 1) CHECK(got[t].timings.communication > 0.0);
    }
    const std::vector<std::vector<float>*> a = alone.weights();
    const std::vector<std::vector<float>*> b = spread.weights();
    std::size_t zeros_differ = 0;
    double largest_difference = 0.0;
    for (std::size_t k = 0; k < a.size(); ++k) {
      for (std::size_t i = 0; i < a[k]->size(); ++i) {
        const float x = (*a[k])[i];
        const float y = (*b[k])[i];
        zeros_differ += (x == 0.0f) != (y == 0.0f) ? 1 : 0;
        largest_difference =
            std::max(largest_difference, static_cast<double>(std::abs(x - y)) / (1.0 + std::abs(x)));
      }
    }
    CHECK(zeros_differ == 0);
    CHECK(largest_difference <= 1e-5);
    const double loss_alone = alone.evaluate(2);
    const double loss_spread = spread.evaluate(2);
    CHECK(std::abs(loss_spread - loss_alone) <= 1e-6 * std::abs(loss_alone));
    // Every process of the group holds the same weights, bit for bit.
    const std::vector<std::int64_t> sums = comm.all_gather(bits_of(spread));
    for (const std::int64_t s : sums) CHECK(s == sums.front());
  }
  CHECK(compared >= 20);
}

int main(int argc, char* argv[]) {
  surgeon::mpi::environment mpi(argc, argv);
  surgeon::mpi::communicator comm;
  world = &comm;
  const int result = Catch::Session().run(argc, argv);
  // Every process's verdict: one failure anywhere fails the run.
  std::int64_t failures = result;
  comm.all_reduce_sum(&failures, 1);
  return failures == 0 ? 0 : 1;
}
