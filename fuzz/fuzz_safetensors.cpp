// libFuzzer entry point for surgeon::io::safetensors_reader (run by scripts/fuzz.sh; not part
// of CI).
//
// Every input must either be rejected with surgeon::io_error or be readable end to end: every
// tensor's bytes touched and (within a size cap) read in its own type, floating-point tensors
// also widened to double. Anything else (a crash, a sanitizer report, another exception) is a
// finding.
#include <surgeon/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace {

using surgeon::io::dtype;
using surgeon::io::safetensors_reader;

constexpr surgeon::index_t max_read_elements = surgeon::index_t{1} << 22;

volatile std::uint64_t sink = 0;

template <typename T>
void read_as(const safetensors_reader& r, const surgeon::io::tensor_info& t) {
  const std::vector<T> values = r.read<T>(t.name);
  if (values.size() != static_cast<std::size_t>(t.elements())) std::abort();
  sink = sink + values.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint8_t> bytes(data, data + size);
  try {
    const safetensors_reader r = safetensors_reader::from_bytes(std::move(bytes), "fuzz input");
    for (const auto& [key, value] : r.metadata()) sink = sink + key.size() + value.size();
    for (const auto& t : r.tensors()) {
      const std::uint8_t* p = r.data(t);
      if (t.bytes > 0) sink = sink + p[0] + p[t.bytes - 1];
      if (t.elements() > max_read_elements) continue;
      switch (t.type) {
        case dtype::f64:
        case dtype::f32:
        case dtype::f16:
        case dtype::bf16:
          read_as<float>(r, t);
          read_as<double>(r, t);
          break;
        case dtype::i64:
          read_as<std::int64_t>(r, t);
          break;
        case dtype::i32:
          read_as<std::int32_t>(r, t);
          break;
        case dtype::u8:
          read_as<std::uint8_t>(r, t);
          break;
        default:
          break;
      }
    }
  } catch (const surgeon::io_error&) {
  }
  return 0;
}
