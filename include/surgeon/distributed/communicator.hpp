/// @file distributed/communicator.hpp
/// @brief The seam between the pruning driver and a message-passing engine (METHOD.md §10): the
/// few collective operations a run over several processes needs, the single-process
/// implementation (today's behaviour, no engine at all), and `data_share`, the part of a
/// calibration pass one process runs. The MPI implementation is `surgeon::mpi::communicator`
/// (surgeon/mpi/communicator.hpp, CMake target `surgeon::mpi`), the NCCL one for device buffers
/// `surgeon::cuda::nccl_communicator` (surgeon/cuda/nccl.hpp). Backend-neutral and free of Eigen.
///
/// Every operation is collective: every process of the group calls it, in the same order, with
/// the same counts (and the same root). A process that fails must call `abort`, which ends every
/// process of the group, rather than leave the others waiting in a collective.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace surgeon {

/// @brief The part of a calibration pass's sequences (or batches) that one process runs: item i
/// of a pass belongs to process `i mod count`. The single-process share {0, 1} owns everything.
struct data_share {
  int index = 0;  ///< this process's rank, in [0, count)
  int count = 1;  ///< the number of processes that share the pass

  /// @brief True when item `item` (0-based: a sequence or a batch of the pass) is this process's.
  /// O(1).
  bool owns(index_t item) const noexcept { return item % count == index; }
  /// @brief True when one process runs everything.
  bool whole() const noexcept { return count == 1; }
};

/// @brief The collective operations of a group of processes, on host buffers (device buffers
/// where `reduces_device_buffers` says so). Implementations: `single_process`,
/// `mpi::communicator`, `cuda::nccl_communicator`. Not copyable through this interface; the driver
/// holds a reference.
class communicator {
 public:
  virtual ~communicator() = default;

  /// @brief This process's rank, in [0, size()).
  virtual int rank() const = 0;
  /// @brief The number of processes in the group (1 for `single_process`).
  virtual int size() const = 0;

  /// @brief Element-wise sum over every process, result on every process, in place. `count`
  /// doubles at `data` (host). O(count·log size) data moved by a tree or ring.
  virtual void all_reduce_sum(double* data, std::size_t count) = 0;
  /// @brief As above, for 64-bit integer counts (exact).
  virtual void all_reduce_sum(std::int64_t* data, std::size_t count) = 0;
  /// @brief Element-wise maximum over every process, result on every process, in place.
  virtual void all_reduce_max(double* data, std::size_t count) = 0;
  /// @brief Element-wise sum over every process, result on `root` only (in place there; the other
  /// processes' buffers are left unspecified).
  virtual void reduce_sum(double* data, std::size_t count, int root) = 0;
  /// @brief `bytes` bytes at `data` (host) from `root` to every process.
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
  /// @brief One value from each process, in rank order, on every process.
  virtual std::vector<std::int64_t> all_gather(std::int64_t value) = 0;

  /// @brief True when `reduce_sum_device` / `all_reduce_sum_device` take device pointers (NCCL):
  /// the CUDA backend then reduces its accumulators where they are, else through host buffers.
  virtual bool reduces_device_buffers() const { return false; }
  /// @brief `reduce_sum` on a device buffer (`reduces_device_buffers()` only).
  /// @throws logic_error unless overridden.
  virtual void reduce_sum_device(double* /*device_data*/, std::size_t /*count*/, int /*root*/) {
    SURGEON_THROW(logic_error, "communicator: this communicator reduces host buffers only");
  }
  /// @brief `all_reduce_sum` on a device buffer (`reduces_device_buffers()` only).
  /// @throws logic_error unless overridden.
  virtual void all_reduce_sum_device(double* /*device_data*/, std::size_t /*count*/) {
    SURGEON_THROW(logic_error, "communicator: this communicator reduces host buffers only");
  }

  /// @brief Ends every process of the group with exit status `code` (the others are stopped by the
  /// engine, e.g. MPI_Abort). Never returns.
  [[noreturn]] virtual void abort(int code) = 0;

  /// @brief `data_share{rank(), size()}`.
  data_share share() const { return data_share{rank(), size()}; }

 protected:
  /// @brief Only implementations construct one.
  communicator() = default;
  /// @brief Copied as part of an implementation only (the interface holds no state).
  communicator(const communicator&) = default;
  /// @brief Assigned as part of an implementation only.
  communicator& operator=(const communicator&) = default;
};

/// @brief The group of one process: every collective is the identity, `abort` exits. What the
/// driver uses when no communicator is given, so that a single-process run needs no engine.
class single_process final : public communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(double* /*data*/, std::size_t /*count*/) override {}
  void all_reduce_sum(std::int64_t* /*data*/, std::size_t /*count*/) override {}
  void all_reduce_max(double* /*data*/, std::size_t /*count*/) override {}
  void reduce_sum(double* /*data*/, std::size_t /*count*/, int root) override { expect_root(root); }
  void broadcast(void* /*data*/, std::size_t /*bytes*/, int root) override { expect_root(root); }
  std::vector<std::int64_t> all_gather(std::int64_t value) override { return {value}; }
  [[noreturn]] void abort(int code) override { std::exit(code); }

  /// @brief The process-wide instance the driver falls back to. Stateless.
  static single_process& instance() {
    static single_process group;
    return group;
  }

 private:
  static void expect_root(int root) {
    SURGEON_EXPECTS(root == 0, "single_process: root {} outside a group of one", root);
  }
};

}  // namespace surgeon
