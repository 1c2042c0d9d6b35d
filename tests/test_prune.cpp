// The multi-shot driver on a synthetic adapter: schedule, achieved sparsity, exact zeros, every
// method and structure, determinism, grouping, bad options, and the type-erased adapter.
#include <surgeon/adapter.hpp>
#include <surgeon/prune.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/catch.hpp"

#if defined(SURGEON_USE_OPENBLAS)
#include <cblas.h>
#endif

using surgeon::index_t;

namespace {

// Three matrices; two read the same input ("in"), one reads its own. Calibration feeds seeded
// correlated inputs and random gradients, the same every shot.
struct toy_adapter {
  std::vector<float> w_a, w_b, w_c;
  int calibrations = 0;
  toy_adapter() {
    std::mt19937 engine(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto* w : {&w_a, &w_b}) {
      w->resize(12 * 16);
      for (float& v : *w) v = normal(engine);
    }
    w_c.resize(8 * 12);
    for (float& v : w_c) v = normal(engine);
  }
  std::vector<surgeon::prunable_matrix> matrices() {
    return {{"a", "in", surgeon::host_matrix_view<float>(w_a.data(), 12, 16)},
            {"b", "in", surgeon::host_matrix_view<float>(w_b.data(), 12, 16)},
            {"c", "mid", surgeon::host_matrix_view<float>(w_c.data(), 8, 12)}};
  }
  void calibrate(surgeon::calibration_sink& sink, int /*shot*/) {
    ++calibrations;
    feed(sink);
  }
  // The calibration data, the same every pass, to anything with input() and output_grad().
  template <typename Sink>
  static void feed(Sink& sink) {
    std::mt19937 engine(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto fill = [&](index_t rows, index_t cols, bool correlated) {
      std::vector<float> x(static_cast<std::size_t>(rows * cols));
      for (index_t t = 0; t < rows; ++t) {
        const float shared = normal(engine);
        for (index_t j = 0; j < cols; ++j) {
          x[static_cast<std::size_t>(t * cols + j)] = normal(engine) + (correlated ? 2.0f * shared : 0.0f);
        }
      }
      return x;
    };
    const index_t tokens = 64;
    const auto x_in = fill(tokens, 16, true);
    const auto x_mid = fill(tokens, 12, true);
    sink.input("in", surgeon::host_matrix_view<const float>(x_in.data(), tokens, 16));
    sink.input("mid", surgeon::host_matrix_view<const float>(x_mid.data(), tokens, 12));
    for (const char* name : {"a", "b"}) {
      const auto g = fill(tokens, 12, false);
      sink.output_grad(name, surgeon::host_matrix_view<const float>(g.data(), tokens, 12));
    }
    const auto g = fill(tokens, 8, false);
    sink.output_grad("c", surgeon::host_matrix_view<const float>(g.data(), tokens, 8));
  }
  index_t zeros() const {
    index_t count = 0;
    for (const auto* w : {&w_a, &w_b, &w_c}) {
      for (const float v : *w) count += v == 0.0f ? 1 : 0;
    }
    return count;
  }
};

constexpr index_t total = 12 * 16 * 2 + 8 * 12;

}  // namespace

TEST_CASE("every method reaches the target sparsity shot by shot", "[prune]") {
  const auto how = GENERATE(surgeon::method::magnitude, surgeon::method::wanda, surgeon::method::lobd,
                            surgeon::method::kobd, surgeon::method::sparsegpt, surgeon::method::llm_surgeon);
  CAPTURE(surgeon::to_string(how));
  toy_adapter model;
  surgeon::prune_options options;
  options.how = how;
  options.sparsity = 0.5;
  options.shots = 3;
  std::vector<double> targets;
  const auto reports = surgeon::prune(
      model, options, [&](const surgeon::shot_report& r) { targets.push_back(r.target_sparsity); });
  REQUIRE(reports.size() == 3);
  CHECK(targets == std::vector<double>{0.5 / 3, 1.0 / 3, 0.5});
  // Exactly the requested count overall; per layer for SparseGPT (one weight of rounding per
  // layer), per row for Wanda (one weight per row, floor(s·C) each).
  const double slack = how == surgeon::method::wanda ? 32.0 : 3.0;
  for (const auto& r : reports) {
    CHECK(r.achieved_sparsity <= r.target_sparsity + 3.0 / static_cast<double>(total));
    CHECK(r.achieved_sparsity >= r.target_sparsity - slack / static_cast<double>(total));
    const surgeon::shot_timings& t = r.timings;
    CHECK(r.seconds > 0.0);
    CHECK(r.seconds == Approx(t.calibration + t.curvature + t.costs + t.selection + t.update + t.evaluation));
  }
  CHECK(model.zeros() == static_cast<index_t>(reports.back().achieved_sparsity * total + 0.5));
  CHECK(model.calibrations == (how == surgeon::method::magnitude ? 0 : 3));
}

namespace {

// The toy model with a calibration pass and an evaluation that take known minimum times, long
// against the toy's own work so that a loaded machine cannot blur the phases.
struct slow_adapter : toy_adapter {
  static constexpr std::chrono::milliseconds calibration_time{100};
  static constexpr std::chrono::milliseconds evaluation_time{60};
  void calibrate(surgeon::calibration_sink& sink, int shot) {
    std::this_thread::sleep_for(calibration_time);
    toy_adapter::calibrate(sink, shot);
  }
  double evaluate() {
    std::this_thread::sleep_for(evaluation_time);
    return 1.0;
  }
};

// The CPU backend made to look asynchronous: each matrix's element costs leave 100 ms of "queued
// work" that only synchronize() waits for, so it is timed as costs only if the driver
// synchronises at the end of the cost phase.
struct queued_costs_backend : surgeon::cpu::prune_backend {
  static constexpr std::chrono::milliseconds queued_per_matrix{100};
  std::chrono::milliseconds queued{0};
  int synchronisations = 0;
  costs element_costs(surgeon::method how, const curvature& c, surgeon::host_matrix_view<const float> w) {
    queued += queued_per_matrix;
    return surgeon::cpu::prune_backend::element_costs(how, c, w);
  }
  void synchronize() {
    std::this_thread::sleep_for(queued);
    queued = std::chrono::milliseconds{0};
    ++synchronisations;
  }
};

double seconds(std::chrono::milliseconds ms) {
  return std::chrono::duration<double>(ms).count();
}

double sum(const surgeon::shot_timings& t) {
  return t.calibration + t.curvature + t.costs + t.selection + t.update + t.correction + t.evaluation +
         t.communication;
}

}  // namespace

TEST_CASE("shot timings: every phase counted once, calibration and evaluation where they ran",
          "[prune][timing]") {
  const double calibration = seconds(slow_adapter::calibration_time);
  const double evaluation = seconds(slow_adapter::evaluation_time);
  struct run {
    surgeon::method how;
    int group_size;
    int passes;  // calibration passes per shot
  };
  for (const run r : {run{surgeon::method::magnitude, 0, 0}, run{surgeon::method::wanda, 0, 1},
                      run{surgeon::method::sparsegpt, 0, 1}, run{surgeon::method::llm_surgeon, 0, 1},
                      run{surgeon::method::llm_surgeon, 1, 6}}) {
    CAPTURE(surgeon::to_string(r.how), r.group_size);
    slow_adapter model;
    surgeon::prune_options options;
    options.how = r.how;
    options.shots = 2;
    options.group_size = r.group_size;
    const auto reports = surgeon::prune(model, options);
    REQUIRE(reports.size() == 2);
    CHECK(model.calibrations == 2 * r.passes);
    for (const surgeon::shot_report& report : reports) {
      const surgeon::shot_timings& t = report.timings;
      for (const double phase : {t.calibration, t.curvature, t.costs, t.selection, t.update, t.evaluation})
        CHECK(phase >= 0.0);
      CHECK(sum(t) == Approx(report.seconds).epsilon(1e-9));
      CHECK(t.calibration >= r.passes * calibration);
      if (r.passes == 0) CHECK(t.calibration < calibration);  // no pass ran
      CHECK(t.evaluation >= evaluation);
      CHECK(t.calibration + t.evaluation < report.seconds);
      CHECK(t.update > 0.0);
      if (r.how == surgeon::method::sparsegpt) {
        CHECK(t.curvature == 0.0);
        CHECK(t.costs == 0.0);
        CHECK(t.selection == 0.0);
      } else {
        CHECK(t.costs > 0.0);
        CHECK(t.selection > 0.0);
      }
    }
  }
}

TEST_CASE("shot timings: a backend's queued work is timed in the phase that queued it", "[prune][timing]") {
  slow_adapter model;
  surgeon::prune_options options;
  options.how = surgeon::method::llm_surgeon;
  surgeon::basic_pruning_session<slow_adapter, queued_costs_backend> session(model, options);
  const surgeon::shot_report report = session.shot(1);
  const surgeon::shot_timings& t = report.timings;
  CHECK(t.costs >= 3 * seconds(queued_costs_backend::queued_per_matrix));
  CHECK(sum(t) == Approx(report.seconds).epsilon(1e-9));
  // Without the synchronisation the queued 300 ms would fall in the selection or the update phase;
  // with it, they hold less than one matrix's worth between them (they never wait for it).
  CHECK(t.selection + t.update < t.costs);
}

TEST_CASE("weights pruned in an earlier shot stay exactly zero", "[prune]") {
  toy_adapter model;
  surgeon::prune_options options;
  options.shots = 2;
  surgeon::pruning_session<toy_adapter> session(model, options);
  session.shot(1);
  const std::vector<float> after_first = model.w_a;
  session.shot(2);
  for (std::size_t k = 0; k < after_first.size(); ++k) {
    if (after_first[k] == 0.0f) REQUIRE(model.w_a[k] == 0.0f);
  }
}

TEST_CASE("pruning an already-pruned model again at the same sparsity changes nothing", "[prune]") {
  const auto how = GENERATE(surgeon::method::magnitude, surgeon::method::kobd, surgeon::method::llm_surgeon);
  CAPTURE(surgeon::to_string(how));
  toy_adapter model;
  surgeon::prune_options options;
  options.how = how;
  options.shots = 1;
  surgeon::prune(model, options);
  const std::vector<float> once_a = model.w_a;
  const std::vector<float> once_c = model.w_c;
  surgeon::prune(model, options);
  CHECK(model.w_a == once_a);
  CHECK(model.w_c == once_c);
}

TEST_CASE("N:M and rows+columns structures", "[prune]") {
  SECTION("2:4 at 50 % prunes two of every four inputs of every row") {
    toy_adapter model;
    surgeon::prune_options options;
    options.what = surgeon::structure::n_m;
    options.shots = 2;
    surgeon::prune(model, options);
    for (index_t i = 0; i < 12; ++i) {
      for (index_t block = 0; block < 4; ++block) {
        int zeros = 0;
        for (index_t j = 0; j < 4; ++j)
          zeros += model.w_a[static_cast<std::size_t>(i * 16 + block * 4 + j)] == 0.0f;
        CHECK(zeros == 2);
      }
    }
  }
  SECTION("rows+columns removes whole rows and columns within the budget") {
    toy_adapter model;
    surgeon::prune_options options;
    options.what = surgeon::structure::rows_columns;
    options.sparsity = 0.3;
    options.shots = 2;
    const auto reports = surgeon::prune(model, options);
    CHECK(reports.back().achieved_sparsity <= 0.3 + 1e-12);
    CHECK(reports.back().achieved_sparsity > 0.15);
    // Every zero lies in a fully zero row or a fully zero column.
    for (index_t i = 0; i < 12; ++i) {
      for (index_t j = 0; j < 16; ++j) {
        if (model.w_a[static_cast<std::size_t>(i * 16 + j)] != 0.0f) continue;
        bool row_zero = true;
        bool col_zero = true;
        for (index_t q = 0; q < 16; ++q) row_zero &= model.w_a[static_cast<std::size_t>(i * 16 + q)] == 0.0f;
        for (index_t p = 0; p < 12; ++p) col_zero &= model.w_a[static_cast<std::size_t>(p * 16 + j)] == 0.0f;
        CHECK((row_zero || col_zero));
      }
    }
  }
}

TEST_CASE("the same options give identical weights; grouping changes nothing but memory", "[prune]") {
  toy_adapter first;
  toy_adapter second;
  toy_adapter grouped;
  surgeon::prune_options options;
  options.shots = 2;
  surgeon::prune(first, options);
  surgeon::prune(second, options);
  CHECK(first.w_a == second.w_a);
  CHECK(first.w_c == second.w_c);
  options.group_size = 1;
  surgeon::prune(grouped, options);
  CHECK(grouped.calibrations == 2 * 2 * 3);  // costs and updates, per group, per shot
  for (std::size_t k = 0; k < first.w_a.size(); ++k)
    CHECK(grouped.w_a[k] == Approx(first.w_a[k]).margin(1e-5));
}

TEST_CASE("the whole-mask update loses no more than the chunked one", "[prune]") {
  toy_adapter chunked;
  toy_adapter whole;
  surgeon::prune_options options;
  options.shots = 1;
  options.update = surgeon::update_kind::chunked;
  surgeon::prune(chunked, options);
  options.update = surgeon::update_kind::whole_mask;
  options.pcg = surgeon::cpu::pcg_options{1e-10, 500, surgeon::pcg_form::removed_sweep, false};
  surgeon::prune(whole, options);
  CHECK(whole.zeros() == chunked.zeros());
}

TEST_CASE("a matrix that dies entirely is counted as removed, not an error", "[prune]") {
  toy_adapter model;
  std::fill(model.w_c.begin(), model.w_c.end(), 0.0f);  // every row and column of c is dead
  for (const auto how : {surgeon::method::magnitude, surgeon::method::kobd, surgeon::method::llm_surgeon}) {
    for (const auto what : {surgeon::structure::unstructured, surgeon::structure::rows_columns}) {
      CAPTURE(surgeon::to_string(how));
      toy_adapter m = model;
      surgeon::prune_options options;
      options.how = how;
      options.what = what;
      options.sparsity = 0.4;
      options.shots = 2;
      const auto reports = surgeon::prune(m, options);
      CHECK(reports.back().achieved_sparsity >= 8.0 * 12.0 / static_cast<double>(total));
      CHECK(std::all_of(m.w_c.begin(), m.w_c.end(), [](float v) { return v == 0.0f; }));
    }
  }
}

TEST_CASE("bad pruning options are logic_errors", "[prune]") {
  toy_adapter model;
  surgeon::prune_options options;
  options.sparsity = 1.0;
  CHECK_THROWS_AS(surgeon::prune(model, options), surgeon::logic_error);
  options = surgeon::prune_options{};
  options.shots = 0;
  CHECK_THROWS_AS(surgeon::prune(model, options), surgeon::logic_error);
  options = surgeon::prune_options{};
  options.what = surgeon::structure::rows_columns;
  options.how = surgeon::method::wanda;
  CHECK_THROWS_AS(surgeon::prune(model, options), surgeon::logic_error);
  options = surgeon::prune_options{};
  options.what = surgeon::structure::n_m;
  options.sparsity = 0.6;
  CHECK_THROWS_AS(surgeon::prune(model, options), surgeon::logic_error);
  options.sparsity = 0.5;
  options.pattern = surgeon::nm_pattern{3, 5};  // 5 does not divide 16
  CHECK_THROWS_AS(surgeon::prune(model, options), surgeon::logic_error);
  options = surgeon::prune_options{};
  options.what = surgeon::structure::n_m;
  options.how = surgeon::method::sparsegpt;
  options.sparsity = 0.3;  // SparseGPT's 2:4 is sparsity 0.5 exactly
  CHECK_THROWS_WITH(surgeon::prune(model, options), Catch::Contains("prunes N of every M"));
}

TEST_CASE("LLM Surgeon without the update only masks: kept weights are untouched", "[prune]") {
  toy_adapter original;
  toy_adapter masked;
  toy_adapter updated;
  surgeon::prune_options options;
  options.shots = 1;
  options.update = surgeon::update_kind::none;
  const auto reports = surgeon::prune(masked, options);
  options.update = surgeon::update_kind::whole_mask;
  surgeon::prune(updated, options);
  CHECK(reports.back().achieved_sparsity == Approx(0.5).margin(1.0 / static_cast<double>(total)));
  index_t changed_by_update = 0;
  for (std::size_t k = 0; k < original.w_a.size(); ++k) {
    if (masked.w_a[k] != 0.0f) CHECK(masked.w_a[k] == original.w_a[k]);
    // The same costs choose the same mask, with or without the update.
    CHECK((masked.w_a[k] == 0.0f) == (updated.w_a[k] == 0.0f));
    changed_by_update += masked.w_a[k] != updated.w_a[k] ? 1 : 0;
  }
  CHECK(changed_by_update > 0);
}

namespace {
// toy_adapter with a quality measure: the sum of squared weights (any value the driver must
// forward unchanged); it records the shots the driver names.
struct evaluated_toy_adapter : toy_adapter {
  int evaluations = 0;
  std::vector<int> shots_seen;
  double evaluate(int shot) {
    ++evaluations;
    shots_seen.push_back(shot);
    double sum = 0.0;
    for (const auto* w : {&w_a, &w_b, &w_c}) {
      for (const float v : *w) sum += static_cast<double>(v) * v;
    }
    return sum;
  }
};
}  // namespace

TEST_CASE("any_adapter: the erased adapter prunes exactly as the adapter itself", "[prune][adapter]") {
  const auto how = GENERATE(surgeon::method::llm_surgeon, surgeon::method::sparsegpt, surgeon::method::wanda);
  CAPTURE(surgeon::to_string(how));
  evaluated_toy_adapter direct;
  evaluated_toy_adapter wrapped;
  surgeon::any_adapter erased(wrapped);
  CHECK(erased.has_evaluate());
  surgeon::prune_options options;
  options.how = how;
  options.shots = 2;
  const auto expected = surgeon::prune(direct, options);
  const auto got = surgeon::prune(erased, options);
  CHECK(wrapped.w_a == direct.w_a);
  CHECK(wrapped.w_b == direct.w_b);
  CHECK(wrapped.w_c == direct.w_c);
  CHECK(wrapped.calibrations == direct.calibrations);
  CHECK(wrapped.evaluations == 2);
  CHECK(wrapped.shots_seen == std::vector<int>{1, 2});
  CHECK(direct.shots_seen == std::vector<int>{1, 2});
  REQUIRE(got.size() == expected.size());
  for (std::size_t t = 0; t < got.size(); ++t) {
    CHECK(got[t].removed == expected[t].removed);
    CHECK(got[t].achieved_sparsity == expected[t].achieved_sparsity);
    REQUIRE(got[t].evaluation.has_value());
    CHECK(*got[t].evaluation == *expected[t].evaluation);
  }
}

TEST_CASE("cpu::prune takes a context as cuda::prune does and prunes as surgeon::prune", "[prune][adapter]") {
  const auto how = GENERATE(surgeon::method::llm_surgeon, surgeon::method::sparsegpt, surgeon::method::kobd);
  CAPTURE(surgeon::to_string(how));
  toy_adapter shorthand;
  toy_adapter with_context;
  surgeon::prune_options options;
  options.how = how;
  options.shots = 2;
  const auto expected = surgeon::prune(shorthand, options);
  surgeon::cpu::context ctx;
  const auto got = prune(ctx, with_context, options);  // found by argument-dependent lookup
  CHECK(with_context.w_a == shorthand.w_a);
  CHECK(with_context.w_b == shorthand.w_b);
  CHECK(with_context.w_c == shorthand.w_c);
  REQUIRE(got.size() == expected.size());
  CHECK(got.back().removed == expected.back().removed);
}

TEST_CASE("factor_key: typed A and G keys, ordered, spelled apart", "[prune]") {
  using surgeon::factor_key;
  const surgeon::prunable_matrix m{"blk.0.attn_q", "blk.0.attn_in", {}};
  CHECK(factor_key::input_of(m) == factor_key::input_of("blk.0.attn_in"));
  CHECK(factor_key::gradient_of(m) == factor_key::gradient_of("blk.0.attn_q"));
  CHECK_FALSE(factor_key::input_of("x") == factor_key::gradient_of("x"));  // same name, two factors
  CHECK(factor_key::input_of("x").str() == "a:x");
  CHECK(factor_key::gradient_of("x").str() == "g:x");
  CHECK(factor_key::input_of("z") < factor_key::gradient_of("a"));  // kind first
  CHECK(factor_key::input_of("a") < factor_key::input_of("b"));
}

TEST_CASE("method traits: the factors, selection and structures of each method", "[prune]") {
  using surgeon::method;
  using surgeon::selection_scope;
  using surgeon::traits_of;
  CHECK_FALSE(traits_of(method::magnitude).needs_inputs);
  CHECK(traits_of(method::wanda).selection == selection_scope::per_row);
  CHECK(traits_of(method::sparsegpt).selection == selection_scope::per_layer);
  CHECK(traits_of(method::llm_surgeon).selection == selection_scope::global);
  const auto how = GENERATE(method::magnitude, method::wanda, method::lobd, method::kobd, method::sparsegpt,
                            method::llm_surgeon);
  CAPTURE(surgeon::to_string(how));
  const surgeon::method_traits t = traits_of(how);
  // G is read exactly by the methods whose costs scale rows by it.
  CHECK(t.needs_output_gradients == (t.row_scale != surgeon::cost_scale::one && how != method::sparsegpt));
  // Only the OBS methods update; rows-cols needs a row score, which the per-row/per-layer ones lack.
  CHECK(t.updates_weights == (how == method::sparsegpt || how == method::llm_surgeon));
  CHECK(t.scores_rows_columns == (t.selection == selection_scope::global));
  // The table agrees with the options' checks: rows-cols is refused exactly where it has no score.
  toy_adapter model;
  surgeon::prune_options options;
  options.how = how;
  options.what = surgeon::structure::rows_columns;
  if (t.scores_rows_columns) {
    CHECK_NOTHROW(surgeon::pruning_session<toy_adapter>(model, options));
  } else {
    CHECK_THROWS_AS(surgeon::pruning_session<toy_adapter>(model, options), surgeon::logic_error);
  }
}

TEST_CASE("any_adapter: callables, no evaluation, and empty functions", "[prune][adapter]") {
  toy_adapter model;  // no evaluate(): the reports carry none
  surgeon::any_adapter erased(model);
  CHECK_FALSE(erased.has_evaluate());
  CHECK_FALSE(erased.evaluate(1).has_value());
  surgeon::prune_options options;
  options.shots = 1;
  const auto reports = surgeon::prune(erased, options);
  CHECK_FALSE(reports.back().evaluation.has_value());
  CHECK(model.zeros() == total / 2);

  toy_adapter other;
  std::vector<int> evaluated_shots;
  surgeon::any_adapter from_functions(
      [&]() { return other.matrices(); },
      [&](surgeon::calibration_sink& sink, int shot) { other.calibrate(sink, shot); },
      [&](int shot) -> std::optional<double> {
        evaluated_shots.push_back(shot);
        return std::nullopt;
      });
  const auto second = surgeon::prune(from_functions, options);
  CHECK(other.w_a == model.w_a);
  CHECK(evaluated_shots == std::vector<int>{1});
  CHECK_FALSE(second.back().evaluation.has_value());
  // A copy calls the same adapter.
  surgeon::any_adapter copy = erased;
  CHECK(copy.matrices().front().weight.data() == model.w_a.data());

  CHECK_THROWS_AS(
      surgeon::any_adapter(surgeon::any_adapter::matrices_function{}, [](surgeon::calibration_sink&, int) {}),
      surgeon::logic_error);
  CHECK_THROWS_AS(
      surgeon::any_adapter([&]() { return other.matrices(); }, surgeon::any_adapter::calibrate_function{}),
      surgeon::logic_error);
}

namespace {

// The toy model's factors accumulated in full, outside the driver.
struct full_factors {
  surgeon::cpu::context ctx;
  std::map<std::string, surgeon::factor_accumulator<double>> factors;
  void input(const std::string& key, surgeon::host_matrix_view<const float> x) { add("a:" + key, x); }
  void output_grad(const std::string& name, surgeon::host_matrix_view<const float> g) { add("g:" + name, g); }
  void add(const std::string& key, surgeon::host_matrix_view<const float> x) {
    factors.try_emplace(key, x.cols()).first->second.add(ctx, x);
  }
  surgeon::host_matrix<double> mean_or_identity(const std::string& key, bool wanted, index_t n) const {
    if (wanted) return factors.at(key).mean();
    surgeon::host_matrix<double> identity(n, n);
    for (index_t i = 0; i < n; ++i) identity(i, i) = 1.0;
    return identity;
  }
};

}  // namespace

TEST_CASE("the diagonal methods prune exactly as costs from the full factors would", "[prune][diagonal]") {
  // The driver takes the diagonal path (diagonal.hpp) for these; the reference is the dense
  // pipeline: full factor means (identity where the method ignores a factor), cpu::factorize,
  // cpu::element_costs / row_costs / column_costs, and the same selection.
  struct config {
    surgeon::method how;
    surgeon::structure what;
    double sparsity;
  };
  const std::vector<config> configs = {
      {surgeon::method::magnitude, surgeon::structure::unstructured, 0.5},
      {surgeon::method::wanda, surgeon::structure::unstructured, 0.5},
      {surgeon::method::lobd, surgeon::structure::unstructured, 0.6},
      {surgeon::method::kobd, surgeon::structure::unstructured, 0.4},
      {surgeon::method::kobd, surgeon::structure::n_m, 0.5},
      {surgeon::method::wanda, surgeon::structure::n_m, 0.5},
      {surgeon::method::magnitude, surgeon::structure::rows_columns, 0.3},
      {surgeon::method::lobd, surgeon::structure::rows_columns, 0.3},
  };
  full_factors data;
  toy_adapter::feed(data);
  for (const config& c : configs) {
    CAPTURE(surgeon::to_string(c.how), static_cast<int>(c.what));
    REQUIRE(surgeon::uses_diagonals_only(c.how, c.what));
    toy_adapter model;
    toy_adapter reference;
    surgeon::prune_options options;
    options.how = c.how;
    options.what = c.what;
    options.sparsity = c.sparsity;
    options.shots = 1;
    surgeon::prune(model, options);

    const bool needs_a = c.how != surgeon::method::magnitude;
    const bool needs_g = c.how == surgeon::method::kobd;
    std::vector<surgeon::host_matrix<double>> costs;
    std::vector<std::vector<double>> row_costs;
    std::vector<std::vector<double>> col_costs;
    std::vector<surgeon::prunable_matrix> matrices = reference.matrices();
    for (const surgeon::prunable_matrix& m : matrices) {
      const surgeon::host_matrix_view<const float> w(m.weight);
      const auto g = data.mean_or_identity("g:" + m.name, needs_g, w.rows());
      const auto a = data.mean_or_identity("a:" + m.input_key, needs_a, w.cols());
      const auto curvature = surgeon::cpu::factorize(
          data.ctx, g.view(), a.view(), options.damp.value_or(surgeon::default_damping(options.how)), w);
      if (c.what == surgeon::structure::rows_columns) {
        row_costs.push_back(surgeon::cpu::row_costs(data.ctx, c.how, curvature, w));
        col_costs.push_back(surgeon::cpu::column_costs(data.ctx, c.how, curvature, w));
      } else {
        costs.push_back(surgeon::cpu::element_costs(data.ctx, c.how, curvature, w));
      }
    }
    std::vector<surgeon::mask> masks;
    if (c.what == surgeon::structure::rows_columns) {
      masks = surgeon::select_rows_columns(row_costs, col_costs, c.sparsity).masks;
    } else {
      std::vector<surgeon::host_matrix_view<const double>> views;
      for (const auto& m : costs) views.push_back(m.view());
      masks = c.what == surgeon::structure::n_m ? surgeon::select_nm(views, options.pattern, c.sparsity).masks
              : c.how == surgeon::method::wanda ? surgeon::select_per_row(views, c.sparsity).masks
                                                : surgeon::select_unstructured(views, c.sparsity).masks;
    }
    for (std::size_t k = 0; k < matrices.size(); ++k) masks[k].apply(matrices[k].weight);
    CHECK(reference.zeros() > 0);
    CHECK(model.w_a == reference.w_a);
    CHECK(model.w_b == reference.w_b);
    CHECK(model.w_c == reference.w_c);
  }
}

TEST_CASE("estimate_working_bytes counts accumulators, factors and costs", "[prune][memory]") {
  toy_adapter model;  // a, b: [12, 16] reading "in"; c: [8, 12] reading "mid"
  const auto matrices = model.matrices();
  surgeon::prune_options options;  // LLM Surgeon, unstructured
  // All at once: A of "in" and "mid" (16² + 12²) and G of a, b, c (12² + 12² + 8²), the damped
  // factors and inverses of every matrix kept for the update (2·12² + 2·16² twice, 2·8² + 2·12²),
  // and one cost per weight (192 + 192 + 96): 752 + 2016 + 480 doubles.
  CHECK(surgeon::estimate_working_bytes(matrices, options, 0) == 3248 * sizeof(double));
  CHECK(surgeon::estimate_working_bytes(matrices, options, 3) == 3248 * sizeof(double));
  // Groups of 2 ({a, b}, {c}): the larger group's accumulators (16² + 2·12²), one matrix's
  // factors at a time (the largest, 800), all costs: 544 + 800 + 480.
  CHECK(surgeon::estimate_working_bytes(matrices, options, 2) == 1824 * sizeof(double));
  // Groups of 1: 16² + 12², 800, 480.
  CHECK(surgeon::estimate_working_bytes(matrices, options, 1) == 1680 * sizeof(double));
  // Rows-cols keeps costs per row and column: 28 + 28 + 20.
  options.what = surgeon::structure::rows_columns;
  CHECK(surgeon::estimate_working_bytes(matrices, options, 0) == (752 + 2016 + 76) * sizeof(double));
  // Without an update nothing is kept for a second pass: K-OBD rows-cols, the full factors of
  // one matrix at a time.
  options.how = surgeon::method::kobd;
  CHECK(surgeon::estimate_working_bytes(matrices, options, 0) == (752 + 800 + 76) * sizeof(double));
  // The diagonal methods hold factor diagonals only and factorise nothing: K-OBD unstructured
  // accumulates diag A of "in" and "mid" (16 + 12) and diag G of a, b, c (12 + 12 + 8).
  options.what = surgeon::structure::unstructured;
  CHECK(surgeon::estimate_working_bytes(matrices, options, 0) == (28 + 32 + 480) * sizeof(double));
  // Wanda: diag A only.
  options.how = surgeon::method::wanda;
  CHECK(surgeon::estimate_working_bytes(matrices, options, 0) == (28 + 480) * sizeof(double));
  // Magnitude: the costs alone.
  options.how = surgeon::method::magnitude;
  CHECK(surgeon::estimate_working_bytes(matrices, options, 0) == 480 * sizeof(double));
}

TEST_CASE("memory_budget picks the largest group size that fits", "[prune][memory]") {
  toy_adapter probe;
  const auto matrices = probe.matrices();
  surgeon::prune_options options;
  options.shots = 2;
  const auto bytes = [](std::size_t doubles) { return doubles * sizeof(double); };
  options.memory_budget = bytes(3248);
  CHECK(surgeon::choose_group_size(matrices, options) == 0);
  options.memory_budget = bytes(3247);
  CHECK(surgeon::choose_group_size(matrices, options) == 2);
  options.memory_budget = bytes(1823);
  CHECK(surgeon::choose_group_size(matrices, options) == 1);
  options.memory_budget = bytes(1679);
  CHECK_THROWS_AS(surgeon::choose_group_size(matrices, options), surgeon::logic_error);
  options.group_size = 3;  // explicit sizes are used as given
  CHECK(surgeon::choose_group_size(matrices, options) == 3);

  // A session under a budget runs exactly as with the chosen group size given explicitly.
  toy_adapter budgeted;
  toy_adapter explicit_groups;
  surgeon::prune_options by_budget;
  by_budget.shots = 2;
  by_budget.memory_budget = bytes(3247);
  surgeon::pruning_session<toy_adapter> session(budgeted, by_budget);
  CHECK(session.group_size() == 2);
  const auto reports = session.run();
  CHECK(reports.back().group_size == 2);
  surgeon::prune_options given = by_budget;
  given.memory_budget = 0;
  given.group_size = 2;
  surgeon::prune(explicit_groups, given);
  CHECK(budgeted.w_a == explicit_groups.w_a);
  CHECK(budgeted.w_c == explicit_groups.w_c);
  CHECK(budgeted.calibrations == 2 * 2 * 2);  // two groups, costs and updates, two shots
  surgeon::prune_options too_small = by_budget;
  too_small.memory_budget = bytes(100);
  toy_adapter untouched;
  CHECK_THROWS_AS(surgeon::pruning_session<toy_adapter>(untouched, too_small), surgeon::logic_error);
}

// ---- several matrices at once (cpu::prune_backend_options::update_threads) -------------------------

TEST_CASE("for_each_concurrently runs every task once, at once, and rethrows the first error",
          "[prune][parallel]") {
  using surgeon::cpu::detail::for_each_concurrently;
  for (const int threads : {1, 2, 3, 8}) {
    for (const std::size_t count : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{7}}) {
      CAPTURE(threads, count);
      std::vector<std::atomic<int>> runs(count);
      std::atomic<int> running{0};
      std::atomic<int> most{0};
      std::vector<std::size_t> order;
      std::mutex order_mutex;
      const std::thread::id caller = std::this_thread::get_id();
      std::atomic<bool> all_on_caller{true};
      for_each_concurrently(count, threads, [&](std::size_t i) {
        const int now = ++running;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        if (std::this_thread::get_id() != caller) all_on_caller = false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        ++runs[i];
        {
          const std::lock_guard<std::mutex> lock(order_mutex);
          order.push_back(i);
        }
        --running;
      });
      for (std::size_t i = 0; i < count; ++i) CHECK(runs[i] == 1);
      const int expected = static_cast<int>(std::min<std::size_t>(count, static_cast<std::size_t>(threads)));
      if (threads <= 1 || count <= 1) {
        CHECK(all_on_caller);
        std::vector<std::size_t> in_order(count);
        for (std::size_t i = 0; i < count; ++i) in_order[i] = i;
        CHECK(order == in_order);
        CHECK(most <= 1);
      } else {
        // Every worker takes a task before the first 10 ms sleep ends (on a loaded machine at least two).
        CHECK(most >= 2);
        CHECK(most <= expected);
      }
    }
  }
  SECTION("an exception stops new tasks and reaches the caller") {
    std::atomic<int> started{0};
    CHECK_THROWS_WITH(for_each_concurrently(100, 4,
                                            [&](std::size_t i) {
                                              ++started;
                                              std::this_thread::sleep_for(std::chrono::milliseconds(2));
                                              if (i == 5) throw surgeon::numerical_error("task 5 failed");
                                            }),
                      "task 5 failed");
    CHECK(started < 100);
  }
  CHECK_THROWS_AS(for_each_concurrently(1, -1, [](std::size_t) {}), surgeon::logic_error);
#if defined(SURGEON_USE_OPENBLAS)
  SECTION("the BLAS runs single-threaded inside the tasks and gets its thread count back") {
    openblas_set_num_threads(2);
    std::atomic<int> inside{0};
    for_each_concurrently(4, 2,
                          [&](std::size_t) { inside = std::max(inside.load(), openblas_get_num_threads()); });
    CHECK(inside == 1);
    CHECK(openblas_get_num_threads() == 2);
  }
#endif
}

namespace {

// The CPU backend, counting how many updates run at the same time.
struct overlapping_updates_backend : surgeon::cpu::prune_backend {
  std::shared_ptr<std::atomic<int>> running = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> most = std::make_shared<std::atomic<int>>(0);
  explicit overlapping_updates_backend(int threads) : surgeon::cpu::prune_backend({threads}) {}
  surgeon::update_report obs_update(const curvature& c, surgeon::host_matrix_view<float> w,
                                    const surgeon::mask& pruned, surgeon::correlate budget) {
    const int now = ++*running;
    int seen = most->load();
    while (now > seen && !most->compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const surgeon::update_report report = surgeon::cpu::prune_backend::obs_update(c, w, pruned, budget);
    --*running;
    return report;
  }
};

}  // namespace

TEST_CASE("update_threads: matrices updated at once give the weights of one at a time", "[prune][parallel]") {
  struct config {
    surgeon::method how;
    surgeon::structure what;
    bool whole_mask;
    int group_size;
  };
  for (const config c : {config{surgeon::method::llm_surgeon, surgeon::structure::unstructured, false, 0},
                         config{surgeon::method::llm_surgeon, surgeon::structure::unstructured, true, 0},
                         config{surgeon::method::llm_surgeon, surgeon::structure::n_m, false, 0},
                         config{surgeon::method::llm_surgeon, surgeon::structure::rows_columns, false, 0},
                         config{surgeon::method::llm_surgeon, surgeon::structure::unstructured, false, 2},
                         config{surgeon::method::sparsegpt, surgeon::structure::unstructured, false, 0},
                         config{surgeon::method::sparsegpt, surgeon::structure::unstructured, false, 2}}) {
    CAPTURE(surgeon::to_string(c.how), static_cast<int>(c.what), c.whole_mask, c.group_size);
    surgeon::prune_options options;
    options.how = c.how;
    options.what = c.what;
    options.update = c.whole_mask ? surgeon::update_kind::whole_mask : surgeon::update_kind::chunked;
    options.group_size = c.group_size;
    options.shots = 2;
    options.sparsity = c.what == surgeon::structure::rows_columns ? 0.3 : 0.5;
    toy_adapter one_at_a_time;
    toy_adapter at_once;
    surgeon::prune(one_at_a_time, options);
    const auto reports = surgeon::prune(at_once, options, surgeon::cpu::prune_backend({3}));
    CHECK(reports.back().achieved_sparsity > 0.0);
    CHECK(at_once.zeros() == one_at_a_time.zeros());
    for (const auto& [parallel, serial] :
         {std::pair{&at_once.w_a, &one_at_a_time.w_a}, std::pair{&at_once.w_b, &one_at_a_time.w_b},
          std::pair{&at_once.w_c, &one_at_a_time.w_c}}) {
      for (std::size_t k = 0; k < serial->size(); ++k) {
        CHECK((*parallel)[k] == Approx((*serial)[k]).margin(1e-6));
        CHECK(((*parallel)[k] == 0.0f) == ((*serial)[k] == 0.0f));
      }
    }
  }
}

TEST_CASE("update_threads: the driver's updates overlap when every curvature is in memory",
          "[prune][parallel]") {
  surgeon::prune_options options;
  options.how = surgeon::method::llm_surgeon;
  options.update = surgeon::update_kind::chunked;  // the backend counts obs_update calls
  for (const int group_size : {0, 1}) {
    CAPTURE(group_size);
    options.group_size = group_size;
    toy_adapter model;
    overlapping_updates_backend backend(3);
    surgeon::basic_pruning_session<toy_adapter, overlapping_updates_backend> session(model, options, backend);
    session.shot(1);
    if (group_size == 0) {
      CHECK(*backend.most >= 2);  // three matrices, three threads
    } else {
      CHECK(*backend.most == 1);  // grouped: each group's store is freed before the next
    }
  }
  CHECK_THROWS_AS(surgeon::cpu::prune_backend({0}), surgeon::logic_error);
}

// ---- sequential pruning (prune_options::sequential) -------------------------------------------------

namespace {

// Two layers in a chain: a [12, 16] reads x, b [8, 12] reads h = x aᵀ computed from a's *current*
// weights, so b's calibration input changes when a is pruned — what sequential pruning is about.
struct chain_adapter {
  std::vector<float> w_a, w_b, x;
  static constexpr index_t tokens = 64;
  int calibrations = 0;
  chain_adapter() {
    std::mt19937 engine(21);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    w_a.resize(12 * 16);
    w_b.resize(8 * 12);
    x.resize(static_cast<std::size_t>(tokens * 16));
    for (auto* v : {&w_a, &w_b, &x}) {
      for (float& e : *v) e = normal(engine);
    }
    for (index_t t = 0; t < tokens; ++t) {  // correlated inputs
      const float shared = normal(engine);
      for (index_t j = 0; j < 16; ++j) x[static_cast<std::size_t>(t * 16 + j)] += 1.5f * shared;
    }
  }
  std::vector<surgeon::prunable_matrix> matrices() {
    return {{"a", "x", surgeon::host_matrix_view<float>(w_a.data(), 12, 16)},
            {"b", "h", surgeon::host_matrix_view<float>(w_b.data(), 8, 12)}};
  }
  std::vector<float> hidden() const {  // h = x aᵀ with the current a
    std::vector<float> h(static_cast<std::size_t>(tokens * 12), 0.0f);
    for (index_t t = 0; t < tokens; ++t) {
      for (index_t i = 0; i < 12; ++i) {
        float sum = 0.0f;
        for (index_t j = 0; j < 16; ++j)
          sum += x[static_cast<std::size_t>(t * 16 + j)] * w_a[static_cast<std::size_t>(i * 16 + j)];
        h[static_cast<std::size_t>(t * 12 + i)] = sum;
      }
    }
    return h;
  }
  void calibrate(surgeon::calibration_sink& sink, int /*shot*/) {
    ++calibrations;
    sink.input("x", surgeon::host_matrix_view<const float>(x.data(), tokens, 16));
    const std::vector<float> h = hidden();
    sink.input("h", surgeon::host_matrix_view<const float>(h.data(), tokens, 12));
  }
};

// The sequential protocol by hand: prune a from x, recompute h from the pruned a, prune b from it.
void prune_by_hand(chain_adapter& model, surgeon::method how, double sparsity, double damp_a) {
  surgeon::cpu::context ctx;
  auto prune_one = [&](std::vector<float>& w, index_t rows, index_t cols, const std::vector<float>& input) {
    const surgeon::host_matrix_view<const float> in(input.data(), chain_adapter::tokens, cols);
    const surgeon::host_matrix_view<float> weights(w.data(), rows, cols);
    if (how == surgeon::method::sparsegpt) {
      surgeon::factor_accumulator<double> a(cols);
      a.add(ctx, in);
      const surgeon::host_matrix<double> h = a.mean();
      surgeon::cpu::sparsegpt_prune(ctx, h.view(), weights, sparsity,
                                    surgeon::cpu::sparsegpt_options{128, damp_a});
    } else {
      surgeon::diagonal_accumulator a(cols);
      a.add(in);
      const surgeon::diagonal_curvature curvature = surgeon::make_diagonal_curvature(
          std::vector<double>(), a.mean(), surgeon::host_matrix_view<const float>(weights));
      const surgeon::host_matrix<double> costs = surgeon::diagonal_element_costs(
          surgeon::method::wanda, curvature, surgeon::host_matrix_view<const float>(weights));
      const surgeon::selection chosen = surgeon::select_per_row({costs.view()}, sparsity);
      chosen.masks[0].apply(weights);
    }
  };
  prune_one(model.w_a, 12, 16, model.x);
  prune_one(model.w_b, 8, 12, model.hidden());
}

}  // namespace

TEST_CASE("sequential_groups: runs of matrices with one input key, in order", "[prune][sequential]") {
  std::vector<float> w(4, 1.0f);
  const surgeon::host_matrix_view<float> v(w.data(), 2, 2);
  const std::vector<surgeon::prunable_matrix> matrices{{"q", "attn", v},   {"k", "attn", v},
                                                       {"o", "out", v},    {"up", "mlp", v},
                                                       {"gate", "mlp", v}, {"q2", "attn", v}};
  CHECK(surgeon::sequential_groups(matrices) ==
        std::vector<std::vector<std::size_t>>{{0, 1}, {2}, {3, 4}, {5}});
  CHECK(surgeon::sequential_groups({}).empty());
}

TEST_CASE("sequential SparseGPT and Wanda prune each layer on the inputs of the pruned earlier ones",
          "[prune][sequential]") {
  for (const auto how : {surgeon::method::sparsegpt, surgeon::method::wanda}) {
    CAPTURE(surgeon::to_string(how));
    surgeon::prune_options options;
    options.how = how;
    options.sparsity = 0.5;
    options.shots = 1;
    options.sequential = true;
    chain_adapter sequential;
    const auto reports = surgeon::prune(sequential, options);
    CHECK(sequential.calibrations == 2);  // one pass per group: {a}, {b}
    CHECK(reports.back().achieved_sparsity == Approx(0.5));
    chain_adapter by_hand;
    prune_by_hand(by_hand, how, 0.5, surgeon::default_damping(how).a);
    CHECK(sequential.w_a == by_hand.w_a);
    CHECK(sequential.w_b == by_hand.w_b);
    // All at once, b's inputs come from the dense a: a differs not, b does.
    options.sequential = false;
    chain_adapter at_once;
    surgeon::prune(at_once, options);
    CHECK(at_once.w_a == sequential.w_a);
    CHECK(at_once.w_b != sequential.w_b);
  }
  SECTION("Wanda 2:4, several shots") {
    surgeon::prune_options options;
    options.how = surgeon::method::wanda;
    options.what = surgeon::structure::n_m;
    options.sparsity = 0.5;
    options.shots = 2;
    options.sequential = true;
    chain_adapter model;
    const auto reports = surgeon::prune(model, options);
    CHECK(model.calibrations == 4);
    CHECK(reports[0].achieved_sparsity == Approx(0.25).margin(0.02));
    CHECK(reports[1].achieved_sparsity == Approx(0.5));
    for (const auto* w : {&model.w_a, &model.w_b}) {
      for (std::size_t g = 0; g < w->size(); g += 4) {
        int zeros = 0;
        for (std::size_t k = g; k < g + 4; ++k) zeros += (*w)[k] == 0.0f ? 1 : 0;
        CHECK(zeros == 2);
      }
    }
  }
}

namespace {

// chain_adapter with output gradients for LLM Surgeon: fixed per-token gradients of a's and b's
// outputs (the same every pass, so G is the same in every pass and only b's input changes).
struct chain_adapter_with_gradients : chain_adapter {
  std::vector<float> g_a, g_b;
  chain_adapter_with_gradients() {
    std::mt19937 engine(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    g_a.resize(static_cast<std::size_t>(tokens * 12));
    g_b.resize(static_cast<std::size_t>(tokens * 8));
    for (auto* v : {&g_a, &g_b}) {
      for (float& e : *v) e = normal(engine);
    }
  }
  void calibrate(surgeon::calibration_sink& sink, int shot) {
    chain_adapter::calibrate(sink, shot);
    sink.output_grad("a", surgeon::host_matrix_view<const float>(g_a.data(), tokens, 12));
    sink.output_grad("b", surgeon::host_matrix_view<const float>(g_b.data(), tokens, 8));
  }
};

surgeon::host_matrix<double> second_moment(const std::vector<float>& rows_of, index_t tokens, index_t dim) {
  surgeon::factor_accumulator<double> accumulator(dim);
  surgeon::cpu::context ctx;
  accumulator.add(ctx, surgeon::host_matrix_view<const float>(rows_of.data(), tokens, dim));
  return accumulator.mean();
}

}  // namespace

TEST_CASE("sequential LLM Surgeon: the one-pass mask, each group updated with its input re-measured",
          "[prune][sequential]") {
  const auto structure_kind = GENERATE(surgeon::structure::unstructured, surgeon::structure::n_m);
  CAPTURE(structure_kind == surgeon::structure::n_m);
  surgeon::prune_options options;
  options.how = surgeon::method::llm_surgeon;
  options.what = structure_kind;
  options.sparsity = 0.5;
  options.shots = 1;
  options.pcg.tolerance = 1e-10;  // converged, so that the oracle below is exact
  options.pcg.float_products = false;
  options.pcg.max_iterations = 1000;
  chain_adapter_with_gradients one_pass;
  surgeon::prune(one_pass, options);
  options.sequential = true;
  chain_adapter_with_gradients sequential;
  const auto reports = surgeon::prune(sequential, options);
  CHECK(sequential.calibrations == 3);  // every matrix once, then one input pass per group: {a}, {b}
  CHECK(reports.back().achieved_sparsity == Approx(0.5));
  // The mask is the one-pass mask (costs and threshold from the first pass).
  for (std::size_t k = 0; k < 2; ++k) {
    const auto& w1 = k == 0 ? one_pass.w_a : one_pass.w_b;
    const auto& ws = k == 0 ? sequential.w_a : sequential.w_b;
    for (std::size_t e = 0; e < w1.size(); ++e) CHECK((w1[e] == 0.0f) == (ws[e] == 0.0f));
  }
  // a's input x does not depend on any layer: its update is the one-pass update.
  for (std::size_t e = 0; e < sequential.w_a.size(); ++e)
    CHECK(sequential.w_a[e] == Approx(one_pass.w_a[e]).margin(1e-5));
  // b is updated with A from h of the updated a, and G from the first pass: the oracle by hand.
  chain_adapter_with_gradients dense;
  const surgeon::mask b_mask =
      surgeon::mask::of_zeros(surgeon::host_matrix_view<const float>(sequential.w_b.data(), 8, 12));
  const surgeon::host_matrix<double> a = second_moment(sequential.hidden(), chain_adapter::tokens, 12);
  const surgeon::host_matrix<double> g = second_moment(dense.g_b, chain_adapter::tokens, 8);
  surgeon::cpu::context ctx;
  std::vector<float> w_b = dense.w_b;
  const surgeon::host_matrix_view<float> weights(w_b.data(), 8, 12);
  const auto curvature =
      surgeon::cpu::factorize<float>(ctx, g.view(), a.view(), surgeon::default_damping(options.how),
                                     surgeon::host_matrix_view<const float>(weights));
  surgeon::cpu::obs_update_full(ctx, curvature, weights, b_mask, options.pcg);
  b_mask.apply(weights);
  double largest = 0.0;
  for (std::size_t e = 0; e < w_b.size(); ++e) {
    largest = std::max(largest, std::abs(static_cast<double>(w_b[e])));
    CHECK(sequential.w_b[e] == Approx(w_b[e]).margin(1e-5));
  }
  CHECK(largest > 0.1);
  // ... which is not the one-pass update of b (its input came from the dense a).
  double difference = 0.0;
  for (std::size_t e = 0; e < w_b.size(); ++e)
    difference = std::max(difference, std::abs(static_cast<double>(sequential.w_b[e] - one_pass.w_b[e])));
  CHECK(difference > 1e-3);
}

TEST_CASE("recommended_sequential: the layer-local methods and LLM Surgeon's element masks",
          "[prune][sequential]") {
  using surgeon::method;
  using surgeon::structure;
  CHECK(surgeon::recommended_sequential(method::sparsegpt, structure::unstructured));
  CHECK(surgeon::recommended_sequential(method::wanda, structure::n_m));
  CHECK(surgeon::recommended_sequential(method::llm_surgeon, structure::n_m));
  CHECK(surgeon::recommended_sequential(method::llm_surgeon, structure::unstructured));
  CHECK_FALSE(surgeon::recommended_sequential(method::llm_surgeon, structure::rows_columns));
  CHECK_FALSE(surgeon::recommended_sequential(method::kobd, structure::n_m));
  CHECK_FALSE(surgeon::recommended_sequential(method::magnitude, structure::unstructured));
  CHECK_FALSE(surgeon::prune_options{}.sequential);  // opt-in: its cost depends on the adapter
}

TEST_CASE("sequential pruning: refused for global-threshold methods and explicit groups; budget checked",
          "[prune][sequential]") {
  chain_adapter model;
  surgeon::prune_options options;
  options.sequential = true;
  for (const auto how : {surgeon::method::magnitude, surgeon::method::lobd, surgeon::method::kobd}) {
    options.how = how;
    CHECK_THROWS_AS(surgeon::pruning_session<chain_adapter>(model, options), surgeon::logic_error);
  }
  options.how = surgeon::method::llm_surgeon;  // element masks only: rows-cols is refused
  options.what = surgeon::structure::rows_columns;
  CHECK_THROWS_AS(surgeon::pruning_session<chain_adapter>(model, options), surgeon::logic_error);
  options.what = surgeon::structure::unstructured;
  // Sequential LLM Surgeon: every factor (x 16², G_a 12², h 12², G_b 8²) and every cost (12·16,
  // 8·12) of the first pass, plus the largest group's factors (a: 16² + 12²) and curvature
  // (2·12² + 2·16²).
  CHECK(surgeon::estimate_working_bytes(model.matrices(), options, 0) ==
        (16 * 16 + 12 * 12 + 12 * 12 + 8 * 8 + 12 * 16 + 8 * 12 + 16 * 16 + 12 * 12 + 2 * 12 * 12 +
         2 * 16 * 16) *
            sizeof(double));
  options.how = surgeon::method::sparsegpt;
  options.group_size = 1;
  CHECK_THROWS_AS(surgeon::pruning_session<chain_adapter>(model, options), surgeon::logic_error);
  options.group_size = 0;
  // The largest group (a: H of 16², about three copies) against the budget.
  const auto matrices = model.matrices();
  const std::size_t need = surgeon::estimate_working_bytes(matrices, options, 0);
  CHECK(need == 3 * 16 * 16 * sizeof(double) + 16 * 16 * sizeof(double));
  options.memory_budget = need - 1;
  CHECK_THROWS_AS(surgeon::pruning_session<chain_adapter>(model, options), surgeon::logic_error);
  options.memory_budget = need;
  CHECK(surgeon::pruning_session<chain_adapter>(model, options).group_size() == 0);
  // Wanda: one group's diagonal and costs, not every matrix's costs.
  options.how = surgeon::method::wanda;
  CHECK(surgeon::estimate_working_bytes(matrices, options, 0) == (16 + 12 * 16) * sizeof(double));
}

namespace {

// The toy read as a Llama FFN: a and b read one input (gate and up), c reads a width-12 input
// (down). Neuron i is row i of a and b and column i of c; rows 10 and 11 of b with column 10 and
// 11 of c form a follower of neurons 0 and 1 (as a KV head follows its query heads), and rows 10
// and 11 of a belong to no unit.
struct coupled_toy : toy_adapter {
  surgeon::coupled_units units() const {
    using surgeon::line_kind;
    surgeon::coupled_units result;
    for (index_t i = 0; i < 10; ++i) {
      result.units.push_back(
          {"neuron." + std::to_string(i),
           {{0, line_kind::row, i, 1}, {1, line_kind::row, i, 1}, {2, line_kind::column, i, 1}}});
    }
    result.followers.push_back(
        {surgeon::coupled_unit{"follower", {{1, line_kind::row, 10, 2}, {2, line_kind::column, 10, 2}}},
         {0, 1}});
    return result;
  }
  // Whether row i of a matrix [rows, cols] stored in w is all zero (column when `column`).
  static bool line_zero(const std::vector<float>& w, index_t cols, index_t rows, index_t line, bool column) {
    const index_t n = column ? rows : cols;
    for (index_t t = 0; t < n; ++t) {
      const index_t k = column ? t * cols + line : line * cols + t;
      if (w[static_cast<std::size_t>(k)] != 0.0f) return false;
    }
    return true;
  }
};

}  // namespace

TEST_CASE("coupled units prune as the costs, select_units and row/column updates compose", "[prune][units]") {
  // The reference is the dense pipeline: full factor means (identity where the method ignores a
  // factor), cpu::factorize, row and column costs, select_units, and for LLM Surgeon each
  // matrix's row/column OBS update.
  const auto how = GENERATE(surgeon::method::magnitude, surgeon::method::lobd, surgeon::method::kobd,
                            surgeon::method::llm_surgeon);
  CAPTURE(surgeon::to_string(how));
  full_factors data;
  toy_adapter::feed(data);
  coupled_toy model;
  coupled_toy reference;
  surgeon::prune_options options;
  options.how = how;
  options.what = surgeon::structure::coupled;
  options.sparsity = 0.3;
  options.shots = 1;
  const auto reports = surgeon::prune(model, options);

  const surgeon::method_traits traits = surgeon::traits_of(how);
  std::vector<surgeon::prunable_matrix> matrices = reference.matrices();
  std::vector<std::vector<double>> row_costs;
  std::vector<std::vector<double>> col_costs;
  std::vector<surgeon::cpu::kronecker_curvature> curvatures;
  const surgeon::damping damp = surgeon::default_damping(how);
  for (const surgeon::prunable_matrix& m : matrices) {
    const surgeon::host_matrix_view<const float> w(m.weight);
    const auto g = data.mean_or_identity("g:" + m.name, traits.needs_output_gradients, w.rows());
    const auto a = data.mean_or_identity("a:" + m.input_key, traits.needs_inputs, w.cols());
    curvatures.push_back(surgeon::cpu::factorize(data.ctx, g.view(), a.view(), damp, w));
    row_costs.push_back(surgeon::cpu::row_costs(data.ctx, how, curvatures.back(), w));
    col_costs.push_back(surgeon::cpu::column_costs(data.ctx, how, curvatures.back(), w));
  }
  const surgeon::unit_selection chosen = surgeon::select_units(row_costs, col_costs, reference.units(), 0.3);
  REQUIRE(!chosen.taken.empty());
  for (std::size_t k = 0; k < matrices.size(); ++k) {
    if (how == surgeon::method::llm_surgeon)
      surgeon::cpu::update_rows_columns(data.ctx, curvatures[k], matrices[k].weight, chosen.rows[k],
                                        chosen.cols[k]);
    chosen.masks[k].apply(matrices[k].weight);
  }
  CHECK(reports.back().removed == chosen.removed);
  const auto near = [](const std::vector<float>& x, const std::vector<float>& y) {
    float most = 0.0f;
    for (std::size_t i = 0; i < x.size(); ++i) most = std::max(most, std::abs(x[i] - y[i]));
    return most;
  };
  CHECK(near(model.w_a, reference.w_a) < 1e-5f);
  CHECK(near(model.w_b, reference.w_b) < 1e-5f);
  CHECK(near(model.w_c, reference.w_c) < 1e-5f);
  if (how != surgeon::method::llm_surgeon) {
    // Without an update the kept weights are the originals.
    const toy_adapter original;
    for (std::size_t i = 0; i < original.w_a.size(); ++i)
      CHECK((model.w_a[i] == 0.0f || model.w_a[i] == original.w_a[i]));
  }
}

TEST_CASE("coupled units over several shots remove whole units and their followers", "[prune][units]") {
  const auto how = GENERATE(surgeon::method::kobd, surgeon::method::llm_surgeon);
  CAPTURE(surgeon::to_string(how));
  coupled_toy model;
  surgeon::prune_options options;
  options.how = how;
  options.what = surgeon::structure::coupled;
  options.sparsity = 0.5;
  options.shots = 3;
  const auto reports = surgeon::prune(model, options);
  REQUIRE(reports.size() == 3);
  // A neuron removes 16 + 16 + 8 weights, the follower 2·16 + 2·8: the budget of each shot is met
  // to within one neuron and the follower it completes.
  for (const auto& r : reports) {
    CHECK(r.achieved_sparsity <= r.target_sparsity + 1e-12);
    CHECK(r.achieved_sparsity >= r.target_sparsity - 88.0 / static_cast<double>(total));
  }
  // Every unit is whole: its three lines are all zero or none is.
  int removed_units = 0;
  for (index_t i = 0; i < 10; ++i) {
    const bool a = coupled_toy::line_zero(model.w_a, 16, 12, i, false);
    const bool b = coupled_toy::line_zero(model.w_b, 16, 12, i, false);
    const bool c = coupled_toy::line_zero(model.w_c, 12, 8, i, true);
    CAPTURE(i);
    CHECK(a == b);
    CHECK(b == c);
    removed_units += a ? 1 : 0;
  }
  CHECK(removed_units >= 4);
  const bool leaders = coupled_toy::line_zero(model.w_a, 16, 12, 0, false) &&
                       coupled_toy::line_zero(model.w_a, 16, 12, 1, false);
  CHECK(coupled_toy::line_zero(model.w_b, 16, 12, 10, false) == leaders);
  CHECK(coupled_toy::line_zero(model.w_c, 12, 8, 11, true) == leaders);
  // Lines outside every unit stay: rows 10 and 11 of a.
  CHECK_FALSE(coupled_toy::line_zero(model.w_a, 16, 12, 10, false));
  CHECK_FALSE(coupled_toy::line_zero(model.w_a, 16, 12, 11, false));
  // The type-erased adapter forwards units(): the same weights.
  coupled_toy erased_model;
  surgeon::any_adapter erased(erased_model);
  surgeon::prune(erased, options);
  CHECK(erased_model.w_a == model.w_a);
  CHECK(erased_model.w_c == model.w_c);
}

TEST_CASE("coupled units refuse what cannot work", "[prune][units]") {
  surgeon::prune_options options;
  options.what = surgeon::structure::coupled;
  options.sparsity = 0.3;
  SECTION("an adapter without units()") {
    toy_adapter model;
    CHECK_THROWS_WITH(surgeon::prune(model, options), Catch::Contains("units()"));
    surgeon::any_adapter erased(model);
    CHECK_THROWS_WITH(surgeon::prune(erased, options), Catch::Contains("coupled units"));
  }
  SECTION("methods without row and column scores") {
    for (const auto how : {surgeon::method::wanda, surgeon::method::sparsegpt}) {
      coupled_toy model;
      options.how = how;
      CHECK_THROWS_WITH(surgeon::prune(model, options), Catch::Contains("coupled units"));
    }
  }
  SECTION("sequential pruning") {
    coupled_toy model;
    options.sequential = true;
    CHECK_THROWS_AS(surgeon::prune(model, options), surgeon::logic_error);
  }
  SECTION("units outside the matrices") {
    struct bad_units : toy_adapter {
      surgeon::coupled_units units() const {
        return {{{"neuron.99", {{2, surgeon::line_kind::column, 99, 1}}}}, {}};
      }
    } model;
    CHECK_THROWS_WITH(surgeon::prune(model, options), Catch::Contains("neuron.99"));
    CHECK(model.zeros() == 0);
  }
  CHECK(surgeon::default_shots(surgeon::structure::coupled) == 8);
  CHECK_FALSE(surgeon::has_sequential_form(surgeon::method::llm_surgeon, surgeon::structure::coupled));
  CHECK_FALSE(surgeon::uses_diagonals_only(surgeon::method::kobd, surgeon::structure::coupled));
}

TEST_CASE("LLM Surgeon costs a unit by the lines that read it and compensates through them alone",
          "[prune][units]") {
  // Rows of a and b feed the neuron's column of c (unit_lines::feeds_unit): LLM Surgeon's unit
  // cost is the column's, the rows of a and b are zeroed without an update, and c's columns get
  // the OBS column update. The reference is the dense pipeline with those rules.
  struct feeding_toy : coupled_toy {
    surgeon::coupled_units units() const {
      surgeon::coupled_units result = coupled_toy::units();
      for (surgeon::coupled_unit& u : result.units) {
        for (surgeon::unit_lines& l : u.lines) l.feeds_unit = l.kind == surgeon::line_kind::row;
      }
      for (surgeon::unit_lines& l : result.followers.front().unit.lines)
        l.feeds_unit = l.kind == surgeon::line_kind::row;
      return result;
    }
  };
  full_factors data;
  toy_adapter::feed(data);
  feeding_toy model;
  feeding_toy reference;
  const toy_adapter original;
  surgeon::prune_options options;
  options.what = surgeon::structure::coupled;
  options.sparsity = 0.3;
  options.shots = 1;
  const auto reports = surgeon::prune(model, options);

  std::vector<surgeon::prunable_matrix> matrices = reference.matrices();
  std::vector<std::vector<double>> row_costs;
  std::vector<std::vector<double>> col_costs;
  std::vector<surgeon::cpu::kronecker_curvature> curvatures;
  for (const surgeon::prunable_matrix& m : matrices) {
    const surgeon::host_matrix_view<const float> w(m.weight);
    const auto g = data.mean_or_identity("g:" + m.name, true, w.rows());
    const auto a = data.mean_or_identity("a:" + m.input_key, true, w.cols());
    curvatures.push_back(
        surgeon::cpu::factorize(data.ctx, g.view(), a.view(), surgeon::default_damping(options.how), w));
    row_costs.push_back(std::vector<double>(static_cast<std::size_t>(w.rows()), 0.0));  // rows only feed
    col_costs.push_back(surgeon::cpu::column_costs(data.ctx, options.how, curvatures.back(), w));
  }
  const surgeon::unit_selection chosen = surgeon::select_units(row_costs, col_costs, reference.units(), 0.3);
  REQUIRE(chosen.taken.size() >= 2);
  surgeon::cpu::update_rows_columns(data.ctx, curvatures[2], matrices[2].weight, {}, chosen.cols[2]);
  for (std::size_t k = 0; k < matrices.size(); ++k) chosen.masks[k].apply(matrices[k].weight);
  CHECK(reports.back().removed == chosen.removed);
  float most = 0.0f;
  for (std::size_t i = 0; i < model.w_c.size(); ++i)
    most = std::max(most, std::abs(model.w_c[i] - reference.w_c[i]));
  CHECK(most < 1e-5f);
  CHECK(model.w_c != original.w_c);
  // a and b: their rows are zeroed or untouched, never updated.
  CHECK(model.w_a == reference.w_a);
  CHECK(model.w_b == reference.w_b);
  for (std::size_t i = 0; i < original.w_a.size(); ++i) {
    CHECK((model.w_a[i] == 0.0f || model.w_a[i] == original.w_a[i]));
    CHECK((model.w_b[i] == 0.0f || model.w_b[i] == original.w_b[i]));
  }
}
