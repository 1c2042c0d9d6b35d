/// @file driver/calibration.hpp
/// @brief What passes between the caller's model and the pruning driver (METHOD.md §5): the
/// prunable matrices an adapter lists, the typed keys of their K-FAC factors, and the
/// `calibration_sink` a calibration pass feeds. Backend-neutral and free of Eigen.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/diagonal.hpp>
#include <surgeon/distributed/communicator.hpp>
#include <surgeon/error.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cstddef>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace surgeon {

template <typename Adapter, typename Backend>
class basic_pruning_session;

/// @brief One prunable weight matrix of the caller's model.
struct prunable_matrix {
  std::string name;                ///< unique ("blk.0.attn_q")
  std::string input_key;           ///< key of its input; shared by layers reading the same input
  host_matrix_view<float> weight;  ///< [out, in], the caller's buffer, updated in place
};

/// @brief Which K-FAC factor a key names.
enum class factor_kind {
  input,            ///< A of an input key: shared by every matrix that reads that input
  output_gradient,  ///< G of one matrix, by its name
};

/// @brief The key of one K-FAC accumulator in a calibration pass: the A of an input key, or the G
/// of a matrix. Ordered, so that it can key a map. O(length of the name) to compare.
struct factor_key {
  factor_kind kind = factor_kind::input;  ///< A or G
  std::string name;                       ///< the input key (A) or the matrix name (G)

  /// @brief The A factor of `m`'s input.
  static factor_key input_of(const prunable_matrix& m) { return {factor_kind::input, m.input_key}; }
  /// @brief The A factor of the input named `input_key`.
  static factor_key input_of(std::string input_key) { return {factor_kind::input, std::move(input_key)}; }
  /// @brief The G factor of `m`'s output.
  static factor_key gradient_of(const prunable_matrix& m) { return {factor_kind::output_gradient, m.name}; }
  /// @brief The G factor of the matrix named `name`.
  static factor_key gradient_of(std::string name) { return {factor_kind::output_gradient, std::move(name)}; }

  /// @brief A printable, unique spelling ("a:<input key>", "g:<matrix name>"), also the key of a
  /// `factor_bank` that holds the accumulators. O(length of the name).
  std::string str() const { return (kind == factor_kind::input ? "a:" : "g:") + name; }

  /// @brief Order by kind, then name.
  friend bool operator<(const factor_key& x, const factor_key& y) {
    return std::tie(x.kind, x.name) < std::tie(y.kind, y.name);
  }
  /// @brief Same kind and name.
  friend bool operator==(const factor_key& x, const factor_key& y) {
    return x.kind == y.kind && x.name == y.name;
  }
};

namespace detail {

/// @brief Where a calibration pass's inputs and gradients go: the backend's K-FAC accumulators.
/// Implemented by each backend's `store`.
class factor_sink {
 public:
  virtual ~factor_sink() = default;
  /// True when the key was defined for the current pass.
  virtual bool contains(const factor_key& key) const = 0;
  /// Adds the token rows `x` [tokens, dim] to the accumulator of `key`.
  virtual void add(const factor_key& key, host_matrix_view<const float> x) = 0;
};

/// @brief Host accumulators of factor diagonals for the diagonal methods (`uses_diagonals_only`),
/// the same on every backend: O(tokens·dim) per batch, `dim` doubles per key.
class diagonal_store final : public factor_sink {
 public:
  void define(const factor_key& key, index_t dim) {
    if (accumulators_.count(key) == 0) accumulators_.emplace(key, diagonal_accumulator(dim));
  }
  bool contains(const factor_key& key) const override { return accumulators_.count(key) != 0; }
  void add(const factor_key& key, host_matrix_view<const float> x) override { accumulators_.at(key).add(x); }
  bool empty(const factor_key& key) const { return accumulators_.at(key).empty(); }
  const diagonal_accumulator& at(const factor_key& key) const { return accumulators_.at(key); }
  diagonal_accumulator& at(const factor_key& key) { return accumulators_.at(key); }

 private:
  std::map<factor_key, diagonal_accumulator> accumulators_;
};

}  // namespace detail

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
    return wants_a_ && store_->contains(factor_key::input_of(input_key));
  }
  /// @brief True when `output_grad(name, …)` would be accumulated in this pass.
  bool wants_output_grad(const std::string& name) const {
    return wants_g_ && store_->contains(factor_key::gradient_of(name));
  }

  /// @brief The part of the pass this process should run when the run is spread over several
  /// processes (`basic_pruning_session` with a communicator): item i of the pass (a sequence, or
  /// a batch of sequences always formed the same way) belongs to it when `share().owns(i)`. The
  /// driver sums the processes' factors afterwards. An adapter that never asks runs the whole
  /// pass on every process; the driver then takes each process's factors as they are (correct,
  /// without the speed-up). {0, 1}, everything, in a single-process run and in the first-order
  /// correction's passes. O(1).
  data_share share() const noexcept {
    asked_share_ = true;
    return share_;
  }

  /// @brief Adds the input X `[tokens, in]` read by every matrix with `input_key`.
  /// @throws logic_error on a shape mismatch or non-finite input.
  void input(const std::string& input_key, host_matrix_view<const float> x) {
    if (!wants_a_) return;
    const factor_key key = factor_key::input_of(input_key);
    if (store_->contains(key)) store_->add(key, x);
  }
  /// @brief Adds the gradient `[tokens, out]` at the output of matrix `name`.
  /// @throws logic_error on a shape mismatch or non-finite input.
  void output_grad(const std::string& name, host_matrix_view<const float> gy) {
    if (!wants_g_) return;
    const factor_key key = factor_key::gradient_of(name);
    if (store_->contains(key)) store_->add(key, gy);
  }

 private:
  template <typename Adapter, typename Backend>
  friend class basic_pruning_session;
  calibration_sink(detail::factor_sink& store, bool wants_a, bool wants_g, data_share share = {})
      : store_(&store), wants_a_(wants_a), wants_g_(wants_g), share_(share) {}
  detail::factor_sink* store_;
  bool wants_a_ = false;
  bool wants_g_ = false;
  data_share share_;
  mutable bool asked_share_ = false;
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

/// @brief Consecutive groups of `group_size` matrices out of `count` (0: one group of all).
/// Cost: O(count).
inline std::vector<std::vector<std::size_t>> fixed_groups(std::size_t count, int group_size) {
  std::vector<std::vector<std::size_t>> groups;
  const std::size_t size = group_size > 0 ? static_cast<std::size_t>(group_size) : count;
  for (std::size_t first = 0; first < count; first += size) {
    groups.emplace_back();
    for (std::size_t k = first; k < std::min(count, first + size); ++k) groups.back().push_back(k);
  }
  return groups;
}

}  // namespace surgeon
