// The Catch2 test runner of the core.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
