// The CUDA backend's foundation on a real device: context, device_buffer, a kernel on the
// context's stream, cuBLAS and cuSOLVER through the context's handles, and the status checks.
// cuda_test_main.cpp skips the whole binary (exit 77) when no device is visible.
#include "support/catch.hpp"

#include <surgeon/cuda/buffer.hpp>
#include <surgeon/cuda/check.hpp>
#include <surgeon/cuda/context.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using surgeon::index_t;
using surgeon::cuda::context;
using surgeon::cuda::device_buffer;

static_assert(!std::is_copy_constructible_v<context> && !std::is_copy_assignable_v<context>);
static_assert(std::is_nothrow_move_constructible_v<context> && std::is_nothrow_move_assignable_v<context>);
static_assert(!std::is_copy_constructible_v<device_buffer<float>>);
static_assert(std::is_nothrow_move_constructible_v<device_buffer<float>> &&
              std::is_nothrow_move_assignable_v<device_buffer<float>>);

__global__ void scale_kernel(float* x, index_t n, float factor) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= factor;
}

std::vector<float> iota_values(std::size_t n, float first) {
  std::vector<float> values(n);
  std::iota(values.begin(), values.end(), first);
  return values;
}

}  // namespace

TEST_CASE("context owns a stream and library handles bound to it", "[cuda][context]") {
  context ctx;
  CHECK(ctx.device() == 0);
  REQUIRE(ctx.stream() != nullptr);
  REQUIRE(ctx.cublas() != nullptr);
  REQUIRE(ctx.cusolver() != nullptr);

  cudaStream_t cublas_stream = nullptr;
  SURGEON_CUBLAS_CHECK(cublasGetStream(ctx.cublas(), &cublas_stream));
  CHECK(cublas_stream == ctx.stream());
  cudaStream_t cusolver_stream = nullptr;
  SURGEON_CUSOLVER_CHECK(cusolverDnGetStream(ctx.cusolver(), &cusolver_stream));
  CHECK(cusolver_stream == ctx.stream());

  unsigned int flags = 0;
  SURGEON_CUDA_CHECK(cudaStreamGetFlags(ctx.stream(), &flags));
  CHECK((flags & cudaStreamNonBlocking) != 0);
  CHECK_NOTHROW(ctx.synchronize());
  CHECK_NOTHROW(ctx.make_current());

  SECTION("moving transfers the stream and the handles") {
    const cudaStream_t stream = ctx.stream();
    context moved(std::move(ctx));
    CHECK(moved.stream() == stream);
    CHECK(ctx.stream() == nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
    CHECK(ctx.cublas() == nullptr);
    CHECK(ctx.cusolver() == nullptr);
    CHECK_THROWS_AS(ctx.synchronize(), surgeon::logic_error);

    context other;
    other = std::move(moved);
    CHECK(other.stream() == stream);
    CHECK_NOTHROW(other.synchronize());
  }

  SECTION("bad device ordinals") {
    int count = 0;
    SURGEON_CUDA_CHECK(cudaGetDeviceCount(&count));
    CHECK_THROWS_AS(context(-1), surgeon::logic_error);
    CHECK_THROWS_AS(context(count), surgeon::backend_unavailable);
  }
}

TEST_CASE("context keeps a quarter of the device memory cached in the default pool", "[cuda][context]") {
  cudaMemPool_t pool = nullptr;
  SURGEON_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
  std::uint64_t lowered = 1024;  // below the context's threshold: the constructor raises it
  SURGEON_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &lowered));
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  {
    context ctx;
    SURGEON_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    std::uint64_t threshold = 0;
    SURGEON_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    CHECK(threshold == static_cast<std::uint64_t>(total_bytes) / 4);
  }
  // A higher threshold chosen by the application is left alone.
  std::uint64_t higher = static_cast<std::uint64_t>(total_bytes) / 2;
  SURGEON_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &higher));
  {
    context ctx;
    std::uint64_t threshold = 0;
    SURGEON_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    CHECK(threshold == higher);
  }
}

TEST_CASE("device_buffer round trip host to device to host", "[cuda][buffer]") {
  context ctx;
  const std::vector<float> host = iota_values(1000, 0.5F);

  SECTION("asynchronous copies, then one synchronize") {
    device_buffer<float> buffer(ctx, static_cast<index_t>(host.size()));
    CHECK(buffer.size() == 1000);
    CHECK(buffer.size_bytes() == 1000 * sizeof(float));
    CHECK(buffer.stream() == ctx.stream());
    REQUIRE(buffer.data() != nullptr);
    std::vector<float> back(host.size(), -1.0F);
    buffer.copy_from_host(host.data(), buffer.size());
    buffer.copy_to_host(back.data(), buffer.size());
    ctx.synchronize();
    CHECK(back == host);
  }

  SECTION("synchronous helpers and the vector constructor") {
    device_buffer<float> buffer(ctx, host);
    CHECK(buffer.to_host() == host);
    std::vector<float> head(10, -1.0F);
    buffer.copy_to_host_sync(head.data(), 10);
    CHECK(head == std::vector<float>(host.begin(), host.begin() + 10));
    const std::vector<float> other = iota_values(5, -3.0F);
    buffer.copy_from_host_sync(other.data(), 5);
    std::vector<float> expected = host;
    std::copy(other.begin(), other.end(), expected.begin());
    CHECK(buffer.to_host() == expected);
  }

  SECTION("double and int elements") {
    const std::vector<double> d{1.0, -2.5, 1e300};
    CHECK(device_buffer<double>(ctx, d).to_host() == d);
    const std::vector<int> i{7, -8, std::numeric_limits<int>::max()};
    CHECK(device_buffer<int>(ctx, i).to_host() == i);
  }

  SECTION("empty buffers allocate nothing") {
    device_buffer<float> empty(ctx, 0);
    CHECK(empty.empty());
    CHECK(empty.data() == nullptr);
    CHECK(empty.to_host().empty());
    CHECK_NOTHROW(empty.fill_zero());
    CHECK_NOTHROW(empty.copy_from_host(nullptr, 0));
    device_buffer<float> defaulted;
    CHECK(defaulted.stream() == nullptr);
    CHECK_NOTHROW(defaulted.synchronize());
  }

  SECTION("moving transfers the memory") {
    device_buffer<float> buffer(ctx, host);
    const float* data = buffer.data();
    device_buffer<float> moved(std::move(buffer));
    CHECK(moved.data() == data);
    CHECK(buffer.empty());  // NOLINT(bugprone-use-after-move)
    CHECK(buffer.data() == nullptr);
    device_buffer<float> assigned(ctx, 3);
    assigned = std::move(moved);
    CHECK(assigned.data() == data);
    CHECK(assigned.to_host() == host);
  }

  SECTION("bad sizes and copies are logic errors") {
    CHECK_THROWS_AS(device_buffer<float>(ctx, -1), surgeon::logic_error);
    CHECK_THROWS_AS(device_buffer<double>(ctx, std::numeric_limits<index_t>::max()), surgeon::logic_error);
    device_buffer<float> buffer(ctx, 4);
    std::vector<float> five(5);
    CHECK_THROWS_AS(buffer.copy_from_host(five.data(), 5), surgeon::logic_error);
    CHECK_THROWS_AS(buffer.copy_to_host(five.data(), 5), surgeon::logic_error);
    CHECK_THROWS_AS(buffer.copy_to_host(five.data(), -1), surgeon::logic_error);
    CHECK_THROWS_AS(buffer.copy_from_host(nullptr, 1), surgeon::logic_error);
  }

  SECTION("a huge allocation fails with cuda_error") {
    CHECK_THROWS_AS(device_buffer<char>(ctx, index_t{1} << 60), surgeon::cuda_error);
    CHECK(cudaGetLastError() == cudaSuccess);
  }
}

TEST_CASE("device_buffer views carry the device memory space", "[cuda][buffer]") {
  context ctx;
  device_buffer<float> buffer(ctx, 12);
  const auto m = buffer.view(3, 4);
  static_assert(std::is_same_v<decltype(m), const surgeon::device_matrix_view<float>>);
  CHECK(m.data() == buffer.data());
  CHECK(m.rows() == 3);
  CHECK(m.cols() == 4);
  CHECK(m.ld() == 4);
  const auto& cbuffer = buffer;
  static_assert(std::is_same_v<decltype(cbuffer.view(1, 1)), surgeon::device_matrix_view<const float>>);
  CHECK(cbuffer.view(1, 1).data() == buffer.data());
  CHECK(buffer.view(2, 3, 5).ld() == 5);  // needs 1 * 5 + 3 = 8 elements
  CHECK(buffer.view(0, 0).empty());
  CHECK(buffer.flat_view().size() == 12);
  CHECK_THROWS_AS(buffer.view(4, 4), surgeon::logic_error);
  CHECK_THROWS_AS(buffer.view(3, 4, 5), surgeon::logic_error);  // needs 14
  CHECK_THROWS_AS(buffer.view(2, 4, 3), surgeon::logic_error);  // ld < cols
  CHECK_THROWS_AS(buffer.view(-1, 4), surgeon::logic_error);
  CHECK_THROWS_AS(buffer.view(std::numeric_limits<index_t>::max(), 2, std::numeric_limits<index_t>::max()),
                  surgeon::logic_error);
}

TEST_CASE("device_buffer may outlive its context", "[cuda][buffer]") {
  const std::vector<float> host = iota_values(64, 1.0F);
  device_buffer<float> buffer;
  {
    context ctx;
    buffer = device_buffer<float>(ctx, host);
  }
  CHECK(buffer.stream() != nullptr);
  CHECK(buffer.to_host() == host);
}

TEST_CASE("fill_zero clears the whole buffer", "[cuda][buffer]") {
  context ctx;
  device_buffer<float> buffer(ctx, iota_values(257, 1.0F));
  buffer.fill_zero();
  CHECK(buffer.to_host() == std::vector<float>(257, 0.0F));
  device_buffer<double> doubles(ctx, std::vector<double>(33, -7.0));
  doubles.fill_zero();
  CHECK(doubles.to_host() == std::vector<double>(33, 0.0));
}

TEST_CASE("a kernel on the context's stream scales a buffer", "[cuda][kernel]") {
  context ctx;
  const index_t n = 10000;
  const std::vector<float> host = iota_values(static_cast<std::size_t>(n), -5000.0F);
  device_buffer<float> buffer(ctx, n);
  buffer.copy_from_host(host.data(), n);  // ordered before the kernel on the same stream
  const unsigned threads = 256;
  const auto blocks = static_cast<unsigned>((n + threads - 1) / threads);
  scale_kernel<<<blocks, threads, 0, ctx.stream()>>>(buffer.data(), n, 2.0F);
  SURGEON_CUDA_CHECK_LAUNCH();
  const std::vector<float> back = buffer.to_host();
  for (std::size_t i = 0; i < host.size(); ++i) REQUIRE(back[i] == 2.0F * host[i]);
}

TEST_CASE("cuBLAS sgemm through the context's handle matches a CPU loop", "[cuda][cublas]") {
  context ctx;
  // Row-major C[M, N] = A[M, K] B[K, N]. cuBLAS is column-major, where the same memory holds the
  // transposes, so it computes C^T = B^T A^T: pass B first, A second.
  constexpr int m = 3, k = 3, n = 3;
  const std::vector<float> a{1, 2, 3, 4, 5, 6, 7, 8, 10};
  const std::vector<float> b{-1, 0.5F, 2, 3, -2, 1, 0, 4, -3};
  std::vector<float> expected(m * n, 0.0F);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      for (int p = 0; p < k; ++p) expected[i * n + j] += a[i * k + p] * b[p * n + j];
    }
  }
  device_buffer<float> da(ctx, a), db(ctx, b), dc(ctx, m * n);
  dc.fill_zero();
  const float alpha = 1.0F, beta = 0.0F;
  SURGEON_CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &alpha, db.data(), n,
                                   da.data(), k, &beta, dc.data(), n));
  const std::vector<float> c = dc.to_host();
  for (std::size_t i = 0; i < c.size(); ++i) CHECK(c[i] == Approx(expected[i]).margin(1e-5));
}

TEST_CASE("cuSOLVER potrf through the context's handle", "[cuda][cusolver]") {
  context ctx;

  const auto potrf = [&](std::vector<double> matrix, int n, std::vector<double>* factor) {
    device_buffer<double> dm(ctx, matrix);
    int lwork = 0;
    SURGEON_CUSOLVER_CHECK(
        cusolverDnDpotrf_bufferSize(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n, dm.data(), n, &lwork));
    device_buffer<double> work(ctx, lwork);
    device_buffer<int> info(ctx, 1);
    SURGEON_CUSOLVER_CHECK(cusolverDnDpotrf(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n, dm.data(), n,
                                            work.data(), lwork, info.data()));
    const int result = surgeon::cuda::fetch_cusolver_info(info.data(), ctx.stream(), "cusolverDnDpotrf");
    if (factor != nullptr) *factor = dm.to_host();
    return result;
  };

  SECTION("a symmetric positive definite matrix factors, L L^T = A") {
    constexpr int n = 3;
    const std::vector<double> a{4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0};  // symmetric
    std::vector<double> f;
    REQUIRE(potrf(a, n, &f) == 0);
    // Column-major lower factor: L(i, j) = f[i + j * n] for i >= j.
    const auto l = [&](int i, int j) { return i >= j ? f[static_cast<std::size_t>(i + j * n)] : 0.0; };
    for (int i = 0; i < n; ++i) {
      CHECK(l(i, i) > 0.0);
      for (int j = 0; j < n; ++j) {
        double sum = 0.0;
        for (int p = 0; p < n; ++p) sum += l(i, p) * l(j, p);
        CHECK(sum == Approx(a[static_cast<std::size_t>(i * n + j)]).margin(1e-12));
      }
    }
  }

  SECTION("an indefinite matrix reports info > 0, the failing minor") {
    const std::vector<double> indefinite{1.0, 2.0, 2.0, 1.0};  // eigenvalues 3 and -1
    CHECK(potrf(indefinite, 2, nullptr) == 2);
  }
}

TEST_CASE("status checks throw cuda_error naming the call and the status", "[cuda][check]") {
  context ctx;

  SECTION("CUDA runtime") {
    std::vector<char> host(16);
    const auto bad_copy = [&] {
      SURGEON_CUDA_CHECK(cudaMemcpy(host.data(), host.data(), host.size(), static_cast<cudaMemcpyKind>(42)));
    };
    CHECK_THROWS_AS(bad_copy(), surgeon::cuda_error);
    CHECK_THROWS_WITH(bad_copy(), Catch::Matchers::Contains("cudaErrorInvalidMemcpyDirection") &&
                                      Catch::Matchers::Contains("cudaMemcpy(") &&
                                      Catch::Matchers::Contains("test_cuda_context.cu:"));
    // The failure is not left behind for the next launch check.
    CHECK(cudaGetLastError() == cudaSuccess);
    CHECK_NOTHROW(ctx.synchronize());
  }

  SECTION("cuBLAS") {
    const float alpha = 1.0F, beta = 0.0F;
    const auto bad_gemm = [&] {
      SURGEON_CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, -1, 1, 1, &alpha, nullptr, 1,
                                       nullptr, 1, &beta, nullptr, 1));
    };
    CHECK_THROWS_WITH(bad_gemm(), Catch::Matchers::Contains("CUBLAS_STATUS_INVALID_VALUE") &&
                                      Catch::Matchers::Contains("cublasSgemm"));
  }

  SECTION("cuSOLVER") {
    int lwork = 0;
    const auto bad_size = [&] {
      SURGEON_CUSOLVER_CHECK(
          cusolverDnSpotrf_bufferSize(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, -1, nullptr, 1, &lwork));
    };
    CHECK_THROWS_WITH(bad_size(), Catch::Matchers::Contains("CUSOLVER_STATUS_INVALID_VALUE") &&
                                      Catch::Matchers::Contains("cusolverDnSpotrf_bufferSize"));
  }

  SECTION("cuSOLVER info") {
    CHECK(SURGEON_CUSOLVER_CHECK_INFO(0, "potrf") == 0);
    CHECK(SURGEON_CUSOLVER_CHECK_INFO(3, "potrf") == 3);
    CHECK_THROWS_AS(SURGEON_CUSOLVER_CHECK_INFO(-4, "potrf"), surgeon::cuda_error);
    CHECK_THROWS_WITH(surgeon::cuda::check_cusolver_info(-4, "potrf"),
                      Catch::Matchers::Contains("parameter 4 had an illegal value"));
    CHECK(std::string(surgeon::cuda::detail::cusolver_status_name(CUSOLVER_STATUS_ZERO_PIVOT)) ==
          "CUSOLVER_STATUS_ZERO_PIVOT");
  }
}
