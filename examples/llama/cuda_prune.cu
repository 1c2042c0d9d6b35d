// surgeon-prune's CUDA translation unit (nvcc): the pruning driver on the CUDA backend, behind the
// plain interface of cuda_prune.hpp. No Eigen here: the model and its runtime are in the
// host-compiled surgeon_prune.cpp and reach this file as a surgeon::any_adapter.
#include <fmt/format.h>

#include <surgeon/adapter.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>
#include <surgeon/cuda/prune.hpp>
#include <surgeon/error.hpp>

#include <cstddef>
#include <string>
#include <vector>

#include "llama/cuda_prune.hpp"

namespace surgeon::llama {

std::string cuda_device_description(int device) {
  const cuda::context ctx(device);  // validates the ordinal, with backend_unavailable
  cudaDeviceProp properties{};
  SURGEON_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  return fmt::format("{}, {:.0f} GiB, compute capability {}.{}", properties.name,
                     static_cast<double>(properties.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0),
                     properties.major, properties.minor);
}

std::size_t cuda_free_bytes(int device) {
  const cuda::context ctx(device);
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  SURGEON_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return free_bytes;
}

std::vector<shot_report> prune_on_cuda(int device, any_adapter& adapter, const prune_options& options,
                                       bool costs_on_host,
                                       const std::function<void(const shot_report&)>& on_shot) {
  cuda::context ctx(device);
  cuda::prune_backend_options backend;
  backend.costs_on_host = costs_on_host;
  return cuda::prune(ctx, adapter, options, backend, on_shot);
}

}  // namespace surgeon::llama
