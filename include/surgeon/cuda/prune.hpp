/// @file cuda/prune.hpp
/// @brief The multi-shot pruning driver on the CUDA backend: `cuda::prune_backend`,
/// `cuda::pruning_session<Adapter>` and `cuda::prune`. The same adapter, options and schedule as
/// the CPU driver (surgeon/prune.hpp; the schedule is driver/session.hpp).
///
/// The adapter keeps its weights in host memory, as on the CPU. Calibration batches go to device
/// accumulators (host-staged, double); each matrix's weights are uploaded for its costs and again
/// for its update, and the updated weights are copied back into the adapter's buffers. Curvature,
/// costs, the global threshold (CUB), the updates and SparseGPT run on the device.
///
/// The diagonal methods (magnitude, Wanda, L-OBD, K-OBD but rows-cols; surgeon/diagonal.hpp)
/// accumulate only factor diagonals, on the host, and compute their costs there (O(R·C) per
/// matrix); the costs are then uploaded for the device threshold (or stay on the host with
/// `costs_on_host`). Everything below concerns SparseGPT, K-OBD rows-cols and LLM Surgeon.
///
/// Device memory during a shot: the K-FAC accumulators of the current group (double, R² + C² per
/// matrix, A shared by input key) and one staging area (two of the largest calibration batch,
/// also pinned on the host); the damped factors of every matrix of the group whose update
/// is still to come (a double Ĝ, Â and their inverses each: with `group_size = 0` that is every
/// matrix, about 280 GB for a 7B Llama — 32 blocks × 8.8 GB — so large models need `group_size`,
/// e.g. 7 = one block); and 8 bytes per prunable weight for the element costs of every matrix
/// until the global threshold (~52 GB for 6.5B prunable weights; `group_size` does not bound this
/// term, `prune_backend_options::costs_on_host` moves it to host memory). Host code that must not include
/// Eigen or CUDA headers reaches `cuda::prune` through `surgeon::any_adapter` (surgeon/adapter.hpp).
///
/// nvcc translation units only; no Eigen. Defined only when `SURGEON_HAS_CUDA` is defined.
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA)

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/cost.hpp>
#include <surgeon/cuda/curvature.hpp>
#include <surgeon/cuda/first_order.hpp>
#include <surgeon/cuda/kfac.hpp>
#include <surgeon/cuda/select.hpp>
#include <surgeon/cuda/sparsegpt.hpp>
#include <surgeon/cuda/update.hpp>
#include <surgeon/driver.hpp>
#include <surgeon/error.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/select.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace surgeon::cuda {

/// @brief Choices of the CUDA backend that the (backend-neutral) `prune_options` do not cover.
struct prune_backend_options {
  /// Where each matrix's element costs wait for the global threshold. false: on the device (8
  /// bytes of device memory per prunable weight of the whole model; the threshold by the device
  /// radix select). true: copied to host memory as each matrix's costs are computed, and the
  /// threshold taken on the host by select.hpp — device memory is then bounded by one group's
  /// factors, at the cost of one device-to-host copy of the costs and a host selection per shot.
  /// Both give the same masks for the same costs.
  bool costs_on_host = false;
};

/// @brief The CUDA backend of the pruning driver, on one context (which must outlive it).
class prune_backend {
 public:
  /// @brief The backend's own choices (`prune(ctx, adapter, options, backend_options)`).
  using options_type = prune_backend_options;
  /// @brief Device accumulators (double) of one calibration pass, fed from host batches through
  /// one shared staging area (two of the largest batch, not two per factor).
  class store : public surgeon::detail::factor_sink {
   public:
    /// @brief An empty store on `ctx` (which must outlive it), with its shared staging area.
    explicit store(context& ctx) : ctx_(&ctx), staging_(ctx) {}
    /// @brief Whether an accumulator was defined for `key`.
    bool contains(const factor_key& key) const override { return factors_.count(key) != 0; }
    /// @brief Adds the host batch `x` (`[tokens, dim]`, float) to `key`'s device accumulator,
    /// staged through the shared area (`device_factor_accumulator::add`).
    /// @throws std::out_of_range if `key` was not defined; as `device_factor_accumulator::add`.
    void add(const factor_key& key, host_matrix_view<const float> x) override {
      factors_.at(key).add(*ctx_, x, staging_);
    }

   private:
    friend class prune_backend;
    context* ctx_;
    host_staging_area staging_;
    std::map<factor_key, device_factor_accumulator<double>> factors_;
  };

  /// @brief One matrix's element costs, packed `[rows, cols]`: on the device, or on the host
  /// with `prune_backend_options::costs_on_host`.
  struct costs {
    /// @brief The `rows·cols` costs, device, row-major; empty with `costs_on_host`.
    device_buffer<double> values;
    /// @brief The `rows·cols` costs, host, row-major; empty unless `costs_on_host`.
    std::vector<double> host_values;
    /// @brief Number of rows R of the matrix.
    index_t rows = 0;
    /// @brief Number of columns C of the matrix.
    index_t cols = 0;
    /// @brief `values` as a `[rows, cols]` device view.
    device_matrix_view<const double> view() const { return values.view(rows, cols); }
    /// @brief `host_values` as a `[rows, cols]` host view.
    host_matrix_view<const double> host_view() const {
      return host_matrix_view<const double>(host_values.data(), rows, cols);
    }
  };
  /// @brief A layer's curvature on this backend: the device `kronecker_curvature`.
  using curvature = kronecker_curvature;

  /// @brief A backend on `ctx` (which must outlive it); `options` as `prune_backend_options`.
  explicit prune_backend(context& ctx, prune_backend_options options = {}) : ctx_(&ctx), options_(options) {}

  /// @brief Waits for the work queued on the context's stream (the driver calls it at the end of
  /// each phase it times, `shot_timings`).
  void synchronize() const { ctx_->synchronize(); }

  /// @brief Refuses a run over several processes unless the costs are on the host
  /// (`prune_backend_options::costs_on_host`), where the selections across processes read them.
  /// @throws logic_error otherwise.
  void expect_distributable() const {
    SURGEON_EXPECTS(
        options_.costs_on_host,
        "cuda::prune_backend: a run over several processes needs prune_backend_options::costs_on_host");
  }
  /// @brief Sums the device accumulator `key` of `s` over the processes of `comm` (at `root`, or at
  /// every process without one): on the device when the communicator reduces device buffers
  /// (`cuda::nccl_communicator`), else through a host copy of its lower triangle (e.g.
  /// `mpi::communicator`). Cost: size² doubles on the device, or a device-host round trip.
  /// @throws logic_error if `key` is not defined; cuda_error, communication_error.
  void reduce_factor(store& s, const factor_key& key, communicator& comm, std::optional<int> root) const {
    ctx_->synchronize();  // every queued accumulation is in the state
    s.factors_.at(key).combine_state([&](double* state, index_t n, std::int64_t& count) {
      const auto values = static_cast<std::size_t>(n) * static_cast<std::size_t>(n);
      if (comm.reduces_device_buffers()) {
        if (root) {
          comm.reduce_sum_device(state, values, *root);
        } else {
          comm.all_reduce_sum_device(state, values);
        }
        comm.all_reduce_sum(&count, 1);
        return;
      }
      std::vector<double> host(values);
      SURGEON_CUDA_CHECK(cudaMemcpy(host.data(), state, values * sizeof(double), cudaMemcpyDeviceToHost));
      surgeon::detail::reduce_factor_state(comm, host.data(), n, true, count, root);
      SURGEON_CUDA_CHECK(cudaMemcpy(state, host.data(), values * sizeof(double), cudaMemcpyHostToDevice));
    });
  }
  /// @brief Frees the device accumulator `key` of `s` (a process that does not own its matrices).
  void forget(store& s, const factor_key& key) const { s.factors_.erase(key); }
  /// @brief The host view of one matrix's costs (`costs_on_host` only; see `expect_distributable`).
  /// @throws logic_error without `costs_on_host`.
  host_matrix_view<const double> host_view(const costs& c) const {
    expect_distributable();
    return c.host_view();
  }

  /// @brief The first-order correction's adapter of one matrix (device, float).
  using low_rank_adapter = surgeon::cuda::low_rank_adapter;
  /// @brief A fresh adapter of a matrix whose pruned weights `pruned` marks (B = 0, A seeded), on
  /// the backend's context. O(r·(rows + cols) + rows·cols / 64) uploaded.
  surgeon::cuda::low_rank_adapter make_low_rank(mask pruned, int rank, std::uint64_t seed) const {
    return surgeon::cuda::low_rank_adapter(*ctx_, std::move(pruned), rank, seed);
  }

  /// @brief A new, empty store of device accumulators on the backend's context.
  std::unique_ptr<store> make_store() const { return std::make_unique<store>(*ctx_); }
  /// @brief Defines in `s` a double accumulator of `dim` features for `key` (default options),
  /// unless one exists already. Cost: `dim²` doubles of device memory for a new one.
  void define(store& s, const factor_key& key, index_t dim) const {
    if (s.factors_.count(key) == 0) s.factors_.emplace(key, device_factor_accumulator<double>(*ctx_, dim));
  }
  /// @brief Whether `key`'s accumulator in `s` has seen no token yet.
  /// @throws std::out_of_range if `key` was not defined.
  bool empty(const store& s, const factor_key& key) const { return s.factors_.at(key).empty(); }
  /// The diagonal of the accumulated (unnormalised) state, on the host: only its zeros matter.
  std::vector<double> diagonal(const store& s, const factor_key& key) const {
    const device_factor_accumulator<double>& f = s.factors_.at(key);
    device_buffer<double> d(*ctx_, f.size());
    detail::launch_diagonal(f.lower_data(), f.size(), f.size(), d.data(), ctx_->stream());
    return d.to_host();
  }

  /// The layer's curvature from the device means of G (`g_key` of `g_store`) and A (`a_key` of
  /// `a_store`; the two differ for sequential LLM Surgeon); no key: the identity.
  curvature factorize(const store& g_store, const std::optional<factor_key>& g_key, const store& a_store,
                      const std::optional<factor_key>& a_key, host_matrix_view<const float> w,
                      const damping& d) {
    const device_buffer<double> g = !g_key ? identity(w.rows()) : g_store.factors_.at(*g_key).mean(*ctx_);
    const device_buffer<double> a = !a_key ? identity(w.cols()) : a_store.factors_.at(*a_key).mean(*ctx_);
    const device_buffer<float> weights = upload(w);
    return cuda::factorize<float>(*ctx_, g.view(w.rows(), w.rows()), a.view(w.cols(), w.cols()), d,
                                  weights.view(w.rows(), w.cols()));
  }

  /// @brief Element costs of the host weights `w` `[R, C]` (uploaded, waits for the copy) by
  /// `cuda::element_costs`, kept on the device, or copied to the host with `costs_on_host`.
  costs element_costs(method how, const curvature& c, host_matrix_view<const float> w) {
    const device_buffer<float> weights = upload(w);
    costs result{
        cuda::element_costs<float>(*ctx_, how, c, weights.view(w.rows(), w.cols())), {}, w.rows(), w.cols()};
    if (options_.costs_on_host) {
      result.host_values = result.values.to_host();
      result.values = device_buffer<double>();  // freed in stream order, after the copy
    }
    return result;
  }
  /// Costs computed on the host (the diagonal methods'): uploaded for the device radix select, or
  /// kept on the host with `costs_on_host`.
  costs host_costs(host_matrix<double> c) const {
    costs result{{}, {}, c.rows(), c.cols()};
    if (options_.costs_on_host) {
      result.host_values = c.values();
    } else {
      result.values = device_buffer<double>(*ctx_, c.values());  // waits for the copy
    }
    return result;
  }
  /// @brief `[rows, cols]` costs of 0, on the device (zeroed on the stream) or on the host with
  /// `costs_on_host`.
  costs zero_costs(index_t rows, index_t cols) const {
    costs result{{}, {}, rows, cols};
    if (options_.costs_on_host) {
      result.host_values.assign(static_cast<std::size_t>(rows * cols), 0.0);
    } else {
      result.values = device_buffer<double>(*ctx_, rows * cols);
      result.values.fill_zero();
    }
    return result;
  }
  /// @brief Row costs of the host weights `w` `[R, C]` (uploaded) by `cuda::row_costs`: R host
  /// doubles.
  std::vector<double> row_costs(method how, const curvature& c, host_matrix_view<const float> w) {
    const device_buffer<float> weights = upload(w);
    return cuda::row_costs<float>(*ctx_, how, c, weights.view(w.rows(), w.cols()));
  }
  /// @brief Column costs of the host weights `w` `[R, C]` (uploaded) by `cuda::column_costs`: C
  /// host doubles.
  std::vector<double> column_costs(method how, const curvature& c, host_matrix_view<const float> w) {
    const device_buffer<float> weights = upload(w);
    return cuda::column_costs<float>(*ctx_, how, c, weights.view(w.rows(), w.cols()));
  }

  /// @brief The global element-wise selection over every matrix's costs: `cuda::select_unstructured`
  /// on the device, or `surgeon::select_unstructured` on the host with `costs_on_host`.
  selection select_unstructured(const std::vector<costs>& c, double sparsity) const {
    if (options_.costs_on_host) return surgeon::select_unstructured(host_views(c), sparsity);
    return cuda::select_unstructured(*ctx_, views(c), sparsity);
  }
  /// @brief The per-row selection: `cuda::select_per_row` on the device, or
  /// `surgeon::select_per_row` on the host with `costs_on_host`.
  selection select_per_row(const std::vector<costs>& c, double sparsity) const {
    if (options_.costs_on_host) return surgeon::select_per_row(host_views(c), sparsity);
    return cuda::select_per_row(*ctx_, views(c), sparsity);
  }
  /// @brief The N:M selection with pattern `p`: `cuda::select_nm` on the device, or
  /// `surgeon::select_nm` on the host with `costs_on_host`.
  selection select_nm(const std::vector<costs>& c, nm_pattern p, double sparsity) const {
    if (options_.costs_on_host) return surgeon::select_nm(host_views(c), p, sparsity);
    return cuda::select_nm(*ctx_, views(c), p, sparsity);
  }

  /// @brief Removes `rows` and `cols` of the host weights `w` `[R, C]` with their OBS update
  /// (`cuda::update_rows_columns`): uploads `w`, updates on the device, copies it back (waits).
  void update_rows_columns(const curvature& c, host_matrix_view<float> w, const std::vector<index_t>& rows,
                           const std::vector<index_t>& cols) {
    device_buffer<float> weights = upload(w);
    cuda::update_rows_columns(*ctx_, c, weights.view(w.rows(), w.cols()), rows, cols);
    download(weights, w);
  }
  /// @brief The OBS update of the host weights `w` `[R, C]` for the `pruned` mask within `budget`
  /// (`cuda::obs_update`): uploads `w`, updates on the device, copies it back (waits).
  update_report obs_update(const curvature& c, host_matrix_view<float> w, const mask& pruned,
                           correlate budget) {
    device_buffer<float> weights = upload(w);
    const update_report report = cuda::obs_update(*ctx_, c, weights.view(w.rows(), w.cols()), pruned, budget);
    download(weights, w);
    return report;
  }
  /// @brief The full OBS update of the host weights `w` `[R, C]` for the `pruned` mask by PCG
  /// with `options` (`cuda::obs_update_full`): uploads `w`, updates on the device, copies it back.
  update_report obs_update_full(const curvature& c, host_matrix_view<float> w, const mask& pruned,
                                pcg_options options) {
    device_buffer<float> weights = upload(w);
    const update_report report =
        cuda::obs_update_full(*ctx_, c, weights.view(w.rows(), w.cols()), pruned, options);
    download(weights, w);
    return report;
  }

  /// SparseGPT on H = the device mean of `a_key` (uniform per layer; N:M when asked).
  void sparsegpt(const store& s, const factor_key& a_key, host_matrix_view<float> w, const prune_options& o,
                 double target_sparsity) {
    const device_buffer<double> h = s.factors_.at(a_key).mean(*ctx_);
    device_buffer<float> weights = upload(w);
    const sparsegpt_options options{128, o.damp.value_or(default_damping(o.how)).a};
    const device_matrix_view<const double> hv = h.view(w.cols(), w.cols());
    if (o.what == structure::n_m) {
      cuda::sparsegpt_prune(*ctx_, hv, weights.view(w.rows(), w.cols()), o.pattern, options);
    } else {
      cuda::sparsegpt_prune(*ctx_, hv, weights.view(w.rows(), w.cols()), target_sparsity, options);
    }
    download(weights, w);
  }

 private:
  static std::vector<device_matrix_view<const double>> views(const std::vector<costs>& c) {
    std::vector<device_matrix_view<const double>> result;
    result.reserve(c.size());
    for (const costs& m : c) result.push_back(m.view());
    return result;
  }
  static std::vector<host_matrix_view<const double>> host_views(const std::vector<costs>& c) {
    std::vector<host_matrix_view<const double>> result;
    result.reserve(c.size());
    for (const costs& m : c) result.push_back(m.host_view());
    return result;
  }

  device_buffer<double> identity(index_t n) const {
    std::vector<double> values(static_cast<std::size_t>(n * n), 0.0);
    for (index_t i = 0; i < n; ++i) values[static_cast<std::size_t>(i * n + i)] = 1.0;
    return device_buffer<double>(*ctx_, values);
  }

  /// The host weights packed into a new device buffer (waits for the copy).
  device_buffer<float> upload(host_matrix_view<const float> w) const {
    device_buffer<float> buffer(*ctx_, w.rows() * w.cols());
    if (w.size() > 0) {
      SURGEON_CUDA_CHECK(cudaMemcpy2DAsync(buffer.data(), static_cast<std::size_t>(w.cols()) * sizeof(float),
                                           w.data(), static_cast<std::size_t>(w.ld()) * sizeof(float),
                                           static_cast<std::size_t>(w.cols()) * sizeof(float),
                                           static_cast<std::size_t>(w.rows()), cudaMemcpyHostToDevice,
                                           ctx_->stream()));
    }
    ctx_->synchronize();
    return buffer;
  }

  /// Copies the packed device weights back into the host view (waits).
  void download(const device_buffer<float>& buffer, host_matrix_view<float> w) const {
    if (w.size() > 0) {
      SURGEON_CUDA_CHECK(cudaMemcpy2DAsync(w.data(), static_cast<std::size_t>(w.ld()) * sizeof(float),
                                           buffer.data(), static_cast<std::size_t>(w.cols()) * sizeof(float),
                                           static_cast<std::size_t>(w.cols()) * sizeof(float),
                                           static_cast<std::size_t>(w.rows()), cudaMemcpyDeviceToHost,
                                           ctx_->stream()));
    }
    ctx_->synchronize();
  }

  context* ctx_;
  prune_backend_options options_;
};

/// @brief The multi-shot driver on the CUDA backend (see `basic_pruning_session`); construct it
/// with `cuda::prune_backend(ctx)` as the third argument.
template <typename Adapter>
using pruning_session = basic_pruning_session<Adapter, prune_backend>;

/// @brief `surgeon::prune` (driver/session.hpp), also found as `cuda::prune`: with a
/// `cuda::context` it runs on that context's device. Two uploads and one download of each
/// matrix's weights per shot beside the device work.
using surgeon::prune;

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA
