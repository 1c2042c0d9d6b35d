/// @file driver/session.hpp
/// @brief The backend-neutral multi-shot schedule (METHOD.md §5): `basic_pruning_session` over a
/// caller's model adapter and a backend policy. Include `surgeon/prune.hpp` (CPU) or
/// `surgeon/cuda/prune.hpp` (CUDA) to get it with a backend; this file includes none, and no
/// Eigen, so that nvcc translation units can use it.
///
/// A shot runs one of four strategies, chosen by the method's row of `traits_of` and
/// `prune_options::sequential`:
/// - `per_layer_step`: SparseGPT, each matrix pruned and updated by its own sweep (sequential or
///   not, the groups only differ);
/// - `sequential_per_row_step`: sequential Wanda, each group masked from its own pass;
/// - `sequential_global_step`: sequential LLM Surgeon, one pass for the costs and the global
///   threshold, then each group updated with its input's A re-measured;
/// - `global_step`: costs of every matrix, one global threshold (per row for Wanda), and the
///   method's update or plain masking.
#pragma once

#include <surgeon/curvature.hpp>
#include <surgeon/diagonal.hpp>
#include <surgeon/driver/calibration.hpp>
#include <surgeon/driver/correction.hpp>
#include <surgeon/driver/distribution.hpp>
#include <surgeon/driver/memory.hpp>
#include <surgeon/driver/options.hpp>
#include <surgeon/driver/report.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/method_traits.hpp>
#include <surgeon/select.hpp>
#include <surgeon/units.hpp>
#include <surgeon/update.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <chrono>
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

namespace detail {
template <typename A, typename = void>
struct has_evaluate_of_shot : std::false_type {};
template <typename A>
struct has_evaluate_of_shot<A, std::void_t<decltype(std::declval<A&>().evaluate(int{}))>> : std::true_type {};
template <typename A, typename = void>
struct has_evaluate_only : std::false_type {};
template <typename A>
struct has_evaluate_only<A, std::void_t<decltype(std::declval<A&>().evaluate())>> : std::true_type {};
/// An adapter with `evaluate(int shot)` or `evaluate()`.
template <typename A>
inline constexpr bool has_evaluate_v = has_evaluate_of_shot<A>::value || has_evaluate_only<A>::value;
/// Calls the adapter's evaluation after shot `shot`, whichever form it has.
template <typename A>
auto evaluate_after(A& adapter, int shot) {
  if constexpr (has_evaluate_of_shot<A>::value) {
    return adapter.evaluate(shot);
  } else {
    return adapter.evaluate();
  }
}
template <typename A, typename = void>
struct has_units : std::false_type {};
/// An adapter with `units()` (structure::coupled).
template <typename A>
struct has_units<A, std::void_t<decltype(std::declval<A&>().units())>> : std::true_type {};
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
template <typename B, typename = void>
struct has_expect_distributable : std::false_type {};
template <typename B>
struct has_expect_distributable<B, std::void_t<decltype(std::declval<const B&>().expect_distributable())>>
    : std::true_type {};
template <typename B, typename = void>
struct has_reduce_factor : std::false_type {};
/// A backend that can sum its accumulators over processes (`reduce_factor`, `forget`, `host_view`).
template <typename B>
struct has_reduce_factor<
    B, std::void_t<decltype(std::declval<const B&>().reduce_factor(
                       std::declval<typename B::store&>(), std::declval<const factor_key&>(),
                       std::declval<communicator&>(), std::optional<int>{})),
                   decltype(std::declval<const B&>().forget(std::declval<typename B::store&>(),
                                                            std::declval<const factor_key&>())),
                   decltype(std::declval<const B&>().host_view(std::declval<const typename B::costs&>()))>>
    : std::true_type {};
}  // namespace detail

/// @brief Runs the multi-shot schedule on one adapter with one backend. Not copyable; one per
/// pruning run. Use the aliases `surgeon::pruning_session<Adapter>` (CPU, surgeon/prune.hpp) or
/// `surgeon::cuda::pruning_session<Adapter>` (CUDA, surgeon/cuda/prune.hpp).
///
/// `Backend` is a policy with these members (see `cpu::prune_backend` and `cuda::prune_backend`):
/// - `store`: the K-FAC accumulators of one calibration pass, derived from `detail::factor_sink`;
///   `std::unique_ptr<store> make_store()`, `define(store&, factor_key, dim)`,
///   `empty(const store&, factor_key)`, `diagonal(const store&, factor_key)` (the accumulated
///   diagonal, host, for the dead-layer test);
/// - `curvature` (with `g.report()` and `a.report()`), made by
///   `factorize(g_store, optional g key, a_store, optional a key, weights, damping)` (no key: the
///   identity factor);
/// - `costs` (one matrix's element costs) from `element_costs(method, curvature, weights)`,
///   `zero_costs(rows, cols)` or `host_costs(host_matrix<double>)` (costs computed on the host,
///   those of the diagonal methods); `row_costs` / `column_costs` returning host vectors;
/// - `select_unstructured`, `select_per_row`, `select_nm` over `std::vector<costs>` (results as
///   select.hpp);
/// - `update_rows_columns`, `obs_update`, `obs_update_full` and `sparsegpt` on the host weights;
/// - optionally `synchronize()`: waits for the backend's queued work (called at the end of each
///   phase of `shot_timings`, so that asynchronous work is timed where it was queued);
/// - `low_rank_adapter` and `make_low_rank(mask, rank, seed)` (the first-order correction's
///   adapters, `cpu::low_rank_adapter` or `cuda::low_rank_adapter`);
/// - optionally `for_each_concurrently(count, task)`: runs independent per-matrix tasks (the
///   update pass when every curvature is in memory), perhaps several at once
///   (`cpu::prune_backend_options::update_threads`); without it they run in order;
/// - for a run over several processes: `reduce_factor(store&, key, communicator&, optional root)`
///   (the accumulator summed over the processes), `forget(store&, key)` and
///   `host_view(const costs&)`; optionally `expect_distributable()`, which refuses at construction
///   what the backend cannot run over several processes.
///
/// **Over several processes** (the constructor with a `communicator` of size K > 1; METHOD.md
/// §10): every process runs the same session on its own copy of the model. Each matrix has one
/// owner (`plan_owners`). A calibration pass is split between the processes by
/// `calibration_sink::share`, and each accumulator is summed over the processes onto the owners of
/// the matrices that read it; the others free it. Only owners factorise, cost and update their
/// matrices; the thresholds are exact over the processes (driver/distribution.hpp); updated
/// weights go from their owners to every process before the next pass reads them, so every
/// process ends each shot with the same weights. The first-order correction runs whole on every
/// process. Reports: the removed count, λ, escalations and update iterations are the group's;
/// timings are this process's.
///
/// The adapter: `matrices()`, `calibrate(calibration_sink&, int shot)` and optionally
/// `evaluate(int shot)` (or `evaluate()`) returning `double` or `std::optional<double>`, and
/// `units()` returning its `coupled_units` (needed for `structure::coupled`; asked once per shot,
/// after the previous shot's updates, indices into that shot's `matrices()`), and
/// `fine_tune(calibration_sink&, int shot, int step)` returning the pass's mean loss (needed for
/// `prune_options::first_order`: one forward and backward pass of the next-token loss on the
/// step's calibration sequences, each input key's input before the output gradients of the
/// matrices that read it, as a calibration pass with empirical labels feeds them).
template <typename Adapter, typename Backend>
class basic_pruning_session {
  using store_type = typename Backend::store;
  using curvature_type = typename Backend::curvature;
  using costs_type = typename Backend::costs;
  using groups_type = std::vector<std::vector<std::size_t>>;

 public:
  /// @throws logic_error on inconsistent options (`with_defaults`), an adapter without matrices
  ///         or with two of one name, first-order steps for an adapter without `fine_tune`, N:M with M not
  ///         dividing a matrix width, or a memory budget that not even one matrix at a time fits.
  basic_pruning_session(Adapter& adapter, prune_options options, Backend backend = Backend{})
      : basic_pruning_session(adapter, std::move(options), std::move(backend), single_process::instance()) {}

  /// @brief A session over the processes of `group` (which must outlive it): every process of the
  /// group constructs one with the same options on the same model and calls `run` (see the class
  /// comment). A group of one is the single-process session.
  /// @throws as above, and logic_error when the group has several processes and the backend cannot
  ///         sum its accumulators over them.
  basic_pruning_session(Adapter& adapter, prune_options options, Backend backend, communicator& group)
      : adapter_(adapter),
        options_(with_defaults(std::move(options))),
        backend_(std::move(backend)),
        comm_(&group) {
    if (distributed()) {
      if constexpr (!detail::has_reduce_factor<Backend>::value) {
        SURGEON_THROW(logic_error,
                      "prune: this backend cannot run over several processes (no reduce_factor)");
      }
      if constexpr (detail::has_expect_distributable<Backend>::value) backend_.expect_distributable();
    }
    const auto matrices = adapter_.matrices();
    SURGEON_EXPECTS(!matrices.empty(), "prune: the adapter lists no prunable matrix");
    std::set<std::string> names;
    for (const prunable_matrix& m : matrices) {
      SURGEON_EXPECTS(names.insert(m.name).second, "prune: two matrices are named '{}'", m.name);
      if (options_.what == structure::n_m) validate(options_.pattern, m.weight.cols());
    }
    options_.group_size = choose_group_size(matrices, options_, comm_->size());
    if (options_.first_order.enabled()) {
      // Refused before any work rather than after the first shot.
      if constexpr (!detail::has_fine_tune<Adapter>::value) {
        SURGEON_THROW(logic_error, "prune: the first-order correction needs an adapter with fine_tune()");
      } else if constexpr (detail::has_can_fine_tune<Adapter>::value) {
        SURGEON_EXPECTS(adapter_.can_fine_tune(),
                        "prune: the first-order correction needs an adapter with fine_tune()");
      }
    }
  }

  /// @brief The group size the session uses (`prune_options::group_size`, or the one chosen for
  /// `prune_options::memory_budget`; 0 = all matrices at once).
  int group_size() const noexcept { return options_.group_size; }
  /// @brief The shot count T the session runs (`prune_options::shots`, or `default_shots`).
  int shots() const noexcept { return *options_.shots; }
  /// @brief The options the session runs, defaults filled in (`with_defaults`).
  const prune_options& options() const noexcept { return options_; }

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

  /// @brief One shot (1-based) of the schedule: target t·s/T; then the adapter's evaluation, told
  /// the shot.
  shot_report shot(int t) {
    const auto start = std::chrono::steady_clock::now();
    phase_start_ = start;
    shot_report report;
    report.shot = t;
    report.target_sparsity =
        options_.sparsity * static_cast<double>(t) / static_cast<double>(*options_.shots);
    report.group_size = options_.group_size;
    const std::vector<prunable_matrix> matrices = adapter_.matrices();
    const groups_type groups = options_.sequential ? sequential_groups(matrices)
                                                   : fixed_groups(matrices.size(), options_.group_size);
    dead_.clear();
    report_ = &report;
    owner_ = plan_owners(matrices, comm_->size(), groups);
    if (options_.what == structure::coupled) units_ = units_of(matrices);
    const method_traits traits = traits_of(options_.how);
    if (traits.selection == selection_scope::per_layer) {
      per_layer_step(report, matrices, groups, t);
    } else if (options_.sequential && traits.selection == selection_scope::per_row) {
      sequential_per_row_step(report, matrices, groups, t);
    } else if (options_.sequential) {
      sequential_global_step(report, matrices, groups, t);
    } else {
      global_step(report, matrices, groups, t);
    }
    correct(report, matrices, t);
    finish(report, matrices, start);
    return report;
  }

 private:
  // The costs of every matrix of one shot: element costs, or row and column costs.
  struct layer_costs {
    std::vector<costs_type> element;
    std::vector<std::vector<double>> rows;
    std::vector<std::vector<double>> cols;
  };

  // SparseGPT: uniform per layer, on the same factors H = A, one matrix at a time (each holds its
  // own H and factor, 2·C² doubles, which the memory budget counts once).
  void per_layer_step(shot_report& report, const std::vector<prunable_matrix>& matrices,
                      const groups_type& groups, int t) {
    for (const auto& group : groups) {
      const std::unique_ptr<store_type> store = calibrate(matrices, group, t, true, false);
      lap(report.timings.calibration);
      for (const std::size_t k : group) {
        if (!owns(k)) continue;
        const prunable_matrix& m = matrices[k];
        backend_.sparsegpt(*store, factor_key::input_of(m), m.weight, options_, report.target_sparsity);
      }
      lap(report.timings.update);
      share_weights(report, matrices, group);
    }
  }

  // Sequential Wanda: each group calibrated on the model with the earlier groups pruned, its costs
  // from the inputs' diagonals, its masks per row (or N:M) and applied before the next group.
  void sequential_per_row_step(shot_report& report, const std::vector<prunable_matrix>& matrices,
                               const groups_type& groups, int t) {
    for (const auto& group : groups) {
      detail::diagonal_store store;
      calibrate_diagonals(store, matrices, group, t, true, false);
      lap(report.timings.calibration);
      std::vector<costs_type> costs;
      for (const std::size_t k : group) {
        if (!owns(k)) {
          costs.emplace_back();
          continue;
        }
        const prunable_matrix& m = matrices[k];
        const host_matrix_view<const float> w(m.weight);
        const diagonal_curvature curvature =
            make_diagonal_curvature(std::vector<double>(), store.at(factor_key::input_of(m)).mean(), w);
        lap(report.timings.curvature);
        costs.push_back(backend_.host_costs(diagonal_element_costs(options_.how, curvature, w)));
        lap(report.timings.costs);
      }
      selection chosen = select(costs, group, matrices, report.target_sparsity);
      report.removed += chosen.removed;
      lap(report.timings.selection);
      for (std::size_t i = 0; i < group.size(); ++i) {
        if (owns(group[i])) chosen.masks[i].apply(matrices[group[i]].weight);
      }
      lap(report.timings.update);
      share_weights(report, matrices, group);
    }
  }

  // Sequential LLM Surgeon (prune_options::sequential): one pass of every matrix for the costs and
  // the global selection, then per group a forward pass for its input's A on the model with the
  // earlier groups updated, and the group's updates with that A and the first pass's G.
  void sequential_global_step(shot_report& report, const std::vector<prunable_matrix>& matrices,
                              const groups_type& groups, int t) {
    const std::unique_ptr<store_type> first =
        calibrate(matrices, fixed_groups(matrices.size(), 0).front(), t, true, true);
    lap(report.timings.calibration);
    std::vector<costs_type> element_costs(matrices.size());
    for (std::size_t k = 0; k < matrices.size(); ++k) {
      if (!owns(k)) continue;
      const prunable_matrix& m = matrices[k];
      const host_matrix_view<const float> w(m.weight);
      if (entirely_dead(*first, m, true, true)) {
        dead_.insert(k);
        element_costs[k] = backend_.zero_costs(w.rows(), w.cols());
        lap(report.timings.curvature);
        continue;
      }
      const curvature_type curvature = curvature_of(*first, *first, m, true, true, report);
      lap(report.timings.curvature);
      element_costs[k] = backend_.element_costs(options_.how, curvature, w);
      lap(report.timings.costs);
    }
    selection chosen = select(element_costs, all_of(matrices), matrices, report.target_sparsity);
    report.removed = chosen.removed;
    element_costs.clear();
    lap(report.timings.selection);
    const bool updates = options_.update != update_kind::none;
    for (const auto& group : groups) {
      if (!updates) break;
      const std::unique_ptr<store_type> inputs = calibrate(matrices, group, t, true, false);
      lap(report.timings.calibration);
      // The group's matrices share one input and are independent given it: their curvatures first,
      // then their updates, several at once where the backend allows.
      std::vector<std::size_t> live;
      std::vector<curvature_type> curvatures;
      for (const std::size_t k : group) {
        if (!owns(k)) continue;
        if (dead_.count(k) != 0) {
          chosen.masks[k].apply(matrices[k].weight);  // before the next group's pass reads it
          continue;
        }
        live.push_back(k);
        curvatures.push_back(curvature_of(*first, *inputs, matrices[k], true, true, report));
      }
      lap(report.timings.curvature);
      update_all(report, curvatures, live, matrices, chosen.masks, {}, {});
      lap(report.timings.update);
      share_weights(report, matrices, group);
    }
    for (std::size_t k = 0; k < matrices.size(); ++k) {
      if (owns(k)) chosen.masks[k].apply(matrices[k].weight);
    }
    lap(report.timings.update);
    if (!updates) share_weights(report, matrices, all_of(matrices));
  }

  // Costs of every matrix group by group, one global threshold (per row for Wanda), then the
  // updates (LLM Surgeon) or plain masking (the other methods).
  void global_step(shot_report& report, const std::vector<prunable_matrix>& matrices,
                   const groups_type& groups, int t) {
    const bool updates = options_.how == method::llm_surgeon && options_.update != update_kind::none;
    // The curvatures are kept for the update when it follows and everything fits in one group.
    const bool keep_curvature = updates && groups.size() == 1;
    std::map<std::size_t, curvature_type> kept;
    layer_costs costs = measure_costs(report, matrices, groups, t, keep_curvature ? &kept : nullptr);

    std::vector<mask> masks;
    std::vector<std::vector<index_t>> rows;
    std::vector<std::vector<index_t>> cols;
    if (removes_lines(options_.what)) {
      const bool compensated = options_.what == structure::coupled && traits_of(options_.how).updates_weights;
      share_line_costs_of(costs, matrices);
      if (compensated) without_feeding_lines(costs.rows, costs.cols);
      structured_selection chosen =
          options_.what == structure::coupled
              ? select_units(costs.rows, costs.cols, *units_, report.target_sparsity)
              : select_rows_columns(costs.rows, costs.cols, report.target_sparsity);
      masks = std::move(chosen.masks);
      rows = std::move(chosen.rows);
      cols = std::move(chosen.cols);
      report.removed = chosen.removed;
      // Lines that only feed their unit are zeroed by the mask; the update compensates the unit
      // through the lines that read them.
      if (compensated) drop_feeding_lines(rows, cols);
    } else {
      selection chosen = select(costs.element, all_of(matrices), matrices, report.target_sparsity);
      masks = std::move(chosen.masks);
      report.removed = chosen.removed;
    }
    costs = layer_costs{};
    lap(report.timings.selection);

    if (!updates) {
      for (std::size_t k = 0; k < matrices.size(); ++k) {
        if (owns(k)) masks[k].apply(matrices[k].weight);
      }
      lap(report.timings.update);
      share_weights(report, matrices, all_of(matrices));
    } else if (keep_curvature) {
      std::vector<std::size_t> live;
      std::vector<curvature_type> curvatures;
      for (std::size_t k = 0; k < matrices.size(); ++k) {
        if (!owns(k)) continue;
        if (dead_.count(k) != 0) {
          masks[k].apply(matrices[k].weight);
        } else {
          live.push_back(k);
          curvatures.push_back(std::move(kept.at(k)));
        }
      }
      kept.clear();
      update_all(report, curvatures, live, matrices, masks, rows, cols);
      lap(report.timings.update);
      share_weights(report, matrices, all_of(matrices));
    } else {
      for (const auto& group : groups) {
        const std::unique_ptr<store_type> store = calibrate(matrices, group, t, true, true);
        lap(report.timings.calibration);
        for (const std::size_t k : group) {
          if (!owns(k)) continue;
          const prunable_matrix& m = matrices[k];
          if (dead_.count(k) != 0) {
            masks[k].apply(m.weight);
            continue;
          }
          const curvature_type curvature = curvature_of(*store, *store, m, true, true, report);
          lap(report.timings.curvature);
          add_update(report, update(curvature, m, masks[k], rows, cols, k));
          lap(report.timings.update);
        }
        lap(report.timings.update);
        share_weights(report, matrices, group);
      }
    }
  }

  // Step 1 of `global_step`: every matrix's costs, group by group; the curvatures go to `kept`
  // when it is given (freed after each group otherwise).
  layer_costs measure_costs(shot_report& report, const std::vector<prunable_matrix>& matrices,
                            const groups_type& groups, int t, std::map<std::size_t, curvature_type>* kept) {
    const method_traits traits = traits_of(options_.how);
    const bool needs_a = traits.needs_inputs;
    const bool needs_g = traits.needs_output_gradients;
    const bool structured = removes_lines(options_.what);
    layer_costs costs;
    costs.element.resize(matrices.size());
    costs.rows.resize(matrices.size());
    costs.cols.resize(matrices.size());
    for (const auto& group : groups) {
      if (uses_diagonals_only(options_.how, options_.what)) {
        // Factor diagonals only, accumulated on the host whatever the backend; no factorisation.
        detail::diagonal_store store;
        calibrate_diagonals(store, matrices, group, t, needs_a, needs_g);
        lap(report.timings.calibration);
        for (const std::size_t k : group) {
          if (!owns(k)) continue;
          const prunable_matrix& m = matrices[k];
          const host_matrix_view<const float> w(m.weight);
          const diagonal_curvature curvature = make_diagonal_curvature(
              needs_g ? store.at(factor_key::gradient_of(m)).mean() : std::vector<double>(),
              needs_a ? store.at(factor_key::input_of(m)).mean() : std::vector<double>(), w);
          if (curvature.dead.live_rows.empty() || curvature.dead.live_cols.empty()) dead_.insert(k);
          lap(report.timings.curvature);
          if (structured) {
            costs.rows[k] = diagonal_row_costs(options_.how, curvature, w);
            costs.cols[k] = diagonal_column_costs(options_.how, curvature, w);
          } else {
            costs.element[k] = backend_.host_costs(diagonal_element_costs(options_.how, curvature, w));
          }
          lap(report.timings.costs);
        }
        continue;
      }
      const std::unique_ptr<store_type> store = calibrate(matrices, group, t, needs_a, needs_g);
      lap(report.timings.calibration);
      for (const std::size_t k : group) {
        if (!owns(k)) continue;
        const prunable_matrix& m = matrices[k];
        const host_matrix_view<const float> w(m.weight);
        if (entirely_dead(*store, m, needs_a, needs_g)) {
          // Every row or every column is dead (METHOD.md §2): all of it counts as removed at cost 0.
          dead_.insert(k);
          if (structured) {
            costs.rows[k].assign(static_cast<std::size_t>(w.rows()), 0.0);
            costs.cols[k].assign(static_cast<std::size_t>(w.cols()), 0.0);
          } else {
            costs.element[k] = backend_.zero_costs(w.rows(), w.cols());
          }
          lap(report.timings.curvature);
          continue;
        }
        curvature_type curvature = curvature_of(*store, *store, m, needs_a, needs_g, report);
        lap(report.timings.curvature);
        if (structured) {
          costs.rows[k] = backend_.row_costs(options_.how, curvature, w);
          costs.cols[k] = backend_.column_costs(options_.how, curvature, w);
        } else {
          costs.element[k] = backend_.element_costs(options_.how, curvature, w);
        }
        if (kept != nullptr) kept->emplace(k, std::move(curvature));
        lap(report.timings.costs);
      }
    }
    return costs;
  }

  // The element-mask selection of the method and structure: N:M, per row (Wanda) or global.
  // costs[i] belongs to matrices[which[i]]; over several processes only the owned ones are read.
  selection select(const std::vector<costs_type>& costs, const std::vector<std::size_t>& which,
                   const std::vector<prunable_matrix>& matrices, double sparsity) {
    if (distributed()) return select_across(costs, which, matrices, sparsity);
    if (options_.what == structure::n_m) return backend_.select_nm(costs, options_.pattern, sparsity);
    if (traits_of(options_.how).selection == selection_scope::per_row)
      return backend_.select_per_row(costs, sparsity);
    return backend_.select_unstructured(costs, sparsity);
  }

  // The updates of the matrices `live` (curvatures[i] belongs to live[i]); the matrices are
  // independent, so the backend may run several at once. Each curvature is freed as its update ends.
  void update_all(shot_report& report, std::vector<curvature_type>& curvatures,
                  const std::vector<std::size_t>& live, const std::vector<prunable_matrix>& matrices,
                  const std::vector<mask>& masks, const std::vector<std::vector<index_t>>& rows,
                  const std::vector<std::vector<index_t>>& cols) {
    std::vector<update_report> reports(live.size());
    run_each(live.size(), [&](std::size_t i) {
      const std::size_t k = live[i];
      const curvature_type curvature = std::move(curvatures[i]);
      reports[i] = update(curvature, matrices[k], masks[k], rows, cols, k);
    });
    for (const update_report& u : reports) add_update(report, u);
  }

  // The method's update of matrix k for its mask (and removed rows/columns), then the mask.
  update_report update(const curvature_type& curvature, const prunable_matrix& m, const mask& pruned,
                       const std::vector<std::vector<index_t>>& rows,
                       const std::vector<std::vector<index_t>>& cols, std::size_t k) {
    update_report result;
    if (removes_lines(options_.what)) {
      backend_.update_rows_columns(curvature, m.weight, rows[k], cols[k]);
    } else if (options_.update == update_kind::whole_mask) {
      result = backend_.obs_update_full(curvature, m.weight, pruned, options_.pcg);
    } else {
      result = backend_.obs_update(curvature, m.weight, pruned, options_.budget);
    }
    pruned.apply(m.weight);
    return result;
  }

  // The first-order correction after shot t (first_order.hpp): fresh masked low-rank adapters on
  // the zeros of the pruned weights, `steps_after(t)` Adam steps on the adapter's fine-tuning
  // passes, each step absorbed into the weights at once (so that the passes run on the corrected
  // model and no runtime needs to know about adapters). Nothing at all without steps.
  void correct(shot_report& report, const std::vector<prunable_matrix>& matrices, int t) {
    const first_order_options& first_order = options_.first_order;
    const int steps = first_order.steps_after(t, *options_.shots);
    if (steps == 0) return;
    if constexpr (!detail::has_fine_tune<Adapter>::value) {
      SURGEON_THROW(logic_error, "prune: the first-order correction needs an adapter with fine_tune()");
    } else {
      lap(report.timings.update);
      using low_rank = typename Backend::low_rank_adapter;
      std::vector<low_rank> adapters;
      adapters.reserve(matrices.size());
      for (std::size_t k = 0; k < matrices.size(); ++k) {
        adapters.push_back(
            backend_.make_low_rank(mask::of_zeros(host_matrix_view<const float>(matrices[k].weight)),
                                   first_order.rank, adapter_seed(first_order.seed, t, k)));
      }
      for (int step = 0; step < steps; ++step) {
        detail::correction_sink<low_rank> store(matrices, adapters);
        calibration_sink sink(store, true, true);
        const double loss = static_cast<double>(adapter_.fine_tune(sink, t, step));
        for (std::size_t k = 0; k < matrices.size(); ++k) {
          SURGEON_EXPECTS(store.fed(k), "prune: the fine-tuning pass fed no output gradient for '{}'",
                          matrices[k].name);
        }
        run_each(matrices.size(), [&](std::size_t k) {
          adapters[k].adam_step(first_order);
          adapters[k].absorb(matrices[k].weight);
        });
        if (step == 0) report.correction_first_loss = loss;
        report.correction_last_loss = loss;
      }
      report.correction_steps = steps;
      lap(report.timings.correction);
      // Every process ran the same steps on the same weights; the owners' copies are the ones kept,
      // so that the processes cannot drift apart by rounding.
      share_weights(report, matrices, all_of(matrices));
    }
  }

  // Sets the cost of every line that only feeds its unit to 0 (see `unit_lines::feeds_unit`).
  void without_feeding_lines(std::vector<std::vector<double>>& row_costs,
                             std::vector<std::vector<double>>& col_costs) const {
    for_each_feeding_line([&](const unit_lines& l, index_t i) {
      (l.kind == line_kind::row ? row_costs : col_costs)[l.matrix][static_cast<std::size_t>(i)] = 0.0;
    });
  }

  // Removes the lines that only feed their unit from the per-matrix lists of removed rows and
  // columns (the lists the update compensates).
  void drop_feeding_lines(std::vector<std::vector<index_t>>& rows,
                          std::vector<std::vector<index_t>>& cols) const {
    std::vector<std::set<index_t>> feeding_rows(rows.size());
    std::vector<std::set<index_t>> feeding_cols(cols.size());
    for_each_feeding_line([&](const unit_lines& l, index_t i) {
      (l.kind == line_kind::row ? feeding_rows : feeding_cols)[l.matrix].insert(i);
    });
    const auto drop = [](std::vector<index_t>& lines, const std::set<index_t>& feeding) {
      lines.erase(
          std::remove_if(lines.begin(), lines.end(), [&](index_t i) { return feeding.count(i) != 0; }),
          lines.end());
    };
    for (std::size_t m = 0; m < rows.size(); ++m) {
      drop(rows[m], feeding_rows[m]);
      drop(cols[m], feeding_cols[m]);
    }
  }

  // visit(lines, i) for every line i of the units' lines marked `feeds_unit`.
  template <typename Visit>
  void for_each_feeding_line(const Visit& visit) const {
    const auto lines_of = [&](const coupled_unit& u) {
      for (const unit_lines& l : u.lines) {
        if (!l.feeds_unit) continue;
        for (index_t i = l.first; i < l.first + l.count; ++i) visit(l, i);
      }
    };
    for (const coupled_unit& u : units_->units) lines_of(u);
    for (const follower_unit& f : units_->followers) lines_of(f.unit);
  }

  // The adapter's coupled units, checked against `matrices`.
  coupled_units units_of(const std::vector<prunable_matrix>& matrices) {
    if constexpr (detail::has_units<Adapter>::value) {
      coupled_units units = adapter_.units();
      std::vector<index_t> rows;
      std::vector<index_t> cols;
      for (const prunable_matrix& m : matrices) {
        rows.push_back(m.weight.rows());
        cols.push_back(m.weight.cols());
      }
      validate(units, rows, cols);
      SURGEON_EXPECTS(!units.units.empty(), "prune: the adapter's units() lists no unit");
      return units;
    } else {
      SURGEON_THROW(logic_error, "prune: structure::coupled needs an adapter with units()");
    }
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

  std::unique_ptr<store_type> calibrate(const std::vector<prunable_matrix>& matrices,
                                        const std::vector<std::size_t>& group, int shot, bool needs_a,
                                        bool needs_g) {
    std::unique_ptr<store_type> store = backend_.make_store();
    store_type& s = *store;
    calibrate_into(
        s, matrices, group, shot, needs_a, needs_g,
        [this, &s](const factor_key& key, index_t dim) { backend_.define(s, key, dim); },
        [this, &s](const factor_key& key) { return backend_.empty(s, key); },
        [this, &s](const factor_key& key, std::optional<int> root, bool sum, bool keep) {
          if constexpr (detail::has_reduce_factor<Backend>::value) {
            if (sum) backend_.reduce_factor(s, key, *comm_, root);
            if (!keep) backend_.forget(s, key);
          }
        });
    return store;
  }

  // A calibration pass of factor diagonals (the diagonal methods); over several processes every
  // process gets the sums (they are small).
  void calibrate_diagonals(detail::diagonal_store& store, const std::vector<prunable_matrix>& matrices,
                           const std::vector<std::size_t>& group, int shot, bool needs_a, bool needs_g) {
    calibrate_into(
        store, matrices, group, shot, needs_a, needs_g,
        [&store](const factor_key& key, index_t dim) { store.define(key, dim); },
        [&store](const factor_key& key) { return store.empty(key); },
        [this, &store](const factor_key& key, std::optional<int> /*root*/, bool sum, bool /*keep*/) {
          if (!sum) return;
          store.at(key).combine_state([this](double* sums, index_t n, std::int64_t& count) {
            detail::reduce_factor_state(*comm_, sums, n, false, count, std::nullopt);
          });
        });
  }

  // One calibration pass into `sink_store` for the matrices of `group`: defines their keys, runs
  // the adapter (its share of the pass, over several processes), sums the accumulators over the
  // processes, and checks that every matrix was fed (nothing to do when no factor is needed).
  // `share(key, root, sum, keep)` sums one accumulator (at `root`, or everywhere) when `sum`, and
  // frees it unless `keep`.
  template <typename Define, typename Empty, typename Share>
  void calibrate_into(detail::factor_sink& sink_store, const std::vector<prunable_matrix>& matrices,
                      const std::vector<std::size_t>& group, int shot, bool needs_a, bool needs_g,
                      const Define& define, const Empty& empty, const Share& share) {
    if (!needs_a && !needs_g) return;
    for (const std::size_t k : group) {
      const prunable_matrix& m = matrices[k];
      if (needs_a) define(factor_key::input_of(m), m.weight.cols());
      if (needs_g) define(factor_key::gradient_of(m), m.weight.rows());
    }
    calibration_sink sink(sink_store, needs_a, needs_g, comm_->share());
    adapter_.calibrate(sink, shot);
    if (distributed()) sum_over_processes(sink, matrices, group, needs_a, needs_g, share);
    for (const std::size_t k : group) {
      if (!owns(k)) continue;
      const prunable_matrix& m = matrices[k];
      if (needs_a && empty(factor_key::input_of(m))) {
        SURGEON_THROW(logic_error, "prune: the calibration pass fed no input for '{}' (key '{}')", m.name,
                      m.input_key);
      }
      if (needs_g && empty(factor_key::gradient_of(m))) {
        SURGEON_THROW(logic_error, "prune: the calibration pass fed no output gradient for '{}'", m.name);
      }
    }
  }

  // True when every row or every column of the matrix is dead: zero weights, or zero diagonal of
  // the factors the method uses (METHOD.md §2).
  bool entirely_dead(const store_type& store, const prunable_matrix& m, bool needs_a, bool needs_g) const {
    const index_t rows = m.weight.rows();
    const index_t cols = m.weight.cols();
    std::vector<double> g_diag(static_cast<std::size_t>(rows), 1.0);
    std::vector<double> a_diag(static_cast<std::size_t>(cols), 1.0);
    if (needs_g) g_diag = backend_.diagonal(store, factor_key::gradient_of(m));
    if (needs_a) a_diag = backend_.diagonal(store, factor_key::input_of(m));
    const dead_structure dead = find_dead(host_vector_view<const double>(g_diag.data(), rows),
                                          host_vector_view<const double>(a_diag.data(), cols),
                                          host_matrix_view<const float>(m.weight));
    return dead.live_rows.empty() || dead.live_cols.empty();
  }

  // The layer's curvature with G from `g_store` and A from `a_store` (the same store but for
  // sequential LLM Surgeon); an identity for a factor not accumulated.
  curvature_type curvature_of(const store_type& g_store, const store_type& a_store, const prunable_matrix& m,
                              bool needs_a, bool needs_g, shot_report& report) {
    const std::optional<factor_key> g_key =
        needs_g ? std::optional<factor_key>(factor_key::gradient_of(m)) : std::nullopt;
    const std::optional<factor_key> a_key =
        needs_a ? std::optional<factor_key>(factor_key::input_of(m)) : std::nullopt;
    curvature_type curvature = backend_.factorize(g_store, g_key, a_store, a_key,
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
    if (distributed()) {
      // The group's figures: each process has counted only the matrices it owns.
      std::vector<double> largest{report.max_lambda_g, report.max_lambda_a, report.max_update_residual};
      comm_->all_reduce_max(largest.data(), largest.size());
      std::vector<std::int64_t> counts{report.escalations, report.update_iterations};
      comm_->all_reduce_sum(counts.data(), counts.size());
      report.max_lambda_g = largest[0];
      report.max_lambda_a = largest[1];
      report.max_update_residual = largest[2];
      report.escalations = static_cast<int>(counts[0]);
      report.update_iterations = counts[1];
    }
    lap(report.timings.update);
    if constexpr (detail::has_evaluate_v<Adapter>) {
      report.evaluation = detail::evaluate_after(adapter_, report.shot);
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

  // Over several processes, after a calibration pass: every accumulator of `group` summed onto the
  // owners of the matrices that read it (onto every process when several own one; not at all when
  // the adapter ran the whole pass on every process), and freed on the other processes. The
  // accumulators are visited in the same order on every process.
  template <typename Share>
  void sum_over_processes(const calibration_sink& sink, const std::vector<prunable_matrix>& matrices,
                          const std::vector<std::size_t>& group, bool needs_a, bool needs_g,
                          const Share& share) {
    lap(report_->timings.calibration);
    std::int64_t split = sink.asked_share_ ? 1 : 0;
    comm_->all_reduce_sum(&split, 1);
    SURGEON_EXPECTS(split == 0 || split == comm_->size(),
                    "prune: the adapter asked for its share of the calibration pass on {} of {} processes",
                    split, comm_->size());
    std::vector<std::pair<factor_key, std::set<int>>> keys;
    const auto add = [&keys](factor_key key, int owner) {
      for (auto& entry : keys) {
        if (entry.first == key) {
          entry.second.insert(owner);
          return;
        }
      }
      keys.emplace_back(std::move(key), std::set<int>{owner});
    };
    for (const std::size_t k : group) {
      if (needs_a) add(factor_key::input_of(matrices[k]), owner_[k]);
      if (needs_g) add(factor_key::gradient_of(matrices[k]), owner_[k]);
    }
    for (const auto& [key, owners] : keys) {
      const std::optional<int> root = owners.size() == 1 ? std::optional<int>(*owners.begin()) : std::nullopt;
      share(key, root, split != 0, owners.count(comm_->rank()) != 0);
    }
    lap(report_->timings.communication);
  }

  // Over several processes: the weights of the matrices `which` from their owners to every process.
  void share_weights(shot_report& report, const std::vector<prunable_matrix>& matrices,
                     const std::vector<std::size_t>& which) {
    if (!distributed()) return;
    for (const std::size_t k : which) {
      const host_matrix_view<float>& w = matrices[k].weight;
      const auto row_bytes = static_cast<std::size_t>(w.cols()) * sizeof(float);
      if (w.ld() == w.cols()) {
        comm_->broadcast(w.data(), row_bytes * static_cast<std::size_t>(w.rows()), owner_[k]);
      } else {
        for (index_t i = 0; i < w.rows(); ++i) comm_->broadcast(w.row(i), row_bytes, owner_[k]);
      }
    }
    lap(report.timings.communication);
  }

  // Over several processes: every matrix's row and column costs on every process.
  void share_line_costs_of(layer_costs& costs, const std::vector<prunable_matrix>& matrices) {
    if (!distributed()) return;
    std::vector<index_t> rows;
    std::vector<index_t> cols;
    std::vector<bool> owned;
    for (std::size_t k = 0; k < matrices.size(); ++k) {
      rows.push_back(matrices[k].weight.rows());
      cols.push_back(matrices[k].weight.cols());
      owned.push_back(owns(k));
    }
    share_line_costs(*comm_, costs.rows, rows, owned);
    share_line_costs(*comm_, costs.cols, cols, owned);
  }

  // `select` over several processes: the costs stay on their owners (driver/distribution.hpp).
  selection select_across(const std::vector<costs_type>& costs, const std::vector<std::size_t>& which,
                          const std::vector<prunable_matrix>& matrices, double sparsity) {
    if constexpr (!detail::has_reduce_factor<Backend>::value) {
      SURGEON_THROW(logic_error, "prune: this backend cannot run over several processes");
    } else {
      distributed_layers layers;
      std::vector<host_matrix_view<const double>> views;
      for (std::size_t i = 0; i < which.size(); ++i) {
        const std::size_t k = which[i];
        layers.rows.push_back(matrices[k].weight.rows());
        layers.cols.push_back(matrices[k].weight.cols());
        layers.owned.push_back(owns(k));
        views.push_back(owns(k) ? backend_.host_view(costs[i]) : host_matrix_view<const double>());
      }
      if (options_.what == structure::n_m)
        return select_nm_across(*comm_, views, layers, options_.pattern, sparsity);
      if (traits_of(options_.how).selection == selection_scope::per_row)
        return select_per_row_across(*comm_, views, layers, sparsity);
      return select_unstructured_across(*comm_, views, layers, sparsity);
    }
  }

  bool distributed() const noexcept { return comm_->size() > 1; }
  // True when this process owns matrix k (always in a single-process run).
  bool owns(std::size_t k) const { return owner_[k] == comm_->rank(); }
  static std::vector<std::size_t> all_of(const std::vector<prunable_matrix>& matrices) {
    std::vector<std::size_t> all(matrices.size());
    for (std::size_t k = 0; k < all.size(); ++k) all[k] = k;
    return all;
  }

  Adapter& adapter_;
  prune_options options_;
  Backend backend_;
  communicator* comm_;                  // the processes of the run (single_process by default)
  std::vector<int> owner_;              // the owner process of each matrix of the current shot
  shot_report* report_ = nullptr;       // the current shot's report (for the laps of calibrate_into)
  std::optional<coupled_units> units_;  // the adapter's units in the current shot (structure::coupled)
  std::set<std::size_t> dead_;          // matrices found entirely dead in the current shot
  std::chrono::steady_clock::time_point phase_start_;  // end of the last lap (see shot_timings)
};

/// @brief Runs every shot of `options` on `adapter` with `backend`: what `cpu::prune` and
/// `cuda::prune` do once they have made their backend. `on_shot` sees each report as it completes.
/// @throws as `basic_pruning_session`.
template <typename Backend, typename Adapter>
std::vector<shot_report> run_pruning(Adapter& adapter, const prune_options& options, Backend backend,
                                     const std::function<void(const shot_report&)>& on_shot) {
  return basic_pruning_session<Adapter, Backend>(adapter, options, std::move(backend)).run(on_shot);
}

/// @brief Prunes the adapter's model with the multi-shot schedule of `options` on the backend of
/// `ctx` (`cpu::context` or `cuda::context`, whose `prune_backend_type` names the driver policy
/// made from it): one signature for every backend. Results agree across
/// backends up to floating-point rounding (and the ties that rounding can flip). Cost per shot:
/// one calibration pass per group (the adapter's), the curvature, costs, selection and updates of
/// every matrix on the backend (see `basic_pruning_session`).
/// @throws as `basic_pruning_session`, and what the backend throws (cuda_error on CUDA).
template <typename Context, typename Adapter, typename Backend = typename Context::prune_backend_type>
std::vector<shot_report> prune(Context& ctx, Adapter& adapter, const prune_options& options,
                               const std::function<void(const shot_report&)>& on_shot = {}) {
  return run_pruning(adapter, options, Backend(ctx), on_shot);
}

/// @brief As above, with the backend's own choices (`cpu::prune_backend_options`: matrices updated
/// at once; `cuda::prune_backend_options`: costs on the host).
template <typename Context, typename Adapter, typename Backend = typename Context::prune_backend_type>
std::vector<shot_report> prune(Context& ctx, Adapter& adapter, const prune_options& options,
                               const typename Backend::options_type& backend_options,
                               const std::function<void(const shot_report&)>& on_shot = {}) {
  return run_pruning(adapter, options, Backend(ctx, backend_options), on_shot);
}

}  // namespace surgeon
