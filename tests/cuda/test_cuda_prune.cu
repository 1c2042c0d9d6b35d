// The multi-shot driver on the CUDA backend against the same driver on the CPU backend, on the same
// seeded toy model: every method and structure, two shots. Float weights, so weights agree to 1e-4
// relative to the largest; the zero patterns (the masks) must be identical and the achieved
// sparsity of every shot equal. The CPU results come from prune_reference.cpp (host compiler).
// Every comparison runs twice: costs kept on the device (device radix select) and costs moved to
// the host (select.hpp), which must agree with the CPU alike.
#include "prune_reference.hpp"
#include "support/catch.hpp"
#include "toy_model.hpp"

#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/prune.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using surgeon::method;
using surgeon::structure;

void compare_one(const surgeon::prune_options& options, const surgeon_test::reference_pruning& expected,
                 bool costs_on_host) {
  INFO("costs on the " << (costs_on_host ? "host" : "device"));
  surgeon::cuda::context ctx;
  surgeon_test::toy_model model;
  std::vector<double> achieved;
  surgeon::cuda::prune_backend_options backend;
  backend.costs_on_host = costs_on_host;
  for (const surgeon::shot_report& r : surgeon::cuda::prune(ctx, model, options, backend))
    achieved.push_back(r.achieved_sparsity);
  const std::vector<double> got = model.weights();
  REQUIRE(got.size() == expected.weights.size());
  CHECK(achieved == expected.achieved);
  double diff = 0.0;
  double scale = 0.0;
  std::size_t zero_mismatches = 0;
  for (std::size_t k = 0; k < got.size(); ++k) {
    diff = std::max(diff, std::fabs(got[k] - expected.weights[k]));
    scale = std::max(scale, std::fabs(expected.weights[k]));
    zero_mismatches += (got[k] == 0.0) != (expected.weights[k] == 0.0) ? 1 : 0;
  }
  CHECK(zero_mismatches == 0);
  CHECK(diff / scale < 1e-4);
}

void compare(const surgeon::prune_options& options) {
  const surgeon_test::reference_pruning expected = surgeon_test::cpu_prune_toy(options);
  compare_one(options, expected, false);
  compare_one(options, expected, true);
}

}  // namespace

TEST_CASE("cuda driver: every method and structure matches the CPU driver", "[cuda][prune]") {
  const auto how = GENERATE(method::magnitude, method::wanda, method::lobd, method::kobd, method::sparsegpt,
                            method::llm_surgeon);
  CAPTURE(surgeon::to_string(how));
  for (const structure what : {structure::unstructured, structure::n_m, structure::rows_columns}) {
    if (what == structure::rows_columns && (how == method::wanda || how == method::sparsegpt)) continue;
    INFO("method " << surgeon::to_string(how) << ", structure " << static_cast<int>(what));
    surgeon::prune_options options;
    options.how = how;
    options.what = what;
    options.sparsity = what == structure::rows_columns ? 0.3 : 0.5;
    options.shots = how == method::sparsegpt && what == structure::n_m ? 1 : 2;
    // The default whole-mask update solved tightly, so that rounding cannot move the result.
    options.pcg = surgeon::pcg_options{1e-10, 500, surgeon::pcg_form::removed_sweep, false};
    compare(options);
  }
}

TEST_CASE("cuda driver: whole-mask updates and grouping match the CPU driver", "[cuda][prune]") {
  surgeon::prune_options options;
  options.shots = 2;
  options.update = surgeon::update_kind::whole_mask;
  for (const surgeon::pcg_form form : {surgeon::pcg_form::removed_sweep, surgeon::pcg_form::kept_kronecker}) {
    options.pcg = surgeon::pcg_options{1e-10, 500, form, false};
    compare(options);
  }
  // Float products, solved tightly enough that the CPU's and the GPU's roundings stay apart from
  // the stopping point.
  options.pcg = surgeon::pcg_options{1e-4, 500, surgeon::pcg_form::removed_sweep, true};
  compare(options);
  options.update = surgeon::update_kind::chunked;
  options.group_size = 1;
  compare(options);
}

TEST_CASE("cuda driver: sequential SparseGPT and Wanda match the CPU driver", "[cuda][prune]") {
  const auto how = GENERATE(method::sparsegpt, method::wanda);
  CAPTURE(surgeon::to_string(how));
  for (const structure what : {structure::unstructured, structure::n_m}) {
    INFO("method " << surgeon::to_string(how) << ", structure " << static_cast<int>(what));
    surgeon::prune_options options;
    options.how = how;
    options.what = what;
    options.sequential = true;
    options.shots = how == method::sparsegpt && what == structure::n_m ? 1 : 2;
    compare(options);
  }
}
