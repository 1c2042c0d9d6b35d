/// @file driver/correction.hpp
/// @brief The driver's side of the first-order correction (first_order.hpp): the sink that pairs a
/// fine-tuning pass's layer inputs with the output gradients of the matrices that read them, and
/// hands both to those matrices' low-rank adapters. Backend-neutral and free of Eigen: the
/// adapters are the backend's (`cpu::low_rank_adapter`, `cuda::low_rank_adapter`).
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/driver/calibration.hpp>
#include <surgeon/error.hpp>
#include <surgeon/view.hpp>

#include <cstddef>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace surgeon {

namespace detail {

template <typename A, typename = void>
struct has_fine_tune : std::false_type {};
/// An adapter with `fine_tune(calibration_sink&, int shot, int step)` (the first-order correction).
template <typename A>
struct has_fine_tune<
    A, std::void_t<decltype(std::declval<A&>().fine_tune(std::declval<calibration_sink&>(), int{}, int{}))>>
    : std::true_type {};

template <typename A, typename = void>
struct has_can_fine_tune : std::false_type {};
/// A type-erased adapter that tells at run time whether it has a fine-tuning pass (`any_adapter`).
template <typename A>
struct has_can_fine_tune<A, std::void_t<decltype(std::declval<const A&>().can_fine_tune())>>
    : std::true_type {};

/// @brief Where a fine-tuning pass goes: for each batch, the adapter hands each input key's layer
/// input before the output gradients of the matrices that read it (a forward pass, then its
/// backward pass), over the same token rows; each gradient is paired with the latest input of its
/// matrix's key and both go to that matrix's `LowRank::accumulate(x, gy)`. Holds one copy of the
/// latest input of each key (tokens × in floats).
template <typename LowRank>
class correction_sink final : public factor_sink {
 public:
  /// `adapters[k]` belongs to `matrices[k]`; both must outlive the sink.
  correction_sink(const std::vector<prunable_matrix>& matrices, std::vector<LowRank>& adapters)
      : matrices_(matrices), adapters_(adapters), fed_(matrices.size(), false) {
    for (std::size_t k = 0; k < matrices.size(); ++k) {
      readers_.emplace(matrices[k].name, k);
      inputs_.emplace(matrices[k].input_key, latest_input{});
    }
  }

  bool contains(const factor_key& key) const override {
    return key.kind == factor_kind::input ? inputs_.count(key.name) != 0 : readers_.count(key.name) != 0;
  }

  /// Keeps a copy of an input; pairs an output gradient with its matrix's latest input.
  /// @throws logic_error on a gradient before any input of its key, or with other token rows.
  void add(const factor_key& key, host_matrix_view<const float> x) override {
    if (key.kind == factor_kind::input) {
      latest_input& in = inputs_.at(key.name);
      in.rows = x.rows();
      in.cols = x.cols();
      in.values.resize(static_cast<std::size_t>(x.rows() * x.cols()));
      for (index_t t = 0; t < x.rows(); ++t) {
        const float* row = x.row(t);
        std::copy(row, row + x.cols(), in.values.begin() + t * x.cols());
      }
      return;
    }
    const std::size_t k = readers_.at(key.name);
    const latest_input& in = inputs_.at(matrices_[k].input_key);
    SURGEON_EXPECTS(in.rows > 0, "first_order: the output gradient of '{}' came before any input of '{}'",
                    key.name, matrices_[k].input_key);
    SURGEON_EXPECTS(in.rows == x.rows(),
                    "first_order: the output gradient of '{}' has {} token rows, the latest input of '{}' {}",
                    key.name, x.rows(), matrices_[k].input_key, in.rows);
    adapters_[k].accumulate(host_matrix_view<const float>(in.values.data(), in.rows, in.cols), x);
    fed_[k] = true;
  }

  /// True when matrix k received at least one gradient.
  bool fed(std::size_t k) const { return fed_[k]; }

 private:
  struct latest_input {
    index_t rows = 0;
    index_t cols = 0;
    std::vector<float> values;
  };
  const std::vector<prunable_matrix>& matrices_;
  std::vector<LowRank>& adapters_;
  std::map<std::string, std::size_t> readers_;  // matrix name → index
  std::map<std::string, latest_input> inputs_;  // input key → its latest input
  std::vector<bool> fed_;
};

}  // namespace detail

}  // namespace surgeon
