/// @file progress.hpp
/// @brief The tools' terminal progress bar: one line on stderr, redrawn in place, shown only when
/// stderr is a terminal so that logs and pipes stay free of carriage returns.
#pragma once

#include <surgeon/config.hpp>

#include <cstdio>
#include <string>
#include <utility>

#include <unistd.h>

namespace surgeon::llama {

/// @brief A one-line progress bar on stderr when it is a terminal; silent otherwise. Ends its
/// line when destroyed, so that what is printed next starts on a fresh one.
class progress_bar {
 public:
  /// @brief A bar for `total` steps, headed by `label`; draws nothing until `update`.
  progress_bar(std::string label, index_t total)
      : label_(std::move(label)), total_(total), enabled_(isatty(fileno(stderr)) != 0) {}
  ~progress_bar() {
    if (enabled_ && shown_) std::fputc('\n', stderr);
  }
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;

  /// @brief Shows `done` of `total`, with an optional note (e.g. the running value).
  void update(index_t done, const std::string& note = "") {
    if (!enabled_ || total_ <= 0) return;
    constexpr int width = 30;
    const auto filled = static_cast<int>(static_cast<double>(width) * static_cast<double>(done) /
                                         static_cast<double>(total_));
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld %s", label_.c_str(), bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), note.c_str());
    std::fflush(stderr);
    shown_ = true;
  }

 private:
  std::string label_;
  index_t total_;
  bool enabled_;
  bool shown_ = false;
};

}  // namespace surgeon::llama
