// Checks the command-line tools (surgeon-prune, surgeon-ppl) run before their work starts, so that
// a bad path or length costs seconds rather than a whole pruning run, and the top-level guard that
// turns every exception into a one-line message and a non-zero exit instead of an abort.
#pragma once

#include "model.hpp"

#include <surgeon/error.hpp>

#include <fmt/format.h>

#include <unistd.h>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <system_error>

namespace surgeon::llama::tool {

/// @brief Why an input or output of a tool cannot work, found before the work starts: the tool
/// prints it and exits 2, as for a bad flag.
class bad_input : public std::exception {
 public:
  explicit bad_input(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

/// @brief Throws `bad_input` unless `path` names a readable regular file. `flag` names the option
/// in the message. O(1) system calls.
inline void check_readable(const std::string& flag, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw bad_input(fmt::format("{} {}: no such file", flag, path));
  if (!fs::is_regular_file(path, ec)) throw bad_input(fmt::format("{} {}: not a regular file", flag, path));
  if (::access(path.c_str(), R_OK) != 0) throw bad_input(fmt::format("{} {}: not readable", flag, path));
}

/// @brief Throws `bad_input` unless a file can be written at `path`: its directory exists and
/// accepts a new file (probed by creating and removing one beside it, as the atomic write will),
/// and `path` is not a directory. Nothing is left behind. O(1) system calls.
inline void check_writable(const std::string& flag, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target(path);
  if (fs::is_directory(target, ec)) throw bad_input(fmt::format("{} {}: is a directory", flag, path));
  const fs::path directory = target.has_parent_path() ? target.parent_path() : fs::path(".");
  if (!fs::is_directory(directory, ec))
    throw bad_input(fmt::format("{} {}: directory {} does not exist", flag, path, directory.string()));
  const std::string probe = path + ".probe." + std::to_string(::getpid());
  {
    std::ofstream out(probe, std::ios::binary | std::ios::trunc);
    if (!out)
      throw bad_input(fmt::format("{} {}: cannot create a file in {}", flag, path, directory.string()));
  }
  fs::remove(probe, ec);
}

/// @brief Throws `bad_input` when windows of `seqlen` tokens do not fit the model's context
/// (`config::max_seq_len`, when the file states one): the model was never trained on positions
/// beyond it. O(1).
inline void check_context(index_t seqlen, const config& cfg) {
  if (cfg.max_seq_len > 0 && seqlen > cfg.max_seq_len)
    throw bad_input(
        fmt::format("--seqlen {} is longer than the model's context of {} tokens", seqlen, cfg.max_seq_len));
}

/// @brief Throws `bad_input` when a text of `tokens` tokens does not fill one window of `seqlen`
/// (plus the token each window predicts last). O(1).
inline void check_text_length(const std::string& flag, const std::string& path, std::size_t tokens,
                              index_t seqlen) {
  if (static_cast<index_t>(tokens) < seqlen)
    throw bad_input(
        fmt::format("{} {}: {} tokens do not fill one window of --seqlen {}", flag, path, tokens, seqlen));
}

/// @brief Runs a tool's body and turns whatever escapes it into one line on stderr: `bad_input`
/// exits 2, `surgeon::error` and every other exception (out of memory included) exit 1. A tool
/// never aborts on bad input. Returns the body's exit status otherwise.
template <class Body>
int run_guarded(const char* tool, Body&& body) {
  try {
    return body();
  } catch (const bad_input& e) {
    fmt::print(stderr, "{}: {}\n", tool, e.what());
    return 2;
  } catch (const surgeon::error& e) {
    fmt::print(stderr, "{}: {}\n", tool, e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "{}: out of memory (a smaller --seqlen, --nsamples or --memory-budget needs less)\n",
               tool);
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: {}\n", tool, e.what());
    return 1;
  } catch (...) {
    fmt::print(stderr, "{}: unknown error\n", tool);
    return 1;
  }
}

}  // namespace surgeon::llama::tool
