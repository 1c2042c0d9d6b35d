#include <surgeon/error.hpp>

#include <string>

#include "support/catch.hpp"

TEST_CASE("every surgeon exception derives from surgeon::error and std::runtime_error", "[error]") {
  CHECK_THROWS_AS(throw surgeon::logic_error("x"), surgeon::error);
  CHECK_THROWS_AS(throw surgeon::numerical_error("x"), surgeon::error);
  CHECK_THROWS_AS(throw surgeon::backend_unavailable("x"), surgeon::error);
  CHECK_THROWS_AS(throw surgeon::io_error("x"), surgeon::error);
  CHECK_THROWS_AS(throw surgeon::cuda_error("x"), std::runtime_error);
}

TEST_CASE("SURGEON_EXPECTS throws logic_error with the formatted message and file:line", "[error]") {
  const int got = 3;
  try {
    SURGEON_EXPECTS(got == 4, "expected {} but got {}", 4, got);
    FAIL("SURGEON_EXPECTS did not throw");
  } catch (const surgeon::logic_error& e) {
    const std::string what = e.what();
    CHECK(what.find("expected 4 but got 3") != std::string::npos);
    CHECK(what.find("test_error.cpp:") != std::string::npos);
  }
  CHECK_NOTHROW([&] { SURGEON_EXPECTS(got == 3, "never formatted {}", got); }());
}

TEST_CASE("SURGEON_THROW raises the named type", "[error]") {
  CHECK_THROWS_AS(SURGEON_THROW(io_error, "{}: truncated", "file.bin"), surgeon::io_error);
  CHECK_THROWS_WITH(SURGEON_THROW(numerical_error, "lambda {}", 0.5), Catch::Contains("lambda 0.5"));
}
