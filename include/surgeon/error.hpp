/// @file error.hpp
/// @brief The exception hierarchy and the precondition macros of surgeon.
///
/// Every exception the library throws derives from `surgeon::error` (itself a
/// `std::runtime_error`), carries a message formatted with fmt and the `file:line` where it was
/// raised. Destructors never throw.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace surgeon {

/// @brief Base class of every exception thrown by surgeon.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief A broken precondition: bad shapes, out-of-range parameters, NaN input, misuse.
class logic_error : public error {
 public:
  using error::error;
};

/// @brief A numerical failure that the library could not recover from (e.g. a factor that stays
/// indefinite after every allowed damping escalation).
class numerical_error : public error {
 public:
  using error::error;
};

/// @brief The requested backend is not compiled in, or no device is available.
class backend_unavailable : public error {
 public:
  using error::error;
};

/// @brief A file could not be read or written, or its contents are malformed or truncated.
class io_error : public error {
 public:
  using error::error;
};

/// @brief A CUDA runtime, cuBLAS or cuSOLVER call failed.
class cuda_error : public error {
 public:
  using error::error;
};

/// @brief A collective operation between processes failed (MPI, NCCL), or a process of the group
/// ended the run.
class communication_error : public error {
 public:
  using error::error;
};

namespace detail {

/// Builds "<message> (file:line)"; kept out of line of the throw sites to keep them small.
template <typename... Args>
std::string format_error(const char* file, int line, fmt::string_view format, Args&&... args) {
  std::string message = fmt::vformat(format, fmt::make_format_args(args...));
  return fmt::format("{} ({}:{})", message, file, line);
}

template <typename Error, typename... Args>
[[noreturn]] void throw_error(const char* file, int line, fmt::string_view format, Args&&... args) {
  throw Error(format_error(file, line, format, std::forward<Args>(args)...));
}

}  // namespace detail
}  // namespace surgeon

/// @brief Throws `surgeon::logic_error` with a fmt-formatted message when `cond` is false.
/// Used at every public boundary to check preconditions. Example:
/// `SURGEON_EXPECTS(x.cols() == dim, "input has {} columns, the accumulator expects {}", x.cols(), dim);`
#define SURGEON_EXPECTS(cond, ...)                                                                        \
  do {                                                                                                    \
    if (!(cond)) ::surgeon::detail::throw_error<::surgeon::logic_error>(__FILE__, __LINE__, __VA_ARGS__); \
  } while (false)

/// @brief Throws the given surgeon exception type with a fmt-formatted message.
/// Example: `SURGEON_THROW(io_error, "{}: truncated header", path);`
#define SURGEON_THROW(error_type, ...) \
  ::surgeon::detail::throw_error<::surgeon::error_type>(__FILE__, __LINE__, __VA_ARGS__)
