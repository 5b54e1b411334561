// Catch2's test macros and Approx, from Catch2 2 (one header, Debian 12) or Catch2 3 (split
// headers, Debian 13 and later): CMake says which one it found.
#pragma once

#if TURBOLOOP_CATCH2_MAJOR >= 3
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif
