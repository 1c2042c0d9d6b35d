/// @file temp_dir.hpp
/// @brief A fresh, uniquely named directory under the system temp dir for one test, removed on
/// destruction.
#pragma once

#include <filesystem>
#include <iterator>
#include <random>
#include <string>
#include <system_error>

#include "support/catch.hpp"

namespace surgeon::test {

class temp_dir {
 public:
  explicit temp_dir(const std::string& prefix = "surgeon_test_") {
    std::random_device rd;
    static int counter = 0;
    for (int attempt = 0; attempt < 100; ++attempt) {
      path_ = std::filesystem::temp_directory_path() /
              (prefix + std::to_string(rd()) + "_" + std::to_string(++counter));
      if (std::filesystem::create_directory(path_)) return;
    }
    FAIL("cannot create a temporary directory");
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  /// @brief The path of `name` inside the directory.
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }
  /// @brief Number of entries in the directory (to check that no temporary file is left).
  std::size_t entries() const {
    return static_cast<std::size_t>(
        std::distance(std::filesystem::directory_iterator(path_), std::filesystem::directory_iterator()));
  }

 private:
  std::filesystem::path path_;
};

}  // namespace surgeon::test
