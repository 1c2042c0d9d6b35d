#include <surgeon/types.hpp>
#include <surgeon/view.hpp>

#include <type_traits>
#include <vector>

#include "support/catch.hpp"

using surgeon::host_matrix_view;
using surgeon::index_t;

TEST_CASE("matrix views are row-major with a leading dimension", "[view]") {
  std::vector<float> buffer(3 * 5);
  for (std::size_t k = 0; k < buffer.size(); ++k) buffer[k] = static_cast<float>(k);
  const host_matrix_view<float> full(buffer.data(), 3, 5);
  CHECK(full.ld() == 5);
  CHECK(full.contiguous());
  CHECK(full(2, 3) == 13.0f);

  SECTION("a block keeps the parent's leading dimension") {
    const auto block = full.block(1, 2, 2, 3);
    CHECK(block.rows() == 2);
    CHECK(block.cols() == 3);
    CHECK(block.ld() == 5);
    CHECK_FALSE(block.contiguous());
    CHECK(block(0, 0) == 7.0f);
    CHECK(block(1, 2) == 14.0f);
  }
  SECTION("a row block") {
    const auto rows = full.row_block(1, 2);
    CHECK(rows(0, 0) == 5.0f);
    CHECK(rows.rows() == 2);
  }
  SECTION("an explicit leading dimension") {
    const host_matrix_view<float> strided(buffer.data(), 3, 4, 5);
    CHECK(strided(1, 0) == 5.0f);
    CHECK(strided(2, 3) == 13.0f);
  }
  SECTION("writable views convert to read-only views") {
    const host_matrix_view<const float> constant = full;
    CHECK(constant(1, 1) == 6.0f);
    STATIC_REQUIRE_FALSE(std::is_convertible_v<host_matrix_view<const float>, host_matrix_view<float>>);
  }
}

TEST_CASE("host and device views are different types", "[view]") {
  STATIC_REQUIRE_FALSE(
      std::is_convertible_v<surgeon::device_matrix_view<float>, surgeon::host_matrix_view<float>>);
  STATIC_REQUIRE_FALSE(
      std::is_convertible_v<surgeon::host_matrix_view<float>, surgeon::device_matrix_view<float>>);
}

TEST_CASE("bad view shapes throw logic_error", "[view]") {
  std::vector<float> buffer(12);
  CHECK_THROWS_AS(host_matrix_view<float>(buffer.data(), -1, 3), surgeon::logic_error);
  CHECK_THROWS_AS(host_matrix_view<float>(buffer.data(), 3, 4, 3), surgeon::logic_error);
  CHECK_THROWS_AS(host_matrix_view<float>(nullptr, 3, 4), surgeon::logic_error);
  CHECK_NOTHROW(host_matrix_view<float>(nullptr, 0, 4));
  const host_matrix_view<float> view(buffer.data(), 3, 4);
  CHECK_THROWS_AS(view.block(2, 2, 2, 2), surgeon::logic_error);
  CHECK_THROWS_AS(view.row_block(2, 2), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::make_host_matrix_view(buffer, 5, 3), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::host_vector_view<float>(buffer.data(), 3, 0), surgeon::logic_error);
}

TEST_CASE("host_matrix owns a row-major buffer", "[view]") {
  surgeon::host_matrix<double> m(2, 3, 1.5);
  m(1, 2) = 4.0;
  CHECK(m.view()(1, 2) == 4.0);
  CHECK(m.values()[5] == 4.0);
  CHECK(m.values()[0] == 1.5);
  CHECK_THROWS_AS(surgeon::host_matrix<double>(-1, 2), surgeon::logic_error);
}
