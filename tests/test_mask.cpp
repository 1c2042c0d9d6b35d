#include <surgeon/mask.hpp>

#include <vector>

#include "support/catch.hpp"

using surgeon::index_t;
using surgeon::mask;

TEST_CASE("a mask stores one bit per weight, rows on word boundaries", "[mask]") {
  mask m(3, 70);  // two words per row
  CHECK(m.count() == 0);
  CHECK(m.density() == 1.0);
  m.prune(0, 0);
  m.prune(0, 69);
  m.prune(2, 64);
  CHECK(m.pruned(0, 69));
  CHECK_FALSE(m.pruned(1, 69));
  CHECK(m.count() == 3);
  CHECK(m.count_in_row(0) == 2);
  CHECK(m.pruned_in_row(0) == std::vector<index_t>{0, 69});
  m.keep(0, 0);
  CHECK(m.count() == 2);

  SECTION("rows and columns") {
    m.prune_row(1);
    CHECK(m.count_in_row(1) == 70);
    m.prune_column(5);
    CHECK(m.count() == 2 + 70 + 2);
  }
  SECTION("merge is a union") {
    mask other(3, 70);
    other.prune(2, 64);
    other.prune(1, 1);
    m.merge(other);
    CHECK(m.count() == 3);
    CHECK_THROWS_AS(m.merge(mask(3, 71)), surgeon::logic_error);
  }
}

TEST_CASE("a mask applies to weights and is read back from zeros", "[mask]") {
  std::vector<float> w(12, 1.0f);
  mask m(3, 4);
  m.prune(1, 2);
  m.prune(2, 0);
  m.apply(surgeon::make_host_matrix_view(w, 3, 4));
  CHECK(w[6] == 0.0f);
  CHECK(w[8] == 0.0f);
  CHECK(w[7] == 1.0f);
  const mask zeros =
      mask::of_zeros(surgeon::make_host_matrix_view(static_cast<const std::vector<float>&>(w), 3, 4));
  CHECK(zeros == m);
  CHECK_THROWS_AS(m.apply(surgeon::make_host_matrix_view(w, 4, 3)), surgeon::logic_error);
}

TEST_CASE("N:M patterns are validated", "[mask]") {
  CHECK_NOTHROW(surgeon::validate(surgeon::nm_pattern{2, 4}, 16));
  CHECK_THROWS_AS(surgeon::validate(surgeon::nm_pattern{5, 4}, 16), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::validate(surgeon::nm_pattern{2, 4}, 18), surgeon::logic_error);
  CHECK_THROWS_AS(surgeon::validate(surgeon::nm_pattern{0, 4}, 16), surgeon::logic_error);
  CHECK(surgeon::to_string(surgeon::method::llm_surgeon) == "llm-surgeon");
}
