/// @file cuda_prune.hpp
/// @brief surgeon-prune's CUDA entry points, defined in cuda_prune.cu (compiled by nvcc, without
/// Eigen) and called from the host-compiled tool through `surgeon::any_adapter`. Declared only
/// when the tool is built with the CUDA backend (`SURGEON_PRUNE_WITH_CUDA`).
#pragma once

#include <surgeon/adapter.hpp>
#include <surgeon/driver.hpp>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace surgeon::llama {

/// @brief "name, N GiB, compute capability X.Y" of CUDA device `device`.
/// @throws backend_unavailable if no device is visible or `device` is not below the count.
std::string cuda_device_description(int device);

/// @brief The free memory of CUDA device `device` in bytes (`cudaMemGetInfo` on a new context).
/// @throws backend_unavailable as `cuda_device_description`.
std::size_t cuda_free_bytes(int device);

/// @brief `surgeon::cuda::prune` on a new context of device `device`: the adapter's weights stay
/// in host memory; curvature, costs, selection and updates run on the device, except that with
/// `costs_on_host` the element costs wait in host memory and the threshold is taken on the host
/// (`cuda::prune_backend_options::costs_on_host`).
/// @throws as `surgeon::cuda::prune`; backend_unavailable without the device.
std::vector<shot_report> prune_on_cuda(int device, any_adapter& adapter, const prune_options& options,
                                       bool costs_on_host,
                                       const std::function<void(const shot_report&)>& on_shot);

}  // namespace surgeon::llama
