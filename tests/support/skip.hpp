/// @file skip.hpp
/// @brief Skipping a test whose input (a model, a reference file) is absent, so that ctest
/// reports it as skipped rather than passed.
///
/// `SURGEON_SKIP("why")` warns, records the skip and returns from the test case. The shared main
/// (test_main.cpp) then exits with 77 when no test failed and at least one was skipped, and every
/// test is registered with `SKIP_RETURN_CODE 77`. Tests that can skip are kept in their own ctest
/// entries (by tag), so that a skip never hides tests that ran.
#pragma once

#include "support/catch.hpp"

namespace surgeon::test {

inline bool& skipped() {
  static bool flag = false;
  return flag;
}

}  // namespace surgeon::test

#define SURGEON_SKIP(reason)           \
  do {                                 \
    WARN("skipped: " << reason);       \
    ::surgeon::test::skipped() = true; \
    return;                            \
  } while (false)
