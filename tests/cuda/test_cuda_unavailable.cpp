// Built without surgeon::cuda: SURGEON_HAS_CUDA is undefined, so the CUDA backend is absent, yet
// surgeon::cuda::context still exists and reports that through backend_unavailable.
#include "support/catch.hpp"

#include <surgeon/cuda/buffer.hpp>  // declares nothing here, but must compile
#include <surgeon/cuda/check.hpp>   // likewise
#include <surgeon/cuda/context.hpp>

#include <type_traits>

static_assert(!surgeon::has_cuda, "this test must be built without SURGEON_HAS_CUDA");
static_assert(!std::is_copy_constructible_v<surgeon::cuda::context>);
static_assert(std::is_nothrow_move_constructible_v<surgeon::cuda::context>);

TEST_CASE("without the CUDA backend no device is available", "[cuda][unavailable]") {
  CHECK_FALSE(surgeon::cuda::device_available());
}

TEST_CASE("without the CUDA backend constructing a context throws backend_unavailable",
          "[cuda][unavailable]") {
  CHECK_THROWS_AS(surgeon::cuda::context{}, surgeon::backend_unavailable);
  CHECK_THROWS_AS(surgeon::cuda::context{1}, surgeon::error);
  CHECK_THROWS_WITH(surgeon::cuda::context{},
                    Catch::Matchers::Contains("surgeon was built without the CUDA backend"));
}
