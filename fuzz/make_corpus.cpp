// Writes the seed corpora of scripts/fuzz.sh with surgeon's own writers, so no binary files are
// checked in: make_corpus DIR creates DIR/gguf/ and DIR/safetensors/ with a few tiny files.
#include <surgeon/io/gguf.hpp>
#include <surgeon/io/safetensors.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

using surgeon::io::ggml_type;
using surgeon::io::gguf_value;

void save(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::uint8_t> blocks(std::size_t count, std::size_t bytes_per_block) {
  std::vector<std::uint8_t> out(count * bytes_per_block);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(i * 37 + 11);
  for (std::size_t b = 0; b < count; ++b) {  // keep the F16 scales finite: d = 0.5 (0x3800)
    out[b * bytes_per_block] = 0x00;
    out[b * bytes_per_block + 1] = 0x38;
  }
  return out;
}

void gguf_seeds(const std::filesystem::path& dir) {
  {
    surgeon::io::gguf_writer w;
    save(dir / "empty.gguf", w.to_bytes());
  }
  {
    surgeon::io::gguf_writer w;
    w.set_string("general.architecture", "llama");
    w.set_uint32("llama.block_count", 1);
    w.set_float32("llama.rope.freq_base", 10000.0f);
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.set_string_array("tokenizer.ggml.tokens", {"<s>", "</s>", "a", "b"});
    w.set("tokenizer.ggml.scores", gguf_value::array<float>({0.0f, -1.0f, -2.0f, -3.0f}));
    w.set("tokenizer.ggml.token_type", gguf_value::array<std::int32_t>({3, 3, 1, 1}));
    w.set("nested", gguf_value::array_of_arrays(
                        {gguf_value::array<std::uint64_t>({1, 2}), gguf_value::string_array({"x"})}));
    w.set("i64", gguf_value::scalar<std::int64_t>(-1));
    w.set("f64", gguf_value::scalar(0.5));
    save(dir / "metadata.gguf", w.to_bytes());
  }
  {
    surgeon::io::gguf_writer w;
    w.set_string("general.architecture", "llama");
    const std::vector<float> values = {1.0f, -2.0f, 0.5f, 3.25f, 0.0f, -0.0f, 1e-6f, 7.0f};
    w.add_tensor("f32", {4, 2}, ggml_type::f32, values.data());
    w.add_tensor("f16", {8}, ggml_type::f16, values.data());
    const auto bf16 = blocks(4, 2);
    w.add_raw_tensor("bf16", {4}, ggml_type::bf16, bf16.data(), bf16.size());
    const auto q4_0 = blocks(2, 18);
    w.add_raw_tensor("q4_0", {32, 2}, ggml_type::q4_0, q4_0.data(), q4_0.size());
    const auto q4_1 = blocks(2, 20);
    w.add_raw_tensor("q4_1", {64}, ggml_type::q4_1, q4_1.data(), q4_1.size());
    const auto q8_0 = blocks(1, 34);
    w.add_raw_tensor("q8_0", {32}, ggml_type::q8_0, q8_0.data(), q8_0.size());
    // One tensor of every other type surgeon dequantises, so the fuzzer starts from each block layout.
    const auto q5_0 = blocks(1, 22);
    w.add_raw_tensor("q5_0", {32}, ggml_type::q5_0, q5_0.data(), q5_0.size());
    const auto q5_1 = blocks(1, 24);
    w.add_raw_tensor("q5_1", {32}, ggml_type::q5_1, q5_1.data(), q5_1.size());
    const auto q2_k = blocks(1, 84);
    w.add_raw_tensor("q2_k", {256}, ggml_type::q2_k, q2_k.data(), q2_k.size());
    const auto q3_k = blocks(1, 110);
    w.add_raw_tensor("q3_k", {256}, ggml_type::q3_k, q3_k.data(), q3_k.size());
    const auto q4_k = blocks(1, 144);
    w.add_raw_tensor("q4_k", {256}, ggml_type::q4_k, q4_k.data(), q4_k.size());
    const auto q5_k = blocks(1, 176);
    w.add_raw_tensor("q5_k", {256}, ggml_type::q5_k, q5_k.data(), q5_k.size());
    const auto q6_k = blocks(1, 210);
    w.add_raw_tensor("q6_k", {256}, ggml_type::q6_k, q6_k.data(), q6_k.size());
    save(dir / "tensors.gguf", w.to_bytes());
    w.set_uint32("general.alignment", 64);
    auto v2 = w.to_bytes();
    save(dir / "aligned64.gguf", v2);
    v2[4] = 2;  // the same layout as version 2
    save(dir / "v2.gguf", v2);
  }
}

void safetensors_seeds(const std::filesystem::path& dir) {
  {
    surgeon::io::safetensors_writer w;
    save(dir / "empty.safetensors", w.to_bytes());
  }
  {
    surgeon::io::safetensors_writer w;
    w.set_metadata("format", "pt");
    const std::vector<float> f32 = {1.0f, -2.0f, 3.5f, 0.25f, 8.0f, -0.0f};
    const std::vector<double> f64 = {0.1, -1e300};
    const std::vector<std::int32_t> i32 = {7, -9, 11};
    const std::vector<std::int64_t> i64 = {-1};
    const std::vector<std::uint8_t> u8 = {1, 2, 3};
    const std::vector<std::uint16_t> half = {0x3C00, 0xC000};
    w.add("a", {2, 3}, f32.data());
    w.add("d", {2}, f64.data());
    w.add("i", {3, 1}, i32.data());
    w.add("scalar", {}, i64.data());
    w.add("u", {3}, u8.data());
    w.add("h", surgeon::io::dtype::f16, {2}, half.data(), 4);
    w.add("b", surgeon::io::dtype::bf16, {1, 2}, half.data(), 4);
    w.add("empty", surgeon::io::dtype::f32, {0, 4}, nullptr, 0);
    save(dir / "tensors.safetensors", w.to_bytes());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::filesystem::path root = argv[1];
  std::filesystem::create_directories(root / "gguf");
  std::filesystem::create_directories(root / "safetensors");
  gguf_seeds(root / "gguf");
  safetensors_seeds(root / "safetensors");
  return 0;
}
