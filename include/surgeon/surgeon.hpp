/// @file surgeon.hpp
/// @brief Umbrella header: the backend-neutral API plus every backend this build has.
///
/// - always: errors, views, masks, K-FAC accumulators, damping and dead structure, global
///   selection, coupled units, the first-order correction's options, safetensors I/O, the pruning
///   driver's options and `any_adapter`;
/// - with `SURGEON_HAS_EIGEN` (target `surgeon::eigen`): the CPU backend `surgeon::cpu` (curvature,
///   costs, OBS updates, SparseGPT, the first-order correction's `low_rank_adapter`);
/// - `surgeon::cuda::context` always exists and throws `backend_unavailable` when the CUDA
///   backend is not compiled in or no device is visible.
#pragma once

#include <surgeon/adapter.hpp>
#include <surgeon/config.hpp>
#include <surgeon/curvature.hpp>
#include <surgeon/diagonal.hpp>
#include <surgeon/error.hpp>
#include <surgeon/first_order.hpp>
#include <surgeon/io/safetensors.hpp>
#include <surgeon/kfac.hpp>
#include <surgeon/mask.hpp>
#include <surgeon/select.hpp>
#include <surgeon/types.hpp>
#include <surgeon/units.hpp>
#include <surgeon/update.hpp>
#include <surgeon/version.hpp>
#include <surgeon/view.hpp>

#include <surgeon/cuda/context.hpp>

#if defined(SURGEON_HAS_EIGEN)
#include <surgeon/cpu/context.hpp>
#include <surgeon/cpu/cost.hpp>
#include <surgeon/cpu/curvature.hpp>
#include <surgeon/cpu/first_order.hpp>
#include <surgeon/cpu/kfac.hpp>
#include <surgeon/cpu/sparsegpt.hpp>
#include <surgeon/cpu/update.hpp>
#endif
