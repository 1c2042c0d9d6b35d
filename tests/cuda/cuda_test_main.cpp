// Catch2's main for test_cuda: reports the whole binary as skipped (exit code 77, ctest
// SKIP_RETURN_CODE) when no CUDA device is visible, instead of failing every test case.
#define CATCH_CONFIG_RUNNER
#include "support/catch.hpp"

#include <surgeon/cuda/context.hpp>

#include <cstdio>

int main(int argc, char* argv[]) {
  if (!surgeon::cuda::device_available()) {
    std::puts("no CUDA device visible: skipping");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
