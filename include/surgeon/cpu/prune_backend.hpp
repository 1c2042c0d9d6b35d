/// @file cpu/prune_backend.hpp
/// @brief `cpu::prune_backend`: the CPU policy of the multi-shot driver (`basic_pruning_session`,
/// driver/session.hpp). Factors accumulate in a host `factor_bank<double>`, curvature, costs,
/// selection, updates and SparseGPT run on the CPU backend, in place on the adapter's weights.
/// (The diagonal methods never reach the store or `factorize`: the driver accumulates their factor
/// diagonals itself, surgeon/diagonal.hpp, and hands their costs over through `host_costs`.)
#pragma once

#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/cost.hpp>
#include <surgeon/cpu/curvature.hpp>
#include <surgeon/cpu/detail/parallel.hpp>
#include <surgeon/cpu/first_order.hpp>
#include <surgeon/cpu/kfac.hpp>
#include <surgeon/cpu/sparsegpt.hpp>
#include <surgeon/cpu/update.hpp>
#include <surgeon/driver.hpp>
#include <surgeon/driver/distribution.hpp>
#include <surgeon/kfac.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/select.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace surgeon::cpu {

/// @brief Choices of the CPU backend that the (backend-neutral) `prune_options` do not cover.
struct prune_backend_options {
  /// Matrices updated at once in LLM Surgeon's update pass, each on its own thread with the dense
  /// kernels single-threaded: the chunked update is a chain of products a few rows tall, which the
  /// BLAS's threads barely speed up, while the matrices are independent. 1 (the default) updates
  /// one matrix at a time with the BLAS's own threads. It applies when the driver runs all
  /// matrices in one group (`prune_options::group_size` 0 and no memory-budget grouping), where
  /// every curvature is in memory anyway: it adds only the workers' chunk buffers (2n² doubles
  /// each, n ≤ `correlate::max`). The results are the same as one at a time up to the
  /// rounding of the BLAS's threading. While such a pass runs, OpenBLAS's (and Eigen's) thread
  /// count is set to 1 for the whole process and restored afterwards.
  int update_threads = 1;
};

/// @brief The CPU backend of the pruning driver. Default-constructible and cheap to copy.
class prune_backend {
 public:
  /// @brief The backend's own choices (`prune(ctx, adapter, options, backend_options)`).
  using options_type = prune_backend_options;
  /// @brief A backend with the default options (`update_threads` 1).
  prune_backend() = default;
  /// @brief A backend on `ctx` (stateless on the CPU: the same as the default), the CUDA policy's
  /// counterpart.
  explicit prune_backend(context& ctx) : ctx_(ctx) {}
  /// @throws logic_error when `options.update_threads` < 1.
  explicit prune_backend(prune_backend_options options) : options_(options) {
    SURGEON_EXPECTS(options_.update_threads >= 1, "cpu::prune_backend: update_threads must be >= 1, got {}",
                    options_.update_threads);
  }
  /// @brief A backend on `ctx` with `options`.
  /// @throws logic_error when `options.update_threads` < 1.
  prune_backend(context& ctx, prune_backend_options options) : prune_backend(options) { ctx_ = ctx; }
  /// @brief The options the backend was constructed with. O(1).
  const prune_backend_options& options() const noexcept { return options_; }

  /// Runs `task(i)` for i in [0, count), `update_threads` at a time (the driver's per-matrix
  /// update and SparseGPT passes; see `prune_backend_options::update_threads`).
  void for_each_concurrently(std::size_t count, const std::function<void(std::size_t)>& task) const {
    detail::for_each_concurrently(count, options_.update_threads, task);
  }

  /// @brief The first-order correction's adapter of one matrix (host, float).
  using low_rank_adapter = surgeon::cpu::low_rank_adapter;
  /// @brief A fresh adapter of a matrix whose pruned weights `pruned` marks (B = 0, A seeded).
  /// O(r·(rows + cols)).
  surgeon::cpu::low_rank_adapter make_low_rank(mask pruned, int rank, std::uint64_t seed) const {
    return surgeon::cpu::low_rank_adapter(std::move(pruned), rank, seed);
  }

  /// @brief One calibration pass's host accumulators (double), keyed as the driver asks.
  class store : public surgeon::detail::factor_sink {
   public:
    /// @brief True when the accumulator `key` has been defined in this store.
    bool contains(const factor_key& key) const override { return bank_.contains(key.str()); }
    /// @brief Adds the token rows of `x` (`[tokens, dim]`, host) to the accumulator `key`.
    /// @throws logic_error if `key` is not defined, or as `factor_accumulator::add`.
    void add(const factor_key& key, host_matrix_view<const float> x) override {
      bank_.add(ctx_, key.str(), x);
    }

   private:
    friend class prune_backend;
    context ctx_;
    factor_bank<double> bank_;
  };
  /// @brief The per-layer curvature type of this backend: `cpu::kronecker_curvature`.
  using curvature = kronecker_curvature;
  /// @brief The per-layer cost matrix type of this backend: an owning host `[R, C]` double matrix.
  using costs = host_matrix<double>;

  /// @brief A new, empty store (no accumulators defined).
  std::unique_ptr<store> make_store() const { return std::make_unique<store>(); }
  /// @brief Defines the double accumulator `key` of `dim` features in `s` (default options).
  /// @throws logic_error if `key` exists with another dimension.
  void define(store& s, const factor_key& key, index_t dim) const { s.bank_.define(key.str(), dim); }
  /// @brief True when the accumulator `key` of `s` has seen no token rows.
  /// @throws logic_error if `key` is not defined.
  bool empty(const store& s, const factor_key& key) const { return s.bank_.at(key.str()).empty(); }
  /// The diagonal of the accumulated (unnormalised) state: only its zeros matter.
  std::vector<double> diagonal(const store& s, const factor_key& key) const {
    const factor_accumulator<double>& f = s.bank_.at(key.str());
    std::vector<double> d(static_cast<std::size_t>(f.size()));
    for (index_t i = 0; i < f.size(); ++i) d[static_cast<std::size_t>(i)] = f.lower_data()[i * f.size() + i];
    return d;
  }

  /// @brief Sums the accumulator `key` of `s` over the processes of `comm` (at `root`, or at every
  /// process without one): a distributed run's data-parallel calibration. Cost: the lower
  /// triangle, n(n+1)/2 doubles, through the communicator.
  /// @throws logic_error if `key` is not defined; communication_error as the communicator.
  void reduce_factor(store& s, const factor_key& key, communicator& comm, std::optional<int> root) const {
    s.bank_.at(key.str()).combine_state([&](double* state, index_t n, std::int64_t& count) {
      surgeon::detail::reduce_factor_state(comm, state, n, true, count, root);
    });
  }
  /// @brief Frees the accumulator `key` of `s` (a process that does not own its matrices).
  void forget(store& s, const factor_key& key) const { s.bank_.erase(key.str()); }
  /// @brief The host view of one matrix's costs (the selections across processes read them there).
  host_matrix_view<const double> host_view(const costs& c) const { return c.view(); }

  /// The layer's curvature from the means of G (`g_key` of `g_store`) and A (`a_key` of
  /// `a_store`; the two stores differ for sequential LLM Surgeon); no key: the identity.
  curvature factorize(const store& g_store, const std::optional<factor_key>& g_key, const store& a_store,
                      const std::optional<factor_key>& a_key, host_matrix_view<const float> w,
                      const damping& d) {
    host_matrix<double> g(w.rows(), w.rows());
    host_matrix<double> a(w.cols(), w.cols());
    if (g_key) {
      g = g_store.bank_.at(g_key->str()).mean();
    } else {
      for (index_t i = 0; i < w.rows(); ++i) g(i, i) = 1.0;
    }
    if (a_key) {
      a = a_store.bank_.at(a_key->str()).mean();
    } else {
      for (index_t j = 0; j < w.cols(); ++j) a(j, j) = 1.0;
    }
    return cpu::factorize(ctx_, g.view(), a.view(), d, w);
  }

  /// @brief Element costs `[R, C]` of one layer: `cpu::element_costs` on this backend's context.
  costs element_costs(method how, const curvature& c, host_matrix_view<const float> w) {
    return cpu::element_costs(ctx_, how, c, w);
  }
  /// @brief An all-zero `[rows, cols]` cost matrix.
  costs zero_costs(index_t rows, index_t cols) const { return host_matrix<double>(rows, cols); }
  /// Costs computed on the host (the diagonal methods'), as they are.
  costs host_costs(host_matrix<double> c) const { return c; }
  /// @brief Row costs (R of them) of one layer: `cpu::row_costs` on this backend's context.
  std::vector<double> row_costs(method how, const curvature& c, host_matrix_view<const float> w) {
    return cpu::row_costs(ctx_, how, c, w);
  }
  /// @brief Column costs (C of them) of one layer: `cpu::column_costs` on this backend's context.
  std::vector<double> column_costs(method how, const curvature& c, host_matrix_view<const float> w) {
    return cpu::column_costs(ctx_, how, c, w);
  }

  /// @brief Global unstructured selection over all layers' costs: `surgeon::select_unstructured`.
  selection select_unstructured(const std::vector<costs>& c, double sparsity) const {
    return surgeon::select_unstructured(views(c), sparsity);
  }
  /// @brief Per-row selection over all layers' costs: `surgeon::select_per_row`.
  selection select_per_row(const std::vector<costs>& c, double sparsity) const {
    return surgeon::select_per_row(views(c), sparsity);
  }
  /// @brief Global N:M selection over all layers' costs: `surgeon::select_nm`.
  selection select_nm(const std::vector<costs>& c, nm_pattern p, double sparsity) const {
    return surgeon::select_nm(views(c), p, sparsity);
  }

  /// @brief Removes whole rows and columns of `w` in place: `cpu::update_rows_columns`.
  void update_rows_columns(const curvature& c, host_matrix_view<float> w, const std::vector<index_t>& rows,
                           const std::vector<index_t>& cols) {
    cpu::update_rows_columns(ctx_, c, w, rows, cols);
  }
  /// @brief OBS update of `w` in place for the mask `pruned`, chunked by `budget`: `cpu::obs_update`.
  update_report obs_update(const curvature& c, host_matrix_view<float> w, const mask& pruned,
                           correlate budget) {
    return cpu::obs_update(ctx_, c, w, pruned, budget);
  }
  /// @brief Whole-mask OBS update of `w` in place by conjugate gradients: `cpu::obs_update_full`.
  update_report obs_update_full(const curvature& c, host_matrix_view<float> w, const mask& pruned,
                                pcg_options options) {
    return cpu::obs_update_full(ctx_, c, w, pruned, options);
  }

  /// SparseGPT on H = mean of `a_key` (uniform per layer; N:M when the options ask for it).
  void sparsegpt(const store& s, const factor_key& a_key, host_matrix_view<float> w, const prune_options& o,
                 double target_sparsity) {
    const host_matrix<double> h = s.bank_.at(a_key.str()).mean();
    const sparsegpt_options options{128, o.damp.value_or(default_damping(o.how)).a};
    if (o.what == structure::n_m) {
      cpu::sparsegpt_prune(ctx_, h.view(), w, o.pattern, options);
    } else {
      cpu::sparsegpt_prune(ctx_, h.view(), w, target_sparsity, options);
    }
  }

 private:
  static std::vector<host_matrix_view<const double>> views(const std::vector<costs>& c) {
    std::vector<host_matrix_view<const double>> result;
    result.reserve(c.size());
    for (const auto& m : c) result.push_back(m.view());
    return result;
  }

  context ctx_;
  prune_backend_options options_;
};

}  // namespace surgeon::cpu
