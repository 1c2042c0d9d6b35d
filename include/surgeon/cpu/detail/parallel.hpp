/// @file cpu/detail/parallel.hpp
/// @brief Independent tasks on a few threads, with the dense kernels single-threaded meanwhile.
///
/// The chunked OBS update of one matrix is a long chain of small products (a chunk's rows are a
/// handful, so each GEMM is m ≈ 4–16 rows by C²): the BLAS's own threads gain little on them, and
/// on a loaded machine they spin. The matrices of one update pass are independent, so the CPU
/// backend can update several at once, one thread each, with the BLAS (and Eigen) pinned to one
/// thread for the pass so that the workers do not oversubscribe the cores.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(SURGEON_USE_OPENBLAS)
#include <cblas.h>
#endif

namespace surgeon::cpu::detail {

/// Pins the dense kernels (OpenBLAS, and Eigen's OpenMP threads in an Eigen build with OpenMP) to
/// one thread while it lives and restores the previous counts after. Both counts are process-wide:
/// the caller's own BLAS calls made meanwhile from other threads run single-threaded too.
class single_threaded_kernels {
 public:
  single_threaded_kernels() : eigen_threads_(Eigen::nbThreads()) {
#if defined(SURGEON_USE_OPENBLAS)
    blas_threads_ = openblas_get_num_threads();
    openblas_set_num_threads(1);
#endif
    Eigen::setNbThreads(1);
  }
  ~single_threaded_kernels() {
#if defined(SURGEON_USE_OPENBLAS)
    openblas_set_num_threads(blas_threads_);
#endif
    Eigen::setNbThreads(eigen_threads_);
  }
  single_threaded_kernels(const single_threaded_kernels&) = delete;
  single_threaded_kernels& operator=(const single_threaded_kernels&) = delete;

 private:
  int eigen_threads_;
  int blas_threads_ = 1;
};

/// Runs `task(i)` for every i in [0, count) on min(threads, count) threads (the calling thread is
/// one of them); with threads <= 1 or count <= 1, in order on the calling thread with the kernels'
/// threads untouched. Tasks must be independent. When a task throws, the workers start no new
/// task, the running ones finish, and the first exception is rethrown here.
inline void for_each_concurrently(std::size_t count, int threads,
                                  const std::function<void(std::size_t)>& task) {
  SURGEON_EXPECTS(threads >= 0, "for_each_concurrently: threads must be >= 0, got {}", threads);
  if (threads <= 1 || count <= 1) {
    for (std::size_t i = 0; i < count; ++i) task(i);
    return;
  }
  const std::size_t workers = std::min(count, static_cast<std::size_t>(threads));
  const single_threaded_kernels pinned;
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  const auto work = [&]() {
    while (!failed.load(std::memory_order_relaxed)) {
      const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= count) return;
      try {
        task(i);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  try {
    for (std::size_t t = 1; t < workers; ++t) pool.emplace_back(work);
  } catch (const std::system_error&) {
    // No more threads to be had: the ones started and this one do the work.
  }
  work();
  for (std::thread& thread : pool) thread.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace surgeon::cpu::detail
