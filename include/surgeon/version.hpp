/// @file version.hpp
/// @brief surgeon's version, as numbers and as a string.
#pragma once

/// @brief Major component of the library version (see `surgeon::version_string`).
#define SURGEON_VERSION_MAJOR 0
/// @brief Minor component of the library version.
#define SURGEON_VERSION_MINOR 1
/// @brief Patch component of the library version.
#define SURGEON_VERSION_PATCH 0

namespace surgeon {
/// @brief The library version as "major.minor.patch".
inline constexpr const char* version_string = "0.1.0";
}  // namespace surgeon
