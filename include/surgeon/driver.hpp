/// @file driver.hpp
/// @brief The multi-shot pruning driver (METHOD.md §5), backend-neutral: the adapter's types
/// (driver/calibration.hpp), the options and their defaults (driver/options.hpp), the memory
/// estimate (driver/memory.hpp), the shot reports (driver/report.hpp) and the schedule
/// (driver/session.hpp). Include `surgeon/prune.hpp` (CPU) or `surgeon/cuda/prune.hpp` (CUDA) to
/// run it; this header includes no backend and no Eigen, so nvcc translation units may use it.
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
///   // Optional: a quality measure after shot `shot` (e.g. perplexity); lower is better. May
///   // return std::optional<double> instead (nothing: no evaluation in that shot's report), and
///   // may take no argument.
///   double evaluate(int shot);
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

#include <surgeon/driver/calibration.hpp>
#include <surgeon/driver/memory.hpp>
#include <surgeon/driver/options.hpp>
#include <surgeon/driver/report.hpp>
#include <surgeon/driver/session.hpp>
#include <surgeon/method_traits.hpp>
