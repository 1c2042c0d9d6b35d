// libFuzzer entry point for surgeon::io::gguf_reader (run by scripts/fuzz.sh; not part of CI).
//
// Every input must either be rejected with surgeon::io_error or be readable end to end: every
// metadata value walked, every tensor's bytes touched and (within a size cap) dequantised, and
// the file rebuilt by gguf_writer must read back identical. Anything else (a crash, a sanitizer
// report, another exception, a round-trip mismatch) is a finding.
#include <surgeon/io/gguf.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace {

using surgeon::io::gguf_reader;
using surgeon::io::gguf_value;
using surgeon::io::gguf_writer;

constexpr surgeon::index_t max_dequantized_elements = surgeon::index_t{1} << 22;

volatile std::uint64_t sink = 0;

void walk(const gguf_value& v) {
  if (const auto u = v.try_uint()) sink = sink + *u;
  if (const auto i = v.try_int()) sink = sink + static_cast<std::uint64_t>(*i);
  if (const auto f = v.try_float()) sink = sink + static_cast<std::uint64_t>(*f != *f);
  if (const auto* s = v.try_string()) sink = sink + s->size();
  if (!v.is_array()) return;
  if (const auto* strings = v.try_strings()) sink = sink + strings->size();
  if (const auto* arrays = v.try_arrays()) {
    for (const gguf_value& a : *arrays) walk(a);
    return;
  }
  if (auto floats = v.try_float_array()) sink = sink + floats->size();
  if (auto ints = v.try_int_array()) sink = sink + ints->size();
  if (v.size() > 0) walk(v.element(v.size() - 1));
}

/// True when gguf_writer can rebuild the file (it is stricter than the reader on names and on
/// the type of general.alignment).
bool writable(const gguf_reader& r) {
  for (const auto& [key, value] : r.metadata()) {
    if (key.empty() || key.size() > 65535) return false;
    if (key == "general.alignment" && value.type() != surgeon::io::gguf_value_type::uint32) return false;
  }
  for (const auto& t : r.tensors()) {
    if (t.name.empty() || t.name.size() > gguf_writer::max_name_bytes || t.ne.empty()) return false;
  }
  return true;
}

void round_trip(const gguf_reader& r) {
  if (!writable(r)) return;
  gguf_writer w;
  w.copy_metadata_from(r);
  for (const auto& t : r.tensors()) {
    w.add_raw_tensor(t.name, t.ne, t.type, r.raw(t), static_cast<std::size_t>(t.bytes));
  }
  const gguf_reader again = gguf_reader::from_bytes(w.to_bytes(), "round trip");
  if (again.metadata().size() != r.metadata().size() || again.tensors().size() != r.tensors().size())
    std::abort();
  for (std::size_t i = 0; i < r.metadata().size(); ++i) {
    if (again.metadata()[i].first != r.metadata()[i].first) std::abort();
    if (again.metadata()[i].second != r.metadata()[i].second) std::abort();
  }
  for (std::size_t i = 0; i < r.tensors().size(); ++i) {
    const auto& a = r.tensors()[i];
    const auto& b = again.tensors()[i];
    if (a.name != b.name || a.type != b.type || a.ne != b.ne || a.bytes != b.bytes) std::abort();
    if (a.bytes > 0 && std::memcmp(r.raw(a), again.raw(b), static_cast<std::size_t>(a.bytes)) != 0)
      std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint8_t> bytes(data, data + size);
  try {
    const gguf_reader r = gguf_reader::from_bytes(std::move(bytes), "fuzz input");
    for (const auto& [key, value] : r.metadata()) {
      sink = sink + key.size();
      walk(value);
    }
    for (const auto& t : r.tensors()) {
      const std::uint8_t* p = r.raw(t);
      if (t.bytes > 0) sink = sink + p[0] + p[t.bytes - 1];
      const auto shape = r.tensor_shape_rows_cols(t.name);
      if (shape.first * shape.second != t.elements()) std::abort();
      if (t.elements() <= max_dequantized_elements) {
        try {
          const std::vector<float> values = r.dequantize(t);
          if (values.size() != static_cast<std::size_t>(t.elements())) std::abort();
        } catch (const surgeon::io_error&) {
          if (surgeon::io::can_dequantize(t.type)) std::abort();  // only unsupported types may refuse
        }
      }
    }
    round_trip(r);
  } catch (const surgeon::io_error&) {
  }
  return 0;
}
