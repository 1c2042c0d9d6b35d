// The one translation unit that holds Catch2's main() for every unit-test binary.
#define CATCH_CONFIG_MAIN
#include "support/catch.hpp"
