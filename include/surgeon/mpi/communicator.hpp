/// @file mpi/communicator.hpp
/// @brief `surgeon::mpi::communicator`: the driver's communicator (distributed/communicator.hpp)
/// over an MPI communicator, and `surgeon::mpi::environment`, which initialises and finalises MPI.
/// Use through the CMake target `surgeon::mpi` (built when MPI is found, `SURGEON_WITH_MPI`), run
/// under `mpirun -np K`.
///
/// Errors: the communicator is switched to `MPI_ERRORS_RETURN`, so that a failed call throws
/// `communication_error` with MPI's message; a process that cannot go on should call `abort`,
/// which is `MPI_Abort`: the engine then ends every process of the job (as it does when a process
/// is killed).
#pragma once

#include <surgeon/distributed/communicator.hpp>
#include <surgeon/error.hpp>

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace surgeon::mpi {

namespace detail {
/// Throws communication_error naming `what` when an MPI call returned `code` != MPI_SUCCESS.
inline void check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  SURGEON_THROW(communication_error, "mpi: {} failed: {}", what,
                std::string(text, static_cast<std::size_t>(length)));
}

/// Runs `call(offset, count)` over `[0, total)` in pieces that an MPI `int` count can hold.
template <typename Call>
void in_pieces(std::size_t total, const Call& call) {
  constexpr std::size_t piece = std::size_t{1} << 30;
  for (std::size_t offset = 0; offset < total; offset += piece) {
    call(offset, static_cast<int>(std::min(piece, total - offset)));
  }
}
}  // namespace detail

/// @brief Initialises MPI for the lifetime of the object (`MPI_Init_thread`, funneled: only the
/// thread that made it calls MPI) and finalises it at the end, unless MPI was initialised before
/// (then it does neither). One per process, in `main`, before any `communicator`.
class environment {
 public:
  /// @throws communication_error if MPI cannot be initialised.
  environment(int& argc, char**& argv) {
    int initialized = 0;
    detail::check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (initialized != 0) return;
    int provided = 0;
    detail::check(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    owns_ = true;
  }
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;
  /// Finalises MPI when this object initialised it.
  ~environment() {
    int finalized = 0;
    if (owns_ && MPI_Finalized(&finalized) == MPI_SUCCESS && finalized == 0) MPI_Finalize();
  }

 private:
  bool owns_ = false;
};

/// @brief The collectives of an MPI communicator (default `MPI_COMM_WORLD`), which must outlive
/// this object. Counts beyond `INT_MAX` are sent in pieces. Cheap to construct.
class communicator final : public surgeon::communicator {
 public:
  /// @brief Wraps `comm` and sets its error handler to `MPI_ERRORS_RETURN`.
  /// @throws communication_error if MPI is not initialised or the calls fail.
  explicit communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int initialized = 0;
    detail::check(MPI_Initialized(&initialized), "MPI_Initialized");
    SURGEON_EXPECTS(initialized != 0,
                    "mpi::communicator: MPI is not initialised (make an mpi::environment first)");
    detail::check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    detail::check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(double* data, std::size_t count) override {
    all_reduce(data, count, MPI_DOUBLE, MPI_SUM);
  }
  void all_reduce_sum(std::int64_t* data, std::size_t count) override {
    all_reduce(data, count, MPI_INT64_T, MPI_SUM);
  }
  void all_reduce_max(double* data, std::size_t count) override {
    all_reduce(data, count, MPI_DOUBLE, MPI_MAX);
  }

  void reduce_sum(double* data, std::size_t count, int root) override {
    detail::in_pieces(count, [&](std::size_t offset, int n) {
      void* send = rank_ == root ? MPI_IN_PLACE : static_cast<void*>(data + offset);
      detail::check(MPI_Reduce(send, data + offset, n, MPI_DOUBLE, MPI_SUM, root, comm_), "MPI_Reduce");
    });
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    auto* base = static_cast<unsigned char*>(data);
    detail::in_pieces(bytes, [&](std::size_t offset, int n) {
      detail::check(MPI_Bcast(base + offset, n, MPI_BYTE, root, comm_), "MPI_Bcast");
    });
  }

  std::vector<std::int64_t> all_gather(std::int64_t value) override {
    std::vector<std::int64_t> values(static_cast<std::size_t>(size_));
    detail::check(MPI_Allgather(&value, 1, MPI_INT64_T, values.data(), 1, MPI_INT64_T, comm_),
                  "MPI_Allgather");
    return values;
  }

  /// `MPI_Abort` on the communicator: the engine stops every process of the job.
  [[noreturn]] void abort(int code) override {
    MPI_Abort(comm_, code);
    std::exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] true if it did
  }

  /// @brief The wrapped MPI communicator.
  MPI_Comm native() const noexcept { return comm_; }

 private:
  template <typename T>
  void all_reduce(T* data, std::size_t count, MPI_Datatype type, MPI_Op op) {
    detail::in_pieces(count, [&](std::size_t offset, int n) {
      detail::check(MPI_Allreduce(MPI_IN_PLACE, data + offset, n, type, op, comm_), "MPI_Allreduce");
    });
  }

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace surgeon::mpi
