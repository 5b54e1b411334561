// The Catch2 2 test runner of the core (Catch2 3 brings its own, Catch2::Catch2WithMain).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
