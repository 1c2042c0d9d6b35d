/// @file catch.hpp
/// @brief The single place where the tests include Catch2 (v2, Debian's `catch2` package), so a
/// move to Catch2 v3 touches one file.
#pragma once

#include <catch2/catch.hpp>
