/// @file adapter.hpp
/// @brief `surgeon::any_adapter`: a type-erased model adapter for the pruning driver, so that the
/// model (and its runtime, often Eigen-based) and the driver can live in different translation
/// units — in particular the CUDA driver in an nvcc translation unit, which must not include Eigen,
/// and the model in a host-compiled one.
///
/// ```cpp
/// // prune_cuda.cu (nvcc): no model code, no Eigen.
/// std::vector<surgeon::shot_report> prune_on_gpu(surgeon::any_adapter& model,
///                                                const surgeon::prune_options& options) {
///   surgeon::cuda::context ctx;
///   return surgeon::cuda::prune(ctx, model, options);
/// }
/// // main.cpp (g++): the model and its adapter.
/// my_adapter adapter(...);
/// surgeon::any_adapter erased(adapter);  // references `adapter`
/// prune_on_gpu(erased, options);
/// ```
///
/// Eigen-free and CUDA-free; usable by both backends' drivers.
#pragma once

#include <surgeon/driver/calibration.hpp>
#include <surgeon/driver/session.hpp>
#include <surgeon/error.hpp>

#include <functional>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace surgeon {

/// @brief A pruning-driver adapter (see driver.hpp) behind `std::function`s: a
/// concrete adapter referenced by the templated constructor, or three callables. Copyable; a copy
/// calls the same adapter. Each call costs one indirect call over the wrapped adapter's.
class any_adapter {
 public:
  /// Callable that returns the prunable matrices (name, input key, weights view `[out, in]`).
  using matrices_function = std::function<std::vector<prunable_matrix>()>;
  /// Callable that runs one calibration pass into the sink; its int argument is the shot.
  using calibrate_function = std::function<void(calibration_sink&, int)>;
  /// Returns a quality measure after the shot it is given (lower is better), or nothing.
  using evaluate_function = std::function<std::optional<double>(int)>;
  /// Returns the adapter's coupled units (`structure::coupled`).
  using units_function = std::function<coupled_units()>;
  /// Runs one fine-tuning pass of the first-order correction (shot, step) and returns its loss.
  using fine_tune_function = std::function<double(calibration_sink&, int, int)>;

  /// @brief Erases `adapter`, which is referenced (it must outlive every call). Its
  /// `evaluate(int shot)` or `evaluate()`, when it has one, is forwarded; without one, `evaluate`
  /// returns nothing.
  template <typename Adapter,
            typename = std::enable_if_t<!std::is_same_v<std::decay_t<Adapter>, any_adapter>>>
  explicit any_adapter(Adapter& adapter)
      : matrices_([&adapter]() { return adapter.matrices(); }),
        calibrate_([&adapter](calibration_sink& sink, int shot) { adapter.calibrate(sink, shot); }) {
    if constexpr (detail::has_evaluate_v<Adapter>) {
      evaluate_ = [&adapter](int shot) -> std::optional<double> {
        return detail::evaluate_after(adapter, shot);
      };
    }
    if constexpr (detail::has_units<Adapter>::value) {
      units_ = [&adapter]() { return adapter.units(); };
    }
    if constexpr (detail::has_fine_tune<Adapter>::value) {
      fine_tune_ = [&adapter](calibration_sink& sink, int shot, int step) {
        return static_cast<double>(adapter.fine_tune(sink, shot, step));
      };
    }
  }

  /// @brief An adapter from callables (`evaluate` may be empty: no evaluation; `units` may be
  /// empty: no coupled units; `fine_tune` may be empty: no first-order correction).
  /// @throws logic_error if `matrices` or `calibrate` is empty.
  any_adapter(matrices_function matrices, calibrate_function calibrate, evaluate_function evaluate = {},
              units_function units = {}, fine_tune_function fine_tune = {})
      : matrices_(std::move(matrices)),
        calibrate_(std::move(calibrate)),
        evaluate_(std::move(evaluate)),
        units_(std::move(units)),
        fine_tune_(std::move(fine_tune)) {
    SURGEON_EXPECTS(static_cast<bool>(matrices_), "any_adapter: the matrices function is empty");
    SURGEON_EXPECTS(static_cast<bool>(calibrate_), "any_adapter: the calibrate function is empty");
  }

  /// @brief The wrapped adapter's prunable matrices.
  std::vector<prunable_matrix> matrices() { return matrices_(); }
  /// @brief The wrapped adapter's calibration pass for shot `shot`.
  void calibrate(calibration_sink& sink, int shot) { calibrate_(sink, shot); }
  /// @brief The wrapped adapter's evaluation after shot `shot`, or nothing when it has none (the
  /// shot reports then carry no evaluation).
  std::optional<double> evaluate(int shot) { return evaluate_ ? evaluate_(shot) : std::nullopt; }
  /// @brief Whether `fine_tune` can run (the wrapped adapter has one).
  bool can_fine_tune() const noexcept { return static_cast<bool>(fine_tune_); }
  /// @brief Whether `evaluate` can return a value.
  bool has_evaluate() const noexcept { return static_cast<bool>(evaluate_); }
  /// @brief The wrapped adapter's coupled units.
  /// @throws logic_error when it has none (no `units()`, or no `units` callable).
  coupled_units units() {
    SURGEON_EXPECTS(static_cast<bool>(units_),
                    "any_adapter: the adapter declares no coupled units (units())");
    return units_();
  }
  /// @brief The wrapped adapter's fine-tuning pass (first-order correction) after shot `shot`, step
  /// `step` (0-based); returns its mean loss.
  /// @throws logic_error when it has none (no `fine_tune`, or no `fine_tune` callable).
  double fine_tune(calibration_sink& sink, int shot, int step) {
    SURGEON_EXPECTS(
        static_cast<bool>(fine_tune_),
        "any_adapter: the adapter has no fine-tuning pass (fine_tune()) for the first-order correction");
    return fine_tune_(sink, shot, step);
  }

 private:
  matrices_function matrices_;
  calibrate_function calibrate_;
  evaluate_function evaluate_;
  units_function units_;
  fine_tune_function fine_tune_;
};

}  // namespace surgeon
