/// @file detail/prune_driver.hpp
/// @brief The backend-neutral multi-shot pruning driver (METHOD.md §5): `basic_pruning_session`
/// over a caller-provided model adapter and a backend policy. Include `surgeon/prune.hpp` (CPU
/// backend) or `surgeon/cuda/prune.hpp` (CUDA backend), not this file: it includes no backend, and
/// no Eigen, so that nvcc translation units can use it.
///
/// The library never owns the model. The caller describes it through an *adapter*:
///
/// ```cpp
/// struct my_adapter {
///   // The prunable matrices: name, the key of the input they read (layers that read the same
///   // input share one A), and a view of the weights [out, in] in the caller's buffers.
///   std::vector<surgeon::prunable_matrix> matrices();
///   // One calibration pass: feed every prunable matrix's inputs (once per input key) and output
///   // gradients to the sink. `shot` lets the adapter vary or fix its sampling.
///   void calibrate(surgeon::calibration_sink& sink, int shot);
///   // Optional: a quality measure after each shot (e.g. perplexity); lower is better. May
///   // return std::optional<double> instead (nothing: no evaluation in that shot's report).
///   double evaluate();
/// };
/// ```
///
/// `surgeon::any_adapter` (surgeon/adapter.hpp) erases an adapter's type, so that the model code
/// and the driver (e.g. the CUDA one, in an nvcc translation unit) can be compiled apart.
///
/// Each shot t of T recomputes the K-FAC factors from the current weights, computes every
/// matrix's costs, takes one global threshold for the target sparsity t·s/T, and applies the
/// method's update. Weights pruned in earlier shots have cost 0 and stay exactly zero.
#pragma once

#include <surgeon/curvature.hpp>
#include <surgeon/diagonal.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/select.hpp>
#include <surgeon/types.hpp>
#include <surgeon/update.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace surgeon {

template <typename Adapter, typename Backend>
class basic_pruning_session;

namespace detail {

/// @brief Where a calibration pass's inputs and gradients go: the backend's K-FAC accumulators,
/// keyed "a:<input_key>" and "g:<matrix name>". Implemented by each backend's `store`.
class factor_sink {
 public:
  virtual ~factor_sink() = default;
  /// True when the key was defined for the current pass.
  virtual bool contains(const std::string& key) const = 0;
  /// Adds the token rows `x` [tokens, dim] to the accumulator of `key`.
  virtual void add(const std::string& key, host_matrix_view<const float> x) = 0;
};

/// @brief Host accumulators of factor diagonals for the diagonal methods (`uses_diagonals_only`),
/// the same on every backend: O(tokens·dim) per batch, `dim` doubles per key.
class diagonal_store final : public factor_sink {
 public:
  void define(const std::string& key, index_t dim) {
    if (accumulators_.count(key) == 0) accumulators_.emplace(key, diagonal_accumulator(dim));
  }
  bool contains(const std::string& key) const override { return accumulators_.count(key) != 0; }
  void add(const std::string& key, host_matrix_view<const float> x) override { accumulators_.at(key).add(x); }
  const diagonal_accumulator& at(const std::string& key) const { return accumulators_.at(key); }

 private:
  std::map<std::string, diagonal_accumulator> accumulators_;
};

}  // namespace detail

/// @brief One prunable weight matrix of the caller's model.
struct prunable_matrix {
  std::string name;                ///< unique ("blk.0.attn_q")
  std::string input_key;           ///< key of its input; shared by layers reading the same input
  host_matrix_view<float> weight;  ///< [out, in], the caller's buffer, updated in place
};

/// @brief Receives one calibration pass from an adapter and accumulates the K-FAC factors (in the
/// session's backend: host or device accumulators).
///
/// Only the factors the method needs are accumulated (none for magnitude, A only for Wanda,
/// L-OBD and SparseGPT). Inputs and gradients of matrices outside the current group are ignored.
/// An adapter should ask `wants_output_gradients()` before its backward pass: when it is false
/// (Wanda, L-OBD and SparseGPT), the layer inputs of a forward pass are all the pass needs, at
/// about a third of the cost of a forward plus a backward pass.
class calibration_sink {
 public:
  /// @brief True when this pass accumulates layer inputs (the A factors): every method but
  /// magnitude, which the driver never calibrates.
  bool wants_inputs() const noexcept { return wants_a_; }
  /// @brief True when this pass accumulates output gradients (the G factors: K-OBD and LLM
  /// Surgeon). When false, `output_grad` ignores what it is given and the adapter may skip its
  /// backward pass.
  bool wants_output_gradients() const noexcept { return wants_g_; }
  /// @brief True when `input(input_key, …)` would be accumulated in this pass (the key belongs to a
  /// matrix of the current group and inputs are wanted).
  bool wants_input(const std::string& input_key) const {
    return wants_a_ && store_->contains("a:" + input_key);
  }
  /// @brief True when `output_grad(name, …)` would be accumulated in this pass.
  bool wants_output_grad(const std::string& name) const { return wants_g_ && store_->contains("g:" + name); }

  /// @brief Adds the input X `[tokens, in]` read by every matrix with `input_key`.
  /// @throws logic_error on a shape mismatch or non-finite input.
  void input(const std::string& input_key, host_matrix_view<const float> x) {
    if (!wants_a_ || !store_->contains("a:" + input_key)) return;
    store_->add("a:" + input_key, x);
  }
  /// @brief Adds the gradient `[tokens, out]` at the output of matrix `name`.
  /// @throws logic_error on a shape mismatch or non-finite input.
  void output_grad(const std::string& name, host_matrix_view<const float> gy) {
    if (!wants_g_ || !store_->contains("g:" + name)) return;
    store_->add("g:" + name, gy);
  }

 private:
  template <typename Adapter, typename Backend>
  friend class basic_pruning_session;
  calibration_sink(detail::factor_sink& store, bool wants_a, bool wants_g)
      : store_(&store), wants_a_(wants_a), wants_g_(wants_g) {}
  detail::factor_sink* store_;
  bool wants_a_ = false;
  bool wants_g_ = false;
};

/// @brief LLM Surgeon's weight update for element masks (unstructured and N:M).
enum class update_kind {
  /// The exact OBS update of each matrix's whole mask (`obs_update_full`, by `prune_options::pcg`):
  /// the default, best on text the model was not calibrated on (docs/RESULTS.md).
  whole_mask,
  /// The paper's update: chunks of whole rows of at most `prune_options::budget` removed weights,
  /// each solved exactly, later chunks seeing the earlier ones (`obs_update`).
  chunked,
  /// No update: LLM Surgeon's costs and global threshold only, the weights just masked (an
  /// ablation that separates the costs' effect from the update's).
  none,
};

/// @brief The shot count T of `prune_options::shots` when it is not set: 8 for rows and columns
/// (one shot of structured pruning to 70 % destroys a model, eight keep it; docs/RESULTS.md), 1
/// otherwise (with the whole-mask update, five shots gain 3 % on the calibration text's domain and
/// under 1 % on another text, for three times the time).
constexpr int default_shots(structure what) noexcept {
  return what == structure::rows_columns ? 8 : 1;
}

/// @brief Whether sequential calibration (`prune_options::sequential`) gave the better model for
/// this method and structure on SmolLM2, on the calibration text's domain and on another
/// (docs/RESULTS.md, "Across domains"): SparseGPT and Wanda (their own tools' protocol) and LLM
/// Surgeon's element masks. At 2:4 it is LLM Surgeon's main lever (77.4 vs 82.9 on wikitext-2,
/// 102.9 vs 113.0 on the Debian Policy Manual, seed 4); unstructured it is better on both texts
/// and both seeds by 0.2–1.3 % and needs less than half the peak memory (3.6 vs 8.5 GB) for 1.25×
/// the time. Not rows and columns (no sequential form) nor the other global-threshold methods.
/// `prune_options::sequential` stays false unless the caller sets it, because its cost depends on
/// the adapter: one forward pass per group, cheap only when the adapter resumes each pass from the
/// previous one as the Llama adapter does; `surgeon-prune` sets it from this function. O(1).
constexpr bool recommended_sequential(method how, structure what) noexcept {
  return how == method::sparsegpt || how == method::wanda ||
         (how == method::llm_surgeon && what != structure::rows_columns);
}

/// @brief The damping a method gets when `prune_options::damp` is unset. LLM Surgeon: λ_G = 1,
/// λ_A = 0.1. The paper's λ_G = 0.1, λ_A = 0.01 fit the update to the calibration text's factors:
/// on SmolLM2 at 50 % the stronger damping keeps wikitext-2 about equal and lowers the perplexity
/// on a text of another domain by 7–11 %, and the better-conditioned system needs half the
/// conjugate-gradient iterations (docs/RESULTS.md, "Across domains"). Every other method keeps
/// λ_G = 0.1, λ_A = 0.01 (SparseGPT's 1 % of the mean diagonal of H is its authors' setting). O(1).
constexpr damping default_damping(method how) noexcept {
  damping d;
  d.g = how == method::llm_surgeon ? 1.0 : 0.1;
  d.a = how == method::llm_surgeon ? 0.1 : 0.01;
  return d;
}

/// @brief What to prune and how (defaults: LLM Surgeon, unstructured, the whole-mask update,
/// `default_shots`).
struct prune_options {
  method how = method::llm_surgeon;
  structure what = structure::unstructured;
  nm_pattern pattern{2, 4};  ///< for structure::n_m
  double sparsity = 0.5;     ///< final fraction of weights removed from the matrices
  /// T; the target at shot t is t·sparsity/T. Unset: `default_shots(what)`.
  std::optional<int> shots;
  /// λ_G, λ_A (SparseGPT uses λ_A alone). Unset: `default_damping(how)`.
  std::optional<damping> damp;
  update_kind update = update_kind::whole_mask;  ///< LLM Surgeon's update of element masks
  correlate budget{2000};                        ///< `update_kind::chunked`'s chunks
  pcg_options pcg{};                             ///< `update_kind::whole_mask`'s solver
  /// Matrices whose factors are alive at once: 0 = all. With k > 0 the driver runs one
  /// calibration pass per group of k matrices (in adapter order) and frees each group's factors
  /// and inverses before the next, bounding memory at the cost of more passes. The costs of every
  /// group are computed before any weight changes, but the update pass of a group runs after the
  /// earlier groups were updated, so on a real model its curvature is measured on the partly
  /// pruned model (closer to layer-sequential pruning) and results differ slightly from k = 0.
  int group_size = 0;
  /// Bytes the driver's own buffers may hold at once (0 = no limit): with `group_size = 0` the
  /// session then picks the largest group size whose `estimate_working_bytes` fits (0 — all
  /// matrices at once — when that fits), and refuses to start when not even one matrix at a time
  /// fits. An explicit `group_size` is used as given.
  std::size_t memory_budget = 0;
  /// Sequential pruning, the protocol of SparseGPT's and Wanda's own tools: the matrices are
  /// calibrated and pruned group by group in adapter order, each group's calibration pass running
  /// on the model with every earlier group already pruned, so each layer compensates the errors of
  /// the layers before it. A group is a maximal run of consecutive matrices that read the same
  /// input (`sequential_groups`; a Llama block gives q,k,v | o | gate,up | down). For SparseGPT
  /// (uniform per layer) and Wanda (per row, or N:M), which need no global threshold, each group is
  /// masked and updated from its own pass. For LLM Surgeon (element masks), one pass of every
  /// matrix (A and G) gives the costs and the one global threshold first; then each group's pass
  /// re-measures only its input's A (a forward pass), and the group is updated with that A and the
  /// first pass's G. `group_size` must stay 0 (the memory budget is checked against the largest
  /// group). Costs one calibration pass per group; an adapter can make a pass that wants only late
  /// layers cheap by resuming from cached activations, as the Llama adapter does.
  bool sequential = false;
};

/// @brief The groups of sequential pruning (`prune_options::sequential`): maximal runs of
/// consecutive matrices with the same input key, in order. Cost: O(number of matrices).
inline std::vector<std::vector<std::size_t>> sequential_groups(const std::vector<prunable_matrix>& matrices) {
  std::vector<std::vector<std::size_t>> groups;
  for (std::size_t k = 0; k < matrices.size(); ++k) {
    if (groups.empty() || matrices[groups.back().back()].input_key != matrices[k].input_key)
      groups.emplace_back();
    groups.back().push_back(k);
  }
  return groups;
}

/// @brief The working memory of one shot in bytes, for groups of `group_size` matrices (0 = all at
/// once): the K-FAC accumulators of a group (one A per input key, one G per matrix, double; their
/// diagonals alone for the diagonal methods, `uses_diagonals_only`), the damped factors and their
/// inverses (double Ĝ, Ĝ⁻¹, Â, Â⁻¹ per matrix: of every matrix when one group holds them all for
/// the update, else of one matrix at a time; none for the diagonal methods), and the costs of every
/// matrix until the threshold (8 bytes per weight; per row and column for rows-cols). It leaves
/// out the model itself, the adapter's calibration buffers and each update's transient solver
/// buffers. The same on both backends (host memory on the CPU, device memory on CUDA, where
/// `costs_on_host` moves the cost term to the host). Cost: O(number of matrices).
/// With `options.sequential` the groups are `sequential_groups` whatever `group_size`, and each
/// group's costs are freed before the next group.
inline std::size_t estimate_working_bytes(const std::vector<prunable_matrix>& matrices,
                                          const prune_options& options, int group_size) {
  const std::size_t count = matrices.size();
  const std::size_t size = group_size > 0 ? static_cast<std::size_t>(group_size) : count;
  std::vector<std::vector<std::size_t>> groups;
  if (options.sequential) {
    groups = sequential_groups(matrices);
  } else {
    for (std::size_t first = 0; first < count; first += size) {
      groups.emplace_back();
      for (std::size_t k = first; k < std::min(count, first + size); ++k) groups.back().push_back(k);
    }
  }
  const bool needs_a = options.how != method::magnitude;
  const bool needs_g = options.how == method::kobd || options.how == method::llm_surgeon;
  const bool updates = options.how == method::llm_surgeon && options.update != update_kind::none;
  const bool keep_all = updates && groups.size() == 1;
  const bool diagonal = uses_diagonals_only(options.how, options.what);
  const auto square = [diagonal](index_t n) {
    return diagonal ? static_cast<double>(n) : static_cast<double>(n) * static_cast<double>(n);
  };
  double costs = 0.0;
  double largest_group_costs = 0.0;
  double largest_curvature = 0.0;
  double all_curvature = 0.0;
  double largest_group_state = 0.0;
  double largest_group_curvature = 0.0;
  for (const std::vector<std::size_t>& group : groups) {
    std::set<std::string> inputs;
    double state = 0.0;
    double group_costs = 0.0;
    double group_curvature = 0.0;
    for (const std::size_t k : group) {
      const prunable_matrix& m = matrices[k];
      const index_t rows = m.weight.rows();
      const index_t cols = m.weight.cols();
      if (needs_a && inputs.insert(m.input_key).second) state += square(cols);
      if (needs_g) state += square(rows);
      // SparseGPT factors H = A in place of the Kronecker pair: about three C² per matrix. The
      // diagonal methods factorise nothing.
      const double curvature = diagonal                           ? 0.0
                               : options.how == method::sparsegpt ? 3.0 * square(cols)
                                                                  : 2.0 * square(rows) + 2.0 * square(cols);
      largest_curvature = std::max(largest_curvature, curvature);
      all_curvature += curvature;
      group_curvature += curvature;
      if (options.how != method::sparsegpt) {
        group_costs += options.what == structure::rows_columns
                           ? static_cast<double>(rows + cols)
                           : static_cast<double>(rows) * static_cast<double>(cols);
      }
    }
    costs += group_costs;
    largest_group_costs = std::max(largest_group_costs, group_costs);
    largest_group_state = std::max(largest_group_state, state);
    largest_group_curvature = std::max(largest_group_curvature, group_curvature);
  }
  // Sequential LLM Surgeon keeps the first pass's factors of every matrix and every cost until the
  // global selection, then one group's A and curvatures at a time.
  const bool sequential_global = options.sequential && options.how == method::llm_surgeon;
  double all_state = 0.0;
  if (sequential_global) {
    std::set<std::string> inputs;
    for (const prunable_matrix& m : matrices) {
      if (inputs.insert(m.input_key).second) all_state += square(m.weight.cols());
      all_state += square(m.weight.rows());
    }
  }
  const double doubles = sequential_global
                             ? all_state + largest_group_state + largest_group_curvature + costs
                             : largest_group_state + (keep_all ? all_curvature : largest_curvature) +
                                   (options.sequential ? largest_group_costs : costs);
  return static_cast<std::size_t>(doubles * static_cast<double>(sizeof(double)));
}

/// @brief The group size a session uses: `options.group_size` when set or without a budget;
/// otherwise 0 when everything fits `memory_budget`, else the largest k that fits.
/// Cost: O(number of matrices²) estimates at most.
/// @throws logic_error if a budget is set and not even one matrix at a time fits it.
inline int choose_group_size(const std::vector<prunable_matrix>& matrices, const prune_options& options) {
  if (options.sequential) {
    if (options.memory_budget != 0 && estimate_working_bytes(matrices, options, 0) > options.memory_budget) {
      SURGEON_THROW(logic_error,
                    "prune: sequential pruning's largest group needs about {:.1f} MB of working memory, over "
                    "the budget of {:.1f} MB",
                    static_cast<double>(estimate_working_bytes(matrices, options, 0)) / 1e6,
                    static_cast<double>(options.memory_budget) / 1e6);
    }
    return 0;
  }
  if (options.group_size > 0 || options.memory_budget == 0) return options.group_size;
  if (estimate_working_bytes(matrices, options, 0) <= options.memory_budget) return 0;
  for (std::size_t k = matrices.size(); k >= 1; --k) {
    if (estimate_working_bytes(matrices, options, static_cast<int>(k)) <= options.memory_budget)
      return static_cast<int>(k);
  }
  SURGEON_THROW(
      logic_error,
      "prune: even one matrix at a time needs about {:.1f} MB of working memory, over the budget of "
      "{:.1f} MB",
      static_cast<double>(estimate_working_bytes(matrices, options, 1)) / 1e6,
      static_cast<double>(options.memory_budget) / 1e6);
}

/// @brief Wall time of one shot, phase by phase, in seconds. Every moment of the shot is counted
/// in exactly one phase (the bookkeeping between two phases in the one that follows), so the
/// phases add up to `shot_report::seconds`. On an asynchronous backend (CUDA) each phase ends with a
/// synchronisation of the backend's stream, so its device work is counted where it is queued.
struct shot_timings {
  /// The adapter's calibration passes (every group's; a grouped LLM Surgeon shot runs two per
  /// group, one for the costs and one for the update).
  double calibration = 0.0;
  /// Factor means, damping, Cholesky inverses and eigendecompositions (for the diagonal methods,
  /// the diagonals' means and the dead-structure test).
  double curvature = 0.0;
  double costs = 0.0;      ///< element, row or column costs of every matrix
  double selection = 0.0;  ///< the global threshold (per row for Wanda, per group for N:M) and the masks
  /// The OBS updates and the masking; for SparseGPT its whole per-matrix pass (its Cholesky
  /// factorisation of H included).
  double update = 0.0;
  double evaluation = 0.0;  ///< `adapter.evaluate()`, when the adapter has one
};

/// @brief What one shot did.
struct shot_report {
  int shot = 0;                    ///< 1-based
  double target_sparsity = 0.0;    ///< t·s/T
  double achieved_sparsity = 0.0;  ///< zeros / parameters over the prunable matrices
  index_t removed = 0;             ///< weights selected this shot (cumulative zeros included)
  double seconds = 0.0;            ///< wall time of the shot (calibration and evaluation included)
  shot_timings timings;            ///< `seconds`, phase by phase
  /// Largest λ_G used after escalation (0 when nothing was damped: SparseGPT, whose damping is its
  /// own, and the diagonal methods, whose costs use undamped diagonals).
  double max_lambda_g = 0.0;
  double max_lambda_a = 0.0;  ///< largest λ_A used after escalation (0 as for `max_lambda_g`)
  int escalations = 0;        ///< total damping escalations
  /// LLM Surgeon's element updates: conjugate-gradient iterations summed over the matrices (the
  /// whole-mask update's, or the chunk solves' of the chunked one), and the largest final relative
  /// residual of a matrix (see `update_report`). 0 for the other methods and structures.
  long long update_iterations = 0;
  double max_update_residual = 0.0;
  int group_size = 0;                ///< matrices per group used (0 = all at once; see memory_budget)
  std::optional<double> evaluation;  ///< adapter.evaluate() after the shot, when it has one
};

namespace detail {
template <typename A, typename = void>
struct has_evaluate : std::false_type {};
template <typename A>
struct has_evaluate<A, std::void_t<decltype(std::declval<A&>().evaluate())>> : std::true_type {};
template <typename B, typename = void>
struct has_for_each_concurrently : std::false_type {};
template <typename B>
struct has_for_each_concurrently<
    B, std::void_t<decltype(std::declval<B&>().for_each_concurrently(
           std::size_t{}, std::declval<const std::function<void(std::size_t)>&>()))>> : std::true_type {};
template <typename B, typename = void>
struct has_synchronize : std::false_type {};
template <typename B>
struct has_synchronize<B, std::void_t<decltype(std::declval<B&>().synchronize())>> : std::true_type {};
}  // namespace detail

/// @brief Runs the multi-shot schedule on one adapter with one backend. Not copyable; one per
/// pruning run. Use the aliases `surgeon::pruning_session<Adapter>` (CPU, surgeon/prune.hpp) or
/// `surgeon::cuda::pruning_session<Adapter>` (CUDA, surgeon/cuda/prune.hpp).
///
/// `Backend` is a policy with these members (see `cpu::prune_backend` and `cuda::prune_backend`):
/// - `store`: the K-FAC accumulators of one calibration pass, derived from `detail::factor_sink`;
///   `std::unique_ptr<store> make_store()`, `define(store&, key, dim)`, `empty(const store&, key)`,
///   `diagonal(const store&, key)` (the accumulated diagonal, host, for the dead-layer test);
/// - `curvature` (with `g.report()` and `a.report()`), made by
///   `factorize(store&, g_key, a_key, weights, damping)` (an empty key means the identity factor);
/// - `costs` (one matrix's element costs) from `element_costs(method, curvature, weights)`,
///   `zero_costs(rows, cols)` or `host_costs(host_matrix<double>)` (costs computed on the host,
///   those of the diagonal methods); `row_costs` / `column_costs` returning host vectors;
/// - `select_unstructured`, `select_per_row`, `select_nm` over `std::vector<costs>` (results as
///   select.hpp);
/// - `update_rows_columns`, `obs_update`, `obs_update_full` and `sparsegpt` on the host weights;
/// - optionally `synchronize()`: waits for the backend's queued work (called at the end of each
///   phase of `shot_timings`, so that asynchronous work is timed where it was queued);
/// - optionally `for_each_concurrently(count, task)`: runs independent per-matrix tasks (the
///   update pass when every curvature is in memory), perhaps several at once
///   (`cpu::prune_backend_options::update_threads`); without it they run in order.
template <typename Adapter, typename Backend>
class basic_pruning_session {
 public:
  /// @throws logic_error on inconsistent options (sparsity outside [0, 1), shots < 1, a method
  ///         without a score for the structure, an N:M sparsity above N/M, N:M with M not dividing
  ///         a matrix width).
  basic_pruning_session(Adapter& adapter, prune_options options, Backend backend = Backend{})
      : adapter_(adapter), options_(std::move(options)), backend_(std::move(backend)) {
    SURGEON_EXPECTS(options_.sparsity >= 0.0 && options_.sparsity < 1.0, "prune: sparsity {} outside [0, 1)",
                    options_.sparsity);
    if (!options_.shots) options_.shots = default_shots(options_.what);
    SURGEON_EXPECTS(*options_.shots >= 1, "prune: shots must be >= 1, got {}", *options_.shots);
    SURGEON_EXPECTS(options_.group_size >= 0, "prune: group_size must be >= 0, got {}", options_.group_size);
    if (!options_.damp) options_.damp = default_damping(options_.how);
    validate(*options_.damp);
    if (options_.what == structure::rows_columns) {
      SURGEON_EXPECTS(options_.how != method::wanda && options_.how != method::sparsegpt,
                      "prune: {} has no row/column score", to_string(options_.how));
    }
    if (options_.what == structure::n_m && options_.how == method::sparsegpt) {
      const double exact = static_cast<double>(options_.pattern.n) / static_cast<double>(options_.pattern.m);
      SURGEON_EXPECTS(std::abs(options_.sparsity - exact) < 1e-12,
                      "prune: SparseGPT's {}:{} prunes N of every M weights (sparsity {}), asked {}",
                      options_.pattern.n, options_.pattern.m, exact, options_.sparsity);
    }
    if (options_.what == structure::n_m) {
      const double most = static_cast<double>(options_.pattern.n) / static_cast<double>(options_.pattern.m);
      SURGEON_EXPECTS(options_.sparsity <= most + 1e-12,
                      "prune: {}:{} removes at most {} of the weights, asked {}", options_.pattern.n,
                      options_.pattern.m, most, options_.sparsity);
    }
    if (options_.sequential) {
      SURGEON_EXPECTS(
          options_.how == method::sparsegpt || options_.how == method::wanda ||
              (options_.how == method::llm_surgeon && options_.what != structure::rows_columns),
          "prune: sequential pruning is for SparseGPT, Wanda and LLM Surgeon's element masks (unstructured, "
          "N:M); not {} with this structure",
          to_string(options_.how));
      SURGEON_EXPECTS(options_.group_size == 0,
                      "prune: sequential pruning makes its own groups (runs of matrices with one input); "
                      "group_size must be 0, got {}",
                      options_.group_size);
    }
    const auto matrices = adapter_.matrices();
    SURGEON_EXPECTS(!matrices.empty(), "prune: the adapter lists no prunable matrix");
    std::set<std::string> names;
    for (const prunable_matrix& m : matrices) {
      SURGEON_EXPECTS(names.insert(m.name).second, "prune: two matrices are named '{}'", m.name);
      if (options_.what == structure::n_m) validate(options_.pattern, m.weight.cols());
    }
    options_.group_size = choose_group_size(matrices, options_);
  }

  /// @brief The group size the session uses (`prune_options::group_size`, or the one chosen for
  /// `prune_options::memory_budget`; 0 = all matrices at once).
  int group_size() const noexcept { return options_.group_size; }
  /// @brief The shot count T the session runs (`prune_options::shots`, or `default_shots`).
  int shots() const noexcept { return *options_.shots; }

  /// @brief Runs every shot; `on_shot` sees each report as it completes.
  /// @throws what the adapter, the factorisations or the updates throw.
  std::vector<shot_report> run(const std::function<void(const shot_report&)>& on_shot = {}) {
    std::vector<shot_report> reports;
    for (int t = 1; t <= *options_.shots; ++t) {
      reports.push_back(shot(t));
      if (on_shot) on_shot(reports.back());
    }
    return reports;
  }

  /// @brief One shot (1-based) of the schedule: target t·s/T.
  shot_report shot(int t) {
    using store_type = typename Backend::store;
    using curvature_type = typename Backend::curvature;
    using costs_type = typename Backend::costs;
    const auto start = std::chrono::steady_clock::now();
    phase_start_ = start;
    shot_report report;
    report.shot = t;
    report.target_sparsity =
        options_.sparsity * static_cast<double>(t) / static_cast<double>(*options_.shots);
    report.group_size = options_.group_size;
    std::vector<prunable_matrix> matrices = adapter_.matrices();
    const std::vector<std::vector<std::size_t>> groups =
        options_.sequential ? sequential_groups(matrices) : make_groups(matrices.size());
    dead_.clear();

    if (options_.how == method::sparsegpt) {
      // Uniform per layer, on the same factors: H = A.
      for (const auto& group : groups) {
        const std::unique_ptr<store_type> store = calibrate(matrices, group, t, true, false);
        lap(report.timings.calibration);
        // One matrix at a time: each holds its own H and factor (2·C² doubles), which the
        // memory budget counts once.
        for (const std::size_t k : group) {
          const prunable_matrix& m = matrices[k];
          backend_.sparsegpt(*store, "a:" + m.input_key, m.weight, options_, report.target_sparsity);
        }
        lap(report.timings.update);
      }
      finish(report, matrices, start);
      return report;
    }

    if (options_.sequential && options_.how == method::wanda) {  // SparseGPT took the branch above
      sequential_wanda(report, matrices, groups, t);
      finish(report, matrices, start);
      return report;
    }
    if (options_.sequential) {
      sequential_llm_surgeon(report, matrices, groups, t);
      finish(report, matrices, start);
      return report;
    }

    // 1. Costs of every matrix, group by group (the curvature is freed after each group unless
    //    it is needed again for the update and everything fits in one group).
    const bool needs_a = options_.how != method::magnitude;
    const bool needs_g = options_.how == method::kobd || options_.how == method::llm_surgeon;
    const bool updates = options_.how == method::llm_surgeon && options_.update != update_kind::none;
    std::vector<costs_type> element_costs(matrices.size());
    std::vector<std::vector<double>> row_costs(matrices.size());
    std::vector<std::vector<double>> col_costs(matrices.size());
    std::map<std::size_t, curvature_type> kept;
    const bool keep_curvature = updates && groups.size() == 1;
    const bool diagonal = uses_diagonals_only(options_.how, options_.what);
    for (const auto& group : groups) {
      if (diagonal) {
        // Factor diagonals only, accumulated on the host whatever the backend; no factorisation.
        detail::diagonal_store store;
        calibrate_into(
            store, matrices, group, t, needs_a, needs_g,
            [&store](const std::string& key, index_t dim) { store.define(key, dim); },
            [&store](const std::string& key) { return store.at(key).empty(); });
        lap(report.timings.calibration);
        for (const std::size_t k : group) {
          const prunable_matrix& m = matrices[k];
          const host_matrix_view<const float> w(m.weight);
          const diagonal_curvature curvature = make_diagonal_curvature(
              needs_g ? store.at("g:" + m.name).mean() : std::vector<double>(),
              needs_a ? store.at("a:" + m.input_key).mean() : std::vector<double>(), w);
          if (curvature.dead.live_rows.empty() || curvature.dead.live_cols.empty()) dead_.insert(k);
          lap(report.timings.curvature);
          if (options_.what == structure::rows_columns) {
            row_costs[k] = diagonal_row_costs(options_.how, curvature, w);
            col_costs[k] = diagonal_column_costs(options_.how, curvature, w);
          } else {
            element_costs[k] = backend_.host_costs(diagonal_element_costs(options_.how, curvature, w));
          }
          lap(report.timings.costs);
        }
        continue;
      }
      const std::unique_ptr<store_type> store = calibrate(matrices, group, t, needs_a, needs_g);
      lap(report.timings.calibration);
      for (const std::size_t k : group) {
        const prunable_matrix& m = matrices[k];
        const host_matrix_view<const float> w(m.weight);
        if (entirely_dead(*store, m, needs_a, needs_g)) {
          // Every row or every column is dead (METHOD.md §2): all of it counts as removed at cost 0.
          dead_.insert(k);
          if (options_.what == structure::rows_columns) {
            row_costs[k].assign(static_cast<std::size_t>(w.rows()), 0.0);
            col_costs[k].assign(static_cast<std::size_t>(w.cols()), 0.0);
          } else {
            element_costs[k] = backend_.zero_costs(w.rows(), w.cols());
          }
          lap(report.timings.curvature);
          continue;
        }
        curvature_type curvature = curvature_of(*store, m, needs_a, needs_g, report);
        lap(report.timings.curvature);
        if (options_.what == structure::rows_columns) {
          row_costs[k] = backend_.row_costs(options_.how, curvature, w);
          col_costs[k] = backend_.column_costs(options_.how, curvature, w);
        } else {
          element_costs[k] = backend_.element_costs(options_.how, curvature, w);
        }
        if (keep_curvature) kept.emplace(k, std::move(curvature));
        lap(report.timings.costs);
      }
    }

    // 2. One global threshold (per row for Wanda, as in its paper).
    std::vector<mask> masks;
    std::vector<std::vector<index_t>> rows;
    std::vector<std::vector<index_t>> cols;
    if (options_.what == structure::rows_columns) {
      structured_selection chosen = select_rows_columns(row_costs, col_costs, report.target_sparsity);
      masks = std::move(chosen.masks);
      rows = std::move(chosen.rows);
      cols = std::move(chosen.cols);
      report.removed = chosen.removed;
    } else {
      selection chosen = options_.what == structure::n_m
                             ? backend_.select_nm(element_costs, options_.pattern, report.target_sparsity)
                         : options_.how == method::wanda
                             ? backend_.select_per_row(element_costs, report.target_sparsity)
                             : backend_.select_unstructured(element_costs, report.target_sparsity);
      masks = std::move(chosen.masks);
      report.removed = chosen.removed;
    }
    element_costs.clear();
    lap(report.timings.selection);

    // 3. Updates (LLM Surgeon) or plain masking (the baselines).
    if (!updates) {
      for (std::size_t k = 0; k < matrices.size(); ++k) masks[k].apply(matrices[k].weight);
    } else if (keep_curvature) {
      // Every curvature is in memory and the matrices' updates are independent: the backend may
      // run several at once. Each curvature is freed as its update ends.
      std::vector<std::size_t> live;
      for (std::size_t k = 0; k < matrices.size(); ++k) {
        if (dead_.count(k) != 0) {
          masks[k].apply(matrices[k].weight);
        } else {
          live.push_back(k);
        }
      }
      std::vector<update_report> reports(live.size());
      run_each(live.size(), [&](std::size_t i) {
        const std::size_t k = live[i];
        const curvature_type curvature = std::move(kept.at(k));
        reports[i] = update(curvature, matrices[k], masks[k], rows, cols, k);
      });
      for (const update_report& u : reports) add_update(report, u);
      kept.clear();
      lap(report.timings.update);
    } else {
      for (const auto& group : groups) {
        const std::unique_ptr<store_type> store = calibrate(matrices, group, t, true, true);
        lap(report.timings.calibration);
        for (const std::size_t k : group) {
          const prunable_matrix& m = matrices[k];
          if (dead_.count(k) != 0) {
            masks[k].apply(m.weight);
            continue;
          }
          const curvature_type curvature = curvature_of(*store, m, true, true, report);
          lap(report.timings.curvature);
          add_update(report, update(curvature, m, masks[k], rows, cols, k));
          lap(report.timings.update);
        }
      }
    }
    finish(report, matrices, start);
    return report;
  }

 private:
  std::vector<std::vector<std::size_t>> make_groups(std::size_t count) const {
    std::vector<std::vector<std::size_t>> groups;
    const std::size_t size = options_.group_size > 0 ? static_cast<std::size_t>(options_.group_size) : count;
    for (std::size_t first = 0; first < count; first += size) {
      std::vector<std::size_t> group;
      for (std::size_t k = first; k < std::min(count, first + size); ++k) group.push_back(k);
      groups.push_back(std::move(group));
    }
    return groups;
  }

  // Sequential Wanda: each group calibrated on the model with the earlier groups pruned, its costs
  // from the inputs' diagonals, its masks per row (or N:M) and applied before the next group.
  void sequential_wanda(shot_report& report, const std::vector<prunable_matrix>& matrices,
                        const std::vector<std::vector<std::size_t>>& groups, int t) {
    for (const auto& group : groups) {
      detail::diagonal_store store;
      calibrate_into(
          store, matrices, group, t, true, false,
          [&store](const std::string& key, index_t dim) { store.define(key, dim); },
          [&store](const std::string& key) { return store.at(key).empty(); });
      lap(report.timings.calibration);
      std::vector<typename Backend::costs> costs;
      for (const std::size_t k : group) {
        const prunable_matrix& m = matrices[k];
        const host_matrix_view<const float> w(m.weight);
        const diagonal_curvature curvature =
            make_diagonal_curvature(std::vector<double>(), store.at("a:" + m.input_key).mean(), w);
        lap(report.timings.curvature);
        costs.push_back(backend_.host_costs(diagonal_element_costs(options_.how, curvature, w)));
        lap(report.timings.costs);
      }
      selection chosen = options_.what == structure::n_m
                             ? backend_.select_nm(costs, options_.pattern, report.target_sparsity)
                             : backend_.select_per_row(costs, report.target_sparsity);
      report.removed += chosen.removed;
      lap(report.timings.selection);
      for (std::size_t i = 0; i < group.size(); ++i) chosen.masks[i].apply(matrices[group[i]].weight);
      lap(report.timings.update);
    }
  }

  // Sequential LLM Surgeon (prune_options::sequential): one pass of every matrix for the costs and
  // the global selection, then per group a forward pass for its input's A on the model with the
  // earlier groups updated, and the group's updates with that A and the first pass's G.
  void sequential_llm_surgeon(shot_report& report, const std::vector<prunable_matrix>& matrices,
                              const std::vector<std::vector<std::size_t>>& groups, int t) {
    using costs_type = typename Backend::costs;
    std::vector<std::size_t> everything(matrices.size());
    for (std::size_t k = 0; k < matrices.size(); ++k) everything[k] = k;
    const std::unique_ptr<typename Backend::store> first = calibrate(matrices, everything, t, true, true);
    lap(report.timings.calibration);
    std::vector<costs_type> element_costs(matrices.size());
    for (std::size_t k = 0; k < matrices.size(); ++k) {
      const prunable_matrix& m = matrices[k];
      const host_matrix_view<const float> w(m.weight);
      if (entirely_dead(*first, m, true, true)) {
        dead_.insert(k);
        element_costs[k] = backend_.zero_costs(w.rows(), w.cols());
        lap(report.timings.curvature);
        continue;
      }
      const typename Backend::curvature curvature = curvature_of(*first, *first, m, true, true, report);
      lap(report.timings.curvature);
      element_costs[k] = backend_.element_costs(options_.how, curvature, w);
      lap(report.timings.costs);
    }
    selection chosen = options_.what == structure::n_m
                           ? backend_.select_nm(element_costs, options_.pattern, report.target_sparsity)
                           : backend_.select_unstructured(element_costs, report.target_sparsity);
    report.removed = chosen.removed;
    element_costs.clear();
    lap(report.timings.selection);
    const bool updates = options_.update != update_kind::none;
    for (const auto& group : groups) {
      if (!updates) break;
      const std::unique_ptr<typename Backend::store> inputs = calibrate(matrices, group, t, true, false);
      lap(report.timings.calibration);
      // The group's matrices share one input and are independent given it: their curvatures first,
      // then their updates, several at once where the backend allows.
      std::vector<std::size_t> live;
      std::vector<typename Backend::curvature> curvatures;
      for (const std::size_t k : group) {
        if (dead_.count(k) != 0) {
          chosen.masks[k].apply(matrices[k].weight);  // before the next group's pass reads it
          continue;
        }
        live.push_back(k);
        curvatures.push_back(curvature_of(*first, *inputs, matrices[k], true, true, report));
      }
      lap(report.timings.curvature);
      std::vector<update_report> reports(live.size());
      run_each(live.size(), [&](std::size_t i) {
        const typename Backend::curvature curvature = std::move(curvatures[i]);
        reports[i] = update(curvature, matrices[live[i]], chosen.masks[live[i]], {}, {}, live[i]);
      });
      for (const update_report& u : reports) add_update(report, u);
      lap(report.timings.update);
    }
    for (std::size_t k = 0; k < matrices.size(); ++k) chosen.masks[k].apply(matrices[k].weight);
    lap(report.timings.update);
  }

  // The method's update of matrix k for its mask (and removed rows/columns), then the mask.
  update_report update(const typename Backend::curvature& curvature, const prunable_matrix& m,
                       const mask& pruned, const std::vector<std::vector<index_t>>& rows,
                       const std::vector<std::vector<index_t>>& cols, std::size_t k) {
    update_report result;
    if (options_.what == structure::rows_columns) {
      backend_.update_rows_columns(curvature, m.weight, rows[k], cols[k]);
    } else if (options_.update == update_kind::whole_mask) {
      result = backend_.obs_update_full(curvature, m.weight, pruned, options_.pcg);
    } else {
      result = backend_.obs_update(curvature, m.weight, pruned, options_.budget);
    }
    pruned.apply(m.weight);
    return result;
  }

  static void add_update(shot_report& report, const update_report& u) {
    report.update_iterations += u.iterations;
    report.max_update_residual = std::max(report.max_update_residual, u.relative_residual);
  }

  // task(i) for i in [0, count): by the backend, perhaps concurrently, or in order.
  void run_each(std::size_t count, const std::function<void(std::size_t)>& task) {
    if constexpr (detail::has_for_each_concurrently<Backend>::value) {
      backend_.for_each_concurrently(count, task);
    } else {
      for (std::size_t i = 0; i < count; ++i) task(i);
    }
  }

  std::unique_ptr<typename Backend::store> calibrate(const std::vector<prunable_matrix>& matrices,
                                                     const std::vector<std::size_t>& group, int shot,
                                                     bool needs_a, bool needs_g) {
    std::unique_ptr<typename Backend::store> store = backend_.make_store();
    typename Backend::store& s = *store;
    calibrate_into(
        s, matrices, group, shot, needs_a, needs_g,
        [this, &s](const std::string& key, index_t dim) { backend_.define(s, key, dim); },
        [this, &s](const std::string& key) { return backend_.empty(s, key); });
    return store;
  }

  // One calibration pass into `sink` for the matrices of `group`: defines their keys, runs the
  // adapter, and checks that every matrix was fed (nothing to do when no factor is needed).
  template <typename Define, typename Empty>
  void calibrate_into(detail::factor_sink& sink_store, const std::vector<prunable_matrix>& matrices,
                      const std::vector<std::size_t>& group, int shot, bool needs_a, bool needs_g,
                      const Define& define, const Empty& empty) {
    if (!needs_a && !needs_g) return;
    for (const std::size_t k : group) {
      const prunable_matrix& m = matrices[k];
      if (needs_a) define("a:" + m.input_key, m.weight.cols());
      if (needs_g) define("g:" + m.name, m.weight.rows());
    }
    calibration_sink sink(sink_store, needs_a, needs_g);
    adapter_.calibrate(sink, shot);
    for (const std::size_t k : group) {
      const prunable_matrix& m = matrices[k];
      if (needs_a && empty("a:" + m.input_key)) {
        SURGEON_THROW(logic_error, "prune: the calibration pass fed no input for '{}' (key '{}')", m.name,
                      m.input_key);
      }
      if (needs_g && empty("g:" + m.name)) {
        SURGEON_THROW(logic_error, "prune: the calibration pass fed no output gradient for '{}'", m.name);
      }
    }
  }

  // True when every row or every column of the matrix is dead: zero weights, or zero diagonal of
  // the factors the method uses (METHOD.md §2).
  bool entirely_dead(const typename Backend::store& store, const prunable_matrix& m, bool needs_a,
                     bool needs_g) const {
    const index_t rows = m.weight.rows();
    const index_t cols = m.weight.cols();
    std::vector<double> g_diag(static_cast<std::size_t>(rows), 1.0);
    std::vector<double> a_diag(static_cast<std::size_t>(cols), 1.0);
    if (needs_g) g_diag = backend_.diagonal(store, "g:" + m.name);
    if (needs_a) a_diag = backend_.diagonal(store, "a:" + m.input_key);
    const dead_structure dead = find_dead(host_vector_view<const double>(g_diag.data(), rows),
                                          host_vector_view<const double>(a_diag.data(), cols),
                                          host_matrix_view<const float>(m.weight));
    return dead.live_rows.empty() || dead.live_cols.empty();
  }

  // The layer's curvature from its accumulated factors (an identity for a factor not accumulated;
  // the methods that reach here — K-OBD rows-cols, LLM Surgeon — use both).
  typename Backend::curvature curvature_of(typename Backend::store& store, const prunable_matrix& m,
                                           bool needs_a, bool needs_g, shot_report& report) {
    return curvature_of(store, store, m, needs_a, needs_g, report);
  }
  // The same with G from `g_store` and A from `a_store` (sequential LLM Surgeon).
  typename Backend::curvature curvature_of(const typename Backend::store& g_store,
                                           const typename Backend::store& a_store, const prunable_matrix& m,
                                           bool needs_a, bool needs_g, shot_report& report) {
    typename Backend::curvature curvature =
        backend_.factorize(g_store, needs_g ? "g:" + m.name : std::string(), a_store,
                           needs_a ? "a:" + m.input_key : std::string(),
                           host_matrix_view<const float>(m.weight), *options_.damp);
    report.max_lambda_g = std::max(report.max_lambda_g, curvature.g.report().lambda_used);
    report.max_lambda_a = std::max(report.max_lambda_a, curvature.a.report().lambda_used);
    report.escalations += curvature.g.report().escalations + curvature.a.report().escalations;
    return curvature;
  }

  void finish(shot_report& report, const std::vector<prunable_matrix>& matrices,
              std::chrono::steady_clock::time_point start) {
    index_t zeros = 0;
    index_t total = 0;
    for (const prunable_matrix& m : matrices) {
      for (index_t i = 0; i < m.weight.rows(); ++i) {
        for (index_t j = 0; j < m.weight.cols(); ++j) zeros += m.weight(i, j) == 0.0f ? 1 : 0;
      }
      total += m.weight.size();
    }
    report.achieved_sparsity = static_cast<double>(zeros) / static_cast<double>(total);
    lap(report.timings.update);
    if constexpr (detail::has_evaluate<Adapter>::value) {
      report.evaluation = adapter_.evaluate();
      lap(report.timings.evaluation);
    }
    report.seconds = std::chrono::duration<double>(phase_start_ - start).count();
  }

  // Adds the time since the last lap to `phase`, once the backend's queued work is done.
  void lap(double& phase) {
    if constexpr (detail::has_synchronize<Backend>::value) backend_.synchronize();
    const auto now = std::chrono::steady_clock::now();
    phase += std::chrono::duration<double>(now - phase_start_).count();
    phase_start_ = now;
  }

  Adapter& adapter_;
  prune_options options_;
  Backend backend_;
  std::set<std::size_t> dead_;                         // matrices found entirely dead in the current shot
  std::chrono::steady_clock::time_point phase_start_;  // end of the last lap (see shot_timings)
};

}  // namespace surgeon
