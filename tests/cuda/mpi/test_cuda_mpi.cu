// The CUDA backend's driver over several processes (METHOD.md §10), run by ctest under
// `mpirun -np 2`: on every process the distributed session and a single-process session prune two
// copies of one toy model on the device (costs on the host, where the selections across processes
// read them); their zero positions must agree and their weights match to rounding, and every
// process must end with the same weights. The factors are summed through host copies with the MPI
// communicator, and on the device with the NCCL one when every process has its own device.
// Reported as skipped (77, by every process) when no device is visible.
#define CATCH_CONFIG_RUNNER
#include <surgeon/cuda/prune.hpp>
#include <surgeon/mpi/communicator.hpp>
#if defined(SURGEON_HAS_NCCL)
#include <surgeon/cuda/nccl.hpp>
#endif

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/toy_model.hpp"
#include "support/catch.hpp"

namespace {

surgeon::mpi::communicator* world = nullptr;

// The toy model with its calibration pass (the same seeded data) cut into four items of 24 tokens,
// each fed by the process that owns it: the sums over the processes are the whole pass's.
struct split_toy : surgeon_test::toy_model {
  void calibrate(surgeon::calibration_sink& sink, int /*shot*/) {
    const surgeon::data_share share = sink.share();
    std::mt19937 engine(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto fill = [&](surgeon::index_t rows, surgeon::index_t cols, bool correlated) {
      std::vector<float> x(static_cast<std::size_t>(rows * cols));
      for (surgeon::index_t t = 0; t < rows; ++t) {
        const float shared = normal(engine);
        for (surgeon::index_t j = 0; j < cols; ++j)
          x[static_cast<std::size_t>(t * cols + j)] = normal(engine) + (correlated ? 2.0f * shared : 0.0f);
      }
      return x;
    };
    const surgeon::index_t tokens = 96;
    const surgeon::index_t item = tokens / 4;
    const auto feed = [&](auto&& to, const std::vector<float>& x, surgeon::index_t cols) {
      for (surgeon::index_t i = 0; i < 4; ++i) {
        if (share.owns(i)) to(surgeon::host_matrix_view<const float>(x.data() + i * item * cols, item, cols));
      }
    };
    const auto x_in = fill(tokens, 32, true);
    const auto x_mid = fill(tokens, 24, true);
    feed([&](auto v) { sink.input("in", v); }, x_in, 32);
    feed([&](auto v) { sink.input("mid", v); }, x_mid, 24);
    for (const char* name : {"a", "b"}) {
      const auto g = fill(tokens, 24, false);
      feed([&](auto v) { sink.output_grad(name, v); }, g, 24);
    }
    const auto g = fill(tokens, 16, false);
    feed([&](auto v) { sink.output_grad("c", v); }, g, 16);
  }
};

std::int64_t bits_of(const std::vector<double>& weights) {
  std::uint64_t h = 1469598103934665603ull;
  for (const double v : weights) {
    std::uint64_t b = 0;
    std::memcpy(&b, &v, sizeof b);
    h = (h ^ b) * 1099511628211ull;
  }
  return static_cast<std::int64_t>(h >> 1);
}

void compare(surgeon::communicator& group, int device) {
  using surgeon::method;
  using surgeon::structure;
  struct config {
    method how;
    structure what;
    bool sequential;
  };
  const config configs[] = {{method::llm_surgeon, structure::unstructured, false},
                            {method::llm_surgeon, structure::unstructured, true},
                            {method::llm_surgeon, structure::n_m, false},
                            {method::kobd, structure::rows_columns, false},
                            {method::sparsegpt, structure::unstructured, false},
                            {method::wanda, structure::n_m, false}};
  surgeon::cuda::context ctx(device);
  surgeon::cuda::prune_backend_options on_host;
  on_host.costs_on_host = true;
  for (const config& c : configs) {
    INFO(surgeon::to_string(c.how) << " structure " << static_cast<int>(c.what) << " over " << group.size()
                                   << " processes");
    surgeon::prune_options options;
    options.how = c.how;
    options.what = c.what;
    options.sparsity = c.what == structure::rows_columns ? 0.3 : 0.5;
    options.shots = 2;
    options.sequential = c.sequential;
    split_toy alone;
    const auto expected = surgeon::basic_pruning_session<split_toy, surgeon::cuda::prune_backend>(
                              alone, options, surgeon::cuda::prune_backend(ctx, on_host))
                              .run();
    split_toy spread;
    const auto got = surgeon::basic_pruning_session<split_toy, surgeon::cuda::prune_backend>(
                         spread, options, surgeon::cuda::prune_backend(ctx, on_host), group)
                         .run();
    REQUIRE(got.size() == expected.size());
    for (std::size_t t = 0; t < got.size(); ++t) CHECK(got[t].removed == expected[t].removed);
    const std::vector<double> a = alone.weights();
    const std::vector<double> b = spread.weights();
    std::size_t zeros_differ = 0;
    double largest = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      zeros_differ += (a[i] == 0.0) != (b[i] == 0.0) ? 1 : 0;
      largest = std::max(largest, std::abs(a[i] - b[i]) / (1.0 + std::abs(a[i])));
    }
    CHECK(zeros_differ == 0);
    CHECK(largest <= 1e-4);
    const std::vector<std::int64_t> sums = group.all_gather(bits_of(b));
    for (const std::int64_t s : sums) CHECK(s == sums.front());
  }
  // Without the costs on the host the selections across processes cannot read them: refused.
  if (group.size() > 1) {
    split_toy model;
    using session = surgeon::basic_pruning_session<split_toy, surgeon::cuda::prune_backend>;
    CHECK_THROWS_AS(session(model, surgeon::prune_options{}, surgeon::cuda::prune_backend(ctx), group),
                    surgeon::logic_error);
  }
}

}  // namespace

TEST_CASE("CUDA driver over processes, factors summed through the host (MPI)", "[cuda][mpi]") {
  compare(*world, 0);
}

#if defined(SURGEON_HAS_NCCL)
TEST_CASE("CUDA driver over processes, factors summed on the device (NCCL)", "[cuda][mpi][nccl]") {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  if (devices < world->size()) {
    // NCCL wants one device per process; every process sees the same count, so all skip alike.
    WARN("NCCL case needs " << world->size() << " devices, " << devices << " visible: not run");
    return;
  }
  surgeon::cuda::nccl_communicator nccl(*world, world->rank());
  compare(nccl, world->rank());
}
#endif

int main(int argc, char* argv[]) {
  surgeon::mpi::environment mpi(argc, argv);
  surgeon::mpi::communicator comm;
  world = &comm;
  if (!surgeon::cuda::device_available()) {
    std::puts("no CUDA device visible: skipping");
    return 77;
  }
  const int result = Catch::Session().run(argc, argv);
  std::int64_t failures = result;
  comm.all_reduce_sum(&failures, 1);
  return failures == 0 ? 0 : 1;
}
