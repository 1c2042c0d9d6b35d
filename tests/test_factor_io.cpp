#include <surgeon/cpu/kfac.hpp>
#include <surgeon/kfac.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/random.hpp"

using surgeon::factor_accumulator;
using surgeon::host_matrix_view;
using surgeon::index_t;

namespace {

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "surgeon-tests";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
factor_accumulator<T> filled(surgeon::accumulator_options options, index_t dim = 9) {
  surgeon::cpu::context cpu;
  factor_accumulator<T> acc(dim, options);
  const std::vector<float> x = surgeon::test::random_rows<float>(40, dim, dim, 21u);
  acc.add(cpu, host_matrix_view<const float>(x.data(), 20, dim));
  acc.add(cpu, host_matrix_view<const float>(x.data() + 20 * dim, 20, dim));
  return acc;
}

}  // namespace

TEST_CASE("factor accumulators round-trip through safetensors", "[kfac][io]") {
  SECTION("double, sum mode, with bias") {
    const auto acc = filled<double>({true, std::nullopt});
    const std::string path = temp_path("factor_double.safetensors");
    acc.save(path);
    const auto loaded = factor_accumulator<double>::load(path);
    CHECK(loaded.dim() == acc.dim());
    CHECK(loaded.has_bias());
    CHECK_FALSE(loaded.is_ema());
    CHECK(loaded.count() == acc.count());
    CHECK(loaded.sum().values() == acc.sum().values());
  }
  SECTION("float, EMA mode") {
    const auto acc = filled<float>({false, 0.9});
    const std::string path = temp_path("factor_float_ema.safetensors");
    acc.save(path);
    const auto loaded = factor_accumulator<float>::load(path);
    REQUIRE(loaded.is_ema());
    CHECK(*loaded.options().ema_decay == 0.9);
    CHECK(loaded.mean().values() == acc.mean().values());
    SECTION("a loaded accumulator keeps accumulating") {
      surgeon::cpu::context cpu;
      auto resumed = loaded;
      auto original = acc;
      const std::vector<float> x = surgeon::test::random_rows<float>(5, 9, 9, 8u);
      resumed.add(cpu, host_matrix_view<const float>(x.data(), 5, 9));
      original.add(cpu, host_matrix_view<const float>(x.data(), 5, 9));
      CHECK(resumed.mean().values() == original.mean().values());
    }
  }
  SECTION("reading with the other precision is an io_error") {
    const auto acc = filled<float>({});
    const std::string path = temp_path("factor_float.safetensors");
    acc.save(path);
    CHECK_THROWS_AS(factor_accumulator<double>::load(path), surgeon::io_error);
  }
}

TEST_CASE("a factor bank round-trips with its bindings", "[kfac][io]") {
  surgeon::cpu::context cpu;
  surgeon::factor_bank<double> bank;
  bank.define("attn_in", 6);
  bank.define("ffn_in", 4, {true, std::nullopt});
  bank.bind("q", "attn_in");
  bank.bind("k", "attn_in");
  bank.bind("gate", "ffn_in");
  const std::vector<double> x = surgeon::test::random_rows<double>(7, 6, 6, 2u);
  bank.add(cpu, "attn_in", host_matrix_view<const double>(x.data(), 7, 6));
  bank.add(cpu, "ffn_in", host_matrix_view<const double>(x.data(), 7, 4, 6));
  const std::string path = temp_path("bank.safetensors");
  bank.save(path);
  const auto loaded = surgeon::factor_bank<double>::load(path);
  CHECK(loaded.size() == 2);
  CHECK(loaded.bindings() == bank.bindings());
  CHECK(loaded.for_layer("k").sum().values() == bank.for_layer("q").sum().values());
  CHECK(loaded.at("ffn_in").has_bias());
  CHECK(loaded.at("ffn_in").count() == 7);
}

TEST_CASE("corrupted or truncated factor files give io_error", "[kfac][io]") {
  const auto acc = filled<double>({true, std::nullopt}, 5);
  const std::string path = temp_path("factor_corrupt_source.safetensors");
  acc.save(path);
  const std::vector<char> good = read_bytes(path);
  const std::string bad = temp_path("factor_corrupt.safetensors");

  SECTION("missing file") {
    CHECK_THROWS_AS(factor_accumulator<double>::load(temp_path("does-not-exist.safetensors")),
                    surgeon::io_error);
  }
  SECTION("truncated at every length") {
    for (std::size_t length = 0; length < good.size(); length += 7) {
      write_bytes(bad, std::vector<char>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length)));
      CHECK_THROWS_AS(factor_accumulator<double>::load(bad), surgeon::io_error);
    }
  }
  SECTION("a flipped byte in the data makes the state asymmetric") {
    std::vector<char> flipped = good;
    flipped[flipped.size() - 3 * sizeof(double) - 2] ^= 0x10;
    write_bytes(bad, flipped);
    CHECK_THROWS_WITH(factor_accumulator<double>::load(bad), Catch::Contains("symmetric"));
  }
  SECTION("a file that is not a surgeon factor") {
    surgeon::io::safetensors_writer writer;
    const std::vector<double> values(25, 1.0);
    writer.add<double>("factor", {5, 5}, values.data());
    writer.write(bad);
    CHECK_THROWS_WITH(factor_accumulator<double>::load(bad), Catch::Contains("not a surgeon factor"));
  }
  SECTION("metadata that disagrees with the tensor") {
    surgeon::io::safetensors_writer writer;
    acc.to_safetensors(writer, "factor", "");
    writer.set_metadata("dim", "7");
    writer.write(bad);
    CHECK_THROWS_WITH(factor_accumulator<double>::load(bad), Catch::Contains("wrong shape"));
  }
  SECTION("a negative count") {
    surgeon::io::safetensors_writer writer;
    acc.to_safetensors(writer, "factor", "");
    writer.set_metadata("count", "-3");
    writer.write(bad);
    CHECK_THROWS_AS(factor_accumulator<double>::load(bad), surgeon::io_error);
  }
}
