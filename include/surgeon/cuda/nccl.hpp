/// @file cuda/nccl.hpp
/// @brief `surgeon::cuda::nccl_communicator`: the `surgeon::communicator` of the CUDA backend, on
/// NCCL. Device buffers are reduced where they are (`reduces_device_buffers()` is true); host
/// buffers go through a device staging buffer. One process per GPU; the process group itself (rank,
/// size, exchange of the NCCL id, `abort`) comes from a host communicator, e.g.
/// `surgeon::mpi::communicator`, or `surgeon::single_process` for a group of one.
///
/// Defined only when `SURGEON_HAS_CUDA` and `SURGEON_HAS_NCCL` are defined (CMake target
/// `surgeon::nccl`, created when the CUDA backend is on and NCCL is found); without them this header
/// declares nothing. Plain host C++ (no kernels, no Eigen): safe to include from nvcc and from
/// host-compiler translation units.
///
/// ```cpp
/// surgeon::mpi::communicator host(argc, argv);  // or surgeon::single_process::instance()
/// surgeon::cuda::nccl_communicator group(host, local_rank);
/// group.all_reduce_sum_device(accumulator.data(), n);  // device pointer, summed over every GPU
/// ```
#pragma once

#include <surgeon/config.hpp>

#if defined(SURGEON_HAS_CUDA) && defined(SURGEON_HAS_NCCL)

#include <surgeon/cuda/check.hpp>
#include <surgeon/distributed/communicator.hpp>
#include <surgeon/error.hpp>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <limits>
#include <utility>
#include <vector>

namespace surgeon::cuda {
namespace detail {

/// @brief The enumerator name of an NCCL result ("ncclInvalidArgument", ...). O(1).
inline const char* nccl_result_name(ncclResult_t result) noexcept {
  switch (result) {
    case ncclSuccess:
      return "ncclSuccess";
    case ncclUnhandledCudaError:
      return "ncclUnhandledCudaError";
    case ncclSystemError:
      return "ncclSystemError";
    case ncclInternalError:
      return "ncclInternalError";
    case ncclInvalidArgument:
      return "ncclInvalidArgument";
    case ncclInvalidUsage:
      return "ncclInvalidUsage";
    case ncclRemoteError:
      return "ncclRemoteError";
    case ncclInProgress:
      return "ncclInProgress";
    default:
      return "ncclResult_<unknown>";
  }
}

/// @brief Throws the `communication_error` for a failed NCCL call: the expression, the result's name,
/// `ncclGetErrorString`, NCCL's last error message when it has one, and `file:line`.
[[noreturn]] inline void throw_nccl_status(ncclResult_t result, const char* expr, const char* file,
                                           int line) {
  const char* last = ncclGetLastError(nullptr);
  const bool has_last = last != nullptr && last[0] != '\0';
  ::surgeon::detail::throw_error<communication_error>(file, line, "NCCL call '{}' failed: {} ({}){}{}", expr,
                                                      nccl_result_name(result), ncclGetErrorString(result),
                                                      has_last ? ": " : "", has_last ? last : "");
}

}  // namespace detail
}  // namespace surgeon::cuda

/// @brief Evaluates an NCCL call once; throws `surgeon::communication_error` unless it returns
/// `ncclSuccess`.
/// The message holds the expression, the result's name, `ncclGetErrorString`, NCCL's last error
/// message (`ncclGetLastError`) and `file:line`.
#define SURGEON_NCCL_CHECK(expr)                                                                   \
  do {                                                                                             \
    const ::ncclResult_t surgeon_nccl_result_ = (expr);                                            \
    if (surgeon_nccl_result_ != ::ncclSuccess)                                                     \
      ::surgeon::cuda::detail::throw_nccl_status(surgeon_nccl_result_, #expr, __FILE__, __LINE__); \
  } while (false)

namespace surgeon::cuda {

/// @brief A group of processes, one GPU each, whose collectives run on NCCL.
///
/// - The group is the host communicator's: `rank()` and `size()` are `host.rank()` and
///   `host.size()`, NCCL rank r is host rank r, and `abort` ends the group through the host
///   communicator (after aborting the NCCL communicator, so that no process stays in a kernel).
/// - Owns one NCCL communicator on one device, one non-blocking CUDA stream on that device, and a
///   device staging buffer for the host-buffer operations (grown on demand, never shrunk).
/// - Every operation makes the communicator's device current on the calling thread, runs on the
///   communicator's stream and synchronizes that stream before returning: results are ready on
///   return, on the host and on the device.
/// - Device operations (`reduce_sum_device`, `all_reduce_sum_device`) read and write the caller's
///   buffer on the communicator's stream: work that writes the buffer on another stream (e.g. a
///   `cuda::context`'s) must be complete first (synchronize that stream), and work that reads the
///   result on another stream may start once the call returns.
/// - Not thread-safe; collective like every `communicator`: every process calls every operation in
///   the same order with the same counts and root.
/// - Non-copyable; move-constructible (a moved-from communicator may only be destroyed, or `abort`
///   the group); not assignable.
class nccl_communicator final : public communicator {
 public:
  /// @brief Creates the NCCL communicator of the host group on device ordinal `device`.
  ///
  /// Collective over `host`: rank 0 makes the NCCL unique id (`ncclGetUniqueId`) and broadcasts it
  /// through `host`; every rank checks that `device` is usable and creates its stream, the ranks
  /// agree (one `host.all_reduce_max` of one value) that all of them succeeded, then call
  /// `ncclCommInitRank(host.size(), id, host.rank())`. A failure before `ncclCommInitRank` is
  /// reported on every rank (no rank is left waiting); a failure of `ncclCommInitRank` itself may
  /// leave the other ranks waiting in it: call `host.abort` on such an exception.
  ///
  /// @param host the process group; must outlive this object (a pointer to it is kept).
  /// @param device the CUDA device ordinal this process uses (usually the node-local rank); made
  ///        current on the calling thread.
  /// @throws logic_error if `device < 0`.
  /// @throws backend_unavailable if no CUDA device is visible or `device` is not below the count,
  ///         on this rank; communication_error if another rank failed or an NCCL call fails;
  ///         cuda_error if a CUDA runtime call fails.
  /// Cost: NCCL initialisation (bootstrap, topology detection, buffers): tens to hundreds of ms.
  nccl_communicator(communicator& host, int device) : host_(&host), device_(device) {
    // The id: made on rank 0, broadcast with a success flag so that a failure there is seen by all.
    struct id_message {
      ncclUniqueId id;
      std::int32_t ok;
    };
    id_message message{};
    ncclResult_t made = ncclSuccess;
    if (host.rank() == 0) {
      made = ncclGetUniqueId(&message.id);
      message.ok = made == ncclSuccess ? 1 : 0;
    }
    host.broadcast(&message, sizeof message, 0);
    if (message.ok == 0) {
      if (made != ncclSuccess) detail::throw_nccl_status(made, "ncclGetUniqueId", __FILE__, __LINE__);
      SURGEON_THROW(communication_error, "nccl_communicator: ncclGetUniqueId failed on rank 0");
    }

    // The device and the stream, agreed on by every rank before the blocking ncclCommInitRank.
    std::exception_ptr local_failure;
    try {
      prepare_device();
    } catch (...) {
      local_failure = std::current_exception();
    }
    double failed = local_failure ? 1.0 : 0.0;
    host.all_reduce_max(&failed, 1);
    if (failed != 0.0) {
      release();
      if (local_failure) std::rethrow_exception(local_failure);
      SURGEON_THROW(communication_error, "nccl_communicator: another rank could not set up its device");
    }

    try {
      SURGEON_NCCL_CHECK(ncclCommInitRank(&comm_, host.size(), message.id, host.rank()));
    } catch (...) {
      comm_ = nullptr;
      release();
      throw;
    }
  }

  nccl_communicator(const nccl_communicator&) = delete;
  nccl_communicator& operator=(const nccl_communicator&) = delete;
  nccl_communicator& operator=(nccl_communicator&&) = delete;

  /// @brief Takes over `other`'s NCCL communicator, stream and staging buffer; `other` keeps its
  /// host group and device but owns nothing. Cost: O(1), no device work.
  nccl_communicator(nccl_communicator&& other) noexcept
      : communicator(other),
        host_(other.host_),
        device_(other.device_),
        comm_(std::exchange(other.comm_, nullptr)),
        stream_(std::exchange(other.stream_, nullptr)),
        staging_(std::exchange(other.staging_, nullptr)),
        staging_bytes_(std::exchange(other.staging_bytes_, 0)) {}

  /// @brief Destroys the NCCL communicator (`ncclCommDestroy`), the stream and the staging buffer.
  /// Never throws (failures are ignored). Every rank should destroy its communicator at the same
  /// point, as NCCL may synchronize with the peers.
  ~nccl_communicator() override { release(); }

  /// @brief This process's rank in the host group, in [0, size()). O(1).
  int rank() const override { return host_->rank(); }
  /// @brief The number of processes (GPUs) in the host group. O(1).
  int size() const override { return host_->size(); }

  /// @brief Element-wise sum of `count` doubles at host `data` over every process, in place on
  /// every process. Staged: host→device copy, `ncclAllReduce` (ncclDouble, ncclSum), device→host.
  /// @throws logic_error if `data` is null with `count > 0`, or on a moved-from communicator.
  /// @throws cuda_error if a CUDA runtime call fails; communication_error if the NCCL call fails.
  /// Cost: 2·8·count bytes over PCIe plus a ring all-reduce (≈ 2·8·count bytes per GPU link).
  void all_reduce_sum(double* data, std::size_t count) override {
    all_reduce_host(data, count, ncclDouble, ncclSum, "all_reduce_sum");
  }
  /// @brief As above, for 64-bit integer counts (ncclInt64, exact).
  void all_reduce_sum(std::int64_t* data, std::size_t count) override {
    all_reduce_host(data, count, ncclInt64, ncclSum, "all_reduce_sum");
  }
  /// @brief Element-wise maximum of `count` doubles at host `data` over every process, in place on
  /// every process (ncclDouble, ncclMax). Staged and priced as `all_reduce_sum`.
  void all_reduce_max(double* data, std::size_t count) override {
    all_reduce_host(data, count, ncclDouble, ncclMax, "all_reduce_max");
  }

  /// @brief Element-wise sum of `count` doubles at host `data` over every process, in place on
  /// `root`; the other processes' buffers are left untouched. Staged: host→device copy,
  /// `ncclReduce` (ncclDouble, ncclSum), device→host on `root` only.
  /// @throws logic_error if `root` is outside [0, size()), `data` is null with `count > 0`, or on a
  ///         moved-from communicator.
  /// @throws cuda_error if a CUDA runtime call fails; communication_error if the NCCL call fails.
  /// Cost: 8·count bytes over PCIe (twice on root) plus a pipelined tree/ring reduce.
  void reduce_sum(double* data, std::size_t count, int root) override {
    expect_usable(data, count, "reduce_sum");
    expect_root(root, "reduce_sum");
    if (count == 0) return;
    make_current();
    const std::size_t bytes = byte_count<double>(count, "reduce_sum");
    void* staged = staging(bytes);
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(staged, data, bytes, cudaMemcpyHostToDevice, stream_));
    SURGEON_NCCL_CHECK(ncclReduce(staged, staged, count, ncclDouble, ncclSum, root, comm_, stream_));
    if (rank() == root) {
      SURGEON_CUDA_CHECK(cudaMemcpyAsync(data, staged, bytes, cudaMemcpyDeviceToHost, stream_));
    }
    synchronize();
  }

  /// @brief `bytes` bytes at host `data` from `root` to every process (in place). Staged:
  /// host→device copy on `root`, `ncclBroadcast` (ncclUint8), device→host on the others.
  /// @throws logic_error if `root` is outside [0, size()), `data` is null with `bytes > 0`, or on a
  ///         moved-from communicator.
  /// @throws cuda_error if a CUDA runtime call fails; communication_error if the NCCL call fails.
  /// Cost: `bytes` over PCIe on each process plus a pipelined broadcast.
  void broadcast(void* data, std::size_t bytes, int root) override {
    expect_usable(data, bytes, "broadcast");
    expect_root(root, "broadcast");
    if (bytes == 0) return;
    make_current();
    void* staged = staging(bytes);
    const bool is_root = rank() == root;
    if (is_root) SURGEON_CUDA_CHECK(cudaMemcpyAsync(staged, data, bytes, cudaMemcpyHostToDevice, stream_));
    SURGEON_NCCL_CHECK(ncclBroadcast(staged, staged, bytes, ncclUint8, root, comm_, stream_));
    if (!is_root) SURGEON_CUDA_CHECK(cudaMemcpyAsync(data, staged, bytes, cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }

  /// @brief One value from each process, in rank order, on every process (`ncclAllGather`,
  /// ncclInt64, in place in the staging buffer).
  /// @return `size()` values; element r is rank r's `value`.
  /// @throws logic_error on a moved-from communicator; cuda_error if a CUDA runtime call
  ///         fails; communication_error if the NCCL call fails.
  /// Cost: 8·size() bytes over PCIe plus a ring all-gather.
  std::vector<std::int64_t> all_gather(std::int64_t value) override {
    expect_usable(&value, 1, "all_gather");
    make_current();
    const auto count = static_cast<std::size_t>(size());
    std::vector<std::int64_t> values(count);
    auto* staged = static_cast<std::int64_t*>(staging(byte_count<std::int64_t>(count, "all_gather")));
    std::int64_t* own = staged + rank();
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(own, &value, sizeof value, cudaMemcpyHostToDevice, stream_));
    SURGEON_NCCL_CHECK(ncclAllGather(own, staged, 1, ncclInt64, comm_, stream_));
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(values.data(), staged, count * sizeof(std::int64_t),
                                       cudaMemcpyDeviceToHost, stream_));
    synchronize();
    return values;
  }

  /// @brief True: `reduce_sum_device` and `all_reduce_sum_device` take device pointers.
  bool reduces_device_buffers() const override { return true; }

  /// @brief Element-wise sum of `count` doubles at device pointer `device_data` (on this
  /// communicator's device) over every process, in place on `root`; the other processes' buffers
  /// are left unspecified. `ncclReduce` (ncclDouble, ncclSum) on the communicator's stream, then a
  /// synchronization of that stream. The buffer must not be written by pending work on another
  /// stream (see the class notes).
  /// @throws logic_error if `root` is outside [0, size()), `device_data` is null with `count > 0`,
  ///         or on a moved-from communicator.
  /// @throws communication_error if the NCCL call fails; cuda_error if the synchronization fails.
  /// Cost: a pipelined tree/ring reduce of 8·count bytes; no host copy.
  void reduce_sum_device(double* device_data, std::size_t count, int root) override {
    expect_usable(device_data, count, "reduce_sum_device");
    expect_root(root, "reduce_sum_device");
    if (count == 0) return;
    make_current();
    SURGEON_NCCL_CHECK(
        ncclReduce(device_data, device_data, count, ncclDouble, ncclSum, root, comm_, stream_));
    synchronize();
  }

  /// @brief Element-wise sum of `count` doubles at device pointer `device_data` (on this
  /// communicator's device) over every process, in place on every process. `ncclAllReduce`
  /// (ncclDouble, ncclSum) on the communicator's stream, then a synchronization of that stream.
  /// @throws logic_error if `device_data` is null with `count > 0`, or on a moved-from communicator.
  /// @throws communication_error if the NCCL call fails; cuda_error if the synchronization fails.
  /// Cost: a ring all-reduce, ≈ 2·8·count bytes per GPU link; no host copy.
  void all_reduce_sum_device(double* device_data, std::size_t count) override {
    expect_usable(device_data, count, "all_reduce_sum_device");
    if (count == 0) return;
    make_current();
    SURGEON_NCCL_CHECK(ncclAllReduce(device_data, device_data, count, ncclDouble, ncclSum, comm_, stream_));
    synchronize();
  }

  /// @brief Ends every process of the group with exit status `code`: aborts the NCCL communicator
  /// (`ncclCommAbort`, which stops this process's pending NCCL work), then `host.abort(code)`.
  /// Never returns.
  [[noreturn]] void abort(int code) override {
    if (comm_ != nullptr) static_cast<void>(ncclCommAbort(std::exchange(comm_, nullptr)));
    host_->abort(code);
    std::abort();  // not reached: host.abort never returns (a virtual call hides its [[noreturn]])
  }

  /// @brief The CUDA device ordinal the communicator runs on. O(1).
  int device() const noexcept { return device_; }
  /// @brief The communicator's non-blocking stream, on `device()` (null when moved from). O(1).
  cudaStream_t stream() const noexcept { return stream_; }
  /// @brief The underlying NCCL communicator, for collectives this class does not wrap (null when
  /// moved from). Still owned by this object. O(1).
  ncclComm_t native_handle() const noexcept { return comm_; }
  /// @brief The host group the communicator was made from. O(1).
  communicator& host() const noexcept { return *host_; }

 private:
  template <class T>
  static std::size_t byte_count(std::size_t count, const char* what) {
    SURGEON_EXPECTS(count <= std::numeric_limits<std::size_t>::max() / sizeof(T),
                    "nccl_communicator::{}: {} elements of {} bytes overflow the addressable size", what,
                    count, sizeof(T));
    return count * sizeof(T);
  }

  void expect_usable(const void* data, std::size_t count, const char* what) const {
    SURGEON_EXPECTS(comm_ != nullptr, "nccl_communicator::{}: the communicator was moved from", what);
    SURGEON_EXPECTS(data != nullptr || count == 0, "nccl_communicator::{}: null buffer for {} elements", what,
                    count);
  }

  void expect_root(int root, const char* what) const {
    SURGEON_EXPECTS(root >= 0 && root < size(), "nccl_communicator::{}: root {} outside a group of {}", what,
                    root, size());
  }

  /// Checks the device, makes it current and creates the stream (constructor only).
  void prepare_device() {
    SURGEON_EXPECTS(device_ >= 0, "nccl_communicator: negative device ordinal {}", device_);
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      static_cast<void>(cudaGetLastError());
      SURGEON_THROW(backend_unavailable, "nccl_communicator: no CUDA device is available: {} ({})",
                    cudaGetErrorName(status), cudaGetErrorString(status));
    }
    if (count == 0) SURGEON_THROW(backend_unavailable, "nccl_communicator: no CUDA device is visible");
    if (device_ >= count) {
      SURGEON_THROW(backend_unavailable, "nccl_communicator: device {} requested but only {} visible",
                    device_, count);
    }
    SURGEON_CUDA_CHECK(cudaSetDevice(device_));
    SURGEON_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }

  void make_current() const { SURGEON_CUDA_CHECK(cudaSetDevice(device_)); }

  void synchronize() const { SURGEON_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  /// A device buffer of at least `bytes` bytes. Every operation synchronizes its stream before
  /// returning, so the old buffer is idle when it is replaced.
  void* staging(std::size_t bytes) {
    if (bytes > staging_bytes_) {
      if (staging_ != nullptr) SURGEON_CUDA_CHECK(cudaFree(staging_));
      staging_ = nullptr;
      staging_bytes_ = 0;
      SURGEON_CUDA_CHECK(cudaMalloc(&staging_, bytes));
      staging_bytes_ = bytes;
    }
    return staging_;
  }

  void release() noexcept {
    if (comm_ == nullptr && stream_ == nullptr && staging_ == nullptr) return;
    // Failures during teardown are dropped, and so is the error they leave in the runtime.
    static_cast<void>(cudaSetDevice(device_));
    if (comm_ != nullptr) static_cast<void>(ncclCommDestroy(comm_));
    if (staging_ != nullptr) static_cast<void>(cudaFree(staging_));
    if (stream_ != nullptr) static_cast<void>(cudaStreamDestroy(stream_));
    static_cast<void>(cudaGetLastError());
    comm_ = nullptr;
    staging_ = nullptr;
    staging_bytes_ = 0;
    stream_ = nullptr;
  }

  /// Staged in-place all-reduce of `count` host elements of `T` (NCCL type `type`, operation `op`).
  template <class T>
  void all_reduce_host(T* data, std::size_t count, ncclDataType_t type, ncclRedOp_t op, const char* what) {
    expect_usable(data, count, what);
    if (count == 0) return;
    make_current();
    const std::size_t bytes = byte_count<T>(count, what);
    void* staged = staging(bytes);
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(staged, data, bytes, cudaMemcpyHostToDevice, stream_));
    SURGEON_NCCL_CHECK(ncclAllReduce(staged, staged, count, type, op, comm_, stream_));
    SURGEON_CUDA_CHECK(cudaMemcpyAsync(data, staged, bytes, cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }

  communicator* host_;
  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* staging_ = nullptr;
  std::size_t staging_bytes_ = 0;
};

}  // namespace surgeon::cuda

#endif  // SURGEON_HAS_CUDA && SURGEON_HAS_NCCL
