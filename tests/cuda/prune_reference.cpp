// CPU driver results for test_cuda_prune.cu (see prune_reference.hpp). Host compiler only.
#include "prune_reference.hpp"

#include "toy_model.hpp"

#include <surgeon/prune.hpp>

namespace surgeon_test {

reference_pruning cpu_prune_toy(const surgeon::prune_options& options) {
  toy_model model;
  reference_pruning result;
  for (const surgeon::shot_report& r : surgeon::prune(model, options))
    result.achieved.push_back(r.achieved_sparsity);
  result.weights = model.weights();
  return result;
}

}  // namespace surgeon_test
