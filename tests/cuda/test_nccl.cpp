// surgeon::cuda::nccl_communicator over a group of one process (surgeon::single_process as the host
// group, so no MPI) on device 0: every collective is the identity, on host and on device buffers.
// Plain C++ (g++); cuda_test_main.cpp skips the whole binary (exit 77) when no device is visible.
#include "support/catch.hpp"

#include <surgeon/cuda/nccl.hpp>
#include <surgeon/distributed/communicator.hpp>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using surgeon::single_process;
using surgeon::cuda::nccl_communicator;

static_assert(!std::is_copy_constructible_v<nccl_communicator> &&
              !std::is_copy_assignable_v<nccl_communicator>);
static_assert(std::is_nothrow_move_constructible_v<nccl_communicator>);

std::vector<double> sample_doubles(std::size_t n) {
  std::vector<double> values(n);
  for (std::size_t i = 0; i < n; ++i) values[i] = 0.25 * static_cast<double>(i) - 3.0;
  return values;
}

/// A cudaMalloc'd copy of `values`, freed on scope exit.
class device_doubles {
 public:
  explicit device_doubles(const std::vector<double>& values) : count_(values.size()) {
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&data_), count_ * sizeof(double)) == cudaSuccess);
    REQUIRE(cudaMemcpy(data_, values.data(), count_ * sizeof(double), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  device_doubles(const device_doubles&) = delete;
  device_doubles& operator=(const device_doubles&) = delete;
  ~device_doubles() { static_cast<void>(cudaFree(data_)); }

  double* data() const { return data_; }
  std::vector<double> to_host() const {
    std::vector<double> values(count_);
    REQUIRE(cudaMemcpy(values.data(), data_, count_ * sizeof(double), cudaMemcpyDeviceToHost) == cudaSuccess);
    return values;
  }

 private:
  double* data_ = nullptr;
  std::size_t count_;
};

}  // namespace

TEST_CASE("nccl_communicator: a group of one process", "[cuda][nccl]") {
  single_process host;
  nccl_communicator group(host, 0);

  CHECK(group.rank() == 0);
  CHECK(group.size() == 1);
  CHECK(group.share().whole());
  CHECK(group.reduces_device_buffers());
  CHECK(group.device() == 0);
  CHECK(group.stream() != nullptr);
  CHECK(group.native_handle() != nullptr);
  CHECK(&group.host() == &host);

  SECTION("host-buffer collectives are the identity") {
    const std::vector<double> expected = sample_doubles(1000);
    std::vector<double> values = expected;
    group.all_reduce_sum(values.data(), values.size());
    CHECK(values == expected);
    group.all_reduce_max(values.data(), values.size());
    CHECK(values == expected);
    group.reduce_sum(values.data(), values.size(), 0);
    CHECK(values == expected);

    const std::vector<std::int64_t> expected_counts{0, -7, 1LL << 40, 123456789012345LL};
    std::vector<std::int64_t> counts = expected_counts;
    group.all_reduce_sum(counts.data(), counts.size());
    CHECK(counts == expected_counts);

    // A larger buffer after a smaller one: the staging buffer grows.
    const std::vector<double> large_expected = sample_doubles(100000);
    std::vector<double> large = large_expected;
    group.all_reduce_sum(large.data(), large.size());
    CHECK(large == large_expected);

    char text[] = "broadcast me";
    group.broadcast(text, sizeof text, 0);
    CHECK(std::strcmp(text, "broadcast me") == 0);

    CHECK(group.all_gather(42) == std::vector<std::int64_t>{42});
    CHECK(group.all_gather(-5) == std::vector<std::int64_t>{-5});

    // Empty buffers are accepted (no NCCL call).
    group.all_reduce_sum(static_cast<double*>(nullptr), 0);
    group.broadcast(nullptr, 0, 0);
  }

  SECTION("device-buffer reductions leave the values unchanged") {
    const std::vector<double> expected = sample_doubles(4096);
    device_doubles buffer(expected);
    group.reduce_sum_device(buffer.data(), expected.size(), 0);
    CHECK(buffer.to_host() == expected);
    group.all_reduce_sum_device(buffer.data(), expected.size());
    CHECK(buffer.to_host() == expected);
  }

  SECTION("preconditions") {
    double value = 1.0;
    CHECK_THROWS_AS(group.reduce_sum(&value, 1, 1), surgeon::logic_error);
    CHECK_THROWS_AS(group.broadcast(&value, sizeof value, -1), surgeon::logic_error);
    CHECK_THROWS_AS(group.all_reduce_sum(static_cast<double*>(nullptr), 3), surgeon::logic_error);
  }

  SECTION("a moved-to communicator works, the moved-from one refuses") {
    nccl_communicator moved(std::move(group));
    CHECK(moved.native_handle() != nullptr);
    CHECK(group.native_handle() == nullptr);  // NOLINT(bugprone-use-after-move): checked on purpose
    std::vector<double> values{1.0, 2.0};
    moved.all_reduce_sum(values.data(), values.size());
    CHECK(values == std::vector<double>{1.0, 2.0});
    CHECK_THROWS_AS(group.all_reduce_sum(values.data(), values.size()), surgeon::logic_error);
  }
}

TEST_CASE("nccl_communicator: a device that does not exist", "[cuda][nccl]") {
  single_process host;
  int count = 0;
  REQUIRE(cudaGetDeviceCount(&count) == cudaSuccess);
  CHECK_THROWS_AS(nccl_communicator(host, count), surgeon::backend_unavailable);
  CHECK_THROWS_AS(nccl_communicator(host, -1), surgeon::logic_error);
}
