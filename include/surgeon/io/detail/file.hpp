/// @file io/detail/file.hpp
/// @brief File plumbing shared by the readers and writers of io/: checked whole-file reads and
/// atomic writes (a temporary file and a rename).
#pragma once

#include <surgeon/error.hpp>

#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#if defined(_WIN32)
#include <process.h>
#else
#include <unistd.h>
#endif

namespace surgeon::io::detail {

/// The size of the regular file at `path`.
/// @throws io_error if it does not exist, is not a regular file, or its size cannot be read.
inline std::uintmax_t regular_file_size(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    SURGEON_THROW(io_error, "{}: cannot open: {}", path, ec ? ec.message() : std::string("no such file"));
  }
  if (!fs::is_regular_file(status)) SURGEON_THROW(io_error, "{}: not a regular file", path);
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) SURGEON_THROW(io_error, "{}: cannot read the file size: {}", path, ec.message());
  return size;
}

/// The whole file at `path`, after checking `min_bytes <= size <= max_bytes` (`needed_for` says
/// what the minimum is for, in the error message). Nothing is allocated before the checks.
/// @throws io_error as `regular_file_size`, on a size outside the bounds, or a short read.
inline std::vector<std::uint8_t> read_whole_file(
    const std::string& path, std::uintmax_t min_bytes, std::string_view needed_for,
    std::uintmax_t max_bytes = std::numeric_limits<std::uintmax_t>::max()) {
  const std::uintmax_t size = regular_file_size(path);
  if (size < min_bytes) {
    SURGEON_THROW(io_error, "{}: file is {} bytes, too short for {}", path, size, needed_for);
  }
  if (size > max_bytes)
    SURGEON_THROW(io_error, "{}: file of {} bytes exceeds the limit of {}", path, size, max_bytes);
  if (size > std::numeric_limits<std::size_t>::max() ||
      size > static_cast<std::uintmax_t>(std::numeric_limits<std::streamsize>::max())) {
    SURGEON_THROW(io_error, "{}: file of {} bytes is too large to load on this platform", path, size);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) SURGEON_THROW(io_error, "{}: cannot open for reading", path);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  const auto got = static_cast<std::uintmax_t>(in.gcount());
  if (got != size)
    SURGEON_THROW(io_error, "{}: read {} of {} bytes (file truncated while reading?)", path, got, size);
  return bytes;
}

inline long long current_pid() noexcept {
#if defined(_WIN32)
  return static_cast<long long>(_getpid());
#else
  return static_cast<long long>(::getpid());
#endif
}

/// Writes a file atomically: `emit(write)` produces the bytes through `write(const uint8_t*, n)`
/// into `path + ".tmp.<pid>"`, which is then renamed onto `path`. On any failure the temporary
/// file is removed and `path` is left as it was.
/// @throws io_error naming `path` if the temporary file cannot be created, written or closed, or
///         the rename fails; whatever `emit` throws.
template <typename Emit>
void write_file_atomically(const std::string& path, Emit&& emit) {
  namespace fs = std::filesystem;
  const std::string temp = fmt::format("{}.tmp.{}", path, current_pid());
  try {
    {
      std::ofstream out(temp, std::ios::binary | std::ios::trunc);
      if (!out) SURGEON_THROW(io_error, "{}: cannot create the temporary file {}", path, temp);
      emit([&](const std::uint8_t* p, std::size_t n) {
        if (n != 0) out.write(reinterpret_cast<const char*>(p), static_cast<std::streamsize>(n));
      });
      out.flush();
      if (!out) SURGEON_THROW(io_error, "{}: writing the temporary file {} failed", path, temp);
      out.close();
      if (out.fail()) SURGEON_THROW(io_error, "{}: closing the temporary file {} failed", path, temp);
    }
    std::error_code ec;
    fs::rename(temp, path, ec);
    if (ec) SURGEON_THROW(io_error, "{}: cannot rename {} onto it: {}", path, temp, ec.message());
  } catch (...) {
    std::error_code ignored;
    fs::remove(temp, ignored);
    throw;
  }
}

}  // namespace surgeon::io::detail
