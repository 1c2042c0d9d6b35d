// Tests of the GGUF reader/writer (surgeon/io/gguf.hpp): round trips, F16 rounding, hand-built
// quantised blocks, truncated and hostile files, and (when present) the real SmolLM2 model.
#include <surgeon/io/gguf.hpp>

#include "support/catch.hpp"
#include "support/skip.hpp"
#include "support/temp_dir.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using surgeon::index_t;
using surgeon::io::ggml_type;
using surgeon::io::gguf_reader;
using surgeon::io::gguf_value;
using surgeon::io::gguf_value_type;
using surgeon::io::gguf_writer;

using bytes_t = std::vector<std::uint8_t>;

using temp_dir = surgeon::test::temp_dir;

void write_file(const std::string& path, const bytes_t& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

/// The what() of the surgeon::io_error that `f` throws; fails the test when it throws nothing.
template <typename F>
std::string io_error_message(F&& f) {
  try {
    f();
  } catch (const surgeon::io_error& e) {
    return e.what();
  }
  FAIL("expected a surgeon::io_error");
  return {};
}

std::string open_error(const bytes_t& bytes) {
  return io_error_message([&] { gguf_reader::from_bytes(bytes); });
}

/// Little-endian byte builder for hand-made (often hostile) GGUF files.
struct builder {
  bytes_t b;
  builder& u8(std::uint8_t v) {
    b.push_back(v);
    return *this;
  }
  builder& u16(std::uint16_t v) { return le(v, 2); }
  builder& u32(std::uint32_t v) { return le(v, 4); }
  builder& u64(std::uint64_t v) { return le(v, 8); }
  builder& le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b.push_back(static_cast<std::uint8_t>((v >> (8 * i)) & 0xFFU));
    return *this;
  }
  builder& str(const std::string& s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  builder& raw(const bytes_t& bytes) {
    b.insert(b.end(), bytes.begin(), bytes.end());
    return *this;
  }
  builder& header(std::uint64_t tensors, std::uint64_t kvs, std::uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    u32(version);
    u64(tensors);
    return u64(kvs);
  }
  builder& tensor(const std::string& name, const std::vector<std::uint64_t>& ne, std::uint32_t type,
                  std::uint64_t offset) {
    str(name);
    u32(static_cast<std::uint32_t>(ne.size()));
    for (const std::uint64_t d : ne) u64(d);
    u32(type);
    return u64(offset);
  }
  builder& pad(std::size_t alignment = 32) {
    while (b.size() % alignment != 0) b.push_back(0);
    return *this;
  }
  builder& zeros(std::size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
};

/// A file with one F32 tensor `t` of `ne` and `data_bytes` of data.
bytes_t one_tensor_file(const std::vector<std::uint64_t>& ne, std::uint32_t type, std::uint64_t offset,
                        std::size_t data_bytes) {
  builder f;
  f.header(1, 0).tensor("t", ne, type, offset).pad().zeros(data_bytes);
  return f.b;
}

std::uint16_t f16_bits(float f) {
  return surgeon::io::float_to_f16(f);
}

/// A small valid file whose tensor sizes are multiples of 32 bytes (so every truncation cuts
/// something that is needed): metadata of several types and tensors of four types.
bytes_t small_file() {
  gguf_writer w;
  w.set_string("general.architecture", "llama");
  w.set_uint32("llama.block_count", 2);
  w.set_float32("llama.rope.freq_base", 10000.0f);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_string_array("tokenizer.ggml.tokens", {"<s>", "a", ""});
  w.set("tokenizer.ggml.scores", gguf_value::array<float>({0.5f, -1.0f, 2.0f}));
  w.set("nested", gguf_value::array_of_arrays(
                      {gguf_value::array<std::int8_t>({-1, 2}), gguf_value::string_array({"x"})}));
  const std::vector<float> a = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> b(16);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = 0.25f * static_cast<float>(i) - 1.0f;
  w.add_tensor("a", {8}, ggml_type::f32, a.data());
  w.add_tensor("b", {16}, ggml_type::f16, b.data());
  bytes_t q8(34, 0);
  q8[0] = 0x00;
  q8[1] = 0x3C;  // d = 1
  for (int j = 0; j < 32; ++j) q8[static_cast<std::size_t>(2 + j)] = static_cast<std::uint8_t>(j - 16);
  bytes_t q8_pair = q8;
  q8_pair.insert(q8_pair.end(), q8.begin(), q8.end());
  bytes_t q8_quad = q8_pair;
  q8_quad.insert(q8_quad.end(), q8_pair.begin(), q8_pair.end());
  bytes_t q8_16 = q8_quad;  // 16 blocks = 544 bytes = 17 * 32
  for (int i = 0; i < 3; ++i) q8_16.insert(q8_16.end(), q8_quad.begin(), q8_quad.end());
  w.add_raw_tensor("q", {32, 16}, ggml_type::q8_0, q8_16.data(), q8_16.size());
  return w.to_bytes();
}

/// Where the real model is cached (scripts/fetch-models.sh): $SURGEON_MODEL_CACHE or
/// $HOME/.cache/surgeon.
std::string model_path() {
  std::string dir;
  if (const char* cache = std::getenv("SURGEON_MODEL_CACHE"); cache != nullptr && *cache != '\0') {
    dir = cache;
  } else if (const char* home = std::getenv("HOME"); home != nullptr) {
    dir = std::string(home) + "/.cache/surgeon";
  }
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace

TEST_CASE("ggml type names and block geometry", "[io][gguf]") {
  using surgeon::io::ggml_block_bytes;
  using surgeon::io::ggml_block_size;
  using surgeon::io::ggml_type_name;
  CHECK(static_cast<std::uint32_t>(ggml_type::q8_0) == 8);
  CHECK(static_cast<std::uint32_t>(ggml_type::q6_k) == 14);
  CHECK(static_cast<std::uint32_t>(ggml_type::bf16) == 30);
  CHECK(ggml_type_name(ggml_type::f32) == "F32");
  CHECK(ggml_type_name(ggml_type::q4_1) == "Q4_1");
  CHECK(ggml_type_name(ggml_type::q6_k) == "Q6_K");
  CHECK(ggml_type_name(ggml_type::bf16) == "BF16");
  CHECK(ggml_type_name(static_cast<ggml_type>(4)) == "unknown");
  CHECK(ggml_block_size(ggml_type::q4_0) == 32);
  CHECK(ggml_block_bytes(ggml_type::q4_0) == 18);
  CHECK(ggml_block_bytes(ggml_type::q4_1) == 20);
  CHECK(ggml_block_bytes(ggml_type::q8_0) == 34);
  CHECK(ggml_block_size(ggml_type::q6_k) == 256);
  CHECK(ggml_block_bytes(ggml_type::q6_k) == 210);
  CHECK(ggml_block_bytes(ggml_type::q4_k) == 144);
  CHECK(ggml_block_bytes(ggml_type::bf16) == 2);
  for (const std::uint32_t removed : {4U, 5U, 31U, 32U, 33U, 36U, 37U, 38U, 43U, 1000U})
    CHECK_FALSE(surgeon::io::is_known_ggml_type(removed));
  for (const ggml_type t : {ggml_type::f32, ggml_type::f16, ggml_type::bf16, ggml_type::q8_0, ggml_type::q4_0,
                            ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1, ggml_type::q2_k,
                            ggml_type::q3_k, ggml_type::q4_k, ggml_type::q5_k, ggml_type::q6_k})
    CHECK(surgeon::io::can_dequantize(t));
  for (const ggml_type t : {ggml_type::q8_1, ggml_type::q8_k, ggml_type::iq2_xxs, ggml_type::iq4_xs,
                            ggml_type::iq4_nl, ggml_type::tq1_0, ggml_type::mxfp4})
    CHECK_FALSE(surgeon::io::can_dequantize(t));
}

TEST_CASE("float_to_f16 rounds to nearest even", "[io][gguf]") {
  using surgeon::io::f16_to_float;
  SECTION("every finite half round-trips, and midpoints round to the even neighbour") {
    for (std::uint32_t h = 0; h < 0x10000U; ++h) {
      const auto bits = static_cast<std::uint16_t>(h);
      const float f = f16_to_float(bits);
      if (std::isnan(f)) {
        CHECK(std::isnan(f16_to_float(f16_bits(f))));
        continue;
      }
      REQUIRE(f16_bits(f) == bits);
      // Between this half and the next finite one of larger magnitude (same sign); the step from
      // 65504 to infinity is checked below.
      if ((h & 0x7FFFU) >= 0x7BFFU) continue;
      const auto next = static_cast<std::uint16_t>(h + 1);
      const float g = f16_to_float(next);
      const float mid = static_cast<float>((static_cast<double>(f) + static_cast<double>(g)) / 2);
      REQUIRE(static_cast<double>(mid) == (static_cast<double>(f) + static_cast<double>(g)) / 2);  // exact
      const std::uint16_t even = (h & 1U) == 0 ? bits : next;
      REQUIRE(f16_bits(mid) == even);
      REQUIRE(f16_bits(std::nextafter(mid, f)) == bits);
      REQUIRE(f16_bits(std::nextafter(mid, g)) == next);
    }
  }
  SECTION("overflow, underflow, infinities and NaN") {
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(f16_bits(65504.0f) == 0x7BFF);
    CHECK(f16_bits(65519.99f) == 0x7BFF);
    CHECK(f16_bits(65520.0f) == 0x7C00);  // tie goes to even: infinity
    CHECK(f16_bits(1e10f) == 0x7C00);
    CHECK(f16_bits(-1e10f) == 0xFC00);
    CHECK(f16_bits(inf) == 0x7C00);
    CHECK(f16_bits(-inf) == 0xFC00);
    CHECK(f16_bits(std::numeric_limits<float>::max()) == 0x7C00);
    CHECK(f16_bits(0.0f) == 0x0000);
    CHECK(f16_bits(-0.0f) == 0x8000);
    CHECK(f16_bits(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
    CHECK(f16_bits(std::ldexp(1.0f, -25)) == 0x0000);  // tie with 0 goes to even
    CHECK(f16_bits(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
    CHECK(f16_bits(-std::ldexp(1.0f, -26)) == 0x8000);
    CHECK(f16_bits(std::numeric_limits<float>::denorm_min()) == 0x0000);
    CHECK(f16_bits(std::ldexp(1023.5f, -24)) == 0x0400);  // rounds up into the smallest normal
    const std::uint16_t nan = f16_bits(std::numeric_limits<float>::quiet_NaN());
    CHECK((nan & 0x7C00) == 0x7C00);
    CHECK((nan & 0x03FF) != 0);
    CHECK(std::isnan(f16_to_float(f16_bits(-std::numeric_limits<float>::signaling_NaN()))));
  }
}

TEST_CASE("gguf_value kinds and conversions", "[io][gguf]") {
  SECTION("integers convert to uint and int when they fit") {
    CHECK(gguf_value::scalar<std::int32_t>(7).try_uint() == 7U);
    CHECK_FALSE(gguf_value::scalar<std::int32_t>(-7).try_uint());
    CHECK(gguf_value::scalar<std::int8_t>(-128).try_int() == -128);
    CHECK(gguf_value::scalar<std::int16_t>(-2).try_int() == -2);
    CHECK(gguf_value::scalar<std::uint64_t>(~std::uint64_t{0}).try_uint() == ~std::uint64_t{0});
    CHECK_FALSE(gguf_value::scalar<std::uint64_t>(~std::uint64_t{0}).try_int());
    CHECK(gguf_value::scalar<std::int64_t>(std::numeric_limits<std::int64_t>::min()).try_int() ==
          std::numeric_limits<std::int64_t>::min());
    CHECK_FALSE(gguf_value::scalar(1.0f).try_uint());
    CHECK_FALSE(gguf_value::scalar(true).try_int());
  }
  SECTION("floats, bools and strings are only what they are") {
    CHECK(gguf_value::scalar(0.1f).try_float() == static_cast<double>(0.1f));
    CHECK(gguf_value::scalar(0.1).try_float() == 0.1);
    CHECK_FALSE(gguf_value::scalar<std::uint32_t>(1).try_float());
    CHECK(gguf_value::scalar(false).try_bool() == false);
    CHECK(gguf_value::string("x").try_string() != nullptr);
    CHECK(gguf_value::scalar(1.0).try_string() == nullptr);
  }
  SECTION("arrays") {
    const gguf_value ints = gguf_value::array<std::int16_t>({-1, 2, 300});
    CHECK(ints.is_array());
    CHECK(ints.size() == 3);
    CHECK(ints.array_type() == gguf_value_type::int16);
    CHECK(ints.try_int_array() == std::vector<std::int64_t>{-1, 2, 300});
    CHECK_FALSE(ints.try_float_array());
    CHECK(ints.element(2).try_int() == 300);
    CHECK_THROWS_AS(ints.element(3), surgeon::logic_error);
    CHECK_FALSE(gguf_value::array<std::uint64_t>({~std::uint64_t{0}}).try_int_array());
    CHECK(gguf_value::array<double>({0.5, -2.0}).try_float_array() == std::vector<double>{0.5, -2.0});
    const gguf_value nested = gguf_value::array_of_arrays({ints, gguf_value::string_array({"a"})});
    REQUIRE(nested.try_arrays() != nullptr);
    CHECK(nested.element(1).try_strings()->at(0) == "a");
    CHECK_THROWS_AS(gguf_value::array_of_arrays({gguf_value::scalar(1.0f)}), surgeon::logic_error);
    CHECK(gguf_value::scalar(1.0f) != gguf_value::scalar(1.0));
    CHECK(nested == gguf_value::array_of_arrays({ints, gguf_value::string_array({"a"})}));
  }
}

TEST_CASE("GGUF metadata round-trips through the writer and the reader", "[io][gguf]") {
  temp_dir dir;
  const std::string path = dir.file("meta.gguf");
  const std::vector<std::string> tokens = {"<s>", "</s>", "", "h\xC3\xA9llo", std::string("nul\0byte", 8)};
  gguf_writer w;
  w.set("u8", gguf_value::scalar<std::uint8_t>(255));
  w.set("i8", gguf_value::scalar<std::int8_t>(-128));
  w.set("u16", gguf_value::scalar<std::uint16_t>(65535));
  w.set("i16", gguf_value::scalar<std::int16_t>(-32768));
  w.set_uint32("u32", 4000000000U);
  w.set_int32("i32", -5);
  w.set_uint64("u64", ~std::uint64_t{0});
  w.set("i64", gguf_value::scalar<std::int64_t>(std::numeric_limits<std::int64_t>::min()));
  w.set_float32("f32", 0.1f);
  w.set("f64", gguf_value::scalar(-1e300));
  w.set_bool("yes", true);
  w.set_bool("no", false);
  w.set_string("s", "text with \" and \n");
  w.set_string("empty", "");
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set("tokenizer.ggml.token_type", gguf_value::array<std::int32_t>({1, 3, 6, -2, 0}));
  w.set("tokenizer.ggml.scores", gguf_value::array<float>({0.0f, -1.5f, 1e-30f, 3.0f, -0.0f}));
  w.set("f64s", gguf_value::array<double>({0.1, 2.5}));
  w.set("bools", gguf_value::array<bool>({true, false, true}));
  w.set("u64s", gguf_value::array<std::uint64_t>({0, ~std::uint64_t{0}}));
  w.set("none", gguf_value::array<std::uint8_t>({}));
  w.set("nested", gguf_value::array_of_arrays(
                      {gguf_value::array<std::int8_t>({1, -1}), gguf_value::string_array({"x", "y"}),
                       gguf_value::array_of_arrays({gguf_value::array<float>({2.0f})})}));
  w.set_uint32("u32", 7);  // replacing keeps the position
  w.write(path);
  CHECK(dir.entries() == 1);  // no temporary file left behind

  const gguf_reader r = gguf_reader::open(path);
  CHECK(r.version() == 3);
  CHECK(r.source() == path);
  CHECK(r.tensors().empty());
  REQUIRE(r.metadata().size() == 22);
  CHECK(r.metadata()[4].first == "u32");

  SECTION("typed getters") {
    CHECK(r.get_uint("u8") == 255);
    CHECK(r.get_int("i8") == -128);
    CHECK(r.get_uint("u16") == 65535);
    CHECK(r.get_int("i16") == -32768);
    CHECK(r.get_uint("u32") == 7);
    CHECK(r.get_int("i32") == -5);
    CHECK(r.get_uint("u64") == ~std::uint64_t{0});
    CHECK(r.get_int("i64") == std::numeric_limits<std::int64_t>::min());
    CHECK(r.get_float("f32") == static_cast<double>(0.1f));
    CHECK(r.get_float("f64") == -1e300);
    CHECK(r.get_bool("yes"));
    CHECK_FALSE(r.get_bool("no"));
    CHECK(r.get_string("s") == "text with \" and \n");
    CHECK(r.get_string("empty").empty());
    CHECK(r.get_string_array("tokenizer.ggml.tokens") == tokens);
    CHECK(r.get_int_array("tokenizer.ggml.token_type") == std::vector<std::int64_t>{1, 3, 6, -2, 0});
    CHECK(r.get_float_array("tokenizer.ggml.scores") ==
          std::vector<double>{0.0, -1.5, static_cast<double>(1e-30f), 3.0, -0.0});
    CHECK(r.get_float_array("f64s") == std::vector<double>{0.1, 2.5});
    CHECK(r.get("bools") == gguf_value::array<bool>({true, false, true}));
    CHECK(r.get("none").size() == 0);
    CHECK(r.get("none").array_type() == gguf_value_type::uint8);
    const gguf_value& nested = r.get("nested");
    REQUIRE(nested.try_arrays() != nullptr);
    CHECK(nested.size() == 3);
    CHECK(nested.element(0).try_int_array() == std::vector<std::int64_t>{1, -1});
    CHECK(*nested.element(1).try_strings() == std::vector<std::string>{"x", "y"});
    CHECK(nested.element(2).element(0).try_float_array() == std::vector<double>{2.0});
    CHECK(r.find("missing") == nullptr);
    REQUIRE(r.find("s") != nullptr);
    CHECK(r.find("s")->type() == gguf_value_type::string);
  }
  SECTION("missing keys and wrong types are io_errors naming the key") {
    CHECK_THAT(io_error_message([&] { r.get_string("missing.key"); }), Contains("missing.key"));
    CHECK_THAT(io_error_message([&] { r.get_uint("missing.key"); }), Contains("missing.key"));
    CHECK_THAT(io_error_message([&] { r.get_string("u32"); }), Contains("'u32'") && Contains("uint32"));
    CHECK_THAT(io_error_message([&] { r.get_uint("i32"); }), Contains("'i32'") && Contains("-5"));
    CHECK_THAT(io_error_message([&] { r.get_int("u64"); }), Contains("'u64'"));
    CHECK_THAT(io_error_message([&] { r.get_float("u32"); }), Contains("'u32'"));
    CHECK_THAT(io_error_message([&] { r.get_bool("u8"); }), Contains("'u8'"));
    CHECK_THAT(io_error_message([&] { r.get_string_array("tokenizer.ggml.scores"); }),
               Contains("tokenizer.ggml.scores") && Contains("float32"));
    CHECK_THAT(io_error_message([&] { r.get_float_array("tokenizer.ggml.tokens"); }),
               Contains("tokenizer.ggml.tokens"));
    CHECK_THAT(io_error_message([&] { r.get_int_array("u64s"); }), Contains("u64s"));
    CHECK_THAT(io_error_message([&] { r.get_int_array("s"); }), Contains("'s'") && Contains("string"));
  }
  SECTION("copy_metadata_from preserves every key, value, type and the order") {
    gguf_writer copy;
    copy.set_string("general.name", "overwritten");
    copy.copy_metadata_from(r);
    const gguf_reader again = gguf_reader::from_bytes(copy.to_bytes());
    REQUIRE(again.metadata().size() == r.metadata().size() + 1);
    CHECK(again.get_string("general.name") == "overwritten");
    for (std::size_t i = 0; i < r.metadata().size(); ++i) {
      CHECK(again.metadata()[i + 1].first == r.metadata()[i].first);
      CHECK(again.metadata()[i + 1].second == r.metadata()[i].second);
    }
    // And byte-for-byte: writing what was read reproduces the file.
    gguf_writer same;
    same.copy_metadata_from(r);
    bytes_t original;
    {
      std::ifstream in(path, std::ios::binary);
      original.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    CHECK(same.to_bytes() == original);
  }
  SECTION("erase removes a key") {
    gguf_writer copy;
    copy.copy_metadata_from(r);
    CHECK(copy.erase("s"));
    CHECK_FALSE(copy.erase("s"));
    const gguf_reader again = gguf_reader::from_bytes(copy.to_bytes());
    CHECK(again.find("s") == nullptr);
    CHECK(again.get_uint("u8") == 255);
    CHECK(again.metadata().size() == 21);
  }
}

TEST_CASE("GGUF tensors round-trip and dequantise F32 exactly and F16 to its rounding", "[io][gguf]") {
  temp_dir dir;
  const std::string path = dir.file("tensors.gguf");
  // A row-major [3, 5] matrix (out = 3, in = 5): GGUF ne = [5, 3].
  std::vector<float> w(15);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = std::sin(static_cast<float>(i)) * 3.0f;
  w[3] = 1e-7f;     // an F16 subnormal
  w[4] = 70000.0f;  // overflows F16
  w[5] = -0.0f;
  const std::vector<float> bias = {0.5f, -0.25f, 1.0f};
  gguf_writer writer;
  writer.set_string("general.architecture", "test");
  writer.add_tensor("blk.0.w32", {5, 3}, ggml_type::f32, w.data());
  writer.add_tensor("blk.0.w16", {5, 3}, ggml_type::f16, w.data());
  writer.add_tensor("bias", {3}, ggml_type::f32, bias.data());
  writer.add_tensor("empty", {0, 4}, ggml_type::f16, nullptr);
  writer.add_tensor("cube", {2, 2, 2, 1}, ggml_type::f32, w.data());
  CHECK(writer.size() == 5);
  writer.write(path);
  CHECK(dir.entries() == 1);

  const gguf_reader r = gguf_reader::open(path);
  REQUIRE(r.tensors().size() == 5);
  CHECK(r.alignment() == 32);
  CHECK(r.data_offset() % 32 == 0);
  for (const auto& t : r.tensors()) CHECK(t.offset % 32 == 0);
  CHECK(r.tensors()[0].name == "blk.0.w32");  // file order
  CHECK(r.contains("bias"));
  CHECK_FALSE(r.contains("nope"));

  const auto& info = r.info("blk.0.w32");
  CHECK(info.type == ggml_type::f32);
  CHECK(info.ne == std::vector<std::int64_t>{5, 3});
  CHECK(info.elements() == 15);
  CHECK(info.bytes == 60);
  CHECK(r.tensor_shape_rows_cols("blk.0.w32") == std::pair<index_t, index_t>{3, 5});
  CHECK(r.tensor_shape_rows_cols("bias") == std::pair<index_t, index_t>{1, 3});
  CHECK(r.tensor_shape_rows_cols("cube") == std::pair<index_t, index_t>{4, 2});
  CHECK(r.dequantize("blk.0.w32") == w);
  CHECK(std::memcmp(r.raw(info), w.data(), 60) == 0);

  const std::vector<float> half = r.dequantize("blk.0.w16");
  REQUIRE(half.size() == w.size());
  CHECK(r.info("blk.0.w16").bytes == 30);
  for (std::size_t i = 0; i < w.size(); ++i) {
    CHECK(half[i] == surgeon::io::f16_to_float(f16_bits(w[i])));
    if (i != 4) CHECK(std::fabs(half[i] - w[i]) <= std::fabs(w[i]) * 0x1p-11f + 0x1p-25f);
  }
  CHECK(std::isinf(half[4]));
  CHECK(std::signbit(half[5]));
  CHECK(r.dequantize("bias") == bias);
  CHECK(r.dequantize("empty").empty());
  CHECK(r.info("empty").bytes == 0);
  CHECK(r.dequantize("cube") == std::vector<float>(w.begin(), w.begin() + 8));
  CHECK_THAT(io_error_message([&] { r.dequantize("nope"); }), Contains("nope"));

  SECTION("general.alignment is honoured by the writer and the reader") {
    gguf_writer aligned;
    aligned.set_uint32("general.alignment", 64);
    aligned.add_tensor("a", {3}, ggml_type::f32, bias.data());
    aligned.add_tensor("b", {3}, ggml_type::f32, bias.data());
    const gguf_reader a = gguf_reader::from_bytes(aligned.to_bytes());
    CHECK(a.alignment() == 64);
    CHECK(a.data_offset() % 64 == 0);
    CHECK(a.info("b").offset == 64);
    CHECK(a.dequantize("b") == bias);
    gguf_writer bad;
    bad.set_uint32("general.alignment", 48);
    CHECK_THROWS_AS(bad.to_bytes(), surgeon::logic_error);
    gguf_writer wrong_type;
    wrong_type.set_uint64("general.alignment", 64);  // ggml requires uint32
    CHECK_THROWS_AS(wrong_type.to_bytes(), surgeon::logic_error);
  }
  SECTION("the writer refuses bad tensors") {
    gguf_writer bad;
    bad.add_tensor("x", {3}, ggml_type::f32, bias.data());
    CHECK_THROWS_AS(bad.add_tensor("x", {3}, ggml_type::f32, bias.data()), surgeon::logic_error);
    CHECK_THROWS_AS(bad.add_tensor("q", {32}, ggml_type::q4_0, w.data()), surgeon::logic_error);
    CHECK_THROWS_AS(bad.add_tensor("", {3}, ggml_type::f32, bias.data()), surgeon::logic_error);
    CHECK_THROWS_AS(bad.add_tensor(std::string(64, 'n'), {3}, ggml_type::f32, bias.data()),
                    surgeon::logic_error);
    CHECK_THROWS_AS(bad.add_tensor("y", {}, ggml_type::f32, bias.data()), surgeon::logic_error);
    CHECK_THROWS_AS(bad.add_tensor("y", {1, 1, 1, 1, 1}, ggml_type::f32, bias.data()), surgeon::logic_error);
    CHECK_THROWS_AS(bad.add_tensor("y", {-1}, ggml_type::f32, bias.data()), surgeon::logic_error);
    CHECK_THROWS_AS(bad.add_tensor("y", {3}, ggml_type::f32, nullptr), surgeon::logic_error);
    const bytes_t block(18, 0);
    CHECK_THROWS_AS(bad.add_raw_tensor("y", {16}, ggml_type::q4_0, block.data(), 18), surgeon::logic_error);
    CHECK_THROWS_AS(bad.add_raw_tensor("y", {32}, ggml_type::q4_0, block.data(), 17), surgeon::logic_error);
    CHECK_THROWS_AS(bad.add_raw_tensor("y", {32}, static_cast<ggml_type>(4), block.data(), 18),
                    surgeon::logic_error);
    CHECK_THROWS_AS(bad.set("", gguf_value::scalar(1.0f)), surgeon::logic_error);
    CHECK(bad.size() == 1);
  }
  SECTION("writing into a missing directory fails cleanly") {
    CHECK_THROWS_AS(writer.write(dir.file("no/such/dir/x.gguf")), surgeon::io_error);
    CHECK(dir.entries() == 1);
  }
}

TEST_CASE("quantised blocks dequantise as in ggml", "[io][gguf]") {
  // d = 0.5 and m = -1.25 in F16.
  const std::uint16_t d = f16_bits(0.5f);
  const std::uint16_t m = f16_bits(-1.25f);
  auto put16 = [](bytes_t& out, std::uint16_t v) {
    out.push_back(static_cast<std::uint8_t>(v & 0xFF));
    out.push_back(static_cast<std::uint8_t>(v >> 8));
  };
  // Nibble codes: element j (j < 16) is the low nibble of byte j, element j + 16 its high nibble.
  auto code = [](std::size_t block, std::size_t element) { return (element * 7 + block * 3) % 16; };
  const std::size_t blocks = 4;  // ne = [64, 2]: two rows of two blocks

  SECTION("Q4_0: d * (q - 8)") {
    bytes_t data;
    for (std::size_t b = 0; b < blocks; ++b) {
      put16(data, d);
      for (std::size_t j = 0; j < 16; ++j)
        data.push_back(static_cast<std::uint8_t>(code(b, j) | (code(b, j + 16) << 4)));
    }
    gguf_writer w;
    w.add_raw_tensor("q", {64, 2}, ggml_type::q4_0, data.data(), data.size());
    const gguf_reader r = gguf_reader::from_bytes(w.to_bytes());
    CHECK(r.info("q").bytes == 4 * 18);
    const std::vector<float> out = r.dequantize("q");
    REQUIRE(out.size() == 128);
    for (std::size_t b = 0; b < blocks; ++b) {
      for (std::size_t j = 0; j < 32; ++j) {
        const float expected = 0.5f * (static_cast<float>(code(b, j)) - 8.0f);
        CHECK(out[b * 32 + j] == expected);
      }
    }
    CHECK(r.tensor_shape_rows_cols("q") == std::pair<index_t, index_t>{2, 64});
  }
  SECTION("Q4_1: d * q + m") {
    bytes_t data;
    for (std::size_t b = 0; b < blocks; ++b) {
      put16(data, d);
      put16(data, m);
      for (std::size_t j = 0; j < 16; ++j)
        data.push_back(static_cast<std::uint8_t>(code(b, j) | (code(b, j + 16) << 4)));
    }
    gguf_writer w;
    w.add_raw_tensor("q", {64, 2}, ggml_type::q4_1, data.data(), data.size());
    const gguf_reader r = gguf_reader::from_bytes(w.to_bytes());
    CHECK(r.info("q").bytes == 4 * 20);
    const std::vector<float> out = r.dequantize("q");
    REQUIRE(out.size() == 128);
    for (std::size_t b = 0; b < blocks; ++b) {
      for (std::size_t j = 0; j < 32; ++j) {
        CHECK(out[b * 32 + j] == 0.5f * static_cast<float>(code(b, j)) - 1.25f);
      }
    }
  }
  SECTION("Q4_0 nibble order on a single byte") {
    bytes_t data;
    put16(data, f16_bits(1.0f));
    data.push_back(0xF0);  // element 0 = 0 - 8, element 16 = 15 - 8
    data.insert(data.end(), 15, 0x88);
    gguf_writer w;
    w.add_raw_tensor("q", {32}, ggml_type::q4_0, data.data(), data.size());
    const std::vector<float> out = gguf_reader::from_bytes(w.to_bytes()).dequantize("q");
    CHECK(out[0] == -8.0f);
    CHECK(out[16] == 7.0f);
    CHECK(out[1] == 0.0f);
    CHECK(out[17] == 0.0f);
  }
  SECTION("Q8_0: d * q with signed q") {
    bytes_t data;
    for (std::size_t b = 0; b < 2; ++b) {
      put16(data, b == 0 ? d : f16_bits(-2.0f));
      for (int j = 0; j < 32; ++j)
        data.push_back(static_cast<std::uint8_t>(static_cast<std::int8_t>(j * 8 - 128)));
    }
    gguf_writer w;
    w.add_raw_tensor("q", {64}, ggml_type::q8_0, data.data(), data.size());
    const std::vector<float> out = gguf_reader::from_bytes(w.to_bytes()).dequantize("q");
    REQUIRE(out.size() == 64);
    for (int j = 0; j < 32; ++j) {
      CHECK(out[static_cast<std::size_t>(j)] == 0.5f * static_cast<float>(j * 8 - 128));
      CHECK(out[static_cast<std::size_t>(32 + j)] == -2.0f * static_cast<float>(j * 8 - 128));
    }
  }
  SECTION("BF16 converts exactly") {
    bytes_t data;
    for (const std::uint16_t v :
         {std::uint16_t{0x3F80}, std::uint16_t{0xC040}, std::uint16_t{0x7F80}, std::uint16_t{0x0001}})
      put16(data, v);
    gguf_writer w;
    w.add_raw_tensor("b", {4}, ggml_type::bf16, data.data(), data.size());
    const std::vector<float> out = gguf_reader::from_bytes(w.to_bytes()).dequantize("b");
    CHECK(out[0] == 1.0f);
    CHECK(out[1] == -3.0f);
    CHECK(std::isinf(out[2]));
    CHECK(out[3] == std::ldexp(1.0f, -133));
  }
  SECTION("types surgeon cannot dequantise are named") {
    const bytes_t block(136, 0);
    gguf_writer w;
    w.add_raw_tensor("blk.0.attn_q.weight", {256}, ggml_type::iq4_xs, block.data(), block.size());
    const gguf_reader r = gguf_reader::from_bytes(w.to_bytes());
    CHECK(r.info("blk.0.attn_q.weight").bytes == 136);
    CHECK_THAT(io_error_message([&] { r.dequantize("blk.0.attn_q.weight"); }),
               Contains("tensor 'blk.0.attn_q.weight' has type IQ4_XS, which surgeon cannot dequantise"));
  }
  SECTION("dequantize_row converts raw data as the reader does, and checks its arguments") {
    using surgeon::io::dequantize_row;
    bytes_t data;
    for (std::size_t b = 0; b < blocks; ++b) {
      put16(data, d);
      put16(data, m);
      for (std::size_t j = 0; j < 16; ++j)
        data.push_back(static_cast<std::uint8_t>(code(b, j) | (code(b, j + 16) << 4)));
    }
    gguf_writer w;
    w.add_raw_tensor("q", {128}, ggml_type::q4_1, data.data(), data.size());
    std::vector<float> out(128, -99.0f);
    dequantize_row(ggml_type::q4_1, data.data(), 128, out.data());
    CHECK(out == gguf_reader::from_bytes(w.to_bytes()).dequantize("q"));
    std::vector<float> one_block(32, -99.0f);
    dequantize_row(ggml_type::q4_1, data.data() + 20, 32, one_block.data());  // the second block
    CHECK(std::equal(one_block.begin(), one_block.end(), out.begin() + 32));
    CHECK_NOTHROW(dequantize_row(ggml_type::q4_1, nullptr, 0, nullptr));
    CHECK_THROWS_AS(dequantize_row(ggml_type::q4_1, data.data(), 16, out.data()), surgeon::logic_error);
    CHECK_THROWS_AS(dequantize_row(ggml_type::iq4_xs, data.data(), 256, out.data()), surgeon::logic_error);
    CHECK_THROWS_AS(dequantize_row(ggml_type::q8_0, nullptr, 32, out.data()), surgeon::logic_error);
  }
}

TEST_CASE("truncated GGUF files are rejected at every cut", "[io][gguf]") {
  const bytes_t full = small_file();
  const gguf_reader r = gguf_reader::from_bytes(full);
  REQUIRE(r.tensors().size() == 3);
  REQUIRE(r.get_string_array("tokenizer.ggml.tokens").size() == 3);
  for (const auto& t : r.tensors()) REQUIRE(t.bytes % 32 == 0);  // no trailing padding to cut
  SECTION("in memory") {
    for (std::size_t n = 0; n < full.size(); ++n) {
      INFO("prefix of " << n << " of " << full.size() << " bytes");
      CHECK_THROWS_AS(
          gguf_reader::from_bytes(bytes_t(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n))),
          surgeon::io_error);
    }
  }
  SECTION("on disk, with the path in the message") {
    temp_dir dir;
    const std::string path = dir.file("cut.gguf");
    write_file(path, bytes_t(full.begin(), full.begin() + 100));
    CHECK_THAT(io_error_message([&] { gguf_reader::open(path); }), Contains(path));
    write_file(path, bytes_t(full.begin(), full.begin() + 10));
    CHECK_THAT(io_error_message([&] { gguf_reader::open(path); }), Contains("too short"));
  }
}

TEST_CASE("files that cannot be opened are reported", "[io][gguf]") {
  temp_dir dir;
  CHECK_THAT(io_error_message([&] { gguf_reader::open(dir.file("missing.gguf")); }),
             Contains("missing.gguf"));
  CHECK_THAT(io_error_message([&] { gguf_reader::open(dir.file("")); }), Contains("not a regular file"));
}

TEST_CASE("hostile GGUF headers are rejected with a reason", "[io][gguf]") {
  SECTION("magic and version") {
    builder f;
    f.header(0, 0);
    bytes_t bad = f.b;
    bad[0] = 'X';
    CHECK_THAT(open_error(bad), Contains("not a GGUF file"));
    CHECK_THAT(open_error(builder().header(0, 0, 1).b), Contains("version 1"));
    CHECK_THAT(open_error(builder().header(0, 0, 4).b), Contains("unsupported GGUF version 4"));
    CHECK_THAT(open_error(builder().header(0, 0, 0x03000000).b), Contains("big-endian"));
    CHECK(gguf_reader::from_bytes(builder().header(0, 0, 2).b).version() == 2);
    CHECK(gguf_reader::from_bytes(builder().header(0, 0, 3).b).metadata().empty());
  }
  SECTION("huge counts are refused before anything is allocated") {
    CHECK_THAT(open_error(builder().header(~std::uint64_t{0}, 0).b), Contains("tensor count"));
    CHECK_THAT(open_error(builder().header(std::uint64_t{1} << 40, 0).zeros(100).b),
               Contains("tensor count"));
    CHECK_THAT(open_error(builder().header(0, ~std::uint64_t{0}).b), Contains("metadata count"));
  }
  SECTION("huge string lengths") {
    CHECK_THAT(open_error(builder().header(0, 1).u64(~std::uint64_t{0}).zeros(16).b), Contains("length"));
    CHECK_THAT(open_error(builder().header(0, 1).str("k").u32(8).u64(std::uint64_t{1} << 62).zeros(16).b),
               Contains("length"));
    CHECK_THAT(open_error(builder().header(1, 0).u64(1000).zeros(30).b), Contains("tensor name"));
  }
  SECTION("huge and deep arrays") {
    // An array of 2^61 uint64: needs 2^64 bytes (the multiplication would overflow).
    CHECK_THAT(open_error(builder().header(0, 1).str("k").u32(9).u32(10).u64(std::uint64_t{1} << 61).b),
               Contains("array of"));
    CHECK_THAT(open_error(builder().header(0, 1).str("k").u32(9).u32(8).u64(1000).zeros(100).b),
               Contains("array of 1000 string"));
    CHECK_THAT(open_error(builder().header(0, 1).str("k").u32(9).u32(9).u64(~std::uint64_t{0}).zeros(64).b),
               Contains("array of"));
    builder deep;
    deep.header(0, 1).str("k").u32(9);
    for (int i = 0; i < 20; ++i) deep.u32(9).u64(1);
    deep.u32(0).u64(0);
    CHECK_THAT(open_error(deep.b), Contains("nest deeper"));
    builder ok;  // depth 8 is fine
    ok.header(0, 1).str("k").u32(9);
    for (int i = 0; i < 7; ++i) ok.u32(9).u64(1);
    ok.u32(0).u64(1).u8(42);
    const gguf_reader r = gguf_reader::from_bytes(ok.b);
    const gguf_value* v = &r.get("k");
    for (int i = 0; i < 7; ++i) v = &v->try_arrays()->at(0);
    CHECK(v->element(0).try_uint() == 42U);
  }
  SECTION("bad value types, bools and duplicate keys") {
    CHECK_THAT(open_error(builder().header(0, 1).str("k").u32(13).zeros(8).b),
               Contains("unknown value type 13"));
    CHECK_THAT(open_error(builder().header(0, 1).str("k").u32(9).u32(99).u64(0).b),
               Contains("unknown array element type 99"));
    CHECK_THAT(open_error(builder().header(0, 1).str("k").u32(7).u8(2).b), Contains("not 0 or 1"));
    CHECK_THAT(open_error(builder().header(0, 1).str("k").u32(9).u32(7).u64(2).u8(1).u8(5).b),
               Contains("not 0 or 1"));
    CHECK_THAT(open_error(builder().header(0, 2).str("k").u32(0).u8(1).str("k").u32(0).u8(2).b),
               Contains("duplicate metadata key 'k'"));
  }
  SECTION("alignment must be a power of two") {
    for (const std::uint32_t a : {0U, 3U, 48U}) {
      CHECK_THAT(open_error(builder().header(0, 1).str("general.alignment").u32(4).u32(a).b),
                 Contains("general.alignment"));
    }
    CHECK_THAT(open_error(builder().header(0, 1).str("general.alignment").u32(8).str("x").b),
               Contains("general.alignment"));
    const gguf_reader r =
        gguf_reader::from_bytes(builder().header(0, 1).str("general.alignment").u32(4).u32(16).b);
    CHECK(r.alignment() == 16);
  }
  SECTION("dimensions") {
    CHECK_THAT(open_error(one_tensor_file({1, 1, 1, 1, 1}, 0, 0, 32)), Contains("5 dimensions"));
    CHECK_THAT(open_error(one_tensor_file({std::uint64_t{1} << 63}, 0, 0, 32)), Contains("negative"));
    CHECK_THAT(open_error(one_tensor_file({std::uint64_t{1} << 32, std::uint64_t{1} << 32}, 0, 0, 32)),
               Contains("overflows"));
    // 2^62 F32 elements fit int64 but their byte size does not fit 64 bits.
    CHECK_THAT(open_error(one_tensor_file({std::uint64_t{1} << 62}, 0, 0, 32)), Contains("overflows"));
    CHECK_THAT(open_error(one_tensor_file({std::uint64_t{1} << 40}, 0, 0, 32)), Contains("truncated"));
    CHECK_THAT(open_error(one_tensor_file({16, 2}, 2, 0, 64)),
               Contains("not a multiple of its block size 32"));
    // A zero dimension makes an empty tensor, whatever the others are.
    const gguf_reader r = gguf_reader::from_bytes(one_tensor_file({0, std::uint64_t{1} << 62}, 0, 0, 0));
    CHECK(r.info("t").bytes == 0);
    CHECK(r.dequantize("t").empty());
  }
  SECTION("types") {
    CHECK_THAT(open_error(one_tensor_file({32}, 4, 0, 32)), Contains("unknown or removed ggml type 4"));
    CHECK_THAT(open_error(one_tensor_file({32}, 1000, 0, 32)), Contains("ggml type 1000"));
    const gguf_reader r = gguf_reader::from_bytes(one_tensor_file({256}, 23, 0, 160));
    CHECK_THAT(io_error_message([&] { r.dequantize("t"); }), Contains("IQ4_XS"));
  }
  SECTION("offsets") {
    CHECK_THAT(open_error(one_tensor_file({4}, 0, 16, 64)), Contains("not a multiple of the alignment 32"));
    CHECK_THAT(open_error(one_tensor_file({4}, 0, 64, 64)), Contains("truncated"));
    CHECK_THAT(open_error(one_tensor_file({4}, 0, ~std::uint64_t{0} - 31, 64)), Contains("truncated"));
    CHECK(gguf_reader::from_bytes(one_tensor_file({4}, 0, 32, 64)).info("t").offset == 32);
  }
  SECTION("overlapping tensors and duplicate names") {
    builder f;
    f.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad().zeros(64);
    CHECK_THAT(open_error(f.b), Contains("overlap"));
    builder g;
    g.header(2, 0).tensor("a", {4}, 0, 0).tensor("a", {4}, 0, 32).pad().zeros(64);
    CHECK_THAT(open_error(g.b), Contains("duplicate tensor name 'a'"));
    builder ok;  // gaps and empty tensors are not overlaps
    ok.header(3, 0).tensor("a", {4}, 0, 0).tensor("b", {4}, 0, 64).tensor("e", {0}, 0, 32).pad().zeros(96);
    CHECK(gguf_reader::from_bytes(ok.b).tensors().size() == 3);
  }
}

TEST_CASE("random corruption never crashes the GGUF reader", "[io][gguf]") {
  const bytes_t full = small_file();
  std::mt19937 rng(12345);
  int accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    bytes_t bytes = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const std::size_t at = rng() % bytes.size();
      bytes[at] = static_cast<std::uint8_t>(rng() % 4 == 0 ? 0xFF : rng());
    }
    try {
      const gguf_reader r = gguf_reader::from_bytes(std::move(bytes));
      ++accepted;
      for (const auto& t : r.tensors()) {
        try {
          if (t.elements() <= (1 << 20)) (void)r.dequantize(t);
        } catch (const surgeon::io_error&) {
        }
      }
    } catch (const surgeon::io_error&) {
    }
  }
  CHECK(accepted > 0);  // some flips only touch data or string contents
}

TEST_CASE("every quantised type dequantises as gguf-py does, bit for bit", "[io][gguf][reference]") {
  // tests/gguf_reference.py writes random blocks of each type and gguf-py's dequantisation of them
  // (llama.cpp's own Python library, an independent implementation), with gguf-py's writer.
  const char* path = std::getenv("SURGEON_GGUF_REFERENCE");
  if (path == nullptr || !fs::exists(path))
    SURGEON_SKIP("no gguf-py reference file (SURGEON_GGUF_REFERENCE; tests/gguf_reference.py makes it)");
  const gguf_reader r = gguf_reader::open(path);
  const auto type_name = GENERATE(as<std::string>{}, "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K",
                                  "Q4_K", "Q5_K", "Q6_K");
  CAPTURE(type_name);
  const surgeon::io::gguf_tensor_info& q = r.info("q." + type_name);
  CHECK(surgeon::io::ggml_type_name(q.type) == type_name);
  const std::vector<float> got = r.dequantize(q);
  const std::vector<float> expected = r.dequantize("ref." + type_name);
  REQUIRE(got.size() == expected.size());
  REQUIRE(got.size() >= 6 * 32 * 3);  // several blocks per row, six rows
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &expected[i], sizeof(float)) != 0 && mismatches++ < 5) {
      CAPTURE(i, got[i], expected[i]);
      CHECK(got[i] == expected[i]);
    }
  }
  CHECK(mismatches == 0);
  // The values span both signs (random scales of both signs), so a sign slip would show.
  CHECK(*std::min_element(got.begin(), got.end()) < 0.0f);
  CHECK(*std::max_element(got.begin(), got.end()) > 0.0f);
}

TEST_CASE("F16, BF16 and Q8_0 are written as gguf-py writes them, byte for byte", "[io][gguf][reference]") {
  const char* path = std::getenv("SURGEON_GGUF_REFERENCE");
  if (path == nullptr || !fs::exists(path))
    SURGEON_SKIP("no gguf-py reference file (SURGEON_GGUF_REFERENCE; tests/gguf_reference.py makes it)");
  const gguf_reader r = gguf_reader::open(path);
  const std::vector<float> in = r.dequantize("in.f32");
  const auto zeros = static_cast<std::size_t>(std::count(in.begin(), in.end(), 0.0f));
  REQUIRE(zeros > in.size() / 4);
  const auto type = GENERATE(ggml_type::f16, ggml_type::bf16, ggml_type::q8_0);
  const std::string name(surgeon::io::ggml_type_name(type));
  CAPTURE(name);
  const surgeon::io::gguf_tensor_info& expected = r.info("out." + name);
  CHECK(expected.type == type);
  bytes_t got(static_cast<std::size_t>(expected.bytes));
  surgeon::io::quantize_row(type, in.data(), in.size(), got.data());
  CHECK(std::memcmp(got.data(), r.raw(expected), got.size()) == 0);
  // Through the writer and back: every zero (a pruned weight) is still exactly zero.
  gguf_writer w;
  w.add_tensor("t", expected.ne, type, in.data());
  const std::vector<float> back = gguf_reader::from_bytes(w.to_bytes()).dequantize("t");
  std::size_t kept_zeros = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == 0.0f) kept_zeros += back[i] == 0.0f ? 1 : 0;
  }
  CHECK(kept_zeros == zeros);
}

TEST_CASE("a real quantised file dequantises as gguf-py does, tensor by tensor",
          "[io][gguf][reference-file]") {
  // tests/llama/llama_cpp_check.py: SURGEON_GGUF_QUANTIZED is a file llama-quantize wrote,
  // SURGEON_GGUF_EXPECTED gguf-py's dequantisation of each of its tensors (F32, same names).
  const char* quantized = std::getenv("SURGEON_GGUF_QUANTIZED");
  const char* expected = std::getenv("SURGEON_GGUF_EXPECTED");
  if (quantized == nullptr || expected == nullptr) SURGEON_SKIP("SURGEON_GGUF_QUANTIZED / _EXPECTED not set");
  const gguf_reader q = gguf_reader::open(quantized);
  const gguf_reader e = gguf_reader::open(expected);
  REQUIRE(q.tensors().size() == e.tensors().size());
  std::size_t compared = 0;
  for (const surgeon::io::gguf_tensor_info& t : q.tensors()) {
    CAPTURE(t.name, surgeon::io::ggml_type_name(t.type));
    REQUIRE(surgeon::io::can_dequantize(t.type));
    const std::vector<float> got = q.dequantize(t);
    const std::vector<float> want = e.dequantize(t.name);
    REQUIRE(got.size() == want.size());
    CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
    ++compared;
  }
  CHECK(compared == q.tensors().size());
}

TEST_CASE("the real SmolLM2-135M Q4_1 model reads and dequantises", "[io][gguf][model]") {
  const std::string path = model_path();
  if (!fs::exists(path))
    SURGEON_SKIP("SmolLM2-135M-Instruct.Q4_1.gguf not found at " << path << " (run scripts/fetch-models.sh)");
  const gguf_reader r = gguf_reader::open(path);
  CHECK(r.version() == 3);
  CHECK(r.get_string("general.architecture") == "llama");
  CHECK(r.get_uint("llama.block_count") == 30);
  CHECK(r.get_uint("llama.embedding_length") == 576);
  CHECK(r.get_uint("llama.attention.head_count") == 9);
  CHECK(r.get_uint("llama.attention.head_count_kv") == 3);
  CHECK(r.get_uint("llama.feed_forward_length") == 1536);
  CHECK(r.get_uint("llama.context_length") > 0);
  CHECK(r.get_float("llama.rope.freq_base") > 0.0);
  CHECK(r.get_float("llama.attention.layer_norm_rms_epsilon") > 0.0);
  CHECK(r.get_string_array("tokenizer.ggml.tokens").size() == 49152);
  CHECK(r.get_int_array("tokenizer.ggml.token_type").size() == 49152);
  CHECK(r.get_uint("general.file_type") == 3);  // MOSTLY_Q4_1

  // 30 blocks x 9 tensors + token_embd + output_norm (the output head is tied).
  CHECK(r.tensors().size() == 272);
  std::size_t q4_1 = 0;
  std::size_t f32 = 0;
  for (const auto& t : r.tensors()) {
    if (t.type == ggml_type::q4_1) ++q4_1;
    if (t.type == ggml_type::f32) ++f32;
  }
  CHECK(q4_1 == 30 * 7);
  CHECK(f32 == 30 * 2 + 1);

  const auto& embd = r.info("token_embd.weight");
  CHECK(embd.ne == std::vector<std::int64_t>{576, 49152});
  CHECK(r.tensor_shape_rows_cols("token_embd.weight") == std::pair<index_t, index_t>{49152, 576});
  const std::vector<float> e = r.dequantize("token_embd.weight");
  REQUIRE(e.size() == std::size_t{49152} * 576);
  double sum_sq = 0;
  bool finite = true;
  for (const float x : e) {
    finite = finite && std::isfinite(x);
    sum_sq += static_cast<double>(x) * x;
  }
  CHECK(finite);
  const double rms = std::sqrt(sum_sq / static_cast<double>(e.size()));
  CHECK(rms > 1e-3);
  CHECK(rms < 10.0);

  const auto& q = r.info("blk.0.attn_q.weight");
  CHECK(q.type == ggml_type::q4_1);
  CHECK(r.tensor_shape_rows_cols("blk.0.attn_q.weight") == std::pair<index_t, index_t>{576, 576});
  CHECK(r.tensor_shape_rows_cols("blk.0.attn_k.weight") == std::pair<index_t, index_t>{192, 576});
  CHECK(r.tensor_shape_rows_cols("blk.0.ffn_down.weight") == std::pair<index_t, index_t>{576, 1536});
  const std::vector<float> wq = r.dequantize(q);
  REQUIRE(wq.size() == std::size_t{576} * 576);
  double max_abs = 0;
  sum_sq = 0;
  finite = true;
  for (const float x : wq) {
    finite = finite && std::isfinite(x);
    max_abs = std::max(max_abs, static_cast<double>(std::fabs(x)));
    sum_sq += static_cast<double>(x) * x;
  }
  const double rms_q = std::sqrt(sum_sq / static_cast<double>(wq.size()));
  CHECK(finite);
  CHECK(rms_q > 1e-3);
  CHECK(rms_q < 1.0);
  CHECK(max_abs < 50.0);
  const std::vector<float> norm = r.dequantize("blk.0.attn_norm.weight");
  CHECK(norm.size() == 576);
}
