// Tests of the safetensors reader/writer (surgeon/io/safetensors.hpp), including the limits
// that its JSON header parsing (nlohmann-json under surgeon/io/detail/json.hpp) enforces.
#include <surgeon/io/safetensors.hpp>

#include "support/catch.hpp"
#include "support/temp_dir.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
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
using surgeon::io::dtype;
using surgeon::io::safetensors_reader;
using surgeon::io::safetensors_writer;

using bytes_t = std::vector<std::uint8_t>;

using temp_dir = surgeon::test::temp_dir;

bytes_t read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return bytes_t(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const bytes_t& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

/// A safetensors file from a literal header (used as is, length field computed) and data bytes.
bytes_t make_file(const std::string& header, std::size_t data_bytes, std::uint8_t fill = 0xAB) {
  bytes_t out;
  const auto n = static_cast<std::uint64_t>(header.size());
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>((n >> (8 * i)) & 0xFFU));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data_bytes, fill);
  return out;
}

/// A file whose length field says `length`, followed by `rest`.
bytes_t with_length(std::uint64_t length, const std::string& rest) {
  bytes_t out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>((length >> (8 * i)) & 0xFFU));
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

/// The what() of the surgeon::io_error that `f` throws; fails the test when it throws nothing
/// (any other exception type escapes and fails the test too).
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

std::string reader_error(const std::string& header, std::size_t data_bytes) {
  return io_error_message([&] { safetensors_reader::from_bytes(make_file(header, data_bytes)); });
}

/// The message of the io_error that reading a file with this header and no data throws; the
/// file is named "hdr.safetensors", which the message must name.
std::string header_error(const std::string& header) {
  const std::string message =
      io_error_message([&] { safetensors_reader::from_bytes(make_file(header, 0), "hdr.safetensors"); });
  CHECK_THAT(message, Contains("hdr.safetensors"));
  return message;
}

/// `{"t": <an empty U8 tensor entry whose extra key "x" holds value>}`: a valid header but for
/// what `value` brings in (unknown keys of an entry are ignored).
std::string with_extra(const std::string& value) {
  return R"({"t":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":)" + value + "}}";
}

std::uint32_t float_bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

/// Independent oracle for F16: (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m for subnormals.
double f16_oracle(std::uint16_t bits) {
  const int sign = (bits & 0x8000) ? -1 : 1;
  const int exponent = (bits >> 10) & 0x1F;
  const int mantissa = bits & 0x3FF;
  if (exponent == 0x1F) {
    return mantissa == 0 ? sign * std::numeric_limits<double>::infinity()
                         : std::numeric_limits<double>::quiet_NaN();
  }
  if (exponent == 0) return sign * std::ldexp(static_cast<double>(mantissa), -24);
  return sign * std::ldexp(static_cast<double>(1024 + mantissa), exponent - 25);
}

/// Independent oracle for BF16: 8 exponent bits (bias 127), 7 mantissa bits.
double bf16_oracle(std::uint16_t bits) {
  const int sign = (bits & 0x8000) ? -1 : 1;
  const int exponent = (bits >> 7) & 0xFF;
  const int mantissa = bits & 0x7F;
  if (exponent == 0xFF) {
    return mantissa == 0 ? sign * std::numeric_limits<double>::infinity()
                         : std::numeric_limits<double>::quiet_NaN();
  }
  if (exponent == 0) return sign * std::ldexp(static_cast<double>(mantissa), -133);
  return sign * std::ldexp(static_cast<double>(128 + mantissa), exponent - 134);
}

/// A small valid file with metadata and tensors of three dtypes.
bytes_t small_file() {
  safetensors_writer w;
  w.set_metadata("format", "pt");
  const std::vector<float> a = {1.0f, -2.0f, 3.5f, 0.25f, 8.0f, -0.0f};
  const std::vector<std::int32_t> b = {7, -9, 11};
  const std::vector<std::uint8_t> c = {1, 2, 3, 4, 5};
  w.add("a", {2, 3}, a.data());
  w.add("b", {3}, b.data());
  w.add("c", {5, 1}, c.data());
  return w.to_bytes();
}

}  // namespace

TEST_CASE("dtype names, sizes and parsing", "[io][safetensors]") {
  const std::vector<std::pair<dtype, std::string>> expected = {
      {dtype::f64, "F64"}, {dtype::f32, "F32"},     {dtype::f16, "F16"}, {dtype::bf16, "BF16"},
      {dtype::i64, "I64"}, {dtype::i32, "I32"},     {dtype::i16, "I16"}, {dtype::i8, "I8"},
      {dtype::u8, "U8"},   {dtype::boolean, "BOOL"}};
  const std::vector<std::size_t> sizes = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1};

  SECTION("every dtype round-trips through its name") {
    for (std::size_t i = 0; i < expected.size(); ++i) {
      CHECK(surgeon::io::dtype_name(expected[i].first) == expected[i].second);
      CHECK(surgeon::io::parse_dtype(expected[i].second) == expected[i].first);
      CHECK(surgeon::io::dtype_size(expected[i].first) == sizes[i]);
    }
  }
  SECTION("unknown names are rejected and named") {
    CHECK_THAT(io_error_message([] { surgeon::io::parse_dtype("F8_E4M3"); }), Contains("F8_E4M3"));
    CHECK_THROWS_AS(surgeon::io::parse_dtype("f32"), surgeon::io_error);  // case-sensitive
    CHECK_THROWS_AS(surgeon::io::parse_dtype(""), surgeon::io_error);
  }
  SECTION("dtype_of maps the C++ types") {
    STATIC_REQUIRE(surgeon::io::dtype_of<float>() == dtype::f32);
    STATIC_REQUIRE(surgeon::io::dtype_of<double>() == dtype::f64);
    STATIC_REQUIRE(surgeon::io::dtype_of<std::int32_t>() == dtype::i32);
    STATIC_REQUIRE(surgeon::io::dtype_of<std::int64_t>() == dtype::i64);
    STATIC_REQUIRE(surgeon::io::dtype_of<std::uint8_t>() == dtype::u8);
  }
}

TEST_CASE("safetensors files round-trip through the writer and the reader", "[io][safetensors]") {
  temp_dir dir;
  const std::vector<float> f32 = {1.0f, -2.5f, 3.25f, 1e-30f, std::numeric_limits<float>::max(), -0.0f};
  const std::vector<double> f64 = {0.1, -1e300, 4.9e-324, 2.0};
  const std::vector<std::int32_t> i32 = {std::numeric_limits<std::int32_t>::min(), -1, 0, 1, 2,
                                         std::numeric_limits<std::int32_t>::max()};
  const std::vector<std::int64_t> i64 = {std::numeric_limits<std::int64_t>::min()};
  const std::vector<std::uint8_t> u8 = {0, 1, 127, 128, 255};
  const std::vector<std::int16_t> i16 = {-32768, 0, 32767};
  const std::vector<std::int8_t> i8 = {-128, -1, 0, 127};
  const std::vector<std::uint8_t> flags = {1, 0, 1};
  const std::vector<std::uint16_t> half = {0x3C00, 0xC000};   // 1, -2
  const std::vector<std::uint16_t> brain = {0x3F80, 0x4040};  // 1, 3

  safetensors_writer w;
  w.set_metadata("format", "pt");
  w.set_metadata("note", "quote \" backslash \\ newline \n tab \t unicode \xC3\xA9\xE2\x82\xAC");
  w.add("model.w", {2, 3}, f32.data());
  w.add("u8", {5}, u8.data());
  w.add("model.bias", {4}, f64.data());
  w.add("i32", {3, 1, 2}, i32.data());
  w.add("scalar", {}, i64.data());
  w.add("i16", dtype::i16, {3}, i16.data(), i16.size() * 2);
  w.add("i8", dtype::i8, {2, 2}, i8.data(), i8.size());
  w.add("flags", dtype::boolean, {3}, flags.data(), flags.size());
  w.add("half", dtype::f16, {2}, half.data(), half.size() * 2);
  w.add("brain", dtype::bf16, {1, 2}, brain.data(), brain.size() * 2);
  w.add("empty", dtype::f32, {0, 4}, nullptr, 0);
  w.add("name with \"quotes\" and \xCE\xBB", {1}, f32.data());
  REQUIRE(w.size() == 12);

  const std::string path = dir.file("model.safetensors");
  w.write(path);

  SECTION("values, shapes, dtypes and metadata come back unchanged") {
    const auto r = safetensors_reader::open(path);
    CHECK(r.source() == path);
    CHECK(r.metadata().size() == 2);
    CHECK(r.metadata().at("format") == "pt");
    CHECK(r.metadata().at("note") == "quote \" backslash \\ newline \n tab \t unicode \xC3\xA9\xE2\x82\xAC");
    REQUIRE(r.tensors().size() == 12);

    CHECK(r.info("model.w").type == dtype::f32);
    CHECK(r.info("model.w").shape == std::vector<index_t>{2, 3});
    CHECK(r.info("model.w").elements() == 6);
    CHECK(r.info("model.w").bytes == 24);
    CHECK(r.read<float>("model.w") == f32);
    CHECK(r.read<double>("model.bias") == f64);
    CHECK(r.read<std::int32_t>("i32") == i32);
    CHECK(r.info("i32").shape == std::vector<index_t>{3, 1, 2});
    CHECK(r.info("scalar").shape.empty());
    CHECK(r.info("scalar").elements() == 1);
    CHECK(r.read<std::int64_t>("scalar") == i64);
    CHECK(r.read<std::uint8_t>("u8") == u8);
    CHECK(r.read<float>("name with \"quotes\" and \xCE\xBB") == std::vector<float>{1.0f});
    CHECK(r.read<float>("half") == std::vector<float>{1.0f, -2.0f});
    CHECK(r.read<double>("brain") == std::vector<double>{1.0, 3.0});
    CHECK(r.info("empty").elements() == 0);
    CHECK(r.info("empty").bytes == 0);
    CHECK(r.read<float>("empty").empty());

    const auto& i16_info = r.info("i16");
    CHECK(i16_info.type == dtype::i16);
    CHECK(std::memcmp(r.data(i16_info), i16.data(), 6) == 0);
    CHECK(std::memcmp(r.data(r.info("i8")), i8.data(), 4) == 0);
    CHECK(r.info("flags").type == dtype::boolean);
    CHECK(std::memcmp(r.data(r.info("flags")), flags.data(), 3) == 0);
  }
  SECTION("the layout is aligned, sorted and non-overlapping") {
    const bytes_t file = read_file(path);
    std::uint64_t header_length = 0;
    for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | file[static_cast<std::size_t>(i)];
    CHECK((8 + header_length) % 8 == 0);
    // The padding is spaces after the closing brace.
    const std::string header(file.begin() + 8, file.begin() + 8 + static_cast<std::ptrdiff_t>(header_length));
    const auto close = header.find_last_of('}');
    CHECK(header.find_first_not_of(' ', close + 1) == std::string::npos);

    const auto r = safetensors_reader::from_bytes(file);
    std::uint64_t end = 0;
    for (const auto& t : r.tensors()) {
      CHECK(t.offset % surgeon::io::dtype_size(t.type) == 0);
      CHECK(t.offset >= end);
      end = t.offset + t.bytes;
    }
    CHECK(end == r.data_size());  // densely packed, nothing after the last tensor
    CHECK(std::is_sorted(r.tensors().begin(), r.tensors().end(),
                         [](const auto& a, const auto& b) { return a.offset < b.offset; }));
  }
  SECTION("to_bytes is the file, and no temporary file is left behind") {
    CHECK(read_file(path) == w.to_bytes());
    CHECK(dir.entries() == 1);
  }
  SECTION("writing again replaces the file") {
    safetensors_writer other;
    const std::vector<double> x = {42.0};
    other.add("x", {1}, x.data());
    other.write(path);
    const auto r = safetensors_reader::open(path);
    CHECK(r.tensors().size() == 1);
    CHECK(r.read<double>("x") == x);
    CHECK(r.metadata().empty());
    CHECK(dir.entries() == 1);
  }
  SECTION("a writer with no tensors writes a valid empty file") {
    const std::string empty_path = dir.file("empty.safetensors");
    safetensors_writer().write(empty_path);
    const auto r = safetensors_reader::open(empty_path);
    CHECK(r.tensors().empty());
    CHECK(r.metadata().empty());
    CHECK(r.data_size() == 0);
    CHECK(read_file(empty_path).size() == 16);
  }
}

TEST_CASE("F16 and BF16 convert exactly to float", "[io][safetensors]") {
  using surgeon::io::bf16_to_float;
  using surgeon::io::f16_to_float;
  SECTION("F16 known bit patterns") {
    CHECK(f16_to_float(0x3C00) == 1.0f);
    CHECK(f16_to_float(0xC000) == -2.0f);
    CHECK(f16_to_float(0x7BFF) == 65504.0f);
    CHECK(f16_to_float(0x0001) == std::ldexp(1.0f, -24));     // smallest subnormal
    CHECK(f16_to_float(0x03FF) == std::ldexp(1023.0f, -24));  // largest subnormal
    CHECK(f16_to_float(0x0400) == std::ldexp(1.0f, -14));     // smallest normal
    CHECK(f16_to_float(0x3555) == std::ldexp(1365.0f, -12));  // ~1/3
    CHECK(float_bits(f16_to_float(0x0000)) == 0x00000000U);
    CHECK(float_bits(f16_to_float(0x8000)) == 0x80000000U);  // -0 keeps its sign
    CHECK(f16_to_float(0x7C00) == std::numeric_limits<float>::infinity());
    CHECK(f16_to_float(0xFC00) == -std::numeric_limits<float>::infinity());
    CHECK(std::isnan(f16_to_float(0x7E00)));
    CHECK(std::isnan(f16_to_float(0x7C01)));  // signalling pattern still NaN
    CHECK(std::isnan(f16_to_float(0xFE00)));
  }
  SECTION("F16 every bit pattern matches an independent oracle") {
    for (std::uint32_t b = 0; b <= 0xFFFF; ++b) {
      const auto bits = static_cast<std::uint16_t>(b);
      const float got = f16_to_float(bits);
      const double want = f16_oracle(bits);
      if (std::isnan(want)) {
        REQUIRE(std::isnan(got));
      } else {
        REQUIRE(static_cast<double>(got) == want);
        REQUIRE(std::signbit(got) == ((bits & 0x8000) != 0));
      }
    }
  }
  SECTION("BF16 known bit patterns") {
    CHECK(bf16_to_float(0x3F80) == 1.0f);
    CHECK(bf16_to_float(0xC000) == -2.0f);
    CHECK(bf16_to_float(0x477F) == 65280.0f);                           // 65504 itself is not a BF16 value
    CHECK(bf16_to_float(0x7F7F) == std::ldexp(255.0f, 120));            // largest finite
    CHECK(bf16_to_float(0x0001) == std::ldexp(1.0f, -133));             // smallest subnormal
    CHECK(bf16_to_float(0x0080) == std::numeric_limits<float>::min());  // smallest normal
    CHECK(float_bits(bf16_to_float(0x8000)) == 0x80000000U);
    CHECK(bf16_to_float(0x7F80) == std::numeric_limits<float>::infinity());
    CHECK(bf16_to_float(0xFF80) == -std::numeric_limits<float>::infinity());
    CHECK(std::isnan(bf16_to_float(0x7FC0)));
    CHECK(std::isnan(bf16_to_float(0x7F81)));
  }
  SECTION("BF16 every bit pattern matches an independent oracle") {
    for (std::uint32_t b = 0; b <= 0xFFFF; ++b) {
      const auto bits = static_cast<std::uint16_t>(b);
      const float got = bf16_to_float(bits);
      const double want = bf16_oracle(bits);
      if (std::isnan(want)) {
        REQUIRE(std::isnan(got));
      } else {
        REQUIRE(static_cast<double>(got) == want);
      }
    }
  }
  SECTION("reading F16 and BF16 tensors as float and double") {
    const std::vector<std::uint16_t> half = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x7E00};
    const std::vector<std::uint16_t> brain = {0x3F80, 0xC000, 0x477F, 0x0001, 0x7F80, 0x7FC0};
    safetensors_writer w;
    w.add("h", dtype::f16, {2, 3}, half.data(), 12);
    w.add("b", dtype::bf16, {6}, brain.data(), 12);
    const auto r = safetensors_reader::from_bytes(w.to_bytes());
    for (const auto& values : {r.read<float>("h"), r.read<float>("b")}) {
      REQUIRE(values.size() == 6);
      CHECK(values[0] == 1.0f);
      CHECK(values[1] == -2.0f);
      CHECK(values[4] == std::numeric_limits<float>::infinity());
      CHECK(std::isnan(values[5]));
    }
    const auto hd = r.read<double>("h");
    CHECK(hd[2] == 65504.0);
    CHECK(hd[3] == std::ldexp(1.0, -24));
    CHECK(std::isnan(hd[5]));
    const auto bd = r.read<double>("b");
    CHECK(bd[2] == 65280.0);
    CHECK(bd[3] == std::ldexp(1.0, -133));
  }
  SECTION("F64 read as float rounds to nearest and saturates to infinity") {
    const double above_max = static_cast<double>(std::numeric_limits<float>::max()) * (1 + 1e-9);
    const std::vector<double> values = {0.1, 1e300, -1e300, above_max, 1e-50, std::nan("")};
    safetensors_writer w;
    w.add("d", {6}, values.data());
    const auto r = safetensors_reader::from_bytes(w.to_bytes());
    const auto f = r.read<float>("d");
    CHECK(f[0] == 0.1f);
    CHECK(f[1] == std::numeric_limits<float>::infinity());
    CHECK(f[2] == -std::numeric_limits<float>::infinity());
    CHECK(f[3] == std::numeric_limits<float>::max());
    CHECK(f[4] == 0.0f);
    CHECK(std::isnan(f[5]));
  }
}

TEST_CASE("truncated safetensors files are rejected at every cut", "[io][safetensors]") {
  const bytes_t file = small_file();
  REQUIRE_NOTHROW(safetensors_reader::from_bytes(file));
  REQUIRE(file.size() > 100);

  SECTION("in memory") {
    for (std::size_t cut = 0; cut < file.size(); ++cut) {
      INFO("cut at byte " << cut << " of " << file.size());
      const bytes_t prefix(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(cut));
      CHECK_THROWS_AS(safetensors_reader::from_bytes(prefix), surgeon::io_error);
    }
  }
  SECTION("on disk, with the path in the message") {
    temp_dir dir;
    const std::string path = dir.file("cut.safetensors");
    for (std::size_t cut = 0; cut < file.size(); ++cut) {
      INFO("cut at byte " << cut << " of " << file.size());
      write_file(path, bytes_t(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(cut)));
      CHECK_THAT(io_error_message([&] { safetensors_reader::open(path); }), Contains(path));
    }
  }
  SECTION("short files say so") {
    CHECK_THAT(io_error_message([] { safetensors_reader::from_bytes(bytes_t(7, 0)); }),
               Contains("too short"));
    CHECK_THROWS_AS(safetensors_reader::from_bytes({}), surgeon::io_error);
  }
}

TEST_CASE("files that cannot be opened are reported", "[io][safetensors]") {
  temp_dir dir;
  SECTION("missing file") {
    const std::string path = dir.file("absent.safetensors");
    CHECK_THAT(io_error_message([&] { safetensors_reader::open(path); }), Contains(path));
  }
  SECTION("a directory") {
    CHECK_THAT(io_error_message([&] { safetensors_reader::open(dir.path().string()); }),
               Contains("not a regular file"));
  }
}

TEST_CASE("the header length field is validated", "[io][safetensors]") {
  SECTION("longer than the file") {
    CHECK_THAT(io_error_message([] { safetensors_reader::from_bytes(with_length(3, "{}")); }),
               Contains("exceeds the 2 bytes"));
  }
  SECTION("above the 100 MB cap, checked before anything is allocated") {
    CHECK_THAT(io_error_message([] { safetensors_reader::from_bytes(with_length(100'000'001, "{}")); }),
               Contains("limit of 100000000"));
    CHECK_THROWS_AS(safetensors_reader::from_bytes(with_length(~std::uint64_t{0}, "{}")), surgeon::io_error);
    CHECK_THROWS_AS(safetensors_reader::from_bytes(with_length(std::uint64_t{1} << 63, "{}")),
                    surgeon::io_error);
  }
  SECTION("zero-length header is not JSON") {
    CHECK_THROWS_AS(safetensors_reader::from_bytes(with_length(0, "")), surgeon::io_error);
  }
  SECTION("the exact length with trailing padding is accepted") {
    CHECK(safetensors_reader::from_bytes(make_file("{}      ", 0)).tensors().empty());
  }
}

TEST_CASE("malformed safetensors headers are rejected with a reason", "[io][safetensors]") {
  const std::string f32x2 = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  REQUIRE(safetensors_reader::from_bytes(make_file(f32x2, 8)).info("t").bytes == 8);

  SECTION("not JSON") {
    CHECK_THAT(reader_error("not json", 0), Contains("safetensors header"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32")", 0), Contains("end of input"));
    CHECK_THAT(reader_error("{} x", 0), Contains("expected end of input"));
    CHECK_THROWS_AS(safetensors_reader::from_bytes(make_file(std::string("{}\0\0\0\0\0\0", 8), 0)),
                    surgeon::io_error);
    CHECK_THROWS_AS(safetensors_reader::from_bytes(make_file("{\"\xFF\":1}", 0)), surgeon::io_error);
  }
  SECTION("not an object") {
    CHECK_THAT(reader_error("[]", 0), Contains("not an object"));
    CHECK_THAT(reader_error("42", 0), Contains("not an object"));
    CHECK_THAT(reader_error(R"({"t":[1,2]})", 0), Contains("'t': entry is a JSON array"));
  }
  SECTION("metadata must be an object of strings") {
    CHECK_THAT(reader_error(R"({"__metadata__":["a"]})", 0), Contains("__metadata__"));
    CHECK_THAT(reader_error(R"({"__metadata__":{"epoch":3}})", 0), Contains("'epoch'"));
    const auto r = safetensors_reader::from_bytes(make_file(R"({"__metadata__":{"a":"1","b":""}})", 0));
    CHECK(r.metadata() == std::map<std::string, std::string>{{"a", "1"}, {"b", ""}});
  }
  SECTION("wrong or missing dtype") {
    CHECK_THAT(reader_error(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", 8), Contains("missing \"dtype\""));
    CHECK_THAT(reader_error(R"({"t":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
               Contains("not a string"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2),
               Contains("unknown dtype 'F8_E4M3'"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8),
               Contains("unknown dtype 'f32'"));
  }
  SECTION("bad shapes") {
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", 8),
               Contains("missing \"shape\""));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
               Contains("not an array"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
               Contains("non-negative"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8),
               Contains("non-negative integers"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8),
               Contains("non-negative integers"));
    CHECK_THAT(
        reader_error(R"({"t":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
        Contains("overflows"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
               Contains("overflows 64 bits"));
  }
  SECTION("bad data_offsets") {
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[2]}})", 8), Contains("missing \"data_offsets\""));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", 8),
               Contains("[begin, end]"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", 8),
               Contains("[begin, end]"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8),
               Contains("non-negative"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}})", 8),
               Contains("non-negative"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8),
               Contains("end before they begin"));
  }
  SECTION("shape and offsets disagree") {
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 16), Contains("12"));
    CHECK_THAT(reader_error(R"({"t":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", 16),
               Contains("need 16"));
  }
  SECTION("offsets past the end of the data") {
    CHECK_THAT(reader_error(f32x2, 7), Contains("run past the 7-byte data section"));
    CHECK_THAT(
        reader_error(
            R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[9223372036854775800,9223372036854775807]}})",
            8),
        Contains("run past"));
  }
  SECTION("overlapping tensors") {
    CHECK_THAT(reader_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            12),
               Contains("'a'") && Contains("'b'") && Contains("overlap"));
    CHECK_THAT(reader_error(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})",
                            8),
               Contains("overlap"));
    // a long tensor covering a later, shorter one
    CHECK_THAT(reader_error(R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                            R"("b":{"dtype":"U8","shape":[2],"data_offsets":[8,10]},)"
                            R"("c":{"dtype":"U8","shape":[2],"data_offsets":[12,14]}})",
                            16),
               Contains("overlap"));
  }
  SECTION("gaps and empty tensors are not overlaps") {
    const auto r =
        safetensors_reader::from_bytes(make_file(R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]},)"
                                                 R"("z":{"dtype":"F32","shape":[0,3],"data_offsets":[2,2]},)"
                                                 R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
                                                 16));
    REQUIRE(r.tensors().size() == 3);
    CHECK(r.tensors()[0].name == "a");
    CHECK(r.tensors()[1].name == "z");
    CHECK(r.tensors()[2].name == "b");
  }
  SECTION("duplicate tensor names") {
    CHECK_THAT(reader_error(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                            R"("t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                            2),
               Contains("duplicate"));
  }
  SECTION("deep nesting and huge headers are refused without crashing") {
    CHECK_THAT(reader_error("{\"t\":" + std::string(100000, '[') + std::string(100000, ']') + "}", 0),
               Contains("nesting"));
  }
}

TEST_CASE("random corruption never crashes the reader", "[io][safetensors]") {
  const bytes_t file = small_file();
  std::mt19937 rng(12345);
  int rejected = 0;
  int accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    bytes_t mutated = file;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Favour the length field and the header, where the structure lives.
      const std::size_t limit =
          (rng() % 4 == 0) ? mutated.size() : std::min<std::size_t>(mutated.size(), 8 + 200);
      const std::size_t pos = rng() % limit;
      mutated[pos] = static_cast<std::uint8_t>(rng());
    }
    try {
      const auto r = safetensors_reader::from_bytes(std::move(mutated));
      unsigned sum = 0;
      for (const auto& t : r.tensors()) {
        const std::uint8_t* p = r.data(t);
        for (std::uint64_t i = 0; i < t.bytes; ++i) sum += p[i];
      }
      (void)sum;
      ++accepted;
    } catch (const surgeon::io_error&) {
      ++rejected;
    }
  }
  CHECK(rejected > 0);
  CHECK(accepted > 0);  // flips in the data section keep the file valid
  CHECK(accepted + rejected == 3000);
}

TEST_CASE("tensor lookup by name", "[io][safetensors]") {
  const auto r = safetensors_reader::from_bytes(small_file(), "small.safetensors");
  SECTION("present and missing names") {
    CHECK(r.contains("a"));
    CHECK(r.contains("c"));
    CHECK_FALSE(r.contains("d"));
    CHECK_FALSE(r.contains(""));
    CHECK(r.info("b").type == dtype::i32);
    CHECK(r.info("b").shape == std::vector<index_t>{3});
    const std::string message = io_error_message([&] { r.info("decoder.missing"); });
    CHECK_THAT(message, Contains("decoder.missing") && Contains("small.safetensors"));
    CHECK_THROWS_AS(r.read<float>("nope"), surgeon::io_error);
  }
  SECTION("data() refuses an info that does not belong to the file") {
    surgeon::io::tensor_info foreign = r.info("a");
    foreign.offset = r.data_size();
    CHECK_THROWS_AS(r.data(foreign), surgeon::logic_error);
  }
  SECTION("tensors are listed by offset") {
    std::vector<std::string> names;
    for (const auto& t : r.tensors()) names.push_back(t.name);
    CHECK(names == std::vector<std::string>{"a", "b", "c"});  // F32 and I32 first, then U8
  }
}

TEST_CASE("typed reads require a compatible dtype", "[io][safetensors]") {
  const std::vector<std::int32_t> i32 = {1, 2};
  const std::vector<std::int64_t> i64 = {3};
  const std::vector<std::uint8_t> u8 = {4};
  const std::vector<float> f32 = {0.5f, 1.5f};
  const std::vector<double> f64 = {2.25};
  const std::vector<std::int16_t> i16 = {5};
  safetensors_writer w;
  w.add("i32", {2}, i32.data());
  w.add("i64", {1}, i64.data());
  w.add("u8", {1}, u8.data());
  w.add("f32", {2}, f32.data());
  w.add("f64", {1}, f64.data());
  w.add("i16", dtype::i16, {1}, i16.data(), 2);
  w.add("bool", dtype::boolean, {1}, u8.data(), 1);
  const auto r = safetensors_reader::from_bytes(w.to_bytes());

  SECTION("mismatches name both dtypes") {
    CHECK_THAT(io_error_message([&] { r.read<std::int64_t>("i32"); }), Contains("I32") && Contains("I64"));
    CHECK_THAT(io_error_message([&] { r.read<std::int32_t>("i64"); }), Contains("I64") && Contains("I32"));
    CHECK_THAT(io_error_message([&] { r.read<float>("i32"); }), Contains("I32") && Contains("F32"));
    CHECK_THAT(io_error_message([&] { r.read<std::int32_t>("f32"); }), Contains("F32") && Contains("I32"));
    CHECK_THAT(io_error_message([&] { r.read<std::uint8_t>("bool"); }), Contains("BOOL") && Contains("U8"));
    CHECK_THAT(io_error_message([&] { r.read<double>("u8"); }), Contains("U8") && Contains("F64"));
    CHECK_THAT(io_error_message([&] { r.read<std::int32_t>("i16"); }), Contains("I16"));
  }
  SECTION("exact and floating conversions") {
    CHECK(r.read<std::int32_t>("i32") == i32);
    CHECK(r.read<std::int64_t>("i64") == i64);
    CHECK(r.read<std::uint8_t>("u8") == u8);
    CHECK(r.read<double>("f32") == std::vector<double>{0.5, 1.5});
    CHECK(r.read<float>("f64") == std::vector<float>{2.25f});
  }
}

TEST_CASE("writer preconditions and I/O failures", "[io][safetensors]") {
  safetensors_writer w;
  const std::vector<float> x = {1, 2, 3, 4};
  w.add("x", {2, 2}, x.data());
  SECTION("broken preconditions are logic errors") {
    CHECK_THROWS_AS(w.add("x", {4}, x.data()), surgeon::logic_error);                  // duplicate
    CHECK_THROWS_AS(w.add("y", dtype::f32, {4}, x.data(), 12), surgeon::logic_error);  // bytes mismatch
    CHECK_THROWS_AS(w.add("y", dtype::f16, {4}, x.data(), 16), surgeon::logic_error);  // bytes mismatch
    CHECK_THROWS_AS(w.add("__metadata__", {4}, x.data()), surgeon::logic_error);       // reserved
    CHECK_THROWS_AS(w.add("y", {-4}, x.data()), surgeon::logic_error);                 // negative
    CHECK_THROWS_AS(w.add("y", dtype::f32, {1}, nullptr, 4), surgeon::logic_error);    // null data
    CHECK_THROWS_AS(w.add("\xFF", {1}, x.data()), surgeon::logic_error);               // not UTF-8
    CHECK_THROWS_AS(w.set_metadata("k", "\xC3"), surgeon::logic_error);                // not UTF-8
    CHECK_THROWS_AS(w.add("y", {std::numeric_limits<index_t>::max(), 2}, x.data()), surgeon::logic_error);
    CHECK(w.size() == 1);
  }
  SECTION("the data is copied at add()") {
    std::vector<float> y = {5, 6};
    w.add("y", {2}, y.data());
    y[0] = -1;
    CHECK(safetensors_reader::from_bytes(w.to_bytes()).read<float>("y") == std::vector<float>{5, 6});
  }
  SECTION("set_metadata replaces earlier values") {
    w.set_metadata("k", "1");
    w.set_metadata("k", "2");
    CHECK(safetensors_reader::from_bytes(w.to_bytes()).metadata().at("k") == "2");
  }
  SECTION("writing into a missing directory is an io_error and leaves nothing behind") {
    temp_dir dir;
    const std::string path = dir.file("no/such/dir/out.safetensors");
    CHECK_THAT(io_error_message([&] { w.write(path); }), Contains(path));
    CHECK(dir.entries() == 0);
  }
  SECTION("a failed rename removes the temporary file and keeps the target") {
    temp_dir dir;
    const std::string path = dir.file("target");
    fs::create_directory(path);
    fs::create_directory(path + "/occupied");  // a non-empty directory cannot be replaced by a file
    CHECK_THAT(io_error_message([&] { w.write(path); }), Contains("rename"));
    CHECK(dir.entries() == 1);
    CHECK(fs::is_directory(path));
  }
}

TEST_CASE("safetensors headers are read as strict JSON", "[io][safetensors][json]") {
  SECTION("whitespace, escapes, UTF-8 and ignored keys of any kind are accepted") {
    const std::string header =
        " { \"__metadata__\" : { \"k\\u00e9\" : \"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"e\" : \"\\uD83D\\uDE00 "
        "\xC3\xA9\" } ,"
        "\t\"t\\u0041\" : {\"dtype\":\"U8\", \"shape\":[2], \"data_offsets\":[0,2],\r\n"
        "  \"x\": [1, -2.5e-3, \"s\", null, true, false, [], {}]},"
        " \"z\":{\"dtype\":\"F32\",\"shape\":[-0],\"data_offsets\":[2,2]} }  ";
    const auto r = safetensors_reader::from_bytes(make_file(header, 2));
    CHECK(r.metadata() == std::map<std::string, std::string>{{"k\xC3\xA9", "\"\\/\b\f\n\r\t"},
                                                             {"e", "\xF0\x9F\x98\x80 \xC3\xA9"}});
    REQUIRE(r.contains("tA"));
    CHECK(r.info("tA").bytes == 2);
    CHECK(r.info("z").elements() == 0);
  }
  SECTION("syntax errors name the file and say invalid JSON") {
    const std::vector<std::string> bad = {"",
                                          "   ",
                                          "nul",
                                          "{\"a\":tru}",
                                          "{\"a\":[1,]}",
                                          "{\"a\":1,}",
                                          "[1 2]",
                                          "{\"a\" 1}",
                                          "{1:2}",
                                          "{\"a\":}",
                                          "{",
                                          "}",
                                          "\"abc",
                                          "{'a':1}",
                                          "{} {}",
                                          "/* c */ {}",
                                          "{\"a\":NaN}",
                                          "{\"a\":Infinity}",
                                          "{\"a\":-}",
                                          "{\"a\":+1}",
                                          "{\"a\":01}",
                                          "{\"a\":-01}",
                                          "{\"a\":1.}",
                                          "{\"a\":.5}",
                                          "{\"a\":1e}",
                                          "{\"a\":1e+}",
                                          "{\"a\":0x10}",
                                          "{\"a\":truex}",
                                          "{,}",
                                          "{\"a\"}",
                                          "{\"a\":\"\\x\"}",
                                          "{\"a\":\"\\u12\"}",
                                          "{\"a\":\"\\u12G4\"}"};
    for (const auto& text : bad) {
      INFO("header: " << text);
      CHECK_THAT(header_error(text), Contains("invalid JSON"));
    }
  }
  SECTION("syntax errors carry the byte offset") {
    CHECK_THAT(header_error("{\"a\": x}"), Contains("at byte 6"));
    CHECK_THAT(header_error("{}  }"), Contains("at byte 4"));
  }
  SECTION("strings: control characters, bad UTF-8, lone surrogates") {
    const auto meta = [](const std::string& value) { return "{\"__metadata__\":{\"k\":\"" + value + "\"}}"; };
    CHECK_THAT(header_error(meta("a\nb")), Contains("control character"));
    CHECK_THAT(header_error(meta("a\tb")), Contains("control character"));
    for (const char* bad :
         {"\xC3", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xFF", "\x80"}) {
      CHECK_THAT(header_error(meta(bad)), Contains("UTF-8"));
    }
    CHECK_THAT(header_error(meta("\\ud800")), Contains("surrogate"));
    CHECK_THAT(header_error(meta("\\udc00")), Contains("surrogate"));
    CHECK_THAT(header_error(meta("\\ud800\\u0041")), Contains("surrogate"));
    CHECK_THAT(header_error(meta("\\ud800x")), Contains("surrogate"));
  }
  SECTION("numbers beyond double are refused; integers beyond int64 are not sizes") {
    CHECK_THAT(header_error(with_extra("1e400")), Contains("invalid JSON") && Contains("1e400"));
    CHECK_THAT(header_error(with_extra("[-1.5e309]")), Contains("invalid JSON"));
    CHECK_THAT(header_error(R"({"t":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,0]}})"),
               Contains("non-negative integers"));
    CHECK_THAT(header_error(R"({"t":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,0]}})"),
               Contains("non-negative integers"));
    CHECK_THAT(
        header_error(
            R"({"t":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}})"),
        Contains("run past"));
    CHECK(safetensors_reader::from_bytes(make_file(with_extra("[1e308, -1e-400, 18446744073709551616]"), 0))
              .contains("t"));
  }
  SECTION("a NUL byte anywhere is refused, not taken for the end of the header") {
    CHECK_THAT(header_error(std::string("{}\0\0\0\0\0\0", 8)), Contains("NUL") && Contains("at byte 2"));
    CHECK_THAT(header_error(std::string("{\"a\0\":1}", 8)), Contains("NUL"));
  }
}

TEST_CASE("safetensors header limits: nesting, value count, duplicate keys", "[io][safetensors][json]") {
  constexpr int depth = safetensors_reader::max_header_depth;
  SECTION("nesting up to max_header_depth is accepted, one level deeper is refused") {
    // The header object is depth 1 and the tensor entry depth 2, so depth - 2 arrays fit.
    const auto arrays = [](int n) {
      return std::string(static_cast<std::size_t>(n), '[') + std::string(static_cast<std::size_t>(n), ']');
    };
    CHECK(safetensors_reader::from_bytes(make_file(with_extra(arrays(depth - 2)), 0)).contains("t"));
    CHECK_THAT(header_error(with_extra(arrays(depth - 1))), Contains("nesting deeper than 64"));
    const auto objects = [](int n) {
      std::string text;
      for (int i = 0; i < n; ++i) text += "{\"a\":";
      return text + "1" + std::string(static_cast<std::size_t>(n), '}');
    };
    CHECK(safetensors_reader::from_bytes(make_file(with_extra(objects(depth - 2)), 0)).contains("t"));
    CHECK_THAT(header_error(with_extra(objects(depth - 1))), Contains("nesting deeper than 64"));
  }
  SECTION("a million open brackets are refused at the limit, not recursed into") {
    CHECK_THAT(header_error(std::string(1000000, '[')), Contains("nesting deeper than 64"));
  }
  SECTION("the value count is capped at max_header_values") {
    constexpr std::size_t cap = safetensors_reader::max_header_values;
    // with_extra's own values: the header, the entry, dtype, shape and its 0, data_offsets and
    // its two 0s, and the array "x": 9, so "x" may hold cap - 9 more.
    const auto zeros = [](std::size_t n) {
      std::string text = "[";
      for (std::size_t i = 0; i < n; ++i) text += i == 0 ? "0" : ",0";
      return text + "]";
    };
    CHECK(safetensors_reader::from_bytes(make_file(with_extra(zeros(cap - 9)), 0)).contains("t"));
    CHECK_THAT(header_error(with_extra(zeros(cap - 8))), Contains("more than 1048576 values"));
  }
  SECTION("a key repeated in any object is refused") {
    CHECK_THAT(header_error(R"({"t":{"dtype":"U8","shape":[0],"dtype":"F32","data_offsets":[0,0]}})"),
               Contains("duplicate key 'dtype'"));
    CHECK_THAT(header_error(R"({"__metadata__":{"k":"1","k":"2"}})"), Contains("duplicate key 'k'"));
    CHECK_THAT(header_error(R"({"__metadata__":{},"__metadata__":{}})"), Contains("duplicate key"));
    CHECK_THAT(header_error(with_extra(R"([{"a":1},{"a":1,"b":{"a":1,"a":2}}])")),
               Contains("duplicate key 'a'"));
    // the same key in different objects is not a duplicate
    CHECK(
        safetensors_reader::from_bytes(make_file(with_extra(R"([{"a":1},{"a":{"a":1}}])"), 0)).contains("t"));
  }
}

TEST_CASE("the writer's header is compact JSON that reads back exactly", "[io][safetensors][json]") {
  SECTION("the header is the reference layout, space-padded to 8 bytes") {
    const std::vector<float> x = {1, 2, 3, 4, 5, 6};
    const std::vector<std::uint8_t> b = {7};
    safetensors_writer w;
    w.set_metadata("format", "pt");
    w.add("b", {1}, b.data());
    w.add("x", {2, 3}, x.data());
    const bytes_t file = w.to_bytes();
    const std::string expected = R"({"__metadata__":{"format":"pt"},)"
                                 R"("x":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                                 R"("b":{"dtype":"U8","shape":[1],"data_offsets":[24,25]}})";
    const std::string padding((8 - expected.size() % 8) % 8, ' ');
    REQUIRE(file.size() == 8 + expected.size() + padding.size() + 25);
    CHECK(std::string(file.begin() + 8, file.begin() + 8 + static_cast<std::ptrdiff_t>(expected.size())) ==
          expected);
    CHECK(static_cast<std::size_t>(file[0]) == expected.size() + padding.size());
    CHECK(std::all_of(file.begin() + 1, file.begin() + 8, [](std::uint8_t byte) { return byte == 0; }));
  }
  SECTION("quotes, backslashes, control characters and UTF-8 are escaped and round-trip") {
    std::string all_controls;
    for (int c = 0; c < 0x20; ++c) all_controls.push_back(static_cast<char>(c));
    const std::string tricky = "a\"b\\c/\x7f \xC3\xA9 \xF0\x9F\x98\x80" + all_controls;
    const std::vector<float> x = {1};
    safetensors_writer w;
    w.set_metadata(tricky, tricky);
    w.add(tricky, {1}, x.data());
    const bytes_t file = w.to_bytes();
    const std::string header(file.begin() + 8, file.end() - 4);
    CHECK(std::none_of(header.begin(), header.end(),
                       [](char c) { return static_cast<unsigned char>(c) < 0x20; }));
    CHECK_THAT(header, Contains(R"(a\"b\\c/)") && Contains(R"(\u0001)") && Contains(R"(\n)"));
    const auto r = safetensors_reader::from_bytes(file);
    CHECK(r.metadata().at(tricky) == tricky);
    CHECK(r.read<float>(tricky) == x);
  }
  SECTION("names and metadata that are not valid UTF-8 are refused before anything is written") {
    const std::vector<float> x = {1};
    safetensors_writer w;
    for (const char* bad : {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "a\x80"}) {
      CHECK_THROWS_AS(w.add(bad, {1}, x.data()), surgeon::logic_error);
      CHECK_THROWS_AS(w.set_metadata("k", bad), surgeon::logic_error);
      CHECK_THROWS_AS(w.set_metadata(bad, "v"), surgeon::logic_error);
    }
    CHECK(w.size() == 0);
    CHECK(safetensors_reader::from_bytes(w.to_bytes()).metadata().empty());
  }
}
